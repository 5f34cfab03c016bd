"""The content model: immutable parts, and the mutable ``Message`` that holds them.

Field names follow SPEC §1 (crush's JSON keys). Helpers keep the seed's semantics,
except where the seed has a bug, each marked ``crush bug:`` below.
"""

from __future__ import annotations

import datetime
import enum
import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar

import attrs

from ._errors import InvalidPart


class Role(enum.StrEnum):
    """Who wrote a message."""

    ASSISTANT = "assistant"
    USER = "user"
    SYSTEM = "system"
    TOOL = "tool"


class FinishReason(enum.StrEnum):
    """Why a message stopped; ``STOP`` is what ``create`` gives non-assistant messages."""

    END_TURN = "end_turn"
    MAX_TOKENS = "max_tokens"
    TOOL_USE = "tool_use"
    CANCELED = "canceled"
    ERROR = "error"
    CONTENT_FILTER = "content_filter"
    UNKNOWN = "unknown"
    STOP = "stop"


def _now() -> int:
    # Part timestamps are Unix seconds of the wall clock, as crush stores them; the
    # service's timing (windows, deadlines) uses Trio's clock instead.
    return int(time.time())


# -- validators ---------------------------------------------------------------------
# A wrong type must fail at construction with the field's name: a str where an int
# belongs would otherwise be written to disk and break Go's decoder.


