"""A model-based test: generated programs against a plain in-memory model.

Each example is a program of create / delta / reasoning / tool call / finish / flush /
delete / advance-clock / restart steps over several messages, run on a fresh file under
``trio.run(..., clock=MockClock(autojump_threshold=0))``. After every step:

* every read (``get``, ``list``) equals the model (the newest state the caller gave);
* the file holds, for every message, a state the model had at some point (never one it
  never had), and no row for a deleted message;
* what was acknowledged is in the file: the message after a terminal update or flush,
  every message after ``flush_all``, after the clock moved past a whole window, and after a
  restart (leaving the service's scope, closing and reopening the database).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import apsw
import attrs
import pytest
import trio
import trio.testing
from conftest import long_sweeps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario import stored_parts

import msgstore
from msgstore import Message, MessageNotFound, ToolCall, encode_parts, open_message_service

pytestmark = pytest.mark.reliability


@attrs.frozen
class Op:
    kind: str
    m: int = 0  # which message (an index into those created, modulo their number)
    arg: Any = None


_texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=5)
ops = st.one_of(
    st.builds(Op, st.just("create"), arg=st.sampled_from(["assistant", "user"])),
    st.builds(Op, st.just("delta"), st.integers(0, 5), _texts),
    st.builds(Op, st.just("think"), st.integers(0, 5), _texts),
    st.builds(Op, st.just("think_end"), st.integers(0, 5)),
    st.builds(Op, st.just("tool_call"), st.integers(0, 5)),
    st.builds(Op, st.just("tool_input"), st.integers(0, 5), _texts),
    st.builds(Op, st.just("tool_end"), st.integers(0, 5)),
    st.builds(Op, st.just("finish"), st.integers(0, 5), st.sampled_from(["end_turn", "error"])),
    st.builds(Op, st.just("flush"), st.integers(0, 5)),
    st.builds(Op, st.just("flush_all")),
    st.builds(Op, st.just("delete"), st.integers(0, 5)),
    st.builds(Op, st.just("advance"), arg=st.sampled_from([0.001, 0.01, 0.02, 0.033, 0.5, 2.0])),
    st.builds(Op, st.just("restart")),
)
programs = st.tuples(
    st.sampled_from([0.033, 0.0]),  # debounce
    st.lists(ops, min_size=1, max_size=40).map(lambda p: [Op("create"), *p]),
)


@attrs.define
class Model:
    """The caller's view: each message's newest state, and every state it ever had."""

    order: list[str] = attrs.Factory(list)  # creation order
    current: dict[str, Message] = attrs.Factory(dict)  # live messages
    history: dict[str, set[str]] = attrs.Factory(dict)  # id -> encoded states
    deleted: set[str] = attrs.Factory(set)
    calls: int = 0  # tool call ids

    def accept(self, msg: Message) -> None:
        self.current[msg.id] = msg.clone()
        self.history.setdefault(msg.id, set()).add(encode_parts(msg.parts))

    def pick(self, m: int) -> str | None:
        return self.order[m % len(self.order)] if self.order else None


def mutate(msg: Message, op: Op, model: Model) -> bool:
    """Apply ``op`` to the caller's message; return whether SPEC §3 makes it terminal."""
    was_finished = msg.is_finished()
    if op.kind == "delta":
        msg.append_content(op.arg)
        return was_finished
    if op.kind == "think":
        reasoning = msg.reasoning_content()
        if reasoning.finished_at:
            msg.append_content(op.arg)  # reasoning is over; stream text instead
        else:
            msg.append_reasoning_content(op.arg)
        return was_finished
    if op.kind == "think_end":
        reasoning = msg.reasoning_content()
        if reasoning.thinking and not reasoning.finished_at:
            msg.finish_thinking()
            return msg.reasoning_content().finished_at > 0 or was_finished
        msg.append_content(".")
        return was_finished
    if op.kind == "tool_call":
        model.calls += 1
        msg.add_tool_call(ToolCall(id=f"call-{model.calls}", name="bash"))
        return True
    open_calls = [c for c in msg.tool_calls() if not c.finished]
    if op.kind == "tool_input":
        if open_calls:
            msg.append_tool_call_input(open_calls[-1].id, op.arg)
        else:
            msg.append_content(op.arg)
        return was_finished
    if op.kind == "tool_end":
        if open_calls:
            msg.finish_tool_call(open_calls[0].id)
            return True
        msg.append_content("!")
        return was_finished
    if op.kind == "finish":
        msg.add_finish(op.arg)
        return True
    raise AssertionError(op.kind)


