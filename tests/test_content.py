"""The content model: part validation and the Message helpers (SPEC §1)."""

from __future__ import annotations

import datetime

import attrs
import pytest

from msgstore import (
    BinaryContent,
    Finish,
    FinishReason,
    ImageURLContent,
    InvalidPart,
    Message,
    ReasoningContent,
    Role,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
)

ALL_PARTS = [
    ReasoningContent,
    TextContent,
    ImageURLContent,
    BinaryContent,
    ToolCall,
    ToolResult,
    Finish,
    ShellCommand,
]


def new_message(*parts: object) -> Message:
    return Message(id="m", session_id="s", role=Role.ASSISTANT, parts=list(parts))  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ALL_PARTS)
def test_every_part_field_rejects_a_wrong_type_naming_the_field(cls: type) -> None:
    for field in attrs.fields(cls):
        if field.name == "reason":
            wrong: object = 3  # reason takes any str; an int is wrong
        elif field.default in ("", b""):
            wrong = 1
        elif field.default is None:
            wrong = "not an object"
        else:
            wrong = "1"
        with pytest.raises(InvalidPart, match=rf"{cls.__name__}\.{field.name}"):
            cls(**{field.name: wrong})


def test_bool_is_not_accepted_where_an_int_belongs() -> None:
    with pytest.raises(InvalidPart, match="exit_code"):
        ShellCommand(exit_code=True)


def test_binary_data_must_be_bytes() -> None:
    with pytest.raises(InvalidPart, match=r"BinaryContent\.data must be bytes"):
        BinaryContent(data="text")  # type: ignore[arg-type]


def test_responses_data_must_hold_json_values() -> None:
    with pytest.raises(InvalidPart, match="responses_data"):
        ReasoningContent(responses_data={"x": object()})


def test_parts_are_immutable() -> None:
    part = TextContent("hi")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        part.text = "changed"  # type: ignore[misc]


def test_unknown_finish_reason_is_kept_as_a_string() -> None:
    assert Finish(reason="brand_new").reason == "brand_new"
    assert Finish(reason="end_turn").reason is FinishReason.END_TURN


def test_message_rejects_an_unknown_role() -> None:
    with pytest.raises(InvalidPart, match="role"):
        Message(id="m", session_id="s", role="robot")  # type: ignore[arg-type]


def test_content_is_the_first_text_part_or_an_empty_one() -> None:
    assert new_message().content() == TextContent("")
    assert new_message(TextContent("a"), TextContent("b")).content() == TextContent("a")


def test_append_content_extends_the_text_part_or_adds_one() -> None:
    msg = new_message()
    msg.append_content("Hel")
    msg.append_content("lo")
    assert msg.parts == [TextContent("Hello")]


def test_append_content_extends_only_the_first_text_part() -> None:
    # crush's seed appends the delta to every text part; content() reads the first.
    msg = new_message(TextContent("a"), TextContent("b"))
    msg.append_content("!")
    assert msg.parts == [TextContent("a!"), TextContent("b")]


def test_append_reasoning_content_starts_a_part_with_started_at() -> None:
    msg = new_message()
    msg.append_reasoning_content("hm")
    msg.append_reasoning_content("m")
    reasoning = msg.reasoning_content()
    assert reasoning.thinking == "hmm"
    assert reasoning.started_at > 0
    assert msg.is_thinking()


def test_reasoning_helpers_keep_the_other_fields() -> None:
    msg = new_message(ReasoningContent(thinking="t", tool_id="tool", responses_data={"a": 1}))
    msg.append_reasoning_content("x")
    msg.append_reasoning_signature("sig")
    msg.finish_thinking()
    reasoning = msg.reasoning_content()
    assert (reasoning.thinking, reasoning.signature, reasoning.tool_id) == ("tx", "sig", "tool")
    assert reasoning.responses_data == {"a": 1}
    assert reasoning.finished_at > 0


def test_append_thought_signature_sets_tool_id() -> None:
    msg = new_message()
    msg.append_thought_signature("abc", "call-1")
    msg.append_thought_signature("def", "call-2")
    reasoning = msg.reasoning_content()
    assert (reasoning.thought_signature, reasoning.tool_id) == ("abcdef", "call-2")


def test_finish_thinking_stamps_once() -> None:
    msg = new_message(ReasoningContent(thinking="t", started_at=10, finished_at=20))
    msg.finish_thinking()
    assert msg.reasoning_content().finished_at == 20
    assert msg.thinking_duration() == datetime.timedelta(seconds=10)


