"""The actor service on a real SQLite file under Trio's mock clock (SPEC §3, issue #3)."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
import trio
import trio.testing

import msgstore
from msgstore import (
    Database,
    EventType,
    FinishReason,
    Message,
    MessageNotFound,
    Role,
    TextContent,
    ToolCall,
    open_message_service,
)
from msgstore.testing import row_now

# -- helpers ---------------------------------------------------------------------------


class WriteCounter:
    """Counts writes of a message's parts as SQLite sees them (TEMP triggers): UPDATEs
    of ``messages.parts`` (folds) and rows added to the journal (windows)."""

    def __init__(self, db: Database) -> None:
        db.install_feed()
        con = db.connection
        con.execute("CREATE TEMP TABLE IF NOT EXISTS parts_writes (n INTEGER NOT NULL)")
        con.execute("DELETE FROM temp.parts_writes")
        con.execute("INSERT INTO temp.parts_writes VALUES (0)")
        con.execute(
            "CREATE TEMP TRIGGER IF NOT EXISTS count_parts_writes AFTER UPDATE OF parts "
            "ON main.messages BEGIN UPDATE parts_writes SET n = n + 1; END"
        )
        con.execute(
            "CREATE TEMP TRIGGER IF NOT EXISTS count_journal_writes AFTER INSERT "
            "ON main.msgstore_journal BEGIN UPDATE parts_writes SET n = n + 1; END"
        )
        self._con = con

    @property
    def count(self) -> int:
        row = self._con.execute("SELECT n FROM temp.parts_writes").fetchone()
        assert row is not None
        return int(row[0])


# -- 1, 2, 3: the window ---------------------------------------------------------------


async def test_five_deltas_in_one_window_give_one_write_and_one_event(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=0.033) as svc, svc.subscribe() as events:
        msg = await svc.create(session_id, Role.ASSISTANT)
        assert events.receive_nowait().type is EventType.CREATED
        # The new message's count in its session's row is a change of the session.
        assert events.receive_nowait().kind == "session"
        for token in ["a", "b", "c", "d", "e"]:
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.005)
        assert counter.count == 0, "written before the window ended"
        assert row_now(db_path, msg.id).content().text == ""
        await trio.sleep(0.033)
        assert counter.count == 1
        event = events.receive_nowait()
        assert event.type is EventType.UPDATED
        assert event.payload.content().text == "abcde"
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()
        assert row_now(db_path, msg.id).content().text == "abcde"


async def test_window_is_not_restarted_by_later_updates(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        start = trio.current_time()
        for k in range(100):
            await trio.sleep_until(start + k * 0.010)
            msg.append_content("x")
            await svc.update(msg)
        writes_during_stream = counter.count
    # One second at one write per 33 ms window (updates every 10 ms: a write every
    # 40 ms of stream, since the window opens at the first update after a write).
    assert 24 <= writes_during_stream <= 31


async def test_update_just_after_a_timed_write_is_written_in_the_next_window(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("first")
        await svc.update(msg)
        await trio.sleep(0.0331)
        assert counter.count == 1
        msg.append_content(" second")
        await svc.update(msg)
        # No further call: the window alone must write it.
        await trio.sleep(0.034)
        assert counter.count == 2
        assert row_now(db_path, msg.id).content().text == "first second"


# -- 4, 5: terminal writes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["finish", "tool_call_added", "tool_call_finished", "reasoning_finished"],
)
async def test_terminal_update_is_written_before_update_returns(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    change: str,
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_reasoning_content("thinking")
        msg.add_tool_call(ToolCall(id="t1", name="view"))
        await svc.update(msg)  # the tool call is new: written at once
        before = trio.current_time()
        if change == "finish":
            msg.add_finish(FinishReason.END_TURN)
        elif change == "tool_call_added":
            msg.add_tool_call(ToolCall(id="t2", name="edit"))
        elif change == "tool_call_finished":
            msg.finish_tool_call("t1")
        else:
            msg.finish_thinking()
        await svc.update(msg)
        assert trio.current_time() == before
        assert row_now(db_path, msg.id).parts == msg.parts


@pytest.mark.parametrize("delta", ["text", "reasoning", "tool_input"])
async def test_deltas_alone_are_not_terminal(
    autojump_clock: trio.testing.MockClock,
    db: Database,
    session_id: str,
    db_path: Path,
    delta: str,
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.add_tool_call(ToolCall(id="t1", name="view"))
        await svc.update(msg)
        written = row_now(db_path, msg.id).parts
        if delta == "text":
            msg.append_content("more")
        elif delta == "reasoning":
            msg.append_reasoning_content("more")
        else:
            msg.append_tool_call_input("t1", '{"a"')
        await svc.update(msg)
        assert row_now(db_path, msg.id).parts == written
        assert svc.statistics().buffered == 1


async def test_zero_debounce_writes_every_update_before_it_returns(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=0) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for i in range(5):
            msg.append_content(str(i))
            await svc.update(msg)
            assert row_now(db_path, msg.id).content().text == "01234"[: i + 1]
        assert counter.count == 5


# -- 6: event delivery modes ----------------------------------------------------------------


async def test_a_reader_that_falls_behind_gets_each_messages_newest_state_once(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        async with svc.subscribe() as events:
            for token in ["a", "b", "c"]:
                msg.append_content(token)
                await svc.update(msg)
                await trio.sleep(0.05)  # one timed write each, nobody reads
            msg.add_tool_call(ToolCall(id="t", name="view"))
            await svc.update(msg)  # terminal
            stats = svc.statistics()
            assert stats.conflated == 3
            assert stats.drops == 0
            (event,) = [events.receive_nowait()]
            assert event.type is EventType.UPDATED
            assert event.payload.content().text == "abc"
            assert event.payload.tool_calls()[0].id == "t"
            assert event.seq == svc.last_seq
            with pytest.raises(trio.WouldBlock):
                events.receive_nowait()


async def test_created_then_updated_unread_coalesce_into_created(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc, svc.subscribe() as events:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("hello")
        await svc.update(msg)
        await trio.sleep(0.05)
        session_event, first = events.receive_nowait(), events.receive_nowait()
        assert session_event.kind == "session"  # its message count, changed before
        assert (first.type, first.kind, first.payload.content().text) == (
            EventType.CREATED,
            "message",
            "hello",
        )
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()


# -- 7: flush -----------------------------------------------------------------------------------


async def test_flush_writes_pending_state_and_a_second_flush_writes_nothing(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("pending")
        await svc.update(msg)
        await svc.flush(msg.id)
        assert counter.count == 1
        assert row_now(db_path, msg.id).content().text == "pending"
        await svc.flush(msg.id)
        assert counter.count == 1


async def test_flush_all_writes_every_message(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=3600) as svc:
        messages = [await svc.create(session_id, Role.ASSISTANT) for _ in range(3)]
        for i, msg in enumerate(messages):
            msg.append_content(f"m{i}")
            await svc.update(msg)
        await svc.flush_all()
        assert svc.statistics().buffered == 0
        for i, msg in enumerate(messages):
            assert row_now(db_path, msg.id).content().text == f"m{i}"


async def test_flush_during_a_write_returns_after_it_and_newer_state(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    # A second connection holds the write lock, so the actor's timed write is under
    # way (waiting on Trio time) when flush is called.
    async with open_message_service(db, debounce=0.01) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        blocker = apsw.Connection(str(db_path))
        blocker.execute("BEGIN IMMEDIATE")
        msg.append_content("one")
        await svc.update(msg)
        await trio.sleep(0.02)  # the timed write has started and is waiting
        msg.append_content(" two")
        await svc.update(msg)

        async def release() -> None:
            await trio.sleep(0.5)
            blocker.execute("COMMIT")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release)
            await svc.flush(msg.id)
            assert trio.current_time() >= 0.5
            assert row_now(db_path, msg.id).content().text == "one two"
        blocker.close()


# -- 8: coalesced and immediate runs agree --------------------------------------------------


async def _scripted_run(db: Database, session_id: str, debounce: float) -> Message:
    async with open_message_service(db, debounce=debounce) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT, model="m", provider="p")
        for piece in ["Let ", "me ", "think"]:
            msg.append_reasoning_content(piece)
            await svc.update(msg)
        msg.finish_thinking()
        await svc.update(msg)
        for piece in ["Hello", ", ", "<world> & ", "ünï"]:
            msg.append_content(piece)
            await svc.update(msg)
            await trio.sleep(0.01)
        msg.add_tool_call(ToolCall(id="call-1", name="view"))
        await svc.update(msg)
        for piece in ['{"path"', ':"a.go"', "}"]:
            msg.append_tool_call_input("call-1", piece)
            await svc.update(msg)
        msg.finish_tool_call("call-1")
        await svc.update(msg)
        msg.add_finish(FinishReason.TOOL_USE)
        await svc.update(msg)
        return msg


async def test_coalesced_and_immediate_runs_leave_identical_rows(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finish and reasoning times are wall-clock seconds: the two runs must not straddle
    # a second boundary.
    monkeypatch.setattr("msgstore._content._now", lambda: 1_700_000_000)
    rows = []
    for debounce in (0.033, 0.0):
        path = tmp_path / f"run-{debounce}.db"
        with msgstore.connect(path) as db:
            session = db.create_session("s")
            msg = await _scripted_run(db, session.id, debounce)
            rows.append(
                db.connection.execute(
                    "SELECT parts, finished_at FROM messages WHERE id = ?", (msg.id,)
                ).fetchone()
            )
    assert rows[0] == rows[1]


# -- 9: delete ----------------------------------------------------------------------------------


async def test_delete_drops_pending_state_and_publishes_deleted_last(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    counter = WriteCounter(db)
    async with open_message_service(db, debounce=0.033) as svc, svc.subscribe() as events:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.add_tool_call(ToolCall(id="t", name="view"))
        await svc.update(msg)  # terminal: written, event published
        msg.append_content("never written")
        await svc.update(msg)
        writes = counter.count
        await svc.delete(msg.id)
        await svc.flush_all()
        await trio.sleep(1)
        assert counter.count == writes
        with pytest.raises(MessageNotFound):
            await svc.get(msg.id)
        with pytest.raises(MessageNotFound):
            await svc.update(msg)
        types = []
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                break
            if event.kind == "message":
                types.append(event.type)
        # Nobody read in between: one event for the message, its newest change.
        assert types == [EventType.DELETED]
    assert db.connection.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_delete_of_an_unknown_id_raises_message_not_found(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    async with open_message_service(db) as svc:
        with pytest.raises(MessageNotFound):
            await svc.delete("no-such-id")


async def test_delete_session_messages_deletes_each_message(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc, svc.subscribe() as events:
        for _ in range(3):
            await svc.create(session_id, Role.USER, [TextContent("hi")])
        await svc.delete_session_messages(session_id)
        assert await svc.list(session_id) == []
        deleted = 0
        while True:
            try:
                deleted += events.receive_nowait().type is EventType.DELETED
            except trio.WouldBlock:
                break
        assert deleted == 3


# -- 10: read your writes ----------------------------------------------------------------------


async def test_reads_return_buffered_state_while_the_file_lags(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("buffered")
        await svc.update(msg)
        assert (await svc.get(msg.id)).content().text == "buffered"
        assert [m.content().text for m in await svc.list(session_id)] == ["buffered"]
        last = await svc.get_last_assistant_message(session_id)
        assert last is not None and last.content().text == "buffered"
        assert row_now(db_path, msg.id).content().text == ""
        await trio.sleep(0.034)
        assert row_now(db_path, msg.id).content().text == "buffered"


async def test_update_keeps_its_own_copy_of_the_message(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("accepted")
        await svc.update(msg)
        msg.append_content(" but not given to update")
        assert (await svc.get(msg.id)).content().text == "accepted"


async def test_create_adds_stop_finish_to_non_assistant_messages(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        user = await svc.create(session_id, Role.USER, [TextContent("hi")])
        assistant = await svc.create(session_id, Role.ASSISTANT)
    assert user.finish_reason() == FinishReason.STOP
    assert user.finish_part() == msgstore.Finish(reason=FinishReason.STOP, time=0)
    assert not assistant.is_finished()
    row = db.connection.execute(
        "SELECT finished_at FROM messages WHERE id = ?", (user.id,)
    ).fetchone()
    assert row == (None,)


# -- 11: shutdown ------------------------------------------------------------------------------


async def test_leaving_the_scope_writes_buffered_state_and_closes_subscriptions(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    seen: list[EventType] = []
    async with trio.open_nursery() as nursery, open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with svc.subscribe() as events:
                task_status.started()
                async for event in events:
                    seen.append(event.type)

        await nursery.start(listen)
        msg.append_content("left in the buffer")
        await svc.update(msg)
        # The listener's loop ended by itself when the service closed.
    assert row_now(db_path, msg.id).content().text == "left in the buffer"
    assert seen == [EventType.UPDATED]


async def test_cancelling_the_scope_still_writes_buffered_state(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    with trio.CancelScope() as cancel:
        async with open_message_service(db, debounce=3600) as svc:
            msg = await svc.create(session_id, Role.ASSISTANT)
            msg.append_content("saved on cancel")
            await svc.update(msg)
            cancel.cancel()
            await trio.sleep_forever()
    assert cancel.cancelled_caught
    assert row_now(db_path, msg.id).content().text == "saved on cancel"


async def test_calls_after_the_service_closed_raise_service_closed(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
    with pytest.raises(msgstore.ServiceClosed):
        await svc.update(msg)
    with pytest.raises(msgstore.ServiceClosed):
        await svc.create(session_id, Role.ASSISTANT)


async def test_lower_tier_starts_in_a_callers_nursery(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with trio.open_nursery() as nursery:
        svc = await nursery.start(msgstore.run_message_service, db)
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("lower tier")
        await svc.update(msg)
        nursery.cancel_scope.cancel()
    assert row_now(db_path, msg.id).content().text == "lower tier"


# -- actors: retirement and isolation -----------------------------------------------------------


async def test_idle_actors_retire_and_come_back_on_the_next_update(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=0.033, idle_timeout=1.0) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("a")
        await svc.update(msg)
        assert svc.statistics().live_actors == 1
        await trio.sleep(2)
        assert svc.statistics().live_actors == 0
        msg.append_content("b")
        await svc.update(msg)
        await svc.flush(msg.id)
        assert row_now(db_path, msg.id).content().text == "ab"


async def test_update_with_a_non_part_is_refused_and_accepted_state_kept(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("good")
        await svc.update(msg)
        bad = msg.clone()
        bad.parts.append("not a part")  # type: ignore[arg-type]
        with pytest.raises(msgstore.InvalidUpdate, match=r"parts\[1\]"):
            await svc.update(bad)
        assert (await svc.get(msg.id)).content().text == "good"


async def test_update_of_an_id_with_no_row_is_refused(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        ghost = Message(id="no-such-id", session_id=session_id, role=Role.ASSISTANT)
        with pytest.raises(MessageNotFound):
            await svc.update(ghost)


async def test_terminal_update_does_not_wait_for_a_subscriber_that_never_reads(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        async with svc.subscribe() as events:
            for i in range(20):
                msg.add_tool_call(ToolCall(id=f"t{i}", name="view"))
                before = trio.current_time()
                await svc.update(msg)  # terminal: written before it returns
                assert trio.current_time() == before
            assert len(row_now(db_path, msg.id).tool_calls()) == 20
            assert events.pending == 1  # one queued state for the message, the newest
            assert len(events.receive_nowait().payload.tool_calls()) == 20


async def test_events_come_in_seq_order_of_each_items_newest_change(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        a = await svc.create(session_id, Role.ASSISTANT)
        b = await svc.create(session_id, Role.ASSISTANT)
        async with svc.subscribe() as events:
            a.add_tool_call(ToolCall(id="1", name="view"))
            await svc.update(a)
            b.add_tool_call(ToolCall(id="2", name="view"))
            await svc.update(b)
            a.finish_tool_call("1")
            await svc.update(a)  # a's newest change is now after b's
            seen = [events.receive_nowait() for _ in range(2)]
            assert [e.id for e in seen] == [b.id, a.id]
            assert seen[0].seq is not None and seen[1].seq is not None
            assert seen[0].seq < seen[1].seq
            assert seen[1].payload.tool_calls()[0].finished


# -- the alarm clock: windows that end together, and a request at retirement time -----


async def test_a_failing_row_in_a_shared_window_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        messages = [await svc.create(session_id, Role.ASSISTANT) for _ in range(3)]
        for i, msg in enumerate(messages):
            msg.append_content(f"text {i}")
            await svc.update(msg)
        # Another program deletes the middle row while its window is open.
        other = apsw.Connection(str(db_path))
        other.execute("DELETE FROM messages WHERE id = ?", (messages[1].id,))
        other.close()
        await trio.sleep(0.05)
        assert row_now(db_path, messages[0].id).content().text == "text 0"
        assert row_now(db_path, messages[2].id).content().text == "text 2"
        assert svc.statistics().buffered == 0
        with pytest.raises(MessageNotFound):
            await svc.get(messages[1].id)


async def test_request_queued_when_the_idle_deadline_passes_is_answered(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    # Regression: an actor past its idle deadline with a request queued once spun in
    # an expired cancel scope instead of answering it.
    async with open_message_service(db, debounce=0.033, idle_timeout=1.0) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("x")
        await svc.update(msg)
        written_at = trio.current_time() + 0.033
        await trio.sleep_until(written_at + 1.0)
        with trio.fail_after(5):
            await svc.delete(msg.id)
        with pytest.raises(MessageNotFound):
            await svc.get(msg.id)
