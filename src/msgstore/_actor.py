"""The actor: one Trio task per live message id, the only code that writes its row.

Who writes a message, and when? Its actor, in its own task, always:

* the INSERT of ``create`` (its first letter),
* a window's write, when the alarm clock sends it the window's ``StateBox`` at the
  deadline: a journal row holding only what changed since the last write
  (``_journal.py``), or a *fold* (the whole row) when that is not a plain append, when
  the message's journal outgrew its row, or for the first write of the actor,
* a terminal write, when a caller's request finds the state terminal against the last
  state the actor wrote (``_structure.is_terminal``),
* a flush (``flush``, ``flush_all``; a fold), a write per update with
  ``debounce <= 0``, the DELETE of ``delete``, a fold before it retires,
* a retry after a failed write (its own ``TICK``, on a backoff),
* its last words: when the service ends (or is cancelled) the actor folds what it
  still holds, shielded, before its task ends.

Terminal writes are folds too, so crush (or any reader of the plain row) sees every
terminal state whole, and between folds a row lags the newest window by at most the
journal bound (``FOLD_FLOOR`` or the row's own size, whichever is larger).

Callers reach it only through its ``Mailbox`` (``_mailbox.py``): letters on a Trio
memory channel. The actor owns the buffer (the newest state it has opened, the
structure of the last state it wrote, the window's deadline) and nothing else touches
it. Each write hands its event to the change feed (``_feed.py``), which numbers and
queues it without waiting, so events never delay a write. The actor's task runs under ``supervise``
(``_supervisor.py``): an unexpected error restarts it with the buffer intact.

SQLite calls run inline on the Trio thread (see STYLE: threads add latency here, and
the autojump clock would fire deadlines around them early).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from . import _journal
from ._alarm_clock import AlarmClock
from ._broker import EventType
from ._busy import wait_out_busy
from ._content import Message, Part
from ._errors import ActorFailed, MessageNotFound, ServiceClosed, StorageError
from ._feed import ChangeFeed
from ._mailbox import TICK, Letter, Mailbox, Request, RequestKind, StateBox
from ._reply import Reply
from ._statistics import Counters
from ._structure import Structure, is_terminal, structure_of
from ._supervisor import RestartPolicy, Supervisor

logger = logging.getLogger("msgstore")

T = TypeVar("T")

# Waits after a failed write before the next try, on Trio's clock.
RETRY_BACKOFF: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
#: A message's journal is folded into its row once it holds more bytes than the row
#: (so the bytes written stay linear in the reply's length), or than this for a small
#: row (so a short reply is written as a journal until its terminal fold).
FOLD_FLOOR: Final = 16_384


class MessageStore(Protocol):
    """What an actor needs of storage: the whole boundary between the two.

    ``Database`` implements it for SQLite; another backend implements these four and
    the actor does not change. Each call is synchronous and short; while another
    connection holds the lock it raises ``DatabaseBusy`` at once (the actor waits on
    Trio time); any other failure is a ``StorageError``.
    """

    def insert_message(
        self,
        *,
        session_id: str,
        role: Any,
        parts: list[Part],
        model: str,
        provider: str,
        is_summary_message: bool,
        id: str,
    ) -> Message: ...

    def update_message(self, id: str, parts: list[Part]) -> int:
        """Store ``parts`` (and the finish time) as the whole row, folding the message's
        journal; ``MessageNotFound`` if no row. Returns the row's base
        (``_journal.base_of``)."""

    def append_journal(self, id: str, base: int, delta: str) -> int:
        """Record one window's delta on top of the row named by ``base``; its seq."""

    def delete_message(self, id: str) -> None:
        """``MessageNotFound`` if no row."""


@attrs.define(eq=False)
class ActorContext:
    """What all the actors of one service share: their whole view of the service."""

    store: MessageStore
    feed: ChangeFeed
    clock: AlarmClock
    counters: Counters
    debounce: float
    idle_timeout: float
    busy_timeout: float
    shutdown_timeout: float
    restart_policy: RestartPolicy
    #: The service forgets a mailbox (its actor has ended).
    forget: Callable[[Mailbox], None]
    #: A KeyboardInterrupt (or the like) reached an actor: the service must end.
    interrupt: Callable[[BaseException], None]
    #: An actor was stopped, or could not write its last state: report at exit.
    report: Callable[[str, BaseException, bool], None]
    #: When the actors' last words must be done (set by the first that needs it).
    stop_deadline: float = math.inf

    def last_words_deadline(self) -> float:
        if self.stop_deadline == math.inf:
            self.stop_deadline = trio.current_time() + self.shutdown_timeout
        return self.stop_deadline


