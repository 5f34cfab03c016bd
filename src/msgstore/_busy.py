"""Waiting out another connection's write lock on Trio time.

The services run SQLite inline on the Trio thread with SQLite's own busy handler off
(it would sleep the whole event loop, see ``Database.without_busy_handler``). A write
that finds the file locked raises ``DatabaseBusy`` at once; this retries it after short
sleeps on Trio's clock, so the other tasks run meanwhile and a test's mock clock drives
the waits too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from ._errors import DatabaseBusy

T = TypeVar("T")

# Sleeps between attempts: short first (most locks are one commit long), then 100 ms.
BUSY_BACKOFF = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


async def wait_out_busy(
    write: Callable[[], T],
    *,
    busy_timeout: float,
    on_wait: Callable[[], None] | None = None,
) -> T:
    """Run ``write`` (one synchronous statement or transaction) until the lock is free.

    Raises the last ``DatabaseBusy`` once ``busy_timeout`` seconds (Trio time) have
    passed; ``on_wait`` is called before each sleep (the services count them).
    """
    started = trio.current_time()
    attempt = 0
    while True:
        try:
            return write()
        except DatabaseBusy:
            if trio.current_time() - started >= busy_timeout:
                raise
        if on_wait is not None:
            on_wait()
        await trio.sleep(BUSY_BACKOFF[min(attempt, len(BUSY_BACKOFF) - 1)])
        attempt += 1
