"""One Python row in this process: ``python -m benchmarks.runner SPEC_JSON``.

The parent starts a fresh interpreter per row so that ``ru_maxrss`` and CPU belong to
that row alone. The run mirrors Go's ``runBench``: streams wait on one start barrier;
``wall_s`` runs from the barrier to the return of ``flush_all`` (for rows without a
service: to the end of the last stream); then events settle, and every row is read back
from SQLite through a separate connection and checked.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import trio
import trio.testing

import msgstore
from msgstore import Database, Event, EventType, MessageService, connect, open_message_service

from .measure import (
    Cpu,
    fold_count,
    install_write_counters,
    peak_rss_mb,
    percentile_us,
    proc_io,
    read_walcount,
    rss_mb,
    wal_frames,
    write_counts,
)
from .stores import FloorStore, MsgstoreStore, NaiveStore
from .workload import Config, Recorder, Store, progress, run_stream, verify_rows

ROWS = {
    "a": "msgstore",
    "b": "msgstore debounce=0",
    "c": "naive (write every update)",
    "d": "Go reference",
    "e": "floor (update = checkpoint)",
}
PYTHON_ROWS = ("a", "b", "c", "e")
SETTLE_LIMIT = 10.0
# One pending item in a subscriber's queue, measured with tracemalloc (20,000 items):
# ~130 B of queue entry and key, ~400 B of Event and Message wrapper (the parts list is
# the actor's, shared). The report's queue-memory figure is peak_pending times this.
QUEUE_ENTRY_BYTES = 530


class _SubStats:
    __slots__ = ("created", "events", "seen", "stale", "updated")

    def __init__(self) -> None:
        self.created = 0
        self.updated = 0
        self.stale = 0
        self.seen: dict[str, int] = {}  # message id -> progress of the newest state seen
        self.events: Any = None  # the subscription (for its queue's length)

    @property
    def total(self) -> int:
        return self.created + self.updated


def _count(stats: _SubStats, event: Event) -> None:
    if getattr(event, "kind", "message") != "message":
        return  # a session's change (its message count): not part of the accounting
    if event.type is EventType.CREATED:
        stats.created += 1
    elif event.type is EventType.UPDATED:
        stats.updated += 1
    else:
        return
    payload = event.payload
    p = progress(payload)
    prev = stats.seen.get(payload.id)
    if prev is not None and p <= prev:
        stats.stale += 1  # an older state after a newer one
    else:
        stats.seen[payload.id] = p


async def _drain(
    service: MessageService,
    stats: _SubStats,
    mode: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A subscriber as Go's ``drain``: counts events, and stale snapshots per message.

    ``each``: ``async for event in events``, one event per wake-up, as a Trio user
    writes it first. ``batch``: ``msgstore.iter_batches``, every queued event per wake-up.
    """
    async with service.subscribe() as events:
        stats.events = events
        task_status.started()
        if mode == "batch":
            async for batch in msgstore.iter_batches(events):  # type: ignore[attr-defined,unused-ignore]
                for event in batch:
                    _count(stats, event)
        else:
            async for event in events:
                _count(stats, event)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


def _final_progress(path: Path, session_id: str) -> dict[str, int]:
    """Each message's progress in its final row (read as msgstore reads it)."""
    with connect(path, read_only=True) as reader:
        return {m.id: progress(m) for m in reader.stored_messages(session_id)}


def _read_rows(path: Path, session_id: str) -> list[tuple[str, str, int | None]]:
    """Every row of the session, straight from the file through a new connection."""
    con = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = con.execute(
            "SELECT id, parts, finished_at FROM messages WHERE session_id = ?", (session_id,)
        ).fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1]), None if r[2] is None else int(r[2])) for r in rows]


