"""Supervision: an actor that fails with a bug is restarted with its buffer; one that
keeps failing is stopped, its callers told, and the others never notice."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from msgstore import (
    ActorFailed,
    Database,
    FinishReason,
    RestartPolicy,
    Role,
    TextContent,
    open_message_service,
)
from msgstore.testing import row_now


class FlakyText(TextContent):
    """A text part whose encoding raises (an injected bug) while ``failures`` > 0."""

    failures: ClassVar[int] = 0

    def __getattribute__(self, name: str) -> Any:
        if name == "text" and type(self).failures > 0:
            type(self).failures -= 1
            raise RuntimeError("injected bug in encoding")
        return super().__getattribute__(name)


def flaky(text: str, failures: int) -> FlakyText:
    FlakyText.failures = 0
    part = FlakyText(text)
    FlakyText.failures = failures
    return part


async def test_an_actor_whose_write_fails_once_is_restarted_with_its_buffer(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        bystander = await svc.create(session_id, Role.ASSISTANT)
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("accepted before the bug")
        await svc.update(msg)
        msg.parts.append(flaky("flaky", failures=1))
        msg.add_finish(FinishReason.END_TURN)
        await svc.update(msg)  # terminal: the first write raises, the restart writes it
        stored = row_now(db_path, msg.id)
        assert [type(p).__name__ for p in stored.parts] == ["TextContent", "TextContent", "Finish"]
        assert stored.content().text == "accepted before the bug"
        stats = svc.statistics()
        assert (stats.restarts, stats.stopped_actors) == (1, 0)
        # The other message never noticed.
        bystander.append_content("fine")
        bystander.add_finish(FinishReason.END_TURN)
        await svc.update(bystander)
        assert row_now(db_path, bystander.id).parts == bystander.parts
    assert "restarting it with its buffer" in caplog.text


async def test_an_actor_that_keeps_failing_is_stopped_and_its_caller_gets_the_error(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "msgstore")
    policy = RestartPolicy(max_restarts=2, within=10.0)
    with pytest.raises(ActorFailed) as at_exit:
        async with open_message_service(db, debounce=3600, restart_policy=policy) as svc:
            bystander = await svc.create(session_id, Role.ASSISTANT)
            msg = await svc.create(session_id, Role.ASSISTANT)
            msg.parts.append(flaky("never written", failures=10**6))
            msg.add_finish(FinishReason.END_TURN)
            with pytest.raises(ActorFailed) as raised:
                await svc.update(msg)
            assert raised.value.message_id == msg.id
            assert isinstance(raised.value.__cause__, RuntimeError)
            stats = svc.statistics()
            assert (stats.restarts, stats.stopped_actors) == (2, 1)
            assert stats.live_actors == 0  # stopped, and forgotten
            # Every other message carries on.
            bystander.append_content("fine")
            bystander.add_finish(FinishReason.END_TURN)
            await svc.update(bystander)
            assert row_now(db_path, bystander.id).parts == bystander.parts
            FlakyText.failures = 0
    # Its unwritten state was lost: leaving the block says so too.
    assert at_exit.value.message_id == msg.id
    assert row_now(db_path, msg.id).parts == []
    assert "was stopped" in caplog.text


async def test_failures_spread_wider_than_the_policy_window_never_stop_the_actor(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    policy = RestartPolicy(max_restarts=1, within=1.0)
    async with open_message_service(db, debounce=3600, restart_policy=policy) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for i in range(4):
            msg.parts.append(flaky(f"flaky {i}", failures=1))
            await svc.update(msg)
            await svc.flush(msg.id)  # fails once, restarted, written
            await trio.sleep(2.0)  # the next failure is outside the window
        assert svc.statistics().restarts == 4
        assert svc.statistics().stopped_actors == 0
        assert len(row_now(db_path, msg.id).parts) == len(msg.parts)


async def test_a_timed_write_that_fails_once_is_written_after_the_restart(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=0.05) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.parts.append(flaky("window", failures=1))
        await svc.update(msg)
        await trio.sleep(0.1)
        assert [p.text for p in row_now(db_path, msg.id).parts] == ["window"]  # type: ignore[union-attr]
        assert svc.statistics().restarts == 1


def test_restart_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        RestartPolicy(within=0)
