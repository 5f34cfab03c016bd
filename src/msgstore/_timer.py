"""The service's alarm clock: one task that wakes actors when their deadlines come.

An actor parked in ``trio.lowlevel.wait_task_rescheduled`` costs nothing to wake; an
actor sleeping in its own ``move_on_at`` scope costs a cancel scope per window and a
``Cancelled`` exception raised and caught per wake-up, which profiling showed to be
the largest part of a write. So deadlines go into one heap here, and this task sleeps
until the earliest one.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

import trio


class Sleeper(Protocol):
    def on_alarm(self) -> None:
        """Called at (or after) a time the sleeper asked for; it checks what is due."""


class AlarmClock:
    """Wakes each sleeper at the times it asked for (``set_alarm``), in time order."""

    def __init__(self) -> None:
        self._alarms: list[tuple[float, int, Sleeper]] = []
        self._count = 0  # tie-breaker: sleepers are not comparable
        self._scope: trio.CancelScope | None = None

    def set_alarm(self, when: float, sleeper: Sleeper) -> None:
        # An alarm that is no longer wanted is not removed: ``on_alarm`` finds nothing
        # due and ignores it. Alarms are popped when their time comes, so the heap
        # holds about two entries per live actor.
        heapq.heappush(self._alarms, (when, self._count, sleeper))
        self._count += 1
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    def __len__(self) -> int:
        return len(self._alarms)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        alarms = self._alarms
        while True:
            now = trio.current_time()
            while alarms and alarms[0][0] <= now:
                heapq.heappop(alarms)[2].on_alarm()
            with trio.move_on_at(alarms[0][0] if alarms else math.inf) as scope:
                self._scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._scope = None
