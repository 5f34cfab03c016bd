"""The change feed (issue #11): numbered changes, resumes, reloads, other writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest
import trio
import trio.testing
from child_lines import Lines

import msgstore
from msgstore import (
    Database,
    Event,
    EventType,
    FinishReason,
    ReloadRequired,
    Role,
    Subscription,
    ToolCall,
    open_message_service,
)
from msgstore._feed_schema import LOG_KEEP


def drain(events: Subscription) -> list[Event]:
    got = []
    while True:
        try:
            got.append(events.receive_nowait())
        except trio.WouldBlock:
            return got


# In-process "other connections" use apsw, never the stdlib's sqlite3: two copies of
# SQLite in one process do not see each other's POSIX locks, and closing one may delete
# the WAL under the other. A different library runs in a child process below.


def crush_objects(path: Path) -> list[tuple[str, str, str | None]]:
    con = apsw.Connection(str(path))
    try:
        rows = con.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'msgstore%' "
            "ORDER BY type, name"
        ).fetchall()
    finally:
        con.close()
    return rows


# -- numbered changes -------------------------------------------------------------------


async def test_every_event_is_numbered_in_increasing_order(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    seen: list[Event] = []
    async with open_message_service(db, debounce=0.033) as svc, svc.subscribe() as events:
        messages = [await svc.create(session_id, Role.ASSISTANT) for _ in range(3)]
        seen += drain(events)
        for step in range(20):
            for i, msg in enumerate(messages):
                msg.append_content(f"{step}.{i} ")
                await svc.update(msg)
            await trio.sleep(0.02)
            seen += drain(events)
        messages[1].add_tool_call(ToolCall(id="t", name="view"))
        await svc.update(messages[1])
        await svc.delete(messages[2].id)
        await svc.sessions.save(await svc.sessions.get(session_id))
        seen += drain(events)
        last = svc.last_seq
    seqs = [e.seq for e in seen]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] == last
    assert {e.kind for e in seen} == {"message", "session"}


async def test_the_numbering_survives_a_restart_and_is_shared_by_connections(
    autojump_clock: trio.testing.MockClock, db_path: Path, session_id: str
) -> None:
    with msgstore.connect(db_path) as db:
        async with open_message_service(db) as svc:
            msg = await svc.create(session_id, Role.USER)
            first = svc.last_seq
    con = apsw.Connection(str(db_path))  # another connection
    with con:
        con.execute("UPDATE sessions SET title = 'renamed' WHERE id = ?", (session_id,))
    con.close()
    with msgstore.connect(db_path) as db:
        assert db.last_seq() == first + 1
        async with open_message_service(db) as svc, svc.subscribe(after=first) as events:
            (renamed,) = drain(events)
            assert (renamed.seq, renamed.kind, renamed.payload.title) == (
                first + 1,
                "session",
                "renamed",
            )
            await svc.delete(msg.id)
            assert [e.seq for e in drain(events)][-1] > first + 1


# -- resumes ------------------------------------------------------------------------------


async def test_a_resume_replays_each_changed_item_once_then_goes_on_live(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        done = await svc.create(session_id, Role.ASSISTANT)
        done.append_content("before")
        done.add_finish(FinishReason.END_TURN)
        await svc.update(done)
        gone = await svc.create(session_id, Role.ASSISTANT)
        mark = svc.last_seq  # a UI read its state up to here, then lost its connection
        streaming = await svc.create(session_id, Role.ASSISTANT)
        for token in ["a", "b", "c"]:
            streaming.append_content(token)
            await svc.update(streaming)
            await trio.sleep(0.05)  # three windows written
        await svc.delete(gone.id)
        async with svc.subscribe(after=mark) as events:
            replay = drain(events)
            streaming.append_content("d")
            await svc.update(streaming)
            await trio.sleep(0.05)
            live = drain(events)
    assert [(e.kind, e.id, e.type) for e in replay] == [
        ("message", streaming.id, EventType.CREATED),
        ("message", gone.id, EventType.DELETED),
        ("session", session_id, EventType.UPDATED),  # its message count, last changed
    ]
    assert replay[0].payload.content().text == "abc"  # the current state, once
    assert replay[1].payload is None  # a replayed delete has no state to show
    assert all(e.seq is not None and e.seq > mark for e in replay)
    assert [e.seq for e in replay] == sorted(e.seq for e in replay)  # type: ignore[type-var]
    assert [(e.id, e.payload.content().text) for e in live] == [(streaming.id, "abcd")]
    assert live[0].seq is not None and replay[-1].seq is not None
    assert live[0].seq > replay[-1].seq  # nothing twice, nothing in between missed


async def test_a_resume_at_the_newest_seq_replays_nothing(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        await svc.create(session_id, Role.USER)
        async with svc.subscribe(after=svc.last_seq) as events:
            assert drain(events) == []


async def test_a_resume_older_than_the_log_raises_reload_required_then_goes_on(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
    # crush alone writes the file for a while: more changes than the log keeps.
    con = apsw.Connection(str(db_path))
    with con:
        for _ in range(2 * LOG_KEEP + 1):
            con.execute("UPDATE messages SET parts = ? WHERE id = ?", ("[]", msg.id))
    con.close()
    async with open_message_service(db) as svc, svc.subscribe(after=1) as events:
        with pytest.raises(ReloadRequired) as raised:
            events.receive_nowait()
        assert raised.value.seq == svc.last_seq
        await svc.delete(msg.id)
        (deleted,) = [e for e in drain(events) if e.kind == "message"]
        assert deleted.type is EventType.DELETED


def test_the_log_stays_bounded_while_only_another_program_writes(
    db: Database, db_path: Path, session_id: str
) -> None:
    db.install_feed()
    msg = db.insert_message(session_id=session_id, role="assistant")
    con = apsw.Connection(str(db_path))
    with con:
        for i in range(2 * LOG_KEEP + 10):
            con.execute(
                "UPDATE messages SET parts = ? WHERE id = ?", (f"[]{' ' * (i % 3)}", msg.id)
            )
    count, oldest, newest = con.execute(
        "SELECT count(*), min(seq), max(seq) FROM msgstore_log"
    ).fetchone()
    con.close()
    assert count <= 2 * LOG_KEEP
    assert newest - oldest < 2 * LOG_KEEP
    assert db.oldest_resumable_seq() == oldest - 1


# -- what it adds to crush's file -------------------------------------------------------


async def test_the_feed_leaves_crushs_schema_as_it_was_and_detach_removes_it(
    autojump_clock: trio.testing.MockClock, crush_fixture: Path
) -> None:
    path = crush_fixture
    before = crush_objects(path)
    with msgstore.connect(path) as db:
        async with open_message_service(db):
            pass
        added = {
            r[0]
            for r in db.connection.execute(
                "SELECT name FROM sqlite_master WHERE name LIKE 'msgstore%'"
            )
        }
        assert {"msgstore_log", "msgstore_journal", "msgstore_message_updated"} <= added
        assert all(name.startswith("msgstore_") for name in added)
        db.remove_feed()
    assert crush_objects(path) == before
    con = apsw.Connection(str(path))
    query = "SELECT name FROM sqlite_master WHERE name LIKE 'msgstore%'"
    names = [r[0] for r in con.execute(query)]
    con.close()
    assert names == []


# -- other processes -------------------------------------------------------------------

_OTHER_WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("PRAGMA busy_timeout = 10000")
    session_id = sys.argv[2]
    con.execute(
        "INSERT INTO messages (id, session_id, role, parts, created_at, updated_at) "
        "VALUES ('from-script', ?, 'user', '[]', strftime('%s','now'), strftime('%s','now'))",
        (session_id,),
    )
    print("inserted", flush=True)
    sys.stdin.readline()
    con.execute(
        "UPDATE messages SET parts = ? WHERE id = 'from-script'",
        ('[{"type":"text","data":{"text":"hello from sqlite3"}}]',),
    )
    print("updated", flush=True)
    sys.stdin.readline()
    con.execute("DELETE FROM messages WHERE id = 'from-script'")
    print("deleted", flush=True)
    """
)


