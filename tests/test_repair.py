"""``msgstore.repair``: unfinished replies and unanswered tool calls, leases, the grace rule.

The second process (a live stream elsewhere, then SIGKILL) is in
``test_repair_two_processes.py``; here every owner lives in this process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from cli_run import run_msgstore
from conftest import FIXTURE_DB

import msgstore
from msgstore import (
    Database,
    DatabaseBusy,
    DatabaseError,
    Finish,
    FinishReason,
    Message,
    Part,
    ReasoningContent,
    Role,
    TextContent,
    ToolCall,
    ToolResult,
)
from msgstore._lease import LOCK_DIR_SUFFIX, Lease, has_lease_tables, remove_lease_tables
from msgstore._repair import DEFAULT_GRACE
from msgstore._repair_plan import CALL_DID_NOT_COMPLETE, CALL_NEVER_RAN, INTERRUPTED

HOUR = 3600


@pytest.fixture
def sid(db: Database) -> str:
    return db.create_session("repair").id


def add(db: Database, sid: str, role: Role, *parts: Part, created_at: int | None = None) -> str:
    """Insert a row as given (no stop finish added); ``created_at`` moves it in time."""
    message = db.insert_message(session_id=sid, role=role, parts=list(parts))
    if created_at is not None:
        db.connection.execute(
            "UPDATE messages SET created_at = ? WHERE id = ?", (created_at, message.id)
        )
    return message.id


def user(db: Database, sid: str, text: str = "hi", **kw: Any) -> str:
    return add(db, sid, Role.USER, TextContent(text), Finish(FinishReason.STOP), **kw)


def backdate(db: Database, session_id: str, seconds: int) -> None:
    """Make a session, and its messages, look last written ``seconds`` ago. crush's
    triggers stamp ``updated_at`` with now on every UPDATE, so they step aside."""
    con = db.connection
    names = ("update_messages_updated_at", "update_sessions_updated_at")
    triggers = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)", names
    ).fetchall()
    assert len(triggers) == 2
    with con:
        for name, _ in triggers:
            con.execute(f"DROP TRIGGER {name}")
        con.execute(
            "UPDATE messages SET updated_at = updated_at - ? WHERE session_id = ?",
            (seconds, session_id),
        )
        con.execute(
            "UPDATE sessions SET updated_at = updated_at - ? WHERE id = ?", (seconds, session_id)
        )
        for _, sql in triggers:
            con.execute(sql)


def dump(db: Database) -> list[tuple[Any, ...]]:
    """Every row msgstore and crush keep about messages, sessions and leases."""
    con = db.connection
    out: list[tuple[Any, ...]] = []
    for table in ("sessions", "messages", "msgstore_owners", "msgstore_claims"):
        exists = con.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).get
        if exists:
            out += [(table, *row) for row in con.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    return out


@pytest.fixture
def lease(db: Database) -> Iterator[Lease]:
    with Lease.acquire(db) as held:
        yield held


# -- (a) unfinished assistant messages -------------------------------------------------------


def test_unfinished_assistant_message_gets_a_canceled_finish_and_keeps_its_parts(
    db: Database, sid: str
) -> None:
    user(db, sid)
    parts: list[Part] = [TextContent("Half an ans"), ToolCall(id="c1", name="view", finished=True)]
    mid = add(db, sid, Role.ASSISTANT, *parts)
    add(db, sid, Role.TOOL, ToolResult(tool_call_id="c1", name="view", content="ok"))
    stored = db.stored_message(mid)

    report = msgstore.repair(db, grace=0)

    assert [f.message_id for f in report.finished] == [mid]
    assert report.tool_results == ()  # c1 has its result
    repaired = db.stored_message(mid)
    assert repaired.parts[:2] == parts
    finish = repaired.finish_part()
    assert finish == Finish(
        FinishReason.CANCELED,
        time=stored.updated_at,  # when the stream was last written
        message=INTERRUPTED,
        details="finished by msgstore repair",
    )
    finished_at = "SELECT finished_at FROM messages WHERE id = ?"
    assert db.connection.execute(finished_at, (mid,)).get == stored.updated_at


def test_unfinished_tool_calls_are_marked_finished_and_open_reasoning_is_closed(
    db: Database, sid: str
) -> None:
    mid = add(
        db,
        sid,
        Role.ASSISTANT,
        ReasoningContent(thinking="Let me think", started_at=100),
        ToolCall(id="c1", name="view", input='{"path": "READ', finished=False),
    )
    stored = db.stored_message(mid)

    (finished,) = msgstore.repair(db, grace=0).finished

    assert finished.tool_calls_marked_finished == ("c1",)
    assert finished.reasoning_closed
    reasoning, call, _ = db.stored_message(mid).parts
    assert reasoning == ReasoningContent(
        thinking="Let me think", started_at=100, finished_at=stored.updated_at
    )
    assert call == ToolCall(id="c1", name="view", input='{"path": "READ', finished=True)


def test_finished_and_non_assistant_messages_are_left_alone(db: Database, sid: str) -> None:
    user(db, sid)
    add(db, sid, Role.ASSISTANT, TextContent("done"), Finish(FinishReason.END_TURN, time=5))
    add(db, sid, Role.USER, TextContent("a user row with no finish: not a reply"))
    before = dump(db)

    report = msgstore.repair(db, grace=0)

    assert not report.changed and not report.skipped
    assert dump(db) == before


# -- (b) tool calls with no result ------------------------------------------------------------


def test_unanswered_tool_call_gets_an_error_result_in_a_tool_message_right_after_it(
    db: Database, sid: str
) -> None:
    t = 1_700_000_000
    user(db, sid, created_at=t)
    call = ToolCall(id="c1", name="bash", input='{"command": "make"}', finished=True)
    aid = add(db, sid, Role.ASSISTANT, call, Finish(FinishReason.TOOL_USE, time=t), created_at=t)
    later = user(db, sid, "are you there?", created_at=t + 60)  # after the crash

    (added,) = msgstore.repair(db, grace=0).tool_results

    assert added.assistant_message_id == aid
    assert added.tool_call_ids == ("c1",)
    assert added.messages_between == 0
    messages = db.stored_messages(sid)
    assert [m.id for m in messages][1:] == [aid, added.message_id, later]
    new = messages[2]
    assert new.role is Role.TOOL
    assert new.created_at == t
    assert new.parts == [
        ToolResult(tool_call_id="c1", name="bash", content=CALL_DID_NOT_COMPLETE, is_error=True),
        Finish(FinishReason.STOP, time=0),
    ]
    assert db.stored_message(aid).finish_reason() is FinishReason.TOOL_USE  # untouched


def test_a_call_cut_off_while_its_input_streamed_is_answered_as_never_run(
    db: Database, sid: str
) -> None:
    add(db, sid, Role.ASSISTANT, ToolCall(id="c1", name="view", input="{", finished=False))

    report = msgstore.repair(db, grace=0)

    (added,) = report.tool_results
    result = db.stored_message(added.message_id or "").tool_results()
    assert result == [
        ToolResult(tool_call_id="c1", name="view", content=CALL_NEVER_RAN, is_error=True)
    ]


def test_only_the_calls_no_later_message_answers_get_results(db: Database, sid: str) -> None:
    calls = [ToolCall(id=f"c{i}", name="view", finished=True) for i in range(3)]
    add(db, sid, Role.ASSISTANT, *calls, Finish(FinishReason.TOOL_USE, time=1))
    add(db, sid, Role.TOOL, ToolResult(tool_call_id="c1", name="view"), Finish("stop"))

    (added,) = msgstore.repair(db, grace=0).tool_results

    assert added.tool_call_ids == ("c0", "c2")


def test_a_result_in_the_same_message_answers_a_provider_executed_call(
    db: Database, sid: str
) -> None:
    add(
        db,
        sid,
        Role.ASSISTANT,
        ToolCall(id="web", name="web_search", provider_executed=True, finished=True),
        ToolResult(tool_call_id="web", name="web_search", content="results"),
        Finish(FinishReason.END_TURN, time=1),
    )

    assert not msgstore.repair(db, grace=0).changed


def test_a_result_earlier_than_its_call_does_not_answer_it(db: Database, sid: str) -> None:
    add(db, sid, Role.TOOL, ToolResult(tool_call_id="c1", name="view"), Finish("stop"))
    add(db, sid, Role.ASSISTANT, ToolCall(id="c1", name="view", finished=True), Finish("tool_use"))

    (added,) = msgstore.repair(db, grace=0).tool_results

    assert added.tool_call_ids == ("c1",)


def test_a_message_written_in_the_same_second_is_counted_as_sorting_between(
    db: Database, sid: str
) -> None:
    t = 1_700_000_000
    call = ToolCall(id="c1", name="view", finished=True)
    aid = add(db, sid, Role.ASSISTANT, call, Finish("tool_use"), created_at=t)
    same_second = user(db, sid, created_at=t)

    report = msgstore.repair(db, grace=0)

    # crush orders by created_at in seconds, then by insertion: it cannot go first.
    (added,) = report.tool_results
    assert added.messages_between == 1
    assert [m.id for m in db.stored_messages(sid)] == [aid, same_second, added.message_id]
    assert "; 1 message of the same second sort between them" in str(report)


# -- the report, dry runs, idempotence, one transaction ------------------------------------


def crashed_turn(db: Database, sid: str) -> tuple[str, str]:
    """A turn cut short: one reply waiting for its tool, one still streaming."""
    user(db, sid)
    waiting = add(db, sid, Role.ASSISTANT, ToolCall(id="c1", name="view", finished=True))
    streaming = add(db, sid, Role.ASSISTANT, TextContent("partial"))
    return waiting, streaming


def test_dry_run_changes_nothing_and_reports_what_repair_then_does(db: Database, sid: str) -> None:
    crashed_turn(db, sid)
    before = dump(db)

    dry = msgstore.repair(db, grace=0, dry_run=True)

    assert dump(db) == before
    assert dry.dry_run
    done = msgstore.repair(db, grace=0)
    assert dry.finished == done.finished
    assert [(t.assistant_message_id, t.tool_call_ids) for t in dry.tool_results] == [
        (t.assistant_message_id, t.tool_call_ids) for t in done.tool_results
    ]
    assert [t.message_id for t in dry.tool_results] == [None]


def test_report_lists_what_was_finished_and_added_and_reads_as_text(db: Database, sid: str) -> None:
    waiting, streaming = crashed_turn(db, sid)

    report = msgstore.repair(db, grace=0)

    assert {f.message_id for f in report.finished} == {waiting, streaming}
    (added,) = report.tool_results
    assert (added.assistant_message_id, added.tool_call_ids) == (waiting, ("c1",))
    assert added.message_id is not None and report.changed
    text = str(report)
    assert text.splitlines()[0] == (
        f"{db.path}: finish 2 messages, add 1 tool result in 1 new tool message"
    )
    assert f"finished     {waiting} (session {sid}): canceled; unclaimed" in text
    assert f"tool result  {added.message_id} (session {sid}) after {waiting}" in text
    with pytest.raises(AttributeError):
        report.dry_run = True  # type: ignore[misc]


def test_repair_is_idempotent(db: Database, sid: str) -> None:
    crashed_turn(db, sid)
    assert msgstore.repair(db, grace=0).changed
    after = dump(db)

    again = msgstore.repair(db, grace=0)

    assert not again.changed
    assert str(again) == f"{db.path}: nothing to repair"
    assert dump(db) == after


def test_a_failed_write_leaves_the_file_as_it_was(
    db: Database, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed_turn(db, sid)
    before = dump(db)

    def no_room(**kw: object) -> Message:
        raise msgstore.StorageError("disk full")

    monkeypatch.setattr(db, "insert_message", no_room)  # after the finishes were written
    with pytest.raises(msgstore.StorageError, match="disk full"):
        msgstore.repair(db, grace=0)

    assert dump(db) == before
    assert not db.connection.in_transaction


def test_a_locked_file_raises_database_busy_and_changes_nothing(
    db: Database, sid: str, locker: apsw.Connection
) -> None:
    crashed_turn(db, sid)
    before = dump(db)
    db.set_busy_timeout(0)
    locker.execute("BEGIN IMMEDIATE")

    with pytest.raises(DatabaseBusy):
        msgstore.repair(db, grace=0)

    locker.execute("ROLLBACK")
    assert dump(db) == before
    assert msgstore.repair(db, grace=0).changed  # and it can simply be retried


def test_a_session_with_an_unreadable_row_is_reported_and_left_as_it_is(
    db: Database, sid: str
) -> None:
    broken = db.create_session("broken").id
    add(db, broken, Role.ASSISTANT, TextContent("x"))
    db.connection.execute("UPDATE messages SET parts = 'not json' WHERE session_id = ?", (broken,))
    _, streaming = crashed_turn(db, sid)

    report = msgstore.repair(db, grace=0)

    assert [u.session_id for u in report.unreadable] == [broken]
    assert streaming in {f.message_id for f in report.finished}


# -- the grace rule for messages nobody claimed --------------------------------------------


def test_unclaimed_message_of_a_conversation_written_recently_is_skipped(
    db: Database, sid: str
) -> None:
    _, streaming = crashed_turn(db, sid)
    before = dump(db)

    report = msgstore.repair(db)  # the default grace: crush may still be writing it

    assert DEFAULT_GRACE == HOUR
    assert not report.changed
    assert streaming in {s.message_id for s in report.skipped}
    assert all("unclaimed" in s.reason for s in report.skipped)
    assert dump(db) == before


def test_unclaimed_message_is_repaired_once_its_conversation_is_quiet_for_grace(
    db: Database, sid: str
) -> None:
    _, streaming = crashed_turn(db, sid)
    backdate(db, sid, HOUR + 5)

    assert streaming in {f.message_id for f in msgstore.repair(db).finished}


def test_a_recently_written_sub_session_keeps_its_parent_turn_unrepaired(
    db: Database, sid: str
) -> None:
    # crush's agent tool: the parent's call waits while a sub-agent writes its session.
    call = add(db, sid, Role.ASSISTANT, ToolCall(id="a1", name="agent", finished=True))
    child = db.create_session("sub-agent", parent_session_id=sid).id
    add(db, child, Role.ASSISTANT, TextContent("working"), Finish("end_turn", time=1))
    backdate(db, sid, 2 * HOUR)

    report = msgstore.repair(db)

    assert call in {s.message_id for s in report.skipped}
    backdate(db, child, 2 * HOUR)
    assert call in {f.message_id for f in msgstore.repair(db).finished}


# -- leases ----------------------------------------------------------------------------------


def test_message_claimed_by_a_live_lease_is_never_touched(
    db: Database, sid: str, lease: Lease
) -> None:
    mid = add(db, sid, Role.ASSISTANT, ToolCall(id="c1", name="view"))
    lease.claim(mid)
    backdate(db, sid, 10 * HOUR)  # however old it looks
    before = dump(db)

    report = msgstore.repair(db, grace=0)

    (skipped,) = report.skipped
    assert skipped.message_id == mid
    assert skipped.reason.startswith(f"streamed by a live service: owner {lease.owner[:8]}")
    assert f"pid {os.getpid()}" in skipped.reason
    assert not report.changed
    assert dump(db) == before


def test_a_finished_reply_keeps_its_claim_while_its_tools_run(
    db: Database, sid: str, lease: Lease
) -> None:
    call = ToolCall(id="c1", name="bash", finished=True)
    mid = add(db, sid, Role.ASSISTANT, call, Finish(FinishReason.TOOL_USE, time=1))
    lease.claim(mid)

    report = msgstore.repair(db, grace=0)

    assert [s.message_id for s in report.skipped] == [mid]
    assert report.tool_results == ()


def test_two_leases_in_one_process_are_told_apart(db: Database, sid: str) -> None:
    with Lease.acquire(db) as alive:
        gone = Lease.acquire(db)
        streaming = add(db, sid, Role.ASSISTANT, TextContent("still going"))
        abandoned = add(db, sid, Role.ASSISTANT, TextContent("cut off"))
        alive.claim(streaming)
        gone.claim(abandoned)
        gone.abandon()  # its lock goes, as in a crash; its rows stay

        report = msgstore.repair(db)  # default grace: claims decide, not age

        assert [s.message_id for s in report.skipped] == [streaming]
        assert [(f.message_id, f.owner) for f in report.finished] == [(abandoned, gone.owner)]
        assert report.dead_owners == (gone.owner,)


def test_claims_and_lock_files_of_dead_owners_are_removed(db: Database, sid: str) -> None:
    lease = Lease.acquire(db)
    mid = add(db, sid, Role.ASSISTANT, TextContent("x"), Finish("end_turn", time=1))
    lease.claim(mid)  # a finished message: only its claim is stale
    owner, lock_path = lease.owner, lease.lock_path
    del lease  # dropped without release: its lock is gone, its file stays (as after SIGKILL)
    assert lock_path is not None and os.path.exists(lock_path)

    dry = msgstore.repair(db, dry_run=True)
    assert (dry.dead_owners, dry.stale_claims) == ((owner,), 1)
    assert os.path.exists(lock_path)

    report = msgstore.repair(db)

    assert (report.dead_owners, report.stale_claims) == ((owner,), 1)
    assert report.changed and not report.finished
    con = db.connection
    assert con.execute("SELECT count(*) FROM msgstore_claims").get == 0
    assert con.execute("SELECT count(*) FROM msgstore_owners").get == 0
    assert not os.path.exists(lock_path)
    assert not os.path.exists(f"{db.connection.filename}{LOCK_DIR_SUFFIX}")


def test_a_dead_owner_that_claimed_nothing_is_removed(db: Database) -> None:
    Lease.acquire(db).abandon()

    report = msgstore.repair(db, only_dead_owners=True)

    assert len(report.dead_owners) == 1 and report.changed
    assert db.connection.execute("SELECT count(*) FROM msgstore_owners").get == 0


def test_release_deletes_claims_owner_row_and_lock_file(db: Database, sid: str) -> None:
    lease = Lease.acquire(db)
    lease.claim(add(db, sid, Role.ASSISTANT))
    assert lease.lock_path is not None and os.path.exists(lease.lock_path)

    lease.release()
    lease.release()  # once is enough

    con = db.connection
    assert con.execute("SELECT count(*) FROM msgstore_claims").get == 0
    assert con.execute("SELECT count(*) FROM msgstore_owners").get == 0
    assert not os.path.exists(lease.lock_path)
    with pytest.raises(msgstore.StorageError, match="released"):
        lease.claim("another")


def test_a_lease_dropped_without_release_is_a_dead_owner(db: Database, sid: str) -> None:
    lease = Lease.acquire(db)
    mid = add(db, sid, Role.ASSISTANT, TextContent("x"))
    lease.claim(mid)
    owner = lease.owner
    del lease  # its lock closes with it

    report = msgstore.repair(db)

    assert [(f.message_id, f.owner) for f in report.finished] == [(mid, owner)]


def test_leases_of_a_memory_database_live_as_long_as_their_object() -> None:
    with msgstore.connect(":memory:") as db:
        sid = db.create_session("memory").id
        lease = Lease.acquire(db)
        mid = add(db, sid, Role.ASSISTANT, TextContent("x"))
        lease.claim(mid)
        assert lease.lock_path is None

        assert [s.message_id for s in msgstore.repair(db, grace=0).skipped] == [mid]
        del lease
        assert [f.message_id for f in msgstore.repair(db, grace=0).finished] == [mid]


def test_a_busy_acquire_leaves_no_row_and_no_lock_file(
    db: Database, locker: apsw.Connection
) -> None:
    Lease.acquire(db).release()  # the tables exist: only the owner row needs the lock
    db.set_busy_timeout(0)
    locker.execute("BEGIN IMMEDIATE")

    with pytest.raises(DatabaseBusy):
        Lease.acquire(db)

    locker.execute("ROLLBACK")
    assert not os.path.exists(f"{db.connection.filename}{LOCK_DIR_SUFFIX}")
    assert db.connection.execute("SELECT count(*) FROM msgstore_owners").get == 0


def test_a_read_only_database_cannot_be_leased(db_path: Path, db: Database) -> None:
    with msgstore.connect(db_path, read_only=True) as ro, pytest.raises(msgstore.StorageError):
        Lease.acquire(ro)


def test_lease_tables_are_created_by_a_lease_and_can_be_removed(db: Database) -> None:
    assert not has_lease_tables(db.connection)  # reading or connecting never adds them
    Lease.acquire(db).release()
    assert has_lease_tables(db.connection)
    remove_lease_tables(db.connection)
    assert not has_lease_tables(db.connection)


def test_only_dead_owners_looks_only_at_their_sessions(db: Database, sid: str) -> None:
    other = db.create_session("crush's").id
    crushs = add(db, other, Role.ASSISTANT, TextContent("unclaimed"))
    dead = Lease.acquire(db)
    mid = add(db, sid, Role.ASSISTANT, TextContent("claimed"))
    dead.claim(mid)
    dead.abandon()

    report = msgstore.repair(db, grace=0, only_dead_owners=True)

    assert [f.message_id for f in report.finished] == [mid]
    assert not db.stored_message(crushs).is_finished()


# -- files -----------------------------------------------------------------------------------


def test_crush_fixture_is_repaired_and_still_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "crush.db"
    shutil.copyfile(FIXTURE_DB, path)

    report = msgstore.repair(path)  # written long ago: the default grace has passed

    # Two replies that never finished, and toolu_02, whose only result comes before it.
    assert len(report.finished) == 2
    (added,) = report.tool_results
    assert added.tool_call_ids == ("toolu_02",)
    with msgstore.connect(path, read_only=True) as db:
        (session,) = db.all_sessions()
        messages = db.stored_messages(session.id)
        assert len(messages) == 10
        assert all(m.is_finished() for m in messages if m.role is Role.ASSISTANT)
        assert db.connection.execute("PRAGMA integrity_check").get == "ok"
        assert all(
            msgstore.decode_parts(msgstore.encode_parts(m.parts)) == m.parts for m in messages
        )
    assert not msgstore.repair(path).changed
    shown = run_msgstore("show", "--db", path, session.id)
    assert "toolu_02" in shown.stdout


def test_repair_by_path_never_creates_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(DatabaseError, match="no such file"):
        msgstore.repair(missing)
    assert not missing.exists()


def test_dry_run_by_path_opens_the_file_read_only(tmp_path: Path) -> None:
    path = tmp_path / "crush.db"
    shutil.copyfile(FIXTURE_DB, path)
    before = path.read_bytes()

    report = msgstore.repair(path, dry_run=True)

    assert len(report.finished) == 2
    assert path.read_bytes() == before
    assert not os.path.exists(f"{path}{LOCK_DIR_SUFFIX}")


def test_grace_must_be_a_number_of_seconds(db: Database) -> None:
    with pytest.raises(ValueError, match="grace"):
        msgstore.repair(db, grace=-1)


def test_cli_repair_prints_the_report_and_its_dry_run_leaves_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "crush.db"
    shutil.copyfile(FIXTURE_DB, path)
    before = path.read_bytes()

    dry = run_msgstore("repair", "--db", path, "--dry-run")

    assert path.read_bytes() == before
    assert dry.stdout.splitlines()[0] == (
        f"{path}: would finish 2 messages, would add 1 tool result in 1 new tool message "
        "(dry run: nothing was changed)"
    )
    done = run_msgstore("repair", "--db", path)
    assert done.stdout.splitlines()[0] == (
        f"{path}: finish 2 messages, add 1 tool result in 1 new tool message"
    )
    assert "error results for toolu_02" in done.stdout
    assert run_msgstore("repair", "--db", path).stdout == f"{path}: nothing to repair\n"


def test_cli_repair_refuses_a_missing_file_and_a_negative_grace(tmp_path: Path) -> None:
    missing = run_msgstore("repair", "--db", tmp_path / "nope.db", ok=False)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "no such file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    path = tmp_path / "crush.db"
    shutil.copyfile(FIXTURE_DB, path)
    bad = run_msgstore("repair", "--db", path, "--grace", "-1", ok=False)
    assert bad.returncode == 1
    assert "--grace must be a number of seconds >= 0" in bad.stderr
