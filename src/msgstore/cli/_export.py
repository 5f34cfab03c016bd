"""Sessions out of and into a database file: versioned JSONL (lossless) and Markdown.

The JSONL format, version 1, one JSON object per line:

- a header ``{"format": "msgstore-export", "version": 1, "exported_at": ..., "sessions":
  N, "messages": M}`` (the counts let an import notice a truncated file);
- per session a ``{"type": "session", ...}`` line with every column of the row, followed
  by its messages as ``{"type": "message", ...}`` lines, oldest first, each with every
  column and ``parts`` as the JSON array the ``parts`` column holds (``encode_parts``:
  the same keys, tags and base64 as crush's files).

Import gives a session or message a new id when the target already has that id (or
the file repeats one), rewriting the references to it; it never overwrites a row, and
it loads the whole file in one transaction or nothing. A file holding what no row can
(an integer column outside int64, a lone surrogate in any string, JSON nested deeper
than ``MAX_DEPTH``) is refused whole, naming the line, before the database is opened.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Final, NamedTuple

import attrs

from msgstore import (
    BinaryContent,
    CorruptRecord,
    Database,
    Finish,
    ImageURLContent,
    MsgstoreError,
    Part,
    ReasoningContent,
    Role,
    Session,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
    decode_parts,
    encode_parts,
)

FORMAT: Final = "msgstore-export"
VERSION: Final = 1


class ExportFormatError(MsgstoreError):
    """An import file that is not a msgstore export (or a damaged one); names the line."""


# -- reading rows -------------------------------------------------------------------------


def sessions_to_export(db: Database, ids: Sequence[str]) -> list[Session]:
    """The named sessions (all of them, oldest first, when ``ids`` is empty)."""
    if ids:
        from ._inspect import require_sessions

        return require_sessions(db, list(ids))
    return db.all_sessions()


class MessageRecord(NamedTuple):
    """One message row as exported: every column, parts decoded.

    In ``Database.message_rows``' column order: it is one of its rows, and
    ``Database.import_rows`` takes it as one.
    """

    id: str
    session_id: str
    role: str
    parts: list[Part]
    model: str | None
    provider: str | None
    is_summary_message: bool
    created_at: int
    updated_at: int
    finished_at: int | None


def message_records(db: Database, session_id: str) -> list[MessageRecord]:
    """The session's messages as ``Database.message_rows`` reads them, oldest first."""
    return [MessageRecord._make(row) for row in db.message_rows(session_id)]


# -- JSONL --------------------------------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: \u escapes are still valid JSON
        return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"


def _session_obj(s: Session) -> dict[str, Any]:
    return {"type": "session", **attrs.asdict(s)}


def _message_obj(m: MessageRecord) -> dict[str, Any]:
    return {
        "type": "message",
        "id": m.id,
        "session_id": m.session_id,
        "role": m.role,
        "model": m.model,
        "provider": m.provider,
        "is_summary_message": m.is_summary_message,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "finished_at": m.finished_at,
        "parts": json.loads(encode_parts(m.parts)),
    }


def export_jsonl(db: Database, ids: Sequence[str], out: IO[bytes]) -> tuple[int, int]:
    """Write the sessions (all when ``ids`` is empty) as JSONL; return (sessions, messages)."""
    sessions = sessions_to_export(db, ids)
    # Read everything first: the header carries the counts, and a corrupt row fails
    # the export before anything is written.
    records = [(s, message_records(db, s.id)) for s in sessions]
    n_messages = sum(len(ms) for _, ms in records)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": int(time.time()),
        "sessions": len(sessions),
        "messages": n_messages,
    }
    out.write(_line(header))
    for session, messages in records:
        out.write(_line(_session_obj(session)))
        for m in messages:
            out.write(_line(_message_obj(m)))
    return len(sessions), n_messages


# -- import -------------------------------------------------------------------------------


