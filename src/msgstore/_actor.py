"""One Trio task per message id: it owns that message's buffer and does its writes.

The actor holds the newest accepted state, the structure of the last written state
(the baseline for terminal detection) and the deadline of its window. Callers talk to
it in two ways:

* ``accept()`` puts a new state in its one-slot mailbox. The slot is conflated: an
  intermediate state that a newer one replaces before the deadline is never written,
  which is the whole point of the window. Arming the window sets an alarm on the
  service's alarm clock (``_timer.py``), so a token costs no task switch.
* A terminal change (or ``flush``) is written by the caller, synchronously, through
  the actor's own ``commit()``: "durable" then costs one SQLite write and no trip
  through Trio's scheduler, which with thousands of streams waking together can take
  tens of milliseconds. When that cannot be done at once (the actor has queued
  requests, or another connection holds the lock) the caller queues a request instead.
* Requests (write, delete) go into its mailbox, a queue it drains in order, and
  the caller waits for the reply. (A Trio memory channel would do the same at 1.8 KB
  per actor; with tens of thousands of live streams that is most of the memory.)

Every write puts its event in the actor's outbox, which the actor task publishes in
order (waiting, for must-deliver events, for room in a full subscriber), so the events
of one message are in order whoever wrote them.

SQLite calls run inline on the Trio thread (see STYLE: threads add latency here, and
the autojump clock would fire deadlines around them early).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import trio

from ._broker import EventType, PendingDelivery
from ._content import Message, Part
from ._errors import DatabaseBusy, MessageNotFound, ServiceClosed
from ._terminal import Structure, is_terminal, same_structure, structure_of

if TYPE_CHECKING:
    from ._service import MessageService

logger = logging.getLogger("msgstore")

# Waits between attempts while another connection holds the write lock, and after a
# failed write. Both run on Trio's clock, so a test's mock clock drives them too.
_BUSY_BACKOFF = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_RETRY_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

T = TypeVar("T")


async def wait_out_busy(service: MessageService, write: Callable[[], T]) -> T:
    """Run a one-statement ``write``, waiting on Trio time while another connection
    holds the lock, up to ``busy_timeout`` (the service's connection does not wait)."""
    started = trio.current_time()
    attempt = 0
    while True:
        try:
            return write()
        except DatabaseBusy:
            if trio.current_time() - started >= service.busy_timeout:
                raise
        service._busy_waits += 1
        await trio.sleep(_BUSY_BACKOFF[min(attempt, len(_BUSY_BACKOFF) - 1)])
        attempt += 1


class RequestKind(enum.Enum):
    WRITE = "write"
    DELETE = "delete"


class Request:
    """A caller waiting on the actor; ``error`` is what the caller will raise."""

    __slots__ = ("done", "error", "kind")

    def __init__(self, kind: RequestKind) -> None:
        self.kind = kind
        self.done = trio.Event()
        self.error: BaseException | None = None

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error

    def reply(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


class MessageActor:
    """The owner of one message's buffered state. See the module docstring."""

    # Slots: one of these lives per streaming message, so its size is the store's
    # memory per stream.
    __slots__ = (
        "_base",
        "_deadline",
        "_failures",
        "_finished",
        "_idle_at",
        "_in_flight",
        "_latest_structure",
        "_mailbox",
        "_outbox",
        "_parked",
        "_parts",
        "_service",
        "_task",
        "_written",
        "deleted",
        "dirty",
        "id",
    )

    def __init__(self, service: MessageService, state: Message) -> None:
        self.id = state.id
        self._service = service
        # The newest accepted state is ``_base``'s other fields (the row's, or the
        # first update's: update() writes only parts) with the newest accepted parts.
        # Neither is ever mutated: update() hands over a private list.
        self._base = state
        self._parts = state.parts
        self._latest_structure = structure_of(state)
        # ``state`` is what the database holds now: it is the first baseline.
        self._written: Structure | None = self._latest_structure
        self.dirty = False
        self.deleted = False
        self._deadline = math.inf  # when the pending state must be written
        self._idle_at = trio.current_time() + service.idle_timeout
        self._failures = 0
        self._task: trio.lowlevel.Task | None = None
        self._parked = False  # waiting in _park(); _wake() reschedules it
        self._in_flight: Request | None = None  # the request being handled
        # Requests wait here in order. Made on the first request: most actors only
        # ever see tokens, and a Trio memory channel pair costs 1.8 KB per actor,
        # a third of the memory budget of an actor (see benchmarks/RESULTS.md).
        self._mailbox: deque[Request] | None = None
        # Events written but not yet handed to every subscriber, oldest first.
        self._outbox: deque[_Outgoing] | None = None
        self._finished = False

    # -- called by the service, from the caller's task ----------------------------

    @property
    def latest(self) -> Message:
        """The newest accepted state, as a message of its own."""
        return self._base.with_parts(list(self._parts))

    def take_fields(self, message: Message) -> None:
        """Keep ``message``'s other fields instead of the row's: reads then return what
        the caller sent, and its strings are shared, not a second copy per stream."""
        self._base = message.with_parts(self._parts)

    def structure_for(self, parts: list[Part]) -> Structure:
        """The structure of ``parts``, a new state of this message; raises InvalidPart.

        Per token, ``same_structure`` only looks at the parts that changed.
        """
        if same_structure(self._parts, parts):
            return self._latest_structure
        return structure_of(self._base, parts)

    def accept(self, parts: list[Part], structure: Structure) -> bool:
        """Buffer ``parts`` (of that structure) as the newest; must they be written now?"""
        self._parts = parts
        self._latest_structure = structure
        if not self.dirty:
            # The window opens at the first unwritten update; later updates do not
            # move it, so a steady stream is written every window, never starved.
            self.dirty = True
            self._service._dirty_count += 1
            self._set_deadline(trio.current_time() + self._service.debounce)
        return is_terminal(self._written, structure)

    async def write_through(self) -> None:
        """Return once the state accepted so far is written (terminal update, flush).

        A cancel point before the write: Cancelled means this call wrote nothing (the
        state stays buffered for its window). A write done here returns without a
        schedule point, so "durable" costs the write and not a pass of the scheduler,
        which is as long as every other task's work in it; the service's fairness
        guard still yields when one task writes inline many times in a row.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        request = self.commit_or_queue()
        if request is not None:
            await request.wait()
        elif self._service._owes_schedule_point():
            await trio.lowlevel.cancel_shielded_checkpoint()

    def commit_or_queue(self) -> Request | None:
        """Write the pending state now if nothing is ahead of it, else queue a request.

        Returns the request to wait on, or None when the state is written (or nothing
        was pending). Raises the storage error of a write tried here.
        """
        if not self.dirty and not self.busy:
            return None
        if self.busy or self._finished:
            return self.request(RequestKind.WRITE)  # keep the order of queued requests
        try:
            self.commit()
        except DatabaseBusy:
            return self.request(RequestKind.WRITE)  # the actor waits it out on Trio time
        except Exception as exc:
            self._failed(exc)
            raise
        return None

    def request(self, kind: RequestKind) -> Request:
        """Queue a request; the actor handles requests in order, between its writes."""
        request = Request(kind)
        if self._finished:
            # The task has ended (the service is closing): nothing will handle it.
            request.reply(ServiceClosed("the message service has closed"))
            return request
        if self._mailbox is None:
            self._mailbox = deque()
        self._mailbox.append(request)
        self._wake()
        return request

    @property
    def busy(self) -> bool:
        """Whether the actor has queued requests (a flush must wait for them)."""
        return bool(self._mailbox)

    def commit(self) -> None:
        """Write the pending state now, synchronously, and queue its event.

        Raises the storage error with the state still buffered. All or nothing: there
        is no await inside, so no other update can slip in between.
        """
        if not self.dirty or self.deleted:
            return
        state = self.latest
        structure = self._latest_structure
        service = self._service
        terminal = is_terminal(self._written, structure)
        service._write_state(state)
        self._written = structure
        self._failures = 0
        self.dirty = False
        service._dirty_count -= 1
        self._deadline = math.inf
        self._idle_at = trio.current_time() + service.idle_timeout
        service._alarm_clock.set_alarm(self._idle_at, self)
        self._post(EventType.UPDATED, state, must_deliver=terminal)

    def _post(self, type: EventType, payload: Message, *, must_deliver: bool) -> None:
        """Publish an event now if nothing of this message is still waiting, else queue it.

        ``payload`` is the subscribers' own: callers pass a fresh ``latest``.
        """
        broker = self._service.broker
        if not broker.subscriber_count:
            return  # nobody listens
        if not self._outbox:
            if not must_deliver:
                broker.publish(type, payload)
                return
            pending = broker.offer_must_deliver(type, payload)
            if pending is None:
                return
            outgoing: _Outgoing = pending
        else:
            outgoing = (type, payload, must_deliver)
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(outgoing)
        self._wake()

    def _wake(self) -> None:
        if self._parked:
            self._parked = False
            assert self._task is not None
            trio.lowlevel.reschedule(self._task)

    def on_alarm(self) -> None:
        """The alarm clock's call, from its task: do what is due.

        A window's write with nothing else to do is done right here, in the clock's
        task: waking the actor would cost a task switch per write (about 6 µs of CPU
        against 0.4 µs, see benchmarks/RESULTS.md). Anything else (a held lock to wait
        out, requests, events to deliver, retirement) wakes the actor. An actor that is
        not parked checks its deadlines itself when it next loops.
        """
        if not self._parked:
            return
        now = trio.current_time()
        if now < self._wake_at():
            return
        if self.dirty and not self._mailbox and not self._outbox:
            try:
                self.commit()
            except DatabaseBusy:
                pass  # the actor waits it out on Trio time
            except Exception as exc:
                self._failed(exc)  # retried at its new deadline, as the actor would
                return
            else:
                return
        self._wake()

    async def _park(self) -> None:
        """Wait for _wake(): a request, an event to publish, or a due alarm."""

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._parked = False
            return trio.lowlevel.Abort.SUCCEEDED

        self._parked = True
        await trio.lowlevel.wait_task_rescheduled(abort)

    # -- the task --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._task = trio.lowlevel.current_task()
        self._service._alarm_clock.set_alarm(self._idle_at, self)
        task_status.started()
        error: Exception | None = None
        cancelled = False
        try:
            await self._loop()
        except Exception as exc:
            # A bug here must not take the service's nursery (and every other
            # message) down with it: log, try to save the state, answer the waiters.
            logger.exception("actor of message %s failed", self.id)
            error = exc
            try:
                self.write_now()
            except Exception:
                logger.exception("could not save the state of message %s", self.id)
        except BaseException:
            # Cancelled, or KeyboardInterrupt raised in this task: either way the
            # service is ending.
            cancelled = True
            raise
        finally:
            # The service is ending: stay findable, so that its final flush writes
            # what is still buffered here.
            if not (cancelled and self.dirty):
                self._service._forget(self)
            self._finished = True
            self._answer_leftovers(error)

    def _answer_leftovers(self, error: Exception | None) -> None:
        """Answer requests still queued, so that no caller waits on a finished actor."""
        request = self._in_flight
        if request is not None and not request.done.is_set():
            # Cut short (the service is ending): its caller may be in another nursery,
            # which nothing else would wake.
            request.reply(error or ServiceClosed("the message service has closed"))
        while self._mailbox:
            request = self._mailbox.popleft()
            if self.deleted:
                # Nothing is left to write; a second delete finds no row.
                missing = MessageNotFound(f"message {self.id!r} was deleted")
                request.reply(missing if request.kind is RequestKind.DELETE else None)
            elif error is not None:
                request.reply(error)
            else:
                request.reply(ServiceClosed("the message service has closed"))

    async def _loop(self) -> None:
        while True:
            await self._drain_outbox()
            request = self._next_request()
            if request is None and not self._outbox and trio.current_time() < self._wake_at():
                # Sleep until the window's deadline (or, clean, until retirement): the
                # alarm clock, request() and _post() wake it.
                await self._park()
                request = self._next_request()
            self._in_flight = request
            if request is None:
                if self.dirty:
                    if trio.current_time() >= self._deadline:
                        await self._write(None)
                elif trio.current_time() >= self._idle_at and not self.busy and not self._outbox:
                    return  # idle: retire; the next update starts a new actor
            elif request.kind is RequestKind.DELETE:
                await self._delete(request)
            else:
                await self._write(request)
            if self.deleted:
                await self._drain_outbox()  # ``deleted`` goes out last
                return

    def _next_request(self) -> Request | None:
        mailbox = self._mailbox
        return mailbox.popleft() if mailbox else None

    def _wake_at(self) -> float:
        return self._deadline if self.dirty else self._idle_at

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        self._service._alarm_clock.set_alarm(deadline, self)

    async def _drain_outbox(self) -> None:
        """Publish queued events in order; a must-deliver one may wait for room."""
        outbox = self._outbox
        broker = self._service.broker
        while outbox:
            outgoing = outbox[0]
            if isinstance(outgoing, PendingDelivery):
                await broker.finish_delivery(outgoing)
            else:
                type, payload, must_deliver = outgoing
                if not must_deliver:
                    broker.publish(type, payload)
                else:
                    pending = broker.offer_must_deliver(type, payload)
                    if pending is not None:
                        await broker.finish_delivery(pending)
            outbox.popleft()

    # -- writing -----------------------------------------------------------------------

    async def _write(self, request: Request | None) -> None:
        """Write the pending state (if any) and answer ``request``.

        While another connection holds the lock, wait on Trio time (the connection's
        own busy handler would block the whole event loop), up to ``busy_timeout``.
        """
        error: Exception | None = None
        try:
            await wait_out_busy(self._service, self.commit)
        except Exception as exc:
            self._failed(exc)
            error = exc
        if request is not None:
            request.reply(error)

    def _failed(self, exc: Exception) -> None:
        """Keep the state buffered and try again later, without any further call."""
        if isinstance(exc, MessageNotFound):
            # The row went away behind our back (another connection deleted it):
            # nothing can ever be written for this id again.
            logger.error("message %s no longer exists; dropping its buffered state", self.id)
            self._drop()
            return
        service = self._service
        service._failed_writes += 1
        delay = _RETRY_BACKOFF[min(self._failures, len(_RETRY_BACKOFF) - 1)]
        self._failures += 1
        self._set_deadline(trio.current_time() + delay)
        logger.warning(
            "write of message %s failed (%s); kept buffered, retrying in %.2f s",
            self.id,
            exc,
            delay,
        )

    def write_now(self) -> None:
        """Write the pending state synchronously (the final flush at shutdown).

        Raises the storage error, leaving the state buffered. Events still queued are
        offered once, without waiting: the subscriptions end right after.
        """
        self.commit()
        outbox = self._outbox
        while outbox:
            outgoing = outbox.popleft()
            if isinstance(outgoing, PendingDelivery):
                continue  # the subscribers with room have it already
            type, payload, _ = outgoing
            self._service.broker.publish(type, payload)

    # -- deleting ------------------------------------------------------------------------

    async def _delete(self, request: Request) -> None:
        service = self._service
        try:
            await wait_out_busy(service, lambda: service.db.delete_message(self.id))
        except Exception as exc:
            request.reply(exc)
            return
        state = self.latest
        self._drop()
        request.reply()
        # Queued behind any event of this message still going out, so it comes last.
        self._post(EventType.DELETED, state, must_deliver=True)

    def _drop(self) -> None:
        """Forget the buffered state so that nothing is ever written back over the row."""
        if self.dirty:
            self.dirty = False
            self._service._dirty_count -= 1
        self.deleted = True
        self._service._forget(self)


_Outgoing: TypeAlias = "PendingDelivery | tuple[EventType, Message, bool]"
