"""``python -m benchmarks``: run the matrix (or part of it), print the table and the targets."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import report
from .gobench import find_gobench, run_go
from .matrix import LONG, QUICK, STANDARD, Case
from .measure import build_walcount, walcount_env
from .runner import ROWS
from .workload import Config

REPO = Path(__file__).resolve().parents[1]
NOTES_MARKER = "<!-- notes: everything below this line is kept when the file is regenerated -->"


def _parse_cases(values: list[str]) -> list[int]:
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            first, _, last = part.partition("-")
            for n in range(int(first), int(last or first) + 1):
                if n not in STANDARD:
                    raise argparse.ArgumentTypeError(f"no case {n} (cases are 1-{len(STANDARD)})")
                out.append(n)
    return sorted(set(out))


def _parse_rows(value: str) -> list[str]:
    rows = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in rows if x not in ROWS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown rows {bad}; rows are {','.join(ROWS)}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    rows = "; ".join(f"{k} = {v}" for k, v in ROWS.items())
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "msgstore against the Go reference, a naive writer and the bare producer. "
            "Each row runs in a fresh process and prints one JSON line and a table row; "
            "the targets of issue #4 are printed as PASS/FAIL lines at the end. "
            f"Rows: {rows}."
        ),
        epilog="Example: python -m benchmarks --case 1,3 --rows a,d,e --results /tmp/r.md",
    )
    p.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="N[,N]",
        help="run only these cases of the matrix, e.g. 1,3 or 6-10 (repeatable; default: "
        "1-5; add --long for 6-10)",
    )
    p.add_argument(
        "--rows",
        type=_parse_rows,
        default=list(ROWS),
        metavar="a,b,...",
        help="run only these rows (default: a,b,c,d,e)",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="also run cases 6-10: a busy server's subscriber and long paced replies "
        "(about 20 minutes more)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller matrix of the same shapes (about a minute in all)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every row N times, interleaved, and keep the run with the median CPU "
        "per update (the memory case always runs once)",
    )
    p.add_argument(
        "--subscriber",
        choices=("each", "batch"),
        default="each",
        help="how msgstore's subscribers drain: 'each' = async for event in events "
        "(default, one event per wake-up); 'batch' = msgstore.iter_batches",
    )
    p.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="write the markdown report (as benchmarks/RESULTS.md) to FILE",
    )
    p.add_argument(
        "--jsonl", type=Path, metavar="FILE", help="append every row's JSON line to FILE"
    )
    p.add_argument(
        "--from-jsonl",
        type=Path,
        metavar="FILE",
        help="run nothing: render the report from the rows a --jsonl FILE holds (of the "
        "cases chosen; the median run of each row, as --repeat keeps)",
    )
    p.add_argument(
        "--gobench",
        metavar="PATH",
        help="the Go reference binary (default: $GOBENCH, then "
        "../shared/reference/go-seed/gobench beside the project)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where the database files go (default: a new temporary directory)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up on one row after S seconds (default 300)",
    )
    custom = p.add_argument_group(
        "a custom case (any of these replaces the matrix with one case built from them; "
        "the rest default to Go's defaults)"
    )
    custom.add_argument("--streams", type=int)
    custom.add_argument("--tokens", type=int)
    custom.add_argument("--interval-ms", type=float)
    custom.add_argument("--debounce-ms", type=float)
    custom.add_argument("--subscribers", type=int)
    custom.add_argument("--tool-calls", type=int)
    custom.add_argument("--reasoning", type=int)
    custom.add_argument(
        "--memory",
        action="store_true",
        help="custom case: also wait for idle actors to retire and measure RSS",
    )
    return p


def _custom_case(args: argparse.Namespace) -> Case | None:
    given = {
        "streams": args.streams,
        "tokens": args.tokens,
        "interval": None if args.interval_ms is None else args.interval_ms / 1000,
        "debounce": None if args.debounce_ms is None else args.debounce_ms / 1000,
        "subscribers": args.subscribers,
        "tool_calls": args.tool_calls,
        "reasoning": args.reasoning,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given and not args.memory:
        return None
    cfg = Config(**given)
    return Case(0, f"custom: {cfg}", cfg, wal=True, memory=args.memory)


def run_python_row(
    row: str, case: Case, workdir: Path, timeout: float, shim: Path | None, subscriber: str
) -> dict[str, Any]:
    """One row in a fresh interpreter, so that its RSS and CPU are its own."""
    spec = {
        "row": row,
        "config": case.config.as_dict(),
        "db": str(workdir / f"case{case.number}-{row}.db"),
        "measure_idle": case.memory,
        "subscriber": subscriber,
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if shim is not None:
        env.update(walcount_env(shim, workdir / f"case{case.number}-{row}.walcount"))
    cmd = [sys.executable, "-m", "benchmarks.runner", json.dumps(spec)]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"row": row, "impl": ROWS[row], "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"row": row, "impl": ROWS[row], "error": f"exited {done.returncode}, no JSON"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_one(
    row: str,
    case: Case,
    workdir: Path,
    args: argparse.Namespace,
    gobench: Path | None,
    shim: Path | None,
) -> dict[str, Any]:
    if row != "d":
        return run_python_row(row, case, workdir, args.timeout, shim, args.subscriber)
    if gobench is None:
        skipped = (
            "Go binary not found: build it with ../shared/reference/go-seed/build.sh, "
            "or pass --gobench"
        )
        print(f"skipping row d: {skipped}", flush=True)
        return {"row": "d", "impl": ROWS["d"], "skipped": skipped}
    db = workdir / f"case{case.number}-d.db"
    return run_go(gobench, case.config, db, shim=shim, timeout=args.timeout)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU per update, whole (its fields stay consistent)."""
    ok = [r for r in runs if r.get("cpu_us_per_update") is not None]
    if not ok:
        return runs[-1]
    ok.sort(key=lambda r: r["cpu_us_per_update"])
    chosen = dict(ok[(len(ok) - 1) // 2])
    if len(runs) > 1:
        chosen["repeats"] = len(runs)
        chosen["cpu_us_per_update_runs"] = [r.get("cpu_us_per_update") for r in runs]
        chosen["updates_per_s_runs"] = [r.get("updates_per_s") for r in runs]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    custom = _custom_case(args)
    table = QUICK if args.quick else STANDARD
    if custom is not None:
        cases = [custom]
    else:
        numbers = (
            _parse_cases(args.case)
            if args.case
            else sorted(n for n in table if args.long or n not in LONG)
        )
        cases = [table[n] for n in numbers]
    if args.from_jsonl is not None:
        return render_saved(args, cases)
    gobench = find_gobench(args.gobench)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="msgstore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shim = build_walcount(workdir)
    if shim is None:
        print("no C compiler: WAL bytes fall back to SQLite's count / a lower bound for Go")
    command = "python -m benchmarks" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    results: dict[tuple[int, str], dict[str, Any]] = {}
    jsonl = args.jsonl.open("a") if args.jsonl else None
    started = datetime.datetime.now(datetime.UTC)
    try:
        for case in cases:
            print(f"\n## case {case.number}: {case.title}\n", flush=True)
            rows = [r for r in args.rows if case.rows is None or r in case.rows]
            runs: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
            repeats = 1 if case.memory else args.repeat
            for _ in range(repeats):  # interleaved, so that drift hits every row alike
                for row in rows:
                    # Write back the previous row's dirty pages now (the naive rows leave
                    # gigabytes), so that its writeback does not land on this row's fsyncs.
                    os.sync()
                    load = os.getloadavg()[0]
                    r = run_one(row, case, workdir, args, gobench, shim)
                    r["case"] = case.number
                    r["loadavg_1m_before"] = load
                    runs[row].append(r)
                    line = json.dumps(r)
                    print(line)
                    print(report.HEADER + "\n" + report.RULE)
                    print(report.table_row(case.number, r) + "\n", flush=True)
                    if jsonl is not None:
                        jsonl.write(line + "\n")
                        jsonl.flush()
            for row, rs in runs.items():
                results[(case.number, row)] = median_run(rs)
    finally:
        if jsonl is not None:
            jsonl.close()
    elapsed = datetime.datetime.now(datetime.UTC) - started

    lines = render(results, cases, command, quick=args.quick, elapsed=elapsed.total_seconds())
    print("\n".join(lines))
    if args.results:
        write_results(args.results, lines)
        print(f"\nwrote {args.results}")
    bad = [r for r in results.values() if "error" in r or r.get("accounting_ok") is False]
    bad += [r for r in results.values() if r.get("verified_ok") is False]
    return 1 if bad else 0


def render(
    results: report.Results, cases: list[Case], command: str, *, quick: bool, elapsed: float
) -> list[str]:
    """The report: machine, the full table, WAL and memory figures, ratios, targets."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# msgstore benchmark results",
        "",
        f"Command: `{command}` ({when}, {elapsed:.0f} s in all)"
        + (" — quick matrix, not the standard one" if quick else ""),
        "",
        *mixed_sources_warning(results),
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in report.machine(results).items()),
        "",
        "Cases:",
        "",
        *(f"{c.number}. {c.title}: `{c.config}`" for c in cases),
        "",
        report.HEADER,
        report.RULE,
        *(
            report.table_row(c.number, results[(c.number, x)])
            for c in cases
            for x in "abcde"
            if (c.number, x) in results
        ),
        "",
        *report.extras(results, cases),
        "Ratios (same run):",
        "",
        *report.ratios(results, cases),
        "",
        "Targets:"
        + (
            " (quick parameters: indicative only, the targets are set for the standard matrix)"
            if quick
            else ""
        ),
        "",
        "```",
        *(t.line() for t in report.targets(results)),
        "```",
    ]
    return lines


def render_saved(args: argparse.Namespace, cases: list[Case]) -> int:
    """The report of rows run earlier (``--from-jsonl``), without running any."""
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for line in args.from_jsonl.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs.setdefault((r["case"], r["row"]), []).append(r)
    numbers = {c.number for c in cases}
    results = {key: median_run(rs) for key, rs in runs.items() if key[0] in numbers}
    command = f"python -m benchmarks --from-jsonl {args.from_jsonl} (rows as run earlier)"
    lines = render(results, cases, command, quick=args.quick, elapsed=0.0)
    print("\n".join(lines))
    if args.results:
        write_results(args.results, lines)
        print(f"\nwrote {args.results}")
    return 0


def mixed_sources_warning(results: report.Results) -> list[str]:
    digests = {r["msgstore_source_sha1"] for r in results.values() if "msgstore_source_sha1" in r}
    if len(digests) <= 1:
        return []
    return [
        f"**WARNING: the rows ran {len(digests)} different versions of the msgstore sources "
        "(src/ changed during the run); the comparisons below are not like for like.**",
        "",
    ]


def write_results(path: Path, lines: list[str]) -> None:
    """Write the report, keeping any hand-written notes below the marker."""
    notes = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER) :]
    text = "\n".join(lines) + "\n\n" + (notes or NOTES_MARKER + "\n")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
