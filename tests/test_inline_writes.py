"""Terminal writes done in the caller's task: what ``update`` does around them.

A terminal update is written before ``update`` returns, without a schedule point, so
its latency is the write's; it is a cancel point before the write; and a task that
writes inline many times in a row still yields now and then (the fairness guard).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import trio
import trio.testing

from msgstore import Database, FinishReason, Role, ToolCall, open_message_service
from msgstore._service import _INLINE_STREAK
from msgstore.testing import row_now


class Bystander:
    """A task that counts how often it gets to run while another task works."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> None:
        while True:
            await trio.lowlevel.checkpoint()
            self.runs += 1


async def test_terminal_update_returns_durable_without_letting_other_tasks_run(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=3600) as svc, trio.open_nursery() as nursery:
        msg = await svc.create(session_id, Role.ASSISTANT)
        bystander = Bystander()
        nursery.start_soon(bystander.run)
        await trio.lowlevel.checkpoint()  # the bystander is running
        msg.append_content("done")
        msg.add_finish(FinishReason.END_TURN)
        runs = bystander.runs
        await svc.update(msg)
        assert bystander.runs == runs, "update yielded to the scheduler after its write"
        assert row_now(db_path, msg.id).parts == msg.parts
        # A non-terminal update is still a full checkpoint.
        msg2 = await svc.create(session_id, Role.ASSISTANT)
        msg2.append_content("token")
        with trio.testing.assert_checkpoints():
            await svc.update(msg2)
        nursery.cancel_scope.cancel()


async def test_cancelled_terminal_update_writes_nothing_and_keeps_the_state(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("last words")
        msg.add_finish(FinishReason.END_TURN)
        with trio.CancelScope() as scope:
            scope.cancel()
            await svc.update(msg)
        assert scope.cancelled_caught, "a cancelled update must raise Cancelled"
        assert row_now(db_path, msg.id).parts == [], "written by a cancelled call"
        # Accepted all the same: the window writes it, as for any buffered state.
        assert (await svc.get(msg.id)).parts == msg.parts
        await trio.sleep(0.05)
        assert row_now(db_path, msg.id).parts == msg.parts


async def test_a_task_writing_inline_in_a_loop_still_lets_others_run(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    calls = 4 * _INLINE_STREAK
    async with open_message_service(db, debounce=3600) as svc, trio.open_nursery() as nursery:
        msg = await svc.create(session_id, Role.ASSISTANT)
        bystander = Bystander()
        nursery.start_soon(bystander.run)
        await trio.lowlevel.checkpoint()  # the bystander is running
        seen = [bystander.runs]
        for i in range(calls):
            msg.add_tool_call(ToolCall(id=f"t{i}", name="view"))  # terminal every time
            await svc.update(msg)
            seen.append(bystander.runs)
        # The longest stretch of calls during which the bystander never ran.
        longest = stretch = 0
        for before, after in itertools.pairwise(seen):
            stretch = stretch + 1 if after == before else 0
            longest = max(longest, stretch)
        # Every _INLINE_STREAK-th call yields; Trio may run this task at the end of
        # one batch and again at the start of the next, so others run at least once
        # per two streaks.
        assert longest < 2 * _INLINE_STREAK
        assert seen[-1] - seen[0] >= calls // _INLINE_STREAK - 1
        assert len(row_now(db_path, msg.id).tool_calls()) == calls
        nursery.cancel_scope.cancel()


async def test_inline_writes_of_different_tasks_do_not_add_up_to_a_yield(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    """Streams that finish together each return at once: the guard counts per task."""
    streams = 2 * _INLINE_STREAK
    async with open_message_service(db, debounce=3600) as svc:
        messages = [await svc.create(session_id, Role.ASSISTANT) for _ in range(streams)]
        returned_at: list[int] = []
        ticks = 0

        async def finish(i: int) -> None:
            messages[i].add_finish(FinishReason.END_TURN)
            before = ticks
            await svc.update(messages[i])
            returned_at.append(ticks - before)

        async def ticker() -> None:
            nonlocal ticks
            while len(returned_at) < streams:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            for i in range(streams):
                nursery.start_soon(finish, i)
        assert returned_at == [0] * streams
        for m in messages:
            assert row_now(db_path, m.id).is_finished()
