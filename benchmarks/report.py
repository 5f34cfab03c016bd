"""Tables, the targets of issue #4 as PASS/FAIL lines, ratios, and RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import apsw

from .matrix import Case

Result = dict[str, Any]
Results = Mapping[tuple[int, str], Result]  # (case number, row letter) -> JSON fields


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _drops(r: Result) -> str:
    if r.get("drops") is None:
        return "-"
    return f"{r['drops']}/{r.get('must_deliver_drops', 0)}"


def _events(r: Result) -> str:
    if r.get("events_updated") is None:
        return "-"
    return f"{r['events_created'] + r['events_updated']:,}"


def _ok(r: Result) -> str:
    if "error" in r:
        return "ERROR"
    verified = r.get("verified_ok")
    accounting = r.get("accounting_ok")
    if accounting is False or verified is False:
        return "NO"
    return "yes" if verified else "n/a (no writes)"


HEADER = (
    "| case | row | wall s | CPU s | updates | updates/s | CPU µs/upd | SQL writes | events "
    "| drops lossy/must | p50 µs | p99 µs | max µs | term p50 µs | term p99 µs | lag ms "
    "| peak RSS MB | verified |"
)
RULE = "|" + "---|" * (HEADER.count("|") - 1)


def table_row(case: int, r: Result) -> str:
    if "error" in r or "skipped" in r:
        note = r.get("error") or r.get("skipped")
        return f"| {case} | {r['row']} {r['impl']} | {note} |" + " |" * 15
    cells = [
        str(case),
        f"{r['row']} {r['impl']}",
        _f(r.get("wall_s"), 3),
        _f(r.get("cpu_s"), 3),
        _f(r.get("updates")),
        _f(r.get("updates_per_s"), 0),
        _f(r.get("cpu_us_per_update"), 1),
        _f(r.get("sql_updates")),
        _events(r),
        _drops(r),
        _f(r.get("update_p50_us"), 0),
        _f(r.get("update_p99_us"), 0),
        _f(r.get("update_max_us"), 0),
        _f(r.get("terminal_p50_us"), 0),
        _f(r.get("terminal_p99_us"), 0),
        _f(r.get("sched_lag_ms"), 2),
        _f(r.get("peak_rss_mb"), 1),
        _ok(r),
    ]
    return "| " + " | ".join(cells) + " |"


# -- derived figures ------------------------------------------------------------------


def per_actor_kb(results: Results, case: int) -> float | None:
    """msgstore's memory per live actor at peak, net of the producer's own.

    ``((peak_a - before_a) - (peak_e - before_e)) / streams``: what the msgstore row
    grew from just before its streams started to its high-water mark, minus what the
    floor row (same producer, same Message objects and tasks, no store) grew, shared
    out over the streams; every stream has one actor alive at the peak.
    """
    a, e = results.get((case, "a")), results.get((case, "e"))
    if not a or not e or "rss_before_mb" not in a or "rss_before_mb" not in e:
        return None
    grown = (a["peak_rss_mb"] - a["rss_before_mb"]) - (e["peak_rss_mb"] - e["rss_before_mb"])
    return float(grown * 1024 / a["streams"])


@dataclass(frozen=True)
class Target:
    name: str
    status: str  # PASS, FAIL, SKIP or INFO
    detail: str

    def line(self) -> str:
        return f"{self.status:4}  {self.name}: {self.detail}"


def _get(results: Results, case: int, row: str, key: str) -> Any:
    r = results.get((case, row))
    return None if r is None else r.get(key)


def targets(results: Results) -> list[Target]:
    out: list[Target] = []

    def check(name: str, ok: bool | None, detail: str, why_skip: str = "") -> None:
        if ok is None:
            out.append(Target(name, "SKIP", why_skip or "rows missing from this run"))
        else:
            out.append(Target(name, "PASS" if ok else "FAIL", detail))

    # Case 1: msgstore's own CPU per update against Go's whole CPU per update.
    a, e, d = (_get(results, 1, x, "cpu_us_per_update") for x in "aed")
    if None not in (a, e, d):
        own = a - e
        limit = 0.5 * d
        check(
            "case 1 CPU: msgstore's own CPU/update (a - e) <= 0.5 x Go's CPU/update",
            own <= limit,
            f"{a:.1f} - {e:.1f} = {own:.1f} µs vs limit {limit:.1f} µs "
            f"(Go {d:.1f} µs/update; own/Go = {own / d:.2f}; "
            f"{'met' if own <= limit else f'missed by {own / limit:.2f}x'})",
        )
    else:
        check("case 1 CPU: msgstore's own CPU/update <= 0.5 x Go's", None, "")
    a, d = _get(results, 1, "a", "sql_updates"), _get(results, 1, "d", "sql_updates")
    check(
        "case 1 SQL writes <= 1.05 x Go's",
        None if None in (a, d) else a <= 1.05 * d,
        f"{a} vs Go {d} (ratio {a / d:.3f})" if a is not None and d else "",
    )
    lag = _get(results, 1, "a", "sched_lag_ms")
    check(
        "case 1 schedule lag <= 5 ms",
        None if lag is None else lag <= 5.0,
        f"last delta at most {lag:.2f} ms late (max over streams)" if lag is not None else "",
    )
    drops, must = _get(results, 1, "a", "drops"), _get(results, 1, "a", "must_deliver_drops")
    check(
        "case 1 zero drops",
        None if drops is None else drops + must == 0,
        f"{drops} lossy, {must} must-deliver",
    )
    a, d = _get(results, 3, "a", "updates_per_s"), _get(results, 3, "d", "updates_per_s")
    check(
        "case 3 updates/s >= 0.25 x Go's",
        None if None in (a, d) else a >= 0.25 * d,
        f"{a:,.0f} vs Go {d:,.0f} (ratio {a / d:.3f}, target 0.25)" if a and d else "",
    )
    # Issue #10 (every write in the actor's task): terminal p99 <= 3 ms, stretch 2 ms.
    p99 = _get(results, 1, "a", "terminal_p99_us")
    for limit_ms in (3, 2):
        stretch = " (stretch)" if limit_ms == 2 else ""
        check(
            f"case 1 terminal update p99 <= {limit_ms} ms{stretch}",
            None if p99 is None else p99 <= limit_ms * 1000,
            f"{p99:,.0f} µs"
            + ("" if p99 <= limit_ms * 1000 else f" (missed by {p99 / limit_ms / 1000:.1f}x)")
            if p99 is not None
            else "",
        )
    p99 = _get(results, 2, "a", "terminal_p99_us")
    if p99 is not None:
        out.append(Target("case 2 terminal update p99 (reported)", "INFO", f"{p99:,.0f} µs"))
    a, d = (
        _get(results, 4, "a", "wal_bytes_per_token"),
        _get(results, 4, "d", "wal_bytes_per_token"),
    )
    if a is not None:
        method = _get(results, 4, "d", "wal_bytes_method") or "no Go row"
        go = f"Go {d:,.0f} B/token [{method}]" if d is not None else "Go: not run"
        ratio = f", ratio {a / d:.2f}" if d else ""
        out.append(
            Target(
                "case 4 WAL bytes per token (reported)",
                "INFO",
                f"msgstore {a:,.0f} B/token vs {go}{ratio}",
            )
        )
    else:
        check("case 4 WAL bytes per token", None, "")
    kb = per_actor_kb(results, 5)
    alive = _get(results, 5, "a", "actors_alive_peak")
    check(
        "case 5 <= 6 KB per live actor at peak",
        None if kb is None else kb <= 6.0,
        f"{kb:.2f} KB per actor ({alive} actors alive at peak)" if kb is not None else "",
    )
    before, after = _get(results, 5, "a", "rss_before_mb"), _get(results, 5, "a", "rss_after_mb")
    left = _get(results, 5, "a", "actors_alive_after")
    check(
        "case 5 RSS after all finish within 10% of before",
        None if None in (before, after) else after <= 1.10 * before,
        f"{before:.1f} MB before, {after:.1f} MB after idle ({after / before - 1:+.1%}; "
        f"{left} actors alive after)"
        if before and after
        else "",
    )
    out += feed_and_journal_targets(results)
    return out


def feed_and_journal_targets(results: Results) -> list[Target]:
    """Issue #11 (the change feed) and #12 (the delta journal)."""
    out: list[Target] = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        if ok is None:
            out.append(Target(name, "SKIP", "rows missing from this run"))
        else:
            out.append(Target(name, "PASS" if ok else "FAIL", detail))

    for case in (5, 6):
        lost, drops = _get(results, case, "a", "terminal_lost"), _get(results, case, "a", "drops")
        peak = _get(results, case, "a", "peak_pending")
        queue = _get(results, case, "a", "subscriber_queue_peak_bytes")
        check(
            f"case {case} subscriber (async for): 0 final states lost, 0 drops",
            None if lost is None else lost == 0 and drops == 0,
            f"{lost} final states missed, {drops} dropped; queue peak {peak:,} items "
            f"(~{queue / 1e6:.1f} MB)"
            if lost is not None and peak is not None and queue is not None
            else f"{lost} final states missed, {drops} dropped",
        )
    for case, limit in ((7, 0.2), (8, 0.1)):
        a, d = _get(results, case, "a", "wal_bytes"), _get(results, case, "d", "wal_bytes")
        check(
            f"case {case} WAL bytes <= {limit:g} x Go's",
            None if not a or not d else a <= limit * d,
            f"{a / 1e6:,.1f} MB vs Go {d / 1e6:,.1f} MB (ratio {a / d:.3f})" if a and d else "",
        )
    per_token = {
        n: _get(results, c, "a", "wal_bytes_per_token") for n, c in ((5_000, 9), (20_000, 7))
    }
    per_token[40_000] = _get(results, 10, "a", "wal_bytes_per_token")
    go = {n: _get(results, c, "d", "wal_bytes_per_token") for n, c in ((5_000, 9), (20_000, 7))}
    go[40_000] = _get(results, 10, "d", "wal_bytes_per_token")
    if all(v is not None for v in per_token.values()):
        mean = sum(per_token.values()) / len(per_token)
        spread = max(abs(v / mean - 1) for v in per_token.values())
        go_text = (
            ", Go " + " / ".join(f"{v:,.0f}" for v in go.values())
            if all(v is not None for v in go.values())
            else ""
        )
        check(
            "WAL bytes/token flat within ±25% from 5,000 to 40,000 tokens",
            spread <= 0.25,
            " / ".join(f"{v:,.0f}" for v in per_token.values())
            + f" B/token at 5k/20k/40k (at most {spread:.0%} from their mean){go_text}",
        )
    else:
        check("WAL bytes/token flat within ±25% from 5,000 to 40,000 tokens", None, "")
    return out


