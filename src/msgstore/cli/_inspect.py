"""Read-only looks into a database file for the command line: every session, file statistics.

``Database`` lists top-level sessions the way crush does; the command line also shows
sub-agent sessions, as a tree, and counts rows and parts. Every query behind it is a
plain ``SELECT`` (or a pragma that only reads), so it runs on a read-only connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from msgstore import Database, DatabaseError, MsgstoreError, Session, SessionNotFound, connect

ENV_DB = "MSGSTORE_DB"
CRUSH_DB = os.path.join(".crush", "crush.db")


class NoDatabaseFound(MsgstoreError):
    """No ``--db``, no ``MSGSTORE_DB``, and no ``.crush/crush.db`` above the working directory."""


class AmbiguousSessionId(SessionNotFound):
    """A session id prefix that more than one session's id starts with."""


@attrs.frozen
class FoundDatabase:
    """The database a command uses, and (when it was not named with ``--db``) how it
    was found, for the one line that says so."""

    path: str
    how: str | None  # None: given with --db


def find_database(
    explicit: str | None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> FoundDatabase:
    """The database to use: ``--db`` when given, else ``$MSGSTORE_DB``, else crush's
    ``.crush/crush.db`` in the working directory or the nearest parent that has one
    (the way crush finds its project's data directory). Never creates anything."""
    if explicit is not None:
        return FoundDatabase(explicit, None)
    env = os.environ if environ is None else environ
    from_env = env.get(ENV_DB)
    if from_env:
        return FoundDatabase(from_env, f"from {ENV_DB}")
    start = Path(os.getcwd() if cwd is None else cwd).absolute()
    for directory in (start, *start.parents):
        candidate = directory / CRUSH_DB
        if candidate.is_file():
            return FoundDatabase(str(candidate), f"found from {start}")
    raise NoDatabaseFound(
        f"no database: no {CRUSH_DB} in {start} or any directory above it, and "
        f"{ENV_DB} is not set; pass --db PATH (or set {ENV_DB}=PATH)"
    )


def open_read_only(path: str | os.PathLike[str]) -> Database:
    """``connect(path, read_only=True)``, with a plain error for a path that is no file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatabaseError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DatabaseError(f"{path}: is a directory, not a database file")
    return connect(path, read_only=True)


def session_tree(db: Database) -> list[tuple[int, Session]]:
    """Every session with its depth: top-level ones newest first, each followed by its
    sub-sessions (oldest first, indented one level deeper)."""
    rows = db.all_sessions()
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


MAX_LISTED = 10


def require_sessions(db: Database, ids: list[str]) -> list[Session]:
    """The sessions named by ``ids`` (in that order), each a whole id or a unique
    prefix of one (like git); ``SessionNotFound`` for the first unknown one, naming
    the file, and ``AmbiguousSessionId`` listing the ids a prefix matches."""
    out = []
    every: list[Session] | None = None
    for sid in ids:
        try:
            out.append(db.get_session(sid))
            continue
        except SessionNotFound:
            pass
        if every is None:
            every = db.all_sessions()
        matches = [s for s in every if sid and s.id.startswith(sid)]
        if not matches:
            raise SessionNotFound(f"no session {sid!r} in {db.path}")
        if len(matches) > 1:
            listed = ", ".join(s.id for s in matches[:MAX_LISTED])
            more = len(matches) - MAX_LISTED
            if more > 0:
                listed += f" and {more} more"
            raise AmbiguousSessionId(
                f"session id prefix {sid!r} is ambiguous in {db.path}: "
                f"{len(matches)} sessions match: {listed}"
            )
        out.append(matches[0])
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
    schema_version = db.schema_version()
    page_size, page_count, freelist_count = db.page_counts()
    return FileStats(
        path=db.path,
        file_size=os.path.getsize(db.path),
        wal_size=wal_size,
        page_size=page_size,
        page_count=page_count,
        freelist_count=freelist_count,
        schema_version=schema_version,
        rows=db.row_counts(),
        roles=db.role_counts(),
        parts=db.part_type_counts(),
        unreadable_parts=db.unreadable_parts_count(),
        parts_bytes=db.parts_bytes(),
        unfinished_assistant=db.unfinished_assistant_count(),
    )
