"""Record Anthropic Messages streams into msgstore.

Needs ``msgstore[anthropic]`` for the client; this module itself reads the SDK's events
by their ``type`` and imports nothing from it at run time.

    async with AsyncAnthropic() as client, client.messages.stream(...) as stream:
        recorded = await record_message_stream(svc, reply, stream)

``messages.stream(...)`` yields every raw event and, after some, a helper event of its
own (``text``, ``thinking``, ``signature``, ``input_json``, ``citation``) carrying the
same delta again: only the raw events are recorded, so the text is not doubled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from msgstore import FinishReason, Message, MessageService, ToolCall

from ._recording import (
    Recorded,
    ToolCalls,
    UnknownToolCall,
    end_reasoning,
    finish,
    record,
)
from ._usage import Usage, count

if TYPE_CHECKING:
    from anthropic.lib.streaming import ParsedMessageStreamEvent
    from anthropic.types import RawContentBlockStartEvent, RawMessageStreamEvent

    AnthropicEvent: TypeAlias = RawMessageStreamEvent | ParsedMessageStreamEvent[Any]

__all__ = ["record_message_stream"]

STOP_REASONS = {
    "end_turn": FinishReason.END_TURN,
    "stop_sequence": FinishReason.END_TURN,
    "tool_use": FinishReason.TOOL_USE,
    "max_tokens": FinishReason.MAX_TOKENS,
    "model_context_window_exceeded": FinishReason.MAX_TOKENS,
    "refusal": FinishReason.CONTENT_FILTER,
}
#: Stop reasons msgstore's own reason names exactly; the others go in ``details`` too.
EXACT = {"end_turn", "tool_use", "max_tokens"}


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


async def record_message_stream(
    svc: MessageService, message: Message, stream: AsyncIterable[AnthropicEvent]
) -> Recorded:
    """Record ``messages.stream(...)`` (an ``AsyncMessageStream``) or
    ``messages.create(..., stream=True)`` into ``message``.

    Text, thinking with its signature, redacted thinking (its data in
    ``Recorded.redacted_thinking``), tool use with ``input_json_delta``, the stop
    reason, and usage (``message_start``'s input, ``message_delta``'s running output).
    Each change goes through ``svc.update``. A failure or cancellation (a cut
    connection is a bare ``httpx`` error here) finishes the message as ``error`` or
    ``canceled``, writes it, and re-raises; so does ``UnknownToolCall`` for a delta at a
    block index that no ``content_block_start`` opened, and ``IncompleteStream`` for a
    stream with no ``message_stop``.
    """
    return await record(svc, message, stream, MessageMapper(message))


class MessageMapper:
    """The raw events of one message; content blocks are told apart by index."""

    final_event = "message_stop"

    def __init__(self, message: Message) -> None:
        self.message = message
        self.usage: Usage | None = None
        self.redacted_thinking: list[str] = []
        self.calls = ToolCalls(message)
        self._blocks: dict[int, str] = {}  # index -> the block's type
        self._calls: dict[int, ToolCall] = {}  # index -> the call as its block started
        self._streamed_input: set[int] = set()
        self._stop_reason: str | None = None
        self._input_tokens = self._cache_read = self._cache_write = 0

    def apply(self, event: AnthropicEvent) -> bool:
        message = self.message
        if event.type == "message_start":
            self._set_input(event.message.usage)
            self._set_usage(event.message.usage)
            return False
        if event.type == "content_block_start":
            return self._start(event)
        if event.type == "content_block_delta":
            kind = self._blocks.get(event.index)
            delta = event.delta
            if kind is None:
                raise UnknownToolCall(event.index, f"a delta ({delta.type}) for content block")
            if delta.type == "text_delta":
                message.append_content(delta.text)
            elif delta.type == "thinking_delta":
                message.append_reasoning_content(delta.thinking)
            elif delta.type == "signature_delta":
                message.append_reasoning_signature(delta.signature)
            elif delta.type == "input_json_delta" and event.index in self._calls:
                if not delta.partial_json:
                    return False
                self._streamed_input.add(event.index)
                self.calls.append(event.index, delta.partial_json, "an input_json_delta for block")
            else:
                return False  # citations, and deltas of blocks not recorded
            return True
        if event.type == "content_block_stop":
            if event.index in self._calls:
                return self._stop_call(event.index)
            if self._blocks.get(event.index) in ("thinking", "redacted_thinking"):
                return end_reasoning(message)
            return False
        if event.type == "message_delta":
            if event.delta.stop_reason is not None:
                self._stop_reason = event.delta.stop_reason
            if getattr(event.usage, "input_tokens", None) is not None:
                self._set_input(event.usage)  # newer APIs repeat the running totals here
            self._set_usage(event.usage)  # the running output count
            return False
        if event.type == "message_stop":
            self._finish()
            return True
        return False  # the helper events of messages.stream(): the same deltas again

    def _start(self, event: RawContentBlockStartEvent) -> bool:
        message = self.message
        block = event.content_block
        self._blocks[event.index] = block.type
        if block.type == "text":
            ended = end_reasoning(message)
            if block.text:
                message.append_content(block.text)
            return ended or bool(block.text)
        if block.type == "thinking":
            message.append_reasoning_content(block.thinking)  # starts the part even if ""
            signature = getattr(block, "signature", "")  # the API may leave it out here
            if signature:
                message.append_reasoning_signature(signature)
            return True
        if block.type == "redacted_thinking":
            # Opaque: crush's format has no field for it. The reasoning part still shows
            # that the model thought; the data goes back to the caller.
            self.redacted_thinking.append(block.data)
            message.append_reasoning_content("")
            return True
        if block.type == "tool_use":
            call = ToolCall(id=block.id, name=block.name, input=_json(block.input))
        elif block.type == "server_tool_use":
            # A tool the API runs itself (web search, code execution): a call with
            # provider_executed; its result block is not recorded.
            call = ToolCall(
                id=block.id, name=block.name, input=_json(block.input), provider_executed=True
            )
        else:
            return False  # server tool results and other blocks: not recorded
        self._calls[event.index] = call
        self.calls.open(event.index, attrs.evolve(call, input=""))
        return True

    def _stop_call(self, index: int) -> bool:
        if index not in self._streamed_input:
            # A call with no parameters streams no input: its block's own ({}) is it.
            self.calls.replace(index, attrs.evolve(self._calls[index], finished=True))
            return True
        return self.calls.finish(index)

    def _set_input(self, usage: object) -> None:
        # Anthropic counts cache reads and writes apart from input_tokens.
        self._cache_read = count(usage, "cache_read_input_tokens")
        self._cache_write = count(usage, "cache_creation_input_tokens")
        self._input_tokens = count(usage, "input_tokens") + self._cache_read + self._cache_write

    def _set_usage(self, usage: object) -> None:
        self.usage = Usage(
            input_tokens=self._input_tokens,
            output_tokens=count(usage, "output_tokens"),
            cache_read_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
        )

    def _finish(self) -> None:
        self.calls.finish_all()
        raw = self._stop_reason
        reason = STOP_REASONS.get(raw or "", FinishReason.UNKNOWN)
        finish(self.message, reason, details="" if raw in EXACT else (raw or ""))
