"""Terminal detection's per-token shortcut: ``same_structure`` never claims a change away."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from msgstore import (
    Finish,
    FinishReason,
    ImageURLContent,
    Message,
    Part,
    ReasoningContent,
    Role,
    TextContent,
    ToolCall,
)
from msgstore._structure import same_structure, structure_of

MESSAGE = Message(id="m1", session_id="s1", role=Role.ASSISTANT)


def structure(parts: list[Part]) -> object:
    return structure_of(MESSAGE, parts)


parts_strategy = st.one_of(
    st.builds(TextContent, st.text(max_size=5)),
    st.builds(
        ReasoningContent,
        thinking=st.text(max_size=5),
        finished_at=st.sampled_from([0, 0, 1700000000]),
    ),
    st.builds(ToolCall, id=st.sampled_from(["t1", "t2"]), finished=st.booleans()),
    st.builds(Finish, reason=st.sampled_from(list(FinishReason))),
    st.builds(ImageURLContent, url=st.sampled_from(["a", "b"])),
)


def _successor(draw: st.DrawFn, old: list[Part]) -> list[Part]:
    """A later state as a producer makes them: mostly one part replaced by a new object
    of the same type (a token), sometimes a part added, removed or retyped."""
    new = list(old)
    kind = draw(st.sampled_from(["replace", "replace", "replace", "add", "remove", "retype"]))
    if kind == "add" or not new:
        new.insert(draw(st.integers(0, len(new))), draw(parts_strategy))
        return new
    i = draw(st.integers(0, len(new) - 1))
    if kind == "remove":
        del new[i]
    elif kind == "retype":
        new[i] = draw(parts_strategy)
    else:
        part = new[i]
        if isinstance(part, TextContent):
            new[i] = attrs.evolve(part, text=part.text + "x")
        elif isinstance(part, ReasoningContent):
            new[i] = attrs.evolve(part, finished_at=draw(st.sampled_from([0, 1700000001])))
        elif isinstance(part, ToolCall):
            new[i] = attrs.evolve(part, finished=draw(st.booleans()), input=part.input + "{")
        else:
            new[i] = attrs.evolve(part)
    return new


@st.composite
def state_pairs(draw: st.DrawFn) -> tuple[list[Part], list[Part]]:
    old = draw(st.lists(parts_strategy, max_size=6))
    return old, _successor(draw, old)


@given(state_pairs())
def test_same_structure_implies_equal_structures(pair: tuple[list[Part], list[Part]]) -> None:
    old, new = pair
    if same_structure(old, new):
        assert structure(new) == structure(old)


def test_a_token_keeps_the_structure_and_a_terminal_change_does_not() -> None:
    reasoning = ReasoningContent(thinking="hm", finished_at=1700000000)
    text = TextContent("Hel")
    call = ToolCall(id="t1", name="view", input='{"pa')
    old: list[Part] = [reasoning, text, call]
    assert same_structure(old, [reasoning, TextContent("Hello"), call])
    assert same_structure(old, [reasoning, text, attrs.evolve(call, input='{"path')])
    assert not same_structure(old, [reasoning, text, attrs.evolve(call, finished=True)])
    assert not same_structure(old, [*old, Finish(reason=FinishReason.END_TURN)])
    assert not same_structure(old, [reasoning, text, call, ToolCall(id="t2")])
    assert not same_structure(
        [ReasoningContent(thinking="hm")], [ReasoningContent(thinking="hm", finished_at=1)]
    )
    assert not same_structure([text], [ImageURLContent(url="x")])
