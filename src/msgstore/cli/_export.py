"""Sessions out of and into a database file: versioned JSONL (lossless) and Markdown.

The JSONL format, version 1, one JSON object per line, UTF-8:

- a header ``{"format": "msgstore-export", "version": 1, "exported_at": ..., "sessions":
  N, "messages": M, "files": F, "read_files": R}`` (the counts let an import notice a
  truncated file);
- per session a ``{"type": "session", ...}`` line with every column of the row, followed
  by its messages as ``{"type": "message", ...}`` lines, oldest first, each with every
  column and ``parts`` as the JSON array the ``parts`` column holds (``encode_parts``:
  the same keys, tags and base64 as crush's files), then its ``files`` rows as
  ``{"type": "file", "id", "session_id", "path", "content", "version", "created_at",
  "updated_at"}`` lines and its ``read_files`` rows as ``{"type": "read_file",
  "session_id", "path", "read_at"}`` lines.

The ``files`` / ``read_files`` parts are a compatible extension of version 1: a file
written before them (no such counts in the header, no such lines) imports as before.

Every line is strict JSON (``allow_nan=False``): a ``cost`` that is not finite, which
JSON has no number for, is written as the string ``"Infinity"`` (or ``"-Infinity"`` /
``"NaN"``) and read back as that float; an older export's bare ``Infinity`` still reads.
U+0085, U+2028 and U+2029, which ``str.splitlines()`` takes for line ends, are written
as ``\\u0085`` / ``\\u2028`` / ``\\u2029`` escapes, so each record is exactly one line
for any reader.

Import gives a session, message or file a new id when the target already has that id
(or the file repeats one), rewriting the references to it; with ``skip_existing`` such
rows (and ``read_files`` rows whose session and path the target has) are skipped
instead, so importing one export twice changes nothing. It never overwrites a row,
keeps every column as exported (``updated_at`` too, see ``Database.import_rows``), and
loads the whole file in one transaction or nothing. A file holding what no row can
(an integer column outside int64, a lone surrogate in any string, JSON nested deeper
than ``MAX_DEPTH``) is refused whole, naming the line, before the database is opened.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
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
# A non-finite cost, which JSON has no number for, as the string written in its place.
_NON_FINITE: Final = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
# What ``str.splitlines()`` ends a line at and ``json.dumps`` leaves raw.
_LINE_BREAKS: Final = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class ExportFormatError(MsgstoreError):
    """An import file that is not a msgstore export (or a damaged one); names the line."""


class ExportError(MsgstoreError):
    """A row that cannot be written as strict JSON; names the row."""


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


class FileRecord(NamedTuple):
    """One ``files`` row, every column, in ``Database.file_rows``' order."""

    id: str
    session_id: str
    path: str
    content: str
    version: int
    created_at: int
    updated_at: int


class ReadFileRecord(NamedTuple):
    """One ``read_files`` row, in ``Database.read_file_rows``' order."""

    session_id: str
    path: str
    read_at: int


@attrs.frozen
class SessionRecords:
    """A session and every row of the other tables that belongs to it."""

    session: Session
    messages: list[MessageRecord]
    files: list[FileRecord]
    read_files: list[ReadFileRecord]


def session_records(db: Database, session: Session) -> SessionRecords:
    return SessionRecords(
        session,
        message_records(db, session.id),
        [FileRecord._make(r) for r in db.file_rows(session.id)],
        [ReadFileRecord._make(r) for r in db.read_file_rows(session.id)],
    )


# -- JSONL --------------------------------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    """One strict-JSON line, with nothing in it that ``str.splitlines()`` splits at."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as e:  # a non-finite float inside a message's parts
        what = f"{obj.get('type', 'header')} {obj.get('id', obj.get('path', ''))!r}"
        raise ExportError(f"{what} cannot be written as JSON: {e}") from None
    try:
        return text.translate(_LINE_BREAKS).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: \u escapes are still valid JSON
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("ascii") + b"\n"


def _cost_json(cost: float) -> float | str:
    if math.isfinite(cost):
        return cost
    return "NaN" if math.isnan(cost) else ("Infinity" if cost > 0 else "-Infinity")