_EMPTY: Final = Structure(False, (), False)  # a message before its row exists


def _waiting(receive: trio.MemoryReceiveChannel[Letter]) -> int:
    return receive.statistics().current_buffer_used


class _Withdrawn(Exception):
    """The caller gave up before the actor acted (raised inside a write attempt)."""


class MessageActor:
    """One message's owner; see the module docstring. Made by the service."""

    # Slots: one of these lives per streaming message.
    __slots__ = (
        "_base",
        "_ctx",
        "_deadline",
        "_dirty",
        "_ended",
        "_failures",
        "_idle_at",
        "_in_hand",
        "_journal_bytes",
        "_parts",
        "_receive",
        "_row_bytes",
        "_structure",
        "_written",
        "_written_parts",
        "mailbox",
    )

    def __init__(
        self,
        ctx: ActorContext,
        mailbox: Mailbox,
        receive: trio.MemoryReceiveChannel[Letter],
        stored: Message | None,
    ) -> None:
        self._ctx = ctx
        self.mailbox = mailbox
        self._receive = receive
        # The buffer. ``stored`` is the row as the file holds it (None before create):
        # its structure is the baseline for terminal changes.
        self._parts: list[Part] = [] if stored is None else stored.parts
        self._structure = _EMPTY if stored is None else structure_of(stored)
        self._written: Structure | None = None if stored is None else self._structure
        self._written_parts: list[Part] = self._parts  # what the file holds
        # The row the journal builds on (None: the next write folds), its size, and
        # the journal's bytes since.
        self._base: int | None = None
        self._row_bytes = 0
        self._journal_bytes = 0
        self._dirty = False
        self._deadline = math.inf  # the open window's end
        self._failures = 0  # failed writes in a row (for the backoff)
        self._idle_at = trio.current_time() + ctx.idle_timeout
        self._in_hand: Request | None = None  # kept across a restart
        self._ended = False

    # -- the task ------------------------------------------------------------------------

    async def serve(self) -> None:
        """The actor's task: its life, restarted after failures, then its last words.

        Supervision one-for-one (``_supervisor.py``): an unexpected error runs the
        body again with the buffer intact, until the restart policy says stop.
        """
        ctx = self._ctx
        supervisor: Supervisor | None = None  # made on the first failure
        try:
            while True:
                try:
                    await self._live()
                    return
                except trio.Cancelled:
                    raise
                except Exception as error:
                    if supervisor is None:
                        supervisor = Supervisor(ctx.restart_policy)
                    if not supervisor.may_restart():
                        self._stopped(error)
                        return
                    self._restarted(error, supervisor.recent_failures)
                except BaseException as exc:  # KeyboardInterrupt: the program's, not ours
                    ctx.interrupt(exc)
                # Between lives: a body that fails at once must not spin the loop.
                await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            # The service is ending (or was cancelled): write what is still here.
            await self._last_words()
            raise

    async def _live(self) -> None:
        """One life: handle letters until retired. A restart resumes where it failed."""
        receive = self._receive
        in_hand = self._in_hand
        if in_hand is not None:
            await self._handle(in_hand)
            del in_hand
        await self._due()
        while not self._ended:
            letter: Letter | None = await receive.receive()
            while letter is not None:
                await self._handle(letter)
                if self._ended:
                    return
                # Take what else has arrived before looking at the clock. (Checked, not
                # tried: a WouldBlock raised here would keep a frame object alive per
                # actor.)
                letter = receive.receive_nowait() if _waiting(receive) else None
            await self._due()

    async def _handle(self, letter: Letter) -> None:
        if letter is TICK:
            return  # _due() runs after every batch of letters
        if type(letter) is StateBox:
            self._open(letter)  # sent at its window's deadline: _due() writes it
            return
        assert isinstance(letter, Request)
        self._in_hand = letter
        if letter.box is not None:
            self._open(letter.box)
        kind = letter.kind
        if kind is RequestKind.WRITE_IF_TERMINAL:
            if is_terminal(self._written, self._structure):
                await self._write(letter.reply)
            else:
                letter.reply.set(None)
        elif kind is RequestKind.WRITE:
            await self._write(letter.reply)
        elif kind is RequestKind.FLUSH:
            await self._write(letter.reply, fold=True)
        elif kind is RequestKind.DELETE:
            await self._delete(letter.reply)
        else:
            await self._create(letter.reply, letter.payload)
        self._in_hand = None

    async def _due(self) -> None:
        """After each batch of letters: write a window that is due, retire when idle."""
        if self._ended:
            return
        now = trio.current_time()
        if self._dirty:
            if now >= self._deadline:
                await self._write(None)
            if self._dirty:
                self.mailbox.wake_actor_at(self._deadline)
                return
        if now >= self._idle_at:
            if (
                not self.mailbox.has_unsent_state
                and not self._receive.statistics().current_buffer_used
            ):
                if self._journal_bytes:
                    await self._write(None, fold=True)  # leave the row whole
                    if self._journal_bytes:
                        self.mailbox.wake_actor_at(self._deadline)  # retrying
                        return
                self._end(None)  # idle: retire; the next update starts a new actor
        else:
            self.mailbox.wake_actor_at(self._idle_at)

    # -- the buffer ----------------------------------------------------------------------

    def _open(self, box: StateBox) -> None:
        if box.opened:
            return
        box.opened = True
        self.mailbox.opened(box)
        self._parts = box.parts
        self._structure = box.structure
        if not self._dirty:
            # The window opened with the box's first state; later states in the same
            # box do not move it, so a steady stream is written every window.
            self._dirty = True
            self._deadline = box.deadline
            self.mailbox.unwritten = True

    # -- writing -------------------------------------------------------------------------

    def _commit(self, reply: Reply[Any] | None, fold: bool = False) -> None:
        """Write the buffered state now (no checkpoint inside: all or nothing).

        A journal row when the change since the last write is a plain append and
        nothing asks for a fold (``fold``: a flush or the last words; a terminal
        change; the actor's first write; a journal grown past its row).
        """
        if reply is not None and reply.withdrawn:
            raise _Withdrawn
        if not self._dirty and not (fold and self._journal_bytes):
            return
        ctx = self._ctx
        parts = self._parts
        structure = self._structure
        terminal = is_terminal(self._written, structure)
        store = ctx.store
        id = self.mailbox.id
        delta = None
        base = self._base
        if not (
            fold
            or terminal
            or base is None
            or self._journal_bytes > max(self._row_bytes, FOLD_FLOOR)
        ):
            delta = _journal.delta(self._written_parts, parts)
        if delta is None or base is None:
            base = store.update_message(id, parts)
            self._base = base
            self._row_bytes = base >> 32
            self._journal_bytes = 0
            seq = None
            ctx.counters.folds += 1
        else:
            seq = store.append_journal(id, base, delta)
            self._journal_bytes += len(delta)
        self._written_parts = parts
        self._written = structure
        self._dirty = False
        self._deadline = math.inf
        self._failures = 0
        self._idle_at = trio.current_time() + ctx.idle_timeout
        mailbox = self.mailbox
        mailbox.written()
        ctx.counters.writes += 1
        feed = ctx.feed
        if feed.listening:
            # ``parts`` is the service's private list: shared with the subscribers.
            feed.committed(EventType.UPDATED, mailbox.base.with_parts(parts), "message", id, seq)
        else:
            feed.committed_unheard()

    async def _write(self, reply: Reply[Any] | None, fold: bool = False) -> None:
        """Write (waiting out another connection's lock), then answer ``reply``."""
        try:
            await self._waiting_out_busy(lambda: self._commit(reply, fold))
        except _Withdrawn:
            return  # the state stays buffered for its window
        except MessageNotFound as error:
            # The row went away behind our back (another connection deleted it):
            # nothing can ever be written for this id again.
            logger.error("message %s no longer exists; dropping its buffered state", self.id)
            if reply is not None:
                reply.fail(error)
            self._end(error)
            return
        except StorageError as error:
            self._write_failed(error)
            if reply is not None:
                reply.fail(error)
            return
        if reply is not None:
            reply.set(None)

    async def _waiting_out_busy(self, write: Callable[[], T]) -> T:
        """Run one write, waiting on Trio time while another connection holds the lock."""
        ctx = self._ctx
        return await wait_out_busy(
            write, busy_timeout=ctx.busy_timeout, on_wait=ctx.counters.busy_wait
        )

    def _count_failure(self) -> float:
        """Count a failed write; how long to wait before the next try (the backoff)."""
        self._ctx.counters.write_errors += 1
        delay = RETRY_BACKOFF[min(self._failures, len(RETRY_BACKOFF) - 1)]
        self._failures += 1
        return delay

    def _write_failed(self, error: StorageError) -> None:
        """Keep the state buffered and try again after a backoff, with no further call."""
        delay = self._count_failure()
        self._deadline = trio.current_time() + delay
        self.mailbox.window_moved(self._deadline)
        self.mailbox.wake_actor_at(self._deadline)
        logger.warning(
            "write of message %s failed (%s); kept buffered, retrying in %.2f s",
            self.id,
            error,
            delay,
        )

    # -- create and delete ---------------------------------------------------------------

    async def _create(self, reply: Reply[Any], fields: dict[str, Any]) -> None:
        ctx = self._ctx

        def insert() -> Message:
            if reply.withdrawn:
                raise _Withdrawn
            return ctx.store.insert_message(id=self.id, **fields)

        try:
            message = await self._waiting_out_busy(insert)
        except _Withdrawn:
            self._end(None)  # no row: a later update of this id finds none
            return
        except Exception as error:  # SessionNotFound, a storage error, a bad field
            reply.fail(error)
            self._end(None)
            return
        # The caller gets ``message`` and may mutate its parts list: keep our own.
        reply.set(message)
        feed = ctx.feed
        if feed.listening:
            feed.committed(EventType.CREATED, message.clone(), "message", self.id)
        else:
            feed.committed_unheard()
        # Done: a created message holds nothing unwritten. Most are never updated (user
        # and tool messages); the first update of one that streams starts a new actor,
        # which reads the row as its baseline.
        self._end(None)

    async def _delete(self, reply: Reply[Any]) -> None:
        ctx = self._ctx

        def delete() -> None:
            if reply.withdrawn:
                raise _Withdrawn
            ctx.store.delete_message(self.id)

        try:
            await self._waiting_out_busy(delete)
        except _Withdrawn:
            return
        except MessageNotFound as error:
            reply.fail(error)
            self._end(error)
            return
        except StorageError as error:
            reply.fail(error)
            return
        state = self.mailbox.message()
        self._dirty = False  # nothing is ever written back over the deleted row
        self._journal_bytes = 0
        self.mailbox.deleted = True
        reply.set(None)
        feed = ctx.feed
        if feed.listening:
            feed.committed(EventType.DELETED, state, "message", self.id)
        else:
            feed.committed_unheard()
        self._end(MessageNotFound(f"message {self.id!r} was deleted"))

    # -- ending --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.mailbox.id

    def _end(self, reason: BaseException | None) -> None:
        """Leave for good: the service forgets the mailbox, and queued requests are
        answered (``reason``, or for a clean retirement: nothing was pending)."""
        if self._ended:
            return
        self._ended = True
        mailbox = self.mailbox
        mailbox.closed_by = reason
        mailbox.unwritten = False
        mailbox.unwritten_since = math.inf
        self._ctx.forget(mailbox)
        mailbox.close()
        in_hand, self._in_hand = self._in_hand, None
        if in_hand is not None:
            self._answer_leftover(in_hand, reason)
        while True:
            try:
                letter = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(letter, Request):
                self._answer_leftover(letter, reason)
        self._receive.close()

    def _answer_leftover(self, request: Request, reason: BaseException | None) -> None:
        if request.kind is RequestKind.FLUSH and (reason is None or self.mailbox.deleted):
            request.reply.set(None)  # nothing is left to write
        elif reason is not None:
            request.reply.fail(reason)
        elif request.kind is RequestKind.CREATE or request.kind is RequestKind.DELETE:
            request.reply.fail(ServiceClosed("the message service has closed"))
        else:
            request.reply.set(None)  # nothing was left unwritten

    def _restarted(self, error: Exception, count: int) -> None:
        ctx = self._ctx
        ctx.counters.restarts += 1
        policy = ctx.restart_policy
        logger.error(
            "actor of message %s failed; restarting it with its buffer (%d of %d within %g s)",
            self.id,
            count,
            policy.max_restarts,
            policy.within,
            exc_info=error,
        )

    def _stopped(self, error: Exception) -> None:
        ctx = self._ctx
        ctx.counters.stopped_actors += 1
        policy = ctx.restart_policy
        failure = ActorFailed(
            f"the actor of message {self.id!r} failed more than {policy.max_restarts} times "
            f"within {policy.within:g} s and was stopped; its unwritten state is lost: {error!r}",
            message_id=self.id,
        )
        failure.__cause__ = error
        logger.error("%s", failure, exc_info=error)
        had_waiters = self._in_hand is not None or bool(
            self._receive.statistics().current_buffer_used
        )
        unwritten = self._dirty or self.mailbox.has_unsent_state
        self._end(failure)
        ctx.report(self.id, failure, not had_waiters or unwritten)

    async def _last_words(self) -> None:
        """Write what this actor still holds as the service ends; answer every caller.

        Repeated until nothing new has arrived: a caller's shielded clean-up (a
        ``canceled`` finish after its turn was cancelled) may still hand over a state
        while this runs, and the service accepts it until its shutdown begins.
        """
        if self._ended:
            return
        ctx = self._ctx
        closed = ServiceClosed("the message service has closed")
        errors: list[BaseException] = []
        with trio.CancelScope(shield=True, deadline=ctx.last_words_deadline()):
            while True:
                requests = self._take_everything()
                try:
                    await self._write_until_clean(errors)
                finally:
                    # Answered even when the deadline cuts the writing short.
                    error = errors[-1] if errors else closed
                    for request in requests:
                        kind = request.kind
                        if kind is RequestKind.CREATE or kind is RequestKind.DELETE:
                            request.reply.fail(closed)
                        elif self._dirty:
                            request.reply.fail(error)
                        else:
                            request.reply.set(None)
                if self._dirty or not (self.mailbox.holds_unwritten or _waiting(self._receive)):
                    break  # written all there is, or could not write: nothing more to do
        if self._dirty or self.mailbox.holds_unwritten:
            # The last storage error says why; with none, the time ran out (a lock).
            why = errors[-1] if errors else None
            if why is None:
                why = ServiceClosed(f"shutdown timed out after {ctx.shutdown_timeout:g} s")
            logger.error("final write of message %s failed: %s", self.id, why)
            ctx.report(self.id, why, True)
        self._end(closed)

    async def _write_until_clean(self, errors: list[BaseException]) -> None:
        """Write, retrying storage errors with backoff; a bug or a vanished row ends it."""
        while self._dirty or self._journal_bytes:
            try:
                await self._waiting_out_busy(lambda: self._commit(None, fold=True))
            except MessageNotFound as exc:
                errors.append(exc)
                self._dirty = False
                self._journal_bytes = 0
            except StorageError as exc:
                errors[:] = [exc]  # the latest is the one to report
                await trio.sleep(self._count_failure())
            except Exception as exc:  # a bug: no restart now, report it
                errors.append(exc)
                return

    def _take_everything(self) -> list[Request]:
        """Open every state that has arrived or waits in the mailbox; the requests."""
        requests: list[Request] = [] if self._in_hand is None else [self._in_hand]
        self._in_hand = None
        while _waiting(self._receive):
            letter = self._receive.receive_nowait()
            if type(letter) is StateBox:
                self._open(letter)
            elif isinstance(letter, Request):
                if letter.box is not None:
                    self._open(letter.box)
                requests.append(letter)
        box = self.mailbox.take_unsent_state()
        if box is not None:
            self._open(box)
        return requests
