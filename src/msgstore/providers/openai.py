"""Record OpenAI streams (and OpenAI-compatible servers') into msgstore.

Needs ``msgstore[openai]`` for the client; this module itself reads the SDK's objects by
attribute and imports nothing from it at run time.

    async with AsyncOpenAI() as client:
        stream = await client.chat.completions.create(
            model=..., messages=..., stream=True, stream_options={"include_usage": True}
        )
        recorded = await record_chat_stream(svc, reply, stream)
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

from msgstore import Message, MessageService

from ._openai_chat import ChatMapper
from ._openai_responses import ResponseMapper
from ._recording import Recorded, record

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk
    from openai.types.responses import ResponseStreamEvent

__all__ = ["record_chat_stream", "record_response_stream"]


async def record_chat_stream(
    svc: MessageService, message: Message, stream: AsyncIterable[ChatCompletionChunk]
) -> Recorded:
    """Record a Chat Completions stream (``create(..., stream=True)``) into ``message``.

    Text, refusals (as text; the finish's ``details`` says ``refusal``), reasoning
    deltas (``reasoning_content`` or ``reasoning``, as compatible servers send them),
    tool calls by index (finished when the stream moves on to another call or to text,
    or ends), the finish reason, and usage (ask for it with
    ``stream_options={"include_usage": True}``). Each change goes through
    ``svc.update``. A failure or cancellation finishes the message as ``error`` or
    ``canceled``, writes it, and re-raises; so does ``UnknownToolCall`` for a delta
    whose index no chunk opened, and ``IncompleteStream`` for a stream with no
    ``finish_reason``.
    """
    return await record(svc, message, stream, ChatMapper(message))


async def record_response_stream(
    svc: MessageService, message: Message, stream: AsyncIterable[ResponseStreamEvent]
) -> Recorded:
    """Record a Responses API stream (``responses.create(..., stream=True)`` or
    ``responses.stream(...)``) into ``message``.

    Output text and refusals, reasoning summaries (and reasoning text), function calls
    (opened by ``output_item.added``, arguments streamed, whole at ``output_item.done``),
    reasoning items' id and encrypted content (as crush's ``responses_data``), and the
    end: ``response.completed`` (``tool_use`` when the model called functions, else
    ``end_turn``), ``response.incomplete`` (``max_tokens``, ``content_filter``) or
    ``response.failed`` (``error``), each with usage. An ``error`` event raises
    ``StreamError``; failures behave as in ``record_chat_stream``.
    """
    return await record(svc, message, stream, ResponseMapper(message))
