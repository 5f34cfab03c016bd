"""``msgstore demo``: a simulated agent streams several conversations through the service.

Everything goes through the real ``open_message_service`` on a real SQLite file: each
conversation is a session made, and at the end given its tokens and cost, through
``svc.sessions``; prompts are ``create``d, replies stream reasoning, text and tool calls
token by token through ``update``, tool results come back as ``tool`` messages. A view
subscribed to the broker shows the messages grow, with the service's counters beside
them. The pace is Trio time (``trio.sleep``), ``speed`` times faster than a real model.

The demo can be stopped early (Ctrl-C, or the reader of its output going away, as in
``msgstore demo | head``): the agents are cancelled, and the service's block still
writes every state it accepted before the command exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import string
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import trio

from msgstore import (
    FinishReason,
    Message,
    MessageService,
    Role,
    TextContent,
    ToolCall,
    ToolResult,
    connect,
    open_message_service,
)

from ._demo_scripts import SCRIPTS, Script, Turn, tokens
from ._demo_state import Conversation, DemoOptions, DemoResult, DemoState
from ._demo_view import PlainView, View, pick_view

MODEL = "demo-sonnet"
PROVIDER = "simulated"
# Dollars per token, for the sessions' cost column (a plausible frontier-model price).
PROMPT_PRICE = 3e-6
COMPLETION_PRICE = 15e-6


def default_db_path() -> Path:
    """A fresh file in a new temporary directory (kept: ``msgstore show`` opens it later)."""
    return Path(tempfile.mkdtemp(prefix="msgstore-demo-")) / "demo.db"


class Agent:
    """Plays the model and the tools for each conversation, at a human-plausible pace."""

    def __init__(self, state: DemoState, service: MessageService) -> None:
        self.state = state
        self.service = service
        self.speed = state.options.speed
        self.seed = state.options.seed

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds / self.speed)

    @staticmethod
    def _id(prefix: str, rng: random.Random) -> str:
        alphabet = string.ascii_letters + string.digits
        return prefix + "".join(rng.choice(alphabet) for _ in range(24))

    async def converse(self, conversation: Conversation, script: Script) -> None:
        state = self.state
        # One generator per conversation: Trio's scheduling order must not change what
        # a seeded run says.
        seed = None if self.seed is None else f"{self.seed}/{conversation.index}"
        rng = random.Random(seed)
        session = await self.service.sessions.create(conversation.title)
        state.bind(conversation, session.id)
        await self.pause(rng.uniform(0.0, 1.2))  # people do not all type at once
        await self._create(conversation, Role.USER, [TextContent(script.prompt)])
        prompt_tokens = 400 + len(tokens(script.prompt))  # a system prompt, then the user's
        for turn in script.turns:
            await self.pause(rng.uniform(0.25, 0.6))  # time to first token
            prompt_tokens += await self._turn(conversation, turn, rng)
        conversation.done = True
        completion = conversation.tokens
        await self.service.sessions.save(
            attrs.evolve(
                session,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion,
                cost=prompt_tokens * PROMPT_PRICE + completion * COMPLETION_PRICE,
            )
        )

    async def _create(
        self, conversation: Conversation, role: Role, parts: list[TextContent] | list[ToolResult]
    ) -> Message:
        message = await self.service.create(
            conversation.session_id,
            role,
            parts,
            model=MODEL if role is Role.ASSISTANT else "",
            provider=PROVIDER if role is Role.ASSISTANT else "",
        )
        conversation.message_ids.append(message.id)
        self.state.rows_created += 1
        return message

    async def _stream(
        self,
        conversation: Conversation,
        message: Message,
        text: str,
        apply: Callable[[str], None],
        rate: float,
        rng: random.Random,
    ) -> None:
        """Send ``text`` as token deltas at about ``rate`` tokens a second."""
        for delta in tokens(text):
            apply(delta)
            self.state.tokens += 1
            conversation.tokens += 1
            await self.service.update(message)
            await self.pause(rng.expovariate(rate))

    async def _turn(self, conversation: Conversation, turn: Turn, rng: random.Random) -> int:
        """One assistant message (and the tool's answer); returns the prompt tokens it adds."""
        svc = self.service
        msg = await self._create(conversation, Role.ASSISTANT, [])
        await self._stream(
            conversation, msg, turn.reasoning, msg.append_reasoning_content, 110.0, rng
        )
        msg.append_reasoning_signature(self._id("sig_", rng))
        msg.finish_thinking()
        await svc.update(msg)  # terminal: written before update returns
        await self._stream(conversation, msg, turn.text, msg.append_content, 55.0, rng)
        tool = turn.tool
        if tool is None:
            msg.add_finish(FinishReason.END_TURN)
            await svc.update(msg)
            return 0
        call_id = self._id("toolu_", rng)
        conversation.tool_calls += 1
        msg.add_tool_call(ToolCall(id=call_id, name=tool.name))
        await svc.update(msg)
        await self._stream(
            conversation,
            msg,
            json.dumps(tool.input),
            lambda delta: msg.append_tool_call_input(call_id, delta),
            70.0,
            rng,
        )
        msg.finish_tool_call(call_id)
        await svc.update(msg)
        msg.add_finish(FinishReason.TOOL_USE)
        await svc.update(msg)
        await self.pause(tool.seconds * rng.uniform(0.7, 1.3))
        result = ToolResult(
            tool_call_id=call_id, name=tool.name, content=tool.output, is_error=tool.is_error
        )
        await self._create(conversation, Role.TOOL, [result])
        return len(tokens(tool.output))


def pick_scripts(streams: int, seed: int | None) -> list[Script]:
    """``streams`` scripts, starting at a random one; repeats get a numbered title."""
    start = random.Random(seed).randrange(len(SCRIPTS))
    out = []
    for i in range(streams):
        script = SCRIPTS[(start + i) % len(SCRIPTS)]
        round_ = i // len(SCRIPTS)
        if round_:
            script = attrs.evolve(script, title=f"{script.title} (#{round_ + 1})")
        out.append(script)
    return out


async def _tick(state: DemoState, view: View) -> None:
    while not state.followed.is_set():
        view.tick(state)
        with trio.move_on_after(view.interval):
            await state.followed.wait()


async def _stop_on_sigint(
    state: DemoState, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The first Ctrl-C stops the demo; leaving restores Trio's KeyboardInterrupt."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            state.stop("interrupted")
            return


async def run_demo(options: DemoOptions, view: View, *, catch_sigint: bool = False) -> DemoResult:
    """Run the whole demo on ``options.db_path``; the view shows it as it happens.

    ``catch_sigint`` (main thread only): the first Ctrl-C stops the demo early, as
    ``DemoState.stop`` does; a second one is a plain ``KeyboardInterrupt``.
    """
    scripts = pick_scripts(options.streams, options.seed)
    state = DemoState(options, scripts)
    with connect(options.db_path) as db:
        async with trio.open_nursery() as outer:
            if catch_sigint:
                await outer.start(_stop_on_sigint, state)
            view.start(state)
            try:
                # The follower's nursery encloses the service: when the service closes,
                # its subscription ends after the last event, and the view has seen
                # them all.
                async with (
                    trio.open_nursery() as nursery,
                    open_message_service(db, debounce=options.debounce) as svc,
                ):
                    state.service = svc
                    await nursery.start(state.follow, svc, lambda e: view.event(state, e))
                    nursery.start_soon(_tick, state, view)
                    agent = Agent(state, svc)
                    with state.agents_scope:
                        async with trio.open_nursery() as agents:
                            pairs = zip(state.conversations, scripts, strict=True)
                            for conversation, script in pairs:
                                agents.start_soon(agent.converse, conversation, script)
                view.tick(state)
                result = DemoResult(
                    db_path=options.db_path,
                    conversations=tuple(state.conversations),
                    tokens=state.tokens,
                    stats=svc.statistics(),
                    rows_created=state.rows_created,
                    events=state.events,
                    elapsed=state.elapsed,
                    stopped=state.stopped,
                )
            finally:
                view.stop()
            outer.cancel_scope.cancel()  # the SIGINT watcher
    view.finished(result)
    return result


EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell shows for ``yes | head``


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _interrupted(db_path: Path) -> int:
    with contextlib.suppress(OSError):
        print(f"msgstore: interrupted; saved in {db_path}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    """The reader has gone: point stdout at /dev/null so exiting flushes quietly."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_demo_cli(options: DemoOptions) -> int:
    """``msgstore demo``: the live view on a terminal, progress lines otherwise.

    Ctrl-C stops the agents, lets the service write every state it accepted, prints
    one line and exits 130. A closed output (``| head``) ends the demo the same way,
    silently, with status 141 (128 + SIGPIPE), as a shell shows for other commands.
    """
    view = PlainView(sys.stdout) if options.plain else pick_view(sys.stdout)
    try:
        result = trio.run(partial(run_demo, options, view, catch_sigint=True))
    except (KeyboardInterrupt, BrokenPipeError, BaseExceptionGroup) as exc:
        # A second Ctrl-C (or one before the demo started), or a write the views did
        # not guard; anything else is a real error and goes on up.
        leaves = _leaves(exc)
        if not all(isinstance(e, KeyboardInterrupt | BrokenPipeError) for e in leaves):
            raise
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            return _interrupted(options.db_path)
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if result.stopped == "interrupted":
        return _interrupted(options.db_path)
    if view.output_closed:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return 0
