"""msgstore.providers.openai driven by the real AsyncOpenAI client against a local server.

The streams replayed are in tests/data/providers, written from OpenAI's documented wire
format. These tests run on Trio's real clock: the autojump clock would jump over the
client's socket waits and fire httpx's timeouts at once.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import trio
from provider_server import Rig, open_rig, sse

from msgstore import EventType, FinishReason, Message, Session, ToolCall
from msgstore.providers import (
    IncompleteStream,
    Prices,
    StreamError,
    UnknownToolCall,
    Usage,
    add_usage_to_session,
)
from msgstore.providers.openai import record_chat_stream, record_response_stream

# What a connection broken mid-stream raises: APIConnectionError since openai 1.x's later
# releases, httpx's own error before that.
CUT_ERRORS = ("APIConnectionError", "RemoteProtocolError")
CHAT_USAGE = Usage(input_tokens=1117, output_tokens=46, cache_read_tokens=1024)


@asynccontextmanager
async def rig(tmp_path: Path, **options: Any) -> AsyncIterator[Rig]:
    def client(url: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)

    async with open_rig(tmp_path, client, **options) as r:
        yield r


async def chat(r: Rig, recording: str, body: str | None = None) -> tuple[Message, Any]:
    """A new assistant message, and the chat stream the server replays ``recording`` as."""
    r.server.reply(body if body is not None else sse(recording))
    reply = await r.harness.create(model="gpt-4.1")
    stream = await r.client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return reply, stream


async def responses(r: Rig, recording: str) -> tuple[Message, Any]:
    """``responses.create(..., stream=True)``: the raw events."""
    r.server.reply(sse(recording))
    reply = await r.harness.create(model="o4-mini")
    stream = await r.client.responses.create(model="o4-mini", input="Hello", stream=True)
    return reply, stream


# -- chat completions -----------------------------------------------------------------------


async def test_chat_text_streams_through_update_and_its_usage_reaches_the_session(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-text.sse")
        before = r.harness.service.statistics().updates
        recorded = await record_chat_stream(r.harness.service, reply, stream)

        # One update per change: four text deltas and the finish (the role chunk and
        # the usage chunk change nothing).
        assert r.harness.service.statistics().updates - before == 5
        assert recorded.message is reply
        assert recorded.usage == CHAT_USAGE
        r.harness.assert_row(reply.id, text="Hello, world!", finish_reason=FinishReason.END_TURN)
        states = r.updates(reply.id)
        texts = [m.content().text for m in states]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
        assert states[-1].finish_reason() is FinishReason.END_TURN

        prices = Prices(input=2.0, output=8.0, cache_read=0.5)
        session = await add_usage_to_session(
            r.harness.service, r.harness.session_id, recorded.usage, prices=prices
        )
        assert (session.prompt_tokens, session.completion_tokens) == (1117, 46)
        assert session.cost == pytest.approx((93 * 2.0 + 1024 * 0.5 + 46 * 8.0) / 1e6)
        told = await r.events.wait_for(EventType.UPDATED, predicate=lambda s: s == session)
        assert isinstance(told.payload, Session)
        assert r.server.requests[0].path == "/v1/chat/completions"
        assert r.server.requests[0].body["stream"] is True


async def test_chat_parallel_tool_calls_are_each_finished_when_the_stream_moves_on(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-parallel-tools.sse")
        await record_chat_stream(r.harness.service, reply, stream)

        paris = ToolCall(
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
            name="get_weather",
            input='{"location": "Paris, France"}',
            finished=True,
        )
        bogota = ToolCall(
            id="call_ABvXD2FZ0bzFiR6XbPbxCDtS",
            name="get_weather",
            input='{"location": "Bogotá, Colombia"}',
            finished=True,
        )
        r.harness.assert_row(
            reply.id, tool_calls=[paris, bogota], finish_reason=FinishReason.TOOL_USE
        )
        # The first call was finished in the very state that opened the second.
        assert any(
            [(c.id, c.finished) for c in m.tool_calls()] == [(paris.id, True), (bogota.id, False)]
            for m in r.updates(reply.id)
        )


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_chat_reasoning_deltas_of_compatible_servers_become_the_reasoning_part(
    tmp_path: Path, field: str
) -> None:
    async with rig(tmp_path) as r:
        body = sse("openai-chat-reasoning.sse").replace('"reasoning_content"', f'"{field}"')
        reply, stream = await chat(r, "", body)
        recorded = await record_chat_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(
            reply.id,
            reasoning="The user greets me; greet back.",
            text="Hi there.",
            finish_reason=FinishReason.END_TURN,
        )
        assert row is not None and row.reasoning_content().finished_at > 0
        assert recorded.usage is not None and recorded.usage.reasoning_tokens == 12
        # Reasoning ended (a terminal change) before any text was told.
        first_text = next(m for m in r.updates(reply.id) if m.content().text)
        assert first_text.reasoning_content().finished_at > 0


async def test_chat_refusal_is_kept_as_text_and_named_in_the_finish(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-refusal.sse")
        recorded = await record_chat_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(
            reply.id, text="I'm sorry, I can't help with that.", finish_reason="end_turn"
        )
        assert row is not None and row.finish_part() is not None
        assert row.finish_part().details == "refusal"  # type: ignore[union-attr]
        assert recorded.usage is None  # this stream carried none


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("length", FinishReason.MAX_TOKENS),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("something_new", FinishReason.UNKNOWN),
    ],
)
async def test_chat_finish_reasons_are_mapped(
    tmp_path: Path, raw: str, reason: FinishReason
) -> None:
    async with rig(tmp_path) as r:
        body = sse("openai-chat-text.sse").replace(
            '"finish_reason":"stop"', f'"finish_reason":"{raw}"'
        )
        reply, stream = await chat(r, "", body)
        await record_chat_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(reply.id, finish_reason=reason)
        assert row is not None
        assert row.finish_part().details == ("" if reason is not FinishReason.UNKNOWN else raw)  # type: ignore[union-attr]


async def test_chat_error_event_finishes_the_message_as_error_and_reraises(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-error.sse")
        with pytest.raises(openai.APIError, match="The server had an error"):
            await record_chat_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(reply.id, text="Partial answer", finish_reason="error")
        assert row is not None and "The server had an error" in row.finish_part().message  # type: ignore[union-attr]


async def test_chat_connection_cut_mid_stream_leaves_the_partial_text_durable(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-cut.sse")
        with pytest.raises(Exception) as cut:
            await record_chat_stream(r.harness.service, reply, stream)

        assert type(cut.value).__name__ in CUT_ERRORS

        r.harness.assert_row(reply.id, text="Partial answer", finish_reason=FinishReason.ERROR)
        assert r.updates(reply.id)[-1].finish_reason() is FinishReason.ERROR


async def test_chat_stream_cut_after_its_finish_reason_keeps_the_models_finish(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        whole = sse("openai-chat-text.sse")
        body = (
            whole[: whole.index('data: {"id"', whole.index('"finish_reason":"stop"'))] + ": cut\n\n"
        )
        reply, stream = await chat(r, "", body)
        with pytest.raises(Exception) as cut:  # the usage chunk never came
            await record_chat_stream(r.harness.service, reply, stream)

        assert type(cut.value).__name__ in CUT_ERRORS

        r.harness.assert_row(reply.id, text="Hello, world!", finish_reason=FinishReason.END_TURN)


async def test_chat_cancelled_mid_stream_is_finished_as_canceled_and_written(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-hold.sse")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record_chat_stream, r.harness.service, reply, stream)
                await r.events.wait_for(
                    EventType.UPDATED,
                    message_id=reply.id,
                    predicate=lambda m: m.content().text == "Partial answer",
                )
                scope.cancel()
        assert scope.cancelled_caught  # the Cancelled went on up, through the recorder
        r.harness.assert_row(reply.id, text="Partial answer", finish_reason=FinishReason.CANCELED)


async def test_chat_delta_for_an_index_no_chunk_opened_is_an_error_naming_it(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-unknown-index.sse")
        with pytest.raises(
            UnknownToolCall,
            match="arguments delta for tool call index 1, which the stream never opened",
        ) as e:
            await record_chat_stream(r.harness.service, reply, stream)

        assert e.value.key == 1
        row = r.harness.assert_row(reply.id, finish_reason=FinishReason.ERROR)
        assert row is not None
        assert [c.input for c in row.tool_calls()] == ['{"location": "Paris"}']


async def test_chat_stream_without_a_finish_reason_is_incomplete(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await chat(r, "openai-chat-no-finish.sse")
        with pytest.raises(IncompleteStream):
            await record_chat_stream(r.harness.service, reply, stream)

        r.harness.assert_row(reply.id, text="Half a", finish_reason=FinishReason.ERROR)


# -- responses ------------------------------------------------------------------------------


@pytest.mark.parametrize("helper", [False, True], ids=["create", "responses.stream"])
async def test_response_reasoning_summary_and_text_are_recorded_with_the_reasoning_item(
    tmp_path: Path, helper: bool
) -> None:
    async with rig(tmp_path) as r:
        if helper:  # the SDK's own stream class, which accumulates the response as well
            r.server.reply(sse("openai-responses-reasoning-text.sse"))
            reply = await r.harness.create(model="o4-mini")
            async with r.client.responses.stream(model="o4-mini", input="Hello") as stream:
                recorded = await record_response_stream(r.harness.service, reply, stream)
        else:
            reply, stream = await responses(r, "openai-responses-reasoning-text.sse")
            recorded = await record_response_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(
            reply.id,
            reasoning="**Greeting back**\n\nThe user said hello.\n\nAnswer briefly.",
            text="Hi! How can I help?",
            finish_reason=FinishReason.END_TURN,
        )
        assert row is not None
        assert row.reasoning_content().responses_data == {
            "type": "openai.responses.reasoning_metadata",
            "data": {
                "item_id": "rs_6806bfca0b2481918a5748308061a260",
                "encrypted_content": "gAAAAABoISQ24OyVRYbkYfukGWmm",
                "summary": ["**Greeting back**\n\nThe user said hello.", "Answer briefly."],
            },
        }
        assert recorded.usage == Usage(
            input_tokens=328, output_tokens=52, cache_read_tokens=128, reasoning_tokens=32
        )
        assert r.server.requests[0].path == "/v1/responses"


async def test_response_function_calls_stream_their_arguments_and_finish_as_tool_use(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, debounce=0) as r:  # every update written, and told
        reply, stream = await responses(r, "openai-responses-function-calls.sse")
        await record_response_stream(r.harness.service, reply, stream)

        r.harness.assert_row(
            reply.id,
            tool_calls=[
                ToolCall(
                    "call_9Fu1f7GhQbL2",
                    "get_weather",
                    '{"location":"Paris, France"}',
                    finished=True,
                ),
                ToolCall(
                    "call_Xk2LbD0aQ8zC",
                    "get_weather",
                    '{"location":"Bogotá, Colombia"}',
                    finished=True,
                ),
            ],
            finish_reason=FinishReason.TOOL_USE,
        )
        # The arguments streamed: a state was told with the first call's input half-way.
        assert any(
            [c.input for c in m.tool_calls()] == ['{"location":'] for m in r.updates(reply.id)
        )


async def test_response_incomplete_for_max_output_tokens_finishes_as_max_tokens(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await responses(r, "openai-responses-incomplete.sse")
        recorded = await record_response_stream(r.harness.service, reply, stream)

        r.harness.assert_row(reply.id, text="The answer is", finish_reason=FinishReason.MAX_TOKENS)
        assert recorded.usage is not None and recorded.usage.output_tokens == 52


async def test_response_failed_finishes_as_error_with_the_providers_message(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await responses(r, "openai-responses-failed.sse")
        recorded = await record_response_stream(r.harness.service, reply, stream)

        row = r.harness.assert_row(reply.id, text="The answer is", finish_reason="error")
        assert row is not None and recorded.message.finish_part() == row.finish_part()
        finish = row.finish_part()
        assert finish is not None
        assert (finish.message, finish.details) == (
            "The model produced invalid content.",
            "server_error",
        )


async def test_response_error_event_raises_stream_error_after_finishing_as_error(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await responses(r, "openai-responses-error.sse")
        with pytest.raises(StreamError, match="server_error: The server had an error"):
            await record_response_stream(r.harness.service, reply, stream)

        r.harness.assert_row(reply.id, text="The answer is", finish_reason=FinishReason.ERROR)


async def test_response_arguments_delta_for_an_unknown_item_is_an_error_naming_it(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        reply, stream = await responses(r, "openai-responses-unknown-item.sse")
        with pytest.raises(UnknownToolCall, match="'fc_7'"):
            await record_response_stream(r.harness.service, reply, stream)

        r.harness.assert_row(reply.id, finish_reason=FinishReason.ERROR)