def _session_obj(s: Session) -> dict[str, Any]:
    obj = {"type": "session", **attrs.asdict(s)}
    obj["cost"] = _cost_json(s.cost)
    return obj


def _file_obj(f: FileRecord) -> dict[str, Any]:
    return {"type": "file", **f._asdict()}


def _read_file_obj(r: ReadFileRecord) -> dict[str, Any]:
    return {"type": "read_file", **r._asdict()}


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
    # Read and encode everything first: the header carries the counts, and a corrupt
    # row fails the export before anything is written.
    records = [session_records(db, s) for s in sessions]
    body: list[bytes] = []
    for r in records:
        body.append(_line(_session_obj(r.session)))
        body.extend(_line(_message_obj(m)) for m in r.messages)
        body.extend(_line(_file_obj(f)) for f in r.files)
        body.extend(_line(_read_file_obj(rf)) for rf in r.read_files)
    n_messages = sum(len(r.messages) for r in records)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": int(time.time()),
        "sessions": len(sessions),
        "messages": n_messages,
        "files": sum(len(r.files) for r in records),
        "read_files": sum(len(r.read_files) for r in records),
    }
    out.write(_line(header))
    out.writelines(body)
    return len(sessions), n_messages


# -- import -------------------------------------------------------------------------------


@attrs.frozen
class ImportResult:
    # rows inserted
    sessions: int
    messages: int
    # old id -> new id, only for the rows that were given a new one
    renamed_sessions: dict[str, str]
    renamed_messages: dict[str, str]
    files: int = 0
    read_files: int = 0
    renamed_files: dict[str, str] = attrs.field(factory=dict)
    # rows not inserted (``skip_existing``) because the database had them, per table
    skipped: dict[str, int] = attrs.field(factory=dict)


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
    value = obj.get("cost")
    if type(value) is str and value in _NON_FINITE:
        return _NON_FINITE[value]
    if type(value) is str:
        raise ExportFormatError(
            f"{where}: 'cost' must be a number or one of the strings "
            f"{', '.join(map(repr, _NON_FINITE))}, got {value!r:.60}"
        )
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
    files: list[FileRecord] = attrs.field(factory=list)
    read_files: list[ReadFileRecord] = attrs.field(factory=list)


def read_export(lines: Iterable[bytes], *, name: str = "input") -> ExportData:
    """Parse and check a JSONL export; ``ExportFormatError`` names the file and line."""
    data = _parse(lines, name)
    known = {s.id for s in data.sessions}
    rows: list[tuple[str, str, str]] = [("message", m.id, m.session_id) for m in data.messages]
    rows += [("file", f.id, f.session_id) for f in data.files]
    rows += [("read_files row", r.path, r.session_id) for r in data.read_files]
    for kind, key, session_id in rows:
        if session_id not in known:
            raise ExportFormatError(
                f"{name}: {kind} {key!r} belongs to session {session_id!r}, "
                "which the file does not hold"
            )
    return data


def _header_error(obj: dict[str, Any], name: str) -> ExportFormatError | None:
    if "format" not in obj:
        return ExportFormatError(f"{name} is not a msgstore export (no header line)")
    if obj["format"] != FORMAT:
        return ExportFormatError(
            f"{name} is not a msgstore export: its header says format {obj['format']!r:.60}, "
            f"expected {FORMAT!r}"
        )
    version = obj.get("version")
    if version != VERSION:
        return ExportFormatError(
            f"{name} is export format version {version!r:.60}; "
            f"this msgstore reads version {VERSION}"
        )
    return None


