"""How ``msgstore demo`` shows itself: a live rich view, or plain progress lines.

Both are fed the same way: ``event`` for each broker event the demo's subscriber takes,
``tick`` every ``interval`` seconds, ``finished`` with the summary. The live view needs
rich (the ``cli`` extra); without it, or without a terminal, the plain view is used.
In the live view a message's text is rendered as Markdown, wrapped by rich to the width
its panel really has. A view whose output goes away (``msgstore demo | head``) stops
writing, sets ``output_closed`` and stops the demo.
"""

from __future__ import annotations

import math
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from msgstore import Event, EventType, Message, Role, ToolCall, ToolResult

from ._render import printable

if TYPE_CHECKING:
    from ._demo_state import Conversation, DemoResult, DemoState


class View(Protocol):
    interval: float
    #: The output went away (a closed pipe): nothing more is written.
    output_closed: bool

    def start(self, state: DemoState) -> None: ...
    def event(self, state: DemoState, event: Event) -> None: ...
    def tick(self, state: DemoState) -> None: ...
    def stop(self) -> None: ...
    def finished(self, result: DemoResult) -> None: ...


def pick_view(stream: IO[str]) -> View:
    """The live view on a terminal with rich installed, else plain lines."""
    if stream.isatty():
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            return LiveView(Console(file=stream))
    return PlainView(stream)


# -- shared words ---------------------------------------------------------------------------


def _counters(state: DemoState) -> dict[str, str]:
    stats = state.statistics()
    updates = stats.updates if stats else 0
    writes = stats.writes if stats else 0
    ratio = f"{updates / writes:.1f}x" if writes else "-"
    return {
        "tokens": f"{state.tokens:,}",
        "SQL writes": f"{writes:,}",
        "rows created": f"{state.rows_created:,}",
        "events": f"{state.events:,}",
        "coalescing": ratio,
        "drops": f"{stats.drops if stats else 0}",
    }


def _legend(state: DemoState, *, short: bool = False) -> str:
    """What "coalescing" means, in the counters' own numbers."""
    stats = state.statistics()
    updates = stats.updates if stats else 0
    writes = stats.writes if stats else 0
    window = f"{state.options.debounce * 1000:g} ms"
    if state.options.debounce <= 0:
        how = "no window: one write per update"
    elif short:  # fits one line of an 80-column terminal
        return f"coalescing: {updates:,} updates → {writes:,} SQL writes, one per {window} window"
    else:
        how = f"one write per {window} window instead of one per token"
    return f"coalescing: {updates:,} updates reached the store, {writes:,} SQL writes: {how}"


def _status(state: DemoState, conversation: Conversation) -> str:
    if conversation.done:
        return "done"
    if not conversation.message_ids:
        return "waiting"
    last = state.messages.get(conversation.message_ids[-1])
    if last is None:
        return "starting"
    if last.role is Role.USER:
        return "prompted"
    if last.role is Role.TOOL:
        return "reading tool result"
    if last.is_finished():
        return "running tool" if last.finish_reason() == "tool_use" else "done"
    calls = last.tool_calls()
    if calls and not calls[-1].finished:
        return f"calling {calls[-1].name}"
    if last.is_thinking():
        return "thinking"
    return "writing" if last.content().text else "waiting for first token"


def _summary_rows(result: DemoResult, state_messages: dict[str, Message]) -> list[list[str]]:
    rows = []
    for c in result.conversations:
        finish = "-"
        for mid in reversed(c.message_ids):
            m = state_messages.get(mid)
            if m is not None and m.role is Role.ASSISTANT:
                finish = str(m.finish_reason() or "unfinished")
                break
        rows.append(
            [
                str(c.index + 1),
                c.title,
                c.session_id,
                str(len(c.message_ids)),
                str(c.tokens),
                str(c.tool_calls),
                finish,
            ]
        )
    return rows


_SUMMARY_HEADERS = ["#", "CONVERSATION", "SESSION ID", "MESSAGES", "TOKENS", "TOOLS", "FINISH"]


def _totals(result: DemoResult) -> list[str]:
    s = result.stats
    return [
        f"{result.tokens:,} tokens streamed through {s.updates:,} update() calls",
        f"{s.writes:,} SQL writes (UPDATE) and {result.rows_created} rows created: "
        f"{result.coalescing:.1f} updates per write (coalescing: the updates within one "
        "window share one write)",
        f"{result.events:,} events to the view, {s.drops} dropped",
        f"{result.elapsed:.1f} s",
    ]


