"""The queries: crush's semantics on real files, orderings, triggers, errors, the fixture."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from msgstore import (
    BinaryContent,
    CorruptRecord,
    Database,
    DatabaseBusy,
    Finish,
    FinishReason,
    ImageURLContent,
    InvalidPart,
    Message,
    MessageNotFound,
    Part,
    ReasoningContent,
    Role,
    Session,
    SessionNotFound,
    ShellCommand,
    StorageError,
    TextContent,
    ToolCall,
    ToolResult,
    connect,
)
from msgstore._codec import encode_parts

EVERY_PART: list[Part] = [
    ReasoningContent(thinking="hmm", signature="sig", started_at=5, finished_at=6),
    TextContent("hello <world> & ✓"),
    ImageURLContent(url="https://x/y.png", detail="low"),
    BinaryContent(path="a.bin", mime_type="application/octet-stream", data=b"\x00\xff"),
    ToolCall(id="t1", name="bash", input='{"c":1}', finished=True),
    ToolResult(tool_call_id="t1", name="bash", content="ok", is_error=True),
    ShellCommand(command="ls", output="a\nb", exit_code=2),
    Finish(reason=FinishReason.END_TURN, time=1700000000, message="m", details="d"),
]


@pytest.fixture
def session(db: Database) -> Session:
    return db.create_session("test session", id="s1")


def column(db: Database, sql: str, *params: object) -> Any:
    return db.connection.execute(sql, params).get


def same_created_at(db: Database, when: int = 1000) -> None:
    """Give every message the same created_at, as rows made within one second have."""
    db.connection.execute("UPDATE messages SET created_at = ?", (when,))


def ids(messages: list[Message]) -> list[str]:
    return [m.id for m in messages]


# -- sessions ---------------------------------------------------------------------------------


def test_create_session_stores_zero_counters_and_now(db: Database) -> None:
    before = int(time.time())
    created = db.create_session("hello")
    assert created == db.get_session(created.id)
    assert created.title == "hello"
    assert (created.message_count, created.prompt_tokens, created.completion_tokens) == (0, 0, 0)
    assert created.cost == 0.0
    assert created.parent_session_id is None
    assert created.summary_message_id is None
    assert created.todos is None
    assert before <= created.created_at == created.updated_at <= int(time.time())
    assert len(created.id) == 36


def test_create_session_takes_id_and_parent(db: Database) -> None:
    db.create_session("parent", id="p")
    child = db.create_session("child", id="c", parent_session_id="p")
    assert (child.id, child.parent_session_id) == ("c", "p")


def test_get_unknown_session_raises_session_not_found(db: Database) -> None:
    with pytest.raises(SessionNotFound, match="nope"):
        db.get_session("nope")


def test_list_sessions_is_top_level_newest_first_ties_by_insertion(db: Database) -> None:
    for sid in ("a", "b", "c"):
        db.create_session(sid, id=sid)
    db.create_session("child", id="child", parent_session_id="a")
    db.connection.execute("UPDATE sessions SET created_at = 1000")
    assert [s.id for s in db.list_sessions()] == ["c", "b", "a"]
    db.connection.execute("UPDATE sessions SET created_at = 2000 WHERE id = 'a'")
    assert [s.id for s in db.list_sessions()] == ["a", "c", "b"]


# -- inserting --------------------------------------------------------------------------------


def test_insert_message_returns_the_stored_row(db: Database, session: Session) -> None:
    before = int(time.time())
    message = db.insert_message(
        session_id="s1",
        role=Role.ASSISTANT,
        parts=EVERY_PART,
        model="m1",
        provider="anthropic",
        is_summary_message=True,
    )
    assert message == db.stored_message(message.id)
    assert message.parts == EVERY_PART
    assert (message.session_id, message.role, message.model, message.provider) == (
        "s1",
        Role.ASSISTANT,
        "m1",
        "anthropic",
    )
    assert message.is_summary_message is True
    assert before <= message.created_at == message.updated_at <= int(time.time())
    assert len(message.id) == 36


def test_insert_message_stores_empty_model_and_null_provider(
    db: Database, session: Session
) -> None:
    message = db.insert_message(session_id="s1", role="user")
    raw = db.connection.execute(
        "SELECT model, provider, is_summary_message, parts, finished_at FROM messages"
    ).fetchall()
    assert raw == [("", None, 0, "[]", None)]
    assert (message.model, message.provider, message.is_summary_message) == ("", "", False)


def test_insert_message_does_not_add_a_finish_part(db: Database, session: Session) -> None:
    message = db.insert_message(session_id="s1", role="user", parts=[TextContent("hi")])
    assert db.stored_message(message.id).parts == [TextContent("hi")]


def test_insert_message_takes_an_id(db: Database, session: Session) -> None:
    assert db.insert_message(session_id="s1", role="tool", id="m-1").id == "m-1"


def test_insert_message_with_duplicate_id_raises_storage_error(
    db: Database, session: Session
) -> None:
    db.insert_message(session_id="s1", role="user", id="m-1")
    with pytest.raises(StorageError) as info:
        db.insert_message(session_id="s1", role="user", id="m-1")
    assert not isinstance(info.value, SessionNotFound)
    assert isinstance(info.value.__cause__, apsw.ConstraintError)


def test_insert_message_into_unknown_session_raises_session_not_found(db: Database) -> None:
    with pytest.raises(SessionNotFound, match="ghost") as info:
        db.insert_message(session_id="ghost", role="user")
    assert isinstance(info.value.__cause__, apsw.ConstraintError)
    assert column(db, "SELECT count(*) FROM messages") == 0


def test_insert_message_with_unknown_role_raises_invalid_part(
    db: Database, session: Session
) -> None:
    with pytest.raises(InvalidPart, match="narrator"):
        db.insert_message(session_id="s1", role="narrator")


# -- writing parts ----------------------------------------------------------------------------


def test_write_parts_stores_json_and_finished_at(db: Database, session: Session) -> None:
    message = db.insert_message(session_id="s1", role="assistant")
    parts: list[Part] = [TextContent("done"), Finish(reason="end_turn", time=42)]
    assert db.write_parts(message.id, encode_parts(parts), 42) is True
    assert db.stored_message(message.id).parts == parts
    assert column(db, "SELECT finished_at FROM messages") == 42


def test_write_parts_to_unknown_id_returns_false(db: Database, session: Session) -> None:
    db.insert_message(session_id="s1", role="assistant")
    assert db.write_parts("ghost", "[]", None) is False


def test_write_parts_survives_reopening(db_path: Path) -> None:
    with connect(db_path) as db:
        db.create_session("s", id="s1")
        message = db.insert_message(session_id="s1", role="assistant")
        db.write_parts(message.id, encode_parts([TextContent("kept")]), None)
    with connect(db_path, read_only=True) as db:
        assert db.stored_message(message.id).parts == [TextContent("kept")]


def test_update_message_sets_finished_at_from_first_finish_part(
    db: Database, session: Session
) -> None:
    message = db.insert_message(session_id="s1", role="assistant")
    db.update_message(message.id, [TextContent("x"), Finish(reason="end_turn", time=7)])
    assert column(db, "SELECT finished_at FROM messages") == 7
    db.update_message(message.id, [Finish(time=0), Finish(time=9)])
    assert column(db, "SELECT finished_at FROM messages") == 0
    db.update_message(message.id, [TextContent("streaming again")])
    assert column(db, "SELECT finished_at FROM messages") is None
    assert db.stored_message(message.id).parts == [TextContent("streaming again")]


def test_update_unknown_message_raises_message_not_found(db: Database) -> None:
    with pytest.raises(MessageNotFound, match="ghost"):
        db.update_message("ghost", [])


def test_update_trigger_sets_updated_at_to_now(db: Database, session: Session) -> None:
    db.connection.execute(
        "INSERT INTO messages (id, session_id, role, created_at, updated_at) "
        "VALUES ('old', 's1', 'user', 1, 1)"
    )
    before = int(time.time())
    assert db.write_parts("old", "[]", None)
    message = db.stored_message("old")
    assert message.created_at == 1
    assert before <= message.updated_at <= int(time.time())


# -- message_count and the session's updated_at --------------------------------------------------


def test_message_count_rises_and_falls_with_inserts_and_deletes(
    db: Database, session: Session
) -> None:
    first = db.insert_message(session_id="s1", role="user")
    db.insert_message(session_id="s1", role="assistant")
    db.insert_message(session_id="s1", role="assistant")
    assert db.get_session("s1").message_count == 3
    db.delete_message(first.id)
    assert db.get_session("s1").message_count == 2
    db.delete_session_messages("s1")
    assert db.get_session("s1").message_count == 0


def test_message_count_trigger_touches_session_updated_at(db: Database) -> None:
    db.connection.execute(
        "INSERT INTO sessions (id, title, updated_at, created_at) VALUES ('old', 't', 1, 1)"
    )
    before = int(time.time())
    db.insert_message(session_id="old", role="user")
    assert before <= db.get_session("old").updated_at <= int(time.time())


# -- deleting -----------------------------------------------------------------------------------


def test_delete_message_removes_the_row(db: Database, session: Session) -> None:
    message = db.insert_message(session_id="s1", role="user")
    db.delete_message(message.id)
    with pytest.raises(MessageNotFound):
        db.stored_message(message.id)
    with pytest.raises(MessageNotFound):
        db.delete_message(message.id)


def test_delete_session_messages_returns_ids_oldest_first_and_spares_others(
    db: Database, session: Session
) -> None:
    db.create_session("other", id="s2")
    made = [db.insert_message(session_id="s1", role="user").id for _ in range(4)]
    keep = db.insert_message(session_id="s2", role="user").id
    same_created_at(db)
    assert db.delete_session_messages("s1") == made
    assert db.message_ids("s1") == []
    assert db.message_ids("s2") == [keep]
    assert db.delete_session_messages("s1") == []


# -- reading and ordering ----------------------------------------------------------------------


@pytest.fixture
def conversation(db: Database, session: Session) -> list[Message]:
    """Messages of one session, all created within the same second, plus one elsewhere."""
    db.create_session("other", id="s2")
    made = [
        db.insert_message(session_id="s1", role="user", parts=[TextContent("u1")]),
        db.insert_message(session_id="s1", role="assistant", parts=[TextContent("a1")]),
        db.insert_message(session_id="s1", role="user", parts=[TextContent("u2")]),
        db.insert_message(session_id="s1", role="assistant", parts=[TextContent("a2")]),
        db.insert_message(session_id="s1", role="assistant", is_summary_message=True),
        db.insert_message(session_id="s1", role="tool"),
    ]
    db.insert_message(session_id="s2", role="user", id="elsewhere")
    same_created_at(db)
    return [db.stored_message(m.id) for m in made]


def test_equal_created_at_lists_ascending_by_insertion(
    db: Database, conversation: list[Message]
) -> None:
    assert db.stored_messages("s1") == conversation
    assert db.message_ids("s1") == ids(conversation)


def test_created_at_orders_before_insertion(db: Database, conversation: list[Message]) -> None:
    db.connection.execute(
        "UPDATE messages SET created_at = 999 WHERE id = ?", (conversation[3].id,)
    )
    expected = [conversation[3], *conversation[:3], *conversation[4:]]
    assert ids(db.stored_messages("s1")) == ids(expected)
    assert db.message_ids("s1") == ids(expected)


def test_user_messages_are_newest_first_ties_by_later_insertion(
    db: Database, conversation: list[Message]
) -> None:
    u1, _, u2, *_ = conversation
    assert ids(db.stored_user_messages("s1")) == [u2.id, u1.id]
    assert ids(db.stored_all_user_messages()) == ["elsewhere", u2.id, u1.id]
    db.connection.execute("UPDATE messages SET created_at = 2000 WHERE id = ?", (u1.id,))
    assert ids(db.stored_user_messages("s1")) == [u1.id, u2.id]
    assert ids(db.stored_all_user_messages()) == [u1.id, "elsewhere", u2.id]


def test_last_assistant_message_is_newest_non_summary(
    db: Database, conversation: list[Message]
) -> None:
    _, a1, _, a2, _summary, _ = conversation
    assert db.stored_last_assistant_message("s1") == a2
    db.connection.execute("UPDATE messages SET created_at = 2000 WHERE id = ?", (a1.id,))
    assert db.stored_last_assistant_message("s1") == db.stored_message(a1.id)


def test_last_assistant_message_is_none_without_one(db: Database, session: Session) -> None:
    db.insert_message(session_id="s1", role="user")
    db.insert_message(session_id="s1", role="assistant", is_summary_message=True)
    assert db.stored_last_assistant_message("s1") is None
    assert db.stored_last_assistant_message("ghost") is None


def test_lists_of_unknown_session_are_empty(db: Database) -> None:
    assert db.stored_messages("ghost") == []
    assert db.stored_user_messages("ghost") == []
    assert db.message_ids("ghost") == []


def test_get_unknown_message_raises_message_not_found(db: Database) -> None:
    with pytest.raises(MessageNotFound, match="ghost"):
        db.stored_message("ghost")


# -- corrupt rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column_sql", "value"),
    [
        ("parts", "{not json"),
        ("parts", '[{"type": "hologram", "data": {}}]'),
        ("parts", b"[]"),
        ("role", "narrator"),
    ],
)
def test_corrupt_row_raises_corrupt_record_naming_it_and_others_still_read(
    db: Database, conversation: list[Message], column_sql: str, value: object
) -> None:
    bad = conversation[2]
    db.connection.execute(f"UPDATE messages SET {column_sql} = ? WHERE id = ?", (value, bad.id))
    with pytest.raises(CorruptRecord) as info:
        db.stored_message(bad.id)
    assert info.value.message_id == bad.id
    assert bad.id in str(info.value)
    with pytest.raises(CorruptRecord, match=bad.id):
        db.stored_messages("s1")
    for good in conversation[:2] + conversation[3:]:
        assert db.stored_message(good.id) == good
    assert bad.id in db.message_ids("s1")


# -- errors from SQLite ---------------------------------------------------------------------------


def test_write_while_another_connection_writes_raises_database_busy(
    db_path: Path, db: Database, session: Session
) -> None:
    message = db.insert_message(session_id="s1", role="assistant")
    db.set_busy_timeout(0)
    other = apsw.Connection(str(db_path))
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy) as info:
            db.write_parts(message.id, "[]", None)
        assert isinstance(info.value.__cause__, apsw.BusyError)
        # Reads still work under WAL while the other connection holds the write lock.
        assert db.stored_message(message.id) == message
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert db.write_parts(message.id, "[]", None)


def test_other_sqlite_failure_raises_storage_error_with_cause(
    db: Database, session: Session
) -> None:
    message = db.insert_message(session_id="s1", role="assistant")
    # A temporary trigger lives on this connection only: the file is not changed.
    db.connection.execute(
        "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON main.messages "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(StorageError, match="disk on fire") as info:
        db.write_parts(message.id, "[]", None)
    assert not isinstance(info.value, DatabaseBusy)
    assert isinstance(info.value.__cause__, apsw.Error)


# -- crush's own file ---------------------------------------------------------------------------


def expected_part(wrapper: dict[str, Any]) -> Part:
    """The part a dump entry describes, built without msgstore's codec."""
    kind, data = wrapper["type"], wrapper["data"]
    if kind == "binary":
        return BinaryContent(
            path=data["Path"], mime_type=data["MIMEType"], data=base64.b64decode(data["Data"])
        )
    cls: type[Any] = {
        "reasoning": ReasoningContent,
        "text": TextContent,
        "image_url": ImageURLContent,
        "tool_call": ToolCall,
        "tool_result": ToolResult,
        "finish": Finish,
        "shell_command": ShellCommand,
    }[kind]
    part: Part = cls(**data)
    return part


