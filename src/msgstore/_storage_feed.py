"""The change log and the delta journal's queries (tables in ``_feed_schema``).

``Database`` inherits them (``class Database(FeedQueries, ...)``). The journal is
written by one connection's actors; what this connection journals is tracked here
(``_unfolded``: a message's first journal row since its last fold), so that a fold can
delete this connection's dead journal rows as one range from the bottom of the table,
never row by row across pages that other streams share.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, cast

import apsw
import attrs

from . import _feed_schema, _journal, _schema
from ._content import Part
from ._errors import MsgstoreError, StorageError

logger = logging.getLogger("msgstore")

_LAST_SEQ = (
    "SELECT max(coalesce((SELECT max(seq) FROM msgstore_log), 0), "
    "coalesce((SELECT max(seq) FROM msgstore_journal), 0))"
)
_OLDEST_LOGGED = "SELECT min(seq) FROM msgstore_log"
_CHANGES_AFTER = """SELECT seq, kind, item, op, parent FROM msgstore_log WHERE seq > ?1
UNION ALL
SELECT seq, 'message', message_id, 'updated', NULL FROM msgstore_journal WHERE seq > ?1
ORDER BY seq"""
_APPEND_JOURNAL = (
    "INSERT INTO msgstore_journal (seq, message_id, owner, base, delta) "
    f"VALUES ({_feed_schema.NEXT_SEQ}, ?, ?, ?, ?)"
)
_ANY_JOURNAL = "SELECT 1 FROM msgstore_journal LIMIT 1"
# From a seq up (the rowid range): the journal of every stream since, never the table.
_JOURNAL_SINCE = (
    "SELECT message_id, seq, base, delta FROM msgstore_journal WHERE seq > ? ORDER BY seq"
)
_OWN_JOURNAL_OF = (
    "SELECT seq, base, delta FROM msgstore_journal "
    "WHERE seq >= ? AND message_id = ? AND owner = ? ORDER BY seq"
)
# The message row's newest write the log still holds (``msgstore_log_item`` finds it).
_LAST_ROW_WRITE = (
    "SELECT max(seq) FROM msgstore_log WHERE kind = 'message' AND item = ? AND op != 'deleted'"
)
_PRUNE_OWN_BELOW = "DELETE FROM msgstore_journal WHERE owner = ? AND seq < ?"
_PRUNE_OWN = "DELETE FROM msgstore_journal WHERE owner = ?"
_JOURNAL_OWNERS = "SELECT DISTINCT owner FROM msgstore_journal"
_JOURNALLED_BY = "SELECT DISTINCT message_id FROM msgstore_journal WHERE owner = ?"
_PARTS_OF = "SELECT parts FROM messages WHERE id = ?"
_SCHEMA_VERSION = "PRAGMA schema_version"
_LOG_ROW = (
    "INSERT INTO msgstore_log (seq, kind, item, op, parent) "
    "VALUES (?, 'message', ?, 'updated', NULL)"
)
JournalRow = tuple[int, int, str]  # seq, base, delta


@attrs.frozen
class Change:
    """One numbered change as the log (or the journal) records it."""

    seq: int
    kind: str  # "message" or "session"
    id: str
    op: str  # "created", "updated" or "deleted"
    session_id: str | None  # a message's session; None for a session


class FeedQueries:
    """The log and journal queries; ``Database`` provides the connection."""

    connection: apsw.Connection
    path: str
    read_only: bool

    def _init_feed(self) -> None:
        #: Names this connection's journal rows (for pruning, and for a lease).
        self.owner = uuid.uuid4().hex[:16]
        self.feed_installed = _feed_schema.is_installed(self.connection)
        self._schema_version = self._read_schema_version()
        self._unfolded: dict[str, int] = {}

    def _read_schema_version(self) -> int:
        try:
            return int(self.connection.execute(_SCHEMA_VERSION).get)
        except apsw.Error:
            return -1

    def _check_installed(self) -> bool:
        """Whether the file has the log and journal now: another connection may have
        added (or removed) them since this one opened."""
        version = self._read_schema_version()
        if version != self._schema_version:
            self._schema_version = version
            self.feed_installed = _feed_schema.is_installed(self.connection)
        return self.feed_installed

    # -- installing --------------------------------------------------------------------

    def install_feed(self) -> None:
        """Add the change log, journal and their triggers to the file (idempotent)."""
        if self.feed_installed:
            return
        try:
            with _schema.immediate(self.connection):
                _feed_schema.install(self.connection)
        except apsw.Error as e:
            raise self.storage_error(e, "install the change log") from e
        self.feed_installed = True

    # -- the log -----------------------------------------------------------------------

    def last_seq(self) -> int:
        """The newest change's number (0 before any, or without a log)."""
        if not self._check_installed():
            return 0
        return cast(int, self._feed_read(lambda: self.connection.execute(_LAST_SEQ).get))

    def oldest_resumable_seq(self) -> int:
        """The smallest ``after`` a resume may ask for: every change since is known."""
        if not self.feed_installed:
            return 0
        oldest = self._feed_read(lambda: self.connection.execute(_OLDEST_LOGGED).get)
        return 0 if oldest is None else cast(int, oldest) - 1

    def changes_after(self, seq: int) -> list[Change]:
        """Every logged change after ``seq``, oldest first (journal rows as ``updated``)."""
        if not self.feed_installed:
            return []
        rows = self._feed_read(lambda: self.connection.execute(_CHANGES_AFTER, (seq,)).fetchall())
        return [Change(*cast(tuple[int, str, str, str, str | None], row)) for row in rows]

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits."""
        return int(self._feed_read(lambda: self.connection.pragma("data_version")))

    def _feed_read(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except apsw.Error as e:
            raise self.storage_error(e, "read the change log") from e

    # -- the journal: writing ----------------------------------------------------------

    def append_journal(self, id: str, base: int, delta: str) -> int:
        """Record one window's delta of message ``id``; its seq."""
        con = self.connection
        try:
            con.execute(_APPEND_JOURNAL, (id, self.owner, base, delta))
        except apsw.Error as e:
            raise self.storage_error(e, f"write message {id!r}") from e
        seq = con.last_insert_rowid()
        self._unfolded.setdefault(id, seq)
        return seq

    def _folded(self, id: str) -> None:
        """``id``'s row now holds everything: delete this connection's dead journal
        rows, as far up as the oldest row still needed (run inside the fold's
        transaction)."""
        if self._unfolded.pop(id, None) is None:
            return
        con = self.connection
        if self._unfolded:
            con.execute(_PRUNE_OWN_BELOW, (self.owner, min(self._unfolded.values())))
        else:
            con.execute(_PRUNE_OWN, (self.owner,))

    def _forget_journal(self, id: str) -> None:
        self._unfolded.pop(id, None)

    # -- the journal: reading ----------------------------------------------------------

    def _journal_is_empty(self) -> bool:
        return not self._check_installed() or not self.connection.execute(_ANY_JOURNAL).fetchall()

    def _journal_by_message(self, ids: Iterable[str]) -> dict[str, list[JournalRow]]:
        """The live candidates among these messages' journal rows (one scan of the
        table), oldest first: those newer than the message row's last write. Run it in
        the read transaction of the rows' SELECT (one snapshot)."""
        if self._journal_is_empty():
            return {}
        con = self.connection
        # A row older than its message row's newest write is dead, even when its base
        # happens to match (the same text folded twice); so the scan starts after the
        # oldest of those writes (the whole table only if the log no longer has one).
        last_write: dict[str, int] = {}
        for id in set(ids):
            last = con.execute(_LAST_ROW_WRITE, (id,)).get
            last_write[id] = 0 if last is None else cast(int, last)
        if not last_write:
            return {}
        found: dict[str, list[JournalRow]] = {}
        since = min(last_write.values())
        for message_id, seq, base, delta in con.execute(_JOURNAL_SINCE, (since,)):
            after = last_write.get(message_id)
            if after is not None and seq > after:
                found.setdefault(message_id, []).append((seq, base, delta))
        return found

    def _own_journal_of(self, id: str) -> list[JournalRow]:
        """This connection's live journal rows of ``id`` (a range from the first)."""
        first = self._unfolded.get(id)
        if first is None or not self.feed_installed:
            return []
        rows = self.connection.execute(_OWN_JOURNAL_OF, (first, id, self.owner)).fetchall()
        return cast(list[JournalRow], rows)

    # -- recovery ----------------------------------------------------------------------

    def fold_journals(
        self, live_owners: Callable[[], Callable[[str], bool]], *, own: bool = False
    ) -> list[str]:
        """Fold the journal rows that owners no longer alive left; the messages folded.

        A killed service leaves its last windows only in the journal: each is written
        into its message's row (one transaction for all) and the rows are deleted, so no
        committed window is lost and crush sees it too. Rows of live owners (another
        process still streaming) are left alone: ``live_owners`` is asked once the write
        lock is held, so an owner that starts meanwhile is seen. This connection's own
        rows are folded only with ``own``. A message whose row or journal cannot be
        read is logged and its rows dropped, so one bad row cannot stop every later
        start. ``DatabaseBusy`` when another connection holds the lock.
        """
        if self._journal_is_empty():
            return []
        con = self.connection
        folded: list[str] = []
        try:
            with _schema.immediate(con):
                before = cast(int, con.execute(_LAST_SEQ).get)
                is_live = live_owners()
                owners = [cast(str, r[0]) for r in con.execute(_JOURNAL_OWNERS).fetchall()]
                dead = [o for o in owners if (own or o != self.owner) and not is_live(o)]
                dropped = ""
                for owner in dead:
                    ids = [cast(str, r[0]) for r in con.execute(_JOURNALLED_BY, (owner,))]
                    for id in ids:
                        dropped = id
                        if self._fold_one(id):
                            folded.append(id)
                    con.execute(_PRUNE_OWN, (owner,))
                    if owner == self.owner:
                        self._unfolded.clear()
                if cast(int, con.execute(_LAST_SEQ).get) < before:
                    # The newest number was a dropped journal row: a log row keeps its
                    # place, so no number is ever given out twice.
                    con.execute(_LOG_ROW, (before + 1, dropped))
        except apsw.Error as e:
            raise self.storage_error(e, "fold the journal a stopped service left") from e
        return folded

    def _fold_one(self, id: str) -> bool:
        """Write ``id``'s row with its live journal rows applied (inside a transaction)."""
        from ._codec import decode_parts, encode_parts

        row = self.connection.execute(_PARTS_OF, (id,)).fetchall()
        if not row:
            return False
        try:
            text = cast(str, row[0][0])
            parts = decode_parts(text, message_id=id)
            merged = _merged(id, text, parts, self._journal_by_message([id]).get(id, []))
        except MsgstoreError as e:
            logger.error("the journal of message %s cannot be applied; dropping it: %s", id, e)
            return False
        if merged is parts:
            return False
        self._write_row(id, encode_parts(merged), merged)
        return True

    def remove_feed(self) -> list[str]:
        """Take out everything msgstore added to the file: fold every journal row into
        its message, then drop the log, the journal, the lease tables and their
        triggers, so the file holds crush's schema alone again. The messages folded.

        Refused (``StorageError``) while a live service holds a lease on the file.
        """
        from ._lease import OwnerCheck, has_lease_tables, remove_lease_tables

        con = self.connection
        check = OwnerCheck(cast(Any, self))
        try:
            if check.live:
                raise StorageError(
                    f"{self.path!r} is in use by {len(check.live)} live message service(s); "
                    "stop them first"
                )
            folded = (
                self.fold_journals(lambda: lambda owner: False, own=True)
                if self.feed_installed
                else []
            )
            try:
                with _schema.immediate(con):
                    _feed_schema.remove(con)
                    if has_lease_tables(con):
                        remove_lease_tables(con)
            except apsw.Error as e:
                raise self.storage_error(e, "remove msgstore's tables") from e
            check.remove_dead_lock_files()
        finally:
            check.close()
        self.feed_installed = False
        return folded

    # -- provided by Database ----------------------------------------------------------

    def _write_row(self, id: str, parts_json: str, parts: list[Part]) -> None:
        raise NotImplementedError

    def storage_error(self, e: apsw.Error, doing: str) -> StorageError:
        raise NotImplementedError


def _merged(id: str, parts_json: str, parts: list[Part], rows: list[JournalRow]) -> list[Part]:
    """``parts`` with the journal rows that build on ``parts_json`` applied, in order."""
    if not rows:
        return parts
    base = _journal.base_of(parts_json)
    live = [delta for _, row_base, delta in rows if row_base == base]
    if not live:
        return parts
    merged = list(parts)
    for delta in live:
        _journal.apply(merged, delta, message_id=id)
    return merged
