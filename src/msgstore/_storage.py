"""The SQLite layer: one apsw connection to a crush-compatible file, and its queries.

The SQL text is crush's (``sql/messages.sql``, ``sql/sessions.sql``) with ``*`` spelled
out, so rows are read by name whatever column order the file was built with, and with
``rowid`` added to every ``ORDER BY`` so rows created in the same second keep their
insertion order. Everything here is synchronous and short; the service decides where
it runs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TypeAlias, cast

import apsw

from . import _journal, _schema
from ._codec import decode_parts, encode_parts
from ._content import Finish, Message, Part, Role, check_text
from ._errors import (
    CorruptRecord,
    DatabaseBusy,
    DatabaseError,
    InvalidPart,
    MessageNotFound,
    SessionNotFound,
    StorageError,
)
from ._storage_feed import FeedQueries, _merged
from ._storage_reports import ReportQueries
from ._storage_rows import _SESSION_COLUMNS, _session
from ._storage_rows import Session as Session

# -- SQL --------------------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    "id, session_id, role, parts, model, created_at, updated_at, finished_at, provider, "
    "is_summary_message"
)

_CREATE_SESSION = f"""INSERT INTO sessions (
    id,
    parent_session_id,
    title,
    message_count,
    prompt_tokens,
    completion_tokens,
    cost,
    summary_message_id,
    updated_at,
    created_at
) VALUES (
    ?,
    ?,
    ?,
    ?,
    ?,
    ?,
    ?,
    null,
    strftime('%s', 'now'),
    strftime('%s', 'now')
) RETURNING {_SESSION_COLUMNS}"""
_GET_SESSION = f"SELECT {_SESSION_COLUMNS}\nFROM sessions\nWHERE id = ? LIMIT 1"
_LIST_SESSIONS = f"""SELECT {_SESSION_COLUMNS}
FROM sessions
WHERE parent_session_id is NULL
ORDER BY created_at DESC, rowid DESC"""
# crush's UpdateSession. crush's trigger sets updated_at after the statement, too late
# for RETURNING, so the statement sets it as well (to the same value).
_SAVE_SESSION = f"""UPDATE sessions
SET
    title = ?,
    prompt_tokens = ?,
    completion_tokens = ?,
    summary_message_id = ?,
    cost = ?,
    todos = ?,
    updated_at = strftime('%s', 'now')
WHERE id = ?
RETURNING {_SESSION_COLUMNS}"""
_DELETE_SESSION = "DELETE FROM sessions\nWHERE id = ?"
_ADD_SESSION_USAGE = f"""UPDATE sessions
SET
    prompt_tokens = prompt_tokens + ?,
    completion_tokens = completion_tokens + ?,
    cost = cost + ?,
    updated_at = strftime('%s', 'now')
WHERE id = ?
RETURNING {_SESSION_COLUMNS}"""

_CREATE_MESSAGE = f"""INSERT INTO messages (
    id,
    session_id,
    role,
    parts,
    model,
    provider,
    is_summary_message,
    created_at,
    updated_at
) VALUES (
    ?, ?, ?, ?, ?, ?, ?, strftime('%s', 'now'), strftime('%s', 'now')
)
RETURNING {_MESSAGE_COLUMNS}"""
_UPDATE_MESSAGE = """UPDATE messages
SET
    parts = ?,
    finished_at = ?,
    updated_at = strftime('%s', 'now')
