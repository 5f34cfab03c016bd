"""``Reply``: one caller waiting for one answer from an actor.

A caller that needs the actor to act (write now, delete, insert) sends a request with
a ``Reply`` and waits on it; the actor answers with ``set`` or ``fail``. A caller that
is cancelled while it waits *withdraws* the request: an actor about to act on a
withdrawn request skips it. Because a Trio program is single-threaded and the actor's
write itself contains no checkpoint, a cancelled ``wait`` therefore means the request
was not carried out, and a ``wait`` that returns means it was: a cancel point before
the write, none after it.

Hand-written instead of a ``trio.Event`` plus fields: it is one small object per
waiting caller (``__slots__``, no Event, no per-actor queue), and withdrawing has to
happen inside the cancellation itself (``wait_task_rescheduled``'s abort callback),
where the answer either has not been given (withdraw) or has (the caller got it).
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

import trio

T = TypeVar("T")


class Reply(Generic[T]):
    """The answer to one request; see the module docstring."""

    __slots__ = ("_answered", "_error", "_task", "_value", "withdrawn")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._answered = False
        self._value: T | None = None
        self._error: BaseException | None = None
        #: The caller gave up (cancelled) before the answer: do not act on it.
        self.withdrawn = False

    @property
    def pending(self) -> bool:
        """Nobody has answered, and the caller still waits (or has not started to)."""
        return not self._answered and not self.withdrawn

    def set(self, value: T) -> None:
        """Answer with a value (ignored if already answered or withdrawn)."""
        if self.pending:
            self._value = value
            self._answered = True
            self._wake()

    def fail(self, error: BaseException) -> None:
        """Answer with an error, which the caller's ``wait`` raises."""
        if self.pending:
            self._error = error
            self._answered = True
            self._wake()

    def _wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> T:
        """Wait for the answer. Cancelled before it: withdrawn, and Cancelled raised."""
        if not self._answered:

            def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
                self._task = None
                self.withdrawn = True
                return trio.lowlevel.Abort.SUCCEEDED

            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            # Answered already (e.g. before the caller got here): still a checkpoint.
            await trio.lowlevel.cancel_shielded_checkpoint()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)