def _check(kind: type, kind_name: str, *, allow_bool: bool = True) -> Callable[..., None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is kind:
            return
        if isinstance(value, kind) and (allow_bool or not isinstance(value, bool)):
            return
        raise InvalidPart(
            f"{type(instance).__name__}.{attribute.name} must be {kind_name}, "
            f"got {type(value).__name__} {value!r:.60}"
        )

    return check


_is_str = _check(str, "str")

#: How deeply ``responses_data`` may nest (objects and arrays). Deeper values are
#: refused when a part is made: Python's JSON decoder recurses, so a row holding them
#: could be written but never read back.
MAX_JSON_DEPTH = 100


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (which UTF-8 cannot store)."""
    if text.isascii():  # O(1): CPython keeps the flag
        return False
    try:
        # Strict codecs refuse surrogates. UTF-8 has the cheapest call (a token's
        # delta: 0.2 us against 0.7); UTF-32 the quickest scan of a long text.
        text.encode("utf-8" if len(text) < 1024 else "utf-32-le")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_error(where: str, text: str) -> InvalidPart:
    index = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
    return InvalidPart(
        f"{where} holds a lone surrogate {text[index]!r} at index {index}: it cannot be "
        "stored as UTF-8 (decode your input with errors='replace')"
    )


def _str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is str and value.isascii():
        return  # the common case, in O(1)
    _is_str(instance, attribute, value)
    if has_lone_surrogate(value):  # type: ignore[arg-type]
        raise _surrogate_error(f"{type(instance).__name__}.{attribute.name}", value)  # type: ignore[arg-type]


def check_text(value: object, where: str) -> str:
    """``value`` if it is a str that UTF-8 can store; else ``InvalidPart`` naming ``where``."""
    if type(value) is str and value.isascii():
        return value
    if not isinstance(value, str):
        raise InvalidPart(f"{where} must be str, got {type(value).__name__} {value!r:.60}")
    if has_lone_surrogate(value):
        raise _surrogate_error(where, value)
    return value


def _check_json_tree(value: object, where: str) -> None:
    """Refuse a JSON value nested deeper than ``MAX_JSON_DEPTH`` or holding a string (key
    or value) with a lone surrogate. One walk, iterative: a recursive walk is what fails
    on such values. Depth is reported before a surrogate, whatever comes first."""
    surrogate: str | None = None
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogate is None and has_lone_surrogate(item):
                surrogate = item
            continue
        if isinstance(item, dict):
            children: list[object] = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidPart(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
    if surrogate is not None:
        raise _surrogate_error(where, surrogate)


_is_int = _check(int, "int", allow_bool=False)
_INT64 = range(-(2**63), 2**63)


def _int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _is_int(instance, attribute, value)
    # The file is shared with Go, whose fields are int64.
    if value not in _INT64:
        raise InvalidPart(f"{type(instance).__name__}.{attribute.name} is outside int64: {value}")


_bool = _check(bool, "bool")
_bytes = _check(bytes, "bytes")


def _json_object_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        # Checked here, not at write time: a value JSON cannot hold would make every
        # later write of the message fail, long after the caller could be told.
        _check_json_tree(value, f"{type(instance).__name__}.{attribute.name}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidPart(
                f"{type(instance).__name__}.{attribute.name} must hold only JSON values: {exc}"
            ) from None
        return
    raise InvalidPart(
        f"{type(instance).__name__}.{attribute.name} must be a dict or None, "
        f"got {type(value).__name__} {value!r:.60}"
    )


def _finish_reason(value: object) -> FinishReason | str:
    # Unknown reasons from newer crush versions are kept as plain strings rather than
    # refused, so that a file written by a newer crush still reads.
    if isinstance(value, FinishReason):
        return value
    if isinstance(value, str):
        try:
            return FinishReason(value)
        except ValueError:
            return value
    raise InvalidPart(f"Finish.reason must be a FinishReason or str, got {type(value).__name__}")


# -- parts ----------------------------------------------------------------------------


@attrs.frozen
class ReasoningContent:
    """The model's thinking, with the provider's signatures."""

    thinking: str = attrs.field(default="", validator=_str)
    signature: str = attrs.field(default="", validator=_str)
    thought_signature: str = attrs.field(default="", validator=_str)
    tool_id: str = attrs.field(default="", validator=_str)
    # OpenAI Responses metadata, kept as the JSON object it was stored as.
    responses_data: dict[str, Any] | None = attrs.field(
        default=None, validator=_json_object_or_none
    )
    started_at: int = attrs.field(default=0, validator=_int)
    finished_at: int = attrs.field(default=0, validator=_int)


@attrs.frozen
class TextContent:
    """Text the model wrote (or the user typed)."""

    text: str = attrs.field(default="", validator=_str)


@attrs.frozen
class ImageURLContent:
    """An image given by URL (or data: URL)."""

    url: str = attrs.field(default="", validator=_str)
    detail: str = attrs.field(default="", validator=_str)


@attrs.frozen
class BinaryContent:
    """An attachment: raw bytes with a path and MIME type."""

    path: str = attrs.field(default="", validator=_str)
    mime_type: str = attrs.field(default="", validator=_str)
    data: bytes = attrs.field(default=b"", validator=_bytes)


@attrs.frozen
class ToolCall:
    """A tool call the model makes; ``input`` grows as it streams, ``finished`` once complete."""

    id: str = attrs.field(default="", validator=_str)
    name: str = attrs.field(default="", validator=_str)
    input: str = attrs.field(default="", validator=_str)
    provider_executed: bool = attrs.field(default=False, validator=_bool)
    finished: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen
class ToolResult:
    """The answer to a tool call, matched by ``tool_call_id``."""

    tool_call_id: str = attrs.field(default="", validator=_str)
    name: str = attrs.field(default="", validator=_str)
    content: str = attrs.field(default="", validator=_str)
    data: str = attrs.field(default="", validator=_str)
    mime_type: str = attrs.field(default="", validator=_str)
    metadata: str = attrs.field(default="", validator=_str)
    is_error: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen
class Finish:
    """The end of a message: why, and when (Unix seconds)."""

    reason: FinishReason | str = attrs.field(default="", converter=_finish_reason)
    time: int = attrs.field(default=0, validator=_int)
    message: str = attrs.field(default="", validator=_str)
    details: str = attrs.field(default="", validator=_str)


@attrs.frozen
class ShellCommand:
    """A shell command the user ran, with its output and exit code."""

    command: str = attrs.field(default="", validator=_str)
    output: str = attrs.field(default="", validator=_str)
    exit_code: int = attrs.field(default=0, validator=_int)


Part: TypeAlias = (
    ReasoningContent
    | TextContent
    | ImageURLContent
    | BinaryContent
    | ToolCall
    | ToolResult
    | Finish
    | ShellCommand
)
PART_TYPES: tuple[type, ...] = (
    ReasoningContent,
    TextContent,
    ImageURLContent,
    BinaryContent,
    ToolCall,
    ToolResult,
    Finish,
    ShellCommand,
)


_P = TypeVar("_P")


def check_parts(parts: Iterable[object], *, where: str = "parts") -> list[Part]:
    """Return ``parts`` as a list, or raise ``InvalidPart`` naming the first non-part."""
    out = list(parts)
    for i, part in enumerate(out):
        if not isinstance(part, PART_TYPES):
            raise InvalidPart(f"{where}[{i}] is a {type(part).__name__}, not a part")
    return out  # type: ignore[return-value]


def _only(kind: type[_P], items: Iterable[object], where: str) -> list[_P]:
    out = list(items)
    for i, item in enumerate(out):
        if not isinstance(item, kind):
            raise InvalidPart(
                f"{where}: item {i} is a {type(item).__name__}, not a {kind.__name__}"
            )
    return out  # type: ignore[return-value]


def _role(value: object) -> Role:
    try:
        return Role(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidPart(
            f"Message.role must be one of {[r.value for r in Role]}, got {value!r}"
        ) from None


def _evolved(part: _P, **changes: Any) -> _P:
    """A copy of a valid ``part`` with ``changes``, which the caller has checked.

    The helpers' per-token path: ``attrs.evolve`` would validate every field again,
    and checking a whole text for lone surrogates on every token costs the length of
    the text each time; the helpers check just the delta they add.
    """
    new = object.__new__(type(part))
    for field in attrs.fields(type(part)):  # type: ignore[arg-type]
        name = field.name
        _set(new, name, changes[name] if name in changes else getattr(part, name))
    return new


# -- the message ----------------------------------------------------------------------


@attrs.define(eq=True, slots=False)
class Message:
    """One message of a session: its parts and metadata.

    Mutable: the helpers change ``parts`` in place, and ``MessageService.update`` takes a
    copy of the state it is given, so callers may keep mutating their own object.
    """

    id: str = attrs.field(validator=_str)
    session_id: str = attrs.field(validator=_str)
    role: Role = attrs.field(converter=_role)
    parts: list[Part] = attrs.field(factory=list)
    model: str = attrs.field(default="", validator=_str)
    provider: str = attrs.field(default="", validator=_str)
    created_at: int = attrs.field(default=0, validator=_int)
    updated_at: int = attrs.field(default=0, validator=_int)
    is_summary_message: bool = attrs.field(default=False, validator=_bool)

    def clone(self) -> Message:
        """A copy whose parts list is independent (parts themselves are immutable)."""
        return self.with_parts(list(self.parts))

    def with_parts(self, parts: list[Part]) -> Message:
        """A copy of this message's other fields with ``parts`` (taken as they are:
        the caller hands over a list nothing else will mutate)."""
        # On the service's write path: copying __dict__ skips the validating
        # __setattr__ (every field was validated already) and costs a quarter of
        # evolve().
        state = self.__dict__.copy()
        state["parts"] = parts
        new = object.__new__(Message)
        _set(new, "__dict__", state)
        return new

    # -- readers ----------------------------------------------------------------------

    def _first(self, kind: type[Any]) -> int:
        for i, part in enumerate(self.parts):
            if type(part) is kind:
                return i
        return -1

    def content(self) -> TextContent:
        """The first text part, or an empty one."""
        i = self._first(TextContent)
        return self.parts[i] if i >= 0 else TextContent()  # type: ignore[return-value]

    def reasoning_content(self) -> ReasoningContent:
        """The first reasoning part, or an empty one."""
        i = self._first(ReasoningContent)
        return self.parts[i] if i >= 0 else ReasoningContent()  # type: ignore[return-value]

    def image_url_content(self) -> list[ImageURLContent]:
        return [p for p in self.parts if type(p) is ImageURLContent]

    def binary_content(self) -> list[BinaryContent]:
        return [p for p in self.parts if type(p) is BinaryContent]

    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if type(p) is ToolCall]

    def tool_results(self) -> list[ToolResult]:
        return [p for p in self.parts if type(p) is ToolResult]

    def shell_commands(self) -> list[ShellCommand]:
        return [p for p in self.parts if type(p) is ShellCommand]

    def finish_part(self) -> Finish | None:
        """The first finish part, or None."""
        i = self._first(Finish)
        return self.parts[i] if i >= 0 else None  # type: ignore[return-value]

    def is_finished(self) -> bool:
        return self._first(Finish) >= 0

    def finish_reason(self) -> FinishReason | str:
        """The finish part's reason, or ``""`` when the message is not finished."""
        finish = self.finish_part()
        return finish.reason if finish is not None else ""

    def is_thinking(self) -> bool:
        """Reasoning has started, no text yet, and the message is not finished."""
        return (
            self.reasoning_content().thinking != ""
            and self.content().text == ""
            and not self.is_finished()
        )

    def thinking_duration(self) -> datetime.timedelta:
        """From reasoning start to its end (or to now while it is still going)."""
        reasoning = self.reasoning_content()
        if reasoning.started_at == 0:
            return datetime.timedelta(0)
        end = reasoning.finished_at or _now()
        return datetime.timedelta(seconds=end - reasoning.started_at)

    # -- writers ----------------------------------------------------------------------

    def append_content(self, delta: str) -> None:
        """Extend the text part, or add one.

        crush bug: the seed extends *every* text part; only the first (the one
        ``content()`` reads) is extended here.
        """
        check_text(delta, "append_content delta")
        parts = self.parts
        for i, part in enumerate(parts):
            if type(part) is TextContent:
                # Made around the validator, which would scan the whole text again.
                new = object.__new__(TextContent)
                _set(new, "text", part.text + delta)
                parts[i] = new
                return
        parts.append(TextContent(delta))

    def _replace_reasoning(self, **changes: Any) -> bool:
        # crush bug: the seed rebuilds the part and drops thought_signature, tool_id and
        # responses_data; attrs.evolve keeps every field not being changed.
        i = self._first(ReasoningContent)
        if i < 0:
            return False
        self.parts[i] = _evolved(self.parts[i], **changes)
        return True

    def append_reasoning_content(self, delta: str) -> None:
        """Extend the reasoning, or start a reasoning part with ``started_at`` = now."""
        check_text(delta, "append_reasoning_content delta")
        i = self._first(ReasoningContent)
        if i >= 0:
            self._replace_reasoning(thinking=self.parts[i].thinking + delta)  # type: ignore[union-attr]
        else:
            self.parts.append(ReasoningContent(thinking=delta, started_at=_now()))

    def append_reasoning_signature(self, signature: str) -> None:
        """Extend the reasoning's signature, or add a reasoning part holding just it."""
        check_text(signature, "append_reasoning_signature signature")
        current = self.reasoning_content()
        if not self._replace_reasoning(signature=current.signature + signature):
            self.parts.append(ReasoningContent(signature=signature))

    def append_thought_signature(self, signature: str, tool_id: str) -> None:
        """Extend the Gemini thought signature and set its tool id, or add a part holding it."""
        check_text(signature, "append_thought_signature signature")
        check_text(tool_id, "append_thought_signature tool_id")
        current = self.reasoning_content()
        if not self._replace_reasoning(
            thought_signature=current.thought_signature + signature, tool_id=tool_id
        ):
            self.parts.append(ReasoningContent(thought_signature=signature, tool_id=tool_id))

    def set_reasoning_responses_data(self, data: dict[str, Any] | None) -> None:
        """Attach OpenAI Responses metadata to the reasoning part (if there is one)."""
        i = self._first(ReasoningContent)
        if i >= 0:
            reasoning: ReasoningContent = self.parts[i]  # type: ignore[assignment]
            self.parts[i] = attrs.evolve(reasoning, responses_data=data)  # validated

    def finish_thinking(self) -> None:
        """Stamp the reasoning's ``finished_at`` with now, once."""
        if self.reasoning_content().finished_at == 0:
            self._replace_reasoning(finished_at=_now())

    def _tool_call_index(self, tool_call_id: str) -> int:
        for i, part in enumerate(self.parts):
            if type(part) is ToolCall and part.id == tool_call_id:
                return i
        return -1

    def add_tool_call(self, tool_call: ToolCall) -> None:
        """Replace the tool call with the same id, or append it."""
        if not isinstance(tool_call, ToolCall):
            raise InvalidPart(f"add_tool_call needs a ToolCall, got {type(tool_call).__name__}")
        i = self._tool_call_index(tool_call.id)
        if i >= 0:
            self.parts[i] = tool_call
        else:
            self.parts.append(tool_call)

    def append_tool_call_input(self, tool_call_id: str, delta: str) -> None:
        """Extend a tool call's input (crush bug fixed: ``provider_executed`` is kept)."""
        check_text(delta, "append_tool_call_input delta")
        i = self._tool_call_index(tool_call_id)
        if i >= 0:
            call: ToolCall = self.parts[i]  # type: ignore[assignment]
            self.parts[i] = _evolved(call, input=call.input + delta)

    def finish_tool_call(self, tool_call_id: str) -> None:
        """Mark a tool call finished (crush bug fixed: ``provider_executed`` is kept)."""
        i = self._tool_call_index(tool_call_id)
        if i >= 0:
            call: ToolCall = self.parts[i]  # type: ignore[assignment]
            self.parts[i] = _evolved(call, finished=True)

    def set_tool_calls(self, tool_calls: Iterable[ToolCall]) -> None:
        """Replace every tool call with these, appended at the end."""
        new = _only(ToolCall, tool_calls, "set_tool_calls")
        self.parts = [p for p in self.parts if type(p) is not ToolCall]
        self.parts.extend(new)

    def add_tool_result(self, tool_result: ToolResult) -> None:
        if not isinstance(tool_result, ToolResult):
            raise InvalidPart(
                f"add_tool_result needs a ToolResult, got {type(tool_result).__name__}"
            )
        self.parts.append(tool_result)

    def set_tool_results(self, tool_results: Iterable[ToolResult]) -> None:
        """Replace every tool result with these, appended at the end."""
        new = _only(ToolResult, tool_results, "set_tool_results")
        self.parts = [p for p in self.parts if type(p) is not ToolResult]
        self.parts.extend(new)

    def add_finish(self, reason: FinishReason | str, message: str = "", details: str = "") -> None:
        """Replace any finish part with a new one stamped now."""
        self.parts = [p for p in self.parts if type(p) is not Finish]
        self.parts.append(Finish(reason=reason, time=_now(), message=message, details=details))

    def add_image_url(self, url: str, detail: str = "") -> None:
        self.parts.append(ImageURLContent(url=url, detail=detail))

    def add_binary(self, mime_type: str, data: bytes) -> None:
        self.parts.append(BinaryContent(mime_type=mime_type, data=data))

    def reset_streamed_content(self) -> None:
        """Drop text, reasoning, tool calls and finish (a retried stream starts over)."""
        streamed = (TextContent, ReasoningContent, ToolCall, Finish)
        self.parts = [p for p in self.parts if type(p) not in streamed]


_set = object.__setattr__
