"""Shared fixtures: where the Go reference's fixture lives, and a fresh copy of it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
import trio

import msgstore

_HERE = Path(__file__).resolve().parent
# The fixture written by the Go reference lives beside the project in the workspace;
# a copy is vendored under tests/data so that a fresh clone (CI) has it too.
FIXTURE_DIR = _HERE / "data"
FIXTURE_DB = FIXTURE_DIR / "crush-fixture.db"
FIXTURE_DUMP = FIXTURE_DIR / "crush-fixture.dump.jsonl"


@pytest.fixture
def crush_fixture(tmp_path: Path) -> Path:
    """A private copy of the crush fixture database (tests never touch the original)."""
    dest = tmp_path / "crush-fixture.db"
    shutil.copyfile(FIXTURE_DB, dest)
    return dest


@pytest.fixture
def crush_dump() -> list[dict[str, Any]]:
    """What the Go reference says each fixture message holds, one dict per message."""
    with FIXTURE_DUMP.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "msgstore.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[msgstore.Database]:
    """A fresh database file, opened with ``connect``."""
    with msgstore.connect(db_path) as database:
        yield database


@pytest.fixture
def session_id(db: msgstore.Database) -> str:
    return db.create_session("test").id


def long_sweeps() -> bool:
    """True in `nox -s crash`: reliability sweeps run their long variants."""
    return os.environ.get("MSGSTORE_LONG_SWEEPS") == "1"


@pytest.fixture
def locker(db_path: Path, db: msgstore.Database) -> Iterator[apsw.Connection]:
    """Another connection to the file, for holding the write lock."""
    con = apsw.Connection(str(db_path))
    yield con
    if con.in_transaction:
        con.execute("ROLLBACK")
    con.close()


async def release_after(con: apsw.Connection, seconds: float) -> None:
    """Commit ``con``'s transaction (releasing the lock) after ``seconds`` of Trio time."""
    await trio.sleep(seconds)
    con.execute("COMMIT")


class TaskSteps(trio.abc.Instrument):
    """Records every task step while installed (``with TaskSteps.counting() as steps``)."""

    def __init__(self) -> None:
        self.tasks: list[trio.lowlevel.Task] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.tasks.append(task)

    def others(self) -> list[trio.lowlevel.Task]:
        """The steps of tasks other than the current one."""
        me = trio.lowlevel.current_task()
        return [t for t in self.tasks if t is not me]

    @classmethod
    @contextlib.contextmanager
    def counting(cls) -> Iterator[TaskSteps]:
        steps = cls()
        trio.lowlevel.add_instrument(steps)
        try:
            yield steps
        finally:
            trio.lowlevel.remove_instrument(steps)