def test_thinking_duration_is_zero_without_reasoning() -> None:
    assert new_message().thinking_duration() == datetime.timedelta(0)


def test_add_tool_call_replaces_by_id_else_appends() -> None:
    msg = new_message()
    msg.add_tool_call(ToolCall(id="a", name="view"))
    msg.add_tool_call(ToolCall(id="b", name="edit"))
    msg.add_tool_call(ToolCall(id="a", name="view", input="{}"))
    assert msg.tool_calls() == [
        ToolCall(id="a", name="view", input="{}"),
        ToolCall(id="b", name="edit"),
    ]


def test_tool_call_input_and_finish_keep_provider_executed() -> None:
    msg = new_message(ToolCall(id="a", name="search", provider_executed=True))
    msg.append_tool_call_input("a", '{"q":')
    msg.append_tool_call_input("a", '"x"}')
    msg.finish_tool_call("a")
    assert msg.tool_calls() == [
        ToolCall(id="a", name="search", input='{"q":"x"}', provider_executed=True, finished=True)
    ]


def test_helpers_on_an_unknown_tool_call_id_change_nothing() -> None:
    msg = new_message(ToolCall(id="a"))
    msg.append_tool_call_input("zzz", "x")
    msg.finish_tool_call("zzz")
    assert msg.parts == [ToolCall(id="a")]


def test_set_tool_calls_and_results_replace_all_of_their_kind() -> None:
    msg = new_message(TextContent("t"), ToolCall(id="a"), ToolResult(tool_call_id="a"))
    msg.set_tool_calls([ToolCall(id="b"), ToolCall(id="c")])
    msg.set_tool_results([ToolResult(tool_call_id="c")])
    assert msg.parts == [
        TextContent("t"),
        ToolCall(id="b"),
        ToolCall(id="c"),
        ToolResult(tool_call_id="c"),
    ]


def test_add_finish_replaces_any_finish_part() -> None:
    msg = new_message(Finish(reason=FinishReason.STOP), TextContent("t"))
    msg.add_finish(FinishReason.ERROR, "boom", "details")
    finish = msg.finish_part()
    assert finish is not None
    assert (finish.reason, finish.message, finish.details) == (
        FinishReason.ERROR,
        "boom",
        "details",
    )
    assert finish.time > 0
    assert sum(type(p) is Finish for p in msg.parts) == 1
    assert msg.is_finished()
    assert msg.finish_reason() == "error"


def test_unfinished_message_has_no_finish_reason() -> None:
    assert new_message().finish_reason() == ""
    assert new_message().finish_part() is None


def test_add_image_url_and_binary() -> None:
    msg = new_message()
    msg.add_image_url("https://x/y.png", "high")
    msg.add_binary("image/png", b"\x89PNG")
    assert msg.image_url_content() == [ImageURLContent(url="https://x/y.png", detail="high")]
    assert msg.binary_content() == [BinaryContent(mime_type="image/png", data=b"\x89PNG")]


def test_reset_streamed_content_keeps_only_the_rest() -> None:
    keep = [ImageURLContent(url="u"), ToolResult(tool_call_id="x"), ShellCommand(command="ls")]
    msg = new_message(
        ReasoningContent(thinking="t"), TextContent("x"), ToolCall(id="a"), Finish(), *keep
    )
    msg.reset_streamed_content()
    assert msg.parts == keep


def test_clone_has_an_independent_parts_list() -> None:
    msg = new_message(TextContent("a"))
    copy = msg.clone()
    copy.append_content("b")
    copy.parts.append(Finish())
    assert msg.parts == [TextContent("a")]
    assert copy == Message(
        id="m", session_id="s", role=Role.ASSISTANT, parts=[TextContent("ab"), Finish()]
    )


def test_helpers_reject_non_parts() -> None:
    msg = new_message()
    with pytest.raises(InvalidPart):
        msg.add_tool_call(TextContent("x"))  # type: ignore[arg-type]
    with pytest.raises(InvalidPart, match="not a ToolCall"):
        msg.set_tool_calls([TextContent("x")])  # type: ignore[list-item]
    with pytest.raises(InvalidPart):
        msg.append_content(5)  # type: ignore[arg-type]


def test_int_fields_must_fit_in_int64_like_go() -> None:
    with pytest.raises(InvalidPart, match=r"Finish\.time is outside int64"):
        Finish(time=2**63)


def test_responses_data_refuses_nan() -> None:
    with pytest.raises(InvalidPart, match="responses_data"):
        ReasoningContent(responses_data={"x": float("nan")})
