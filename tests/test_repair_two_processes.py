"""Repair against a live service in another process: a real child holds a lease and
claims a message it is "streaming" (``tests/repair_child.py``). Repair here must leave
it alone while the child lives, and finish it once the child is SIGKILLed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_msgstore

import msgstore
from msgstore import FinishReason

CHILD = Path(__file__).resolve().parent / "repair_child.py"


class Child:
    """The child process and what it said it holds."""

    def __init__(self, proc: subprocess.Popen[str], said: dict[str, Any]) -> None:
        self.proc = proc
        self.message_id: str = said["message"]
        self.owner: str = said["owner"]
        self.lock: str = said["lock"]

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no finally, no release
        self.proc.wait()


@pytest.fixture
def session_id(db_path: Path) -> str:
    with msgstore.connect(db_path) as db:
        return db.create_session("two processes").id


@pytest.fixture
def child(db_path: Path, session_id: str) -> Iterator[Child]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db_path), session_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()  # it holds the lease and the claim once it speaks
        assert line, f"the child ended before it was ready (exit {proc.wait()})"
        yield Child(proc, json.loads(line))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_repair_refuses_a_message_another_live_process_streams(db_path: Path, child: Child) -> None:
    with msgstore.connect(db_path) as db:
        before = db.stored_message(child.message_id)
        report = msgstore.repair(db, grace=0)  # grace 0: only the lease protects it
        assert [s.message_id for s in report.skipped] == [child.message_id]
        assert "live service" in report.skipped[0].reason
        assert not report.changed
        assert db.stored_message(child.message_id) == before
    assert os.path.exists(child.lock)


def test_repair_finishes_the_message_once_its_process_is_killed(
    db_path: Path, child: Child
) -> None:
    with msgstore.connect(db_path) as db:
        assert msgstore.repair(db, grace=0).skipped
        child.kill()
        # The default grace: a dead owner's claim needs no waiting.
        report = msgstore.repair(db)
        assert [f.message_id for f in report.finished] == [child.message_id]
        assert report.finished[0].owner == child.owner
        assert report.finished[0].tool_calls_marked_finished == ("call-live",)
        assert [t.tool_call_ids for t in report.tool_results] == [("call-live",)]
        assert report.dead_owners == (child.owner,)
        assert report.stale_claims == 1
        message = db.stored_message(child.message_id)
        assert message.finish_reason() is FinishReason.CANCELED
        count = "SELECT count(*) FROM msgstore_claims"
        assert db.connection.execute(count).get == 0
    assert not os.path.exists(child.lock)


def test_a_clean_exit_releases_the_lease(db_path: Path, child: Child) -> None:
    assert child.proc.stdin is not None
    child.proc.stdin.close()  # the child releases its lease and exits
    assert child.proc.wait() == 0
    assert not os.path.exists(child.lock)
    with msgstore.connect(db_path) as db:
        con = db.connection
        assert con.execute("SELECT count(*) FROM msgstore_claims").get == 0
        assert con.execute("SELECT count(*) FROM msgstore_owners").get == 0
        # Unclaimed now, and just written: the grace keeps repair away...
        report = msgstore.repair(db)
        assert [s.message_id for s in report.skipped] == [child.message_id]
        assert "unclaimed" in report.skipped[0].reason
        # ... until the caller says nothing runs.
        assert [f.message_id for f in msgstore.repair(db, grace=0).finished] == [child.message_id]


def test_cli_repair_skips_a_live_stream_then_finishes_it_after_a_kill(
    db_path: Path, child: Child
) -> None:
    live = run_msgstore("repair", "--db", db_path, "--grace", "0")
    assert "nothing to repair" in live.stdout
    assert f"skipped      {child.message_id}" in live.stdout
    assert "streamed by a live service" in live.stdout

    child.kill()
    dry = run_msgstore("repair", "--db", db_path, "--dry-run")
    assert "would finish 1 message" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout

    done = run_msgstore("repair", "--db", db_path)
    assert f"finished     {child.message_id}" in done.stdout
    assert "add 1 tool result in 1 new tool message" in done.stdout
    assert "remove 1 stale claim and 1 dead service" in done.stdout
    again = run_msgstore("repair", "--db", db_path)
    assert "nothing to repair" in again.stdout
