"""What the provider adapters share: lazy SDK imports, usage and prices, failure finishes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionChunk

from msgstore import FinishReason
from msgstore.providers import Prices, Usage
from msgstore.providers.openai import record_chat_stream
from msgstore.testing import open_test_service


def test_importing_msgstore_and_its_adapters_imports_no_sdk() -> None:
    code = (
        "import sys, msgstore, msgstore.providers, msgstore.providers.openai, "
        "msgstore.providers.anthropic\n"
        "loaded = sorted(m for m in ('openai', 'anthropic', 'httpx2') if m in sys.modules)\n"
        "print(loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_prices_charge_cache_reads_and_writes_at_their_own_price_or_the_input_price() -> None:
    usage = Usage(
        input_tokens=1000, output_tokens=100, cache_read_tokens=600, cache_write_tokens=300
    )
    assert Prices(input=3.0, output=15.0).cost(usage) == pytest.approx(
        (1000 * 3.0 + 100 * 15.0) / 1e6
    )
    assert Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75).cost(
        usage
    ) == pytest.approx((100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 100 * 15.0) / 1e6)


def chunk(content: str) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
    )


async def test_keyboard_interrupt_mid_stream_finishes_as_canceled_and_goes_on_up(
    tmp_path: Path,
) -> None:
    async def interrupted() -> AsyncIterator[ChatCompletionChunk]:
        yield chunk("So far")
        raise KeyboardInterrupt

    async with open_test_service(tmp_path) as h:
        reply = await h.create()
        with pytest.raises(KeyboardInterrupt):
            await record_chat_stream(h.service, reply, interrupted())
        h.assert_row(reply.id, text="So far", finish_reason=FinishReason.CANCELED)


async def test_a_finish_that_cannot_be_written_does_not_hide_the_streams_own_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_test_service(tmp_path) as h:
        reply = await h.create()
    service = h.service  # closed now

    async def failing() -> AsyncIterator[ChatCompletionChunk]:
        raise ConnectionResetError("peer went away")
        yield chunk("never")  # pragma: no cover

    with pytest.raises(ConnectionResetError):
        await record_chat_stream(service, reply, failing())
    assert reply.finish_reason() is FinishReason.ERROR
    assert "could not write its error finish" in caplog.text
