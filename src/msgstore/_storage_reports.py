"""The queries behind the command line's reports, exports and imports.

``Database`` inherits them (``class Database(ReportQueries)``): crush's queries in
``_storage`` list top-level sessions and decode messages for the service; these read
every session, every column of a message row, and counts for ``msgstore stats``, and
load an export. The reads are plain ``SELECT``s (or pragmas that only read), so they
run on a read-only connection. They let SQLite's own errors (``apsw.Error``) through,
which the command line reports as they are; ``import_rows`` raises ``StorageError``,
and so do ``file_rows`` / ``read_file_rows`` for a column of a type crush never writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TypeAlias, cast

import apsw
import attrs

from . import _schema
from ._codec import decode_parts, encode_parts
from ._content import Part
from ._errors import CorruptRecord, StorageError
from ._storage_feed import _merged
from ._storage_rows import _SESSION_COLUMNS, Session, _session

_ALL_SESSIONS = f"""SELECT {_SESSION_COLUMNS}
FROM sessions
ORDER BY created_at ASC, rowid ASC"""
# The raw columns: finished_at and a NULL model are not on Message, and an export must
# give back exactly what the row holds.
_MESSAGE_ROWS = """SELECT id, session_id, role, parts, model, provider, is_summary_message,
    created_at, updated_at, finished_at
