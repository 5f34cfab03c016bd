"""Streaming scenarios for the reliability tests, and the bookkeeping that checks them.

A message's life is a list of *states*: ``states[0]`` is the row ``create`` wrote, each
later state is the previous one after one streaming step (a text or reasoning delta, a
tool call added, its input growing, it finishing, reasoning ending, the finish part).
States are cumulative and all different, so a stored ``parts`` value names the one
state it is, and "at least the acknowledged state" is a comparison of indexes.

Every timestamp in a part is fixed, so the same seed gives the same ``parts`` JSON in
any process: the crash test's parent rebuilds what its child wrote from the seed alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import apsw
import attrs
import trio

from msgstore import (
    Finish,
    FinishReason,
    Message,
    MessageService,
    MsgstoreError,
    Part,
    ReasoningContent,
    TextContent,
    ToolCall,
    _journal,
    decode_parts,
    encode_parts,
)

_T0 = 1_700_000_000  # every part timestamp is fixed (see the module docstring)
_WORDS = ("the ", "disk ", "is ", "full ", "of ", "tokens ", "é ", "日本 ", "🚀 ", "<&> ")


@attrs.frozen
class Step:
    """One streaming step; ``terminal`` when SPEC §3 says it is written before returning."""

    kind: str
    arg: str = ""

    @property
    def terminal(self) -> bool:
        return self.kind in {"think_end", "call", "call_end", "finish"}


# A long reply's deltas: 40 characters each, so that a few hundred steps take a message
# past the journal's fold floor (16 KiB) and it is folded while it streams.
LONG_WORDS = tuple(f"{w.strip()} " * 8 for w in _WORDS)


def plan(
    rng: random.Random,
    length: int,
    *,
    words: Sequence[str] = _WORDS,
    call_rate: float = 0.12,
) -> list[Step]:
    """About ``length`` steps of a plausible assistant turn, ending in a finish part."""
    steps: list[Step] = []
    if rng.random() < 0.5:
        steps += [Step("think", rng.choice(words)) for _ in range(rng.randrange(1, 6))]
        steps.append(Step("think_end"))
    calls = 0
    while len(steps) < length - 1:
        if rng.random() < call_rate:
            calls += 1
            steps.append(Step("call", f"call-{calls}"))
            steps += [
                Step("input", '{"x":1}'[: rng.randrange(1, 8)]) for _ in range(rng.randrange(3))
            ]
            steps.append(Step("call_end", f"call-{calls}"))
        else:
            steps.append(Step("text", rng.choice(words)))
    steps.append(Step("finish", rng.choice(["end_turn", "tool_use", "max_tokens"])))
    return steps


def apply(parts: Sequence[Part], step: Step, n: int) -> list[Part]:
    """The parts after ``step`` (the ``n``-th); ``parts`` is not changed."""
    out = list(parts)
    kind = step.kind
    if kind == "text":
        for i, part in enumerate(out):
            if isinstance(part, TextContent):
                out[i] = TextContent(part.text + step.arg)
                return out
        out.append(TextContent(step.arg))
    elif kind in ("think", "think_end"):
        for i, part in enumerate(out):
            if isinstance(part, ReasoningContent):
                if kind == "think":
                    out[i] = attrs.evolve(part, thinking=part.thinking + step.arg)
                else:
                    out[i] = attrs.evolve(part, finished_at=_T0 + n)
                return out
        out.append(ReasoningContent(thinking=step.arg, started_at=_T0))
    elif kind == "call":
        out.append(ToolCall(id=step.arg, name="bash"))
    elif kind in ("input", "call_end"):
        for i in range(len(out) - 1, -1, -1):
            part = out[i]
            if isinstance(part, ToolCall):
                if kind == "input":
                    out[i] = attrs.evolve(part, input=part.input + step.arg)
                else:
                    out[i] = attrs.evolve(part, finished=True)
                return out
    elif kind == "finish":
        out.append(Finish(reason=FinishReason(step.arg), time=_T0 + n))
    else:  # pragma: no cover
        raise ValueError(kind)
    return out


@attrs.define
class Track:
    """What the caller knows about one message: its states and what was acknowledged.

    ``returned``: the newest state whose ``update`` returned (accepted). ``attempted``:
    the newest state passed to ``update`` (accepted or not: a call that raised may have
    buffered it first). ``durable``: the newest state acknowledged as written (``create``,
    a terminal ``update`` or a ``flush`` returned).
    """

    states: list[Message]
    terminal: list[bool]
    encoded: list[str]
    index_of: dict[str, int]
    next: int = 1
    returned: int = 0
    attempted: int = 0
    durable: int = 0

    @classmethod
    def build(cls, created: Message, steps: Sequence[Step]) -> Track:
        states = [created]
        parts: list[Part] = list(created.parts)
        for n, step in enumerate(steps, 1):
            parts = apply(parts, step, n)
            state = created.clone()
            state.parts = parts
            states.append(state)
        encoded = [encode_parts(s.parts) for s in states]
        assert len(set(encoded)) == len(encoded), "two states of a message are the same"
        return cls(
            states=states,
            terminal=[True] + [s.terminal for s in steps],
            encoded=encoded,
            index_of={e: i for i, e in enumerate(encoded)},
        )

    @property
    def id(self) -> str:
        return self.states[0].id

    @property
    def done(self) -> bool:
        return self.next >= len(self.states)


async def create_tracks(
    svc: MessageService, session_id: str, rng: random.Random, count: int, length: int
) -> list[Track]:
    tracks = []
    for _ in range(count):
        created = await svc.create(session_id, "assistant")
        tracks.append(Track.build(created, plan(rng, length)))
    return tracks


async def drive(
    svc: MessageService,
    tracks: Sequence[Track],
    rng: random.Random,
    *,
    pauses: Sequence[float] = (0, 0, 0.001, 0.01, 0.02, 0.05),
    flush_chance: float = 0.05,
    errors: list[BaseException] | None = None,
) -> None:
    """Stream every track to its end, interleaved at random, with the odd flush.

    With ``errors``, a ``MsgstoreError`` from the service is recorded and the stream goes
    on (the caller saw a typed error); anything else propagates.
    """
    while True:
        live = [t for t in tracks if not t.done]
        if not live:
            return
        track = rng.choice(live)
        i = track.next
        track.next += 1
        track.attempted = i
        try:
            await svc.update(track.states[i])
        except MsgstoreError as exc:
            if errors is None:
                raise
            errors.append(exc)
        else:
            track.returned = i
            if track.terminal[i]:
                track.durable = max(track.durable, i)
        if rng.random() < flush_chance:
            await flush(svc, rng.choice(tracks), errors)
        pause = rng.choice(pauses)
        if pause:
            await trio.sleep(pause)


async def flush(svc: MessageService, track: Track, errors: list[BaseException] | None) -> None:
    upto = track.returned
    try:
        await svc.flush(track.id)
    except MsgstoreError as exc:
        if errors is None:
            raise
        errors.append(exc)
    else:
        track.durable = max(track.durable, upto)


async def flush_all(
    svc: MessageService, tracks: Sequence[Track], errors: list[BaseException] | None = None
) -> None:
    upto = [t.returned for t in tracks]
    try:
        await svc.flush_all()
    except MsgstoreError as exc:
        if errors is None:
            raise
        errors.append(exc)
    else:
        for track, i in zip(tracks, upto, strict=True):
            track.durable = max(track.durable, i)


# -- reading the file back -------------------------------------------------------------


def open_plain(path: Path) -> apsw.Connection:
    """A connection of SQLite's own VFS that recovers a WAL the way a restart would."""
    con = apsw.Connection(str(path))
    con.set_busy_timeout(5000)
    return con


