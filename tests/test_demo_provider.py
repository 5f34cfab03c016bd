"""The demo against a model server: the real SDK clients on the local fake server.

Run in process (``run_provider_demo``) on Trio's real clock, like the provider tests.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from provider_server import open_provider_server, sse

from msgstore import FinishReason, Role, connect
from msgstore.cli._demo_provider import (
    DUMMY_KEY,
    PROMPTS,
    DemoSetupError,
    ProviderDemoOptions,
    ProviderFailed,
    run_provider_demo,
)


def options(
    tmp_path: Path, provider: str, url: str, model: str = "local-model"
) -> ProviderDemoOptions:
    flags = {"openai_base_url": None, "anthropic_base_url": None}
    flags[f"{provider}_base_url"] = url
    made = ProviderDemoOptions.from_flags(
        db_path=tmp_path / "demo.db", model=model, environ={}, **flags
    )
    assert made is not None
    return made


async def test_openai_demo_streams_two_turns_and_sends_the_stored_history_back(
    tmp_path: Path,
) -> None:
    async with open_provider_server() as server:
        server.reply(sse("openai-chat-reasoning.sse"))
        server.reply(sse("openai-chat-text.sse"))
        out = io.StringIO()
        result = await run_provider_demo(options(tmp_path, "openai", f"{server.url}/v1"), out)

    text = out.getvalue()
    assert f"user: {PROMPTS[0]}" in text and f"user: {PROMPTS[1]}" in text
    assert "(thinking) The user greets me; greet back.\n  assistant: Hi there." in text
    assert "assistant: Hello, world!\n  [finished: end_turn]" in text
    assert "2,234 prompt and 92 completion tokens" in text
    assert f"show --db {tmp_path / 'demo.db'} {result.session.id}" in text
    # The second request carries the conversation as the service held it.
    assert server.requests[1].body["messages"] == [
        {"role": "user", "content": PROMPTS[0]},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": PROMPTS[1]},
    ]
    assert server.requests[0].headers["authorization"] == f"Bearer {DUMMY_KEY}"
    with connect(tmp_path / "demo.db", read_only=True) as db:
        rows = db.stored_messages(result.session.id)
        session = db.get_session(result.session.id)
    assert [m.role for m in rows] == [Role.USER, Role.ASSISTANT] * 2
    assert [m.finish_reason() for m in rows[1::2]] == [FinishReason.END_TURN] * 2
    assert (session.prompt_tokens, session.completion_tokens) == (2234, 92)


async def test_anthropic_demo_streams_through_messages_stream(tmp_path: Path) -> None:
    reply = sse("anthropic-stop-reason.sse").replace("STOP_REASON", "end_turn")
    async with open_provider_server() as server:
        server.reply(sse("anthropic-redacted-thinking.sse"))
        server.reply(reply)
        out = io.StringIO()
        result = await run_provider_demo(options(tmp_path, "anthropic", server.url), out)

    assert "assistant: Done.\n  [finished: end_turn]" in out.getvalue()
    assert "assistant: Partial answer\n  [finished: end_turn]" in out.getvalue()
    assert server.requests[0].path == "/v1/messages"
    assert server.requests[1].body["messages"][1] == {"role": "assistant", "content": "Done."}
    assert [m.content().text for m in result.replies] == ["Done.", "Partial answer"]


async def test_a_server_failing_mid_reply_is_one_error_with_the_partial_reply_kept(
    tmp_path: Path,
) -> None:
    async with open_provider_server() as server:
        server.reply(sse("openai-chat-cut.sse"))
        with pytest.raises(ProviderFailed, match=r"APIConnectionError|RemoteProtocolError") as f:
            await run_provider_demo(options(tmp_path, "openai", server.url), io.StringIO())

    assert str(tmp_path / "demo.db") in str(f.value)
    with connect(tmp_path / "demo.db", read_only=True) as db:
        (session,) = db.list_sessions()
        reply = db.stored_messages(session.id)[1]
    assert (reply.content().text, reply.finish_reason()) == ("Partial answer", FinishReason.ERROR)


def test_flags_choose_the_provider_and_take_the_key_from_the_environment(tmp_path: Path) -> None:
    made = ProviderDemoOptions.from_flags(
        db_path=tmp_path / "d.db",
        openai_base_url=None,
        anthropic_base_url="http://127.0.0.1:9",
        model="claude-x",
        environ={"ANTHROPIC_API_KEY": "sk-ant-from-env", "OPENAI_API_KEY": "other"},
    )
    assert made is not None
    assert (made.provider, made.base_url, made.model, made.api_key) == (
        "anthropic",
        "http://127.0.0.1:9",
        "claude-x",
        "sk-ant-from-env",
    )


@pytest.mark.parametrize(
    ("openai_url", "anthropic_url", "model", "error"),
    [
        ("http://a", "http://b", "m", "not both"),
        ("http://a", None, None, "--model NAME is needed"),
        (None, None, "m", "--model needs --openai-base-url"),
    ],
)
def test_flags_that_do_not_fit_are_one_clear_error(
    tmp_path: Path, openai_url: str | None, anthropic_url: str | None, model: str | None, error: str
) -> None:
    with pytest.raises(DemoSetupError, match=error):
        ProviderDemoOptions.from_flags(
            db_path=tmp_path / "d.db",
            openai_base_url=openai_url,
            anthropic_base_url=anthropic_url,
            model=model,
        )


def test_without_a_base_url_the_demo_stays_offline(tmp_path: Path) -> None:
    assert (
        ProviderDemoOptions.from_flags(
            db_path=tmp_path / "d.db", openai_base_url=None, anthropic_base_url=None, model=None
        )
        is None
    )


async def test_a_request_refused_before_any_stream_finishes_the_reply_as_error(
    tmp_path: Path,
) -> None:
    async with open_provider_server() as server:
        server.reply('{"error": {"message": "model not found"}}', status=404)
        with pytest.raises(ProviderFailed, match="model not found"):
            await run_provider_demo(options(tmp_path, "openai", server.url), io.StringIO())

    with connect(tmp_path / "demo.db", read_only=True) as db:
        (session,) = db.list_sessions()
        reply = db.stored_messages(session.id)[1]
    assert reply.finish_reason() is FinishReason.ERROR
    assert "NotFoundError" in reply.finish_part().message  # type: ignore[union-attr]
