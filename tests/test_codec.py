"""The parts JSON: byte-identical to Go's encoding/json, and as lenient as Go when reading."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import apsw
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgstore import (
    BinaryContent,
    CorruptRecord,
    Finish,
    FinishReason,
    ImageURLContent,
    InvalidPart,
    Part,
    ReasoningContent,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
    decode_parts,
    encode_parts,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def text_json(text: str) -> str:
    """The column value Go writes for a single text part holding ``text``.

    Built around the validators, so that the encoder's own handling of lone
    surrogates (which ``TextContent`` refuses) is tested too.
    """
    part = TextContent("")
    object.__setattr__(part, "text", text)
    return encode_parts([part])


def wrap(tag: str, data_json: str) -> str:
    return f'[{{"type":"{tag}","data":{data_json}}}]'


def decode_one(column: str) -> Part:
    parts = decode_parts(column)
    assert len(parts) == 1
    return parts[0]


# -- the crush fixture ------------------------------------------------------------------


def fixture_rows(path: Path) -> list[tuple[str, str]]:
    con = apsw.Connection(str(path))
    try:
        return list(con.execute("SELECT id, parts FROM messages ORDER BY created_at, rowid"))
    finally:
        con.close()


_PART_CLASSES: dict[str, type[Any]] = {
    "reasoning": ReasoningContent,
    "text": TextContent,
    "image_url": ImageURLContent,
    "tool_call": ToolCall,
    "tool_result": ToolResult,
    "finish": Finish,
}


def part_from_dump(item: dict[str, Any]) -> Part:
    """Build the part the Go dump describes, independently of the codec under test."""
    data = item["data"]
    if item["type"] == "binary":
        return BinaryContent(
            path=data["Path"], mime_type=data["MIMEType"], data=base64.b64decode(data["Data"])
        )
    part: Part = _PART_CLASSES[item["type"]](**data)
    return part


def test_fixture_rows_reencode_byte_for_byte(crush_fixture: Path) -> None:
    rows = fixture_rows(crush_fixture)
    assert len(rows) == 9
    for message_id, stored in rows:
        assert encode_parts(decode_parts(stored, message_id=message_id)) == stored, message_id


def test_fixture_rows_decode_to_the_values_go_dumped(
    crush_fixture: Path, crush_dump: list[dict[str, Any]]
) -> None:
    rows = dict(fixture_rows(crush_fixture))
    assert set(rows) == {line["id"] for line in crush_dump}
    for line in crush_dump:
        decoded = decode_parts(rows[line["id"]], message_id=line["id"])
        assert decoded == [part_from_dump(item) for item in line["parts"]], line["id"]
        go_types = [name.removeprefix("message.") for name in line["go_types"]]
        assert [type(p).__name__ for p in decoded] == go_types


def test_fixture_binary_data_decodes_to_raw_bytes(crush_fixture: Path) -> None:
    binaries = [
        p
        for _, stored in fixture_rows(crush_fixture)
        for p in decode_parts(stored)
        if isinstance(p, BinaryContent)
    ]
    assert [b.data for b in binaries] == [b"\x00\x01\x02\x7f\x80\xfe\xffhi\n", b""]


# -- exact output -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (
            ReasoningContent("think", "sig", "tsig", "tool", {"k": "v"}, 1, 2),
            '{"type":"reasoning","data":{"thinking":"think","signature":"sig",'
            '"thought_signature":"tsig","tool_id":"tool","responses_data":{"k":"v"},'
            '"started_at":1,"finished_at":2}}',
        ),
        (TextContent("hi"), '{"type":"text","data":{"text":"hi"}}'),
        (
            ImageURLContent("u", "high"),
            '{"type":"image_url","data":{"url":"u","detail":"high"}}',
        ),
        (
            BinaryContent("p", "text/plain", b"hi"),
            '{"type":"binary","data":{"Path":"p","MIMEType":"text/plain","Data":"aGk="}}',
        ),
        (
            ToolCall("id", "bash", "{}", True, True),
            '{"type":"tool_call","data":{"id":"id","name":"bash","input":"{}",'
            '"provider_executed":true,"finished":true}}',
        ),
        (
            ToolResult("id", "bash", "out", "ZA==", "image/png", "{}", True),
            '{"type":"tool_result","data":{"tool_call_id":"id","name":"bash","content":"out",'
            '"data":"ZA==","mime_type":"image/png","metadata":"{}","is_error":true}}',
        ),
        (
            Finish(FinishReason.ERROR, 7, "m", "d"),
            '{"type":"finish","data":{"reason":"error","time":7,"message":"m","details":"d"}}',
        ),
        (
            ShellCommand("ls", "a\n", 2),
            '{"type":"shell_command","data":{"command":"ls","output":"a\\n","exit_code":2}}',
        ),
    ],
)
def test_encode_is_compact_with_keys_in_go_struct_order(part: Part, expected: str) -> None:
    assert encode_parts([part]) == f"[{expected}]"


def test_encode_of_no_parts_is_an_empty_array() -> None:
    assert encode_parts([]) == "[]"


def test_encode_escapes_html_characters_like_go() -> None:
    assert text_json("<b>&</b>") == wrap(
        "text", '{"text":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e"}'
    )


def test_encode_escapes_line_and_paragraph_separators_like_go() -> None:
    assert text_json("a\u2028b\u2029c") == wrap("text", '{"text":"a\\u2028b\\u2029c"}')


def test_encode_escapes_quote_and_backslash() -> None:
    assert text_json('say "hi" \\ bye') == wrap("text", '{"text":"say \\"hi\\" \\\\ bye"}')


def test_encode_writes_short_escapes_for_backspace_formfeed_newline_return_tab() -> None:
    assert text_json("\b\f\n\r\t") == wrap("text", '{"text":"\\b\\f\\n\\r\\t"}')


def test_encode_writes_other_control_characters_as_lowercase_u00xx() -> None:
    assert text_json("\x00\x01\x1b\x1f") == wrap("text", '{"text":"\\u0000\\u0001\\u001b\\u001f"}')


def test_encode_writes_del_and_other_non_ascii_raw() -> None:
    text = "\x7f é \u2013 日本語 🚀 \U0010ffff \ufffd"
    assert text_json(text) == wrap("text", f'{{"text":"{text}"}}')


def test_a_part_with_a_lone_surrogate_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidPart, match=r"TextContent.text holds a lone surrogate"):
        TextContent("a\ud800b")
    with pytest.raises(InvalidPart, match=r"ToolCall.input"):
        ToolCall(id="c", input="\udfff")
    with pytest.raises(InvalidPart, match=r"responses_data holds a lone surrogate"):
        ReasoningContent(responses_data={"k": ["\ud800"]})


def test_encode_turns_lone_surrogates_into_escaped_replacement_character() -> None:
    # Defence in depth for a part made around the validators.
    encoded = text_json("a\ud800b\udfffc\ud83d\ude80")
    assert encoded == wrap("text", '{"text":"a\\ufffdb\\ufffdc\\ufffd\\ufffd"}')
    encoded.encode("utf-8")  # storable
    assert decode_one(encoded) == TextContent("a\ufffdb\ufffdc\ufffd\ufffd")


def test_encode_escapes_apply_inside_responses_data() -> None:
    part = ReasoningContent(responses_data={"<k>": ["&", None, 1, True, {"x": "\u2028"}]})
    assert '"responses_data":{"\\u003ck\\u003e":["\\u0026",null,1,true,{"x":"\\u2028"}]}' in (
        encode_parts([part])
    )


def test_encode_writes_finish_reason_enum_and_plain_string_as_their_value() -> None:
    assert '"reason":"end_turn"' in encode_parts([Finish(FinishReason.END_TURN)])
    assert '"reason":"from_the_future"' in encode_parts([Finish("from_the_future")])


def test_encode_writes_int64_extremes() -> None:
    encoded = encode_parts([ReasoningContent(started_at=INT64_MIN, finished_at=INT64_MAX)])
    assert f'"started_at":{INT64_MIN},"finished_at":{INT64_MAX}' in encoded


# -- omitempty --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "expected_data"),
    [
        (
            ReasoningContent(),
            '{"thinking":"","signature":"","thought_signature":"","tool_id":"",'
            '"responses_data":null}',
        ),
        (TextContent(), '{"text":""}'),
        (ImageURLContent(), '{"url":""}'),
        (BinaryContent(), '{"Path":"","MIMEType":"","Data":""}'),
        (
            ToolCall(),
            '{"id":"","name":"","input":"","provider_executed":false,"finished":false}',
        ),
        (
            ToolResult(),
            '{"tool_call_id":"","name":"","content":"","data":"","mime_type":"",'
            '"metadata":"","is_error":false}',
        ),
        (Finish(), '{"reason":"","time":0}'),
        (ShellCommand(), '{"command":"","output":"","exit_code":0}'),
    ],
)
def test_encode_omits_only_omitempty_keys_of_zero_parts(part: Part, expected_data: str) -> None:
    assert encode_parts([part]) == f'[{{"type":"{_tag(part)}","data":{expected_data}}}]'


def _tag(part: Part) -> str:
    return {
        ReasoningContent: "reasoning",
        TextContent: "text",
        ImageURLContent: "image_url",
        BinaryContent: "binary",
        ToolCall: "tool_call",
        ToolResult: "tool_result",
        Finish: "finish",
        ShellCommand: "shell_command",
    }[type(part)]


def test_encode_omits_zero_reasoning_timestamps_each_on_its_own() -> None:
    started = encode_parts([ReasoningContent(started_at=5)])
    assert '"started_at":5' in started
    assert "finished_at" not in started
    finished = encode_parts([ReasoningContent(finished_at=-1)])
    assert '"finished_at":-1' in finished
    assert "started_at" not in finished


def test_encode_omits_empty_finish_message_and_details_each_on_its_own() -> None:
    assert encode_parts([Finish("stop", 0, message="m")]) == wrap(
        "finish", '{"reason":"stop","time":0,"message":"m"}'
    )
    assert encode_parts([Finish("stop", 0, details="d")]) == wrap(
        "finish", '{"reason":"stop","time":0,"details":"d"}'
    )


def test_encode_writes_zero_time_and_exit_code_which_are_not_omitempty() -> None:
    assert '"time":0' in encode_parts([Finish("stop")])
    assert '"exit_code":0' in encode_parts([ShellCommand()])


# -- base64 -----------------------------------------------------------------------------


def test_binary_data_is_standard_padded_base64() -> None:
    encoded = encode_parts([BinaryContent(data=b"\xfb\xff\xbf")])
    assert '"Data":"+/+/"' in encoded  # standard alphabet, not URL-safe
    assert '"Data":"+w=="' in encode_parts([BinaryContent(data=b"\xfb")])
    every_byte = bytes(range(256))
    assert decode_one(encode_parts([BinaryContent(data=every_byte)])) == BinaryContent(
        data=every_byte
    )


def test_decode_base64_skips_line_breaks_like_go() -> None:
    column = wrap("binary", '{"Data":"aGVs\\r\\nbG8="}')
    assert decode_one(column) == BinaryContent(data=b"hello")


@pytest.mark.parametrize("bad", ["aGk", "aGk=aGk=", "a$k=", "=aGk"])
def test_decode_invalid_base64_raises_corrupt_record(bad: str) -> None:
    with pytest.raises(CorruptRecord, match="binary"):
        decode_parts(wrap("binary", f'{{"Data":"{bad}"}}'))


def test_decode_binary_data_from_array_of_numbers_like_go() -> None:
    assert decode_one(wrap("binary", '{"Data":[104,105]}')) == BinaryContent(data=b"hi")


# -- lenient decoding -------------------------------------------------------------------


def test_decode_accepts_old_go_u0008_and_u000c_escapes() -> None:
    column = wrap("text", '{"text":"a\\u0008b\\u000Cc"}')
    part = decode_one(column)
    assert part == TextContent("a\bb\fc")
    assert encode_parts([part]) == wrap("text", '{"text":"a\\bb\\fc"}')


def test_decode_ignores_unknown_keys_inside_data() -> None:
    column = wrap("tool_call", '{"id":"x","surprise":{"a":[1]},"finished":true}')
    assert decode_one(column) == ToolCall(id="x", finished=True)


def test_decode_ignores_unknown_keys_beside_type_and_data() -> None:
    column = '[{"type":"text","data":{"text":"x"},"version":2}]'
    assert decode_one(column) == TextContent("x")


@pytest.mark.parametrize(
    "cls",
    [
        ReasoningContent,
        TextContent,
        ImageURLContent,
        BinaryContent,
        ToolCall,
        ToolResult,
        Finish,
        ShellCommand,
    ],
)
def test_decode_gives_missing_keys_their_zero_value(cls: type[Any]) -> None:
    zero = cls()
    assert decode_one(wrap(_tag(zero), "{}")) == zero
    assert decode_one(wrap(_tag(zero), '{"unrelated":1}')) == zero


def test_decode_reads_null_fields_as_zero_values() -> None:
    column = (
        '[{"type":"reasoning","data":{"thinking":null,"responses_data":null,"started_at":null}},'
        '{"type":"binary","data":{"Path":null,"Data":null}},'
        '{"type":"tool_call","data":{"id":null,"finished":null}},'
        '{"type":"finish","data":{"reason":null,"time":null,"message":null}}]'
    )
    assert decode_parts(column) == [ReasoningContent(), BinaryContent(), ToolCall(), Finish()]


def test_decode_reads_null_data_as_a_zero_part() -> None:
    assert decode_parts('[{"type":"tool_result","data":null}]') == [ToolResult()]


def test_decode_reads_null_column_as_no_parts_like_go() -> None:
    assert decode_parts("null") == []
    assert decode_parts(" [ ] ") == []


def test_decode_matches_keys_case_insensitively_like_go() -> None:
    column = (
        '[{"Type":"text","DATA":{"TEXT":"t"}},'
        '{"type":"binary","data":{"path":"p","mimetype":"m","data":"aGk="}},'
        # U+017F and U+212A fold onto s and k in Go, too.
        '{"type":"reasoning","data":{"\u017fignature":"s","thin\u212aing":"k"}}]'
    )
    assert decode_parts(column) == [
        TextContent("t"),
        BinaryContent("p", "m", b"hi"),
        ReasoningContent(thinking="k", signature="s"),
    ]


def test_decode_does_not_fold_other_non_ascii_letters_onto_field_names() -> None:
    # "\u0131" (dotless i) upper-cases to "I" in Python, but Go does not match it to "i".
    assert decode_one(wrap("tool_call", '{"\u0131d":"x"}')) == ToolCall()


def test_decode_takes_the_last_of_keys_that_differ_only_in_case_like_go() -> None:
    assert decode_one(wrap("text", '{"text":"first","Text":"second"}')) == TextContent("second")


def test_decode_keeps_responses_data_verbatim() -> None:
    column = wrap(
        "reasoning",
        '{"thinking":"","signature":"","thought_signature":"","tool_id":"",'
        '"responses_data":{"type":"openai.responses.reasoning_metadata",'
        '"data":{"item_id":"rs_1","encrypted_content":null,"summary":["a"]}}}',
    )
    part = decode_one(column)
    assert isinstance(part, ReasoningContent)
    assert part.responses_data == {
        "type": "openai.responses.reasoning_metadata",
        "data": {"item_id": "rs_1", "encrypted_content": None, "summary": ["a"]},
    }
    assert encode_parts([part]) == column


def test_decode_keeps_known_finish_reasons_as_enum_and_unknown_as_str() -> None:
    parts = decode_parts(
        '[{"type":"finish","data":{"reason":"max_tokens"}},'
        '{"type":"finish","data":{"reason":"from_the_future"}}]'
    )
    assert parts == [Finish(FinishReason.MAX_TOKENS), Finish("from_the_future")]
    assert isinstance(parts[0], Finish)
    assert parts[0].reason is FinishReason.MAX_TOKENS


def test_decode_accepts_bytes_and_reads_invalid_utf8_as_replacement_characters() -> None:
    column = b'[{"type":"text","data":{"text":"a\xffb\xed\xa0\x80c \xc3\xa9"}}]'
    assert decode_one(column) == TextContent("a\ufffdb\ufffd\ufffd\ufffdc \u00e9")


def test_decode_reads_escaped_lone_surrogates_as_replacement_character_like_go() -> None:
    column = wrap("text", '{"text":"a\\ud800b\\uDC00c\\ud83d\\ude80 \\\\ud800"}')
    assert decode_one(column) == TextContent("a\ufffdb\ufffdc\U0001f680 \\ud800")


def test_decode_reads_escaped_lone_surrogates_in_responses_data_as_replacement_character() -> None:
    column = wrap("reasoning", '{"responses_data":{"k\\ud800":["\\udc00",{"x":"\\ud83d"}]}}')
    part = decode_one(column)
    assert isinstance(part, ReasoningContent)
    assert part.responses_data == {"k\ufffd": ["\ufffd", {"x": "\ufffd"}]}


# -- errors -----------------------------------------------------------------------------


def test_decode_unknown_type_raises_corrupt_record_naming_type_and_message_id() -> None:
    column = '[{"type":"text","data":{}},{"type":"hologram","data":{}}]'
    with pytest.raises(CorruptRecord) as caught:
        decode_parts(column, message_id="msg-42")
    assert "'hologram'" in str(caught.value)
    assert "msg-42" in str(caught.value)
    assert caught.value.message_id == "msg-42"


def test_decode_null_part_raises_corrupt_record_for_its_empty_type_like_go() -> None:
    with pytest.raises(CorruptRecord, match="unknown part type ''"):
        decode_parts("[null]")


def test_decode_malformed_json_raises_corrupt_record_keeping_the_cause() -> None:
    with pytest.raises(CorruptRecord, match="msg-1") as caught:
        decode_parts('[{"type":"text","data":{"text":"x"}},]', message_id="msg-1")
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize("column", ["", "[", "[NaN]", "[Infinity]", '"text"', "{}", "5"])
def test_decode_non_array_or_non_json_raises_corrupt_record(column: str) -> None:
    with pytest.raises(CorruptRecord):
        decode_parts(column)


@pytest.mark.parametrize(
    ("column", "names"),
    [
        (wrap("finish", '{"time":"5"}'), ["'finish'", "time", "string"]),
        (wrap("finish", '{"time":1.0}'), ["'finish'", "time", "number"]),
        (wrap("finish", '{"time":1e3}'), ["'finish'", "time"]),
        (wrap("finish", '{"reason":3}'), ["'finish'", "reason"]),
        (wrap("text", '{"text":5}'), ["'text'", "text", "number"]),
        (wrap("text", '{"text":["a"]}'), ["'text'", "text", "array"]),
        (wrap("tool_call", '{"finished":1}'), ["'tool_call'", "finished"]),
        (wrap("tool_result", '{"is_error":"true"}'), ["'tool_result'", "is_error"]),
        (wrap("shell_command", '{"exit_code":true}'), ["'shell_command'", "exit_code", "bool"]),
        (wrap("reasoning", '{"responses_data":"x"}'), ["'reasoning'", "responses_data"]),
        (wrap("reasoning", '{"responses_data":[1]}'), ["'reasoning'", "responses_data"]),
        (wrap("binary", '{"Data":5}'), ["'binary'", "data"]),
    ],
)
def test_decode_wrong_json_type_raises_corrupt_record_naming_part_and_field(
    column: str, names: list[str]
) -> None:
    with pytest.raises(CorruptRecord) as caught:
        decode_parts(column, message_id="m-7")
    for name in names:
        assert name in str(caught.value)
    assert "m-7" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, cattrs.ClassValidationError)
    assert all(isinstance(exc, TypeError | ValueError) for exc in cause.exceptions)


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1])
def test_decode_integer_outside_int64_raises_corrupt_record(value: int) -> None:
    with pytest.raises(CorruptRecord, match="int64"):
        decode_parts(wrap("finish", f'{{"time":{value}}}'))


def test_decode_accepts_integers_at_the_int64_limits() -> None:
    column = wrap("reasoning", f'{{"started_at":{INT64_MIN},"finished_at":{INT64_MAX}}}')
    assert decode_one(column) == ReasoningContent(started_at=INT64_MIN, finished_at=INT64_MAX)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ('[{"type":"text"}]', "no data"),
        ('[{"type":"text","data":"hi"}]', "string"),
        ('[{"type":"text","data":[1]}]', "array"),
        ('[{"type":5,"data":{}}]', "not a string"),
        ("[5]", "not an object"),
        ('[["text",{}]]', "not an object"),
    ],
)
def test_decode_malformed_wrapper_raises_corrupt_record(column: str, message: str) -> None:
    with pytest.raises(CorruptRecord, match=message):
        decode_parts(column)


def test_encode_non_part_raises_invalid_part_naming_the_index() -> None:
    with pytest.raises(InvalidPart, match=r"parts\[1\] is a dict"):
        encode_parts([TextContent("ok"), {"type": "text", "data": {"text": "x"}}])  # type: ignore[list-item]


def test_encode_accepts_subclasses_of_part_classes() -> None:
    class Special(TextContent):
        pass

    assert encode_parts([Special("x")]) == encode_parts([TextContent("x")])


def test_encode_integer_outside_int64_raises_invalid_part_naming_index_and_field() -> None:
    # Construction refuses such a value already; the encoder checks again for a part
    # whose field was changed behind the validators' back.
    part = Finish("stop", 0)
    object.__setattr__(part, "time", INT64_MAX + 1)
    with pytest.raises(InvalidPart, match=r"parts\[1\].*Finish\.time"):
        encode_parts([TextContent(), part])


@pytest.mark.parametrize("value", [object(), float("nan"), {1, 2}])
def test_encode_unserializable_responses_data_raises_invalid_part_naming_index(
    value: object,
) -> None:
    # The dict is the caller's and stays mutable after the part is built.
    responses_data: dict[str, Any] = {}
    part = ReasoningContent(responses_data=responses_data)
    responses_data["x"] = value
    with pytest.raises(InvalidPart, match=r"parts\[1\] \(reasoning\)"):
        encode_parts([TextContent(), part])


# -- properties -------------------------------------------------------------------------

_SPECIAL = list('<>&"\\/\b\f\n\r\t\x00\x01\x1f\x7f\u2028\u2029\ufffd\u00e9\u65e5\U0001f680')
# Surrogates cannot round-trip (they become U+FFFD, as in Go); the escaping test has them.
texts = st.text(st.sampled_from(_SPECIAL) | st.characters(codec="utf-8"), max_size=40)
int64s = st.integers(INT64_MIN, INT64_MAX)
bools = st.booleans()

part_strategy: st.SearchStrategy[Part] = st.one_of(
    st.builds(
        ReasoningContent,
        texts,
        texts,
        texts,
        texts,
        st.none() | st.dictionaries(texts, texts, max_size=3),
        int64s,
        int64s,
    ),
    st.builds(TextContent, texts),
    st.builds(ImageURLContent, texts, texts),
    st.builds(BinaryContent, texts, texts, st.binary(max_size=40)),
    st.builds(ToolCall, texts, texts, texts, bools, bools),
    st.builds(ToolResult, texts, texts, texts, texts, texts, texts, bools),
    st.builds(Finish, st.sampled_from(FinishReason) | texts, int64s, texts, texts),
    st.builds(ShellCommand, texts, texts, int64s),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(part_strategy, max_size=6))
def test_any_parts_survive_encode_then_decode_unchanged(parts: list[Part]) -> None:
    encoded = encode_parts(parts)
    encoded.encode("utf-8")  # storable in SQLite as TEXT
    assert decode_parts(encoded) == parts
    assert decode_parts(encoded.encode("utf-8")) == parts


def go_quote(text: str) -> str:
    """Go's encoding/json string encoding (Go 1.22+), one character at a time."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif code < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # Go's escape for each byte of invalid UTF-8
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from(_SPECIAL) | st.characters(categories=["Cs"]) | st.characters()))
def test_encode_escapes_any_text_exactly_like_go(text: str) -> None:
    assert text_json(text) == f'[{{"type":"text","data":{{"text":{go_quote(text)}}}}}]'
