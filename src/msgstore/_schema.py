"""crush's schema and its migrations, so that crush and msgstore can open each other's files.

The DDL is crush's ``internal/db/migrations/*.sql`` (as reproduced by the Go reference),
character for character: SQLite stores the text of each ``CREATE`` in ``sqlite_master``,
and a file made here should be indistinguishable from one crush made. Applied versions
are recorded the way crush's migration tool (goose) records them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import apsw
import attrs

from ._errors import DatabaseError

logger = logging.getLogger("msgstore")


@attrs.frozen
class Migration:
    """One schema step, named by the numeric prefix of crush's migration file."""

    version: int
    name: str
    # One statement per entry: apsw's execute stops at the first statement that
    # returns rows, and one-per-call keeps a failing statement easy to name.
    statements: tuple[str, ...]


_INITIAL = (
    """CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    parent_session_id TEXT,
    title TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    prompt_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens>= 0),
    cost REAL NOT NULL DEFAULT 0.0 CHECK (cost >= 0.0),
    updated_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    created_at INTEGER NOT NULL   -- Unix timestamp in milliseconds
)""",
    """CREATE TRIGGER IF NOT EXISTS update_sessions_updated_at
AFTER UPDATE ON sessions
BEGIN
UPDATE sessions SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END""",
    """CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    path TEXT NOT NULL,
    content TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    updated_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    UNIQUE(path, session_id, version)
)""",
    "CREATE INDEX IF NOT EXISTS idx_files_session_id ON files (session_id)",
    "CREATE INDEX IF NOT EXISTS idx_files_path ON files (path)",
    """CREATE TRIGGER IF NOT EXISTS update_files_updated_at
AFTER UPDATE ON files
BEGIN
UPDATE files SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END""",
    """CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    parts TEXT NOT NULL default '[]',
    model TEXT,
    created_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    updated_at INTEGER NOT NULL,  -- Unix timestamp in milliseconds
    finished_at INTEGER,  -- Unix timestamp in milliseconds
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
)""",
    "CREATE INDEX IF NOT EXISTS idx_messages_session_id ON messages (session_id)",
    """CREATE TRIGGER IF NOT EXISTS update_messages_updated_at
AFTER UPDATE ON messages
BEGIN
UPDATE messages SET updated_at = strftime('%s', 'now')
WHERE id = new.id;
END""",
    """CREATE TRIGGER IF NOT EXISTS update_session_message_count_on_insert
AFTER INSERT ON messages
BEGIN
UPDATE sessions SET
    message_count = message_count + 1
WHERE id = new.session_id;
END""",
    """CREATE TRIGGER IF NOT EXISTS update_session_message_count_on_delete
AFTER DELETE ON messages
BEGIN
UPDATE sessions SET
    message_count = message_count - 1
WHERE id = old.session_id;
END""",
)

_READ_FILES = (
    """CREATE TABLE IF NOT EXISTS read_files (
    session_id TEXT NOT NULL CHECK (session_id != ''),
    path TEXT NOT NULL CHECK (path != ''),
    read_at INTEGER NOT NULL,  -- Unix timestamp in seconds when file was last read
    FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (path, session_id)
)""",
    "CREATE INDEX IF NOT EXISTS idx_read_files_session_id ON read_files (session_id)",
    "CREATE INDEX IF NOT EXISTS idx_read_files_path ON read_files (path)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(20250424200609, "initial", _INITIAL),
    Migration(
        20250515105448,
        "add_summary_message_id",
        ("ALTER TABLE sessions ADD COLUMN summary_message_id TEXT",),
    ),
    Migration(
        20250624000000,
        "add_created_at_indexes",
        (
            "CREATE INDEX IF NOT EXISTS idx_sessions_created_at ON sessions (created_at)",
            "CREATE INDEX IF NOT EXISTS idx_messages_created_at ON messages (created_at)",
            "CREATE INDEX IF NOT EXISTS idx_files_created_at ON files (created_at)",
        ),
    ),
    Migration(
        20250627000000,
        "add_provider_to_messages",
        ("ALTER TABLE messages ADD COLUMN provider TEXT",),
    ),
    Migration(
        20250810000000,
        "add_is_summary_message",
        ("ALTER TABLE messages ADD COLUMN is_summary_message INTEGER DEFAULT 0 NOT NULL",),
    ),
    Migration(
        20250812000000,
        "add_todos_to_sessions",
        ("ALTER TABLE sessions ADD COLUMN todos TEXT",),
    ),
    Migration(20260127000000, "add_read_files_table", _READ_FILES),
)
KNOWN_VERSIONS = frozenset(m.version for m in MIGRATIONS)
LATEST_VERSION = MIGRATIONS[-1].version

