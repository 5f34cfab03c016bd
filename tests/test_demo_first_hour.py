"""``msgstore demo`` as a newcomer meets it: the screen, the legend, Ctrl-C, ``| head``.

The live view is checked at 160x45 and 80x24 twice: in process, driving the real view
code on a rich console of that size, and as the real command under a pseudo-terminal
of that size. Neither needs tmux. To look at the screen by hand (tmux installed)::

    tmux new-session -d -s demo -x 160 -y 45 'msgstore demo; sleep 60'
    sleep 6; tmux capture-pane -p -t demo     # mid-run; again after ~12 s: the summary
    tmux kill-session -t demo

and the same with ``-x 80 -y 24``. Every line should fit, no word should be cut in two,
Markdown should show as formatting (no ``**`` or backtick fences), and the header's
``coalescing:`` line should match its counters.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import sysconfig
import termios
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
import trio
import trio.testing
from rich.cells import cell_len
from rich.console import Console

from msgstore import Role, connect
from msgstore.cli._demo import run_demo
from msgstore.cli._demo_scripts import SCRIPTS
from msgstore.cli._demo_state import DemoOptions, DemoState
from msgstore.cli._demo_view import LiveView, Tail, command_prefix, message_renderables

SIZES = [pytest.param(160, 45, id="160x45"), pytest.param(80, 24, id="80x24")]
_WORD = re.compile(r"[A-Za-z_]+")
_UI = """msgstore demo conversations window ms speed x s tokens SQL writes rows created
events coalescing drops updates reached the store write per instead of one token you
done waiting starting prompted reading tool result running calling thinking writing
for first error end_turn tool_use"""


def _vocabulary(*extra: str) -> set[str]:
    texts = [_UI, *extra]
    for s in SCRIPTS:
        texts += [s.title, s.prompt]
        for t in s.turns:
            texts += [t.reasoning, t.text]
            if t.tool:
                texts += [t.tool.name, json.dumps(t.tool.input), t.tool.output]
    return {w for text in texts for w in _WORD.findall(text)}


def _check_screen(lines: list[str], width: int, vocabulary: set[str], *, final: bool) -> None:
    for line in lines:
        assert cell_len(line) <= width, line
    if not final:
        return  # mid-stream a word (or a ``**``) may be half-written
    text = "\n".join(lines)
    assert "**" not in text and "```" not in text
    split = {w for w in _WORD.findall(text) if w not in vocabulary}
    assert not split, f"words cut across lines: {sorted(split)}"


class RecordingLiveView(LiveView):
    """The real live view, keeping each frame it draws as plain text."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        super().__init__(self._console(io.StringIO()))
        self.frames: list[list[str]] = []
        self.state: DemoState | None = None

    def _console(self, file: io.StringIO) -> Console:
        width, height = self.size
        return Console(
            file=file, width=width, height=height, force_terminal=True, color_system=None
        )

    def tick(self, state: DemoState) -> None:
        super().tick(state)
        self.state = state
        screen = self._console(io.StringIO())
        screen.begin_capture()
        screen.print(self.render(state))
        self.frames.append(screen.end_capture().splitlines())


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_live_view_fits_the_screen_renders_markdown_and_explains_coalescing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, width: int, height: int
) -> None:
    view = RecordingLiveView(width, height)
    result = await run_demo(DemoOptions(tmp_path / "demo.db", seed=1), view)
    vocabulary = _vocabulary(str(tmp_path / "demo.db"))
    assert len(view.frames) > 50
    for frame in view.frames:
        assert len(frame) < height  # one line spare: the frame never scrolls the terminal
        _check_screen(frame, width, vocabulary, final=False)
    final = view.frames[-1]
    _check_screen(final, width, vocabulary, final=True)
    s = result.stats
    legend = next(line for line in final if "coalescing:" in line)
    if width >= 110:
        assert (
            f"coalescing: {s.updates:,} updates reached the store, {s.writes:,} SQL writes: "
            "one write per 33 ms window instead of one per token"
        ) in legend
    else:
        assert f"coalescing: {s.updates:,} updates → {s.writes:,} SQL writes" in legend
    assert 2 < s.updates / s.writes < 5  # what the copy may claim: a few per write


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_script_renders_as_markdown_wrapped_to_its_panel(
    tmp_path: Path, width: int, height: int
) -> None:
    # Each script's whole conversation, as its panel would hold it at this size.
    options = DemoOptions(tmp_path / "demo.db", streams=len(SCRIPTS), seed=0, speed=50)
    trio.run(run_demo, options, RecordingLiveView(width, height))
    inner = (width - 1) // 2 - 4 if width >= 110 else width - 4
    console = Console(width=inner, force_terminal=True, color_system=None, file=io.StringIO())
    vocabulary = _vocabulary()
    with connect(options.db_path, read_only=True) as db:
        for session in db.list_sessions():
            messages = db.stored_messages(session.id)
            parts = [r for m in messages for r in message_renderables(m)]
            console.begin_capture()
            console.print(Tail(parts))
            lines = console.end_capture().splitlines()
            _check_screen(lines, inner, vocabulary, final=True)
            if any("```" in m.content().text for m in messages):
                assert any("wait_for_state(client" in line for line in lines)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    return {**env, "TERM": "xterm-256color", **extra}


