"""Running the real command line in a subprocess, as a user does (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_msgstore(
    *args: str | Path, ok: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m msgstore ARGS``; with ``ok``, assert it succeeded with nothing on stderr."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "msgstore", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=timeout,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    return proc