_MUTATIONS = {"delta", "think", "think_end", "tool_call", "tool_input", "tool_end", "finish"}


class Runner:
    def __init__(self, path: Path, debounce: float) -> None:
        self.path = path
        self.debounce = debounce
        self.model = Model()
        self.mine: dict[str, Message] = {}  # the caller's own (mutable) messages
        self.db = msgstore.connect(path)
        self.db.create_session("model", id="s1")
        self.reader = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)

    def file(self) -> dict[str, str]:
        """The newest written state of each message: rows with the journal applied."""
        return stored_parts(self.reader)

    def plain_rows(self) -> dict[str, str]:
        """The rows as crush reads them (no journal)."""
        return {str(i): str(p) for i, p in self.reader.execute("SELECT id, parts FROM messages")}

    def check_written(self, ids: list[str] | None = None) -> None:
        on_disk = self.file()
        for id in self.model.current if ids is None else ids:
            assert on_disk.get(id) == encode_parts(self.model.current[id].parts), id

    async def check(self, svc: msgstore.MessageService) -> None:
        model = self.model
        for id, expected in model.current.items():
            got = await svc.get(id)
            assert got.parts == expected.parts
        for id in model.deleted:
            with pytest.raises(MessageNotFound):
                await svc.get(id)
        listed = await svc.list("s1")
        assert [m.id for m in listed] == [i for i in model.order if i in model.current]
        assert [m.parts for m in listed] == [model.current[m.id].parts for m in listed]
        on_disk = self.file()
        for id, text in on_disk.items():
            assert id not in model.deleted, f"deleted {id} is back"
            assert text in model.history[id], f"{id} holds a state the model never had: {text}"

    async def step(self, svc: msgstore.MessageService, op: Op) -> None:
        model = self.model
        if op.kind == "create":
            msg = await svc.create("s1", op.arg or "assistant")
            model.order.append(msg.id)
            self.mine[msg.id] = msg
            model.accept(msg)
            self.check_written([msg.id])
        elif op.kind in _MUTATIONS:
            id = model.pick(op.m)
            if id is None:
                return
            msg = self.mine[id]
            if id in model.deleted:
                msg.append_content("after delete")
                with pytest.raises(MessageNotFound):
                    await svc.update(msg)
                return
            terminal = mutate(msg, op, model)
            await svc.update(msg)
            model.accept(msg)
            if terminal or self.debounce <= 0:
                self.check_written([id])
        elif op.kind == "flush":
            id = model.pick(op.m)
            if id is not None:
                await svc.flush(id)
                if id in model.current:
                    self.check_written([id])
        elif op.kind == "flush_all":
            await svc.flush_all()
            self.check_written()
        elif op.kind == "delete":
            id = model.pick(op.m)
            if id is None:
                return
            if id in model.deleted:
                with pytest.raises(MessageNotFound):
                    await svc.delete(id)
                return
            await svc.delete(id)
            model.deleted.add(id)
            del model.current[id]
        elif op.kind == "advance":
            await trio.sleep(op.arg)
            # Strictly longer than the window: at the deadline itself, the actor's wake-up
            # and this task's are simultaneous, in either order.
            if op.arg > self.debounce:
                self.check_written()
        else:
            raise AssertionError(op.kind)

    async def run(self, program: list[Op]) -> None:
        i = 0
        while i < len(program):
            async with open_message_service(self.db, debounce=self.debounce) as svc:
                while i < len(program):
                    op = program[i]
                    i += 1
                    if op.kind == "restart":
                        break
                    await self.step(svc, op)
                    await self.check(svc)
            # Leaving the scope wrote everything, folded: crush sees every row whole.
            self.check_written()
            assert self.plain_rows() == self.file()
            self.db.close()
            self.db = msgstore.connect(self.path)

    def close(self) -> None:
        self.reader.close()
        self.db.close()


def test_generated_programs_match_the_model() -> None:
    examples = 0

    @settings(
        max_examples=3000 if long_sweeps() else 200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(programs)
    def run_example(program: tuple[float, list[Op]]) -> None:
        nonlocal examples
        examples += 1
        debounce, ops_ = program
        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(Path(tmp) / "model.db", debounce)
            try:
                trio.run(runner.run, ops_, clock=trio.testing.MockClock(autojump_threshold=0))
            finally:
                runner.close()

    run_example()
    print(f"REPORT model examples={examples} lost=0")
