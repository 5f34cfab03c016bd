"""``msgstore demo --openai-base-url URL --model NAME`` (or ``--anthropic-base-url``): a
real conversation, streamed from a model server through ``msgstore.providers``.

Two turns in one session: each prompt is ``create``d, the model's reply is recorded by
the adapter (every delta through ``update``), its usage is added to the session, and the
next request is built from what the service holds. What the terminal shows comes from
the service's events, as a UI would get it, not from the stream itself. Works with any
compatible endpoint: a local llama.cpp, Ollama or vLLM server (no key needed), or a
provider with ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` in the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs
import trio

from msgstore import (
    FinishReason,
    Message,
    MessageService,
    MsgstoreError,
    Role,
    Session,
    TextContent,
    connect,
    open_message_service,
)
from msgstore.providers import Recorded, add_usage_to_session

from ._demo_view import command_prefix
from ._render import printable

if TYPE_CHECKING:
    from anthropic.types import MessageParam
    from openai.types.chat import ChatCompletionMessageParam

PROMPTS = (
    "In two or three sentences: why would an app keep an LLM's reply in a database "
    "while the reply is still streaming?",
    "Now say the same in at most eight words.",
)
#: What local servers get when no key is set: they ignore it, but the SDKs want one.
DUMMY_KEY = "msgstore-demo-no-key"
MAX_TOKENS = 1024  # Anthropic's API requires a limit
EXIT_INTERRUPTED = 130


class DemoSetupError(MsgstoreError):
    """The provider demo cannot run as asked (flags, or an SDK not installed); the
    command line prints it as one line."""


class ProviderFailed(MsgstoreError):
    """The model server failed; what was streamed before is in the file."""


@attrs.frozen
class ProviderDemoOptions:
    db_path: Path
    provider: str  # "openai" or "anthropic"
    base_url: str
    model: str
    api_key: str = DUMMY_KEY
    prompts: tuple[str, ...] = PROMPTS

    @classmethod
    def from_flags(
        cls,
        *,
        db_path: Path,
        openai_base_url: str | None,
        anthropic_base_url: str | None,
        model: str | None,
        environ: Mapping[str, str] = os.environ,
    ) -> ProviderDemoOptions | None:
        """The options the flags ask for; None without a base URL (the offline demo)."""
        if openai_base_url and anthropic_base_url:
            raise DemoSetupError("give --openai-base-url or --anthropic-base-url, not both")
        if not (openai_base_url or anthropic_base_url):
            if model:
                raise DemoSetupError("--model needs --openai-base-url or --anthropic-base-url")
            return None
        if not model:
            raise DemoSetupError("--model NAME is needed with a base URL (the server's model)")
        provider = "openai" if openai_base_url else "anthropic"
        key = environ.get(f"{provider.upper()}_API_KEY") or DUMMY_KEY
        base_url = openai_base_url or anthropic_base_url or ""
        return cls(db_path=db_path, provider=provider, base_url=base_url, model=model, api_key=key)


@attrs.frozen
class ProviderDemoResult:
    session: Session
    replies: tuple[Message, ...]


class _Printer:
    """Prints the conversation from the service's events: each prompt once, and each
    reply's new reasoning and text as its states arrive."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._shown: dict[str, tuple[int, int]] = {}  # id -> (reasoning, text) printed
        self._done: set[str] = set()

    def show(self, message: Message) -> None:
        if message.id in self._done:
            return
        if message.role is Role.USER:
            self.out.write(f"\nuser: {printable(message.content().text)}\n")
            self._done.add(message.id)
        elif message.role is Role.ASSISTANT:
            self._reply(message)
        self.out.flush()

    def _reply(self, message: Message) -> None:
        thought, said = self._shown.get(message.id, (0, 0))
        thinking, text = message.reasoning_content().thinking, message.content().text
        if len(thinking) > thought:
            if not thought:
                self.out.write("  (thinking) ")
            self.out.write(printable(thinking[thought:]))
        if len(text) > said:
            if not said:
                self.out.write("\n  assistant: " if thinking else "  assistant: ")
            self.out.write(printable(text[said:]))
        self._shown[message.id] = (len(thinking), len(text))
        if message.is_finished():
            self.out.write(f"\n  [finished: {message.finish_reason()}]\n")
            self._done.add(message.id)