def _parse(lines: Iterable[bytes], name: str) -> ExportData:
    data = ExportData([], [])
    sessions, messages = data.sessions, data.messages
    files, read_files = data.files, data.read_files
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
            error = _header_error(obj, name)
            if error is not None:
                raise error
            header = obj
            continue
        kind = obj.get("type")
        if kind == "session":
            sessions.append(_parse_session(obj, where))
        elif kind == "message":
            messages.append(_parse_message(obj, where))
        elif kind == "file":
            files.append(_parse_file(obj, where))
        elif kind == "read_file":
            read_files.append(_parse_read_file(obj, where))
        else:
            raise ExportFormatError(f"{where}: unknown record type {kind!r}")
    if header is None:
        raise ExportFormatError(f"{name} is empty, not a msgstore export")
    keyed: tuple[tuple[str, list[Any]], ...] = (
        ("session", [s.id for s in sessions]),
        ("message", [m.id for m in messages]),
        ("file", [f.id for f in files]),
        ("read_files row", [(r.session_id, r.path) for r in read_files]),
    )
    for kind, ids in keyed:
        if len(set(ids)) != len(ids):
            twice = next(i for i, n in Counter(ids).items() if n > 1)
            raise ExportFormatError(f"{name} holds {kind} {twice!r} twice")
    # An export from before files and read_files were carried announces neither.
    held = {"sessions": len(sessions), "messages": len(messages)}
    held |= {"files": len(files), "read_files": len(read_files)}
    announced = {k: header.get(k, 0 if k in ("files", "read_files") else None) for k in held}
    if announced != held:
        nouns = {"sessions": "session", "messages": "message", "files": "file"}
        nouns["read_files"] = "read_files row"
        shown = [k for k in held if k in ("sessions", "messages") or held[k] or announced[k]]

        def listed(counts: dict[str, Any]) -> str:
            words = [
                _n(v, nouns[k]) if type(v) is int else f"{v!r:.20} {nouns[k]}s"
                for k, v in ((k, counts[k]) for k in shown)
            ]
            return ", ".join(words[:-1]) + " and " + words[-1]

        raise ExportFormatError(
            f"{name} is incomplete: its header announces {listed(announced)}, "
            f"it holds {listed(held)}"
        )
    return data


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


def _parse_file(obj: dict[str, Any], where: str) -> FileRecord:
    return FileRecord(
        id=_field(obj, "id", _STR, where),
        session_id=_field(obj, "session_id", _STR, where),
        path=_field(obj, "path", _STR, where),
        content=_field(obj, "content", _STR, where),
        version=_field(obj, "version", _INT, where),
        created_at=_field(obj, "created_at", _INT, where),
        updated_at=_field(obj, "updated_at", _INT, where),
    )


def _parse_read_file(obj: dict[str, Any], where: str) -> ReadFileRecord:
    return ReadFileRecord(
        session_id=_field(obj, "session_id", _STR, where),
        path=_field(obj, "path", _STR, where),
        read_at=_field(obj, "read_at", _INT, where),
    )


def import_jsonl(
    db: Database, lines: Iterable[bytes], *, name: str = "input", skip_existing: bool = False
) -> ImportResult:
    """Parse an export and load it into ``db``; see ``import_export``."""
    return import_export(db, read_export(lines, name=name), skip_existing=skip_existing)


def import_export(db: Database, data: ExportData, *, skip_existing: bool = False) -> ImportResult:
    """Load a parsed export into ``db``: all of it in one transaction, or nothing.

    With ``skip_existing`` the rows the database already has (by id; ``read_files`` by
    session and path) are skipped, not given new ids."""
    done = db.import_rows(
        data.sessions, data.messages, data.files, data.read_files, skip_existing=skip_existing
    )
    return ImportResult(
        sessions=done.inserted["sessions"],
        messages=done.inserted["messages"],
        renamed_sessions=done.renamed_sessions,
        renamed_messages=done.renamed_messages,
        files=done.inserted["files"],
        read_files=done.inserted["read_files"],
        renamed_files=done.renamed_files,
        skipped=done.skipped,
    )


def counted(sessions: int, messages: int, files: int = 0, read_files: int = 0) -> str:
    """ "2 sessions, 5 messages" (with files and read_files rows when there are any)."""
    words = [_n(sessions, "session"), _n(messages, "message")]
    if files:
        words.append(_n(files, "file"))
    if read_files:
        words.append(_n(read_files, "read_files row"))
    return ", ".join(words)


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
