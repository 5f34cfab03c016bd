"""The event broker: fans ``created`` / ``updated`` / ``deleted`` events out to subscribers.

Each subscriber has its own bounded memory channel. Intermediate states go by lossy
``publish`` (a full subscriber misses them: the next event carries the newer state
anyway); terminal states go by ``post`` (must-deliver), which never blocks the
publisher: a full subscriber's courier task, in the broker's nursery, hands the event
over when room appears, or drops it after one timeout. So handing out events never
delays an actor's write.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_util import RepeatedEvent

from ._nursery import open_owned_nursery

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


class _Subscriber:
    """One subscription: its channel, and the must-deliver events waiting for room.

    A must-deliver event that finds the channel full waits in ``overflow`` (with the
    deadline it was published with) for the subscriber's courier task to hand it
    over; the publisher never waits. Once something waits there, later events go
    behind it, so the subscriber still sees them in publishing order: a lossy one is
    dropped (the subscriber is full), a must-deliver one joins the queue.
    """

    __slots__ = ("bell", "drops", "must_deliver_drops", "overflow", "send")

    def __init__(self, send: trio.MemorySendChannel[Event]) -> None:
        self.send = send
        self.drops = 0
        self.must_deliver_drops = 0
        self.overflow: deque[tuple[Event, float, _Delivery | None]] = deque()
        self.bell = RepeatedEvent()


class _Delivery:
    """What ``publish_must_deliver`` waits on: the subscribers still owed one event."""

    __slots__ = ("done", "owed")

    def __init__(self, owed: int) -> None:
        self.owed = owed
        self.done = trio.Event()

    def settle(self) -> None:
        self.owed -= 1
        if self.owed == 0:
            self.done.set()


class Broker:
    """Delivers events to every current subscriber; made by ``open_broker``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        buffer_size: int = 4096,
        must_deliver_timeout: float = 0.05,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if not must_deliver_timeout >= 0:
            raise ValueError(f"must_deliver_timeout must be >= 0, got {must_deliver_timeout}")
        self.buffer_size = buffer_size
        self.must_deliver_timeout = must_deliver_timeout
        self._nursery = nursery
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

    @asynccontextmanager
    async def subscribe(
        self, buffer_size: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        """Receive every event published from now until the block (or the broker) ends.

        ``async for`` over the channel ends when the broker's scope closes.
        """
        size = self.buffer_size if buffer_size is None else buffer_size
        if size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {size}")
        await trio.lowlevel.checkpoint()
        send, receive = trio.open_memory_channel[Event](size)
        key = self._next_key
        self._next_key += 1
        courier = trio.CancelScope()
        if self._closed:
            send.close()
        else:
            sub = _Subscriber(send)
            self._subscribers[key] = sub
            self._nursery.start_soon(self._courier, sub, courier)
        try:
            async with receive:
                yield receive
        finally:
            sub_left = self._subscribers.pop(key, None)
            courier.cancel()
            if sub_left is not None:
                self._settle_all(sub_left)
            send.close()

    def publish(self, type: EventType, payload: Any) -> None:
        """Offer the event to every subscriber without blocking; a full one misses it."""
        if self._closed:
            return
        event = Event(type, payload)
        self.published += 1
        for sub in self._subscribers.values():
            if sub.overflow:
                self._dropped(sub, type)  # behind a waiting must-deliver event: full
                continue
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                self._dropped(sub, type)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber is leaving; its block's exit unregisters it

    def post(self, type: EventType, payload: Any) -> None:
        """Must-deliver publish that never blocks the caller.

        A subscriber with room gets the event now; a full one gets it from its
        courier as soon as it has room, or misses it (counted in
        ``must_deliver_drop_count`` and logged as an error) if it stays full for
        ``must_deliver_timeout``.
        """
        self._post(type, payload, None)

    async def publish_must_deliver(self, type: EventType, payload: Any) -> None:
        """``post``, then wait until every subscriber has the event or missed it.

        The timeout is one deadline shared by all full subscribers, so the call never
        blocks longer than it, however many there are.
        """
        delivery = _Delivery(1)  # +1 for this call, so it cannot settle too early
        self._post(type, payload, delivery)
        delivery.settle()
        if delivery.done.is_set():
            await trio.lowlevel.checkpoint()
        else:
            await delivery.done.wait()

    def _post(self, type: EventType, payload: Any, delivery: _Delivery | None) -> None:
        if self._closed:
            return
        event = Event(type, payload)
        self.published += 1
        deadline = -1.0
        for sub in self._subscribers.values():
            if not sub.overflow:
                try:
                    sub.send.send_nowait(event)
                    continue
                except trio.WouldBlock:
                    pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
                sub.bell.set()
            if deadline < 0:
                deadline = trio.current_time() + self.must_deliver_timeout
            if delivery is not None:
                delivery.owed += 1
            sub.overflow.append((event, deadline, delivery))

    async def _courier(self, sub: _Subscriber, scope: trio.CancelScope) -> None:
        """Hand a full subscriber its waiting must-deliver events as room appears."""
        with scope:
            while True:
                while sub.overflow:
                    event, deadline, delivery = sub.overflow[0]
                    delivered = False
                    with trio.move_on_at(deadline):
                        try:
                            await sub.send.send(event)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return  # the subscription has ended: nobody left to deliver to
                        delivered = True
                    sub.overflow.popleft()
                    if not delivered:
                        self._missed(sub, event.type)
                    if delivery is not None:
                        delivery.settle()
                await sub.bell.wait()

    def _settle_all(self, sub: _Subscriber) -> None:
        # The subscription ended: what still waited for it will never be delivered,
        # and nobody is left to miss it; release whoever waits on it.
        while sub.overflow:
            _, _, delivery = sub.overflow.popleft()
            if delivery is not None:
                delivery.settle()

    def _dropped(self, sub: _Subscriber, type: EventType) -> None:
        sub.drops += 1
        self.drop_count += 1
        if _should_log(sub.drops):
            logger.warning(
                "subscriber is full: %s event dropped (%d dropped for it so far)",
                type.value,
                sub.drops,
            )

    def _missed(self, sub: _Subscriber, type: EventType) -> None:
        sub.must_deliver_drops += 1
        self.must_deliver_drop_count += 1
        if _should_log(sub.must_deliver_drops):
            logger.error(
                "subscriber stayed full for %.3f s: must-deliver %s event dropped "
                "(%d dropped for it so far)",
                self.must_deliver_timeout,
                type.value,
                sub.must_deliver_drops,
            )

    def close(self) -> None:
        """End every subscription (their ``async for`` loops finish). Idempotent.

        Must-deliver events still waiting get one last try without waiting.
        """
        self._closed = True
        for sub in self._subscribers.values():
            while sub.overflow:
                event, _, delivery = sub.overflow.popleft()
                try:
                    sub.send.send_nowait(event)
                except trio.WouldBlock:
                    self._missed(sub, event.type)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                if delivery is not None:
                    delivery.settle()
            sub.send.close()


@asynccontextmanager
async def open_broker(
    *, buffer_size: int = 4096, must_deliver_timeout: float = 0.05
) -> AsyncIterator[Broker]:
    """A broker scoped to this block: its couriers run in the block's nursery, and
    every subscription ends when the block ends."""
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
    if not must_deliver_timeout >= 0:
        raise ValueError(f"must_deliver_timeout must be >= 0, got {must_deliver_timeout}")
    async with open_owned_nursery() as nursery:
        broker = Broker(nursery, buffer_size=buffer_size, must_deliver_timeout=must_deliver_timeout)
        try:
            yield broker
        finally:
            broker.close()
            nursery.cancel_scope.cancel()


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
