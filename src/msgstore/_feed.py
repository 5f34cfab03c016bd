"""The change feed: every committed change, numbered, as events; resumes; other writers.

The file's change log (``_feed_schema``) numbers every change of a message or session
row, whoever made it. The feed keeps a *cursor*, the newest number it has published,
and publishes in log order:

* After each of this service's commits, the committer calls ``committed`` with the
  event it knows (state in hand, no read). When the commit's number is the cursor + 1
  (a window's journal row, the common case) that is all. Otherwise some other change
  was numbered in between (a trigger's side effect such as a session's message count,
  or another process's commit): the feed reads the log from the cursor and publishes
  those too, in order, reading each other item's current row once.
* ``watch`` (opt-in, ``poll_interval``) polls ``PRAGMA data_version`` on Trio time while
  anyone subscribes; it changes when another connection commits, and the feed then
  reads the log after the cursor. So a change another process commits reaches
  subscribers within one poll interval plus a scheduler pass.
* A resume (``subscribe(after=SEQ)``) reads the log after ``SEQ`` and queues the
  current state of each item changed since, in the order of its newest change, before
  the subscription is registered; no await separates the two, and events at or below
  the cursor are ignored for it, so there is neither gap nor duplicate. When the log no
  longer reaches back to ``SEQ``, the subscriber gets ``ReloadRequired`` instead.

Nothing here waits on a subscriber, and nothing runs per token. A read of the log
that fails (a disk error) never reaches the committer, whose write is done: every
subscriber is told to reload (``ReloadRequired``) instead, and the feed starts again
from the file's newest change at the next commit or poll.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ._broker import Broker, Event, EventType, Subscription
from ._errors import MsgstoreError, NotFound
from ._storage import Database
from ._storage_feed import Change

logger = logging.getLogger("msgstore")

_TYPES = {"created": EventType.CREATED, "updated": EventType.UPDATED, "deleted": EventType.DELETED}


class ChangeFeed:
    """Publishes one database's numbered changes on one broker. Made by the service."""

    def __init__(self, db: Database, broker: Broker) -> None:
        self._db = db
        self._broker = broker
        self.cursor = 0
        # While nobody subscribes the cursor is not kept up to date (``_resync`` reads
        # the file when it is needed): opening the service reads nothing.
        self._stale = True
        self._data_version = -1
        self._subscribed = trio.Event()
        broker.on_subscribe = self._on_subscribe

    @property
    def last_seq(self) -> int:
        """The newest change number this feed has published (or could have)."""
        if self._stale or not self._broker.subscriber_count:
            try:
                return self._db.last_seq()
            except MsgstoreError as e:
                logger.warning("change feed could not read the log: %s", e)
                return self.cursor
        return self.cursor

    # -- this service's commits --------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Anyone subscribes: committers call ``committed``, else ``committed_unheard``
        (and need not build the event's payload)."""
        return bool(self._broker.subscriber_count)

    def committed_unheard(self) -> None:
        self._stale = True

    def committed(
        self, type: EventType, payload: Any, kind: str, id: str, seq: int | None = None
    ) -> None:
        """Publish the change just committed here; ``seq`` when the committer knows it."""
        broker = self._broker
        if not broker.subscriber_count:
            self._stale = True
            return
        try:
            self._committed(type, payload, kind, id, seq)
        except Exception as e:  # a failed read of the log: never the committer's problem
            self._lost(e)

    def _committed(
        self, type: EventType, payload: Any, kind: str, id: str, seq: int | None
    ) -> None:
        broker = self._broker
        if self._stale:
            # After a failed read: the subscribers were told to reload, and this commit
            # is the first change they get after it.
            self._resync()
            broker.send(Event(type, payload, self.cursor if seq is None else seq, kind, id))
            return
        if seq is None:
            seq = self._db.last_seq()
            if seq != self.cursor + 1:
                self._catch_up(own=(kind, id, type, payload))
                return
        elif seq != self.cursor + 1:
            self._catch_up(own=(kind, id, type, payload))
            return
        self.cursor = seq
        broker.send(Event(type, payload, seq, kind, id))

    # -- other writers -----------------------------------------------------------------

    def catch_up(self) -> None:
        """Publish what other connections committed since the cursor."""
        try:
            if self._stale:
                self._resync()
            else:
                self._catch_up()
        except Exception as e:
            self._lost(e)

    def _lost(self, error: Exception) -> None:
        """The log could not be read: subscribers may miss changes, so they reload."""
        logger.error("change feed could not read the log; subscribers must reload: %s", error)
        self._stale = True
        for sub in list(self._broker.subscriptions()):
            sub.must_reload(f"the change log could not be read ({error})", self.cursor)

    def _catch_up(self, own: tuple[str, str, EventType, Any] | None = None) -> None:
        changes = self._db.changes_after(self.cursor)
        if not changes:
            return
        self.cursor = changes[-1].seq
        for event in self._events(changes, own):
            self._broker.send(event)

    def _resync(self) -> None:
        # Nobody listened while changes were made: start from what the file holds now.
        self._stale = False
        # data_version first: a commit landing between the two reads is then seen by
        # the next poll, not counted in the cursor and missed.
        self._data_version = _data_version(self._db)
        self.cursor = self._db.last_seq()

    async def watch(self, poll_interval: float) -> None:
        """Poll for other connections' commits while anyone subscribes (a task)."""
        db = self._db
        while True:
            while not self._broker.subscriber_count:
                self._subscribed = trio.Event()
                await self._subscribed.wait()
            await trio.sleep(poll_interval)
            if db.closed:
                return
            try:
                version = _data_version(db)
            except Exception as e:  # a read failed: say so, try again next time
                logger.warning("change feed could not poll the file: %r", e)
                continue
            if version != self._data_version:
                self._data_version = version
                self.catch_up()

    # -- resumes -----------------------------------------------------------------------

    def _on_subscribe(self, sub: Subscription, after: int | None) -> None:
        self._subscribed.set()
        try:
            self._start(sub, after)
        except Exception as e:
            self._lost(e)
            sub.must_reload(f"the change log could not be read ({e})", None)

    def _start(self, sub: Subscription, after: int | None) -> None:
        if self._stale or not self._broker.subscriber_count:
            self._resync()
        else:
            self._catch_up()  # the others first: the cursor is then the file's newest
        if after is not None:
            oldest = self._db.oldest_resumable_seq()
            if after > self.cursor:
                sub.must_reload(
                    f"change {after} is newer than any in this file ({self.cursor}): a "
                    "seq from another file, or from before the log was removed",
                    self.cursor,
                )
            elif after < oldest:
                sub.must_reload(
                    f"the change log no longer holds changes after {after} (it begins "
                    f"after {oldest}): reload, then go on reading",
                    self.cursor,
                )
            else:
                changes = [c for c in self._db.changes_after(after) if c.seq <= self.cursor]
                for event in self._events(changes, None):
                    sub.offer(event)
        sub.floor = self.cursor

    # -- changes to events -------------------------------------------------------------

    def _events(
        self, changes: list[Change], own: tuple[str, str, EventType, Any] | None
    ) -> list[Event]:
        """One event per item changed, in the order of its newest change, with the
        item's current state (``own`` is the state this service just committed)."""
        newest: dict[tuple[str, str], tuple[Change, bool, int]] = {}
        for change in changes:
            key = (change.kind, change.id)
            earlier = newest.pop(key, None)
            created = change.op == "created" or (
                earlier is not None and earlier[1] and change.op == "updated"
            )
            newest[key] = (change, created, 1 if earlier is None else earlier[2] + 1)
        events = []
        for (kind, id), (change, created, count) in newest.items():
            type = EventType.CREATED if created else _TYPES[change.op]
            if (
                own is not None
                and own[0] == kind
                and own[1] == id
                and count == 1
                and _TYPES[change.op] is own[2]
            ):
                # This commit's own change, alone: its state is in hand. (Another
                # connection's change of the same item since: read the row instead.)
                events.append(Event(own[2], own[3], change.seq, kind, id))
                continue
            if type is EventType.DELETED:
                events.append(Event(type, None, change.seq, kind, id))
                continue
            payload = self._state(kind, id)
            if payload is None:
                continue  # gone since: its delete is numbered later, and follows
            events.append(Event(type, payload, change.seq, kind, id))
        return events

    def _state(self, kind: str, id: str) -> Any:
        db = self._db
        try:
            if kind == "message":
                return db.stored_message(id)
            if kind == "session":
                return db.get_session(id)
        except NotFound:
            return None
        except MsgstoreError as e:  # an unreadable row: report it, skip the event
            logger.warning("change feed cannot read %s %s: %s", kind, id, e)
            return None
        return None


def _data_version(db: Database) -> int:
    return db.data_version()
