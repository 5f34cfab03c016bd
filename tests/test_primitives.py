"""The hand-written primitives of the core: Reply, the alarm clock, the mailbox's box,
and the nursery that lets a block's own exception out as itself."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from msgstore import Database, Role, open_message_service
from msgstore._alarm_clock import Alarm, AlarmClock
from msgstore._nursery import open_owned_nursery
from msgstore._reply import Reply

# -- Reply -------------------------------------------------------------------------------


async def test_reply_wait_returns_the_value_set_later() -> None:
    reply: Reply[int] = Reply()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _set_soon(reply, 7))
        assert await reply.wait() == 7


async def _set_soon(reply: Reply[int], value: int) -> None:
    await trio.lowlevel.checkpoint()
    reply.set(value)


async def test_reply_wait_raises_the_error_it_failed_with() -> None:
    reply: Reply[int] = Reply()
    reply.fail(KeyError("x"))
    with pytest.raises(KeyError):
        await reply.wait()


async def test_a_cancelled_wait_withdraws_the_request_and_a_late_answer_is_ignored() -> None:
    reply: Reply[int] = Reply()
    with trio.move_on_after(0) as scope:
        await reply.wait()
    assert scope.cancelled_caught
    assert reply.withdrawn and not reply.pending
    reply.set(1)  # the actor checks ``withdrawn`` first; a late answer does nothing


async def test_an_answer_given_before_the_cancellation_is_returned_not_cancelled() -> None:
    reply: Reply[int] = Reply()
    reply.set(3)
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await reply.wait() == 3  # the request was carried out: no Cancelled
    assert not reply.withdrawn


# -- the alarm clock ---------------------------------------------------------------------


class Sleeper:
    def __init__(self, clock: AlarmClock) -> None:
        self.alarm: Alarm | None = None
        self.rung: list[float] = []
        self.clock = clock

    def on_alarm(self) -> None:
        self.rung.append(trio.current_time())


async def test_the_clock_rings_each_sleeper_at_its_earliest_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = AlarmClock()
    a, b = Sleeper(clock), Sleeper(clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        start = trio.current_time()
        clock.set_alarm(a, start + 2)
        clock.set_alarm(a, start + 1)  # earlier: replaces
        clock.set_alarm(a, start + 5)  # later: the earlier one still rings
        clock.set_alarm(b, start + 3)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [t - start for t in a.rung] == [1]
    assert [t - start for t in b.rung] == [3]


async def test_replaced_alarms_are_compacted_so_the_heap_stays_bounded() -> None:
    clock = AlarmClock()
    sleepers = [Sleeper(clock) for _ in range(10)]
    for i in range(10_000):
        clock.set_alarm(sleepers[i % 10], 1e9 - i)  # each earlier than the last
    assert len(clock) <= 2 * len(sleepers) + 64 + 1
    clock.cancel_alarm(sleepers[0])
    assert sleepers[0].alarm is None
    assert math.isfinite(sleepers[1].alarm.when)  # type: ignore[union-attr]


# -- the owned nursery -------------------------------------------------------------------


async def test_the_blocks_own_exception_comes_out_as_itself() -> None:
    with pytest.raises(ValueError, match="mine"):
        async with open_owned_nursery():
            raise ValueError("mine")


async def test_a_background_failure_stays_a_group() -> None:
    async def fail() -> None:
        raise RuntimeError("background")

    with pytest.RaisesGroup(RuntimeError):
        async with open_owned_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()


async def test_exceptions_from_the_service_block_come_out_as_themselves(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    with pytest.raises(ValueError, match="caller's own"):
        async with open_message_service(db) as svc:
            await svc.create(session_id, Role.ASSISTANT)
            raise ValueError("caller's own")
    with pytest.raises(KeyboardInterrupt):
        async with open_message_service(db) as svc:
            raise KeyboardInterrupt