async def test_another_process_writes_reach_subscribers_as_events(
    db: Database, db_path: Path, session_id: str
) -> None:
    # Real time: the other process runs at its own pace; fail_after only guards a hang.
    got: list[Event] = []
    async with (
        open_message_service(db, poll_interval=0.01) as svc,
        svc.subscribe() as events,
    ):
        child = await trio.lowlevel.open_process(
            [sys.executable, "-c", _OTHER_WRITER, str(db_path), session_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        lines = Lines(child.stdout)
        try:
            with trio.fail_after(20):
                for step in ("inserted", "updated", "deleted"):
                    assert await lines.next() == step
                    while True:
                        event = await events.receive()
                        if event.kind == "message":
                            got.append(event)
                            break
                    if step != "deleted":
                        await child.stdin.send_all(b"\n")
        finally:
            child.kill()
            await child.wait()
            await child.stdin.aclose()
            await child.stdout.aclose()
    assert [(e.type, e.id) for e in got] == [
        (EventType.CREATED, "from-script"),
        (EventType.UPDATED, "from-script"),
        (EventType.DELETED, "from-script"),
    ]
    assert got[1].payload.content().text == "hello from sqlite3"
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs)  # type: ignore[type-var]


async def test_without_polling_other_writers_are_picked_up_at_the_next_own_commit(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db) as svc, svc.subscribe() as events:
        con = apsw.Connection(str(db_path))
        with con:
            con.execute("UPDATE sessions SET title = 'from elsewhere' WHERE id = ?", (session_id,))
        con.close()
        assert drain(events) == []
        await svc.create(session_id, Role.USER)
        got = drain(events)
    # The other connection's change and this commit's, one event per item, in the
    # order of each item's newest change (the session's message count came last).
    assert [(e.kind, e.type) for e in got] == [
        ("message", EventType.CREATED),
        ("session", EventType.UPDATED),
    ]
    assert got[1].payload.title == "from elsewhere"
    assert got[1].payload.message_count == 1


async def test_a_resume_from_a_seq_newer_than_the_file_raises_reload_required(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        await svc.create(session_id, Role.USER)
        async with svc.subscribe(after=svc.last_seq + 1000) as events:
            with pytest.raises(ReloadRequired, match="newer than any"):
                events.receive_nowait()


# -- conflation under load ---------------------------------------------------------------


async def test_a_slow_reader_of_thousands_of_streams_ends_with_every_final_state(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    streams, tokens = 2_000, 20
    last_seen: dict[str, str] = {}
    peak = 0

    async def slow_reader(events: Subscription) -> None:
        nonlocal peak
        async for event in events:
            peak = max(peak, events.pending)
            if event.kind == "message":
                last_seen[event.id or ""] = event.payload.content().text
            await trio.sleep(0.005)  # far slower than the streams write

    async def stream(msg: msgstore.Message) -> None:
        for k in range(tokens):
            msg.append_content(f"{k} ")
            await svc.update(msg)
            await trio.sleep(0.02)
        msg.add_finish(FinishReason.END_TURN)
        await svc.update(msg)

    async with open_message_service(db) as svc, svc.subscribe() as events:
        messages = [await svc.create(session_id, Role.ASSISTANT) for _ in range(streams)]
        async with trio.open_nursery() as readers:
            readers.start_soon(slow_reader, events)
            async with trio.open_nursery() as producers:
                for msg in messages:
                    producers.start_soon(stream, msg)
            # Every final state is queued now (a finish is written before update returns).
            with trio.fail_after(600):
                while events.pending:  # noqa: ASYNC110 (a test watching a queue drain)
                    await trio.sleep(0.05)
            await trio.testing.wait_all_tasks_blocked()  # the reader records the last one
            readers.cancel_scope.cancel()
        stats = svc.statistics()
    final = {m.id: m.content().text for m in db.stored_messages(session_id)}
    assert last_seen == final  # every message's last event is its final row
    assert stats.drops == 0
    assert stats.conflated > 0  # the reader skipped intermediate states...
    assert peak <= streams + 1  # ...and never held more than one per message (+ session)