def _run_in_pty(args: list[str], width: int, height: int) -> tuple[int, str]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=_env())
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(master)
    return proc.wait(timeout=30), out.decode("utf-8", "replace")


_CURSOR_BACK = re.compile(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)*")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_real_command_under_a_terminal_of_that_size(
    tmp_path: Path, width: int, height: int
) -> None:
    db = tmp_path / "demo.db"
    args = [sys.executable, "-m", "msgstore", "demo", "--seed", "1", "--speed", "4"]
    rc, out = _run_in_pty([*args, "--db", str(db)], width, height)
    assert rc == 0, out
    live, _summary = out.split("msgstore demo: summary", 1)
    texts = [_ANSI.sub("", f).replace("\r", "") for f in _CURSOR_BACK.split(live)]
    frames = [f.splitlines() for f in texts if f.strip()]
    assert len(frames) > 10
    vocabulary = _vocabulary(str(tmp_path / "demo.db"))
    for frame in frames:
        assert len(frame) < height
        _check_screen(frame, width, vocabulary, final=False)
    _check_screen(frames[-1], width, vocabulary, final=True)
    assert "Traceback" not in out


def _demo(db: Path, *more: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "msgstore", "demo", "--plain", "--db", str(db), *more]
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def _check_database(db: Path) -> list[Any]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with connect(db, read_only=True) as store:
        sessions = store.list_sessions()
        return [m for s in sessions for m in store.stored_messages(s.id)]


def test_piped_into_a_reader_that_stops_after_three_lines(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = _demo(db)  # at speed 1: it would run ~10 s more if it ignored the closed pipe
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    started = time.monotonic()
    rc = proc.wait(timeout=60)
    with proc.stderr:
        stderr = proc.stderr.read()
    assert rc in (0, 141) and stderr == "", stderr
    assert time.monotonic() - started < 8  # the demo stopped, it did not play on unseen
    assert head[0].startswith("msgstore demo: 4 conversations")
    messages = _check_database(db)
    assert all(m.role is not Role.ASSISTANT or m.parts is not None for m in messages)


def test_ctrl_c_exits_130_with_one_line_and_what_was_accepted_written(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = _demo(db)
    assert proc.stdout is not None
    seen: list[str] = []
    while not any("assistant finished" in line for line in seen):
        line = proc.stdout.readline()
        assert line, "the demo ended before a reply finished"
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert len(stderr.splitlines()) <= 1 and "Traceback" not in stderr, stderr
    assert "interrupted" in stderr and str(db) in stderr
    assert "summary" not in rest and "SESSION ID" not in rest
    messages = _check_database(db)
    users = [line for line in seen if " · user: " in line]
    assert sum(m.role is Role.USER for m in messages) >= len(users) >= 1
    assert any(m.role is Role.ASSISTANT and m.is_finished() for m in messages)


def test_closing_hint_works_as_printed_without_the_venv_on_path(tmp_path: Path) -> None:
    db = tmp_path / "my demo.db"  # a space: the hint must quote it
    env = _env(PATH="/usr/bin:/bin")  # as after `nox -s demo`: its venv not on PATH
    args = [sys.executable, "-m", "msgstore", "demo", "--plain", "--streams", "1"]
    done = subprocess.run(
        [*args, "--speed", "20", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    hint = done.stdout.splitlines()[-1].strip()
    assert hint.startswith(f"{shlex.quote(sys.executable)} -m msgstore show --db ")
    shown = subprocess.run(
        shlex.split(hint), capture_output=True, text=True, env=env, timeout=60, check=True
    )
    with connect(db, read_only=True) as store:
        (session,) = store.list_sessions()
    assert session.title in shown.stdout


def test_hint_says_plain_msgstore_when_that_is_this_install_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    if not (scripts / "msgstore").exists():
        pytest.skip("msgstore's script is not installed next to this interpreter")
    monkeypatch.setenv("PATH", f"{scripts}{os.pathsep}/usr/bin")
    assert command_prefix() == "msgstore"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert command_prefix() == f"{shlex.quote(sys.executable)} -m msgstore"
