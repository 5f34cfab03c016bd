"""Bad input: each refused with a clear, typed error, and nothing already accepted lost.

Covers every wrong type for every part field (and for ``Message`` and ``create``), an
unknown part type and malformed JSON in a stored row, paths that are a directory, not a
database, or a truncated database, ids with no row, updates after delete and after the
service closed, and very large parts (10 MB of text, 50 MB of binary, and a state over
SQLite's length limit).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import apsw
import attrs
import pytest
import trio
import trio.testing
from scenario import open_plain, stored_parts

import msgstore
from msgstore import (
    BinaryContent,
    CorruptRecord,
    Database,
    DatabaseError,
    Finish,
    InvalidPart,
    InvalidUpdate,
    Message,
    MessageNotFound,
    ReasoningContent,
    ServiceClosed,
    StorageError,
    TextContent,
    encode_parts,
    open_message_service,
)
from msgstore._content import PART_TYPES

pytestmark = pytest.mark.reliability

# One value of each kind a caller might pass by mistake.
_WRONG: dict[str, Any] = {
    "None": None,
    "int": 1,
    "huge int": 2**63,
    "float": 1.5,
    "nan": float("nan"),
    "str": "text",
    "bytes": b"bytes",
    "bool": True,
    "list": ["x"],
    "dict": {"k": "v"},
    "dict with a non-JSON value": {"k": object()},
    "object": object(),
}


def _accepts(field: attrs.Attribute[Any], value: Any) -> bool:
    """Whether ``value`` is a right value for the field (then it is not a wrong-type case)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if field.name == "reason":  # Finish.reason: any str (unknown reasons are kept)
        return isinstance(value, str)
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return type(value) is int and -(2**63) <= value < 2**63
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "bytes":
        return isinstance(value, bytes)
    if field.name == "responses_data":
        return value is None or (isinstance(value, dict) and value == {"k": "v"})
    raise AssertionError(f"unexpected field type {field.type!r}")


def _part_cases() -> Iterator[tuple[type, str, str]]:
    for cls in PART_TYPES:
        for field in attrs.fields(cls):
            for label, value in _WRONG.items():
                if not _accepts(field, value):
                    yield cls, field.name, label


PART_CASES = list(_part_cases())


@pytest.mark.parametrize(
    ("cls", "field", "label"), PART_CASES, ids=[f"{c.__name__}.{f}={v}" for c, f, v in PART_CASES]
)
def test_every_wrong_type_for_every_part_field_is_refused_naming_the_field(
    cls: type, field: str, label: str
) -> None:
    with pytest.raises(InvalidPart, match=rf"{cls.__name__}\.{field}"):
        cls(**{field: _WRONG[label]})


_MESSAGE_CASES = [
    ("id", None),
    ("id", 5),
    ("session_id", b"s1"),
    ("role", "narrator"),
    ("role", 3),
    ("model", None),
    ("provider", 1.5),
    ("created_at", "yesterday"),
    ("created_at", True),
    ("is_summary_message", "yes"),
]


@pytest.mark.parametrize(("field", "value"), _MESSAGE_CASES)
def test_every_wrong_type_for_a_message_field_is_refused(field: str, value: object) -> None:
    fields: dict[str, object] = {"id": "m", "session_id": "s", "role": "assistant"}
    fields[field] = value
    with pytest.raises(InvalidPart, match=field):
        Message(**fields)  # type: ignore[arg-type]


# -- through the service ----------------------------------------------------------------


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    with msgstore.connect(db_path) as database:
        database.create_session("bad input", id="s1")
        yield database


