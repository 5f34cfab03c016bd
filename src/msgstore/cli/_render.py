"""Text for people: ``msgstore sessions``, ``show`` and ``stats`` output.

Everything is rendered as lines with an optional style. On a terminal (and with rich
installed) the styles become colours; otherwise the same lines are written plainly,
so piped output and tests see exactly the text.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, TypeAlias

import attrs

from msgstore import (
    BinaryContent,
    Finish,
    ImageURLContent,
    Message,
    Part,
    ReasoningContent,
    Role,
    Session,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
    encode_parts,
)

from ._inspect import FileStats

# (text, rich style or "")
Line: TypeAlias = tuple[str, str]

ROLE_STYLES = {
    Role.USER: "bold green",
    Role.ASSISTANT: "bold blue",
    Role.TOOL: "bold yellow",
    Role.SYSTEM: "bold magenta",
}
DIM = "dim"
INDENT = "  "

# C0 controls (but tab and newline), DEL and C1 controls: text from a model must not
# drive the terminal (ANSI escapes, carriage returns overwriting earlier output).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def when(ts: int | None, *, short: bool = False) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (``-`` for none); ``short``:
    ``YYYY-MM-DD HH:MM``."""
    if not ts:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ts)
    return moment.strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S UTC")


def size(n: int) -> str:
    """A byte count for people: ``512 B``, ``88.0 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- output -------------------------------------------------------------------------------


class Output:
    """Writes lines to a stream, in colour when it is a terminal and rich is installed."""

    def __init__(self, stream: IO[str], *, color: bool | None = None) -> None:
        self._stream = stream
        if color is None:
            color = stream.isatty() and "NO_COLOR" not in os.environ
        self._console: Any = None
        if color:
            try:
                from rich.console import Console
            except ImportError:  # the cli extra is not installed: plain text
                pass
            else:
                self._console = Console(file=stream, highlight=False, soft_wrap=True)

    def lines(self, lines: Iterable[Line]) -> None:
        console = self._console
        if console is None:
            for text, _ in lines:
                self._stream.write(text + "\n")
            return
        from rich.text import Text

        for text, style in lines:
            console.print(Text(text, style=style))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 0) -> list[Line]:
    """Aligned columns; the last ``right`` columns are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    first_right = len(headers) - right

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i >= first_right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [(fmt(headers), "bold"), *((fmt(r), "") for r in rows)]


# -- sessions -----------------------------------------------------------------------------


TITLE_FLOOR = 10  # shrink the title this far before dropping other columns
ELLIPSIS = "…"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def sessions_lines(
    sessions: Sequence[tuple[int, Session]], *, width: int | None = None
) -> list[Line]:
    """The summary table. Ids are never shortened: to fit ``width`` columns the title
    is cut (with an ellipsis), then the less important columns go, one by one."""
    if not sessions:
        return [("no sessions", DIM)]
    ids = ["  " * depth + ("└ " if depth else "") + s.id for depth, s in sessions]
    titles = [printable(s.title) for _, s in sessions]
    column = {
        "MESSAGES": [str(s.message_count) for _, s in sessions],
        "TOKENS IN/OUT": [f"{s.prompt_tokens}/{s.completion_tokens}" for _, s in sessions],
        "COST": [f"${s.cost:.4f}" for _, s in sessions],
        "UPDATED": [when(s.updated_at) for _, s in sessions],
    }
    short = {**column, "UPDATED": [when(s.updated_at, short=True) for _, s in sessions]}
    layouts: list[tuple[list[str], dict[str, list[str]], int]] = [
        (["MESSAGES", "TOKENS IN/OUT", "COST", "UPDATED"], column, TITLE_FLOOR),
        (["MESSAGES", "COST", "UPDATED"], column, TITLE_FLOOR),
        (["MESSAGES", "UPDATED"], column, TITLE_FLOOR),
        (["MESSAGES", "UPDATED"], short, TITLE_FLOOR),
        (["MESSAGES", "UPDATED"], short, len("TITLE")),
        (["MESSAGES"], short, len("TITLE")),
        ([], short, len("TITLE")),
    ]
    natural_title = max(len("TITLE"), *map(len, titles))
    id_width = max(len("ID"), *map(len, ids))
    names, cells, title_width = layouts[0][0], column, natural_title
    for names, cells, floor in layouts:
        others = sum(max(len(n), *map(len, cells[n])) + 2 for n in names)
        room = natural_title if width is None else width - id_width - 2 - others
        if room >= min(floor, natural_title) or names == []:
            title_width = max(min(room, natural_title), len("TITLE"))
            break
    rows = [
        [i, _clip(t, title_width), *(cells[n][k] for n in names)]
        for k, (i, t) in enumerate(zip(ids, titles, strict=True))
    ]
    return table(["ID", "TITLE", *names], rows, right=0)


