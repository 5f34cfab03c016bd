"""The queries behind the command line's reports, exports and imports.

``Database`` inherits them (``class Database(ReportQueries)``): crush's queries in
``_storage`` list top-level sessions and decode messages for the service; these read
every session, every column of a message row, and counts for ``msgstore stats``, and
load an export. The reads are plain ``SELECT``s (or pragmas that only read), so they
run on a read-only connection. They let SQLite's own errors (``apsw.Error``) through,
which the command line reports as they are; ``import_rows`` raises ``StorageError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TypeAlias, cast

import apsw

from . import _schema
from ._codec import decode_parts, encode_parts
from ._content import Part
from ._errors import CorruptRecord, StorageError
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

_SESSION_EXISTS = "SELECT 1 FROM sessions WHERE id = ?"
_MESSAGE_EXISTS = "SELECT 1 FROM messages WHERE id = ?"
_INSERT_SESSION = """INSERT INTO sessions (id, parent_session_id, title, message_count,
    prompt_tokens, completion_tokens, cost, summary_message_id, todos, updated_at, created_at)
VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_MESSAGE = """INSERT INTO messages (id, session_id, role, parts, model, provider,
    is_summary_message, created_at, updated_at, finished_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


# A message row as ``message_rows`` gives it: every column as stored (``model`` may be
# NULL, and ``finished_at`` is kept), ``parts`` decoded, in this order: id, session_id,
# role, parts, model, provider, is_summary_message, created_at, updated_at, finished_at.
MessageColumns: TypeAlias = tuple[
    str, str, str, list[Part], str | None, str | None, bool, int, int, int | None
]


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
        for row in self.connection.execute(_MESSAGE_ROWS, (session_id,)).fetchall():
            mid, sid, role, parts, model, provider, summary, created, updated, finished = row
            mid = cast(str, mid)
            if not isinstance(parts, str | bytes):
                raise CorruptRecord(f"parts is {type(parts).__name__}, not text", message_id=mid)
            out.append(
                (
                    mid,
                    cast(str, sid),
                    cast(str, role),
                    decode_parts(parts, message_id=mid),
                    cast("str | None", model),
                    cast("str | None", provider),
                    bool(summary),
                    cast(int, created),
                    cast(int, updated),
                    cast("int | None", finished),
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

    def _new_ids(self, ids: Iterable[str], exists_sql: str) -> dict[str, str]:
        """old -> new for the ids the database already has."""
        con = self.connection
        return {old: str(uuid.uuid4()) for old in ids if con.execute(exists_sql, (old,)).fetchall()}

    def import_rows(
        self, sessions: Sequence[Session], messages: Sequence[MessageColumns]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Insert exported sessions and messages (rows as ``message_rows`` gives them),
        all in one transaction or none.

        A session or message whose id the file already has gets a new one, and the
        references to it (parent, summary message, a message's session) follow. The
        sessions' message counts start at 0 for the triggers to count. Returns the
        new ids, old -> new, of sessions and of messages; ``StorageError`` when SQLite
        refuses (nothing is imported then).
        """
        con = self.connection
        try:
            with con:  # one transaction: a failure leaves the file as it was
                s_map = self._new_ids((s.id for s in sessions), _SESSION_EXISTS)
                m_map = self._new_ids((m[0] for m in messages), _MESSAGE_EXISTS)
                for s in sessions:
                    parent = s.parent_session_id
                    con.execute(
                        _INSERT_SESSION,
                        (
                            s_map.get(s.id, s.id),
                            s_map.get(parent, parent) if parent is not None else None,
                            s.title,
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
                for m in messages:
                    mid, sid, role, parts, model, provider, summary, created, updated, finished = m
                    con.execute(
                        _INSERT_MESSAGE,
                        (
                            m_map.get(mid, mid),
                            s_map.get(sid, sid),
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
        except apsw.Error as e:
            raise StorageError(f"import into {self.path} failed, nothing was imported: {e}") from e
        return s_map, m_map