async def test_a_non_part_in_an_update_is_refused_and_the_accepted_state_kept(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    tried = 0
    async with open_message_service(db) as svc:
        msg = await svc.create("s1", "assistant")
        msg.append_content("accepted")
        msg.add_finish("end_turn")
        await svc.update(msg)
        for value in [*_WRONG.values(), TextContent, Finish]:
            bad = msg.clone()
            bad.parts.insert(0, value)
            with pytest.raises(InvalidUpdate, match=r"parts\[0\]"):
                await svc.update(bad)
            tried += 1
        with pytest.raises(InvalidUpdate):
            await svc.update("not a message")  # type: ignore[arg-type]
        for value in (None, 5, 1.5):
            bad = msg.clone()
            bad.parts = value  # type: ignore[assignment]
            with pytest.raises(InvalidUpdate, match="parts"):
                await svc.update(bad)
            tried += 1
        assert (await svc.get(msg.id)).parts == msg.parts
    with open_plain(db_path) as con:
        assert stored_parts(con)[msg.id] == encode_parts(msg.parts)
    print(f"REPORT bad-input non-part-updates={tried + 1}")


_CREATE_CASES = [
    {"role": "narrator"},
    {"parts": ["not a part"]},
    {"model": b"bytes"},
    {"model": 5},
    {"provider": b"bytes"},
    {"provider": 1.5},
    {"is_summary_message": "yes"},
    {"is_summary_message": None},
]


@pytest.mark.parametrize("bad", _CREATE_CASES, ids=[str(c) for c in _CREATE_CASES])
async def test_create_with_an_argument_of_the_wrong_type_writes_no_row(
    autojump_clock: trio.testing.MockClock, db: Database, bad: dict[str, Any]
) -> None:
    async with open_message_service(db) as svc:
        good = await svc.create("s1", "user", [TextContent("kept")])
        args: dict[str, Any] = {"session_id": "s1", "role": "assistant", **bad}
        with pytest.raises(InvalidUpdate):
            await svc.create(**args)
        # No half-written row: the session still lists.
        assert [m.id for m in await svc.list("s1")] == [good.id]


async def test_create_in_a_session_that_does_not_exist_is_refused(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    async with open_message_service(db) as svc:
        for session in ["no-such-session", 5]:
            with pytest.raises((msgstore.SessionNotFound, InvalidUpdate)):
                await svc.create(session, "assistant")  # type: ignore[arg-type]


# -- stored rows that do not decode -------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        '[{"type": "hologram", "data": {}}]',
        "{not json",
        '[{"type": "text", "data": {"text": 5}}]',
        "[",
        "",
        "null",
        '{"type": "text"}',
    ],
)
async def test_a_corrupt_row_raises_corrupt_record_and_the_other_rows_still_work(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path, parts: str
) -> None:
    async with open_message_service(db) as svc:
        good = await svc.create("s1", "assistant")
        bad = await svc.create("s1", "assistant")
        with open_plain(db_path) as con:
            con.execute("UPDATE messages SET parts = ? WHERE id = ?", (parts, bad.id))
        if parts == "null":  # Go reads null as no parts: not corrupt
            assert (await svc.get(bad.id)).parts == []
            return
        with pytest.raises(CorruptRecord, match=bad.id):
            await svc.get(bad.id)
        with pytest.raises(CorruptRecord, match=bad.id):
            await svc.update(bad)  # its row cannot be read, so nothing is buffered for it
        good.append_content("still streams")
        good.add_finish("end_turn")
        await svc.update(good)
        assert (await svc.get(good.id)).parts == good.parts
        # crush's list fails as a whole on a bad row; the error names it.
        with pytest.raises(CorruptRecord, match=bad.id):
            await svc.list("s1")
    assert db.stored_message(good.id).parts == good.parts


# -- paths that are not databases ---------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_directory_is_refused(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "a-directory.db"
    path.mkdir()
    with pytest.raises(DatabaseError):
        msgstore.connect(path, read_only=read_only)
    assert path.is_dir() and not any(path.iterdir())


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
@pytest.mark.parametrize(
    "content",
    [b"hello, world\n" * 500, os.urandom(10_000), b"SQLite format 3\x00" + b"\xff" * 5000],
    ids=["text", "random", "bad-header"],
)
def test_a_file_that_is_not_a_database_is_refused_and_never_overwritten(
    tmp_path: Path, read_only: bool, content: bytes
) -> None:
    path = tmp_path / "not-a.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseError):
        msgstore.connect(path, read_only=read_only)
    assert path.read_bytes() == content
    assert _siblings(path) == []


@pytest.fixture(scope="module")
def full_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Message]]:
    path = tmp_path_factory.mktemp("full") / "full.db"
    with msgstore.connect(path) as db:
        db.create_session("full", id="s1")
        rows = [
            db.insert_message(session_id="s1", role="user", parts=[TextContent(f"{n} " * 200)])
            for n in range(200)
        ]
    return path, {m.id: m for m in rows}


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
@pytest.mark.parametrize("keep", [10, 100, 4096, 4097, 0.5, -4096, -1])
def test_a_truncated_file_is_refused_or_reads_whole_and_is_never_overwritten(
    tmp_path: Path, full_db: tuple[Path, dict[str, Message]], keep: float, read_only: bool
) -> None:
    source, rows = full_db
    size = source.stat().st_size
    length = int(size * keep) if isinstance(keep, float) else keep % size
    path = tmp_path / "truncated.db"
    shutil.copyfile(source, path)
    os.truncate(path, length)
    before = _digest(path)
    try:
        db = msgstore.connect(path, read_only=read_only)
    except DatabaseError:
        pass
    else:
        # Only a cut inside the last page's unused tail may open; then nothing is lost.
        with db:
            assert {m.id: m for m in db.stored_messages("s1")} == rows
    assert _digest(path) == before


