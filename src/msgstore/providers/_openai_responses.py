"""OpenAI's Responses API stream (``ResponseStreamEvent``s) as ``Message`` changes.

Dispatched on each event's ``type`` string, not on SDK classes, so that events a newer
API adds pass through as ignored instead of failing on an import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgstore import FinishReason, Message, ToolCall

from ._recording import StreamError, ToolCalls, end_reasoning, finish
from ._usage import Usage, count

if TYPE_CHECKING:
    from openai.types.responses import (
        Response,
        ResponseFunctionToolCall,
        ResponseReasoningItem,
        ResponseStreamEvent,
        ResponseUsage,
    )

INCOMPLETE_REASONS = {
    "max_output_tokens": FinishReason.MAX_TOKENS,
    "content_filter": FinishReason.CONTENT_FILTER,
}

#: crush's envelope for Responses reasoning metadata (fantasy's provider-data type id).
REASONING_METADATA_TYPE = "openai.responses.reasoning_metadata"


def usage_of(usage: ResponseUsage) -> Usage:
    return Usage(
        input_tokens=count(usage, "input_tokens"),
        output_tokens=count(usage, "output_tokens"),
        cache_read_tokens=count(usage, "input_tokens_details", "cached_tokens"),
        reasoning_tokens=count(usage, "output_tokens_details", "reasoning_tokens"),
    )


class ResponseMapper:
    """One response's events; output items are told apart by item id."""

    final_event = "response.completed, incomplete or failed"

    def __init__(self, message: Message) -> None:
        self.message = message
        self.usage: Usage | None = None
        self.redacted_thinking: list[str] = []
        self.calls = ToolCalls(message)
        self.refused = False
        self._summary: tuple[str, int] | None = None  # the summary part being streamed

    def apply(self, event: ResponseStreamEvent) -> bool:
        message = self.message
        if event.type in ("response.output_text.delta", "response.refusal.delta"):
            end_reasoning(message)
            message.append_content(event.delta)
            self.refused |= event.type == "response.refusal.delta"
        elif event.type == "response.reasoning_summary_text.delta":
            # Summary parts are separate paragraphs; crush keeps one reasoning text.
            part = (event.item_id, event.summary_index)
            if self._summary not in (None, part) and message.reasoning_content().thinking:
                message.append_reasoning_content("\n\n")
            self._summary = part
            message.append_reasoning_content(event.delta)
        elif event.type == "response.reasoning_text.delta":  # open-weight models' raw text
            message.append_reasoning_content(event.delta)
        elif event.type == "response.output_item.added":
            if event.item.type != "function_call":
                return False
            item = event.item
            key = item.id or event.output_index
            self.calls.open(key, ToolCall(id=item.call_id, name=item.name))
            if item.arguments:
                self.calls.append(key, item.arguments, "arguments for output item")
        elif event.type == "response.function_call_arguments.delta":
            key = event.item_id or event.output_index  # as the item was opened
            self.calls.append(key, event.delta, "an arguments delta for output item")
        elif event.type == "response.output_item.done":
            if event.item.type == "function_call":
                self._call_done(event.item, event.output_index)
            elif event.item.type == "reasoning":
                self._reasoning_done(event.item)
            else:
                return False
        elif event.type in ("response.completed", "response.incomplete", "response.failed"):
            self._finish(event.response)
        elif event.type == "error":
            # A stream-level error with no response to finish (e.g. a server error).
            code = f"{event.code}: " if event.code else ""
            raise StreamError(f"the provider reported an error: {code}{event.message}")
        else:
            return False  # see the README for the events knowingly ignored
        return True

    def _call_done(self, item: ResponseFunctionToolCall, output_index: int) -> None:
        # The item's arguments are the whole input: the authority over what streamed.
        key = item.id or output_index
        call = ToolCall(id=item.call_id, name=item.name, input=item.arguments, finished=True)
        self.calls.replace(key, call)

    def _reasoning_done(self, item: ResponseReasoningItem) -> None:
        message = self.message
        # An SDK older than the reasoning item's types hands its parts over as dicts.
        summary = [
            str(part.get("text", "") if isinstance(part, dict) else part.text)
            for part in item.summary
        ]
        if not message.reasoning_content().started_at:
            # Nothing streamed (no summary was asked for, or a server that sends only
            # whole items): a reasoning part still carries the item for the next turn.
            message.append_reasoning_content("\n\n".join(summary))
        data: dict[str, Any] = {
            "item_id": item.id,
            "encrypted_content": item.encrypted_content,
            "summary": summary,
        }
        message.set_reasoning_responses_data({"type": REASONING_METADATA_TYPE, "data": data})
        end_reasoning(message)

    def _finish(self, response: Response) -> None:
        if response.usage is not None:
            self.usage = usage_of(response.usage)
        self.calls.finish_all()
        details = "refusal" if self.refused else ""
        if response.error is not None:  # response.failed
            error = response.error
            finish(self.message, FinishReason.ERROR, details=str(error.code), text=error.message)
        elif response.status == "incomplete":
            raw = response.incomplete_details.reason if response.incomplete_details else None
            reason = INCOMPLETE_REASONS.get(raw or "", FinishReason.UNKNOWN)
            if reason is FinishReason.UNKNOWN:
                details = raw or "incomplete"
            finish(self.message, reason, details=details)
        elif response.status == "failed":
            finish(self.message, FinishReason.ERROR, details="failed")
        elif self.message.tool_calls():
            finish(self.message, FinishReason.TOOL_USE, details=details)
        else:
            finish(self.message, FinishReason.END_TURN, details=details)
