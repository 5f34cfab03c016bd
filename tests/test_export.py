"""The JSONL export format and its import, in process (the CLI tests run them for real)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from every_part import PARENT, Sample, make_sample_db

from msgstore import MsgstoreError, connect
from msgstore.cli._export import (
    ExportFormatError,
    _fence,
    export_jsonl,
    import_jsonl,
    read_export,
)


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return make_sample_db(tmp_path / "sample.db")


def exported(path: Path, *ids: str) -> list[dict[str, Any]]:
    out = io.BytesIO()
    with connect(path, read_only=True) as db:
        export_jsonl(db, ids, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def lines(records: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    with connect(path, read_only=True) as db:
        return db.connection.execute(
            "SELECT id, session_id, role, parts, model, provider, is_summary_message, "
            "created_at, updated_at, finished_at FROM messages ORDER BY rowid"
        ).fetchall()


def test_import_keeps_every_column_of_every_message(sample: Sample, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    with connect(fresh) as db:
        result = import_jsonl(db, lines(exported(sample.path)))
    assert (result.sessions, result.messages) == (2, 5)
    assert (result.renamed_sessions, result.renamed_messages) == ({}, {})
    # Byte for byte: parts JSON, NULL provider and finished_at (user) vs 0 (tool), times.
    assert raw_rows(fresh) == raw_rows(sample.path)
    assert [r[9] for r in raw_rows(fresh)][:3] == [None, None, 0]


def test_import_into_a_file_that_has_the_ids_renames_and_keeps_the_originals(
    sample: Sample,
) -> None:
    before = raw_rows(sample.path)
    with connect(sample.path) as db:
        result = import_jsonl(db, lines(exported(sample.path, PARENT)))
    assert set(result.renamed_sessions) == {PARENT}
    assert len(result.renamed_messages) == 4
    after = raw_rows(sample.path)
    assert after[: len(before)] == before
    new_rows = after[len(before) :]
    assert {r[1] for r in new_rows} == {result.renamed_sessions[PARENT]}
    assert [r[3] for r in new_rows] == [r[3] for r in before if r[1] == PARENT]


def test_empty_database_exports_a_header_that_imports_as_nothing(tmp_path: Path) -> None:
    connect(tmp_path / "empty.db").close()
    records = exported(tmp_path / "empty.db")
    assert len(records) == 1
    assert records[0]["sessions"] == records[0]["messages"] == 0
    with connect(tmp_path / "other.db") as db:
        assert import_jsonl(db, lines(records)).sessions == 0


def _broken(records: list[dict[str, Any]], what: str) -> list[bytes]:
    header, session, message = records[0], records[1], records[2]
    if what == "newer version":
        header = {**header, "version": 2}
    elif what == "no header":
        return lines(records[1:])
    elif what == "truncated":
        return lines(records[:-1])
    elif what == "unknown part type":
        message = {**message, "parts": [{"type": "hologram", "data": {}}]}
    elif what == "unknown role":
        message = {**message, "role": "oracle"}
    elif what == "orphan message":
        message = {**message, "session_id": "elsewhere"}
    elif what == "duplicate message":
        header = {**header, "messages": 2}
        return lines([header, session, message, message])
    elif what == "wrong type":
        message = {**message, "created_at": "yesterday"}
    return lines([{**header, "sessions": 1, "messages": 1}, session, message])


@pytest.mark.parametrize(
    ("what", "match"),
    [
        ("newer version", "format version 2; this msgstore reads version 1"),
        ("no header", "not a msgstore export"),
        ("truncated", "incomplete: its header announces 2 sessions and 5 messages"),
        ("unknown part type", "dump line 3: .*unknown part type 'hologram'"),
        ("unknown role", "dump line 3: unknown role 'oracle'"),
        ("orphan message", "belongs to session 'elsewhere', which the file does not hold"),
        ("duplicate message", "holds message .* twice"),
        ("wrong type", "dump line 3: 'created_at' must be int, got 'yesterday'"),
    ],
)
def test_damaged_export_is_refused_naming_the_problem(
    sample: Sample, what: str, match: str
) -> None:
    records = exported(sample.path)
    with pytest.raises(ExportFormatError, match=match):
        read_export(_broken(records, what), name="dump")


def test_failed_import_leaves_the_database_as_it_was(sample: Sample, tmp_path: Path) -> None:
    records = exported(sample.path)
    records[-2] = {**records[-2], "prompt_tokens": -1}  # the child session breaks a CHECK
    target = tmp_path / "target.db"
    with connect(target) as db:
        with pytest.raises(MsgstoreError, match="nothing was imported"):
            import_jsonl(db, lines(records))
        assert db.connection.execute("SELECT count(*) FROM sessions").get == 0
        assert db.connection.execute("SELECT count(*) FROM messages").get == 0


def test_markdown_fence_outgrows_backticks_in_the_content() -> None:
    assert _fence("plain", "json") == "```json\nplain\n```"
    assert _fence("has ``` inside\n") == "````\nhas ``` inside\n````"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            {"type": "file", "id": "f", "session_id": "elsewhere", "path": "/a", "content": "",
             "version": 0, "created_at": 1, "updated_at": 1},
            "file 'f' belongs to session 'elsewhere', which the file does not hold",
        ),
        (
            {"type": "read_file", "session_id": PARENT, "path": "/a", "read_at": "now"},
            "dump line 7: 'read_at' must be int, got 'now'",
        ),
    ],
)  # fmt: skip
def test_damaged_files_records_are_refused(
    sample: Sample, extra: dict[str, Any], match: str
) -> None:
    records = exported(sample.path)
    key = "files" if extra["type"] == "file" else "read_files"
    records[0] = {**records[0], key: 1}
    with pytest.raises(ExportFormatError, match=match):
        read_export(lines([*records[:6], extra, *records[6:]]), name="dump")


@pytest.mark.parametrize(
    ("cost", "match"),
    [("Infinity", None), ("lots", "'cost' must be a number or one of the strings 'Infinity'")],
)
def test_cost_strings(sample: Sample, cost: str, match: str | None) -> None:
    records = exported(sample.path)
    records[1] = {**records[1], "cost": cost}
    if match is None:
        assert read_export(lines(records)).sessions[0].cost == float("inf")
    else:
        with pytest.raises(ExportFormatError, match=match):
            read_export(lines(records), name="dump")
