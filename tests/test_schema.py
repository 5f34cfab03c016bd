"""Opening files: crush's schema and migrations, pragmas, and files that must not be touched."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import apsw
import pytest

import msgstore
from msgstore import DatabaseBusy, DatabaseError, StorageError, connect
from msgstore._schema import (
    CREATE_VERSION_TABLE,
    GOOSE_VERSION_TABLE_SQL,
    KNOWN_VERSIONS,
    LATEST_VERSION,
    MIGRATIONS,
)

CRUSH_VERSIONS = [
    0,
    20250424200609,
    20250515105448,
    20250624000000,
    20250627000000,
    20250810000000,
    20250812000000,
    20260127000000,
]
MASTER = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
GOOSE = "SELECT id, version_id, is_applied, tstamp FROM goose_db_version ORDER BY id"


def raw(path: Path, *, read_only: bool = True) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if read_only else apsw.SQLITE_OPEN_READWRITE
    return apsw.Connection(str(path), flags=flags)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = raw(path)
    try:
        return [tuple(r) for r in con.execute(sql)]
    finally:
        con.close()


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# -- a fresh file -------------------------------------------------------------------------


def test_fresh_file_records_crush_versions_in_eight_goose_rows(db_path: Path) -> None:
    connect(db_path).close()
    got = rows(db_path, "SELECT id, version_id, is_applied FROM goose_db_version ORDER BY id")
    assert got == [(i + 1, v, 1) for i, v in enumerate(CRUSH_VERSIONS)]
    assert [m.version for m in MIGRATIONS] == CRUSH_VERSIONS[1:]
    assert max(KNOWN_VERSIONS) == LATEST_VERSION == CRUSH_VERSIONS[-1]


# What crush's migration tool (goose, sqlite3 dialect) stores for its own table, as
# `sqlite_master.sql` of a file the real crush binary made: tab-indented.
CRUSH_GOOSE_TABLE_SQL = (
    "CREATE TABLE goose_db_version (\n\t\tid INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "\t\tversion_id INTEGER NOT NULL,\n\t\tis_applied INTEGER NOT NULL,\n"
    "\t\ttstamp TIMESTAMP DEFAULT (datetime('now'))\n\t)"
)
# tests/data/crush-fixture.db was written by the Go reference, which reproduces crush's
# DDL without the goose library: its goose_db_version text is indented with four spaces
# instead. Every other entry is crush's own text.
FIXTURE_GOOSE_TABLE_SQL = (
    "CREATE TABLE goose_db_version (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "    version_id INTEGER NOT NULL,\n    is_applied INTEGER NOT NULL,\n"
    "    tstamp TIMESTAMP DEFAULT (datetime('now'))\n)"
)


def test_fresh_file_has_crushs_tables_indexes_and_triggers_verbatim(
    db_path: Path, crush_fixture: Path
) -> None:
    connect(db_path).close()
    # The SQL text too: SQLite stores each CREATE as written (with ALTER's additions),
    # so equal text means the DDL was reproduced character for character.
    ours = {(t, name, tbl): sql for t, name, tbl, sql in rows(db_path, MASTER)}
    fixture = {(t, name, tbl): sql for t, name, tbl, sql in rows(crush_fixture, MASTER)}
    assert len(fixture) == 24 and ours.keys() == fixture.keys()
    goose = ("table", "goose_db_version", "goose_db_version")
    assert fixture[goose] == FIXTURE_GOOSE_TABLE_SQL  # the fixture's one known difference
    fixture[goose] = CRUSH_GOOSE_TABLE_SQL  # ... corrected to what crush writes
    for key, sql in fixture.items():
        assert ours[key] == sql, key


def test_fresh_files_goose_table_is_crushs_text_exactly(db_path: Path) -> None:
    connect(db_path).close()
    got = rows(db_path, "SELECT sql FROM sqlite_master WHERE name = 'goose_db_version'")
    assert got == [(CRUSH_GOOSE_TABLE_SQL,)]
    assert GOOSE_VERSION_TABLE_SQL == CRUSH_GOOSE_TABLE_SQL


@pytest.mark.parametrize(
    "table", ["sessions", "files", "messages", "read_files", "goose_db_version"]
)
def test_fresh_file_has_crushs_columns(db_path: Path, crush_fixture: Path, table: str) -> None:
    connect(db_path).close()
    info = f"PRAGMA table_info({table})"
    assert rows(db_path, info) == rows(crush_fixture, info)


def test_fresh_file_gets_the_spec_pragmas(db_path: Path) -> None:
    with connect(db_path) as db:
        con = db.connection
        assert con.pragma("journal_mode") == "wal"
        assert con.pragma("synchronous") == 1  # NORMAL
        assert con.pragma("foreign_keys") == 1
        assert con.pragma("busy_timeout") == 30000
        assert con.pragma("page_size") == 4096
        assert con.pragma("cache_size") == -8000
        assert con.pragma("temp_store") == 2  # MEMORY
        assert con.pragma("secure_delete") == 1


def test_busy_timeout_comes_from_the_parameter_and_can_change(db_path: Path) -> None:
    with connect(db_path, busy_timeout_ms=0) as db:
        assert db.connection.pragma("busy_timeout") == 0
        db.set_busy_timeout(1234)
        assert db.connection.pragma("busy_timeout") == 1234


def test_opening_twice_applies_nothing_more(db_path: Path) -> None:
    connect(db_path).close()
    before = rows(db_path, GOOSE), rows(db_path, MASTER)
    connect(db_path).close()
    assert (rows(db_path, GOOSE), rows(db_path, MASTER)) == before


def test_database_closes_once_and_as_context_manager(db_path: Path) -> None:
    with connect(db_path) as db:
        assert not db.closed
    assert db.closed
    db.close()
    with pytest.raises(StorageError, match="closed"):
        db.list_sessions()


# -- crush's files ------------------------------------------------------------------------


def test_opening_crush_fixture_applies_nothing_and_keeps_its_rows(crush_fixture: Path) -> None:
    goose, master = rows(crush_fixture, GOOSE), rows(crush_fixture, MASTER)
    connect(crush_fixture).close()
    assert rows(crush_fixture, GOOSE) == goose
    assert rows(crush_fixture, MASTER) == master


def _old_crush_file(path: Path, migrations: int) -> None:
    """A file as an older crush left it: only the first ``migrations`` steps applied."""
    con = apsw.Connection(str(path))
    con.execute(CREATE_VERSION_TABLE)
    con.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1)")
    for migration in MIGRATIONS[:migrations]:
        for statement in migration.statements:
            con.execute(statement)
        con.execute(
            "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)",
            (migration.version,),
        )
    if migrations:
        con.execute(
            "INSERT INTO sessions (id, title, updated_at, created_at) VALUES ('s', 'old', 1, 1)"
        )
    con.close()


def test_partly_migrated_file_gets_the_remaining_versions(db_path: Path) -> None:
    _old_crush_file(db_path, 2)
    with connect(db_path) as db:
        assert db.get_session("s").title == "old"
        message = db.insert_message(session_id="s", role="user", provider="p")
        assert db.stored_message(message.id).provider == "p"
    got = rows(db_path, "SELECT version_id FROM goose_db_version ORDER BY id")
    assert [v for (v,) in got] == CRUSH_VERSIONS


def test_partly_migrated_file_is_refused_read_only(db_path: Path) -> None:
    _old_crush_file(db_path, 2)
    before = snapshot(db_path)
    with pytest.raises(DatabaseError, match=r"lacks schema versions .* migrate it"):
        connect(db_path, read_only=True)
    assert snapshot(db_path) == before


def test_an_empty_file_is_refused_read_only_saying_it_is_empty(db_path: Path) -> None:
    db_path.write_bytes(b"")
    with pytest.raises(DatabaseError, match="is an empty database"):
        connect(db_path, read_only=True)
    assert db_path.read_bytes() == b""


def _add_newer_version(path: Path) -> None:
    con = raw(path, read_only=False)
    con.execute("INSERT INTO goose_db_version (version_id, is_applied) VALUES (20990101000000, 1)")
    con.close()


def test_file_with_newer_version_opens_for_messages_and_logs_warning(
    crush_fixture: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _add_newer_version(crush_fixture)
    with caplog.at_level(logging.WARNING, logger="msgstore"), connect(crush_fixture) as db:
        message = db.insert_message(session_id="fixture-session", role="user")
        assert db.stored_message(message.id) == message
        assert len(db.stored_messages("fixture-session")) == 10
    [record] = [r for r in caplog.records if r.name == "msgstore"]
    assert record.levelno == logging.WARNING
    assert "20990101000000" in record.getMessage()
    assert str(crush_fixture) in record.getMessage()
    # Nothing of ours was re-applied.
    assert len(rows(crush_fixture, GOOSE)) == 9


def test_file_with_newer_version_opens_read_only_with_warning(
    crush_fixture: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _add_newer_version(crush_fixture)
    with caplog.at_level(logging.WARNING, logger="msgstore"):
        connect(crush_fixture, read_only=True).close()
    assert any("20990101000000" in r.getMessage() for r in caplog.records)


def test_known_file_logs_no_warning(crush_fixture: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="msgstore"):
        connect(crush_fixture).close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- read-only ------------------------------------------------------------------------------


def test_read_only_leaves_crush_file_bytes_and_mtime_unchanged(crush_fixture: Path) -> None:
    before = snapshot(crush_fixture)
    with connect(crush_fixture, read_only=True) as db:
        assert len(db.stored_messages("fixture-session")) == 9
        assert db.connection.pragma("busy_timeout") == 30000
        assert db.connection.pragma("foreign_keys") == 1
    assert snapshot(crush_fixture) == before


def test_read_only_refuses_writes_with_storage_error(crush_fixture: Path) -> None:
    before = snapshot(crush_fixture)
    with connect(crush_fixture, read_only=True) as db:
        with pytest.raises(StorageError, match="read-only") as info:
            db.write_parts("1f6f3610-d261-4978-b029-6dc4f24bf3c0", "[]", None)
        assert isinstance(info.value.__cause__, apsw.ReadOnlyError)
        with pytest.raises(StorageError, match="read-only"):
            db.insert_message(session_id="fixture-session", role="user")
        with pytest.raises(StorageError, match="read-only"):
            db.create_session("nope")
    assert snapshot(crush_fixture) == before


def test_read_only_of_missing_file_raises_and_creates_nothing(db_path: Path) -> None:
    with pytest.raises(DatabaseError, match=str(db_path.name)):
        connect(db_path, read_only=True)
    assert list(db_path.parent.iterdir()) == []


# -- files that must not be touched -----------------------------------------------------------


def test_directory_path_raises_database_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=str(tmp_path)) as info:
        connect(tmp_path)
    assert isinstance(info.value.__cause__, apsw.Error)


def test_empty_path_raises_database_error() -> None:
    with pytest.raises(DatabaseError, match="empty"):
        connect("")


def _assert_refused_and_unchanged(path: Path, *, read_only: bool = False) -> DatabaseError:
    before = snapshot(path)
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(DatabaseError) as info:
        connect(path, read_only=read_only)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, apsw.Error | type(None))
    assert snapshot(path) == before
    # No journal or WAL left behind that a later open could replay over the file.
    assert sorted(p.name for p in path.parent.iterdir()) == siblings
    return info.value


@pytest.mark.parametrize("read_only", [False, True])
def test_file_that_is_not_a_database_is_refused_and_unchanged(
    db_path: Path, read_only: bool
) -> None:
    db_path.write_bytes(b"this is a text file, not SQLite\n" * 200)
    error = _assert_refused_and_unchanged(db_path, read_only=read_only)
    assert isinstance(error.__cause__, apsw.NotADBError)


@pytest.mark.parametrize("size", [100, 1000, 4096, 8192, 50000, 86016])
def test_truncated_file_is_refused_and_unchanged(crush_fixture: Path, size: int) -> None:
    data = crush_fixture.read_bytes()
    assert size < len(data)
    crush_fixture.write_bytes(data[:size])
    error = _assert_refused_and_unchanged(crush_fixture)
    assert isinstance(error.__cause__, apsw.CorruptError)


@pytest.mark.parametrize("offset", [0, 28, 100])
def test_corrupt_file_is_refused_and_unchanged(crush_fixture: Path, offset: int) -> None:
    data = bytearray(crush_fixture.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    crush_fixture.write_bytes(bytes(data))
    _assert_refused_and_unchanged(crush_fixture)


def test_other_programs_sqlite_file_is_refused_and_unchanged(db_path: Path) -> None:
    con = apsw.Connection(str(db_path))
    con.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, owner TEXT)")
    con.close()
    error = _assert_refused_and_unchanged(db_path)
    assert "goose_db_version" in str(error)


def test_locked_file_raises_database_busy_on_open(db_path: Path) -> None:
    db_path.touch()
    holder = apsw.Connection(str(db_path))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseBusy) as info:
            connect(db_path, busy_timeout_ms=0)
        assert isinstance(info.value.__cause__, apsw.BusyError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_connect_accepts_str_and_pathlike(db_path: Path) -> None:
    with connect(os.fspath(db_path)) as db:
        assert db.path == str(db_path)
    with connect(db_path) as db:
        assert db.path == str(db_path)
        assert not db.read_only
    assert msgstore.Database is type(db)