# -- ids, deletes and a closed service -------------------------------------------------------


async def test_an_id_with_no_row(autojump_clock: trio.testing.MockClock, db: Database) -> None:
    async with open_message_service(db) as svc:
        ghost = Message(id="no-such-id", session_id="s1", role="assistant")
        with pytest.raises(MessageNotFound):
            await svc.update(ghost)
        with pytest.raises(MessageNotFound):
            await svc.get("no-such-id")
        with pytest.raises(MessageNotFound):
            await svc.delete("no-such-id")
        await svc.flush("no-such-id")  # nothing pending: a no-op
        assert svc.statistics().live_actors == 0


async def test_update_after_delete_is_refused_and_never_recreates_the_row(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    async with open_message_service(db, debounce=1.0) as svc:
        msg = await svc.create("s1", "assistant")
        msg.append_content("pending")
        await svc.update(msg)
        await svc.delete(msg.id)
        for terminal in (False, True):
            msg.append_content(" more")
            if terminal:
                msg.add_finish("end_turn")
            with pytest.raises(MessageNotFound):
                await svc.update(msg)
        with pytest.raises(MessageNotFound):
            await svc.delete(msg.id)
        await trio.sleep(5)
    with pytest.raises(MessageNotFound):
        db.stored_message(msg.id)


async def test_calls_after_the_service_closed(
    autojump_clock: trio.testing.MockClock, db: Database
) -> None:
    async with open_message_service(db, debounce=1.0) as svc:
        msg = await svc.create("s1", "assistant")
        msg.append_content("written at close")
        await svc.update(msg)
    msg.append_content(" refused")
    with pytest.raises(ServiceClosed):
        await svc.update(msg)
    with pytest.raises(ServiceClosed):
        await svc.create("s1", "assistant")
    with pytest.raises(ServiceClosed):
        await svc.delete(msg.id)
    with pytest.raises(ServiceClosed):
        await svc.delete_session_messages("s1")
    # Nothing is pending after the final flush: flushes are no-ops, reads still work.
    await svc.flush(msg.id)
    await svc.flush_all()
    assert (await svc.get(msg.id)).content().text == "written at close"


# -- size ------------------------------------------------------------------------------------


async def test_a_10_mb_text_part_and_a_50_mb_binary_part_are_written_and_read_back(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    text = "0123456789abcdef" * (10 * 2**20 // 16)
    blob = bytes(range(256)) * (50 * 2**20 // 256)
    async with open_message_service(db) as svc:
        msg = await svc.create("s1", "assistant")
        msg.append_content(text)
        msg.parts.append(BinaryContent(path="big.bin", mime_type="application/x", data=blob))
        msg.add_finish("end_turn")
        await svc.update(msg)  # terminal: written before it returns
    with msgstore.connect(db_path, read_only=True) as other:
        stored = other.stored_message(msg.id)
    assert stored.content().text == text
    assert stored.binary_content()[0].data == blob


async def test_a_state_over_the_sqlite_length_limit_is_a_clear_error_and_others_go_on(
    autojump_clock: trio.testing.MockClock, db: Database, db_path: Path
) -> None:
    # SQLite's default limit is 1e9 bytes; lowered here so the test stays small.
    db.connection.limit(apsw.SQLITE_LIMIT_LENGTH, 1_000_000)
    async with open_message_service(db, shutdown_timeout=1.0) as svc:
        big = await svc.create("s1", "assistant")
        small = await svc.create("s1", "assistant")
        big.append_content("x" * 2_000_000)
        big.add_finish("end_turn")
        with pytest.raises(StorageError, match="too big"):
            await svc.update(big)
        # Still buffered (a later, smaller state would replace it) ...
        assert (await svc.get(big.id)).parts == big.parts
        # ... and the other messages are not held up.
        small.append_content("fine")
        small.add_finish("end_turn")
        await svc.update(small)
        with open_plain(db_path) as con:
            assert stored_parts(con)[small.id] == encode_parts(small.parts)
        # A smaller state of the big message is written in its place.
        big.parts = [TextContent("shorter"), big.parts[-1]]
        await svc.update(big)
    assert db.stored_message(big.id).parts == big.parts


def test_reasoning_responses_data_must_hold_json_only() -> None:
    with pytest.raises(InvalidPart, match="responses_data"):
        ReasoningContent(responses_data={"when": trio})
