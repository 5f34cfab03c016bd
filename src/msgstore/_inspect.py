"""Read-only looks into a database file for the command line: every session, file statistics.

``Database`` has crush's queries, which list top-level sessions only; the command line
also shows sub-agent sessions and counts rows and parts. Every query here is a plain
``SELECT`` (or a pragma that only reads), so it runs on a read-only connection.
"""

from __future__ import annotations

import os
from typing import cast

import attrs

from . import _schema
from ._errors import DatabaseError, SessionNotFound
from ._storage import _SESSION_COLUMNS, Database, Session, _session, connect

_ALL_SESSIONS = f"""SELECT {_SESSION_COLUMNS}
FROM sessions
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


def open_read_only(path: str | os.PathLike[str]) -> Database:
    """``connect(path, read_only=True)``, with a plain error for a path that is no file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatabaseError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DatabaseError(f"{path}: is a directory, not a database file")
    return connect(path, read_only=True)


def all_sessions(db: Database) -> list[tuple[int, Session]]:
    """Every session with its depth: top-level ones newest first, each followed by its
    sub-sessions (oldest first, indented one level deeper)."""
    rows = [_session(r) for r in db.connection.execute(_ALL_SESSIONS).fetchall()]
    ids = {s.id for s in rows}
    children: dict[str | None, list[Session]] = {}
    for s in rows:
        # A parent that is not in the file leaves the session at the top.
        parent = s.parent_session_id if s.parent_session_id in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, Session]] = []
    seen: set[str] = set()

    def walk(session: Session, depth: int) -> None:
        if session.id in seen:  # a parent cycle: show each session once
            return
        seen.add(session.id)
        out.append((depth, session))
        for child in children.get(session.id, []):
            walk(child, depth + 1)

    for top in reversed(children.get(None, [])):
        walk(top, 0)
    for s in rows:  # sessions only reachable through a cycle
        walk(s, 0)
    return out


def require_sessions(db: Database, ids: list[str]) -> list[Session]:
    """The sessions named by ``ids`` (in that order); ``SessionNotFound`` for the first
    unknown one, naming the file."""
    out = []
    for sid in ids:
        try:
            out.append(db.get_session(sid))
        except SessionNotFound:
            raise SessionNotFound(f"no session {sid!r} in {db.path}") from None
    return out


@attrs.frozen
class FileStats:
    """What ``msgstore stats`` reports about one database file."""

    path: str
    file_size: int
    wal_size: int | None  # None: no -wal file beside the database
    page_size: int
    page_count: int
    freelist_count: int
    schema_version: int
    rows: dict[str, int]
    roles: dict[str, int]
    parts: dict[str, int]
    unreadable_parts: int
    parts_bytes: int
    unfinished_assistant: int


def _one(db: Database, sql: str) -> int:
    return cast(int, db.connection.execute(sql).get)


def wal_size(path: str | os.PathLike[str]) -> int | None:
    """The size of the database's ``-wal`` file, None when there is none.

    Taken before opening: a read-only connection to a WAL file leaves an empty
    ``-wal`` (and a ``-shm``) behind when there was none.
    """
    wal = os.fspath(path) + "-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else None


def file_stats(db: Database, *, wal_size: int | None) -> FileStats:
    """Row counts, parts by type, and the sizes of the file and its WAL (measured by
    the caller before it opened the file)."""
    con = db.connection
    versions = _schema.applied_versions(con)
    return FileStats(
        path=db.path,
        file_size=os.path.getsize(db.path),
        wal_size=wal_size,
        page_size=cast(int, con.pragma("page_size")),
        page_count=cast(int, con.pragma("page_count")),
        freelist_count=cast(int, con.pragma("freelist_count")),
        schema_version=max(versions, default=0),
        rows={table: _one(db, sql) for table, sql in _COUNTS.items()},
        roles={cast(str, r): cast(int, n) for r, n in con.execute(_ROLES).fetchall()},
        parts={str(t): cast(int, n) for t, n in con.execute(_PARTS_BY_TYPE).fetchall()},
        unreadable_parts=_one(db, _UNREADABLE_PARTS),
        parts_bytes=_one(db, _PARTS_BYTES),
        unfinished_assistant=_one(db, _UNFINISHED),
    )
