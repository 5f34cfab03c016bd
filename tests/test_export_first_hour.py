"""Export/import carry every table and column, run through the real CLI (issue #14).

``files`` and ``read_files`` rows, sessions' ``updated_at``, ``import --skip-existing``,
strict JSON for a non-finite cost, no raw line separators, and the messages of ``-o DIR``
and of a file with another format's header.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_msgstore as msgstore
from every_part import make_sample_db

from msgstore import TextContent, encode_parts

CRUSH_SESSION = "crush-session"
OLD = 1_700_000_000  # long before any test runs: an import-time write would show


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("msgstore: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def add_crush_rows(path: Path, *, text: str = "read it", cost: float = 0.25) -> None:
    """A session as crush leaves one, written with a plain connection: old timestamps
    (updated_at after created_at), a message, a files row and a read_files row."""
    con = sqlite3.connect(path)
    try:
        with con:
            # The message first, as if the session's updated_at was set after it.
            parts = encode_parts([TextContent(text)])  # the bytes Go's json.Marshal writes
            con.execute(
                "INSERT INTO messages (id, session_id, role, parts, model, provider, "
                "is_summary_message, created_at, updated_at, finished_at) "
                "VALUES ('crush-msg', ?, 'user', ?, '', NULL, 0, ?, ?, NULL)",
                (CRUSH_SESSION, parts, OLD + 10, OLD + 20),
            )
            con.execute(
                "INSERT INTO sessions (id, parent_session_id, title, message_count, "
                "prompt_tokens, completion_tokens, cost, updated_at, created_at, "
                "summary_message_id, todos) VALUES (?, NULL, ?, 1, 7, 9, ?, ?, ?, NULL, ?)",
                (CRUSH_SESSION, f"crush: {text}", cost, OLD + 100, OLD, '[{"t":"x"}]'),
            )
            con.execute(
                "INSERT INTO files (id, session_id, path, content, version, created_at, "
                "updated_at) VALUES ('crush-file', ?, '/src/main.go', ?, 2, ?, ?)",
                (CRUSH_SESSION, f"package main // {text}\n", OLD + 30, OLD + 40),
            )
            con.execute(
                "INSERT INTO read_files (session_id, path, read_at) VALUES (?, ?, ?)",
                (CRUSH_SESSION, "/src/main.go", OLD + 50),
            )
    finally:
        con.close()


def every_row(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table crush's schema has (sorted: rowids may differ)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT IN ('goose_db_version', 'sqlite_sequence') ORDER BY name"
            )
        ]
        assert tables == ["files", "messages", "read_files", "sessions"]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        con.close()


def strict_records(path: Path) -> list[dict[str, Any]]:
    """The file's records, each line parsed as strict JSON (no NaN/Infinity tokens)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    text = path.read_text(encoding="utf-8")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


@pytest.fixture
def crush_db(tmp_path: Path) -> Path:
    path = make_sample_db(tmp_path / "crush.db").path
    add_crush_rows(path)
    return path


def test_round_trip_keeps_every_row_of_every_table(crush_db: Path, tmp_path: Path) -> None:
    before = every_row(crush_db)
    assert len(before["files"]) == len(before["read_files"]) == 1
    dump = tmp_path / "dump.jsonl"
    proc = msgstore("export", "--db", crush_db, "-o", dump)
    assert proc.stdout == f"exported 3 sessions, 6 messages to {dump}\n"
    records = strict_records(dump)
    header = records[0]
    assert (header["version"], header["files"], header["read_files"]) == (1, 1, 1)
    assert [r["type"] for r in records if r.get("session_id") == CRUSH_SESSION] == [
        "message",
        "file",
        "read_file",
    ]
    fresh = tmp_path / "fresh.db"
    proc = msgstore("import", "--db", fresh, dump)
    assert proc.stdout == (
        f"imported 3 sessions, 6 messages, 1 file, 1 read_files row into {fresh}\n"
    )
    # Every column, sessions' updated_at and message_count included.
    assert every_row(fresh) == before
    # And out again: the same records (but the export's own time).
    again = tmp_path / "again.jsonl"
    msgstore("export", "--db", fresh, "-o", again)
    assert strict_records(again)[1:] == records[1:]


def test_import_into_a_file_that_has_the_ids_remaps_files_and_read_files(
    crush_db: Path, tmp_path: Path
) -> None:
    dump = tmp_path / "dump.jsonl"
    msgstore("export", "--db", crush_db, CRUSH_SESSION, "-o", dump)
    proc = msgstore("import", "--db", crush_db, dump)
    assert "imported 1 session, 1 message, 1 file, 1 read_files row" in proc.stdout
    assert "(3 given new ids: the file already had them)" in proc.stdout
    new_id = proc.stdout.splitlines()[1].split(" -> ")[1]
    rows = every_row(crush_db)
    (file_row,) = [r for r in rows["files"] if r[1] == new_id]
    assert file_row[0] != "crush-file" and file_row[2:] == (
        "/src/main.go",
        "package main // read it\n",
        2,
        OLD + 30,
        OLD + 40,
    )
    assert (new_id, "/src/main.go", OLD + 50) in rows["read_files"]
    (session_row,) = [r for r in rows["sessions"] if r[0] == new_id]
    assert (session_row[3], session_row[7], session_row[8]) == (1, OLD + 100, OLD)


