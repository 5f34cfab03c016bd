"""The ``msgstore`` command line, run for real in a subprocess (issue #6).

Each subprocess costs a third of a second: every test makes few and checks much.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_msgstore as msgstore
from every_part import CHILD, PARENT, Sample, every_part, make_sample_db

from msgstore import Role, ToolCall, ToolResult, connect
from msgstore.cli._main import build_parser, main
from msgstore.cli._render import Output


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("msgstore: error: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return make_sample_db(tmp_path / "sample.db")


# -- help ----------------------------------------------------------------------------------


def test_python_dash_m_prints_help_naming_every_command() -> None:
    out = msgstore("--help").stdout
    for command in ("demo", "sessions", "show", "export", "import", "stats"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "sessions", "show", "export", "import", "stats"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: msgstore {command}" in capsys.readouterr().out


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: msgstore" in capsys.readouterr().err
    assert build_parser().prog == "msgstore"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_output_is_coloured_only_on_a_terminal_and_never_reads_markup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    plain, tty = io.StringIO(), FakeTerminal()
    for stream in (plain, tty):
        Output(stream).lines([("[bold]not markup[/]", "red")])
    assert plain.getvalue() == "[bold]not markup[/]\n"
    assert "[bold]not markup[/]" in tty.getvalue() and "\x1b[" in tty.getvalue()


# -- read commands on crush's file: output, and not a byte changed ---------------------------


def test_sessions_lists_the_crush_fixture_without_changing_it(crush_fixture: Path) -> None:
    before = snapshot(crush_fixture)
    out = msgstore("sessions", "--db", crush_fixture).stdout
    header, row = out.splitlines()
    assert header.split() == ["ID", "TITLE", "MESSAGES", "TOKENS", "IN/OUT", "COST", "UPDATED"]
    assert row.startswith("fixture-session  fixture: every part type  9 ")
    assert "0/0" in row and "$0.0000" in row and "2026-11-24 01:38:14 UTC" in row
    assert snapshot(crush_fixture) == before


def test_show_renders_the_crush_fixture_without_changing_it(crush_fixture: Path) -> None:
    before = snapshot(crush_fixture)
    out = msgstore("show", "--db", crush_fixture, "fixture-session").stdout
    assert snapshot(crush_fixture) == before
    assert out.startswith("fixture: every part type\nsession fixture-session · 9 messages")
    # roles, with model and provider
    assert "\nuser · 2026-11-24 01:38:14 UTC · id 4bb38cdd-bd2a-4510-99db-20e314df9500\n" in out
    assert "\nassistant · claude-fixture-1 (anthropic) · " in out
    assert "\nassistant (summary) · claude-fixture-1 (anthropic) · " in out
    assert "\nsystem · " in out and "\ntool · " in out
    # text, with control characters made visible
    assert '  Look at <b>this</b> & "that" \\ path\\to\\file\n' in out
    assert "\\x01 ctrl \\x7f del" in out
    # reasoning, its duration and signatures
    assert "  reasoning (7 s)\n  │ Let me think about <this> & that.\n" in out
    assert "  │ signature EqQBCkYIARgCKkDsig==\n" in out
    assert "  │ thought signature dGhvdWdodC1zaWc= (tool toolu_09)\n" in out
    # tool calls with id, flags and (pretty) input; an unfinished one as written
    assert "  tool call view [toolu_01] · finished, provider-executed\n" in out
    assert '      "file_path": "main.go"\n' in out
    assert '  tool call bash [toolu_02] · unfinished\n    {"command":"go te\n' in out
    # tool results name the call they answer; errors are marked
    assert "  tool result view → call toolu_01\n    package main\n" in out
    assert "  tool result bash → call toolu_02 · ERROR\n    exit status 1: permission denied" in out
    assert "  tool result screenshot → call toolu_03\n    data: image/png, 24 chars\n" in out
    # finish reasons with time, message and details
    assert "  finish: tool_use at 2023-11-14 22:13:29 UTC\n" in out
    assert (
        "  finish: canceled at 2023-11-14 22:13:40 UTC · message: Request canceled"
        " · details: user pressed <esc> & quit\n"
    ) in out
    assert "  finish: error at 2023-11-14 22:13:51 UTC · message: Provider error" in out
    # images, attachments, and messages without content or finish
    assert "  image https://example.com/cat.png?size=large&fmt=png (detail high)\n" in out
    assert "  binary notes/blob.bin · application/octet-stream · 10 bytes\n" in out
    assert out.count("\n  (not finished)\n") == 2 and "\n  (no content)\n" in out
    assert "  reasoning (not finished)\n" in out  # started, never ended


def test_stats_counts_rows_and_parts_of_the_crush_fixture_without_changing_it(
    crush_fixture: Path,
) -> None:
    before = snapshot(crush_fixture)
    out = msgstore("stats", "--db", crush_fixture).stdout
    assert snapshot(crush_fixture) == before
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert lines[0] == str(crush_fixture)
    assert lines[1] == "file 88.0 KiB · WAL none"  # as it was before stats opened it
    assert "schema version 20260127000000" in lines[2]
    for expected in (
        "sessions 1",
        "messages 9",
        "files 0",
        "assistant 6",
        "user 1",
        "finish 7",
        "text 6",
        "tool_result 3",
        "binary 2",
        "image_url 2",
        "reasoning 2",
        "tool_call 2",
        "unfinished assistant messages: 2",
    ):
        assert expected in lines


def test_markdown_export_of_the_crush_fixture_reads_as_a_conversation(
    crush_fixture: Path,
) -> None:
    before = snapshot(crush_fixture)
    md = msgstore("export", "--db", crush_fixture, "--format", "markdown").stdout
    assert snapshot(crush_fixture) == before
    assert md.startswith("# msgstore export\n\n## fixture: every part type\n")
    assert "### User\n" in md and "### Assistant (summary) · claude-fixture-1" in md
    assert "> **Reasoning**\n>\n> Let me think about <this> & that." in md
    assert (
        '**Tool call** `view` · id `toolu_01`\n\n```json\n{\n  "file_path": "main.go"\n}\n```' in md
    )
    assert "**Tool result** `bash` for call `toolu_02` · **error**" in md
    assert "*Finished: canceled at 2023-11-14 22:13:40 UTC*  \n*Request canceled*" in md
    assert "![image (high)](https://example.com/cat.png?size=large&fmt=png)" in md
    assert "*Attachment `notes/blob.bin`: application/octet-stream, 10 bytes*" in md


# -- files made through the API ----------------------------------------------------------------


def test_sessions_shows_tokens_cost_and_sub_sessions(sample: Sample) -> None:
    rows = msgstore("sessions", "--db", sample.path).stdout.splitlines()[1:]
    assert len(rows) == 2
    assert rows[0].split()[:5] == [PARENT, "Parent:", "every", "part", "4"]
    assert "1200/345" in rows[0] and "$0.0123" in rows[0]
    assert rows[1].startswith("  └ ")
    assert rows[1].split()[:5] == ["└", CHILD, "Child", "task", "1"]


def test_show_renders_every_part_type(sample: Sample) -> None:
    out = msgstore("show", "--db", sample.path, PARENT).stdout
    assert "assistant · model-x (prov-y) · " in out
    assert "  │ responses data {" in out and '"id": "rs_1"' in out
    assert "  │ thought signature dGhvdWdodA== (tool call_9)\n" in out
    assert "  Hello ``` fence\n  line two ✓ 日本\n" in out
    assert "  image https://example.com/a.png?x=1&y=2 (detail low)\n" in out
    assert "  binary blob.bin · application/octet-stream · 256 bytes\n" in out
    assert "  tool call bash [call_1] · finished, provider-executed\n" in out
    assert "  tool result bash → call call_1 · ERROR\n    permission denied\n" in out
    assert '    data: text/plain, 4 chars\n    metadata: {"x":1}\n' in out
    assert "  $ make test\n    2 failed\n    exit code 2\n" in out
    assert (
        "  finish: error at 2023-11-14 22:13:25 UTC · message: Provider error · details: 429" in out
    )
    assert "  tool result view → call call_2 · ERROR\n    no such file\n" in out
    assert "assistant (summary) · model-x · " in out


def normalised(jsonl: str, *, drop_ids: bool = False) -> list[dict[str, Any]]:
    """The records of an export without what an import may change: the header's time,
    sessions' updated_at (the import's own write), and, with ``drop_ids``, row ids."""
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert records[0]["format"] == "msgstore-export" and records[0]["version"] == 1
    out = []
    for r in records[1:]:
        r = dict(r)
        if r["type"] == "session":
            del r["updated_at"]
        if drop_ids:
            for key in ("id", "session_id", "parent_session_id", "summary_message_id"):
                if r.get(key) is not None:
                    r[key] = "<id>"
        out.append(r)
    return out


def test_jsonl_export_import_export_round_trips_every_part_type(
    sample: Sample, tmp_path: Path
) -> None:
    before = snapshot(sample.path)
    first = msgstore("export", "--db", sample.path).stdout
    assert snapshot(sample.path) == before
    records = normalised(first)
    assert [r["type"] for r in records] == ["session"] + ["message"] * 4 + ["session", "message"]
    tags = [p["type"] for p in records[2]["parts"]]
    assert tags == [
        "reasoning", "text", "image_url", "binary", "tool_call", "tool_result",
        "shell_command", "finish",
    ]  # fmt: skip

    dump = tmp_path / "dump.jsonl"
    dump.write_text(first, encoding="utf-8")
    fresh = tmp_path / "fresh.db"
    proc = msgstore("import", "--db", fresh, dump)
    assert proc.stdout == f"imported 2 sessions, 5 messages into {fresh}\n"
    again = msgstore("export", "--db", fresh).stdout
    assert normalised(again) == records  # same ids: the fresh file had none of them

    with connect(fresh, read_only=True) as db:
        every = db.stored_message(sample.every_id)
        assert every.parts == every_part()  # bytes, signatures, responses_data, ids
        assert every.role is Role.ASSISTANT and every.provider == "prov-y"
        assert db.get_session(CHILD).parent_session_id == PARENT
        assert db.get_session(PARENT).message_count == 4
        assert db.get_session(PARENT).summary_message_id == sample.unfinished_id

    # Importing again into the same file: everything gets new ids, nothing is overwritten.
    proc = msgstore("import", "--db", fresh, dump)
    assert "imported 2 sessions, 5 messages" in proc.stdout
    assert "(7 given new ids: the file already had them)" in proc.stdout
    renamed = dict(line.split()[1::2] for line in proc.stdout.splitlines()[1:])
    assert set(renamed) == {PARENT, CHILD}
    with connect(fresh, read_only=True) as db:
        assert len(db.connection.execute("SELECT id FROM sessions").fetchall()) == 4
        assert db.get_session(renamed[CHILD]).parent_session_id == renamed[PARENT]
        summary = db.get_session(renamed[PARENT]).summary_message_id
        assert summary is not None and summary != sample.unfinished_id
        assert db.stored_message(summary).content().text == "still going"
    third = msgstore("export", "--db", fresh, renamed[PARENT], renamed[CHILD]).stdout
    assert normalised(third, drop_ids=True) == normalised(first, drop_ids=True)


def test_export_to_a_file_names_what_it_wrote(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "child.md"
    proc = msgstore("export", "--db", sample.path, CHILD, "--format", "markdown", "-o", out)
    assert proc.stdout == f"exported 1 session, 1 message to {out}\n"
    md = out.read_text(encoding="utf-8")
    assert "## Child task\n- Session: `child-session` (sub-session of `parent-session`)" in md
    assert "**Tool call** `grep` · id `call_c` (unfinished)" in md
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- errors: one line, no traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sessions", "--db", "{missing}"], ["missing.db: no such file"]),
        (["stats", "--db", "{tmp}"], ["is a directory"]),
        (["show", "--db", "{notdb}", "x"], ["notdb.db", "not a database"]),
        (["show", "--db", "{fixture}", "no-such-session"], ["no session 'no-such-session'"]),
        (["export", "--db", "{fixture}", "fixture-session", "nope"], ["no session 'nope'"]),
        (["import", "--db", "{tmp}/new.db", "{missing}"], ["missing.db: no such file"]),
        (["import", "--db", "{tmp}/new.db", "{notdb}"], ["notdb.db is not a msgstore export"]),
    ],
)
def test_errors_are_one_line_on_stderr_with_nonzero_exit(
    args: list[str], needles: list[str], tmp_path: Path, crush_fixture: Path
) -> None:
    notdb = tmp_path / "notdb.db"
    notdb.write_text("just text\n")
    paths = {
        "missing": tmp_path / "missing.db",
        "tmp": tmp_path,
        "notdb": notdb,
        "fixture": crush_fixture,
    }
    before = snapshot(crush_fixture)
    proc = msgstore(*(a.format(**paths) for a in args), ok=False)
    assert_one_line_error(proc, *needles)
    assert proc.stdout == ""
    assert snapshot(crush_fixture) == before
    assert not (tmp_path / "new.db").exists()


# -- the demo ---------------------------------------------------------------------------------


def test_demo_streams_conversations_into_a_database_show_can_open(tmp_path: Path) -> None:
    db_path = tmp_path / "demo.db"
    out = msgstore("demo", "--db", db_path, "--streams", "3", "--speed", "50", "--seed", "7").stdout
    # Plain progress (no terminal), then the summary and where the file is.
    assert out.startswith("msgstore demo: 3 conversations, speed 50x, window 33 ms\n")
    assert " · user: " in out and "assistant finished: end_turn" in out
    assert "SQL writes (UPDATE)" in out and "updates per write" in out
    assert f"database: {db_path}\n" in out
    assert f"msgstore show --db {db_path} " in out

    with connect(db_path, read_only=True) as db:
        sessions = db.list_sessions()
        assert len(sessions) == 3
        for session in sessions:
            assert session.title in out
            assert session.completion_tokens > 0 and session.cost > 0
            messages = db.stored_messages(session.id)
            assert messages[0].role is Role.USER and messages[0].content().text
            assert messages[-1].role is Role.ASSISTANT
            assert messages[-1].finish_reason() == "end_turn"
            assistants = [m for m in messages if m.role is Role.ASSISTANT]
            assert all(m.is_finished() and m.model == "demo-sonnet" for m in assistants)
            assert all(m.reasoning_content().finished_at for m in assistants)
            calls: list[ToolCall] = [c for m in assistants for c in m.tool_calls()]
            results: list[ToolResult] = [
                r for m in messages if m.role is Role.TOOL for r in m.tool_results()
            ]
            assert calls and all(c.finished and c.input.startswith("{") for c in calls)
            assert [r.tool_call_id for r in results] == [c.id for c in calls]
    show = msgstore("show", "--db", db_path, sessions[0].id).stdout
    assert "finish: end_turn" in show and "tool result " in show


def test_demo_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    proc = msgstore("demo", "--db", tmp_path / "no" / "dir.db", "--speed", "5", ok=False)
    assert_one_line_error(proc, "no such directory")
