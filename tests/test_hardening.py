"""Hardening (issue #15): inputs that could poison a session, misuse that could block
the loop, and failures that must be heard. Each test pins a defect a red-team pass found:
the boundary now refuses it with a typed error, or the behaviour is correct."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import attrs
import pytest
import trio
import trio.testing
from faultvfs import CODES, Fault, FaultVFS

import msgstore
from msgstore import (
    CorruptRecord,
    Database,
    DatabaseBusy,
    FinishReason,
    InvalidPart,
    InvalidUpdate,
    MessageNotFound,
    ReasoningContent,
    Role,
    StorageError,
    TextContent,
    UnwrittenMessages,
    open_message_service,
)
from msgstore._content import MAX_JSON_DEPTH
from msgstore.testing import row_now


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


# -- inputs that can never be read or written ---------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 950, 5_000, 100_000])
def test_responses_data_deeper_than_the_limit_is_refused_when_the_part_is_made(
    depth: int,
) -> None:
    with pytest.raises(InvalidPart, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        ReasoningContent(responses_data=nested(depth))


async def test_responses_data_at_the_limit_round_trips(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    part = ReasoningContent(thinking="t", responses_data=nested(MAX_JSON_DEPTH))
    async with open_message_service(db) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT, [part])
        msg.add_finish(FinishReason.END_TURN)
        await svc.update(msg)
    assert row_now(db_path, msg.id).parts == msg.parts


async def test_a_row_nested_too_deep_is_corrupt_for_that_row_only(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    bad_data = json.dumps([{"type": "reasoning", "data": {"responses_data": nested(300)}}])
    async with open_message_service(db) as svc:
        good = await svc.create(session_id, Role.ASSISTANT, [TextContent("fine")])
        bad = await svc.create(session_id, Role.ASSISTANT)
        worse = await svc.create(session_id, Role.ASSISTANT)
        other = apsw.Connection(str(db_path))
        other.execute("UPDATE messages SET parts = ? WHERE id = ?", (bad_data, bad.id))
        other.execute("UPDATE messages SET parts = ? WHERE id = ?", (deep, worse.id))
        other.close()
        for message in (bad, worse):
            with pytest.raises(CorruptRecord, match=message.id):
                await svc.get(message.id)
        assert (await svc.get(good.id)).parts == [TextContent("fine")]
        with pytest.raises(CorruptRecord):
            await svc.list(session_id)  # crush's list fails as a whole, naming the row
        # The bad rows can still be deleted, and the session is whole again.
        await svc.delete(bad.id)
        await svc.delete(worse.id)
        assert [m.id for m in await svc.list(session_id)] == [good.id]


def test_lone_surrogates_in_parts_are_refused_naming_the_field() -> None:
    msg = msgstore.Message(id="m", session_id="s", role=Role.ASSISTANT)
    with pytest.raises(InvalidPart, match=r"TextContent\.text holds a lone surrogate"):
        TextContent("a\ud800b")
    with pytest.raises(InvalidPart, match="append_content delta"):
        msg.append_content("\udfff")
    assert msg.parts == []  # nothing half-done


@pytest.mark.parametrize("field", ["model", "provider", "session_id"])
async def test_lone_surrogates_in_create_are_refused_naming_the_field(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, field: str
) -> None:
    kwargs: dict[str, str] = {"model": "m", "provider": "p"}
    sid = session_id
    if field == "session_id":
        sid = "s\ud800"
    else:
        kwargs[field] = "x\ud800"
    async with open_message_service(db) as svc:
        with pytest.raises(InvalidUpdate, match=f"{field} holds a lone surrogate"):
            await svc.create(sid, Role.ASSISTANT, **kwargs)
        assert await svc.list(session_id) == []


async def test_a_lone_surrogate_in_a_session_title_is_refused(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    with pytest.raises(InvalidPart, match="session title holds a lone surrogate"):
        db.create_session("t\ud800")
    async with open_message_service(db) as svc:
        with pytest.raises(InvalidUpdate, match="session title holds a lone surrogate"):
            await svc.sessions.create("t\ud800")
        session = await svc.sessions.create("ok")
        with pytest.raises(InvalidUpdate, match="session title"):
            await svc.sessions.save(attrs.evolve(session, title="\udc00"))
        assert [s.title for s in await svc.sessions.list()] == ["ok"]


async def test_an_update_with_another_sessions_id_or_role_is_refused(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    other = db.create_session("other").id
    async with open_message_service(db, debounce=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for changes in ({"session_id": other}, {"role": Role.USER}):
            forged = msg.clone()
            for name, value in changes.items():
                setattr(forged, name, value)
            forged.append_content("x")
            with pytest.raises(InvalidUpdate, match="cannot change"):
                await svc.update(forged)
        # Also once its actor is alive.
        msg.append_content("real")
        await svc.update(msg)
        forged = msg.clone()
        forged.session_id = other
        with pytest.raises(InvalidUpdate, match="cannot change"):
            await svc.update(forged)
        (listed,) = await svc.list(session_id)
        assert (listed.session_id, listed.role, listed.content().text) == (
            session_id,
            Role.ASSISTANT,
            "real",
        )


# -- misuse and races ---------------------------------------------------------------------


async def test_two_services_on_one_database_closing_one_keeps_the_others_waits_on_trio_time(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str, db_path: Path
) -> None:
    ticks = 0

    async def bystander() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with open_message_service(db) as svc, trio.open_nursery() as nursery:
        async with open_message_service(db) as first:
            await first.create(session_id, Role.ASSISTANT)
        # ``first`` has closed; ``svc`` still holds SQLite's busy handler off.
        msg = await svc.create(session_id, Role.ASSISTANT)
        locker = apsw.Connection(str(db_path))
        locker.execute("BEGIN IMMEDIATE")
        nursery.start_soon(bystander)

        async def release() -> None:
            await trio.sleep(1.0)
            locker.execute("COMMIT")

        nursery.start_soon(release)
        msg.add_finish(FinishReason.END_TURN)
        before = ticks
        await svc.update(msg)  # waits for the lock on Trio time
        assert ticks - before >= 90  # the loop ran all along
        nursery.cancel_scope.cancel()
        locker.close()
    assert row_now(db_path, msg.id).is_finished()


async def test_a_synchronous_session_write_during_a_service_says_what_to_use(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    async with open_message_service(db) as svc:
        locker = apsw.Connection(str(db_path))
        locker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseBusy, match=r"svc\.sessions"):
                db.create_session("sync")
        finally:
            locker.execute("COMMIT")
            locker.close()
        assert (await svc.sessions.create("async")).title == "async"


async def test_a_service_on_a_closed_database_raises_a_typed_error(db_path: Path) -> None:
    db = msgstore.connect(db_path)
    db.close()
    with pytest.raises(StorageError, match="closed"):
        async with open_message_service(db):
            pass


# -- failures nobody heard about ----------------------------------------------------------


async def test_a_disk_that_stays_full_at_shutdown_raises_naming_every_unwritten_message(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    with msgstore.connect(db_path) as plain:
        plain.create_session("full", id="s1")
    with FaultVFS("faultvfs-hardening") as vfs:
        db = msgstore.connect(db_path, vfs=vfs.name)
        try:
            with pytest.raises(UnwrittenMessages) as raised:
                async with open_message_service(db, debounce=3600, shutdown_timeout=2.0) as svc:
                    messages = [await svc.create("s1", Role.ASSISTANT) for _ in range(20)]
                    for n, msg in enumerate(messages):
                        msg.append_content(f"buffered {n}")
                        await svc.update(msg)
                    vfs.arm(Fault("xWrite", 1, CODES["FULL"], sticky=True))
            assert sorted(raised.value.failures) == sorted(m.id for m in messages)
            assert all(isinstance(e, StorageError) for e in raised.value.failures.values())
        finally:
            vfs.clear()
            db.close()
    with msgstore.connect(db_path) as after:
        assert all(after.stored_message(m.id).parts == [] for m in messages)
        assert after.connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_statistics_report_how_old_the_oldest_unwritten_state_is(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db, debounce=1.0) as svc:
        assert svc.statistics().oldest_unwritten_age == 0.0
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("a")
        await svc.update(msg)
        await trio.sleep(0.25)
        msg.append_content("b")
        await svc.update(msg)
        await trio.sleep(0.5)
        assert svc.statistics().oldest_unwritten_age == pytest.approx(0.75)
        assert svc.statistics().buffered == 1
        await svc.flush(msg.id)
        assert svc.statistics().oldest_unwritten_age == 0.0
        assert svc.statistics().buffered == 0


async def test_a_delete_of_a_message_whose_actor_is_writing_raises_nothing_twice(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    async with open_message_service(db) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        await svc.delete(msg.id)
        with pytest.raises(MessageNotFound):
            await svc.delete(msg.id)