@pytest.mark.parametrize("read_only", [True, False])
def test_every_fixture_message_reads_back_as_crush_dumped_it(
    crush_fixture: Path, crush_dump: list[dict[str, Any]], read_only: bool
) -> None:
    with connect(crush_fixture, read_only=read_only) as db:
        listed = db.stored_messages("fixture-session")
        # All fixture rows share one created_at: the dump's order is insertion order.
        assert ids(listed) == [entry["id"] for entry in crush_dump]
        for entry, message in zip(crush_dump, listed, strict=True):
            assert message == db.stored_message(entry["id"])
            assert message.session_id == entry["session_id"]
            assert message.role == Role(entry["role"])
            assert message.model == (entry["model"] or "")
            assert message.provider == (entry["provider"] or "")
            assert message.is_summary_message is bool(entry["is_summary_message"])
            assert (message.created_at, message.updated_at) == (
                entry["created_at"],
                entry["updated_at"],
            )
            assert message.parts == [expected_part(p) for p in entry["parts"]]
            finished_at = column(db, "SELECT finished_at FROM messages WHERE id = ?", entry["id"])
            assert finished_at == entry["finished_at"]


def test_fixture_queries_follow_crush_semantics(crush_fixture: Path) -> None:
    with connect(crush_fixture, read_only=True) as db:
        [only] = db.list_sessions()
        assert (only.id, only.message_count) == ("fixture-session", 9)
        assert ids(db.stored_user_messages("fixture-session")) == [
            "4bb38cdd-bd2a-4510-99db-20e314df9500"
        ]
        last = db.stored_last_assistant_message("fixture-session")
        assert last is not None
        assert last.id == "72ed4742-bf8c-4f5b-bfa8-b572fde9892c"


def test_fixture_takes_new_messages_and_counts_them(crush_fixture: Path) -> None:
    with connect(crush_fixture) as db:
        message = db.insert_message(
            session_id="fixture-session", role="assistant", parts=EVERY_PART, model="m"
        )
        db.update_message(message.id, EVERY_PART)
        assert db.get_session("fixture-session").message_count == 10
        assert db.stored_messages("fixture-session")[-1] == db.stored_message(message.id)