async def _follow(
    svc: MessageService,
    printer: _Printer,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with svc.subscribe() as events:
        task_status.started()
        async for event in events:
            if isinstance(event.payload, Message):
                printer.show(event.payload)


async def _text_history(svc: MessageService, reply: Message) -> list[tuple[str, str]]:
    """The conversation before ``reply``, as the service holds it (role, text).

    Only text goes back: the demo offers no tools, and reasoning is the model's own.
    """
    return [
        (m.role.value, m.content().text or "(no answer)")
        for m in await svc.list(reply.session_id)
        if m.role in (Role.USER, Role.ASSISTANT) and m.id != reply.id
    ]


async def _openai_turn(
    options: ProviderDemoOptions, client: Any, svc: MessageService, reply: Message
) -> Recorded:
    from msgstore.providers.openai import record_chat_stream

    history: list[ChatCompletionMessageParam] = []
    for role, text in await _text_history(svc, reply):
        if role == "user":
            history.append({"role": "user", "content": text})
        else:
            history.append({"role": "assistant", "content": text})
    stream = await client.chat.completions.create(
        model=options.model,
        messages=history,
        stream=True,
        stream_options={"include_usage": True},
    )
    return await record_chat_stream(svc, reply, stream)


async def _anthropic_turn(
    options: ProviderDemoOptions, client: Any, svc: MessageService, reply: Message
) -> Recorded:
    from msgstore.providers.anthropic import record_message_stream

    history: list[MessageParam] = []
    for role, text in await _text_history(svc, reply):
        if role == "user":
            history.append({"role": "user", "content": text})
        else:
            history.append({"role": "assistant", "content": text})
    async with client.messages.stream(
        model=options.model, max_tokens=MAX_TOKENS, messages=history
    ) as stream:
        return await record_message_stream(svc, reply, stream)


def _client(options: ProviderDemoOptions) -> Any:
    try:
        if options.provider == "openai":
            import openai

            return openai.AsyncOpenAI(
                base_url=options.base_url, api_key=options.api_key, max_retries=1
            )
        import anthropic

        return anthropic.AsyncAnthropic(
            base_url=options.base_url, api_key=options.api_key, max_retries=1
        )
    except ImportError:
        raise DemoSetupError(
            f"the {options.provider} demo needs its SDK: pip install 'msgstore[{options.provider}]'"
        ) from None


async def run_provider_demo(options: ProviderDemoOptions, out: IO[str]) -> ProviderDemoResult:
    """Run the conversation on ``options.db_path``, printing it to ``out`` as it streams.

    A failure of the model server (or of its stream) is raised as one ``MsgstoreError``
    once the service has written what was streamed before it.
    """
    client = _client(options)
    printer = _Printer(out)
    out.write(f"msgstore demo: {options.model} at {options.base_url} ({options.provider})\n")
    out.write(f"database: {options.db_path}\n")
    replies: list[Message] = []
    failure: MsgstoreError | None = None
    with connect(options.db_path) as db:
        async with (
            client,
            trio.open_nursery() as nursery,
            open_message_service(db) as svc,
        ):
            await nursery.start(_follow, svc, printer)
            session = await svc.sessions.create(f"demo: {options.model}")
            try:
                for prompt in options.prompts:
                    session = await _turn(options, client, svc, session, prompt, replies)
            except MsgstoreError as exc:
                failure = exc  # raised below, not from inside the nursery (a group)
            except Exception as exc:  # the SDK's or httpx's own
                failure = ProviderFailed(
                    f"{options.base_url}: {type(exc).__name__}: {exc} "
                    f"(what streamed before it is in {options.db_path})"
                )
        # The follower ends with the service: every event has been printed.
    if failure is not None:
        out.write("\n")
        raise failure
    out.write(
        f"\n{session.prompt_tokens:,} prompt and {session.completion_tokens:,} completion "
        "tokens, as the server reported them\n"
        f"see it again: {command_prefix()} show --db {options.db_path} {session.id}\n"
    )
    out.flush()
    return ProviderDemoResult(session, tuple(replies))


async def _turn(
    options: ProviderDemoOptions,
    client: Any,
    svc: MessageService,
    session: Session,
    prompt: str,
    replies: list[Message],
) -> Session:
    """One prompt and the model's streamed reply; returns the session with its usage."""
    await svc.create(session.id, Role.USER, [TextContent(prompt)])
    reply = await svc.create(
        session.id, Role.ASSISTANT, model=options.model, provider=options.provider
    )
    replies.append(reply)
    record = _openai_turn if options.provider == "openai" else _anthropic_turn
    try:
        recorded = await record(options, client, svc, reply)
    except Exception as exc:
        if not reply.is_finished():  # the request failed before any stream to record
            reply.add_finish(FinishReason.ERROR, message=f"{type(exc).__name__}: {exc}"[:500])
            await svc.update(reply)
        raise
    return await add_usage_to_session(svc, session.id, recorded.usage)


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(KeyboardInterrupt)[1] is None
    return isinstance(exc, KeyboardInterrupt)


def run_provider_demo_cli(options: ProviderDemoOptions) -> int:
    """The command: Ctrl-C stops the reply (written as ``canceled``) and exits 130."""
    try:
        trio.run(run_provider_demo, options, sys.stdout)
    except BaseException as exc:
        if not _only_interrupts(exc):
            raise
        print(f"msgstore: interrupted; saved in {options.db_path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