async def _run(
    row: str, cfg: Config, db: Database, path: Path, measure_idle: bool, subscriber: str
) -> dict[str, Any]:
    session = db.create_session("bench")
    rec = Recorder(cfg.streams)
    subs = [_SubStats() for _ in range(cfg.subscribers)] if row in ("a", "b") else []
    out: dict[str, Any] = {}
    peaks = {"rss": 0.0, "actors": 0}

    async with contextlib.AsyncExitStack() as stack:
        service: MessageService | None = None
        store: Store
        if row in ("a", "b"):
            debounce = cfg.debounce if row == "a" else 0.0
            service = await stack.enter_async_context(open_message_service(db, debounce=debounce))
            store = MsgstoreStore(service)
        elif row == "c":
            store = NaiveStore(db)
        else:
            store = FloorStore(db)
        helpers = await stack.enter_async_context(trio.open_nursery())
        if service is not None:
            for st in subs:
                await helpers.start(_drain, service, st, subscriber)

        async def monitor() -> None:
            while True:
                peaks["rss"] = max(peaks["rss"], rss_mb())
                if service is not None:
                    peaks["actors"] = max(peaks["actors"], service.statistics().live_actors)
                await trio.sleep(0.05)

        helpers.start_soon(monitor)
        gc.collect()
        rss_before = rss_mb()

        async with trio.open_nursery() as streams:
            start = trio.Event()
            for s in range(cfg.streams):
                streams.start_soon(run_stream, store, session.id, s, cfg, start, rec)
            cpu0 = Cpu.now()
            t0 = time.perf_counter()
            start.set()
        flush_error: str | None = None
        if service is not None:
            try:
                await service.flush_all()
            except Exception as exc:
                flush_error = repr(exc)
                rec.problem(f"flush_all: {exc!r}")
        wall = time.perf_counter() - t0

        sql_updates, sql_creates = write_counts(db.connection)
        settle_start = time.perf_counter()
        if service is not None:
            # Settled: every subscriber has taken every queued event (conflation keeps
            # one per message, so there is no count of events to wait for).
            while time.perf_counter() - settle_start < SETTLE_LIMIT:
                if all(st.events is None or not st.events.pending for st in subs):
                    await trio.testing.wait_all_tasks_blocked()
                    if all(st.events is None or not st.events.pending for st in subs):
                        break
                await trio.sleep(0.001)
        settle = time.perf_counter() - settle_start
        cpu = Cpu.now() - cpu0
        out["peak_rss_mb"] = peak_rss_mb()
        out["rss_peak_sampled_mb"] = max(peaks["rss"], rss_mb())

        if measure_idle:
            # Idle actors retire after idle_timeout; the same wait for every row.
            idle = service.idle_timeout if service is not None else 1.0
            await trio.sleep(idle + 0.5)
            out["rss_after_mb"] = rss_mb()
            gc.collect()
            out["rss_after_gc_mb"] = rss_mb()
        if service is not None:
            st_after = service.statistics()
            out["actors_alive_peak"] = peaks["actors"]
            out["actors_alive_after"] = st_after.live_actors
            out["service_writes"] = st_after.writes
            out["drops"] = st_after.drops
            out["must_deliver_drops"] = st_after.must_deliver_drops
            out["conflated"] = st_after.conflated
            out["peak_pending"] = st_after.peak_pending
            out["subscriber_queue_peak_bytes"] = st_after.peak_pending * QUEUE_ENTRY_BYTES
            out["folds"] = fold_count(db.connection)
        helpers.cancel_scope.cancel()

    # The service has closed (its final flush must have had nothing left to write).
    sql_updates_closed, _ = write_counts(db.connection)
    if sql_updates_closed != sql_updates:
        rec.problem(f"{sql_updates_closed - sql_updates} writes after flush_all returned")
    page_size = int(db.connection.pragma("page_size"))
    frames = wal_frames(db.connection)

    problems = verify_rows(_read_rows(path, session.id), rec.ids, cfg) if row != "e" else []
    updates = rec.updates
    lat = sorted(rec.latencies)
    term = sorted(rec.terminal_latencies)
    expected = cfg.expected_updates()
    accounting: list[str] = []
    if updates != expected:
        accounting.append(f"updates {updates} != expected {expected}")
    if sql_updates > updates + ((out.get("folds") or 0) if row in ("a", "b") else 0):
        accounting.append(f"sql_updates {sql_updates} > updates {updates} (+ folds)")
    writes_every_update = row in ("b", "c") or (row == "a" and cfg.debounce <= 0)
    # msgstore also folds a message's journal into its row when its actor retires:
    # writes of no new state, counted among the folds.
    extra = (out.get("folds") or 0) if row in ("a", "b") else 0
    if writes_every_update and not updates <= sql_updates <= updates + extra:
        accounting.append(
            f"writes every update but sql_updates {sql_updates} != {updates} (+ folds)"
        )
    if row == "e" and sql_updates != 0:
        accounting.append(f"floor wrote {sql_updates} times")
    if sql_creates != cfg.streams:
        accounting.append(f"sql_creates {sql_creates} != streams {cfg.streams}")
    events_created = sum(st.created for st in subs)
    events_updated = sum(st.updated for st in subs)
    terminal_lost = None
    if service is not None:
        # The feed's promise: each subscriber's last event of every message is its
        # final row (by the same progress measure the stale check uses).
        final = _final_progress(path, session.id)
        terminal_lost = sum(1 for st in subs for mid, p in final.items() if st.seen.get(mid) != p)
        if terminal_lost:
            accounting.append(f"{terminal_lost} final states never reached a subscriber")
        if out["drops"]:
            accounting.append(f"{out['drops']} events dropped")
    cpu_total = cpu.total
    lags = [rec.last_lag[s] for s in range(cfg.streams)] if cfg.interval > 0 else []
    worst = [rec.worst_lag[s] for s in range(cfg.streams)] if cfg.interval > 0 else []
    sqlite_wal_bytes = frames * (page_size + 24)
    out.update(
        {
            "row": row,
            "impl": ROWS[row],
            "wall_s": wall,
            "updates": updates,
            "updates_per_s": updates / wall if wall > 0 else None,
            "sql_updates": sql_updates,
            "sql_creates": sql_creates,
            "events_created": events_created if service is not None else None,
            "events_updated": events_updated if service is not None else None,
            "stale_events": sum(st.stale for st in subs) if service is not None else None,
            "terminal_lost": terminal_lost,
            "verified_ok": (not problems and flush_error is None) if row != "e" else None,
            "accounting_ok": not accounting,
            "coalesce_ratio": updates / sql_updates if sql_updates else None,
            "update_p50_us": percentile_us(lat, 50),
            "update_p99_us": percentile_us(lat, 99),
            "update_max_us": lat[-1] * 1e6 if lat else None,
            "terminal_p50_us": percentile_us(term, 50),
            "terminal_p99_us": percentile_us(term, 99),
            "terminal_updates": len(term),
            "cpu_user_s": cpu.user,
            "cpu_sys_s": cpu.sys,
            "cpu_s": cpu_total,
            "cpu_scope": "barrier to settle",
            "cpu_us_per_update": cpu_total / updates * 1e6 if updates else None,
            "cpu_process_s": Cpu.now().total,
            "settle_ms": settle * 1000,
            "sched_lag_ms": max(lags) * 1000 if lags else None,
            "sched_lag_p50_ms": sorted(lags)[len(lags) // 2] * 1000 if lags else None,
            "sched_lag_worst_ms": max(worst) * 1000 if worst else None,
            "rss_before_mb": rss_before,
            "wal_frames": frames,
            "sqlite_wal_bytes": sqlite_wal_bytes,
            "problems": (rec.problems + accounting + problems)[:10],
        }
    )
    if service is None:
        out.setdefault("drops", None)
        out.setdefault("must_deliver_drops", None)
    return out


def _source_digest() -> str:
    """A digest of the msgstore sources this row imported: rows of one report can be
    checked to have measured the same code while others edit it."""
    digest = hashlib.sha1()
    for path in sorted(Path(msgstore.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_row(
    row: str,
    cfg: Config,
    db_path: Path,
    *,
    measure_idle: bool = False,
    subscriber: str = "each",
) -> dict[str, Any]:
    """Run one Python row (``a``, ``b``, ``c`` or ``e``) here and return its JSON fields."""
    if row not in PYTHON_ROWS:
        raise ValueError(f"not a Python row: {row!r}")
    digest = _source_digest()
    _remove_db(db_path)
    db = connect(db_path)
    try:
        if row in ("a", "b"):
            db.install_feed()  # as the service would: then its journal rows are counted
        install_write_counters(db.connection)
        out = trio.run(_run, row, cfg, db, db_path, measure_idle, subscriber)
    finally:
        db.close()
    io = proc_io()
    # The LD_PRELOAD shim (set up by the parent) counts every byte this process wrote
    # to the -wal file, migrations included, as for the Go row; without it, SQLite's
    # own count of the frames this connection wrote is used.
    counter = os.environ.get("WALCOUNT_OUT")
    shim_bytes = read_walcount(Path(counter)) if counter else None
    if shim_bytes is not None:
        wal_bytes, method = shim_bytes, "bytes written to *-wal (LD_PRELOAD shim)"
    else:
        wal_bytes, method = out["sqlite_wal_bytes"], "SQLite: WAL frames x (page + 24)"
    tokens = cfg.streams * cfg.tokens
    out.update(
        {
            "wal_bytes": wal_bytes,
            "wal_bytes_method": method,
            "wal_bytes_per_token": wal_bytes / tokens if tokens else None,
            "io_wchar_bytes": io.get("wchar"),
            "io_write_bytes": io.get("write_bytes"),
            **{f: getattr(cfg, f) for f in ("streams", "tokens", "subscribers")},
            "tool_calls": cfg.tool_calls,
            "reasoning": cfg.reasoning,
            "interval_ms": cfg.interval * 1000,
            "debounce_ms": {"a": cfg.debounce * 1000, "b": 0.0}.get(row),
            "subscriber_mode": subscriber if row in ("a", "b") else None,
            "num_cpu": os.cpu_count(),
            "sqlite_version": apsw.sqlite_lib_version(),
            "python_version": sys.version.split()[0],
            "msgstore_version": getattr(msgstore, "__version__", None),
            "msgstore_source_sha1": digest,
        }
    )
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    out = run_row(
        spec["row"],
        Config(**spec["config"]),
        Path(spec["db"]),
        measure_idle=bool(spec.get("measure_idle")),
        subscriber=spec.get("subscriber", "each"),
    )
    if not spec.get("keep_db"):
        _remove_db(Path(spec["db"]))
    print(json.dumps(out), flush=True)
    return 0 if out["accounting_ok"] and out["verified_ok"] is not False else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
