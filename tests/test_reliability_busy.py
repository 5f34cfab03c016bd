"""A second connection holds the write lock (``BEGIN IMMEDIATE``): writes wait on Trio time.

The service sets its own connection's busy timeout to 0 (SQLite's busy handler would
sleep on the Trio thread and freeze every task) and retries with backoff on Trio's clock
up to ``busy_timeout``. These tests hold the lock from a plain apsw connection, release
it from a task after a while, and check that nothing the service accepted is lost.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import apsw
import pytest
import trio
import trio.testing
from conftest import release_after
from scenario import create_tracks, drive, open_plain, stored_parts, verdict

import msgstore
from msgstore import Database, DatabaseBusy, MessageNotFound, open_message_service

pytestmark = pytest.mark.reliability


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    with msgstore.connect(db_path) as database:
        database.create_session("busy", id="s1")
        yield database


async def test_terminal_update_waits_for_the_lock_and_lands_when_it_is_released(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, locker: apsw.Connection
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        msg = await svc.create("s1", "assistant")
        msg.append_content("streamed while locked")
        await svc.update(msg)
        locker.execute("BEGIN IMMEDIATE")
        nursery.start_soon(release_after, locker, 2.0)
        start = trio.current_time()
        msg.add_finish("end_turn")
        await svc.update(msg)  # terminal: returns once written
        waited = trio.current_time() - start
        assert 2.0 <= waited < 2.2
        # The wait was on Trio time: other tasks ran all along.
        assert ticks >= 190
        assert svc.statistics().busy_waits > 0
        with open_plain(db_path) as con:
            assert stored_parts(con)[msg.id] == msgstore.encode_parts(msg.parts)
        nursery.cancel_scope.cancel()


async def test_buffered_states_wait_for_the_lock_and_land_without_further_calls(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, locker: apsw.Connection
) -> None:
    rng = random.Random(3)
    async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as nursery:
        tracks = await create_tracks(svc, "s1", rng, 3, 40)
        locker.execute("BEGIN IMMEDIATE")
        nursery.start_soon(release_after, locker, 5.0)
        await drive(svc, tracks, rng, pauses=(0.01, 0.05))
        await trio.sleep(6)
        with open_plain(db_path) as con:
            result = verdict(stored_parts(con), tracks)
        assert not result.lost and not result.foreign
        assert all(result.stored[t.id] == len(t.states) - 1 for t in tracks)


async def test_lock_held_past_busy_timeout_raises_database_busy_and_keeps_the_state(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, locker: apsw.Connection
) -> None:
    async with open_message_service(db, debounce=0.033, busy_timeout=1.0) as svc:
        msg = await svc.create("s1", "assistant")
        locker.execute("BEGIN IMMEDIATE")
        msg.append_content("kept")
        msg.add_finish("end_turn")
        with pytest.raises(DatabaseBusy):
            await svc.update(msg)
        assert (await svc.get(msg.id)).parts == msg.parts
        locker.execute("COMMIT")
        # No further call: the actor's retry writes it.
        await trio.sleep(5)
        with open_plain(db_path) as con:
            assert stored_parts(con)[msg.id] == msgstore.encode_parts(msg.parts)


async def test_create_waits_for_the_lock(
    autojump_clock: trio.testing.MockClock, db: Database, locker: apsw.Connection
) -> None:
    async with open_message_service(db) as svc, trio.open_nursery() as nursery:
        locker.execute("BEGIN IMMEDIATE")
        nursery.start_soon(release_after, locker, 1.0)
        start = trio.current_time()
        msg = await svc.create("s1", "user")
        assert trio.current_time() - start >= 1.0
        assert db.stored_message(msg.id) == msg


async def test_delete_waits_for_the_lock(
    autojump_clock: trio.testing.MockClock, db: Database, locker: apsw.Connection
) -> None:
    async with open_message_service(db) as svc, trio.open_nursery() as nursery:
        msg = await svc.create("s1", "user")
        locker.execute("BEGIN IMMEDIATE")
        nursery.start_soon(release_after, locker, 1.0)
        start = trio.current_time()
        await svc.delete(msg.id)
        assert trio.current_time() - start >= 1.0
        with pytest.raises(MessageNotFound):
            db.stored_message(msg.id)


async def test_final_flush_waits_for_the_lock_within_the_shutdown_timeout(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, locker: apsw.Connection
) -> None:
    async with trio.open_nursery() as nursery:
        async with open_message_service(db, debounce=3600, shutdown_timeout=5) as svc:
            msg = await svc.create("s1", "assistant")
            msg.append_content("written at shutdown")
            await svc.update(msg)
            locker.execute("BEGIN IMMEDIATE")
            nursery.start_soon(release_after, locker, 1.0)
        with open_plain(db_path) as con:
            assert stored_parts(con)[msg.id] == msgstore.encode_parts(msg.parts)


async def test_caller_outside_the_service_nursery_is_answered_when_the_service_stops(
    autojump_clock: trio.testing.MockClock, db: Database, locker: apsw.Connection
) -> None:
    # The lower tier: the service runs in one nursery, a caller in another. Stopping
    # the service while the caller waits on a write that cannot get the lock must
    # answer the caller, not leave it waiting for ever.
    outcome: list[object] = []
    answered = trio.Event()
    async with trio.open_nursery() as outer:
        service_nursery = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[msgstore.MessageService]) -> None:
            with service_nursery:
                await msgstore.run_message_service(
                    db, task_status=task_status, shutdown_timeout=0.5
                )

        svc = await outer.start(serve)
        msg = await svc.create("s1", "assistant")
        locker.execute("BEGIN IMMEDIATE")

        async def caller() -> None:
            msg.add_finish("end_turn")
            try:
                await svc.update(msg)
            except msgstore.MsgstoreError as exc:
                outcome.append(exc)
            else:
                outcome.append("returned")
            answered.set()

        outer.start_soon(caller)
        await trio.sleep(1)
        service_nursery.cancel()
        with trio.fail_after(60):
            await answered.wait()
    assert outcome[0] != "returned"
