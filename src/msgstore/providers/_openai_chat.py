"""OpenAI's Chat Completions stream (``ChatCompletionChunk``s) as ``Message`` changes.

Read by attribute, never by importing the SDK at run time: the chunks of any
OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenRouter) come through the same
client, with their extra fields kept on the objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgstore import FinishReason, Message, ToolCall

from ._recording import ToolCalls, end_reasoning, finish
from ._usage import Usage, count

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall
    from openai.types.completion_usage import CompletionUsage

FINISH_REASONS = {
    "stop": FinishReason.END_TURN,
    "tool_calls": FinishReason.TOOL_USE,
    "length": FinishReason.MAX_TOKENS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def usage_of(usage: CompletionUsage) -> Usage:
    return Usage(
        input_tokens=count(usage, "prompt_tokens"),
        output_tokens=count(usage, "completion_tokens"),
        cache_read_tokens=count(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=count(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def reasoning_of(delta: ChoiceDelta) -> str:
    """The reasoning text an OpenAI-compatible server put on the delta, if any.

    vLLM and DeepSeek send ``reasoning_content``; Ollama, OpenRouter and newer vLLM
    ``reasoning``; some send both with the same text, so only one is taken.
    """
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


class ChatMapper:
    """Choice 0 of each chunk; the other choices (``n > 1``) are not recorded."""

    final_event = "a finish_reason"

    def __init__(self, message: Message) -> None:
        self.message = message
        self.usage: Usage | None = None
        self.redacted_thinking: list[str] = []
        self.calls = ToolCalls(message)
        self.refused = False

    def apply(self, chunk: ChatCompletionChunk) -> bool:
        message = self.message
        changed = False
        if chunk.usage is not None:
            # The last chunk under include_usage (choices == []); some servers send a
            # running total on every chunk: the latest is the total.
            self.usage = usage_of(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            reasoning = reasoning_of(delta)
            if reasoning:
                message.append_reasoning_content(reasoning)
                changed = True
            for text, refusal in ((delta.content, False), (delta.refusal, True)):
                if text:
                    end_reasoning(message)
                    self.calls.finish_all()  # text after tool calls: the stream moved on
                    message.append_content(text)
                    self.refused |= refusal
                    changed = True
            for call in delta.tool_calls or ():
                self._tool_call(call)
                changed = True
            if choice.finish_reason is not None:
                self._finish(choice.finish_reason)
                changed = True
        return changed

    def _tool_call(self, delta: ChoiceDeltaToolCall) -> None:
        # The id and name come in a call's first chunk only; later ones carry the index
        # and a piece of the arguments. A new id on a known index is a new call (Gemini's
        # compatible endpoint numbers parallel calls all 0).
        function = delta.function
        if delta.id and self.calls.id_of(delta.index) != delta.id:
            self.calls.finish_all()  # the stream moved on to another call
            name = (function.name if function else None) or ""
            self.calls.open(delta.index, ToolCall(id=delta.id, name=name))
        what = "an arguments delta for tool call index"
        if function is not None and function.arguments:
            self.calls.append(delta.index, function.arguments, what)
        elif self.calls.id_of(delta.index) is None:
            self.calls.append(delta.index, "", what)  # raises UnknownToolCall

    def _finish(self, raw: str) -> None:
        message = self.message
        self.calls.finish_all()
        reason = FINISH_REASONS.get(raw)
        details = "" if reason is not None else raw
        if reason is None:
            reason = FinishReason.UNKNOWN
        elif reason is FinishReason.END_TURN and message.tool_calls():
            # Some compatible servers say "stop" after calling tools; an agent loop
            # needs tool_use to run them.
            reason = FinishReason.TOOL_USE
            details = raw
        if self.refused:
            details = "refusal"
        finish(message, reason, details=details)