# -- JSON ---------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(stream: IO[bytes], value: Any) -> None:
    """One JSON document, UTF-8, on ``stream``: no NaN or Infinity, and U+2028/U+2029
    escaped (they end a line for ``str.splitlines()`` and JavaScript)."""
    text = json.dumps(_finite(value), allow_nan=False, ensure_ascii=False, indent=2)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    stream.write(text.encode("utf-8") + b"\n")
    stream.flush()


def session_json(session: Session) -> dict[str, Any]:
    """A session row as a JSON object, one key per column."""
    return attrs.asdict(session)


def sessions_json(sessions: Sequence[tuple[int, Session]]) -> list[dict[str, Any]]:
    """Every session, in the table's order (sub-sessions after their parent)."""
    return [session_json(s) for _, s in sessions]


def message_json(message: Message) -> dict[str, Any]:
    """A message as a JSON object; ``parts`` as the ``parts`` column holds them."""
    return {
        "id": message.id,
        "session_id": message.session_id,
        "role": Role(message.role).value,
        "model": message.model,
        "provider": message.provider,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        "is_summary_message": message.is_summary_message,
        "parts": json.loads(encode_parts(message.parts)),
    }


def show_json(session: Session, messages: Sequence[Message]) -> dict[str, Any]:
    return {"session": session_json(session), "messages": [message_json(m) for m in messages]}


def stats_json(stats: FileStats) -> dict[str, Any]:
    return attrs.asdict(stats)


# -- show ---------------------------------------------------------------------------------


def _block(text: str, style: str = "", indent: str = INDENT) -> Iterator[Line]:
    for line in printable(text).split("\n"):
        yield (indent + line).rstrip(), style


def session_header(session: Session) -> list[Line]:
    return [
        (printable(session.title) or "(untitled)", "bold"),
        (
            f"session {session.id} · {plural(session.message_count, 'message')} · "
            f"tokens {session.prompt_tokens} in / {session.completion_tokens} out · "
            f"cost ${session.cost:.4f} · created {when(session.created_at)} · "
            f"updated {when(session.updated_at)}",
            DIM,
        ),
    ]


def message_header(message: Message) -> Line:
    role = Role(message.role)
    bits = [role.value + (" (summary)" if message.is_summary_message else "")]
    if message.model:
        bits.append(message.model + (f" ({message.provider})" if message.provider else ""))
    bits.append(when(message.created_at))
    bits.append(f"id {message.id}")
    return " · ".join(bits), ROLE_STYLES[role]


def part_lines(part: Part) -> Iterator[Line]:
    """The lines of one part, indented under its message's header."""
    if isinstance(part, TextContent):
        yield from _block(part.text)
    elif isinstance(part, ReasoningContent):
        yield from _reasoning_lines(part)
    elif isinstance(part, ToolCall):
        flags = ["finished" if part.finished else "unfinished"]
        if part.provider_executed:
            flags.append("provider-executed")
        yield f"{INDENT}tool call {printable(part.name)} [{part.id}] · {', '.join(flags)}", "cyan"
        yield from _block(_pretty_json(part.input) or "(no input)", "cyan", INDENT * 2)
    elif isinstance(part, ToolResult):
        yield from _tool_result_lines(part)
    elif isinstance(part, Finish):
        yield _finish_line(part)
    elif isinstance(part, ImageURLContent):
        detail = f" (detail {part.detail})" if part.detail else ""
        yield f"{INDENT}image {printable(part.url)}{detail}", ""
    elif isinstance(part, BinaryContent):
        yield (
            f"{INDENT}binary {printable(part.path) or '(no path)'} · "
            f"{part.mime_type or 'unknown type'} · {len(part.data)} bytes",
            "",
        )
    elif isinstance(part, ShellCommand):
        yield f"{INDENT}$ {printable(part.command)}", "bold"
        if part.output:
            yield from _block(part.output, "", INDENT * 2)
        yield f"{INDENT * 2}exit code {part.exit_code}", "red" if part.exit_code else DIM


