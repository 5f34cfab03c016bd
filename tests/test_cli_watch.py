"""``msgstore watch`` in a subprocess: it follows another process's writes live and
resumes from a seq; ``msgstore detach`` takes msgstore's tables out again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
from child_lines import Lines
from cli_run import run_msgstore

import msgstore
from msgstore import Role, TextContent, open_message_service


async def watch_until(
    path: Path, *args: str, done: Callable[[list[dict]], bool], write: object = None
) -> list[dict]:
    """Start ``msgstore watch --json``, run ``write`` once it listens, take lines until
    ``done`` says so, then stop it with SIGINT as a user's Ctrl-C would."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "msgstore", "watch", "--db", str(path), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines, errors = Lines(proc.stdout), Lines(proc.stderr)
    got = []
    try:
        with trio.fail_after(30):  # only a guard against a hang
            while "watching" not in await errors.next():
                pass  # it says so once it listens
            if write is not None:
                await write()  # type: ignore[operator]
            while not done(got):
                got.append(json.loads(await lines.next()))
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            code = await proc.wait()
        assert code in (0, 130), code
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()
        await proc.stderr.aclose()
    return got


async def test_watch_follows_another_processs_writes_and_resumes_from_a_seq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "watched.db"
    with msgstore.connect(path) as db:
        session = db.create_session("watched")

    async def write() -> None:
        with msgstore.connect(path) as db:
            async with open_message_service(db) as svc:
                msg = await svc.create(session.id, Role.USER, [TextContent("hello")])
                stored = await svc.sessions.get(session.id)
                await svc.sessions.save(attrs.evolve(stored, title="renamed"))
                await svc.delete(msg.id)

    def all_seen(got: list[dict]) -> bool:
        # Changes the watcher polled together conflate (created + deleted: deleted).
        deleted = any(r["kind"] == "message" and r["type"] == "deleted" for r in got)
        last_session = [r for r in got if r["kind"] == "session"][-1:]
        return deleted and bool(last_session) and last_session[0]["message_count"] == 0

    live = await watch_until(path, done=all_seen, write=write)
    assert all(isinstance(r["seq"], int) for r in live)
    assert [r["seq"] for r in live] == sorted(r["seq"] for r in live)
    titles = [r["title"] for r in live if r["kind"] == "session"]
    assert "renamed" in titles
    # Resume from before it all: the current state of each item changed since, once.
    replay = await watch_until(path, "--after", "0", done=lambda got: len(got) == 2)
    assert {(r["kind"], r["type"]) for r in replay} == {
        ("message", "deleted"),
        ("session", "updated"),
    }
    assert next(r for r in replay if r["kind"] == "session")["title"] == "renamed"


def test_watch_refuses_a_negative_seq(tmp_path: Path) -> None:
    proc = run_msgstore("watch", "--db", tmp_path / "x.db", "--after", "-1", ok=False)
    assert proc.returncode == 1
    assert "--after" in proc.stderr


def test_detach_leaves_crushs_schema_alone(crush_fixture: Path) -> None:
    def crush_objects() -> list[tuple[str, str]]:
        with msgstore.connect(crush_fixture, read_only=True) as db:
            rows = db.connection.execute(
                "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                "ORDER BY type, name"
            ).fetchall()
        return [(str(t), str(n)) for t, n in rows]

    before = crush_objects()
    with msgstore.connect(crush_fixture) as db:
        db.install_feed()
    assert crush_objects() != before
    proc = run_msgstore("detach", "--db", crush_fixture)
    assert "removed msgstore's change log" in proc.stdout
    assert crush_objects() == before
