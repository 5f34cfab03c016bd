"""The benchmark harness keeps working: every Python row on tiny parameters, and the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is beside the package, not installed with it
    sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import render  # noqa: E402
from benchmarks.gobench import command  # noqa: E402
from benchmarks.matrix import Case  # noqa: E402
from benchmarks.runner import PYTHON_ROWS, run_row  # noqa: E402
from benchmarks.workload import Config, token, verify_rows  # noqa: E402

TINY = Config(
    streams=2, tokens=6, interval=0.001, debounce=0.01, subscribers=1, tool_calls=1, reasoning=2
)


def test_every_python_row_runs_verifies_and_accounts(tmp_path: Path) -> None:
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for row in PYTHON_ROWS:
        r = run_row(row, TINY, tmp_path / f"{row}.db")
        assert r["accounting_ok"], r["problems"]
        assert r["verified_ok"] is (None if row == "e" else True), r["problems"]
        assert r["updates"] == TINY.expected_updates() == 2 * (6 + 1 + 3 + 5)
        assert r["terminal_updates"] == 2 * (1 + 2 + 1)
        json.dumps(r)  # the JSON line
        results[(1, row)] = r
    assert results[(1, "b")]["sql_updates"] == results[(1, "c")]["sql_updates"] == 30
    assert results[(1, "e")]["sql_updates"] == 0
    lines = render(results, [Case(1, "tiny", TINY, wal=True)], "smoke", quick=True, elapsed=0)
    assert any(line.startswith(("PASS", "FAIL")) for line in lines)


@pytest.mark.parametrize("subscriber", ["each", "batch"])
def test_subscribers_end_with_every_final_state(tmp_path: Path, subscriber: str) -> None:
    r = run_row("a", TINY, tmp_path / "a.db", subscriber=subscriber)
    assert r["accounting_ok"], r["problems"]
    assert r["subscriber_mode"] == subscriber
    assert r["terminal_lost"] == 0
    assert r["drops"] == 0
    # Conflation: never more events than writes (one per create and per write).
    assert r["events_created"] + r["events_updated"] <= 2 + r["sql_updates"]


def test_verification_catches_a_row_with_the_wrong_text() -> None:
    cfg = Config(streams=1, tokens=3)
    good_text = "".join(token(0, i) for i in range(3))
    parts = [
        {"type": "text", "data": {"text": good_text[:-1]}},
        {"type": "finish", "data": {"reason": "end_turn", "time": 5}},
    ]
    problems = verify_rows([("m0", json.dumps(parts), 5)], ["m0"], cfg)
    assert problems and "text" in problems[0]


def test_go_row_gets_the_same_parameters() -> None:
    cmd = command(Path("gobench"), TINY, Path("x.db"))
    flags = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert flags == {
        "-streams": "2",
        "-tokens": "6",
        "-interval": "1000us",
        "-debounce": "10000us",
        "-subscribers": "1",
        "-tool-calls": "1",
        "-reasoning": "2",
        "-db": "x.db",
    }
