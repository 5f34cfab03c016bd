"""The command line for a newcomer (issue #14): ``--db`` found the way crush finds it,
session id prefixes, ids that can be copied, ``--json`` for scripts, singular wording.

Every test runs the real CLI in a subprocess, from a chosen working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from every_part import CHILD, PARENT, make_sample_db

from msgstore import Role, TextContent, connect, encode_parts

UUID_A = "3f2c9b8e-5d1a-4c7e-9b2f-0a1b2c3d4e5f"
UUID_B = "3f2c1111-2222-4333-8444-555566667777"
UUID_CHILD = "9e8d7c6b-5a49-4837-a261-504f3e2d1c0b"
LONG_TITLE = "Refactor the storage layer so that every write goes through one queue"


def run(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    columns: int | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("MSGSTORE_DB", "COLUMNS")}
    base.update({"NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"})
    if columns is not None:
        base["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "msgstore", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("msgstore: error: ")
    assert proc.stdout == ""
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose crush database is at ``.crush/crush.db``, with a nested subdirectory."""
    root = tmp_path / "project"
    (root / ".crush").mkdir(parents=True)
    (root / "src" / "deep" / "er").mkdir(parents=True)
    make_sample_db(root / ".crush" / "crush.db")
    return root


def make_uuid_db(path: Path) -> Path:
    """Sessions with uuid ids (two sharing a prefix), a long title and a sub-session."""
    with connect(path) as db:
        db.create_session(LONG_TITLE, id=UUID_A)
        db.create_session("Second", id=UUID_B)
        db.create_session("A sub-agent's task with a long title too", id=UUID_CHILD,
                          parent_session_id=UUID_A)  # fmt: skip
        db.insert_message(session_id=UUID_B, role=Role.USER, parts=[TextContent("hi\u2028there ✓")])
    return path


# -- --db: found the way crush finds it ----------------------------------------------------


def test_db_is_found_upward_from_a_nested_directory_and_named_on_stderr(project: Path) -> None:
    db = project / ".crush" / "crush.db"
    before = sorted(p.name for p in (project / ".crush").iterdir())
    nested = project / "src" / "deep" / "er"
    for args in (["sessions"], ["show", PARENT], ["stats"], ["export", CHILD]):
        proc = run(*args, cwd=nested)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == f"msgstore: using {db} (found from {nested})\n"
        assert proc.stdout
    assert PARENT in run("sessions", cwd=project).stdout
    # A read-only command left no file in the working directories.
    assert list(nested.iterdir()) == []
    assert {"crush.db"} <= set(before)


