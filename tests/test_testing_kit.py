"""``msgstore.testing`` and its pytest plugin: the kit users test their own code with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import msgstore.testing
from msgstore import (
    Event,
    EventType,
    FinishReason,
    MessageService,
    Role,
    TextContent,
    ToolCall,
    pytest_plugin,
)
from msgstore.testing import (
    EventRecorder,
    Harness,
    assert_row,
    open_event_recorder,
    open_test_service,
    row_now,
)

# The plugin's fixtures, as `pytest_plugins = ["msgstore.pytest_plugin"]` gives them.
msgstore_harness = pytest_plugin.msgstore_harness
msgstore_service = pytest_plugin.msgstore_service
msgstore_session_id = pytest_plugin.msgstore_session_id
msgstore_events = pytest_plugin.msgstore_events


@pytest.fixture
def msgstore_options() -> dict[str, Any]:
    """Overrides the plugin's: how a user sets the service's options."""
    return {"debounce": 0.5}


# -- open_test_service --------------------------------------------------------------------


async def test_open_test_service_runs_a_service_on_a_fresh_file_with_a_session(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as one, open_test_service(tmp_path) as two:
        assert one.path != two.path and one.path.parent == tmp_path
        assert one.db.get_session(one.session_id).title == "test session"
        message = await one.create(Role.USER, [TextContent("hi")])
        assert message.session_id == one.session_id
        one.assert_row(message.id, text="hi", finish_reason=FinishReason.STOP)
        assert one.service.debounce == 0.033
    assert one.db.closed and one.service.closed


async def test_leaving_the_block_writes_what_is_buffered(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path, debounce=3600) as h:
        message = await h.create()
        message.append_content("late")
        await h.service.update(message)
        assert row_now(h.path, message.id).content().text == ""
    assert row_now(h.path, message.id).content().text == "late"


# -- row_now / assert_row ------------------------------------------------------------------


async def test_row_now_reads_the_file_not_the_service_buffer(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path, debounce=1.0) as h:
        message = await h.create()
        message.append_content("abc")
        await h.service.update(message)
        assert (await h.service.get(message.id)).content().text == "abc"
        assert row_now(h.db, message.id).content().text == ""
        with pytest.raises(AssertionError) as info:
            h.assert_row(message.id, text="abc")
        assert "text: file has '', expected 'abc'" in str(info.value)
        assert "await service.flush(id)" in str(info.value)
        await trio.sleep(1.001)  # just past the window: at 1.0 the order of wake-ups is open
        assert h.assert_row(message.id, text="abc") == row_now(h, message.id)


async def test_assert_row_checks_only_the_fields_given_and_names_each_mismatch(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h:
        message = await h.create(model="m")
        message.append_reasoning_content("hmm")
        message.add_tool_call(ToolCall(id="c1", name="ls"))
        await h.service.update(message)  # terminal: a tool call was added
        assert_row(h.path, message.id, reasoning="hmm", finish_reason=None, text="")
        assert_row(h.path, message.id, tool_calls=[ToolCall(id="c1", name="ls")])
        assert_row(h.path, message.id, parts=message.parts, tool_results=[])
        with pytest.raises(AssertionError) as info:
            assert_row(h.path, message.id, reasoning="no", finish_reason="end_turn")
        assert "reasoning: file has 'hmm', expected 'no'" in str(info.value)
        assert "finish_reason: file has None, expected 'end_turn'" in str(info.value)
        await h.service.delete(message.id)
        assert assert_row(h.path, message.id, exists=False) is None
        with pytest.raises(AssertionError, match="no row for message"):
            assert_row(h.path, message.id)


# -- EventRecorder ----------------------------------------------------------------------------


async def test_recorder_waits_for_matching_events_recorded_or_to_come(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        message = await h.create()
        created = await events.wait_for(EventType.CREATED, message_id=message.id)
        assert created.payload.id == message.id
        start = trio.current_time()
        for token in ["a", "b"]:
            message.append_content(token)
            await h.service.update(message)
        event = await events.wait_for(
            "updated", message_id=message.id, predicate=lambda m: m.content().text == "ab"
        )
        assert trio.current_time() - start == pytest.approx(0.033)  # one window
        mark = len(events)
        message.add_finish(FinishReason.END_TURN)
        await h.service.update(message)
        final = await events.wait_for(EventType.UPDATED, since=mark)
        assert final is not event and final.payload.is_finished()
        assert events.types(message.id) == [EventType.CREATED, EventType.UPDATED, EventType.UPDATED]
        assert events.of(message.id) == events.events
        assert events.find(EventType.DELETED) is None


async def test_wait_for_returns_the_next_match_not_one_it_returned_before(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        message = await h.create()
        message.append_content("a")
        await h.service.update(message)
        first = await events.wait_for(EventType.UPDATED)
        assert first.payload.content().text == "a"
        message.append_content("b")
        await h.service.update(message)
        second = await events.wait_for(EventType.UPDATED)  # not `first` again
        assert second is not first and second.payload.content().text == "ab"
        # Recorded before the call but not returned yet: still "next", on every run
        # (however far the recorder task had got when update() returned).
        message.add_finish(FinishReason.END_TURN)
        await h.service.update(message)  # terminal: published before it returns
        final = await events.wait_for(EventType.UPDATED, message_id=message.id)
        assert final.payload.is_finished()
        assert events.types() == [EventType.CREATED] + [EventType.UPDATED] * 3


async def test_wait_for_since_looks_back_from_an_index_or_after_an_event(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        message = await h.create()
        created = await events.wait_for(EventType.CREATED)
        for token in ["a", "b"]:
            message.append_content(token)
            await h.service.update(message)
            await events.wait_for(EventType.UPDATED)
        a, b = events.events[1:]
        assert await events.wait_for(since=0) is created
        assert await events.wait_for(EventType.UPDATED, since=0) is a
        assert await events.wait_for(EventType.UPDATED, since=a) is b
        assert await events.wait_for(since=created) is a  # since= moves the cursor too
        assert await events.wait_for() is b
        mark = len(events)
        start = trio.current_time()
        message.append_content("c")
        await h.service.update(message)
        c = await events.wait_for(EventType.UPDATED, since=mark)
        assert c.payload.content().text == "abc"
        assert trio.current_time() - start == pytest.approx(0.033)
        assert events.find(EventType.UPDATED) is a and events.find(EventType.UPDATED, since=b) is c
        with pytest.raises(ValueError, match="did not record"):
            await events.wait_for(since=Event(EventType.CREATED, message))
        with pytest.raises(ValueError, match="since must be"):
            events.find(since=-1)


async def test_wait_for_names_an_earlier_match_it_skipped(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        message = await h.create()
        message.add_finish(FinishReason.END_TURN)
        await h.service.update(message)
        await events.wait_for(EventType.UPDATED)
        with pytest.raises(AssertionError) as info:
            await events.wait_for(EventType.CREATED, timeout=1)
        text = str(info.value)
        assert "no event matching type=created within 1 s; recorded from index 2" in text
        assert f"an earlier event matches (index 0: created {message.id}" in text
        assert "pass since=0" in text
        assert (await events.wait_for(EventType.CREATED, since=0)).payload.id == message.id


def test_testing_all_names_every_public_helper() -> None:
    defined = {
        name
        for name, value in vars(msgstore.testing).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "msgstore.testing"
    }
    assert sorted(msgstore.testing.__all__) == sorted(defined)
    assert all(hasattr(msgstore.testing, name) for name in msgstore.testing.__all__)


async def test_wait_for_fails_after_its_timeout_listing_what_it_saw(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        message = await h.create()
        start = trio.current_time()
        with pytest.raises(AssertionError) as info:
            await events.wait_for(EventType.DELETED, message_id=message.id, timeout=5)
        assert trio.current_time() - start == pytest.approx(5)
        text = str(info.value)
        assert f"no event matching type=deleted, message_id='{message.id}' within 5 s" in text
        assert f"created {message.id} (assistant, 0 parts" in text


async def test_wait_for_fails_at_once_when_the_service_closes(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_test_service(tmp_path) as h, open_event_recorder(h.service) as events:
        h.service.broker.close()  # what the end of the service's scope does
        start = trio.current_time()
        with pytest.raises(AssertionError, match="within the service closed"):
            await events.wait_for(EventType.CREATED)
        assert trio.current_time() == start and events.closed


# -- the pytest plugin -----------------------------------------------------------------------


async def test_plugin_fixtures_share_one_service_with_the_overridden_options(
    autojump_clock: trio.testing.MockClock,
    msgstore_harness: Harness,
    msgstore_service: MessageService,
    msgstore_session_id: str,
    msgstore_events: EventRecorder,
) -> None:
    assert msgstore_service is msgstore_harness.service
    assert msgstore_session_id == msgstore_harness.session_id
    assert msgstore_service.debounce == 0.5
    message = await msgstore_service.create(msgstore_session_id, Role.ASSISTANT)
    message.append_content("x")
    await msgstore_service.update(message)
    start = trio.current_time()
    await msgstore_events.wait_for(EventType.UPDATED, message_id=message.id)
    assert trio.current_time() - start == pytest.approx(0.5)
    assert len(msgstore_events) == 2  # created was recorded too: subscribed before the test