def command_prefix() -> str:
    """How to run msgstore as typed here: ``msgstore`` if that name on PATH is this
    installation's script, else this interpreter's ``-m msgstore`` (after ``nox -s
    demo`` nox's venv is not on PATH)."""
    on_path = shutil.which("msgstore")
    scripts = sysconfig.get_path("scripts")
    if on_path and scripts and Path(on_path).resolve().parent == Path(scripts).resolve():
        return "msgstore"
    return f"{shlex.quote(sys.executable)} -m msgstore"


def _next_steps(result: DemoResult) -> list[str]:
    db = shlex.quote(str(result.db_path))
    first = result.conversations[0].session_id if result.conversations else "SESSION_ID"
    run = command_prefix()
    return [
        f"database: {result.db_path}",
        f"  {run} sessions --db {db}",
        f"  {run} show --db {db} {first}",
    ]


# -- plain ------------------------------------------------------------------------------------


class PlainView:
    """Progress lines: one per prompt, finished reply and tool result, and a counter line."""

    interval = 1.0

    def __init__(self, stream: IO[str]) -> None:
        self._out = stream
        self._finished: set[str] = set()
        self._messages: dict[str, Message] = {}
        self._last_counters = -math.inf
        self._state: DemoState | None = None
        self.output_closed = False

    def _print(self, text: str = "") -> None:
        if self.output_closed:
            return
        try:
            self._out.write(text + "\n")
            self._out.flush()  # progress is only progress if it shows up as it happens
        except BrokenPipeError:
            self.output_closed = True
            if self._state is not None:
                self._state.stop("output closed")

    def start(self, state: DemoState) -> None:
        self._state = state
        o = state.options
        self._print(
            f"msgstore demo: {len(state.conversations)} conversations, speed {o.speed:g}x, "
            f"window {o.debounce * 1000:g} ms"
        )
        self._print(f"database: {o.db_path}")
        self._print(
            "coalescing = updates per SQL write: the updates to a message within one "
            "window share one write"
        )

    def event(self, state: DemoState, event: Event) -> None:
        message: Message = event.payload
        self._messages = state.messages
        conversation = state.conversation_of(message.session_id)
        if conversation is None:
            return
        head = f"[{state.elapsed:5.1f}s] #{conversation.index + 1}"
        if event.type is EventType.CREATED and message.role is Role.USER:
            self._print(f"{head} {conversation.title} · user: {printable(message.content().text)}")
        elif event.type is EventType.CREATED and message.role is Role.TOOL:
            for r in message.tool_results():
                self._print(f"{head} tool result {r.name} -> {r.tool_call_id}{_error(r)}")
        elif (
            message.role is Role.ASSISTANT
            and message.is_finished()
            and message.id not in self._finished
        ):
            self._finished.add(message.id)
            calls = ", ".join(f"{c.name} [{c.id}]" for c in message.tool_calls())
            what = f" · tool call {calls}" if calls else ""
            self._print(
                f"{head} assistant finished: {message.finish_reason()} · "
                f"{len(message.content().text)} chars{what}"
            )

    def tick(self, state: DemoState) -> None:
        if state.elapsed - self._last_counters < self.interval:
            return
        self._last_counters = state.elapsed
        counters = " · ".join(f"{k} {v}" for k, v in _counters(state).items())
        self._print(f"[{state.elapsed:5.1f}s] {counters}")

    def stop(self) -> None:
        pass

    def finished(self, result: DemoResult) -> None:
        from ._render import table

        if result.stopped:
            return  # interrupted: one line on stderr says so; or nobody is reading
        self._print()
        for text, _ in table(_SUMMARY_HEADERS, _summary_rows(result, self._messages), right=0):
            self._print(text)
        self._print()
        for line in [*_totals(result), "", *_next_steps(result)]:
            self._print(line)


def _error(result: ToolResult) -> str:
    return " (error)" if result.is_error else ""


# -- live -------------------------------------------------------------------------------------