def test_msgstore_db_overrides_discovery_and_db_overrides_both(
    project: Path, tmp_path: Path
) -> None:
    other = make_uuid_db(tmp_path / "other.db")
    nested = project / "src" / "deep"
    proc = run("sessions", cwd=nested, env={"MSGSTORE_DB": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"msgstore: using {other} (from MSGSTORE_DB)\n"
    assert UUID_A in proc.stdout and PARENT not in proc.stdout
    # --db wins, and then nothing is said about it.
    proc = run("sessions", "--db", project / ".crush" / "crush.db", cwd=nested,
               env={"MSGSTORE_DB": str(other)})  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == ""
    assert PARENT in proc.stdout and UUID_A not in proc.stdout


def test_no_database_found_is_one_clear_line_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "sub"
    empty.mkdir(parents=True)
    for command in (["sessions"], ["stats"], ["show", "x"], ["export"]):
        line = one_error_line(run(*command, cwd=empty))
        assert ".crush/crush.db" in line and str(empty) in line
        assert "--db" in line and "MSGSTORE_DB" in line
    missing = tmp_path / "missing.db"
    proc = run("sessions", cwd=empty, env={"MSGSTORE_DB": str(missing)})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"msgstore: using {missing} (from MSGSTORE_DB)",
        f"msgstore: error: {missing}: no such file",
    ]
    assert not missing.exists()
    assert list((tmp_path / "empty").rglob("*")) == [empty]


# -- session id prefixes ----------------------------------------------------------------------


def test_show_and_export_accept_a_unique_prefix(tmp_path: Path) -> None:
    db = make_uuid_db(tmp_path / "u.db")
    proc = run("show", "--db", db, "3f2c9", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"session {UUID_A} · 0 messages" in proc.stdout
    proc = run("show", "--db", db, UUID_CHILD[:4], "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["session"]["id"] == UUID_CHILD
    proc = run("export", "--db", db, "3f2c1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in records if r.get("type") == "session"] == [UUID_B]


def test_an_ambiguous_prefix_lists_the_matching_ids(tmp_path: Path) -> None:
    db = make_uuid_db(tmp_path / "u.db")
    for command in ("show", "export"):
        line = one_error_line(run(command, "--db", db, "3f2c", cwd=tmp_path))
        assert "ambiguous" in line and "'3f2c'" in line
        assert UUID_A in line and UUID_B in line and UUID_CHILD not in line
    line = one_error_line(run("show", "--db", db, "zzz", cwd=tmp_path))
    assert "no session 'zzz'" in line


# -- ids that can be copied -------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 60, 120])
def test_sessions_table_keeps_ids_whole_at_narrow_widths(tmp_path: Path, columns: int) -> None:
    db = make_uuid_db(tmp_path / "u.db")
    proc = run("sessions", "--db", db, cwd=tmp_path, columns=columns)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ID ") and "TITLE" in lines[0]
    assert all(len(line) <= columns for line in lines), lines
    ids = [line.split()[0] if not line.startswith(" ") else line.split()[1] for line in lines[1:]]
    assert sorted(ids) == sorted([UUID_A, UUID_B, UUID_CHILD])
    assert "…" in proc.stdout and LONG_TITLE not in proc.stdout  # the title gave way
    assert "MESSAGES" in lines[0]


def test_sessions_table_is_whole_when_piped_without_columns(tmp_path: Path) -> None:
    db = make_uuid_db(tmp_path / "u.db")
    out = run("sessions", "--db", db, cwd=tmp_path).stdout
    assert LONG_TITLE in out and "…" not in out
    assert out.splitlines()[0].split() == [
        "ID", "TITLE", "MESSAGES", "TOKENS", "IN/OUT", "COST", "UPDATED",
    ]  # fmt: skip


# -- --json -----------------------------------------------------------------------------------


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def test_sessions_json_is_a_list_of_session_objects(tmp_path: Path) -> None:
    db = make_sample_db(tmp_path / "s.db").path
    sessions = as_json(run("sessions", "--db", db, "--json", cwd=tmp_path))
    assert [s["id"] for s in sessions] == [PARENT, CHILD]
    parent = sessions[0]
    assert parent["title"] == "Parent: every part" and parent["message_count"] == 4
    assert parent["prompt_tokens"] == 1200 and parent["completion_tokens"] == 345
    assert parent["cost"] == pytest.approx(0.0123)
    assert sessions[1]["parent_session_id"] == PARENT
    assert {"created_at", "updated_at", "summary_message_id", "todos"} <= set(parent)


def test_show_json_has_the_session_and_messages_with_parts_as_stored(tmp_path: Path) -> None:
    sample = make_sample_db(tmp_path / "s.db")
    doc = as_json(run("show", "--db", sample.path, PARENT, "--json", cwd=tmp_path))
    assert doc["session"]["id"] == PARENT
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "tool", "assistant"]
    with connect(sample.path, read_only=True) as db:
        every = db.stored_message(sample.every_id)
    (stored,) = [m for m in doc["messages"] if m["id"] == sample.every_id]
    assert stored["parts"] == json.loads(encode_parts(every.parts))
    assert stored["model"] == "model-x" and stored["provider"] == "prov-y"


def test_stats_json_has_the_stats_fields(tmp_path: Path) -> None:
    db = make_sample_db(tmp_path / "s.db").path
    stats = as_json(run("stats", "--db", db, "--json", cwd=tmp_path))
    assert stats["path"] == str(db) and stats["file_size"] > 0
    assert stats["rows"]["sessions"] == 2 and stats["rows"]["messages"] == 5
    assert stats["roles"]["assistant"] == 3 and stats["parts"]["finish"] >= 1
    assert {"page_size", "page_count", "wal_size", "unfinished_assistant"} <= set(stats)


def test_json_is_strict_utf8_even_for_infinite_cost_and_line_separators(tmp_path: Path) -> None:
    db = make_uuid_db(tmp_path / "u.db")
    with connect(db) as con:
        con.connection.execute("UPDATE sessions SET cost = 9e999 WHERE id = ?", (UUID_B,))
    raw = subprocess.run(
        [sys.executable, "-m", "msgstore", "show", "--db", str(db), UUID_B, "--json"],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        timeout=60,
    )
    assert raw.returncode == 0, raw.stderr
    text = raw.stdout.decode("utf-8")
    assert "Infinity" not in text and "NaN" not in text
    assert "\u2028" not in text and len(text.splitlines()) == len(text.split("\n")) - 1
    doc = json.loads(text)
    assert doc["session"]["cost"] is None
    assert doc["messages"][0]["parts"][0]["data"]["text"] == "hi\u2028there ✓"
    sessions = json.loads(run("sessions", "--db", db, "--json", cwd=tmp_path).stdout)
    assert [s["cost"] for s in sessions if s["id"] == UUID_B] == [None]


# -- wording ----------------------------------------------------------------------------------


def test_one_message_is_singular(tmp_path: Path) -> None:
    sample = make_sample_db(tmp_path / "s.db")
    out = run("show", "--db", sample.path, CHILD, cwd=tmp_path).stdout
    assert f"session {CHILD} · 1 message · " in out
    assert "1 messages" not in out and "1 sessions" not in out
    out = run("show", "--db", sample.path, PARENT, cwd=tmp_path).stdout
    assert f"session {PARENT} · 4 messages · " in out
