"""Row (d): the Go reference's ``bench`` command, run as a subprocess, its JSON normalised."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from .measure import read_walcount, walcount_env
from .workload import Config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GOBENCH = REPO.parent / "shared" / "reference" / "go-seed" / "gobench"


def find_gobench(explicit: str | None) -> Path | None:
    """The binary from ``--gobench``, ``$GOBENCH``, or beside the project; None if absent."""
    for candidate in (explicit, os.environ.get("GOBENCH"), str(DEFAULT_GOBENCH)):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1e6)}us"


def command(binary: Path, cfg: Config, db: Path) -> list[str]:
    return [
        str(binary),
        "bench",
        "-streams", str(cfg.streams),
        "-tokens", str(cfg.tokens),
        "-interval", _duration(cfg.interval),
        "-debounce", _duration(cfg.debounce),
        "-subscribers", str(cfg.subscribers),
        "-tool-calls", str(cfg.tool_calls),
        "-reasoning", str(cfg.reasoning),
        "-db", str(db),
    ]  # fmt: skip


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(db) + suffix)


def run_go(
    binary: Path, cfg: Config, db: Path, *, shim: Path | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run the Go bench once and return its JSON with this harness's derived fields.

    With ``shim`` (the compiled ``walcount.c``) preloaded, the bytes it writes to its
    -wal file are counted exactly, as for the Python rows. Without it, the size of the
    -wal file is polled while it runs; the largest size seen is only a lower bound
    (SQLite rewrites the WAL from its start after a checkpoint). Once it has exited,
    but before it is reaped, ``/proc/PID/io`` still gives its write-syscall bytes.
    """
    _remove_db(db)
    cmd = command(binary, cfg, db)
    wal = Path(str(db) + "-wal")
    counter = db.with_suffix(".walcount")
    env = dict(os.environ)
    if shim is not None:
        env.update(walcount_env(shim, counter))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    max_wal = 0
    deadline = time.monotonic() + timeout
    while True:
        # WNOWAIT: learn that it exited without reaping it, so /proc/PID/io is readable.
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            break
        with contextlib.suppress(FileNotFoundError):
            max_wal = max(max_wal, wal.stat().st_size)
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.002)
    io: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/io") as f:
        io = {k: int(v) for k, v in (line.split(": ") for line in f if ": " in line)}
    stdout, stderr = proc.communicate()
    wal_bytes = read_walcount(counter) if shim is not None else None
    _remove_db(db)
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "row": "d",
            "impl": "Go reference",
            "error": f"gobench exited {proc.returncode}: {stderr.decode()[-500:]}",
        }
    out: dict[str, Any] = json.loads(lines[-1])
    cpu = out.get("cpu_user_s", 0.0) + out.get("cpu_sys_s", 0.0)
    updates = out.get("updates") or 0
    tokens = cfg.streams * cfg.tokens
    if wal_bytes is not None:
        method = "bytes written to *-wal (LD_PRELOAD shim)"
    else:
        wal_bytes, method = max_wal, "largest -wal file size seen (lower bound)"
    out.update(
        {
            "row": "d",
            "impl": "Go reference",
            "exit_status": proc.returncode,
            "cpu_s": cpu,
            "cpu_scope": "whole process",
            "cpu_us_per_update": cpu / updates * 1e6 if updates else None,
            "io_wchar_bytes": io.get("wchar"),
            "io_write_bytes": io.get("write_bytes"),
            "wal_bytes": wal_bytes,
            "wal_bytes_method": method,
            "wal_bytes_per_token": wal_bytes / tokens if tokens else None,
            "wal_max_file_bytes": max_wal,
            "command": " ".join(cmd),
        }
    )
    return out