def ratios(results: Results, cases: list[Case]) -> list[str]:
    """msgstore / Go and msgstore / floor, per case, from the same run."""
    lines = [
        "| case | CPU µs/upd a/Go | own CPU µs/upd (a-e)/Go | CPU a/floor | updates/s a/Go "
        "| SQL writes a/Go | peak RSS a/Go | a CPU/upd vs naive c |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ratio(x: Any, y: Any) -> str:
        return (
            f"{x / y:.2f}"
            if isinstance(x, int | float) and isinstance(y, int | float) and y
            else "-"
        )

    for case in cases:
        n = case.number
        a, d, e, c = (results.get((n, x), {}) for x in "adec")
        own = (
            a["cpu_us_per_update"] - e["cpu_us_per_update"]
            if a.get("cpu_us_per_update") is not None and e.get("cpu_us_per_update") is not None
            else None
        )
        lines.append(
            f"| {n} | {ratio(a.get('cpu_us_per_update'), d.get('cpu_us_per_update'))} "
            f"| {ratio(own, d.get('cpu_us_per_update'))} "
            f"| {ratio(a.get('cpu_us_per_update'), e.get('cpu_us_per_update'))} "
            f"| {ratio(a.get('updates_per_s'), d.get('updates_per_s'))} "
            f"| {ratio(a.get('sql_updates'), d.get('sql_updates'))} "
            f"| {ratio(a.get('peak_rss_mb'), d.get('peak_rss_mb'))} "
            f"| {ratio(a.get('cpu_us_per_update'), c.get('cpu_us_per_update'))} |"
        )
    return lines


def extras(results: Results, cases: list[Case]) -> list[str]:
    """The WAL (case 4) and memory (case 5) figures that do not fit the main table."""
    lines: list[str] = []
    for case in cases:
        rows = [(x, results[(case.number, x)]) for x in "abcde" if (case.number, x) in results]
        if case.wal:
            lines += [
                f"WAL, case {case.number} ({case.config.streams * case.config.tokens:,} tokens):",
                "",
                "| row | WAL bytes | WAL bytes/token | how | write() bytes, whole process |",
                "|---|---|---|---|---|",
            ]
            for x, r in rows:
                wal = r.get("wal_bytes", r.get("wal_bytes_lower_bound"))
                how = r.get("wal_bytes_method", "SQLite: WAL frames written x (page + 24)")
                lines.append(
                    f"| {x} {r.get('impl')} | {_f(wal)} | {_f(r.get('wal_bytes_per_token'), 0)} "
                    f"| {how} | {_f(r.get('io_wchar_bytes'))} |"
                )
            lines.append("")
        if case.memory:
            lines += [
                f"Memory, case {case.number} ({case.config.streams:,} streams):",
                "",
                "| row | RSS before MB | peak RSS MB | RSS after idle MB | after gc.collect MB "
                "| actors alive at peak | after idle |",
                "|---|---|---|---|---|---|---|",
            ]
            for x, r in rows:
                lines.append(
                    f"| {x} {r.get('impl')} | {_f(r.get('rss_before_mb'), 1)} "
                    f"| {_f(r.get('peak_rss_mb'), 1)} | {_f(r.get('rss_after_mb'), 1)} "
                    f"| {_f(r.get('rss_after_gc_mb'), 1)} | {_f(r.get('actors_alive_peak'))} "
                    f"| {_f(r.get('actors_alive_after'))} |"
                )
            kb = per_actor_kb(results, case.number)
            if kb is not None:
                lines += [
                    "",
                    f"Per live actor: {kb:.2f} KB = ((peak_a - before_a) - (peak_e - before_e))"
                    f" / {case.config.streams:,} streams.",
                ]
            lines.append("")
    return lines


# -- the machine ----------------------------------------------------------------------


def machine(results: Results) -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    go = next((r["go_version"] for r in results.values() if r.get("go_version")), None)
    if go is None:
        try:
            go = subprocess.run(
                ["go", "version"], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            go = "not found"
    go_sqlite = next(
        (
            r["sqlite_version"]
            for r in results.values()
            if r.get("row") == "d" and "sqlite_version" in r
        ),
        None,
    )
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import trio

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "src"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head, dirty = "unknown", ""
    loads = [r["loadavg_1m_before"] for r in results.values() if "loadavg_1m_before" in r]
    digests = sorted(
        {r["msgstore_source_sha1"] for r in results.values() if "msgstore_source_sha1" in r}
    )
    return {
        "msgstore commit": head + (" (src/ has uncommitted changes)" if dirty else ""),
        "msgstore sources the rows ran (sha1)": ", ".join(digests) or "-",
        "load average before rows (1 min)": (
            f"{min(loads):.2f} to {max(loads):.2f}" if loads else "-"
        ),
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "RAM": mem,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite (apsw)": f"{apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})",
        "trio": trio.__version__,
        "Go": go or "not found",
        "SQLite (Go, system libsqlite3)": go_sqlite or "-",
    }
