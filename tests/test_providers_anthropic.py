"""msgstore.providers.anthropic driven by the real AsyncAnthropic client against a local
server, both through ``messages.stream(...)`` and ``messages.create(..., stream=True)``.

The streams replayed are in tests/data/providers, written from Anthropic's documented
wire format. Real clock: see tests/test_providers_openai.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
import trio
from provider_server import Rig, open_rig, sse

from msgstore import EventType, FinishReason, Message, ReasoningContent, ToolCall
from msgstore.providers import (
    IncompleteStream,
    Prices,
    Recorded,
    UnknownToolCall,
    Usage,
    add_usage_to_session,
)
from msgstore.providers.anthropic import record_message_stream

MODEL = "claude-sonnet-4-5"
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "What is the weather in San Francisco?"}],
}

Record = Callable[[Rig, Message], Awaitable[Recorded]]


async def through_stream_helper(r: Rig, reply: Message) -> Recorded:
    """``messages.stream(...)``: raw events and the helper's own, interleaved."""
    async with r.client.messages.stream(**REQUEST) as stream:
        return await record_message_stream(r.harness.service, reply, stream)


async def through_create(r: Rig, reply: Message) -> Recorded:
    """``messages.create(..., stream=True)``: the raw events alone."""
    stream = await r.client.messages.create(**REQUEST, stream=True)
    return await record_message_stream(r.harness.service, reply, stream)


both_ways = pytest.mark.parametrize("record", [through_stream_helper, through_create])


@asynccontextmanager
async def rig(tmp_path: Path, recording: str, body: str | None = None) -> AsyncIterator[Rig]:
    def client(url: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=url, api_key="test-key", max_retries=0)

    async with open_rig(tmp_path, client) as r:
        r.server.reply(body if body is not None else sse(recording))
        yield r


@both_ways
async def test_thinking_text_and_tool_use_are_recorded_once_each_with_usage(
    tmp_path: Path, record: Record
) -> None:
    async with rig(tmp_path, "anthropic-thinking-tools.sse") as r:
        reply = await r.harness.create(model=MODEL)
        recorded = await record(r, reply)

        row = r.harness.assert_row(
            reply.id,
            reasoning="The user wants the weather. I will call the tool.",
            text="Let me check the weather.",  # not doubled by the helper's text events
            tool_calls=[
                ToolCall(
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "get_weather",
                    '{"location": "San Francisco, CA"}',
                    finished=True,
                ),
                # No parameters, so no input_json_delta: its block's input is the input.
                ToolCall("toolu_01Qz7VmBz5v9RcU3m9aT8kQ2", "get_time", "{}", finished=True),
            ],
            finish_reason=FinishReason.TOOL_USE,
        )
        assert row is not None
        reasoning = row.reasoning_content()
        assert reasoning.signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
        assert reasoning.finished_at > 0
        assert recorded.usage == Usage(
            input_tokens=472 + 1503 + 12000,
            output_tokens=89,
            cache_read_tokens=12000,
            cache_write_tokens=1503,
        )
        assert r.server.requests[0].path == "/v1/messages"
        assert r.server.requests[0].body["stream"] is True


async def test_usage_with_cache_prices_is_added_to_the_session(tmp_path: Path) -> None:
    async with rig(tmp_path, "anthropic-thinking-tools.sse") as r:
        reply = await r.harness.create(model=MODEL)
        recorded = await through_create(r, reply)
        prices = Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)

        session = await add_usage_to_session(
            r.harness.service, r.harness.session_id, recorded.usage, prices=prices
        )
        again = await add_usage_to_session(r.harness.service, r.harness.session_id, None)

        cost = (472 * 3.0 + 12000 * 0.3 + 1503 * 3.75 + 89 * 15.0) / 1e6
        assert (session.prompt_tokens, session.completion_tokens) == (13975, 89)
        assert session.cost == pytest.approx(cost)
        assert again == session  # no usage: nothing added
        await r.events.wait_for(EventType.UPDATED, predicate=lambda s: s == session)


@both_ways
async def test_redacted_thinking_keeps_a_reasoning_part_and_returns_its_data(
    tmp_path: Path, record: Record
) -> None:
    async with rig(tmp_path, "anthropic-redacted-thinking.sse") as r:
        reply = await r.harness.create(model=MODEL)
        recorded = await record(r, reply)

        row = r.harness.assert_row(reply.id, text="Done.", finish_reason=FinishReason.END_TURN)
        assert row is not None
        assert [type(p) for p in row.parts][:1] == [ReasoningContent]
        assert row.reasoning_content().finished_at > 0
        assert recorded.redacted_thinking == (
            "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
        )


