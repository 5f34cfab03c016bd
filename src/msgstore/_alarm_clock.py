"""The service's alarm clock: one task that rings sleepers when their times come.

Thousands of actors each waiting in its own ``move_on_at`` would cost a cancel scope
per window and a ``Cancelled`` raised and caught per wake-up; here all deadlines go
into one heap, and this task sleeps until the earliest. The clock never writes: a
sleeper's ``on_alarm`` only sends its actor a letter.

Each sleeper has at most one live alarm (its earliest need). Asking for a later time
while an earlier alarm is set does nothing: the earlier one rings, and the sleeper asks
again for what is not due yet. Asking for an earlier time replaces the alarm; the old
entry is left in the heap, marked dead, and the heap is compacted when dead entries
outnumber live ones, so its size stays within twice the number of live sleepers.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

import trio


class Alarm:
    """One entry of the heap; ``sleeper`` None marks it dead (replaced or cancelled)."""

    __slots__ = ("seq", "sleeper", "when")

    def __init__(self, when: float, seq: int, sleeper: Sleeper) -> None:
        self.when = when
        self.seq = seq  # tie-breaker: first asked, first rung
        self.sleeper: Sleeper | None = sleeper

    def __lt__(self, other: Alarm) -> bool:
        if self.when != other.when:
            return self.when < other.when
        return self.seq < other.seq


class Sleeper(Protocol):
    #: The sleeper's live alarm, kept by the clock (None when none is set).
    alarm: Alarm | None

    def on_alarm(self) -> None:
        """Called at (or after) the time asked for: do what is due, ask again for the rest."""


class AlarmClock:
    """Rings each sleeper at the earliest time it asked for; see the module docstring."""

    def __init__(self) -> None:
        self._heap: list[Alarm] = []
        self._count = 0
        self._dead = 0
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        """Entries in the heap, dead ones included (bounded by 2 x live sleepers + 64)."""
        return len(self._heap)

    def set_alarm(self, sleeper: Sleeper, when: float) -> None:
        """Ring ``sleeper`` at ``when`` (or earlier, if it already asked for earlier)."""
        alarm = sleeper.alarm
        if alarm is not None:
            if alarm.when <= when:
                return
            alarm.sleeper = None
            self._dead += 1
        self._count += 1
        alarm = Alarm(when, self._count, sleeper)
        sleeper.alarm = alarm
        heap = self._heap
        heapq.heappush(heap, alarm)
        if self._dead > 64 and self._dead * 2 > len(heap):
            self._compact()
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    def cancel_alarm(self, sleeper: Sleeper) -> None:
        alarm = sleeper.alarm
        if alarm is not None:
            alarm.sleeper = None
            sleeper.alarm = None
            self._dead += 1

    def _compact(self) -> None:
        self._heap = [a for a in self._heap if a.sleeper is not None]
        heapq.heapify(self._heap)
        self._dead = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            heap = self._heap
            now = trio.current_time()
            while heap and heap[0].when <= now:
                alarm = heapq.heappop(heap)
                sleeper = alarm.sleeper
                if sleeper is None:
                    self._dead -= 1
                    continue
                sleeper.alarm = None
                sleeper.on_alarm()
                heap = self._heap  # on_alarm may have compacted it
            with trio.move_on_at(heap[0].when if heap else math.inf) as scope:
                self._scope = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._scope = None
