"""Cancellation at every task step, and KeyboardInterrupt inside an actor and the final flush.

The sweep runs a fixed streaming scenario (creates, deltas, terminal changes, flushes, a
delete) and cancels the scope around the service after the k-th task step, counted by a
``trio.abc.Instrument``, for every k up to the scenario's length. After each run: the
file is intact; every message row holds exactly one state the caller passed in (writes
are all or nothing), at least every state acknowledged and every state accepted (the
final flush writes what was buffered), and nothing after the newest one attempted; a
message whose ``create`` was cut short holds its empty creation state.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from conftest import long_sweeps
from scenario import Track, create_tracks, drive, flush_all, integrity, open_plain, stored_parts

import msgstore
from msgstore import Database, MessageNotFound, open_message_service

pytestmark = pytest.mark.reliability


class CancelAtStep(trio.abc.Instrument):
    """Cancels ``scope`` just before the ``k``-th task step of the run (or the first step
    after it once the scope exists)."""

    def __init__(self, k: float) -> None:
        self.k = k
        self.steps = 0
        self.scope: trio.CancelScope | None = None
        self.fired_at: int | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.fired_at is None and self.steps >= self.k and self.scope is not None:
            self.scope.cancel()
            self.fired_at = self.steps


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    with msgstore.connect(path) as db:
        db.create_session("cancel", id="s1")
    return path


@attrs.define
class Run:
    steps: int
    fired: bool
    tracks: list[Track]
    deleted: set[str]  # deletes that returned
    deleting: set[str]  # deletes that were called (may or may not have happened)


def run_scenario(template: Path, path: Path, k: float, debounce: float) -> Run:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, path)
    instrument = CancelAtStep(k)
    tracks: list[Track] = []
    deleted: set[str] = set()
    deleting: set[str] = set()

    async def main() -> None:
        rng = random.Random(1)
        with msgstore.connect(path) as db, trio.CancelScope() as scope:
            instrument.scope = scope
            async with open_message_service(db, debounce=debounce, idle_timeout=0.2) as svc:
                for _ in range(4):
                    tracks.extend(await create_tracks(svc, "s1", rng, 1, 12))
                await drive(svc, tracks, rng, pauses=(0, 0.005, 0.02, 0.3), flush_chance=0.15)
                victim = tracks[-1].id
                deleting.add(victim)
                await svc.delete(victim)
                deleted.add(victim)
                await flush_all(svc, tracks)
            instrument.scope = None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[instrument])
    return Run(instrument.steps, instrument.fired_at is not None, tracks, deleted, deleting)


def check(path: Path, run: Run, where: str) -> None:
    with open_plain(path) as con:
        assert integrity(con) == "ok", where
        stored = stored_parts(con)
    known = {t.id for t in run.tracks}
    for id, text in stored.items():
        if id not in known:
            assert text == "[]", f"{where}: message {id} whose create was cut short holds {text}"
    for track in run.tracks:
        found = stored.get(track.id)
        if found is None:
            assert track.id in run.deleting, f"{where}: row of {track.id} missing"
            continue
        assert track.id not in run.deleted, f"{where}: deleted {track.id} written back"
        index = track.index_of.get(found)
        assert index is not None, f"{where}: {track.id} holds a state never passed in: {found}"
        assert index <= track.attempted, f"{where}: {track.id} holds a state never passed in"
        assert index >= track.durable, f"{where}: {track.id} lost acknowledged state"
        # The final flush writes everything accepted, acknowledged or not.
        assert index >= track.returned, f"{where}: {track.id} lost accepted state"


@pytest.mark.parametrize("debounce", [0.033, 0.0])
def test_cancelling_at_every_step_keeps_every_accepted_state(
    template: Path, tmp_path: Path, debounce: float
) -> None:
    path = tmp_path / "cancel.db"
    dry = run_scenario(template, path, math.inf, debounce)
    check(path, dry, "uncancelled run")
    total = dry.steps
    stride = 1 if long_sweeps() else max(1, total // 80)
    points = 0
    k = 1
    while True:
        run = run_scenario(template, path, k, debounce)
        check(path, run, f"cancelled at step {k}")
        if not run.fired:
            break
        points += 1
        k += stride if k <= total else 1
    print(f"REPORT cancel debounce={debounce} steps={total} points={points} lost=0")


# -- KeyboardInterrupt -------------------------------------------------------------------


def interrupting(db: Database, when: Callable[[str], bool]) -> None:
    """Make ``db.write_parts`` raise KeyboardInterrupt (once) when ``when(id)`` says so."""
    real = db.write_parts
    fired: list[str] = []

    def write_parts(id: str, parts_json: str, finished_at: int | None) -> bool:
        if not fired and when(id):
            fired.append(id)
            raise KeyboardInterrupt
        return real(id, parts_json, finished_at)

    db.write_parts = write_parts  # type: ignore[method-assign]


def buffered_run(db_path: Path, interrupt_in: str) -> tuple[list[msgstore.Message], bool]:
    """Three messages with buffered state; KeyboardInterrupt in an actor's timed write
    (``actor``) or in the final flush (``final``). Returns the accepted states."""
    accepted: list[msgstore.Message] = []
    closing = [False]

    async def main() -> None:
        with msgstore.connect(db_path) as db:
            db.create_session("ki", id="s1")
            async with open_message_service(db, debounce=1.0) as svc:
                messages = [await svc.create("s1", "assistant") for _ in range(3)]
                if interrupt_in == "actor":
                    interrupting(db, lambda id: id == messages[0].id)
                else:
                    interrupting(db, lambda id: closing[0])
                for n, msg in enumerate(messages):
                    msg.append_content(f"buffered {n}")
                    await svc.update(msg)
                    accepted.append(msg.clone())
                if interrupt_in == "actor":
                    # Message 0's window ends first; its write raises in its actor.
                    await trio.sleep(2)
                closing[0] = True

    raised = False
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseException as exc:  # KeyboardInterrupt, perhaps in a group
        raised = _holds_keyboard_interrupt(exc)
        if not raised:
            raise
    return accepted, raised


def _holds_keyboard_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_holds_keyboard_interrupt(e) for e in exc.exceptions)
    return False


def test_keyboard_interrupt_in_an_actor_propagates_and_buffered_state_is_written(
    db_path: Path,
) -> None:
    accepted, raised = buffered_run(db_path, "actor")
    assert raised
    with msgstore.connect(db_path) as db, open_plain(db_path) as con:
        assert integrity(con) == "ok"
        # Every buffered state, the interrupted message's included, was written on the
        # way out: the interrupt came before its write reached SQLite.
        assert [db.stored_message(m.id).parts for m in accepted] == [m.parts for m in accepted]


def test_keyboard_interrupt_in_the_final_flush_propagates_and_the_others_are_written(
    db_path: Path,
) -> None:
    accepted, raised = buffered_run(db_path, "final")
    assert raised
    with msgstore.connect(db_path) as db, open_plain(db_path) as con:
        assert integrity(con) == "ok"
        stored = [db.stored_message(m.id) for m in accepted]
    # The interrupted write left its message as it was (all or nothing) ...
    interrupted = [s for s, m in zip(stored, accepted, strict=True) if s.parts != m.parts]
    assert len(interrupted) <= 1
    assert all(s.parts == [] for s in interrupted)
    # ... and did not stop the final flush from writing the other messages.
    assert sum(s.parts == m.parts for s, m in zip(stored, accepted, strict=True)) >= 2


async def test_delete_cancelled_midway_never_leaves_state_written_back(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    with msgstore.connect(db_path) as db:
        db.create_session("del", id="s1")
        async with open_message_service(db, debounce=1.0) as svc:
            msg = await svc.create("s1", "assistant")
            msg.append_content("pending")
            await svc.update(msg)
            with trio.move_on_after(0):
                await svc.delete(msg.id)
        # Whether or not the delete happened, the pending state is not written over it.
        try:
            stored = db.stored_message(msg.id)
        except MessageNotFound:
            return
        assert stored.parts in ([], msg.parts)
