"""The workload: a line-for-line port of the Go reference's ``bench`` producer.

Same vocabulary and token function, same step sequence (R reasoning deltas then
``finish_thinking``; M text deltas; T tool calls of add / three input deltas / finish;
``add_finish(end_turn)``), same pacing (paced delta *k* of a stream is due at the
stream's start + *k*·interval, measured after its ``create``; a late delta goes at once,
without sleeping), the same accounting and the same four checks on every row read back.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import trio

from msgstore import Finish, FinishReason, Message, ReasoningContent, TextContent, ToolCall

# Tokens of ~4 characters; some need JSON escaping (<, >, & as \u003c..., quote,
# backslash, tab, newline) and some are not ASCII. Same list, same order as Go.
VOCAB: tuple[str, ...] = (
    "the ",
    "fox ",
    "<br>",
    "a&b ",
    '"q" ',
    "tab\t",
    "new\n",
    "café",
    "jump",
    "s ov",
    "er t",
    "lazy",
    " dog",
    ". \\ ",
    "🙂 x",
    "end.",
)


def token(s: int, i: int) -> str:
    """Token ``i`` of stream ``s`` (deterministic, as Go's ``token``)."""
    return VOCAB[(s * 7 + i) % len(VOCAB)]


def tool_input_deltas(s: int, t: int) -> tuple[str, str, str]:
    """The argument fragments streamed for tool call ``t`` of stream ``s``."""
    return ('{"path":', f'"f_{s}_{t}.go"', "}")


def tool_call_id(s: int, t: int) -> str:
    return f"call_{s}_{t}"


@dataclass(frozen=True)
class Config:
    """The parameters of one run; the names are the Go flags'."""

    streams: int = 1
    tokens: int = 100
    interval: float = 0.0  # seconds between deltas of one stream (0 = flat out)
    debounce: float = 0.033  # seconds (<= 0 writes every update)
    subscribers: int = 1
    tool_calls: int = 0
    reasoning: int = 0

    def updates_per_stream(self) -> int:
        """As Go's ``updatesPerStream``."""
        n = self.tokens + 1  # text deltas + the final finish
        if self.reasoning > 0:
            n += self.reasoning + 1
        n += self.tool_calls * (1 + 3 + 1)
        return n

    def expected_updates(self) -> int:
        return self.streams * self.updates_per_stream()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store(Protocol):
    """What a row plugs into the producer: a ``create`` and an ``update``."""

    async def create(self, session_id: str) -> Message: ...

    async def update(self, message: Message) -> None: ...


@dataclass
class Recorder:
    """Every stream's measurements, in flat preallocated arrays (little memory per stream)."""

    streams: int
    latencies: array[float] = field(default_factory=lambda: array("d"))
    terminal_latencies: array[float] = field(default_factory=lambda: array("d"))
    # Per stream: how late its last paced delta ran against its due time, and the worst.
    last_lag: array[float] = field(init=False)
    worst_lag: array[float] = field(init=False)
    ids: list[str] = field(init=False)
    updates: int = 0
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last_lag = array("d", bytes(8 * self.streams))
        self.worst_lag = array("d", bytes(8 * self.streams))
        self.ids = [""] * self.streams

    def problem(self, text: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(text)


class _StreamFailed(Exception):
    pass


async def run_stream(
    store: Store,
    session_id: str,
    s: int,
    cfg: Config,
    start: trio.Event,
    rec: Recorder,
) -> None:
    """Stream ``s``: Go's ``runStream``, on Trio."""
    await start.wait()
    try:
        msg = await store.create(session_id)
    except Exception as exc:
        rec.problem(f"stream {s}: create: {exc!r}")
        return
    rec.ids[s] = msg.id
    perf = time.perf_counter
    latencies = rec.latencies
    terminal_latencies = rec.terminal_latencies
    n = 0

    async def update(terminal: bool = False) -> None:
        nonlocal n
        t = perf()
        try:
            await store.update(msg)
        except Exception as exc:
            rec.problem(f"stream {s}: update {n + 1}: {exc!r}")
            raise _StreamFailed from exc
        finally:
            dt = perf() - t
            latencies.append(dt)
            if terminal:
                terminal_latencies.append(dt)
            n += 1
            rec.updates += 1

    interval = cfg.interval
    t0 = trio.current_time()
    k = 0

    async def pace() -> None:
        nonlocal k
        if interval > 0:
            due = t0 + k * interval
            if due > trio.current_time():
                await trio.sleep_until(due)
            lag = trio.current_time() - due
            rec.last_lag[s] = lag
            if lag > rec.worst_lag[s]:
                rec.worst_lag[s] = lag
        k += 1

    try:
        for i in range(cfg.reasoning):
            await pace()
            msg.append_reasoning_content(token(s, i))
            await update()
        if cfg.reasoning > 0:
            msg.finish_thinking()
            await update(terminal=True)
        for i in range(cfg.tokens):
            await pace()
            msg.append_content(token(s, i))
            await update()
        for t in range(cfg.tool_calls):
            call_id = tool_call_id(s, t)
            msg.add_tool_call(ToolCall(id=call_id, name="bench_tool"))
            await update(terminal=True)
            for d in tool_input_deltas(s, t):
                await pace()
                msg.append_tool_call_input(call_id, d)
                await update()
            msg.finish_tool_call(call_id)
            await update(terminal=True)
        msg.add_finish(FinishReason.END_TURN)
        await update(terminal=True)
    except _StreamFailed:
        return


def progress(message: Message) -> int:
    """Go's ``progress``: strictly grows with every update the producer makes to a message.

    A subscriber that sees a smaller value than it already saw for the same message got
    an older snapshot after a newer one (publish reordering).
    """
    n = 0
    for p in message.parts:
        kind = type(p)
        if kind is TextContent:
            n += len(p.text)  # type: ignore[union-attr]
        elif kind is ReasoningContent:
            n += len(p.thinking)  # type: ignore[union-attr]
            if p.finished_at > 0:  # type: ignore[union-attr]
                n += 1
        elif kind is ToolCall:
            n += 1 + len(p.input)  # type: ignore[union-attr]
            if p.finished:  # type: ignore[union-attr]
                n += 1
        elif kind is Finish:
            n += 1
    return n


def verify_rows(
    rows: Sequence[tuple[str, str, int | None]], ids: Sequence[str], cfg: Config
) -> list[str]:
    """Go's ``verify`` on ``(id, parts JSON, finished_at)`` rows read straight from SQLite.

    Decodes with the standard library, not msgstore, so the check does not trust the
    code under test. Returns the problems (empty when all is well).
    """
    problems: list[str] = []
    if len(rows) != len(ids):
        problems.append(f"{len(rows)} messages in DB, want {len(ids)}")
    by_id = {mid: s for s, mid in enumerate(ids)}
    for mid, parts_json, finished_at in rows:
        s = by_id.pop(mid, None)
        if s is None:
            problems.append(f"unexpected message {mid}")
            continue
        try:
            parts = json.loads(parts_json)
        except ValueError as exc:
            problems.append(f"message {mid}: parts: {exc}")
            continue
        first: dict[str, dict[str, Any]] = {}
        calls: list[dict[str, Any]] = []
        for p in parts:
            first.setdefault(p["type"], p["data"])
            if p["type"] == "tool_call":
                calls.append(p["data"])
        want = "".join(token(s, i) for i in range(cfg.tokens))
        got = first.get("text", {}).get("text", "")
        if got != want:
            problems.append(
                f"message {mid} (stream {s}): text has {len(got)} chars, want {len(want)}"
            )
        if cfg.reasoning > 0:
            rc = first.get("reasoning", {})
            want_r = "".join(token(s, i) for i in range(cfg.reasoning))
            if (
                rc.get("thinking") != want_r
                or not rc.get("finished_at")
                or not rc.get("started_at")
            ):
                problems.append(f"message {mid} (stream {s}): reasoning wrong or unfinished")
        if len(calls) != cfg.tool_calls:
            problems.append(
                f"message {mid} (stream {s}): {len(calls)} tool calls, want {cfg.tool_calls}"
            )
        else:
            for t, c in enumerate(calls):
                if (
                    c.get("id") != tool_call_id(s, t)
                    or c.get("finished") is not True
                    or c.get("input") != "".join(tool_input_deltas(s, t))
                ):
                    problems.append(f"message {mid} (stream {s}): tool call {t} wrong: {c}")
        fin = first.get("finish")
        if fin is None or fin.get("reason") != "end_turn":
            problems.append(f"message {mid} (stream {s}): not finished with end_turn")
        if fin is None or finished_at is None or finished_at != fin.get("time"):
            problems.append(
                f"message {mid} (stream {s}): finished_at column {finished_at} "
                "does not match finish part"
            )
    for mid in by_id:
        problems.append(f"message {mid} missing from DB")
    if len(problems) > 5:
        problems = [*problems[:5], f"... and {len(problems) - 5} more"]
    return problems