@attrs.frozen
class ImportResult:
    sessions: int
    messages: int
    # old id -> new id, only for the rows that were given a new one
    renamed_sessions: dict[str, str]
    renamed_messages: dict[str, str]


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# How deep one line's JSON may nest. A message line itself takes five levels down to a
# reasoning part's responses_data; Python's json and the codec recurse once per level,
# so a file nested thousands deep would end in RecursionError.
MAX_DEPTH: Final = 100
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ExportFormatError(f"{where}: {key!r} must be {names}, got {value!r:.60}")
    if type(value) is int and float not in kinds and not _INT64_MIN <= value <= _INT64_MAX:
        # SQLite cannot store it, and Go reads these columns as int64.
        raise ExportFormatError(f"{where}: {key!r} {_digits(value)} is outside int64")
    return value


def _digits(value: int) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _cost(obj: dict[str, Any], where: str) -> float:
    value = _field(obj, "cost", _NUM, where)
    try:
        return float(value)
    except OverflowError:
        raise ExportFormatError(f"{where}: 'cost' {_digits(value)} is too large") from None


def _lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (which UTF-8 cannot encode), if any."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.group() if found else None


def _check_json(value: object, where: str) -> None:
    """Refuse what no database row can hold: nesting past MAX_DEPTH, lone surrogates.

    A lone surrogate (``"\\ud800"`` in the file) cannot be stored as UTF-8; msgstore's
    own exports never hold one (the codec writes U+FFFD). Iterative, so a deep value
    cannot overflow the stack here.
    """
    stack: list[tuple[object, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if type(item) is str:
            bad = _lone_surrogate(item)
            if bad is not None:
                raise ExportFormatError(
                    f"{where}: {path or 'the line'} holds the lone surrogate "
                    f"{bad.encode('unicode_escape').decode()}, which is not text"
                )
            continue
        if type(item) is not dict and type(item) is not list:
            continue
        if depth >= MAX_DEPTH:
            at = path if len(path) <= 60 else path[:60] + "..."
            raise ExportFormatError(
                f"{where}: JSON nested deeper than {MAX_DEPTH} levels (at {at})"
            )
        if type(item) is dict:
            for key, child in item.items():
                bad = _lone_surrogate(key)
                if bad is not None:
                    raise ExportFormatError(
                        f"{where}: a key in {path or 'the line'} holds the lone surrogate "
                        f"{bad.encode('unicode_escape').decode()}, which is not text"
                    )
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        else:
            assert isinstance(item, list)
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_OPT_INT = (int, type(None))
_NUM = (int, float)


@attrs.frozen
class ExportData:
    """A parsed, checked export file, ready to import."""

    sessions: list[Session]
    messages: list[MessageRecord]


def read_export(lines: Iterable[bytes], *, name: str = "input") -> ExportData:
    """Parse and check a JSONL export; ``ExportFormatError`` names the file and line."""
    sessions, messages = _parse(lines, name)
    known = {s.id for s in sessions}
    for m in messages:
        if m.session_id not in known:
            raise ExportFormatError(
                f"{name}: message {m.id!r} belongs to session {m.session_id!r}, "
                "which the file does not hold"
            )
    return ExportData(sessions, messages)


def _parse(lines: Iterable[bytes], name: str) -> tuple[list[Session], list[MessageRecord]]:
    sessions: list[Session] = []
    messages: list[MessageRecord] = []
    header: dict[str, Any] | None = None
    for number, raw in enumerate(lines, start=1):
        where = f"{name} line {number}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except RecursionError:
            raise ExportFormatError(
                f"{where}: JSON nested deeper than {MAX_DEPTH} levels"
            ) from None
        except (ValueError, UnicodeDecodeError) as e:
            if header is None:
                raise ExportFormatError(f"{name} is not a msgstore export (not JSON)") from None
            raise ExportFormatError(f"{where}: not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ExportFormatError(f"{where}: expected a JSON object")
        _check_json(obj, where)
        if header is None:
            if obj.get("format") != FORMAT:
                raise ExportFormatError(f"{name} is not a msgstore export (no header line)")
            version = obj.get("version")
            if version != VERSION:
                raise ExportFormatError(
                    f"{name} is export format version {version!r}; "
                    f"this msgstore reads version {VERSION}"
                )
            header = obj
            continue
        kind = obj.get("type")
        if kind == "session":
            sessions.append(_parse_session(obj, where))
        elif kind == "message":
            messages.append(_parse_message(obj, where))
        else:
            raise ExportFormatError(f"{where}: unknown record type {kind!r}")
    if header is None:
        raise ExportFormatError(f"{name} is empty, not a msgstore export")
    for kind, ids in (("session", [s.id for s in sessions]), ("message", [m.id for m in messages])):
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise ExportFormatError(f"{name} holds {kind} {twice!r} twice")
    if (header.get("sessions"), header.get("messages")) != (len(sessions), len(messages)):
        raise ExportFormatError(
            f"{name} is incomplete: its header announces {header.get('sessions')} sessions "
            f"and {header.get('messages')} messages, it holds {len(sessions)} and "
            f"{len(messages)}"
        )
    return sessions, messages


def _parse_session(obj: dict[str, Any], where: str) -> Session:
    return Session(
        id=_field(obj, "id", _STR, where),
        parent_session_id=_field(obj, "parent_session_id", _OPT_STR, where),
        title=_field(obj, "title", _STR, where),
        message_count=0,  # the triggers count the imported rows
        prompt_tokens=_field(obj, "prompt_tokens", _INT, where),
        completion_tokens=_field(obj, "completion_tokens", _INT, where),
        cost=_cost(obj, where),
        updated_at=_field(obj, "updated_at", _INT, where),
        created_at=_field(obj, "created_at", _INT, where),
        summary_message_id=_field(obj, "summary_message_id", _OPT_STR, where),
        todos=_field(obj, "todos", _OPT_STR, where),
    )


def _parse_message(obj: dict[str, Any], where: str) -> MessageRecord:
    mid = _field(obj, "id", _STR, where)
    role = _field(obj, "role", _STR, where)
    if role not in {r.value for r in Role}:
        raise ExportFormatError(f"{where}: unknown role {role!r}")
    parts = _field(obj, "parts", (list,), where)
    try:
        decoded = decode_parts(json.dumps(parts), message_id=mid)
    except CorruptRecord as e:
        raise ExportFormatError(f"{where}: {e}") from e
    except RecursionError:  # _check_json bounds the depth; this is a second guard
        raise ExportFormatError(f"{where}: parts nested too deeply") from None
    return MessageRecord(
        id=mid,
        session_id=_field(obj, "session_id", _STR, where),
        role=role,
        parts=decoded,
        model=_field(obj, "model", _OPT_STR, where),
        provider=_field(obj, "provider", _OPT_STR, where),
        is_summary_message=_field(obj, "is_summary_message", (bool,), where),
        created_at=_field(obj, "created_at", _INT, where),
        updated_at=_field(obj, "updated_at", _INT, where),
        finished_at=_field(obj, "finished_at", _OPT_INT, where),
    )


def import_jsonl(db: Database, lines: Iterable[bytes], *, name: str = "input") -> ImportResult:
    """Parse an export and load it into ``db``; see ``import_export``."""
    return import_export(db, read_export(lines, name=name))


def import_export(db: Database, data: ExportData) -> ImportResult:
    """Load a parsed export into ``db``: all of it in one transaction, or nothing."""
    sessions, messages = data.sessions, data.messages
    s_map, m_map = db.import_rows(sessions, messages)
    return ImportResult(len(sessions), len(messages), s_map, m_map)


# -- Markdown -----------------------------------------------------------------------------


def _fence(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in _backtick_runs(text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text.rstrip("\n")
    return f"{fence}{lang}\n{body}\n{fence}"


def _backtick_runs(line: str) -> Iterator[str]:
    run = ""
    for ch in line:
        if ch == "`":
            run += ch
        elif run:
            yield run
            run = ""
    if run:
        yield run


def _code(text: str) -> str:
    """Inline code that survives backticks in ``text``."""
    ticks = "`" * (max((len(r) for r in _backtick_runs(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def _when(ts: int | None) -> str:
    from ._render import when

    return when(ts)


def _pretty(text: str) -> tuple[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return text, ""
    return json.dumps(value, indent=2, ensure_ascii=False), "json"


def _part_markdown(part: Part) -> str:
    if isinstance(part, TextContent):
        return part.text
    if isinstance(part, ReasoningContent):
        bits = [_quote("**Reasoning**" + (f"\n\n{part.thinking}" if part.thinking else ""))]
        if part.signature:
            bits.append(f"> signature: {_code(part.signature)}")
        if part.thought_signature:
            tool = f" (tool {_code(part.tool_id)})" if part.tool_id else ""
            bits.append(f"> thought signature: {_code(part.thought_signature)}{tool}")
        return "\n>\n".join(bits)
    if isinstance(part, ToolCall):
        body, lang = _pretty(part.input)
        state = "" if part.finished else " (unfinished)"
        return f"**Tool call** {_code(part.name)} · id {_code(part.id)}{state}\n\n" + _fence(
            body, lang
        )
    if isinstance(part, ToolResult):
        error = " · **error**" if part.is_error else ""
        text = f"**Tool result** {_code(part.name)} for call {_code(part.tool_call_id)}{error}"
        if part.content:
            text += "\n\n" + _fence(part.content)
        if part.data:
            text += f"\n\n*{part.mime_type or 'data'}: {len(part.data)} base64 characters*"
        return text
    if isinstance(part, Finish):
        text = f"*Finished: {part.reason}"
        if part.time:
            text += f" at {_when(part.time)}"
        text += "*"
        if part.message:
            text += f"  \n*{part.message}*"
        if part.details:
            text += "\n\n" + _fence(part.details)
        return text
    if isinstance(part, ImageURLContent):
        return f"![image{' (' + part.detail + ')' if part.detail else ''}]({part.url})"
    if isinstance(part, BinaryContent):
        name = _code(part.path) if part.path else "attachment"
        return f"*Attachment {name}: {part.mime_type or 'unknown type'}, {len(part.data)} bytes*"
    if isinstance(part, ShellCommand):
        return _fence(f"$ {part.command}\n{part.output}".rstrip("\n"), "console") + (
            f"\n\n*exit code {part.exit_code}*"
        )
    raise AssertionError(f"unknown part {part!r}")  # pragma: no cover


def _message_markdown(m: MessageRecord) -> str:
    title = m.role.capitalize() + (" (summary)" if m.is_summary_message else "")
    if m.model:
        title += f" · {m.model}" + (f" ({m.provider})" if m.provider else "")
    body = [f"### {title}", f"*{_when(m.created_at)} · {_code(m.id)}*"]
    # A non-assistant message's own "stop" finish says nothing to a reader.
    shown = [
        p
        for p in m.parts
        if not (isinstance(p, Finish) and m.role != Role.ASSISTANT and p.reason == "stop")
    ]
    body += [_part_markdown(p) for p in shown]
    if m.role == Role.ASSISTANT and not any(isinstance(p, Finish) for p in m.parts):
        body.append("*(not finished)*")
    return "\n\n".join(body)


def export_markdown(db: Database, ids: Sequence[str], out: IO[bytes]) -> tuple[int, int]:
    """Write the sessions as Markdown for people; return (sessions, messages)."""
    sessions = sessions_to_export(db, ids)
    records = [(s, message_records(db, s.id)) for s in sessions]
    chunks = []
    for s, messages in records:
        head = [
            f"## {s.title or '(untitled)'}",
            f"- Session: {_code(s.id)}"
            + (f" (sub-session of {_code(s.parent_session_id)})" if s.parent_session_id else ""),
            f"- Messages: {len(messages)} · tokens {s.prompt_tokens} in / "
            f"{s.completion_tokens} out · cost ${s.cost:.4f}",
            f"- Created {_when(s.created_at)} · updated {_when(s.updated_at)}",
        ]
        chunks.append("\n".join(head) + "\n\n" + "\n\n".join(map(_message_markdown, messages)))
    text = "# msgstore export\n\n" + "\n\n---\n\n".join(chunks) + "\n"
    out.write(text.encode("utf-8", "replace"))
    return len(sessions), sum(len(ms) for _, ms in records)
