"""Process kill: a child streams through the real service and is SIGKILLed at random.

Each round starts ``crash_child.py`` on the same file (so every round after the first
also opens a file a killed process left behind), kills it at a random moment (now and
then before it is even ready, while it may be migrating), reopens the file and checks
the promises, for the messages of every round so far:

* every acknowledged state is there: the row of a ``create`` that returned; for a
  terminal ``update`` or a ``flush`` that returned, that state or a later one;
* the file never holds a state the child had not passed to ``update``;
* a non-terminal update is missing only if it was accepted less than one window plus
  one write before the kill (``SLACK`` stands in for "one write" on a loaded machine;
  the worst age actually seen is reported);
* ``integrity_check`` is ``ok``.

States are read as msgstore reads them (``stored_parts``: the rows with the delta
journal applied): a killed child leaves its last windows in the journal, and the next
round's service folds them into the rows when it opens. At the end a service opens
the file with ``repair`` (every child ran without it) and must leave no unfinished
message and no tool call without a result; every row is then whole for crush too.

The child uses real time (it is a real process); the parent only waits, with timeouts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from conftest import long_sweeps
from crash_child import steps_for
from scenario import Track, integrity, open_plain, stored_parts

import msgstore

pytestmark = pytest.mark.reliability

CHILD = Path(__file__).resolve().parent / "crash_child.py"
WINDOW = 0.033  # the child's debounce (the service default)
# "Plus the time of one write": a write that triggers a WAL checkpoint fsyncs, which on
# a slow CI disk (or with the child descheduled) can take far longer than the window.
SLACK = 1.0


@attrs.define
class Known:
    """What the parent learnt about one message from the child's acknowledgements."""

    track: Track
    round: int
    durable: int = 0  # created
    accepted: list[tuple[int, float]] = attrs.Factory(list)  # (state index, when)

    @property
    def last(self) -> int:
        return max((i for i, _ in self.accepted), default=0)


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            break  # a line cut short by the kill (cannot happen with one write, but)
    return lines


def run_round(db_path: Path, out: Path, seed: int, rng: random.Random) -> tuple[float, bool]:
    """Start a child, kill it at a random moment; return (kill time, whether it finished)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with out.open("w") as stdout:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db_path), str(seed)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
        )
    try:
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.8))  # may land in start-up or migration
        else:
            deadline = time.monotonic() + 60
            while not out.read_text().startswith('{"ev": "ready"'):
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                assert time.monotonic() < deadline, "child never became ready"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 2.5))
        killed_at = time.monotonic()
        finished = child.poll() is not None
        if not finished:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        if finished:
            assert child.returncode == 0, child.stderr.read().decode() if child.stderr else ""
        return killed_at, finished
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()


def learn(lines: list[dict[str, Any]], seed: int, known: dict[str, Known]) -> None:
    for line in lines:
        ev = line["ev"]
        if ev == "created":
            dummy = msgstore.Message(id=line["id"], session_id="-", role="assistant")
            known[line["id"]] = Known(Track.build(dummy, steps_for(seed, line["m"])), seed)
        elif ev == "acc":
            entry = known[line["id"]]
            entry.accepted.append((line["i"], line["t"]))
            if line["term"]:
                entry.durable = max(entry.durable, line["i"])
        elif ev == "flush":
            entry = known[line["id"]]
            entry.durable = max(entry.durable, line["i"])


@attrs.define
class Tally:
    rounds: int = 0
    killed: int = 0
    acked: int = 0
    lost: int = 0
    late: int = 0  # non-terminal states missing though older than the bound
    worst_age: float = 0.0  # oldest non-terminal state that a kill took
    journal_left: int = 0  # journal rows a killed child left (the next round folds them)
    rounds_with_journal: int = 0


def check(
    db_path: Path, known: dict[str, Known], round: int, killed_at: float, tally: Tally
) -> None:
    with msgstore.connect(db_path):  # recovers the WAL (and migrates) as an application would
        pass
    with open_plain(db_path) as con:
        assert integrity(con) == "ok"
        stored = stored_parts(con)
        has_journal = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'msgstore_journal'"
        ).get
        left = con.execute("SELECT count(*) FROM msgstore_journal").get if has_journal else 0
    tally.journal_left += left
    tally.rounds_with_journal += bool(left)
    for id, entry in known.items():
        text = stored.get(id)
        assert text is not None, f"row of created message {id} missing"
        index = entry.track.index_of.get(text)
        assert index is not None, f"{id} holds a state never passed to update: {text[:100]}"
        assert index <= entry.last + 1, f"{id} holds state {index}, newest passed {entry.last + 1}"
        if index < entry.durable:
            tally.lost += 1
        if entry.round != round:
            continue  # the non-terminal bound is about this round's kill
        for i, when in entry.accepted:
            if i > index:
                age = killed_at - when
                tally.worst_age = max(tally.worst_age, age)
                if age > WINDOW + SLACK:
                    tally.late += 1


async def _open_with_repair(db: msgstore.Database) -> None:
    async with msgstore.open_message_service(db, repair=True):
        pass


def check_repaired(db_path: Path, known: dict[str, Known]) -> None:
    """After the last kill: a service's repair finishes every message; rows are whole."""
    with open_plain(db_path) as con:
        before = stored_parts(con)
    with msgstore.connect(db_path) as db:
        trio.run(_open_with_repair, db)
    report = msgstore.repair(db_path, dry_run=True, grace=0)
    assert not report.finished and not report.tool_results, str(report)
    with open_plain(db_path) as con:
        assert integrity(con) == "ok"
        after = stored_parts(con)
        plain = {str(i): str(p) for i, p in con.execute("SELECT id, parts FROM messages")}
    assert plain == after  # nothing left in the journal: crush reads every row whole
    for id, entry in known.items():
        message = msgstore.Message(id=id, session_id="-", role="assistant")
        repaired = message.with_parts(msgstore.decode_parts(after[id]))
        assert repaired.is_finished(), f"{id} left unfinished"
        had = msgstore.decode_parts(before[id])
        if before[id] != after[id]:  # repaired: it kept every part it had
            texts = [(type(p).__name__, getattr(p, "text", None)) for p in had]
            assert [(type(p).__name__, getattr(p, "text", None)) for p in repaired.parts][
                : len(had)
            ] == texts, id
        assert entry.track.id == id


def test_killed_process_loses_no_acknowledged_state(tmp_path: Path) -> None:
    rounds = 60 if long_sweeps() else 5
    db_path = tmp_path / "crash.db"
    rng = random.Random(20250424)
    known: dict[str, Known] = {}
    tally = Tally()
    for seed in range(rounds):
        out = tmp_path / f"round-{seed}.jsonl"
        killed_at, finished = run_round(db_path, out, seed, rng)
        lines = read_lines(out)
        learn(lines, seed, known)
        tally.rounds += 1
        tally.killed += not finished
        tally.acked += sum(1 for x in lines if x["ev"] in ("created", "flush") or x.get("term"))
        check(db_path, known, seed, killed_at, tally)
        assert tally.lost == 0, f"round {seed}: acknowledged states lost"
        assert tally.late == 0, f"round {seed}: a non-terminal state older than the bound lost"
    check_repaired(db_path, known)
    print(
        f"REPORT kill rounds={tally.rounds} killed={tally.killed} messages={len(known)} "
        f"acks={tally.acked} lost={tally.lost} late={tally.late} "
        f"journal_rows_left={tally.journal_left} in {tally.rounds_with_journal} rounds "
        f"worst_non_terminal_age_ms={tally.worst_age * 1000:.1f}"
    )
