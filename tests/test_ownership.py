"""Who writes a message, and when: its actor's task, and nothing else.

These replace the tests of the old inline-write contract: a terminal update is still
durable when ``update`` returns, but the write happened in the message's actor, which
the caller woke with a request and waited for.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import TaskSteps

from msgstore import (
    Database,
    EventType,
    FinishReason,
    MessageNotFound,
    Role,
    ToolCall,
    open_message_service,
)
from msgstore.testing import row_now

SQLITE_INSERT, SQLITE_DELETE, SQLITE_UPDATE = 18, 9, 23


class WriterLog:
    """Records, through an apsw update hook, which Trio task wrote each messages row."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.writes: list[tuple[int, int, trio.lowlevel.Task]] = []  # (op, rowid, task)
        db.connection.set_update_hook(self._hook)

    def _hook(self, op: int, database: str, table: str, rowid: int) -> None:
        if table == "messages":
            self.writes.append((op, rowid, trio.lowlevel.current_task()))

    def ids(self) -> dict[int, str]:
        rows = self.db.connection.execute("SELECT rowid, id FROM messages").fetchall()
        return {int(r): str(i) for r, i in rows}

    def messages_by_task(self, ids: dict[int, str]) -> dict[trio.lowlevel.Task, set[str]]:
        out: dict[trio.lowlevel.Task, set[str]] = defaultdict(set)
        for _, rowid, task in self.writes:
            out[task].add(ids[rowid])
        return out


async def test_every_write_of_a_message_runs_in_a_task_that_serves_only_that_message(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    log = WriterLog(db)
    ids: dict[int, str] = {}
    callers: set[trio.lowlevel.Task] = set()
    async with open_message_service(db, debounce=0.033, idle_timeout=0.2) as svc:
        callers.add(trio.lowlevel.current_task())

        async def stream(n: int) -> None:
            callers.add(trio.lowlevel.current_task())
            msg = await svc.create(session_id, Role.ASSISTANT)
            ids.update(log.ids())
            for i in range(30):  # window writes
                msg.append_content(f"{n}.{i} ")
                await svc.update(msg)
                await trio.sleep(0.005)
            msg.add_tool_call(ToolCall(id=f"call-{n}", name="view"))  # terminal write
            await svc.update(msg)
            msg.finish_tool_call(f"call-{n}")
            await svc.update(msg)
            msg.append_content("tail")
            await svc.update(msg)
            await svc.flush(msg.id)  # a flush
            await trio.sleep(0.5)  # the actor retires; the next update starts another
            msg.add_finish(FinishReason.END_TURN)
            await svc.update(msg)
            if n == 0:
                await svc.delete(msg.id)  # the DELETE
            else:
                msg.append_content(" after the finish")  # left for the final flush
                await svc.update(msg)

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(stream, n)
        await svc.flush_all()
    by_task = log.messages_by_task(ids)
    assert len(log.writes) > 4 * 10
    # Every task that wrote a messages row wrote rows of one message only ...
    assert all(len(messages) == 1 for messages in by_task.values()), by_task
    # ... and no caller's task ever wrote one.
    assert not callers & set(by_task)
    ops = {op for op, _, _ in log.writes}
    assert ops == {SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE}


async def test_terminal_update_is_durable_on_return_and_the_caller_did_not_write_it(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        log = WriterLog(db)
        msg.append_content("done")
        msg.add_finish(FinishReason.END_TURN)
        await svc.update(msg)
        assert row_now(db_path, msg.id).parts == msg.parts
        writers = {task for _, _, task in log.writes}
        assert writers and trio.lowlevel.current_task() not in writers


async def test_tokens_in_a_window_do_not_wake_the_actor(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=1.0) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        with TaskSteps.counting() as steps:
            for i in range(200):
                msg.append_content(f"t{i} ")
                await svc.update(msg)
        # 200 tokens: this task ran, and (at most) the new actor once as it started;
        # no task was woken per token.
        others = steps.others()
        assert len(others) <= 2, [t.name for t in others]
        assert row_now(db_path, msg.id).parts == []
        await trio.sleep(1.0)
        await trio.testing.wait_all_tasks_blocked()  # the actor's turn at the deadline
        assert row_now(db_path, msg.id).parts == msg.parts


async def test_a_subscriber_that_never_reads_does_not_delay_writes(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with (
        open_message_service(db, debounce=0.033) as svc,
        svc.subscribe() as events,
    ):
        msg = await svc.create(session_id, Role.ASSISTANT)
        for i in range(20):  # 20 terminal changes the subscriber never takes
            msg.add_tool_call(ToolCall(id=f"c{i}", name="view"))
            await svc.update(msg)
        start = trio.current_time()
        msg.append_content("one token")
        await svc.update(msg)
        await trio.sleep(0.033)
        await trio.testing.wait_all_tasks_blocked()  # the actor's turn at the deadline
        assert row_now(db_path, msg.id).content().text == "one token"
        assert trio.current_time() - start == pytest.approx(0.033)
        assert events.pending == 2  # the message's newest state, and its session's


async def test_a_terminal_update_racing_a_delete_raises_message_not_found(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("x")
        await svc.update(msg)
        outcome: list[BaseException | None] = []

        async def finish() -> None:
            msg.add_finish(FinishReason.END_TURN)
            try:
                await svc.update(msg)
                outcome.append(None)
            except MessageNotFound as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(svc.delete, msg.id)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(finish)
        assert len(outcome) == 1 and isinstance(outcome[0], MessageNotFound)


async def test_a_cancelled_create_writes_no_row_and_a_returned_one_has_its_row(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc, svc.subscribe() as events:
        with trio.CancelScope() as scope:
            scope.cancel()
            await svc.create(session_id, Role.ASSISTANT)
        assert scope.cancelled_caught
        msg = await svc.create(session_id, Role.ASSISTANT)
        assert [m.id for m in db.stored_messages(session_id)] == [msg.id]
        created = [e async for e in _take(events, 1)]
        assert [(e.type, e.payload.id) for e in created] == [(EventType.CREATED, msg.id)]


async def _take(events: trio.MemoryReceiveChannel, n: int):  # type: ignore[no-untyped-def]
    for _ in range(n):
        yield await events.receive()


async def test_more_waiting_callers_than_the_channel_holds_all_get_answers(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    from msgstore._mailbox import LETTERS

    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("flush me")
        await svc.update(msg)
        done = 0

        async def flusher() -> None:
            nonlocal done
            await svc.flush(msg.id)
            done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(3 * LETTERS):
                nursery.start_soon(flusher)
        assert done == 3 * LETTERS
        assert row_now(db_path, msg.id).parts == msg.parts


async def test_the_alarm_heap_stays_bounded_by_live_messages(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.01, idle_timeout=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for i in range(3000):
            msg.append_content(f"{i}")
            await svc.update(msg)
            await trio.sleep(0.02)  # one window write per update
        assert svc.statistics().writes >= 2900
        assert len(svc._clock) <= 2 * svc.statistics().live_actors + 64