# goose's own bookkeeping table, character for character as goose's sqlite3 dialect
# writes it (tab-indented: a Go raw string in tab-indented source). SQLite stores the
# text verbatim minus "IF NOT EXISTS", so `sqlite_master.sql` equals crush's exactly.
# (The Go reference that wrote tests/data/crush-fixture.db indents with four spaces.)
GOOSE_VERSION_TABLE_SQL = (
    "CREATE TABLE goose_db_version (\n"
    "\t\tid INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "\t\tversion_id INTEGER NOT NULL,\n"
    "\t\tis_applied INTEGER NOT NULL,\n"
    "\t\ttstamp TIMESTAMP DEFAULT (datetime('now'))\n"
    "\t)"
)
CREATE_VERSION_TABLE = GOOSE_VERSION_TABLE_SQL.replace(
    "CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1
)
_HAS_VERSION_TABLE = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'goose_db_version'"
)
_APPLIED = "SELECT version_id FROM goose_db_version WHERE is_applied = 1"
_RECORD = "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)"


def has_version_table(con: apsw.Connection) -> bool:
    """Whether the file has goose's table (every crush or msgstore file has)."""
    return bool(con.execute(_HAS_VERSION_TABLE).get)


def applied_versions(con: apsw.Connection) -> set[int]:
    """The versions goose records as applied (empty when the table does not exist)."""
    if not has_version_table(con):
        return set()
    return {int(v) for (v,) in con.execute(_APPLIED)}


def check_recognised(con: apsw.Connection, path: str) -> None:
    """Refuse an SQLite file that already holds something other than crush's schema.

    Migrating it would add crush's tables to (or ``ALTER`` a same-named table of)
    another program's database; every crush or msgstore file has goose's table.
    """
    if con.execute("SELECT count(*) FROM sqlite_master").get and not has_version_table(con):
        raise DatabaseError(
            f"{path} is an SQLite database but not a crush/msgstore one "
            "(no goose_db_version table); refusing to change it"
        )


def migrate(con: apsw.Connection, path: str) -> list[int]:
    """Bring the schema up to date as crush's ``migrate`` does; return the versions applied.

    Each migration runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the
    applied versions once it holds the write lock, so two processes opening the same
    new file at once cannot both apply a step (an ``ALTER TABLE`` twice would fail).
    """
    with immediate(con):
        con.execute(CREATE_VERSION_TABLE)
        if not con.execute("SELECT count(*) FROM goose_db_version").get:
            con.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1)")
    applied: list[int] = []
    for migration in MIGRATIONS:
        with immediate(con):
            if migration.version in applied_versions(con):
                continue
            for statement in migration.statements:
                try:
                    con.execute(statement)
                except (apsw.BusyError, apsw.LockedError):
                    raise
                except apsw.Error as e:
                    raise DatabaseError(
                        f"{path}: migration {migration.version}_{migration.name} failed: {e}"
                    ) from e
            con.execute(_RECORD, (migration.version,))
        applied.append(migration.version)
    return applied


def missing_versions(con: apsw.Connection) -> list[int]:
    """Known versions this file lacks (a read-only open cannot apply them)."""
    return sorted(KNOWN_VERSIONS - applied_versions(con))


def warn_if_newer(con: apsw.Connection, path: str) -> None:
    """Log a warning when a newer crush (or msgstore) has migrated this file further."""
    newer = sorted(v for v in applied_versions(con) if v > LATEST_VERSION)
    if newer:
        logger.warning(
            "%s has schema versions newer than msgstore knows (%s > %d); opening it "
            "anyway: messages are read and written through the columns msgstore knows",
            path,
            ", ".join(map(str, newer)),
            LATEST_VERSION,
        )


@contextlib.contextmanager
def immediate(con: apsw.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """A transaction for the block: committed when it ends, rolled back when it (or the
    COMMIT) raises. The migrations here, the change log's own writes
    (``_storage_feed``) and repair use it; repair's first look is a plain ``BEGIN``."""
    # Immediate, not apsw's default deferred `with con:`: a deferred transaction that
    # reads first and writes later cannot wait out a busy lock in WAL mode.
    con.execute(begin)
    try:
        yield
    except BaseException:
        # The original error matters more than a failed rollback (closing the
        # connection rolls back anyway).
        with contextlib.suppress(apsw.Error):
            con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a lock) leaves the transaction open: end it.
        with contextlib.suppress(apsw.Error):
            con.execute("ROLLBACK")
        raise
