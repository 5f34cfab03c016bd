"""``msgstore import`` refuses, in one line, what no row can hold (issue #15).

Each file is a real export of a small database with one line's JSON text edited, so
the file is otherwise valid. The CLI runs for real, in a subprocess: a refused file is
one ``msgstore: error: ... line N: ...`` line on stderr, exit code 1, no traceback, and
the target database is left as it was (byte for byte), or not created at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_msgstore
from every_part import PARENT, make_sample_db

INT64_OVER = 2**63  # one past int64's largest value
DEEP = 100_000  # far past Python's recursion limit


def msgstore(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_msgstore(*args, ok=False, timeout=120)


class Dump:
    """A real export of the sample database, and the source of edited copies."""

    def __init__(self, sample: Path, path: Path) -> None:
        self.sample = sample
        proc = msgstore("export", "--db", sample, "-o", path)
        assert proc.returncode == 0, proc.stderr
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.records: list[dict[str, Any]] = [json.loads(line) for line in self.lines]

    def number(self, match: Callable[[dict[str, Any]], bool]) -> int:
        """The (1-based) number of the one line whose record ``match`` picks."""
        (n,) = [i for i, r in enumerate(self.records, start=1) if match(r)]
        return n

    def edited(self, path: Path, number: int, old: str, new: str) -> Path:
        """A copy with ``old`` replaced by ``new`` in line ``number``'s JSON text."""
        lines = list(self.lines)
        assert lines[number - 1].count(old) == 1, (old, lines[number - 1][:200])
        lines[number - 1] = lines[number - 1].replace(old, new)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def replaced(self, path: Path, number: int, text: str) -> Path:
        lines = list(self.lines)
        lines[number - 1] = text
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Dump:
    base = tmp_path_factory.mktemp("dump")
    sample = make_sample_db(base / "sample.db").path
    return Dump(sample, base / "dump.jsonl")


def parent_session(r: dict[str, Any]) -> bool:
    return r.get("type") == "session" and r["id"] == PARENT


def user_message(r: dict[str, Any]) -> bool:
    return r.get("type") == "message" and r["role"] == "user"


def every_part_message(r: dict[str, Any]) -> bool:
    return r.get("type") == "message" and r["model"] == "model-x" and r["provider"] == "prov-y"


def assert_refused(dump: Dump, bad: Path, number: int, *needles: str) -> None:
    """Importing ``bad`` fails in one line naming line ``number``, changing nothing."""
    tmp = bad.parent
    # A target that already holds rows: byte for byte as it was, and no WAL or journal.
    target = tmp / "target.db"
    shutil.copyfile(dump.sample, target)
    before = target.read_bytes()
    listing = sorted(p.name for p in tmp.iterdir())
    # A target that does not exist: a bad file is refused before it is created.
    missing = tmp / "new.db"
    for db in (target, missing):
        proc = msgstore("import", "--db", db, bad)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"msgstore: error: {bad} line {number}: "), lines[0]
        for needle in needles:
            assert needle in lines[0], lines[0]
        assert proc.stdout == ""
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp.iterdir()) == listing
    assert not missing.exists()


# -- integers SQLite cannot store (and Go's int64 cannot read) -------------------------------


def test_session_prompt_tokens_above_int64_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(parent_session)
    bad = dump.edited(
        tmp_path / "bad.jsonl", n, '"prompt_tokens":1200', f'"prompt_tokens":{INT64_OVER}'
    )
    assert_refused(dump, bad, n, f"'prompt_tokens' {INT64_OVER} is outside int64")


def test_message_created_at_above_int64_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(user_message)
    created = dump.records[n - 1]["created_at"]
    bad = dump.edited(tmp_path / "bad.jsonl", n, f'"created_at":{created}', f'"created_at":{2**70}')
    assert_refused(dump, bad, n, f"'created_at' {2**70} is outside int64")


def test_message_finished_at_below_int64_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(user_message)
    low = -(2**63) - 1
    bad = dump.edited(tmp_path / "bad.jsonl", n, '"finished_at":null', f'"finished_at":{low}')
    assert_refused(dump, bad, n, f"'finished_at' {low} is outside int64")


# -- lone surrogates: "\ud800" in the JSON text, which UTF-8 cannot encode --------------------


def test_lone_surrogate_in_session_title_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(parent_session)
    bad = dump.edited(
        tmp_path / "bad.jsonl", n, '"title":"Parent: every part"', '"title":"Parent \\ud800"'
    )
    assert_refused(dump, bad, n, "title holds the lone surrogate \\ud800")


def test_lone_surrogate_in_message_model_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(every_part_message)
    bad = dump.edited(tmp_path / "bad.jsonl", n, '"model":"model-x"', '"model":"model-\\ud800"')
    assert_refused(dump, bad, n, "model holds the lone surrogate \\ud800")


def test_lone_surrogate_in_message_provider_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(every_part_message)
    bad = dump.edited(tmp_path / "bad.jsonl", n, '"provider":"prov-y"', '"provider":"\\udfff"')
    assert_refused(dump, bad, n, "provider holds the lone surrogate \\udfff")


def test_lone_surrogate_in_parts_text_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(user_message)
    bad = dump.edited(
        tmp_path / "bad.jsonl",
        n,
        '"text":"please run the tests"',
        '"text":"please \\udc00 run the tests"',
    )
    assert_refused(dump, bad, n, "parts[0].data.text holds the lone surrogate \\udc00")


# -- nesting past what Python's json (and the codec) can recurse through ----------------------


def test_line_nested_100000_deep_is_refused(dump: Dump, tmp_path: Path) -> None:
    n = dump.number(user_message)
    bad = dump.replaced(tmp_path / "bad.jsonl", n, "[" * DEEP + "]" * DEEP)
    assert_refused(dump, bad, n, "nested deeper than 100 levels")


@pytest.mark.parametrize("depth", [150, DEEP])
def test_too_deep_responses_data_is_refused(dump: Dump, tmp_path: Path, depth: int) -> None:
    # 150 levels: json.loads manages, the depth check refuses; 100,000: json.loads
    # itself would raise RecursionError.
    n = dump.number(every_part_message)
    nested = "[" * depth + "]" * depth
    bad = dump.edited(
        tmp_path / "bad.jsonl", n, '"responses_data":{', f'"responses_data":{{"deep":{nested},'
    )
    assert_refused(dump, bad, n, "nested deeper than 100 levels")


def test_responses_data_within_the_depth_limit_imports(dump: Dump, tmp_path: Path) -> None:
    # The line's own structure takes five levels; 90 more stay under the limit.
    n = dump.number(every_part_message)
    nested = "[" * 90 + "]" * 90
    good = dump.edited(
        tmp_path / "good.jsonl", n, '"responses_data":{', f'"responses_data":{{"deep":{nested},'
    )
    proc = msgstore("import", "--db", tmp_path / "new.db", good)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported 2 sessions, 5 messages")