FROM messages
WHERE session_id = ?
ORDER BY created_at ASC, rowid ASC"""

_TABLES = ("sessions", "messages", "files", "read_files")
# One statement per table: the names are constants, never user input.
_COUNTS = {table: f"SELECT count(*) FROM {table}" for table in _TABLES}
_ROLES = "SELECT role, count(*) FROM messages GROUP BY role ORDER BY count(*) DESC, role"
# json_each over anything but a JSON array would walk an object's keys: only arrays count.
_PARTS_BY_TYPE = """SELECT coalesce(json_extract(p.value, '$.type'), '(no type)') AS tag, count(*)
FROM messages AS m, json_each(m.parts) AS p
WHERE json_valid(m.parts) AND json_type(m.parts) = 'array'
GROUP BY tag
ORDER BY count(*) DESC, tag"""
_UNREADABLE_PARTS = """SELECT count(*)
FROM messages
WHERE NOT (json_valid(parts) AND json_type(parts) = 'array')"""
_PARTS_BYTES = "SELECT coalesce(sum(length(CAST(parts AS BLOB))), 0) FROM messages"
_UNFINISHED = "SELECT count(*) FROM messages WHERE role = 'assistant' AND finished_at IS NULL"

_FILE_ROWS = """SELECT id, session_id, path, content, version, created_at, updated_at
FROM files
WHERE session_id = ?
ORDER BY created_at ASC, rowid ASC"""
_READ_FILE_ROWS = """SELECT session_id, path, read_at
FROM read_files
WHERE session_id = ?
ORDER BY rowid ASC"""

_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = ?"
_MESSAGE_EXISTS = "SELECT 1 FROM messages WHERE id = ?"
_FILE_EXISTS = "SELECT 1 FROM files WHERE id = ?"
_READ_FILE_EXISTS = "SELECT 1 FROM read_files WHERE session_id = ? AND path = ?"
_INSERT_SESSION = """INSERT INTO sessions (id, parent_session_id, title, message_count,
    prompt_tokens, completion_tokens, cost, summary_message_id, todos, updated_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_MESSAGE = """INSERT INTO messages (id, session_id, role, parts, model, provider,
    is_summary_message, created_at, updated_at, finished_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_FILE = """INSERT INTO files (id, session_id, path, content, version, created_at,
    updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)"""
_INSERT_READ_FILE = "INSERT INTO read_files (session_id, path, read_at) VALUES (?, ?, ?)"


# A message row as ``message_rows`` gives it: every column as stored (``model`` may be
# NULL, and ``finished_at`` is kept), ``parts`` decoded, in this order: id, session_id,
# role, parts, model, provider, is_summary_message, created_at, updated_at, finished_at.
MessageColumns: TypeAlias = tuple[
    str, str, str, list[Part], str | None, str | None, bool, int, int, int | None
]


# A ``files`` row, every column: id, session_id, path, content, version, created_at,
# updated_at. A ``read_files`` row: session_id, path, read_at.
FileColumns: TypeAlias = tuple[str, str, str, str, int, int, int]
ReadFileColumns: TypeAlias = tuple[str, str, int]


@attrs.frozen
class ImportedRows:
    """What ``import_rows`` did: the new ids (old -> new) of the rows given one, the
    rows inserted and the rows skipped (``skip_existing``), per table."""

    renamed_sessions: dict[str, str]
    renamed_messages: dict[str, str]
    renamed_files: dict[str, str]
    inserted: dict[str, int]
    skipped: dict[str, int]


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise StorageError(f"{what} is {type(value).__name__}, not text")
    return value


def _integer(value: object, what: str) -> int:
    if type(value) is not int:
        raise StorageError(f"{what} is {type(value).__name__}, not an integer")
    return value


class ReportQueries:
    """Reads for reports and exports, and the import; mixed into ``Database``."""

    connection: apsw.Connection
    path: str

    # -- reads ----------------------------------------------------------------------------

    def all_sessions(self) -> list[Session]:
        """Every session, sub-sessions too, oldest first (ties by insertion)."""
        return [_session(r) for r in self.connection.execute(_ALL_SESSIONS).fetchall()]

    def message_rows(self, session_id: str) -> list[MessageColumns]:
        """A session's message rows, oldest first, every column (see ``MessageColumns``);
        ``CorruptRecord`` (naming the id) for parts that are not JSON text of parts."""
        out: list[MessageColumns] = []
        with self.connection:  # one snapshot for the rows and their journal
            rows = self.connection.execute(_MESSAGE_ROWS, (session_id,)).fetchall()
            # While a service streams a message, its newest windows are in the journal.
            journals = self._journal_by_message(cast(str, r[0]) for r in rows) if rows else {}
        for row in rows:
            mid, sid, role, parts, model, provider, summary, created, updated, finished = row
            mid = cast(str, mid)
            if not isinstance(parts, str | bytes):
                raise CorruptRecord(f"parts is {type(parts).__name__}, not text", message_id=mid)
            decoded = decode_parts(parts, message_id=mid)
            entries = journals.get(mid)
            if entries:
                text = parts if isinstance(parts, str) else parts.decode("utf-8", "surrogatepass")
                decoded = _merged(mid, text, decoded, entries)
            out.append(
                (
                    mid,
                    cast(str, sid),
                    cast(str, role),
                    decoded,
                    cast("str | None", model),
                    cast("str | None", provider),
                    bool(summary),
                    cast(int, created),
                    cast(int, updated),
                    cast("int | None", finished),
                )
            )
        return out

    def _journal_by_message(self, ids: Iterable[str]) -> dict[str, list[tuple[int, int, str]]]:
        raise NotImplementedError  # FeedQueries', in Database

    def file_rows(self, session_id: str) -> list[FileColumns]:
        """A session's ``files`` rows, oldest first, every column (see ``FileColumns``);
        ``StorageError`` (naming the row) for a column of the wrong type."""
        out: list[FileColumns] = []
        for row in self.connection.execute(_FILE_ROWS, (session_id,)).fetchall():
            fid, sid, path, content, version, created, updated = row
            what = f"files row {fid!r}"
            out.append(
                (
                    _text(fid, "a files row's id"),
                    _text(sid, f"{what}: session_id"),
                    _text(path, f"{what}: path"),
                    _text(content, f"{what}: content"),
                    _integer(version, f"{what}: version"),
                    _integer(created, f"{what}: created_at"),
                    _integer(updated, f"{what}: updated_at"),
                )
            )
        return out

    def read_file_rows(self, session_id: str) -> list[ReadFileColumns]:
        """A session's ``read_files`` rows (session_id, path, read_at), in insertion order."""
        out: list[ReadFileColumns] = []
        for sid, path, read_at in self.connection.execute(_READ_FILE_ROWS, (session_id,)):
            what = f"read_files row {path!r}"
            out.append(
                (
                    _text(sid, f"{what}: session_id"),
                    _text(path, "a read_files row's path"),
                    _integer(read_at, f"{what}: read_at"),
                )
            )
        return out

    # -- counts, for ``msgstore stats`` ---------------------------------------------------

    def _count(self, sql: str) -> int:
        return cast(int, self.connection.execute(sql).get)

    def schema_version(self) -> int:
        """The newest schema version applied to the file (0 when it has none)."""
        return max(_schema.applied_versions(self.connection), default=0)

    def page_counts(self) -> tuple[int, int, int]:
        """The file's page size, its page count and how many of them are free."""
        con = self.connection
        return (
            cast(int, con.pragma("page_size")),
            cast(int, con.pragma("page_count")),
            cast(int, con.pragma("freelist_count")),
        )

    def row_counts(self) -> dict[str, int]:
        """Rows per table: sessions, messages, files, read_files."""
        return {table: self._count(sql) for table, sql in _COUNTS.items()}

    def role_counts(self) -> dict[str, int]:
        """Messages per role, most first."""
        rows = self.connection.execute(_ROLES).fetchall()
        return {cast(str, r): cast(int, n) for r, n in rows}

    def part_type_counts(self) -> dict[str, int]:
        """Parts per ``type`` tag over every readable parts array, most first."""
        rows = self.connection.execute(_PARTS_BY_TYPE).fetchall()
        return {str(t): cast(int, n) for t, n in rows}

    def unreadable_parts_count(self) -> int:
        """Messages whose parts column is not a JSON array."""
        return self._count(_UNREADABLE_PARTS)

    def parts_bytes(self) -> int:
        """The bytes the parts columns hold, together."""
        return self._count(_PARTS_BYTES)

    def unfinished_assistant_count(self) -> int:
        """Assistant messages with no ``finished_at``."""
        return self._count(_UNFINISHED)

    # -- import ---------------------------------------------------------------------------

    def _has(self, sql: str, *key: str) -> bool:
        return bool(self.connection.execute(sql, key).fetchall())

    def import_rows(
        self,
        sessions: Sequence[Session],
        messages: Sequence[MessageColumns],
        files: Sequence[FileColumns] = (),
        read_files: Sequence[ReadFileColumns] = (),
        *,
        skip_existing: bool = False,
    ) -> ImportedRows:
        """Insert exported rows (as ``message_rows``, ``file_rows`` and ``read_file_rows``
        give them), all in one transaction or none, every column as given.

        A session, message or file whose id the database already has gets a new id,
        and the references to it (parent, summary message, a row's session) follow;
        with ``skip_existing`` it is not inserted at all (a message or file of a skipped
        session then belongs to the row already there), nor is a ``read_files`` row
        whose (session, path) the database has: importing one export twice is then a
        no-op. ``StorageError`` when SQLite refuses (nothing is imported then).

        crush's triggers bump a session's ``message_count`` and with it ``updated_at``
        for every message inserted, and an ``UPDATE`` of ``updated_at`` fires them
        again. So, inside the transaction and with foreign keys deferred to its commit,
        the messages go in first (the triggers find no new session to touch), then
        the new sessions with the exported ``updated_at`` and their message counts.
        """
        con = self.connection
        skipped = dict.fromkeys(("sessions", "messages", "files", "read_files"), 0)
        inserted = dict.fromkeys(skipped, 0)
        try:
            with con:  # one transaction: a failure leaves the file as it was
                con.pragma("defer_foreign_keys", True)  # reset at the commit
                s_map: dict[str, str] = {}
                new_sessions: list[Session] = []
                for s in sessions:
                    if self._has(_SESSION_EXISTS, s.id):
                        if skip_existing:
                            skipped["sessions"] += 1
                            continue
                        s_map[s.id] = str(uuid.uuid4())
                    new_sessions.append(s)
                m_map: dict[str, str] = {}
                counts: dict[str, int] = {}
                for m in messages:
                    mid, sid, role, parts, model, provider, summary, created, updated, finished = m
                    if self._has(_MESSAGE_EXISTS, mid):
                        if skip_existing:
                            skipped["messages"] += 1
                            continue
                        m_map[mid] = str(uuid.uuid4())
                    target = s_map.get(sid, sid)
                    counts[target] = counts.get(target, 0) + 1
                    con.execute(
                        _INSERT_MESSAGE,
                        (
                            m_map.get(mid, mid),
                            target,
                            role,
                            encode_parts(parts),
                            model,
                            provider,
                            int(summary),
                            created,
                            updated,
                            finished,
                        ),
                    )
                    inserted["messages"] += 1
                for s in new_sessions:
                    new_id = s_map.get(s.id, s.id)
                    parent = s.parent_session_id
                    con.execute(
                        _INSERT_SESSION,
                        (
                            new_id,
                            s_map.get(parent, parent) if parent is not None else None,
                            s.title,
                            counts.get(new_id, 0),
                            s.prompt_tokens,
                            s.completion_tokens,
                            s.cost,
                            m_map.get(s.summary_message_id, s.summary_message_id)
                            if s.summary_message_id is not None
                            else None,
                            s.todos,
                            s.updated_at,
                            s.created_at,
                        ),
                    )
                    inserted["sessions"] += 1
                f_map: dict[str, str] = {}
                for fid, sid, path, content, version, created, updated in files:
                    if self._has(_FILE_EXISTS, fid):
                        if skip_existing:
                            skipped["files"] += 1
                            continue
                        f_map[fid] = str(uuid.uuid4())
                    con.execute(
                        _INSERT_FILE,
                        (f_map.get(fid, fid), s_map.get(sid, sid), path, content, version,
                         created, updated),
                    )  # fmt: skip
                    inserted["files"] += 1
                for sid, path, read_at in read_files:
                    target = s_map.get(sid, sid)
                    if skip_existing and self._has(_READ_FILE_EXISTS, target, path):
                        skipped["read_files"] += 1
                        continue
                    con.execute(_INSERT_READ_FILE, (target, path, read_at))
                    inserted["read_files"] += 1
        except apsw.Error as e:
            raise StorageError(f"import into {self.path} failed, nothing was imported: {e}") from e
        return ImportedRows(s_map, m_map, f_map, inserted, skipped)