def integrity(con: apsw.Connection) -> str:
    rows = con.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def stored_parts(con: apsw.Connection) -> dict[str, str]:
    """Every message's newest written ``parts`` text, by id: the row's own text
    (undecoded: a torn value would show), with the delta journal's live entries applied
    when it has any (re-encoded then). The merge is done here, from the journal's
    format, not through ``Database``: an independent reading of the file."""
    stored = {str(i): str(p) for i, p in con.execute("SELECT id, parts FROM messages")}
    for message_id, deltas in journal_entries(con, stored).items():
        parts = decode_parts(stored[message_id], message_id=message_id)
        for delta in deltas:
            _journal.apply(parts, delta, message_id=message_id)
        stored[message_id] = encode_parts(parts)
    return stored


def journal_entries(con: apsw.Connection, rows: dict[str, str]) -> dict[str, list[str]]:
    """The journal's live entries (those built on the row as it is), by message."""
    has_journal = con.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'msgstore_journal'"
    ).get
    if not has_journal:
        return {}
    live: dict[str, list[str]] = {}
    query = "SELECT message_id, base, delta FROM msgstore_journal ORDER BY seq"
    for message_id, base, delta in con.execute(query):
        row = rows.get(message_id)
        if row is not None and base == _journal.base_of(row):
            live.setdefault(message_id, []).append(delta)
    return live


@attrs.frozen
class Verdict:
    """How a file compares with what the caller was told."""

    lost: list[str]  # acknowledged states missing (the count that must be 0)
    foreign: list[str]  # stored states the caller never passed in
    stored: dict[str, int]  # message id -> index of the state the file holds


def verdict(stored: dict[str, str], tracks: Sequence[Track]) -> Verdict:
    lost, foreign, found = [], [], {}
    for track in tracks:
        text = stored.get(track.id)
        if text is None:
            lost.append(f"{track.id}: row missing (created and acknowledged)")
            continue
        index = track.index_of.get(text)
        if index is None or index > track.attempted:
            foreign.append(f"{track.id}: holds a state never passed to update: {text[:120]}")
            continue
        found[track.id] = index
        if index < track.durable:
            lost.append(f"{track.id}: holds state {index}, state {track.durable} was acknowledged")
    return Verdict(lost, foreign, found)


def check_no_error_leaks(errors: Sequence[BaseException]) -> None:
    for exc in errors:
        assert isinstance(exc, MsgstoreError), f"untyped error reached the caller: {exc!r}"


__all__ = [
    "MsgstoreError",
    "Step",
    "Track",
    "Verdict",
    "create_tracks",
    "drive",
    "flush",
    "flush_all",
    "integrity",
    "open_plain",
    "plan",
    "stored_parts",
    "verdict",
]