WHERE id = ?"""
_GET_MESSAGE = f"SELECT {_MESSAGE_COLUMNS}\nFROM messages\nWHERE id = ? LIMIT 1"
_LIST_MESSAGES = f"""SELECT {_MESSAGE_COLUMNS}
FROM messages
WHERE session_id = ?
ORDER BY created_at ASC, rowid ASC"""
_LIST_USER_MESSAGES = f"""SELECT {_MESSAGE_COLUMNS}
FROM messages
WHERE session_id = ? AND role = 'user'
ORDER BY created_at DESC, rowid DESC"""
_LIST_ALL_USER_MESSAGES = f"""SELECT {_MESSAGE_COLUMNS}
FROM messages
WHERE role = 'user'
ORDER BY created_at DESC, rowid DESC"""
_LAST_ASSISTANT_MESSAGE = f"""SELECT {_MESSAGE_COLUMNS}
FROM messages
WHERE session_id = ? AND role = 'assistant' AND is_summary_message = 0
ORDER BY created_at DESC, rowid DESC
LIMIT 1"""
_MESSAGE_HEADER = """SELECT id, session_id, role, model, created_at, updated_at, finished_at,
    provider, is_summary_message
FROM messages
WHERE id = ? LIMIT 1"""
_MESSAGE_IDS = """SELECT id
FROM messages
WHERE session_id = ?
ORDER BY created_at ASC, rowid ASC"""
_DELETE_MESSAGE = "DELETE FROM messages\nWHERE id = ?"
# RETURNING's row order is unspecified; created_at and rowid let us sort the ids.
_DELETE_SESSION_MESSAGES = (
    "DELETE FROM messages\nWHERE session_id = ?\nRETURNING id, created_at, rowid"
)

# The column types the schema guarantees (checked again by Message's validators).
_MessageRow: TypeAlias = tuple[
    str, str, str, str, str | None, int, int, int | None, str | None, int
]

# -- rows -------------------------------------------------------------------------------


def _message(row: apsw.SQLiteValues) -> Message:
    """A ``Message`` from a row; ``CorruptRecord`` (naming the id) when it cannot be one."""
    (id, session_id, role, parts, model, created_at, updated_at, _, provider, summary) = cast(
        _MessageRow, row
    )
    if not isinstance(parts, str):
        raise CorruptRecord(f"parts is {type(parts).__name__}, not text", message_id=id)
    try:
        return Message(
            id=id,
            session_id=session_id,
            role=role,  # the converter checks it
            parts=decode_parts(parts, message_id=id),
            model=model or "",
            provider=provider or "",
            created_at=created_at,
            updated_at=updated_at,
            is_summary_message=bool(summary),
        )
    except InvalidPart as e:  # an unknown role, a column of the wrong type
        raise CorruptRecord(str(e), message_id=id) from e


def _check_usage(
    label: str, prompt_tokens: object, completion_tokens: object, cost: object
) -> None:
    """Token counts are ints >= 0 and cost a finite number >= 0 (the table's CHECKs,
    and Go reads them as int64 and float64)."""
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
        if type(value) is not int or value < 0:
            raise InvalidPart(f"{label} {name} must be an int >= 0, got {value!r}")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < float("inf"):
        raise InvalidPart(f"{label} cost must be a finite number >= 0, got {cost!r}")


def _finished_at(parts: Sequence[Part]) -> int | None:
    # The first finish part, as Message.finish_part() and crush's FinishPart() pick it.
    for part in parts:
        if isinstance(part, Finish):
            return part.time
    return None


# -- opening ----------------------------------------------------------------------------

# Per-connection settings (SPEC §2) that read-only connections also get: none writes.
_READ_PRAGMAS = (("foreign_keys", "ON"), ("temp_store", "MEMORY"), ("cache_size", -8000))
# page_size comes first: it only takes effect before the file's first page is written.
_WRITE_PRAGMAS = (
    ("page_size", 4096),
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
    *_READ_PRAGMAS,
    ("secure_delete", "ON"),
)


def connect(
    path: str | os.PathLike[str],
    *,
    read_only: bool = False,
    busy_timeout_ms: int = 30000,
    vfs: str | None = None,
) -> Database:
    """Open (creating and migrating unless ``read_only``) a crush-compatible database.

    A file that is not a usable database raises ``DatabaseError`` and is left exactly
    as it was. ``read_only`` opens an existing file without changing a byte of it.
    ``vfs`` names a registered SQLite VFS to open it through (tests use one that
    injects I/O faults); the default is SQLite's own.
    """
    path = os.fspath(path)
    if not path:
        raise DatabaseError("empty database path")
    flags = (
        apsw.SQLITE_OPEN_READONLY
        if read_only
        else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    )
    try:
        con = apsw.Connection(path, flags=flags, vfs=vfs)
    except apsw.Error as e:
        raise DatabaseError(f"cannot open database {path!r}: {e}") from e
    try:
        con.set_busy_timeout(busy_timeout_ms)
        _prepare(con, path, read_only=read_only)
    except (apsw.BusyError, apsw.LockedError) as e:
        con.close()
        raise DatabaseBusy(f"database {path!r} is locked by another connection") from e
    except apsw.Error as e:
        con.close()
        raise DatabaseError(f"cannot use {path!r} as a database: {e}") from e
    except BaseException:
        con.close()
        raise
    return Database(con, path, read_only=read_only, busy_timeout_ms=busy_timeout_ms)


def _prepare(con: apsw.Connection, path: str, *, read_only: bool) -> None:
    # The first statement must be a read: apsw opens a file that is not a database
    # without complaint and SQLite only notices on the first query, so every pragma
    # or migration that could write the file waits until this has passed.
    _schema.check_recognised(con, path)
    _check_whole_pages(con, path)
    if read_only:
        for name, value in _READ_PRAGMAS:
            con.pragma(name, value)
        missing = _schema.missing_versions(con)
        if missing:
            tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").get
            if not tables:
                raise DatabaseError(
                    f"{path!r} is an empty database: it holds no sessions or messages"
                )
            raise DatabaseError(
                f"{path!r} lacks schema versions {missing} (an older crush or msgstore "
                "made it); msgstore.connect(path) or `msgstore import` migrate it, "
                "read-only commands never change a file"
            )
    else:
        for name, value in _WRITE_PRAGMAS:
            con.pragma(name, value)
        _schema.migrate(con, path)
    _schema.warn_if_newer(con, path)


def _check_whole_pages(con: apsw.Connection, path: str) -> None:
    # SQLite writes whole pages, so a file that ends inside one was cut short. SQLite
    # itself reads the missing bytes as zeros and may answer with silently wrong data
    # (a truncation at a page boundary it does notice, as "malformed").
    if not os.path.isfile(path):
        return
    size = os.path.getsize(path)
    page_size = con.pragma("page_size")
    if isinstance(page_size, int) and page_size > 0 and size % page_size:
        raise DatabaseError(
            f"{path!r} is truncated: {size} bytes is not a whole number of "
            f"{page_size}-byte pages; refusing to use it"
        )


# -- the database -----------------------------------------------------------------------


class Database(FeedQueries, ReportQueries):
    """One connection to a crush-compatible database, with crush's queries.

    A context manager; ``close()`` may be called more than once. Not for use from
    several threads at once (apsw would serialise the calls, but ``changes()`` after
    a write must belong to that write).
    """

    def __init__(
        self,
        connection: apsw.Connection,
        path: str,
        *,
        read_only: bool,
        busy_timeout_ms: int = 30000,
    ) -> None:
        self.connection = connection
        self.path = path
        self.read_only = read_only
        self._closed = False
        self._busy_timeout_ms = busy_timeout_ms
        self._busy_handler_off = 0  # services holding SQLite's busy handler off
        self._init_feed()
        # A service's lease (``_lease.py``): each message this connection writes is
        # claimed for it, in the transaction of its first write here.
        self._claim_sql: str | None = None
        self._claimed: set[str] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"<Database {self.path!r} {state}>"

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when it is the last one)."""
        if not self._closed:
            self._closed = True
            self.connection.close()

    def set_busy_timeout(self, ms: int) -> None:
        """How long SQLite itself waits for a lock before raising ``DatabaseBusy``."""
        self._busy_timeout_ms = ms
        if not self._busy_handler_off:
            self.connection.set_busy_timeout(ms)

    @contextlib.contextmanager
    def without_busy_handler(self) -> Iterator[None]:
        """Turn SQLite's own busy handler off for the block (nesting is counted).

        SQLite's handler sleeps on the calling thread, which for a Trio program is the
        whole event loop; the services turn it off and wait on Trio time instead
        (``msgstore._busy``). Several services on one connection each hold it off; it
        comes back when the last one ends.
        """
        if self._closed:
            raise StorageError(f"the database {self.path!r} is closed")
        if not self._busy_handler_off:
            self.connection.set_busy_timeout(0)
        self._busy_handler_off += 1
        try:
            yield
        finally:
            self._busy_handler_off -= 1
            if not self._busy_handler_off and not self._closed:
                self.connection.set_busy_timeout(self._busy_timeout_ms)

    # -- claims -----------------------------------------------------------------------------

    def start_claims(self, claim_sql: str, owner: str) -> None:
        """From now on, claim each message for ``owner`` when it is first written, and
        journal as ``owner``. Journal rows of an earlier owner on this connection are
        that owner's (``fold_journals`` folds them as a stopped service's)."""
        self._claim_sql = claim_sql
        self.owner = owner
        self._claimed = set()
        self._unfolded.clear()

    def stop_claims(self) -> None:
        self._claim_sql = None
        self._claimed = set()

    def _needs_claim(self, id: str) -> bool:
        return self._claim_sql is not None and id not in self._claimed

    def _claim(self, id: str) -> None:
        """Claim ``id`` (inside the caller's transaction; ``_needs_claim`` said so)."""
        assert self._claim_sql is not None
        self.connection.execute(self._claim_sql, (id, self.owner))

    # -- plumbing -------------------------------------------------------------------------

    def storage_error(self, e: apsw.Error, doing: str) -> StorageError:
        """The typed error for SQLite's ``e`` while ``doing``: ``DatabaseBusy`` for a
        lock (retryable), else ``StorageError``; for the storage modules that run their
        own SQL on this connection (the journal, leases, repair)."""
        if isinstance(e, apsw.BusyError | apsw.LockedError):
            if self._busy_handler_off:
                return DatabaseBusy(
                    f"{doing}: {self.path!r} is locked by another connection; a message "
                    "service runs on this connection with SQLite's busy handler off (it "
                    "would freeze the event loop): use the service's async methods, such "
                    "as svc.sessions, which wait on Trio time"
                )
            return DatabaseBusy(f"{doing}: {self.path!r} is locked by another connection")
        if isinstance(e, apsw.ReadOnlyError) and self.read_only:
            return StorageError(f"{doing}: {self.path!r} is open read-only")
        if isinstance(e, apsw.ConnectionClosedError):
            return StorageError(f"{doing}: the database {self.path!r} is closed")
        return StorageError(f"{doing} on {self.path!r} failed: {e}")

    def _read_messages(self, sql: str, params: tuple[object, ...], doing: str) -> list[Message]:
        """Rows of ``_MESSAGE_COLUMNS`` and their journal, read in one snapshot (a
        fold committed by another connection in between would leave a mix)."""
        con = self.connection
        found: list[Message] = []
        try:
            with con:
                found = self._messages(con.execute(sql, params).fetchall())
        except apsw.Error as e:
            raise self.storage_error(e, doing) from e
        return found

    def _messages(self, rows: list[apsw.SQLiteValues]) -> list[Message]:
        """Messages from rows of ``_MESSAGE_COLUMNS``, each with its live journal applied
        (the newest state written, while a service streams it)."""
        messages = [_message(row) for row in rows]
        journals = self._journal_by_message(m.id for m in messages) if messages else {}
        for i, message in enumerate(messages):
            entries = journals.get(message.id)
            if entries:
                parts = _merged(message.id, cast(str, rows[i][3]), message.parts, entries)
                if parts is not message.parts:
                    messages[i] = message.with_parts(parts)
        return messages

    def _rows(self, sql: str, params: tuple[object, ...], doing: str) -> list[apsw.SQLiteValues]:
        # fetchall, never fetchone: a statement left half-stepped keeps its transaction
        # (and, for INSERT ... RETURNING, the write lock) open.
        try:
            return self.connection.execute(sql, params).fetchall()
        except apsw.Error as e:
            raise self.storage_error(e, doing) from e

    def _change(self, sql: str, params: tuple[str, ...], doing: str) -> int:
        """Run one write and return how many rows it changed (triggers not counted)."""
        con = self.connection
        try:
            con.execute(sql, params)
        except apsw.Error as e:
            raise self.storage_error(e, doing) from e
        return con.changes()

    # -- sessions -------------------------------------------------------------------------

    def create_session(
        self, title: str, *, id: str | None = None, parent_session_id: str | None = None
    ) -> Session:
        """Insert a session (crush's ``CreateSession``); ``id`` defaults to a new UUID4."""
        sid = str(uuid.uuid4()) if id is None else id
        check_text(title, "session title")
        check_text(sid, "session id")
        if parent_session_id is not None:
            check_text(parent_session_id, "parent_session_id")
        try:
            rows = self.connection.execute(
                _CREATE_SESSION, (sid, parent_session_id, title, 0, 0, 0, 0.0)
            ).fetchall()
        except apsw.Error as e:
            raise self.storage_error(e, f"create session {sid!r}") from e
        return _session(rows[0])

    def get_session(self, id: str) -> Session:
        rows = self._rows(_GET_SESSION, (id,), f"get session {id!r}")
        if not rows:
            raise SessionNotFound(f"no session {id!r}")
        return _session(rows[0])

    def list_sessions(self) -> list[Session]:
        """Top-level sessions (no parent), newest first."""
        return [_session(r) for r in self._rows(_LIST_SESSIONS, (), "list sessions")]

    def save_session(self, session: Session) -> Session:
        """Store a session's title, tokens, cost, summary message and todos (crush's
        ``UpdateSession``) and return the row as stored."""
        _check_usage("session", session.prompt_tokens, session.completion_tokens, session.cost)
        check_text(session.title, "session title")
        for name in ("summary_message_id", "todos"):
            value = getattr(session, name)
            if value is not None:
                check_text(value, f"session {name}")
        params = (
            session.title,
            session.prompt_tokens,
            session.completion_tokens,
            session.summary_message_id,
            float(session.cost),
            session.todos,
            session.id,
        )
        rows = self._rows(_SAVE_SESSION, params, f"save session {session.id!r}")
        if not rows:
            raise SessionNotFound(f"no session {session.id!r}")
        return _session(rows[0])

    def add_session_usage(
        self, id: str, *, prompt_tokens: int = 0, completion_tokens: int = 0, cost: float = 0.0
    ) -> Session:
        """Add a turn's tokens and cost to what the session's row holds, in one statement."""
        _check_usage("usage to add:", prompt_tokens, completion_tokens, cost)
        rows = self._rows(
            _ADD_SESSION_USAGE,
            (prompt_tokens, completion_tokens, float(cost), id),
            f"add usage to session {id!r}",
        )
        if not rows:
            raise SessionNotFound(f"no session {id!r}")
        return _session(rows[0])

    def delete_session(self, id: str) -> None:
        """Delete a session; its messages (and files) go with it (ON DELETE CASCADE)."""
        if not self._change(_DELETE_SESSION, (id,), f"delete session {id!r}"):
            raise SessionNotFound(f"no session {id!r}")

    # -- messages: writes -----------------------------------------------------------------

    def insert_message(
        self,
        *,
        session_id: str,
        role: Role | str,
        parts: Sequence[Part] = (),
        model: str = "",
        provider: str = "",
        is_summary_message: bool = False,
        id: str | None = None,
    ) -> Message:
        """Insert a message row as crush's ``CreateMessage`` does and return it.

        Stores ``parts`` as given: adding the ``stop`` finish part to non-assistant
        messages is the service's job.
        """
        mid = str(uuid.uuid4()) if id is None else id
        try:
            role = Role(role)
        except ValueError:
            raise InvalidPart(
                f"role must be one of {[r.value for r in Role]}, got {role!r}"
            ) from None
        # SQLite would store any of these (a BLOB model, a str flag...) and the row would
        # then fail to read back, breaking every list of its session.
        for name, value in (("id", mid), ("session_id", session_id), ("model", model)):
            if not isinstance(value, str):
                raise InvalidPart(f"{name} must be str, got {type(value).__name__} {value!r:.60}")
        if not isinstance(provider, str):
            raise InvalidPart(
                f"provider must be str, got {type(provider).__name__} {provider!r:.60}"
            )
        if not isinstance(is_summary_message, bool):
            raise InvalidPart(
                f"is_summary_message must be bool, got {type(is_summary_message).__name__}"
            )
        parts_json = encode_parts(parts)
        params = (
            mid,
            session_id,
            role.value,
            parts_json,
            model,
            provider or None,
            int(is_summary_message),
        )
        con = self.connection
        try:
            if self._needs_claim(mid):
                with con:  # one transaction: the row and its claim
                    self._claim(mid)
                    rows = con.execute(_CREATE_MESSAGE, params).fetchall()
                if con.getautocommit():  # committed, not inside a caller's transaction
                    self._claimed.add(mid)
            else:
                rows = con.execute(_CREATE_MESSAGE, params).fetchall()
        except apsw.ConstraintError as e:
            # extendedresult is missing from apsw's type stubs.
            if e.extendedresult == apsw.SQLITE_CONSTRAINT_FOREIGNKEY:  # type: ignore[attr-defined]
                raise SessionNotFound(f"no session {session_id!r}") from e
            raise self.storage_error(e, f"insert message {mid!r}") from e
        except apsw.Error as e:
            raise self.storage_error(e, f"insert message {mid!r}") from e
        return _message(rows[0])

    def write_parts(self, id: str, parts_json: str, finished_at: int | None) -> bool:
        """Store a message's encoded parts; False when no row has that id.

        The service's hot path, called on every debounced write: one constant,
        parameterised statement (apsw keeps it prepared), nothing else.
        """
        con = self.connection
        try:
            con.execute(_UPDATE_MESSAGE, (parts_json, finished_at, id))
        except apsw.Error as e:
            raise self.storage_error(e, f"write message {id!r}") from e
        return con.changes() != 0

    def update_message(self, id: str, parts: Sequence[Part]) -> int:
        """Store ``parts``, with ``finished_at`` from the finish part (NULL when none).

        This is a *fold* when the message has journal rows from this connection: the
        row then holds everything, and the journal rows it makes dead are deleted in
        the same transaction. Returns the row's base (``_journal.base_of``), which the
        next journal row of the message names.
        """
        parts_json = encode_parts(parts)
        first = self._unfolded.get(id)
        claim = self._needs_claim(id)
        if first is None and not claim:
            self._write_row(id, parts_json, parts)
        else:
            try:
                with self.connection:  # one transaction: the row, its claim, the pruning
                    if claim:
                        self._claim(id)
                    self._write_row(id, parts_json, parts)
                    if first is not None:
                        self._folded(id)
            except MessageNotFound:
                self._unfolded.pop(id, None)  # gone: its journal rows never apply again
                raise
            except BaseException as e:
                if first is not None:
                    self._unfolded[id] = first  # not folded after all: its rows count
                if isinstance(e, apsw.Error):
                    raise self.storage_error(e, f"write message {id!r}") from e
                raise
            if claim and self.connection.getautocommit():
                self._claimed.add(id)
        return _journal.base_of(parts_json)

    def _write_row(self, id: str, parts_json: str, parts: Sequence[Part]) -> None:
        if not self.write_parts(id, parts_json, _finished_at(parts)):
            raise MessageNotFound(f"no message {id!r}")

    def delete_message(self, id: str) -> None:
        if not self._change(_DELETE_MESSAGE, (id,), f"delete message {id!r}"):
            raise MessageNotFound(f"no message {id!r}")
        self._forget_journal(id)

    def delete_session_messages(self, session_id: str) -> list[str]:
        """Delete every message of a session; return their ids, oldest first."""
        rows = self._rows(
            _DELETE_SESSION_MESSAGES, (session_id,), f"delete messages of session {session_id!r}"
        )
        rows.sort(key=lambda r: (cast(int, r[1]), cast(int, r[2])))
        return [cast(str, r[0]) for r in rows]

    # -- messages: reads ------------------------------------------------------------------
    # These read the file. While a message service runs on this database, a streaming
    # message's newest state may still be buffered in its actor (the file lags by up to
    # one window): read through the service (``svc.get``, ``svc.list``...) to see it.
    # Hence the names: what is *stored*, not what the service last accepted.

    def stored_message(self, id: str, *, own_journal_only: bool = False) -> Message:
        """The message as written. ``own_journal_only``: apply only this connection's
        own journal rows (what a service needs when it starts an actor: a lookup by
        message, where the merge of every writer's journal scans the table's tail)."""
        if own_journal_only:
            rows = self._rows(_GET_MESSAGE, (id,), f"get message {id!r}")
            if not rows:
                raise MessageNotFound(f"no message {id!r}")
            message = _message(rows[0])
            own = self._own_journal_of(id)
            if own:
                parts = _merged(id, cast(str, rows[0][3]), message.parts, own)
                if parts is not message.parts:
                    message = message.with_parts(parts)
            return message
        found = self._read_messages(_GET_MESSAGE, (id,), f"get message {id!r}")
        if not found:
            raise MessageNotFound(f"no message {id!r}")
        return found[0]

    def stored_messages(self, session_id: str) -> list[Message]:
        """A session's messages, oldest first."""
        return self._read_messages(
            _LIST_MESSAGES, (session_id,), f"list messages of {session_id!r}"
        )

    def stored_user_messages(self, session_id: str) -> list[Message]:
        """A session's user messages, newest first."""
        return self._read_messages(
            _LIST_USER_MESSAGES, (session_id,), f"list user messages of {session_id!r}"
        )

    def stored_all_user_messages(self) -> list[Message]:
        """Every session's user messages, newest first."""
        return self._read_messages(_LIST_ALL_USER_MESSAGES, (), "list all user messages")

    def stored_last_assistant_message(self, session_id: str) -> Message | None:
        """The session's newest assistant message that is not a summary, if any."""
        found = self._read_messages(
            _LAST_ASSISTANT_MESSAGE, (session_id,), f"last assistant message of {session_id!r}"
        )
        return found[0] if found else None

    def stored_message_header(self, id: str) -> Message:
        """The row's other columns, with no parts (nothing is decoded: a row whose parts
        cannot be read still has a header, and can still be deleted)."""
        rows = self._rows(_MESSAGE_HEADER, (id,), f"get message {id!r}")
        if not rows:
            raise MessageNotFound(f"no message {id!r}")
        return _message((*rows[0][:3], "[]", *rows[0][3:]))

    def message_ids(self, session_id: str) -> list[str]:
        """A session's message ids, oldest first, without decoding any parts."""
        rows = self._rows(_MESSAGE_IDS, (session_id,), f"list message ids of {session_id!r}")
        return [cast(str, r[0]) for r in rows]
