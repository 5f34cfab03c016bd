"""The event broker: fans ``created`` / ``updated`` / ``deleted`` events out to subscribers.

Each subscriber has a *conflating* queue: at most one pending event per message (or
session). A newer event of the same item replaces the queued one and moves to the back,
so the queue is always in the order of each item's newest change (``seq`` order), its
size is bounded by the number of items with unread changes (not by tokens), and nothing
is ever dropped: a slow reader skips intermediate states, never a terminal state or a
delete. Publishing is a dict operation per subscriber: it never blocks and never
waits, so handing out events never delays a write.

Coalescing of a queued event with a newer one of the same item: the newer state wins,
except that ``created`` + ``updated`` stays ``created`` (the reader has not seen the item
yet) and anything + ``deleted`` is ``deleted``; ``deleted`` + ``created`` (an id used
again) is ``created``.

A subscriber that leaves more than ``max_pending`` items unread (a reader stuck for
good while new messages keep coming) has its queue emptied and gets ``ReloadRequired``
on its next receive: memory stays bounded and the gap is explicit, never silent.

The broker is scoped to a nursery (``open_broker``): the service runs its change feed's
watcher there, and every subscription ends when the block ends.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._errors import ReloadRequired
from ._nursery import open_owned_nursery

logger = logging.getLogger("msgstore")

#: The default bound on items with unread changes per subscriber.
MAX_PENDING = 65_536


class EventType(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@attrs.frozen
class Event:
    """One change to one message or session. Treat ``payload`` as read-only: subscribers
    share it.

    ``seq`` is the change's number in the file's change log (None from a broker used on
    its own). ``kind`` is ``"message"`` or ``"session"`` and ``id`` the item's id.
    ``payload`` is the item's state after the change (a ``Message`` or ``Session``); for
    ``deleted`` it is the last state this service knew, or None when the delete came
    from another process or a resume.
    """

    type: EventType
    payload: Any
    seq: int | None = None
    kind: str = ""
    id: str | None = None


def event_for(type: EventType, payload: Any, seq: int | None = None) -> Event:
    """An event whose kind (``"message"`` for a ``Message``...) and id come from its
    payload."""
    kind = "" if payload is None else payload.__class__.__name__.lower()
    return Event(type, payload, seq, kind, getattr(payload, "id", None))


def _coalesced(old: Event, new: Event) -> Event:
    if old.type is EventType.CREATED and new.type is EventType.UPDATED:
        return attrs.evolve(new, type=EventType.CREATED)
    return new


class Subscription:
    """The receiving end of one subscription: ``async for event in subscription``.

    Like a Trio receive channel (``receive``, ``receive_nowait``, iteration ending with
    the broker), over a conflating queue instead of a buffer.
    """

    def __init__(self, broker: Broker, max_pending: int) -> None:
        self._broker = broker
        self._pending: OrderedDict[Hashable, Event] = OrderedDict()
        self._lot = trio.lowlevel.ParkingLot()
        self._max_pending = max_pending
        self._closed = False  # no more events will come
        self._unique = 0  # keys for events without an id (never conflated)
        self._reload: ReloadRequired | None = None
        #: Events with a seq at or below this are already reflected (a resume read them).
        self.floor = 0
        self.conflated = 0
        self.peak_pending = 0

    def __repr__(self) -> str:
        return f"<Subscription pending={len(self._pending)}>"

    # -- the publisher's side ----------------------------------------------------------

    def offer(self, event: Event) -> None:
        if self._closed:
            return
        if event.seq is not None and event.seq <= self.floor:
            return
        pending = self._pending
        key: Hashable
        if event.id is None:
            self._unique += 1
            key = self._unique
        else:
            key = (event.kind, event.id)
            old = pending.pop(key, None)
            if old is not None:
                self.conflated += 1
                self._broker.conflated += 1
                event = _coalesced(old, event)
        pending[key] = event
        size = len(pending)
        if size > self.peak_pending:
            self.peak_pending = size
            self._broker.note_peak(size)
        if size > self._max_pending:
            self._overflow(event.seq)
        self._lot.unpark_all()

    def must_reload(self, reason: str, seq: int | None) -> None:
        """The reader missed changes it cannot be told: its next receive raises, and
        what was queued goes (it is older than the state the reader reloads)."""
        self._broker.drop_count += len(self._pending)
        self._pending.clear()
        self._reload = ReloadRequired(reason, seq=seq)
        self._lot.unpark_all()

    def _overflow(self, seq: int | None) -> None:
        lost = len(self._pending)
        self._broker.reloads += 1
        logger.error(
            "subscriber left more than %d items unread: %d events discarded, it must reload",
            self._max_pending,
            lost,
        )
        self.must_reload(
            f"more than {self._max_pending} items had unread changes; {lost} events were discarded",
            seq,
        )

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    # -- the reader's side -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items with an event waiting to be received."""
        return len(self._pending)

    @property
    def reload_pending(self) -> bool:
        """The next receive raises ``ReloadRequired``."""
        return self._reload is not None

    def receive_nowait(self) -> Event:
        reload, self._reload = self._reload, None
        if reload is not None:
            raise reload
        if self._pending:
            return self._pending.popitem(last=False)[1]
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Event:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
                continue
            except BaseException:
                await trio.lowlevel.cancel_shielded_checkpoint()
                raise
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Broker:
    """Delivers events to every current subscriber; made by ``open_broker``."""

    def __init__(self, nursery: trio.Nursery, *, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self.nursery = nursery
        self._subscribers: dict[int, Subscription] = {}
        self._next_key = 0
        self._closed = False
        self.published = 0
        self.conflated = 0
        self.drop_count = 0  # events discarded when a subscriber overflowed
        self.reloads = 0
        self.peak_pending = 0
        #: Called with each new subscription before it is registered (the change feed
        #: uses it to replay a resume); no await may happen in between.
        self.on_subscribe: Any = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscribers.values())

    def note_peak(self, size: int) -> None:
        if size > self.peak_pending:
            self.peak_pending = size

    @asynccontextmanager
    async def subscribe(
        self, after: int | None = None, *, max_pending: int | None = None
    ) -> AsyncIterator[Subscription]:
        """Receive every change from now (or, with the change feed, after ``after``)
        until the block (or the broker) ends: ``async for`` then finishes."""
        size = self.max_pending if max_pending is None else max_pending
        if size < 1:
            raise ValueError(f"max_pending must be at least 1, got {size}")
        await trio.lowlevel.checkpoint()
        sub = Subscription(self, size)
        key = self._next_key
        self._next_key += 1
        if self._closed:
            sub.close()
        else:
            if self.on_subscribe is not None:
                self.on_subscribe(sub, after)
            elif after is not None:
                raise ValueError("after= needs a change feed (a message service's broker)")
            self._subscribers[key] = sub
        try:
            yield sub
        finally:
            self._subscribers.pop(key, None)
            sub.close()

    def send(self, event: Event) -> None:
        """Queue ``event`` for every subscriber (conflating); never blocks."""
        if self._closed:
            return
        self.published += 1
        for sub in self._subscribers.values():
            sub.offer(event)

    def publish(self, type: EventType, payload: Any, *, seq: int | None = None) -> None:
        """Queue an event about ``payload`` (its ``id`` names the item) for everyone."""
        self.send(event_for(type, payload, seq))

    #: Every event is delivered (or conflated into a newer one of its item).
    post = publish

    async def publish_must_deliver(self, type: EventType, payload: Any) -> None:
        """``publish``, with a schedule point (kept from the bounded-buffer broker)."""
        self.publish(type, payload)
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """End every subscription: queued events are still received, then iteration
        ends. Idempotent."""
        self._closed = True
        for sub in self._subscribers.values():
            sub.close()


@asynccontextmanager
async def open_broker(*, max_pending: int = MAX_PENDING) -> AsyncIterator[Broker]:
    """A broker scoped to this block: tasks it starts run in the block's nursery, and
    every subscription ends when the block ends."""
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    async with open_owned_nursery() as nursery:
        broker = Broker(nursery, max_pending=max_pending)
        try:
            yield broker
        finally:
            broker.close()
            nursery.cancel_scope.cancel()


class iter_batches:  # lower case: used like a function, ``async for b in iter_batches(sub)``
    """Yield every event available at each wake-up as one list, in order.

    A class, not an async generator, so that leaving the loop early needs no cleanup.
    """

    def __init__(self, events: Subscription) -> None:
        self._events = events

    def __aiter__(self) -> iter_batches:
        return self

    async def __anext__(self) -> list[Event]:
        try:
            batch = [await self._events.receive()]
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        events = self._events
        while not events.reload_pending:  # raised by the next call, not lost in a batch
            try:
                batch.append(events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch
