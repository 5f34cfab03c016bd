"""Races between callers and actors, found by a red-team pass over the rebuilt core.

Each test pins the correct behaviour of a case that once went wrong: a full channel,
a cancelled request, concurrent session usage, a delete during a flush, retries,
unhashable ids, and states handed over while the actors write their last words.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
import trio
import trio.testing
from conftest import TaskSteps, release_after

import msgstore
from msgstore import Database, FinishReason, Role, open_message_service
from msgstore._mailbox import LETTERS
from msgstore.testing import row_now


class RealTimeout(Exception):
    pass


@pytest.fixture
def real_time_guard() -> Iterator[None]:
    """A hang guard, not a timing check: a synchronous spin (no checkpoint) cannot be
    stopped by ``trio.fail_after``, so SIGALRM ends it after generous real time."""

    def on_alarm(signum: int, frame: object) -> None:
        raise RealTimeout("test spun for 30 s of real time (a loop with no checkpoint)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


async def _fill_channel_while_locked(
    svc: msgstore.MessageService,
    nursery: trio.Nursery,
    locker: apsw.Connection,
    msg: msgstore.Message,
) -> None:
    """Leave msg's actor parked in a busy wait with its channel full of flushes."""
    msg.append_content("a")
    await svc.update(msg)  # token: window opens
    locker.execute("BEGIN IMMEDIATE")
    await trio.sleep(0.05)  # the window write hits the lock; the actor busy-waits
    for _ in range(LETTERS):
        nursery.start_soon(svc.flush, msg.id)
    await trio.sleep(0.0001)  # every flush is in the channel now


# -- a due box that finds the channel full ---------------------------------------------


async def test_a_due_box_that_finds_the_channel_full_is_sent_later_without_spinning(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
    real_time_guard: None,
) -> None:
    with trio.fail_after(60):
        async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as n:
            msg = await svc.create(session_id, Role.ASSISTANT)
            await _fill_channel_while_locked(svc, n, locker, msg)
            msg.append_content("b")
            await svc.update(msg)  # token: a new box, due at the (past) window end
            await trio.sleep(0.1)  # the alarm rings: channel full
            locker.execute("COMMIT")
            await svc.flush(msg.id)
            assert row_now(db_path, msg.id).content().text == "ab"


# -- a request cancelled while it waits for room ---------------------------------------


async def test_a_request_cancelled_while_waiting_for_room_leaves_its_state_to_the_window(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
) -> None:
    with trio.fail_after(60):
        async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as n:
            msg = await svc.create(session_id, Role.ASSISTANT)
            await _fill_channel_while_locked(svc, n, locker, msg)
            msg.append_content("b")
            msg.add_finish(FinishReason.END_TURN)
            # Terminal: the request finds the channel full and waits for room;
            # the caller gives up (its own timeout), the state stays accepted.
            with trio.move_on_after(0.0005):
                await svc.update(msg)
            assert (await svc.get(msg.id)).is_finished()
            locker.execute("COMMIT")
            await trio.sleep(0.5)  # the window passes many times over
            await svc.flush(msg.id)
            assert row_now(db_path, msg.id).is_finished(), "flush returned, state not written"


async def test_a_request_cancelled_while_waiting_for_room_never_makes_reads_go_back(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
) -> None:
    with trio.fail_after(60):
        async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as n:
            msg = await svc.create(session_id, Role.ASSISTANT)
            await _fill_channel_while_locked(svc, n, locker, msg)
            msg.append_content("b")
            msg.add_finish(FinishReason.END_TURN)
            with trio.move_on_after(0.0005):
                await svc.update(msg)
            locker.execute("COMMIT")
            await trio.sleep(5)  # idle: the actor retires
            got = await svc.get(msg.id)
            assert got.is_finished() and got.content().text == "ab", "read went backwards"


# -- concurrent add_usage under a lock ------------------------------------------------


async def test_concurrent_add_usage_calls_each_count(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
) -> None:
    with trio.fail_after(60):
        async with open_message_service(db) as svc, trio.open_nursery() as n:
            locker.execute("BEGIN IMMEDIATE")
            n.start_soon(lambda: svc.sessions.add_usage(session_id, prompt_tokens=10))
            n.start_soon(lambda: svc.sessions.add_usage(session_id, prompt_tokens=10))
            await trio.sleep(0.5)
            locker.execute("COMMIT")
        assert (await svc.sessions.get(session_id)).prompt_tokens == 20


# -- flush_all while another task deletes ---------------------------------------------


async def test_flush_all_succeeds_while_another_task_deletes_a_message(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
) -> None:
    with trio.fail_after(60):
        async with open_message_service(db, debounce=0.033) as svc, trio.open_nursery() as n:
            msg = await svc.create(session_id, Role.ASSISTANT)
            msg.append_content("x")
            await svc.update(msg)
            await svc.flush(msg.id)  # written; the actor stays live (idle_timeout)
            locker.execute("BEGIN IMMEDIATE")
            n.start_soon(svc.delete, msg.id)  # another task deletes: waits on the lock
            await trio.sleep(0.01)
            n.start_soon(release_after, locker, 0.5)
            # Nothing of msg is pending: flush_all has nothing to report.
            await svc.flush_all()


# -- tokens while a failed write waits for its retry ----------------------------------


async def test_tokens_during_retry_backoff_do_not_wake_the_actor(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(id: str, parts: object) -> None:
        raise msgstore.StorageError("disk full (injected)")

    with trio.fail_after(60):
        async with open_message_service(db, debounce=0.033) as svc:
            msg = await svc.create(session_id, Role.ASSISTANT)
            monkeypatch.setattr(db, "update_message", disk_full)
            msg.append_content("a")
            await svc.update(msg)
            await trio.sleep(0.04)  # the window write failed; retry in 50 ms
            with TaskSteps.counting() as steps:
                for i in range(100):
                    msg.append_content(f"t{i} ")
                    await svc.update(msg)
            others = steps.others()
            monkeypatch.undo()
            assert len(others) <= 4, f"{len(others)} steps of other tasks for 100 tokens"


# -- ids of the wrong type ------------------------------------------------------------


async def test_delete_with_unhashable_id_raises_invalid_update(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        with pytest.raises(msgstore.InvalidUpdate):
            await svc.delete(["not", "an", "id"])  # type: ignore[arg-type]


# -- states handed over while the actors write their last words -----------------------


@pytest.mark.parametrize("state", ["token", "terminal"])
async def test_a_state_handed_over_during_last_words_is_accepted_and_written(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    locker: apsw.Connection,
    state: str,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as outer:
            with trio.CancelScope() as scope:
                async with open_message_service(db, debounce=0.033) as svc:
                    msg = await svc.create(session_id, Role.ASSISTANT)
                    msg.append_content("a")
                    await svc.update(msg)
                    locker.execute("BEGIN IMMEDIATE")
                    outer.start_soon(release_after, locker, 0.5)
                    scope.cancel()  # e.g. the app is stopping this agent turn
                    # The usual shielded cleanup of a cancelled turn:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.1)  # the actor's last words wait on the lock
                        assert not svc.closed
                        if state == "token":
                            msg.append_content("b")
                        else:
                            msg.add_finish(FinishReason.CANCELED)
                        await svc.update(msg)  # accepted: returns normally, not ServiceClosed
            # The lock went after 0.5 s, well within shutdown_timeout (5 s).
        stored = row_now(db_path, msg.id)
        if state == "token":
            assert stored.content().text == "ab"
        else:
            assert stored.is_finished()
