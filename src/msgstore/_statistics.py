"""The service's counters, and the snapshot ``MessageService.statistics()`` returns."""

from __future__ import annotations

import attrs


@attrs.define
class Counters:
    """Running totals, shared by the service and its actors (each adds its own)."""

    updates: int = 0
    writes: int = 0
    folds: int = 0
    write_errors: int = 0
    restarts: int = 0
    stopped_actors: int = 0
    busy_waits: int = 0

    def busy_wait(self) -> None:
        self.busy_waits += 1


@attrs.frozen
class ServiceStatistics:
    """A snapshot of a message service, as ``trio``'s ``statistics()`` methods give.

    Counters run from the service's start; the others are the state right now.
    """

    #: Messages that have an actor (a task) right now. Actors with nothing to do retire
    #: after ``idle_timeout``.
    live_actors: int
    #: Messages whose newest accepted state is not in the file yet (an open window, or
    #: a failed write waiting for its retry).
    buffered: int
    #: Seconds (Trio time) since the oldest state in ``buffered`` was accepted; 0 when
    #: nothing is buffered. About ``debounce`` in steady state; more means the event
    #: loop is saturated (windows are written late) or writes are failing.
    oldest_unwritten_age: float
    #: ``update`` calls accepted.
    updates: int
    #: Successful writes of a message's parts (window, terminal and final writes).
    writes: int
    #: Of those, folds: the whole ``parts`` row rewritten (the others are journal rows).
    folds: int
    #: Writes that failed with a storage error (each is retried with backoff).
    write_errors: int
    #: Actors restarted by their supervisor after an unexpected error.
    restarts: int
    #: Actors their supervisor gave up on (too many failures in a short time).
    stopped_actors: int
    #: Sleeps on Trio time while another connection held the write lock.
    busy_waits: int
    #: Events replaced in a subscriber's queue by a newer one of the same item.
    conflated: int
    #: Events discarded when a subscriber left more than ``max_pending`` items unread
    #: (it then gets ``ReloadRequired``); 0 unless a reader is stuck.
    drops: int
    #: The name issue #4 gave drops of terminal states, ``created`` and ``deleted``.
    #: With one queued event per message every event is kept until read, so an event
    #: is only ever lost with the rest of an overflowing queue: this equals ``drops``.
    must_deliver_drops: int
    #: Times a subscriber was told to reload (an overflow, or a resume too old).
    reloads: int
    #: The most items that waited in one subscriber's queue at once.
    peak_pending: int
    #: The newest change number of the file's change log, as the service knows it.
    last_seq: int
    #: Current subscriptions.
    subscribers: int
