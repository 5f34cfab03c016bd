"""The delta journal (issue #12): what a window writes, when rows are folded, reads."""

from __future__ import annotations

from pathlib import Path

import apsw
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import given

import msgstore
from msgstore import (
    Database,
    FinishReason,
    Message,
    Part,
    ReasoningContent,
    Role,
    TextContent,
    ToolCall,
    _journal,
    encode_parts,
    open_message_service,
)
from msgstore._actor import FOLD_FLOOR
from msgstore.testing import row_now


def crush_row(path: Path, message_id: str) -> str:
    """The ``parts`` text as crush (or any reader of the plain table) sees it."""
    con = apsw.Connection(str(path))
    try:
        parts = con.execute("SELECT parts FROM messages WHERE id = ?", (message_id,)).get
    finally:
        con.close()
    return str(parts)


def journal_rows(path: Path, message_id: str | None = None) -> int:
    con = apsw.Connection(str(path))
    try:
        if message_id is None:
            return int(con.execute("SELECT count(*) FROM msgstore_journal").get)
        query = "SELECT count(*) FROM msgstore_journal WHERE message_id = ?"
        return int(con.execute(query, (message_id,)).get)
    finally:
        con.close()


# -- the format ---------------------------------------------------------------------------


def test_an_append_is_a_small_delta_and_applies_back() -> None:
    old: list[Part] = [ReasoningContent(thinking="hmm"), TextContent(text="Hello")]
    new: list[Part] = [old[0], TextContent(text="Hello, world")]
    delta = _journal.delta(old, new)
    assert delta == '[[1,"a",", world"]]'
    merged = list(old)
    _journal.apply(merged, delta, message_id="m")
    assert merged == new


def test_a_change_that_is_not_an_append_has_no_delta() -> None:
    assert _journal.delta([TextContent("abc")], [TextContent("abd")]) is None
    assert _journal.delta([TextContent("abc")], []) is None
    assert _journal.delta([TextContent("abc")], [ReasoningContent(thinking="abc")]) is None


_piece = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)


@given(st.lists(st.tuples(st.integers(0, 3), _piece), max_size=30))
def test_any_run_of_appends_and_new_parts_round_trips(steps: list[tuple[int, str]]) -> None:
    parts: list[Part] = []
    for kind, piece in steps:
        before = list(parts)
        if kind == 0 or not parts:
            parts.append(TextContent(text=piece))
        elif kind == 1 and isinstance(parts[-1], TextContent):
            parts[-1] = TextContent(text=parts[-1].text + piece)
        elif kind == 2:
            parts.append(ToolCall(id=f"t{len(parts)}", name="view", input=piece))
        else:
            last = parts[-1]
            if isinstance(last, ToolCall):
                parts[-1] = ToolCall(id=last.id, name=last.name, input=last.input + piece)
        delta = _journal.delta(before, parts)
        if delta is not None:
            merged = list(before)
            _journal.apply(merged, delta, message_id="m")
            assert merged == parts


# -- what a streaming message writes ------------------------------------------------------


async def test_windows_are_journal_rows_and_the_plain_row_is_one_fold_behind(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        msg.append_content("first")
        await svc.update(msg)
        await trio.sleep(0.05)  # the actor's first write: a fold
        assert svc.statistics().folds == 1
        for token in [" second", " third"]:
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.05)
        stats = svc.statistics()
        assert (stats.writes, stats.folds) == (3, 1)
        assert journal_rows(db_path, msg.id) == 2
        # msgstore's readers (the service, the CLI, another connection) see it all ...
        assert row_now(db_path, msg.id).content().text == "first second third"
        # ... crush sees the row as of the last fold.
        assert crush_row(db_path, msg.id) == encode_parts([TextContent("first")])


async def test_a_terminal_change_folds_into_a_byte_identical_row(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for token in ["a", "b", "c"]:
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.05)
        msg.add_finish(FinishReason.END_TURN)
        await svc.update(msg)  # terminal: written before it returns
        assert crush_row(db_path, msg.id) == encode_parts(msg.parts)
        assert journal_rows(db_path) == 0  # dead rows go with the fold


async def test_a_flush_and_the_end_of_the_service_fold(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        a = await svc.create(session_id, Role.ASSISTANT)
        b = await svc.create(session_id, Role.ASSISTANT)
        for msg in (a, b):
            for token in ["x", "y"]:
                msg.append_content(token)
                await svc.update(msg)
                await trio.sleep(0.05)
        await svc.flush(a.id)
        assert crush_row(db_path, a.id) == encode_parts(a.parts)
        assert crush_row(db_path, b.id) != encode_parts(b.parts)
    # Closed: every row whole, the journal empty.
    assert crush_row(db_path, b.id) == encode_parts(b.parts)
    assert journal_rows(db_path) == 0


async def test_an_idle_actor_folds_before_it_retires(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033, idle_timeout=1.0) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for token in ["x", "y"]:
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.05)
        assert journal_rows(db_path, msg.id) == 1
        await trio.sleep(2)
        assert svc.statistics().live_actors == 0
        assert crush_row(db_path, msg.id) == encode_parts(msg.parts)