class LiveView:
    """A rich ``Live`` display: counters on top, one panel per conversation."""

    interval = 1 / 12

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self._live = Live(
            console=console,
            auto_refresh=False,  # refreshed from the Trio loop: rich's thread would race it
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._messages: dict[str, Message] = {}
        self._state: DemoState | None = None
        self.output_closed = False

    def _guard(self, write: Any, *args: Any, **kwargs: Any) -> None:
        if self.output_closed:
            return
        try:
            write(*args, **kwargs)
        except BrokenPipeError:  # the terminal went away
            self.output_closed = True
            if self._state is not None:
                self._state.stop("output closed")

    def start(self, state: DemoState) -> None:
        self._state = state
        self._guard(self._live.start)
        self.tick(state)

    def event(self, state: DemoState, event: Event) -> None:
        self._messages = state.messages

    def tick(self, state: DemoState) -> None:
        self._messages = state.messages
        self._guard(self._live.update, self.render(state), refresh=True)

    def stop(self) -> None:
        self._guard(self._live.stop)

    def render(self, state: DemoState) -> Any:
        """The whole screen for ``state``, fitted to the console's size."""
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        o = state.options
        width, height = self.console.size
        header = Text()
        for name, value in _counters(state).items():
            header.append(f"{name} ", style="dim")
            header.append(f"{value}   ", style="bold")
        header.append(f"{state.elapsed:.1f} s", style="dim")
        header.append("\n")
        header.append(_legend(state, short=width < 110), style="italic")
        top = Panel(
            header,
            title=f"[bold]msgstore demo[/] · {len(state.conversations)} conversations · "
            f"window {o.debounce * 1000:g} ms · speed {o.speed:g}x",
            subtitle=Text(str(o.db_path), style="dim"),
            border_style="blue",
        )
        top_height = len(self.console.render_lines(top, self.console.options, pad=False))
        columns = 2 if width >= 110 and len(state.conversations) > 1 else 1
        rows = math.ceil(len(state.conversations) / columns)
        # One line spare: a frame as tall as the terminal would scroll it.
        room = height - 1 - top_height
        panel_height = max(4, min(16, room // max(rows, 1)))
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in range(columns):
            grid.add_column(ratio=1)
        panels = [
            Panel(
                self._body(state, c),
                title=Text(f"#{c.index + 1} {c.title}", style="bold"),
                subtitle=Text(f"{_status(state, c)} · {c.tokens} tokens", style="dim"),
                height=panel_height,
                border_style="green" if c.done else "white",
            )
            for c in state.conversations
        ]
        for i in range(0, len(panels), columns):
            grid.add_row(*panels[i : i + columns])
        return Group(top, grid)

    def _body(self, state: DemoState, conversation: Conversation) -> Any:
        from rich.text import Text

        parts: list[Any] = []
        for mid in conversation.message_ids:
            message = state.messages.get(mid)
            if message is not None:
                parts.extend(message_renderables(message))
        return Tail(parts) if parts else Text("…", style="dim")

    def finished(self, result: DemoResult) -> None:
        if result.stopped:
            return  # interrupted: one line on stderr says so; or nobody is reading
        self._guard(self._print_summary, result)

    def _print_summary(self, result: DemoResult) -> None:
        from rich.table import Table

        summary = Table(title="msgstore demo: summary", title_style="bold")
        for h in _SUMMARY_HEADERS:
            summary.add_column(
                h, justify="right" if h in ("MESSAGES", "TOKENS", "TOOLS") else "left"
            )
        for row in _summary_rows(result, self._messages):
            summary.add_row(*row)
        self.console.print(summary)
        for line in _totals(result):
            self.console.print(line, highlight=False)
        self.console.print()
        for line in _next_steps(result):
            command = line.startswith(" ")
            # A command is never broken by a newline: the terminal wraps it, and a
            # copy of it pastes as one line.
            self.console.print(
                line, highlight=False, style="bold" if command else "", soft_wrap=command
            )


class Tail:
    """Renders ``renderables`` at the width rich gives it, and keeps the last lines
    that fit the height it is given: a panel shows the newest text of its messages."""

    def __init__(self, renderables: list[Any], lines: int | None = None) -> None:
        self.renderables = renderables
        self.lines = lines

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.console import Group
        from rich.segment import Segment

        height = options.height or self.lines
        rendered = console.render_lines(
            Group(*self.renderables), options.update(height=None), pad=False
        )
        if height is not None:
            rendered = rendered[-height:]
        for line in rendered:
            yield from line
            yield Segment.line()


def message_renderables(message: Message) -> list[Any]:
    """One message for the live view: text as Markdown, reasoning dimmed, tools coloured."""
    from rich.markdown import Markdown
    from rich.text import Text

    if message.role is Role.USER:
        prompt = Text("you: ", style="bold green")
        prompt.append(printable(message.content().text))
        return [prompt]
    out: list[Any] = []
    if message.role is Role.TOOL:
        for r in message.tool_results():
            style = "red" if r.is_error else "yellow"
            first = printable(r.content.split("\n", 1)[0])
            out.append(Text(f"↳ {r.name}{_error(r)}: {first}", style=style))
        return out
    reasoning = message.reasoning_content()
    if reasoning.thinking:
        out.append(Text(printable(reasoning.thinking), style="dim italic"))
    text = message.content().text
    if text:
        out.append(Markdown(printable(text), code_theme="ansi_dark"))
    for part in message.parts:
        if isinstance(part, ToolCall):
            mark = "✓" if part.finished else "…"
            out.append(Text(f"⚙ {part.name} {printable(part.input)} {mark}", style="cyan"))
    if message.is_finished():
        out.append(Text(f"■ {message.finish_reason()}", style="magenta dim"))
    return out
