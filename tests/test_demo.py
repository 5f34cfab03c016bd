"""The demo in process, on Trio's mock clock: its views and what it leaves in the file."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from rich.console import Console

from msgstore import Role, connect
from msgstore.cli._demo import run_demo
from msgstore.cli._demo_state import DemoOptions
from msgstore.cli._demo_view import LiveView, PlainView, command_prefix, pick_view


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_default_demo_takes_about_ten_seconds_and_live_view_shows_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, height=40, color_system=None)
    result = await run_demo(DemoOptions(tmp_path / "demo.db", seed=3), LiveView(console))
    assert 5 < result.elapsed < 12  # Trio seconds, at speed 1
    assert len(result.conversations) == 4
    assert result.tokens == sum(c.tokens for c in result.conversations) > 500
    stats = result.stats
    assert stats.writes < stats.updates and result.coalescing > 1.5
    assert stats.buffered == 0 and stats.drops == 0
    assert result.events >= stats.writes + result.rows_created
    text = out.getvalue()
    for c in result.conversations:
        assert c.title in text and c.session_id in text
    assert "msgstore demo · 4 conversations · window 33 ms · speed 1x" in text
    assert "coalescing" in text and "msgstore demo: summary" in text
    assert f"{command_prefix()} show --db {result.db_path} " in text
    with connect(result.db_path, read_only=True) as db:
        assert {s.id for s in db.list_sessions()} == {c.session_id for c in result.conversations}


async def test_window_of_zero_writes_every_update(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = io.StringIO()
    options = DemoOptions(tmp_path / "demo.db", streams=1, seed=5, debounce=0, speed=10)
    result = await run_demo(options, PlainView(out))
    assert result.stats.writes == result.stats.updates
    assert "1.0 updates per write" in out.getvalue()


async def test_plain_view_prints_prompts_finishes_tool_results_and_counters(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    out = io.StringIO()
    options = DemoOptions(tmp_path / "demo.db", streams=2, seed=0)  # both use tools
    result = await run_demo(options, PlainView(out))
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "msgstore demo: 2 conversations, speed 1x, window 33 ms",
        f"database: {tmp_path / 'demo.db'}",
    ]
    first = result.conversations[0]
    with connect(result.db_path, read_only=True) as db:
        messages = db.stored_messages(first.session_id)
    prompt = messages[0].content().text
    assert any(line.endswith(f"#1 {first.title} · user: {prompt}") for line in lines)
    call = next(c for m in messages for c in m.tool_calls())
    assert any(f"tool call {call.name} [{call.id}]" in line for line in lines)
    assert any(f"tool result {call.name} -> {call.id}" in line for line in lines)
    assert any("assistant finished: end_turn" in line for line in lines)
    assert sum(" · SQL writes " in line for line in lines) >= 5  # one a second
    assert [m.role for m in messages][:3] == [Role.USER, Role.ASSISTANT, Role.TOOL]


def test_view_is_live_only_on_a_terminal_with_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(pick_view(io.StringIO()), PlainView)
    assert isinstance(pick_view(FakeTerminal()), LiveView)
    monkeypatch.setitem(sys.modules, "rich.console", None)  # as if rich were not installed
    assert isinstance(pick_view(FakeTerminal()), PlainView)
