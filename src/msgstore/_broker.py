"""The event broker: fans ``created`` / ``updated`` / ``deleted`` events out to subscribers.

Each subscriber has its own bounded memory channel. Intermediate states go by lossy
``publish`` (a full subscriber misses them: the next event carries the newer state
anyway); terminal states go by ``publish_must_deliver``, which waits for room, but never
longer than one shared timeout however many subscribers are full.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

logger = logging.getLogger("msgstore")


class EventType(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@attrs.frozen
class Event:
    """One change to one message. Treat ``payload`` as read-only: subscribers share it."""

    type: EventType
    payload: Any


def _should_log(count: int) -> bool:
    # Log the 1st, 10th, 100th ... drop of a subscriber: a stuck subscriber would
    # otherwise flood the log with one line per token.
    return count == 1 or (count % 10 == 0 and _is_power_of_ten(count))


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


@attrs.define(eq=False)
class _Subscriber:
    send: trio.MemorySendChannel[Event]
    drops: int = 0
    must_deliver_drops: int = 0


@attrs.frozen
class PendingDelivery:
    """A must-deliver event some subscribers had no room for yet."""

    event: Event
    subscribers: list[_Subscriber]
    deadline: float


@attrs.frozen
class BrokerStatistics:
    subscriber_count: int
    drop_count: int
    must_deliver_drop_count: int
    published: int


class Broker:
    """Delivers events to every current subscriber; see the module docstring."""

    def __init__(self, *, buffer_size: int = 4096, must_deliver_timeout: float = 0.05) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if not must_deliver_timeout >= 0:
            raise ValueError(f"must_deliver_timeout must be >= 0, got {must_deliver_timeout}")
        self.buffer_size = buffer_size
        self.must_deliver_timeout = must_deliver_timeout
        self._subscribers: dict[int, _Subscriber] = {}
        self._next_key = 0
        self._closed = False
        self.drop_count = 0
        self.must_deliver_drop_count = 0
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            subscriber_count=len(self._subscribers),
            drop_count=self.drop_count,
            must_deliver_drop_count=self.must_deliver_drop_count,
            published=self.published,
        )

    @asynccontextmanager
    async def subscribe(
        self, buffer_size: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        """Receive every event published from now until the block (or the broker) ends.

        ``async for`` over the channel ends when the broker's scope closes.
        """
        await trio.lowlevel.checkpoint()
        size = self.buffer_size if buffer_size is None else buffer_size
        send, receive = trio.open_memory_channel[Event](size)
        key = self._next_key
        self._next_key += 1
        if self._closed:
            send.close()
        else:
            self._subscribers[key] = _Subscriber(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.pop(key, None)
            send.close()

    def publish(self, type: EventType, payload: Any) -> None:
        """Offer the event to every subscriber without blocking; a full one misses it."""
        if self._closed:
            return
        event = Event(type, payload)
        self.published += 1
        for sub in tuple(self._subscribers.values()):
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                sub.drops += 1
                self.drop_count += 1
                if _should_log(sub.drops):
                    logger.warning(
                        "subscriber is full: %s event dropped (%d dropped for it so far)",
                        type.value,
                        sub.drops,
                    )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber is leaving; its block's exit unregisters it

    async def publish_must_deliver(self, type: EventType, payload: Any) -> None:
        """Deliver to every subscriber, waiting for room at most ``must_deliver_timeout``.

        The timeout is one deadline shared by all full subscribers, so the call never
        blocks longer than it, however many there are. A subscriber still full at the
        deadline misses the event; that is counted and logged as an error.
        """
        pending = self.offer_must_deliver(type, payload)
        if pending is None:
            await trio.lowlevel.checkpoint()
        else:
            await self.finish_delivery(pending)

    def offer_must_deliver(self, type: EventType, payload: Any) -> PendingDelivery | None:
        """The first half of ``publish_must_deliver``: deliver where there is room now.

        Returns what is left to deliver (pass it to ``finish_delivery``), or None when
        every subscriber took the event. The timeout starts now.
        """
        if self._closed:
            return None
        event = Event(type, payload)
        self.published += 1
        full: list[_Subscriber] = []
        for sub in tuple(self._subscribers.values()):
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                full.append(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if not full:
            return None
        return PendingDelivery(event, full, trio.current_time() + self.must_deliver_timeout)

    async def finish_delivery(self, pending: PendingDelivery) -> None:
        """Wait for room in the subscribers that were full, until the shared deadline."""
        event = pending.event
        for sub in pending.subscribers:
            delivered = False
            with trio.move_on_at(pending.deadline):
                try:
                    await sub.send.send(event)
                    delivered = True
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    delivered = True  # nobody left to deliver to
            if not delivered:
                sub.must_deliver_drops += 1
                self.must_deliver_drop_count += 1
                if _should_log(sub.must_deliver_drops):
                    logger.error(
                        "subscriber stayed full for %.3f s: must-deliver %s event dropped "
                        "(%d dropped for it so far)",
                        self.must_deliver_timeout,
                        event.type.value,
                        sub.must_deliver_drops,
                    )

    def close(self) -> None:
        """End every subscription (their ``async for`` loops finish). Idempotent."""
        self._closed = True
        for sub in self._subscribers.values():
            sub.send.close()


@asynccontextmanager
async def open_broker(
    *, buffer_size: int = 4096, must_deliver_timeout: float = 0.05
) -> AsyncIterator[Broker]:
    """A broker whose subscriptions all end when this block ends."""
    broker = Broker(buffer_size=buffer_size, must_deliver_timeout=must_deliver_timeout)
    try:
        yield broker
    finally:
        broker.close()


class iter_batches:  # lower case: used like a function, ``async for b in iter_batches(ch)``
    """Yield every event available at each wake-up as one list, in order.

    ``async for event in events`` takes one event per trip through Trio's scheduler; a
    subscriber that must keep up with bursts (thousands of streams whose windows end
    together) takes each burst whole with ``async for batch in iter_batches(events)``.
    A class, not an async generator, so that leaving the loop early needs no cleanup.
    """

    def __init__(self, events: trio.MemoryReceiveChannel[Event]) -> None:
        self._events = events

    def __aiter__(self) -> iter_batches:
        return self

    async def __anext__(self) -> list[Event]:
        try:
            batch = [await self._events.receive()]
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        while True:
            try:
                batch.append(self._events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch
