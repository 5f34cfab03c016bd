"""Measurements that do not trust the code under test: the kernel's and SQLite's own counts."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import apsw

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Cpu:
    user: float
    sys: float

    @staticmethod
    def now() -> Cpu:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return Cpu(ru.ru_utime, ru.ru_stime)

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.user - other.user, self.sys - other.sys)

    @property
    def total(self) -> float:
        return self.user + self.sys


def peak_rss_mb() -> float:
    """The process's high-water RSS (``ru_maxrss``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """The process's RSS now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """``/proc/PID/io``: ``wchar`` is every byte handed to write syscalls (WAL, checkpoints)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(": ") for line in f if ": " in line)}
    except OSError:
        return {}


def percentile_us(sorted_s: Sequence[float], q: int) -> float | None:
    """Go's index rule: ``lats[len*q/100]`` (so p50/p99 match the Go JSON's meaning)."""
    if not sorted_s:
        return None
    return sorted_s[min(len(sorted_s) * q // 100, len(sorted_s) - 1)] * 1e6


# -- counting SQL writes in the database ----------------------------------------------
# TEMP objects belong to the benchmark's own connection: the service's code and its
# counters are not involved, and the file on disk is not changed.
_COUNTER_DDL = (
    "CREATE TEMP TABLE bench_counts(name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO temp.bench_counts VALUES ('updates', 0), ('creates', 0)",
    "CREATE TEMP TRIGGER bench_count_parts AFTER UPDATE OF parts ON main.messages BEGIN "
    # Unqualified inside the trigger body: SQLite before 3.47 refuses ``temp.`` there.
    "UPDATE bench_counts SET n = n + 1 WHERE name = 'updates'; END",
    "CREATE TEMP TRIGGER bench_count_creates AFTER INSERT ON main.messages BEGIN "
    "UPDATE bench_counts SET n = n + 1 WHERE name = 'creates'; END",
    "INSERT INTO temp.bench_counts VALUES ('journal', 0)",
)
# msgstore's delta journal (when the file has one): a window's write is a row there.
_JOURNAL_COUNTER = (
    "CREATE TEMP TRIGGER bench_count_journal AFTER INSERT ON main.msgstore_journal BEGIN "
    "UPDATE bench_counts SET n = n + 1 WHERE name = 'journal'; END"
)


def install_write_counters(con: apsw.Connection) -> None:
    for sql in _COUNTER_DDL:
        con.execute(sql)
    has_journal = con.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'msgstore_journal'"
    ).get
    if has_journal:
        con.execute(_JOURNAL_COUNTER)


def write_counts(con: apsw.Connection) -> tuple[int, int]:
    """(writes of a message's parts: UPDATEs that set ``parts`` plus journal rows,
    INSERTs) on ``messages`` through ``con`` so far."""
    counts = {str(r[0]): int(r[1]) for r in con.execute("SELECT name, n FROM temp.bench_counts")}
    return counts["updates"] + counts["journal"], counts["creates"]


def fold_count(con: apsw.Connection) -> int:
    """Of ``write_counts``' writes, the whole-row UPDATEs (the rest are journal rows)."""
    return int(con.execute("SELECT n FROM temp.bench_counts WHERE name = 'updates'").get)


def wal_frames(con: apsw.Connection) -> int:
    """Pages this connection wrote to the WAL (checkpoints and rollbacks not counted).

    ``SQLITE_DBSTATUS_CACHE_WRITE``: in WAL mode, the number of pages written to the WAL.
    Each is one frame of page_size + 24 bytes (the 32-byte WAL header, once per reset,
    is left out).
    """
    return int(con.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0])


# -- WAL bytes, the same way for every row -------------------------------------------
_SHIM_SOURCE = Path(__file__).with_name("walcount.c")


def build_walcount(workdir: Path) -> Path | None:
    """Compile the LD_PRELOAD shim that counts bytes written to ``*-wal`` files.

    None when there is no C compiler; the rows then fall back to SQLite's own count
    (Python) and to the largest -wal file size seen (Go, a lower bound).
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    out = workdir / "walcount.so"
    cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(_SHIM_SOURCE), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, check=False)
    return out if done.returncode == 0 and out.exists() else None


def walcount_env(shim: Path, counter: Path) -> dict[str, str]:
    counter.unlink(missing_ok=True)
    preload = " ".join(filter(None, [str(shim), os.environ.get("LD_PRELOAD")]))
    return {"LD_PRELOAD": preload, "WALCOUNT_OUT": str(counter)}


def read_walcount(counter: Path) -> int | None:
    """Bytes the shim saw written to ``*-wal`` files (None if it did not run)."""
    try:
        data = counter.read_bytes()
    except OSError:
        return None
    counter.unlink(missing_ok=True)
    return int.from_bytes(data[:8], "little") if len(data) >= 16 else None