def _reasoning_lines(part: ReasoningContent) -> Iterator[Line]:
    took = ""
    if part.started_at and part.finished_at:
        took = f" ({part.finished_at - part.started_at} s)"
    elif part.started_at:
        took = " (not finished)"
    yield f"{INDENT}reasoning{took}", DIM
    if part.thinking:
        yield from _block(part.thinking, DIM, INDENT + "│ ")
    if part.signature:
        yield f"{INDENT}│ signature {part.signature}", DIM
    if part.thought_signature:
        tool = f" (tool {part.tool_id})" if part.tool_id else ""
        yield f"{INDENT}│ thought signature {part.thought_signature}{tool}", DIM
    elif part.tool_id:
        yield f"{INDENT}│ tool {part.tool_id}", DIM
    if part.responses_data is not None:
        yield f"{INDENT}│ responses data {json.dumps(part.responses_data)}", DIM


def _tool_result_lines(part: ToolResult) -> Iterator[Line]:
    style = "red" if part.is_error else "yellow"
    head = f"{INDENT}tool result {printable(part.name)} → call {part.tool_call_id}"
    yield head + (" · ERROR" if part.is_error else ""), style
    if part.content:
        yield from _block(part.content, "red" if part.is_error else "", INDENT * 2)
    if part.data:
        yield f"{INDENT * 2}data: {part.mime_type or 'unknown type'}, {len(part.data)} chars", DIM
    if part.metadata:
        yield f"{INDENT * 2}metadata: {printable(part.metadata)}", DIM


def _finish_line(part: Finish) -> Line:
    text = f"{INDENT}finish: {part.reason}"
    if part.time:
        text += f" at {when(part.time)}"
    if part.message:
        text += f" · message: {printable(part.message)}"
    if part.details:
        text += f" · details: {printable(part.details)}"
    bad = part.reason in ("error", "canceled", "content_filter", "max_tokens")
    return text, "red" if bad else "magenta"


def _pretty_json(text: str) -> str:
    """A tool call's input, indented when it is a complete JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return text  # still streaming, or not JSON: as written
    if not isinstance(value, dict | list) or not value:
        return text
    return json.dumps(value, indent=2, ensure_ascii=False)


def show_lines(session: Session, messages: Sequence[Message]) -> list[Line]:
    """A whole conversation, for reading."""
    lines = session_header(session)
    for message in messages:
        lines.append(("", ""))
        lines.append(message_header(message))
        for part in message.parts:
            lines.extend(part_lines(part))
        if not message.parts:
            lines.append((f"{INDENT}(no content)", DIM))
        if message.role is Role.ASSISTANT and not message.is_finished():
            lines.append((f"{INDENT}(not finished)", DIM))
    return lines


# -- stats --------------------------------------------------------------------------------


def stats_lines(stats: FileStats) -> list[Line]:
    wal = "none" if stats.wal_size is None else size(stats.wal_size)
    lines: list[Line] = [
        (stats.path, "bold"),
        (f"file {size(stats.file_size)} · WAL {wal}", ""),
        (
            f"pages {stats.page_count} x {stats.page_size} B · {stats.freelist_count} free · "
            f"schema version {stats.schema_version}",
            DIM,
        ),
        ("", ""),
    ]
    lines += table(["TABLE", "ROWS"], [[t, str(n)] for t, n in stats.rows.items()], right=1)
    lines.append(("", ""))
    role_rows = [[r, str(n)] for r, n in stats.roles.items()] or [["(none)", "0"]]
    lines += table(["ROLE", "MESSAGES"], role_rows, right=1)
    lines.append(("", ""))
    part_rows = [[t, str(n)] for t, n in stats.parts.items()] or [["(none)", "0"]]
    lines += table(["PART TYPE", "PARTS"], part_rows, right=1)
    lines.append(("", ""))
    lines.append((f"parts JSON {size(stats.parts_bytes)} in total", DIM))
    lines.append((f"unfinished assistant messages: {stats.unfinished_assistant}", DIM))
    if stats.unreadable_parts:
        lines.append((f"rows whose parts are not a JSON array: {stats.unreadable_parts}", "red"))
    return lines