async def test_a_change_that_is_not_an_append_is_written_as_a_fold(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for text in ["draft", "draft two"]:
            msg.append_content(text[len(msg.content().text) :])
            await svc.update(msg)
            await trio.sleep(0.05)
        msg.reset_streamed_content()
        msg.append_content("redo")
        await svc.update(msg)
        await trio.sleep(0.05)
        assert crush_row(db_path, msg.id) == encode_parts(msg.parts)


async def test_a_journal_that_outgrows_its_row_is_folded_and_bytes_stay_linear(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    con = db.connection
    db.install_feed()
    con.execute("CREATE TEMP TABLE written (n INTEGER NOT NULL)")
    con.execute("INSERT INTO temp.written VALUES (0)")
    con.execute(
        "CREATE TEMP TRIGGER count_rows AFTER UPDATE OF parts ON main.messages BEGIN "
        "UPDATE written SET n = n + length(NEW.parts); END"
    )
    con.execute(
        "CREATE TEMP TRIGGER count_journal AFTER INSERT ON main.msgstore_journal BEGIN "
        "UPDATE written SET n = n + length(NEW.delta); END"
    )
    token = "0123456789abcdef" * 64  # 1 KiB
    windows = 400
    async with open_message_service(db, debounce=0.033) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for _ in range(windows):
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.05)
        folds = svc.statistics().folds
        written = con.execute("SELECT n FROM temp.written").get
        final = len(encode_parts(msg.parts))
        # Folds at doubling sizes past the floor: a handful, not one per window.
        assert 3 <= folds <= 12
        # Every byte of text goes to the journal once, and the folds add up to about
        # twice the final row: linear (a rewrite per window would be ~windows/2 x).
        assert written < 4 * final
        # Between folds, the journal never holds more than its bound.
        assert journal_rows(db_path, msg.id) * len(token) <= max(final, FOLD_FLOOR) + len(token)


async def test_reads_merge_the_journal_and_ignore_rows_another_writer_replaced(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, session_id: str
) -> None:
    async with open_message_service(db, debounce=0.033, idle_timeout=3600) as svc:
        msg = await svc.create(session_id, Role.ASSISTANT)
        for token in ["one", " two", " three"]:
            msg.append_content(token)
            await svc.update(msg)
            await trio.sleep(0.05)
        with msgstore.connect(db_path, read_only=True) as other:
            (listed,) = other.stored_messages(session_id)
            assert listed.content().text == "one two three"
        # crush rewrites the row itself: the journal no longer builds on it.
        con = apsw.Connection(str(db_path))
        with con:
            con.execute(
                "UPDATE messages SET parts = ? WHERE id = ?",
                (encode_parts([TextContent("crush wrote this")]), msg.id),
            )
        con.close()
        assert row_now(db_path, msg.id).content().text == "crush wrote this"
        svc.db.set_busy_timeout(0)


def test_a_message_read_through_the_plain_database_api_sees_the_journal(
    db: Database, db_path: Path, session_id: str
) -> None:
    db.install_feed()
    msg = db.insert_message(session_id=session_id, role="assistant")
    base = db.update_message(msg.id, [TextContent("abc")])
    delta = _journal.delta([TextContent("abc")], [TextContent("abcdef")])
    assert delta is not None
    db.append_journal(msg.id, base, delta)
    assert db.stored_message(msg.id).content().text == "abcdef"
    assert isinstance(db.stored_message(msg.id), Message)


# -- found in review: numbering, dead rows, bad rows, late installs ---------------------


def test_a_row_folded_to_the_same_text_again_does_not_revive_its_dead_journal(
    db: Database, session_id: str
) -> None:
    db.install_feed()
    a = db.insert_message(session_id=session_id, role="assistant")
    b = db.insert_message(session_id=session_id, role="assistant")
    base_b = db.update_message(b.id, [TextContent("b")])
    db.append_journal(b.id, base_b, '[[0,"a","!"]]')  # b's unfolded row blocks pruning
    text = [TextContent("same")]
    base = db.update_message(a.id, text)
    db.append_journal(a.id, base, '[[0,"a"," and more"]]')
    db.update_message(a.id, [TextContent("reset")])  # a regenerate: not an append
    assert db.update_message(a.id, text) == base  # the same text, the same base
    assert db.stored_message(a.id).content().text == "same"  # the old row is dead
    assert db.stored_message(b.id).content().text == "b!"


async def test_folding_a_dead_services_journal_never_gives_a_number_out_twice(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    db.install_feed()
    msg = db.insert_message(session_id=session_id, role="assistant")
    base = db.update_message(msg.id, [TextContent("x")])
    db.owner = "a-dead-service"
    db.append_journal(msg.id, base, '[[0,"a","y"]]')
    db.connection.execute("DELETE FROM messages WHERE id = ?", (msg.id,))
    top = db.append_journal(msg.id, base, '[[0,"a","z"]]')  # the newest number
    assert db.last_seq() == top
    async with open_message_service(db) as svc:  # folds (drops) the dead rows
        assert db.connection.execute("SELECT count(*) FROM msgstore_journal").get == 0
        assert svc.last_seq > top
        other = await svc.create(session_id, Role.USER)
    assert db.last_seq() > top + 1
    assert other.id


async def test_a_journal_row_that_cannot_be_applied_does_not_stop_a_service_starting(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    db.install_feed()
    msg = db.insert_message(session_id=session_id, role="assistant")
    base = db.update_message(msg.id, [TextContent("kept")])
    db.owner = "a-dead-service"
    db.append_journal(msg.id, base, '[[7,"a","nowhere"]]')  # no part 7
    async with open_message_service(db) as svc:
        assert (await svc.get(msg.id)).content().text == "kept"
    assert db.connection.execute("SELECT count(*) FROM msgstore_journal").get == 0


def test_a_reader_opened_before_the_journal_existed_sees_it_once_it_does(
    db: Database, db_path: Path, session_id: str
) -> None:
    msg = db.insert_message(session_id=session_id, role="assistant")
    with msgstore.connect(db_path, read_only=True) as reader:
        assert not reader.feed_installed
        db.install_feed()
        base = db.update_message(msg.id, [TextContent("a")])
        db.append_journal(msg.id, base, '[[0,"a","b"]]')
        assert reader.stored_message(msg.id).content().text == "ab"
