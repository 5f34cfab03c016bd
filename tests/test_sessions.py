"""SessionService: crush's session service on Trio (create, get, list, save, delete)."""

from __future__ import annotations

from pathlib import Path

import apsw
import attrs
import pytest
import trio
import trio.testing

import msgstore
from msgstore import (
    Database,
    EventType,
    InvalidUpdate,
    MessageNotFound,
    Role,
    Session,
    SessionNotFound,
    SessionService,
    open_message_service,
)


async def test_create_get_and_list_newest_updated_first(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    sessions = SessionService(db)
    first = await sessions.create("first")
    second = await sessions.create("second")
    child = await sessions.create("child", parent_session_id=first.id)
    assert (await sessions.get(child.id)).parent_session_id == first.id
    # Top-level only; the same second: newest created first.
    assert [s.id for s in await sessions.list()] == [second.id, first.id]
    # An older session updated later comes first (rows written as crush would).
    db.connection.execute(
        "INSERT INTO sessions (id, title, updated_at, created_at) VALUES ('old', 'old', ?, 1)",
        (second.updated_at + 60,),
    )
    assert [s.id for s in await sessions.list()] == ["old", second.id, first.id]


async def test_save_stores_title_tokens_cost_summary_and_todos(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    sessions = SessionService(db)
    session = await sessions.create("draft")
    saved = await sessions.save(
        attrs.evolve(
            session,
            title="refactor the parser",
            prompt_tokens=1200,
            completion_tokens=345,
            cost=0.0123,
            summary_message_id="m-1",
            todos='[{"content": "x"}]',
        )
    )
    assert (saved.title, saved.prompt_tokens, saved.completion_tokens) == (
        "refactor the parser",
        1200,
        345,
    )
    assert (saved.cost, saved.summary_message_id, saved.todos) == (
        0.0123,
        "m-1",
        '[{"content": "x"}]',
    )
    assert await sessions.get(session.id) == saved
    added = await sessions.add_usage(session.id, prompt_tokens=10, completion_tokens=5, cost=0.5)
    assert (added.prompt_tokens, added.completion_tokens) == (1210, 350)
    assert added.cost == pytest.approx(0.5123)


async def test_unknown_ids_raise_session_not_found(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    sessions = SessionService(db)
    with pytest.raises(SessionNotFound):
        await sessions.get("ghost")
    ghost = Session("ghost", None, "t", 0, 0, 0, 0.0, 0, 0, None, None)
    with pytest.raises(SessionNotFound):
        await sessions.save(ghost)
    with pytest.raises(SessionNotFound):
        await sessions.delete("ghost")


async def test_bad_values_are_refused_with_a_clear_error(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    sessions = SessionService(db)
    session = await sessions.create("t")
    with pytest.raises(InvalidUpdate, match="title"):
        await sessions.create(5)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="prompt_tokens"):
        await sessions.save(attrs.evolve(session, prompt_tokens=-1))
    with pytest.raises(Exception, match="cost"):
        await sessions.save(attrs.evolve(session, cost=float("inf")))
    assert await sessions.get(session.id) == session


async def test_delete_through_the_service_removes_messages_through_their_actors(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    seen = []

    def read(events: msgstore.Subscription) -> None:
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                return
            seen.append((event.type, event.kind))

    async with open_message_service(db, debounce=3600) as svc, svc.subscribe() as events:
        session = await svc.sessions.create("doomed")
        read(events)
        msg = await svc.create(session.id, Role.ASSISTANT)
        read(events)
        msg.append_content("buffered, never to be written")
        await svc.update(msg)
        await svc.sessions.delete(session.id)
        with pytest.raises(MessageNotFound):
            await svc.get(msg.id)
        with pytest.raises(SessionNotFound):
            await svc.sessions.get(session.id)
        read(events)
    assert seen == [
        (EventType.CREATED, "session"),
        (EventType.CREATED, "message"),
        (EventType.UPDATED, "session"),  # its message count
        (EventType.DELETED, "message"),
        (EventType.DELETED, "session"),
    ]
    assert db.stored_messages(session.id) == []


async def test_session_changes_are_published_as_events(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    async with open_message_service(db) as svc, svc.subscribe() as events:
        session = await svc.sessions.create("t")
        created = events.receive_nowait()
        await svc.sessions.save(attrs.evolve(session, title="renamed", cost=1.5))
        updated = events.receive_nowait()
    assert (created.type, created.payload.title) == (EventType.CREATED, "t")
    assert (updated.type, updated.payload.title, updated.payload.cost) == (
        EventType.UPDATED,
        "renamed",
        1.5,
    )


async def test_a_session_write_waits_out_another_connections_lock_on_trio_time(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    sessions = SessionService(db, busy_timeout=5.0)
    session = await sessions.create("t")
    other = apsw.Connection(str(db_path))
    other.execute("BEGIN IMMEDIATE")
    saved: list[Session] = []

    async def save() -> None:
        saved.append(await sessions.save(attrs.evolve(session, title="after the lock")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(save)
        await trio.sleep(0.5)
        assert saved == []  # waiting, and the event loop runs meanwhile
        other.execute("COMMIT")
    other.close()
    assert saved[0].title == "after the lock"