@pytest.mark.parametrize(
    ("raw", "reason", "details"),
    [
        ("end_turn", FinishReason.END_TURN, ""),
        ("max_tokens", FinishReason.MAX_TOKENS, ""),
        ("stop_sequence", FinishReason.END_TURN, "stop_sequence"),
        ("refusal", FinishReason.CONTENT_FILTER, "refusal"),
        ("pause_turn", FinishReason.UNKNOWN, "pause_turn"),
    ],
)
async def test_stop_reasons_are_mapped(
    tmp_path: Path, raw: str, reason: FinishReason, details: str
) -> None:
    body = sse("anthropic-stop-reason.sse").replace("STOP_REASON", raw)
    async with rig(tmp_path, "", body) as r:
        reply = await r.harness.create(model=MODEL)
        await through_create(r, reply)

        row = r.harness.assert_row(reply.id, text="Partial answer", finish_reason=reason)
        assert row is not None and row.finish_part() is not None
        assert row.finish_part().details == details  # type: ignore[union-attr]


@both_ways
async def test_error_event_mid_stream_finishes_as_error_and_reraises(
    tmp_path: Path, record: Record
) -> None:
    async with rig(tmp_path, "anthropic-error.sse") as r:
        reply = await r.harness.create(model=MODEL)
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            await record(r, reply)

        row = r.harness.assert_row(reply.id, text="Partial answer", finish_reason="error")
        assert row is not None and "overloaded_error" in row.finish_part().message  # type: ignore[union-attr]
        assert r.updates(reply.id)[-1].finish_reason() is FinishReason.ERROR


@both_ways
async def test_connection_cut_mid_stream_leaves_the_partial_text_durable(
    tmp_path: Path, record: Record
) -> None:
    async with rig(tmp_path, "anthropic-cut.sse") as r:
        reply = await r.harness.create(model=MODEL)
        # The Anthropic client lets httpx's own error through (httpx or httpx2, by version).
        with pytest.raises(Exception) as cut:
            await record(r, reply)

        assert type(cut.value).__name__ in ("RemoteProtocolError", "APIConnectionError")

        r.harness.assert_row(reply.id, text="Partial answer", finish_reason=FinishReason.ERROR)


async def test_cancelled_mid_stream_is_finished_as_canceled_and_written(tmp_path: Path) -> None:
    async with rig(tmp_path, "anthropic-hold.sse") as r:
        reply = await r.harness.create(model=MODEL)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(through_stream_helper, r, reply)
                await r.events.wait_for(
                    EventType.UPDATED,
                    message_id=reply.id,
                    predicate=lambda m: m.content().text == "Partial answer",
                )
                scope.cancel()
        assert scope.cancelled_caught
        r.harness.assert_row(reply.id, text="Partial answer", finish_reason=FinishReason.CANCELED)


@pytest.mark.parametrize(
    ("record", "error"),
    # messages.stream()'s own accumulator fails on the index first.
    [(through_stream_helper, IndexError), (through_create, UnknownToolCall)],
)
async def test_delta_at_a_block_index_no_start_opened_is_an_error_naming_it(
    tmp_path: Path, record: Record, error: type[Exception]
) -> None:
    async with rig(tmp_path, "anthropic-unknown-index.sse") as r:
        reply = await r.harness.create(model=MODEL)
        with pytest.raises(error) as e:
            await record(r, reply)

        if error is UnknownToolCall:
            assert isinstance(e.value, UnknownToolCall) and e.value.key == 1
            assert "a delta (input_json_delta) for content block 1, which" in str(e.value)
        r.harness.assert_row(reply.id, finish_reason=FinishReason.ERROR)


async def test_stream_without_message_stop_is_incomplete(tmp_path: Path) -> None:
    body = sse("anthropic-stop-reason.sse").replace("STOP_REASON", "end_turn")
    body = body.rsplit("event: message_stop", 1)[0]
    async with rig(tmp_path, "", body) as r:
        reply = await r.harness.create(model=MODEL)
        with pytest.raises(IncompleteStream):
            await through_create(r, reply)

        r.harness.assert_row(reply.id, text="Partial answer", finish_reason=FinishReason.ERROR)