def test_an_export_from_before_files_and_read_files_still_imports(
    tmp_path: Path,
) -> None:
    sample = make_sample_db(tmp_path / "sample.db").path
    dump = tmp_path / "dump.jsonl"
    msgstore("export", "--db", sample, "-o", dump)
    # What msgstore wrote before: the same records, a header without the new counts.
    lines = dump.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    del header["files"], header["read_files"]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8")
    fresh = tmp_path / "fresh.db"
    proc = msgstore("import", "--db", fresh, old)
    assert proc.stdout == f"imported 2 sessions, 5 messages into {fresh}\n"
    assert every_row(fresh) == every_row(sample)


def test_importing_twice_with_skip_existing_changes_nothing(crush_db: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    msgstore("export", "--db", crush_db, "-o", dump)
    fresh = tmp_path / "fresh.db"
    proc = msgstore("import", "--db", fresh, dump, "--skip-existing")
    assert proc.stdout == (
        f"imported 3 sessions, 6 messages, 1 file, 1 read_files row into {fresh}; "
        "skipped 0 sessions, 0 messages already in the database\n"
    )
    once = every_row(fresh)
    proc = msgstore("import", "--db", fresh, dump, "--skip-existing")
    assert proc.stdout == (
        f"imported 0 sessions, 0 messages into {fresh}; skipped 3 sessions, 6 messages, "
        "1 file, 1 read_files row already in the database\n"
    )
    assert every_row(fresh) == once == every_row(crush_db)
    # Without the flag, the old behaviour: a second copy under new ids.
    proc = msgstore("import", "--db", fresh, dump)
    assert "(10 given new ids: the file already had them)" in proc.stdout
    counts = {t: len(rows) for t, rows in every_row(fresh).items()}
    assert counts == {"files": 2, "messages": 12, "read_files": 2, "sessions": 6}


def test_non_finite_cost_is_written_as_strict_json_and_read_back(tmp_path: Path) -> None:
    db = make_sample_db(tmp_path / "inf.db").path
    add_crush_rows(db, cost=float("inf"))
    dump = tmp_path / "dump.jsonl"
    msgstore("export", "--db", db, CRUSH_SESSION, "-o", dump)
    assert "Infinity" in dump.read_text(encoding="utf-8")
    (session,) = [r for r in strict_records(dump) if r.get("type") == "session"]
    assert session["cost"] == "Infinity"
    fresh = tmp_path / "fresh.db"
    msgstore("import", "--db", fresh, dump)
    assert every_row(fresh)["sessions"][0][6] == float("inf")
    assert every_row(fresh) == {
        t: [r for r in rows if CRUSH_SESSION in r] for t, rows in every_row(db).items()
    }


def test_line_separators_are_escaped_so_splitlines_gives_one_line_per_record(
    tmp_path: Path,
) -> None:
    db = make_sample_db(tmp_path / "sep.db").path
    add_crush_rows(db, text="one\u2028two\u2029three\x85four")
    dump = tmp_path / "dump.jsonl"
    msgstore("export", "--db", db, "-o", dump)
    text = dump.read_text(encoding="utf-8")
    assert not {"\u2028", "\u2029", "\x85"} & set(text)
    assert "one\\u2028two\\u2029three\\u0085four" in text
    records = strict_records(dump)
    header = records[0]
    announced = sum(header[k] for k in ("sessions", "messages", "files", "read_files"))
    assert len(text.splitlines()) == len(records) == 1 + announced
    fresh = tmp_path / "fresh.db"
    msgstore("import", "--db", fresh, dump)
    assert every_row(fresh) == every_row(db)


def test_export_to_a_directory_names_the_directory(tmp_path: Path) -> None:
    db = make_sample_db(tmp_path / "s.db").path
    out = tmp_path / "out"
    out.mkdir()
    line = assert_one_line_error(
        msgstore("export", "--db", db, "-o", out, ok=False),
        f"{out} is a directory",
        "give -o a file name",
    )
    assert ".tmp" not in line
    assert list(out.iterdir()) == []
    assert_one_line_error(
        msgstore("export", "--db", db, "-o", tmp_path / "nope" / "x.jsonl", ok=False),
        f"{tmp_path / 'nope'}: no such directory",
    )
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_another_format_in_the_header_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps({"format": "llm-logs", "version": 1, "sessions": 0}) + "\n", encoding="utf-8"
    )
    line = assert_one_line_error(
        msgstore("import", "--db", tmp_path / "new.db", other, ok=False),
        f"{other} is not a msgstore export",
        "its header says format 'llm-logs', expected 'msgstore-export'",
    )
    assert "no header" not in line
    assert not (tmp_path / "new.db").exists()


def test_one_session_one_message_is_said_in_the_singular(tmp_path: Path) -> None:
    db = make_sample_db(tmp_path / "s.db").path
    dump = tmp_path / "child.jsonl"
    proc = msgstore("export", "--db", db, "child-session", "-o", dump)
    assert proc.stdout == f"exported 1 session, 1 message to {dump}\n"
    fresh = tmp_path / "fresh.db"
    proc = msgstore("import", "--db", fresh, dump)
    assert proc.stdout == f"imported 1 session, 1 message into {fresh}\n"
    # A truncated one-session file says so in the singular, too.
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text(dump.read_text(encoding="utf-8").splitlines()[0] + "\n")
    assert_one_line_error(
        msgstore("import", "--db", fresh, truncated, ok=False),
        "its header announces 1 session and 1 message, it holds 0 sessions and 0 messages",
    )
