"""The message service: crush's ``Service`` on Trio, one actor task per message.

``open_message_service`` owns a nursery with the actors, the alarm clock and a broker,
and the change feed that numbers and publishes every committed change (``_feed.py``).
The service itself never writes a message: it checks what callers hand it, routes it
to the message's mailbox (starting an actor when there is none) and, when the caller
needs the write done, waits for the actor's reply. Reads see the newest accepted state,
buffered or written. Who writes, and when, is in ``_actor.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from ._actor import ActorContext, MessageActor
from ._alarm_clock import AlarmClock
from ._broker import MAX_PENDING, Broker, Subscription, open_broker
from ._busy import wait_out_busy
from ._content import Finish, FinishReason, Message, Part, Role, check_parts
from ._errors import (
    ActorFailed,
    CorruptRecord,
    InvalidPart,
    InvalidUpdate,
    MessageNotFound,
    ServiceClosed,
    StorageError,
    UnwrittenMessages,
)
from ._feed import ChangeFeed
from ._lease import CLAIM_SQL, Lease, OwnerCheck
from ._mailbox import LETTERS, ActorGone, Letter, Mailbox, RequestKind
from ._nursery import open_owned_nursery
from ._repair import repair as repair_file
from ._reply import Reply
from ._sessions import SessionService
from ._statistics import Counters, ServiceStatistics
from ._storage import Database
from ._structure import Structure, same_structure, structure_of
from ._supervisor import RestartPolicy

logger = logging.getLogger("msgstore")

_ACTOR_TASK_NAME = "msgstore message actor"


class MessageService:
    """Created by ``open_message_service`` (or ``run_message_service``), not directly."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        feed: ChangeFeed,
        nursery: trio.Nursery,
        *,
        debounce: float,
        idle_timeout: float,
        busy_timeout: float,
        shutdown_timeout: float,
        restart_policy: RestartPolicy,
    ) -> None:
        self.db = db
        self.broker = broker
        self.feed = feed
        self.debounce = debounce
        self.idle_timeout = idle_timeout
        self.busy_timeout = busy_timeout
        self.shutdown_timeout = shutdown_timeout
        self._nursery = nursery
        self._mailboxes: dict[str, Mailbox] = {}
        self._clock = AlarmClock()
        self._counters = Counters()
        self._closed = False
        self._body: trio.CancelScope | None = None  # the caller's block
        self._interrupt: BaseException | None = None
        self._failures: dict[str, BaseException] = {}  # to raise on the way out
        self._actors = ActorContext(
            store=db,
            feed=feed,
            clock=self._clock,
            counters=self._counters,
            debounce=debounce,
            idle_timeout=idle_timeout,
            busy_timeout=busy_timeout,
            shutdown_timeout=shutdown_timeout,
            restart_policy=restart_policy,
            forget=self._forget,
            interrupt=self._interrupted,
            report=self._report,
        )
        #: Sessions (crush's ``session.Service``), publishing on this service's feed.
        self.sessions = SessionService(
            db,
            feed=feed,
            busy_timeout=busy_timeout,
            delete_messages=self.delete_session_messages,
            on_busy_wait=self._counters.busy_wait,
        )

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        session_id: str,
        role: Role | str,
        parts: Iterable[Part] = (),
        *,
        model: str = "",
        provider: str = "",
        is_summary_message: bool = False,
    ) -> Message:
        """Write a new message and publish ``created``; return it as stored.

        A non-assistant message gets a ``finish`` part with reason ``stop`` (time 0).
        A cancel point before the row is written, none after: ``Cancelled`` means no
        row was made, a return means it was.
        """
        self._check_open()
        try:
            role = Role(role)
        except ValueError:
            raise InvalidUpdate(f"unknown role {role!r}") from None
        try:
            checked = check_parts(parts)
            # Validates every field before anything is written.
            base = Message(
                id=str(uuid.uuid4()),
                session_id=session_id,
                role=role,
                model=model,
                provider=provider,
                is_summary_message=is_summary_message,
            )
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        if role is not Role.ASSISTANT:
            checked.append(Finish(reason=FinishReason.STOP, time=0))
        fields = {
            "session_id": session_id,
            "role": role,
            "parts": checked,
            "model": model,
            "provider": provider,
            "is_summary_message": is_summary_message,
        }
        mailbox = self._start_actor(base, None)
        try:
            message: Message = await mailbox.request(RequestKind.CREATE, fields)
        except InvalidPart as exc:  # a field SQLite would store but nobody could read
            raise InvalidUpdate(str(exc)) from exc
        return message

    async def update(self, message: Message) -> None:
        """Accept the new state of a message.

        It is written no later than ``debounce`` after the first unwritten update, and
        before this returns when it is terminal (finished, a tool call added or
        finished, reasoning ended) or when ``debounce <= 0``. The caller may go on
        mutating ``message``: the service keeps its own copy of the parts.
        """
        if self._closed:
            self._check_open()
        if not isinstance(message, Message):
            raise InvalidUpdate(f"update() needs a Message, got {type(message).__name__}")
        try:
            # The service's own copy. Only parts are written, so only they are kept.
            parts = list(message.parts)
        except TypeError:  # ``parts`` (which has no validator) set to a non-iterable
            raise InvalidUpdate(
                f"message {message.id!r} parts must be a list of parts, "
                f"got {type(message.parts).__name__}"
            ) from None
        mailbox = self._mailboxes.get(message.id)  # a Message's id is a str
        if mailbox is None:
            mailbox = self._mailbox_for(message)
        elif message.session_id != mailbox.base.session_id or message.role != mailbox.base.role:
            raise _not_this_message(message, mailbox.base)
        previous = mailbox.latest_structure
        try:
            if same_structure(mailbox.latest, parts):
                structure = previous
            else:
                structure = structure_of(message, parts)
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        self._counters.updates += 1
        if self.debounce <= 0:
            mailbox.post(parts, structure, arm=False)  # the request carries it
            kind = RequestKind.WRITE
        else:
            mailbox.post(parts, structure)
            if structure is previous and not structure.finished and not mailbox.unconfirmed:
                # Per token: the structure is unchanged, so nothing terminal can have
                # happened. A schedule point, and the actor is not woken.
                await trio.lowlevel.checkpoint()
                return
            kind = RequestKind.WRITE_IF_TERMINAL
        mailbox.unconfirmed = True
        await mailbox.request(kind)
        mailbox.unconfirmed = False

    async def flush(self, message_id: str) -> None:
        """Return once everything accepted for ``message_id`` before the call is written.

        That includes a write already under way. A no-op when nothing is pending.
        """
        _check_id(message_id)
        mailbox = self._mailboxes.get(message_id)
        if mailbox is None:
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(ActorGone):
            await mailbox.request(RequestKind.FLUSH)

    async def flush_all(self) -> None:
        """``flush`` for every message; raises the first failure after trying them all."""
        errors: list[Exception] = []
        replies: list[Reply[Any]] = []
        for mailbox in builtins.list(self._mailboxes.values()):
            try:
                reply = mailbox.send_request(RequestKind.FLUSH)
                if reply is None:  # its channel is full: wait for room
                    await mailbox.request(RequestKind.FLUSH)
                else:
                    replies.append(reply)
            except ActorGone:
                pass
            except Exception as exc:
                errors.append(exc)
        for reply in replies:
            try:
                await reply.wait()
            except ActorGone:
                pass
            except Exception as exc:
                errors.append(exc)
        if not replies:
            await trio.lowlevel.checkpoint()
        for extra in errors[1:]:
            logger.error("flush_all: another write failed too: %s", extra)
        if errors:
            raise errors[0]

    async def delete(self, message_id: str) -> None:
        """Delete the row, drop any buffered state, publish ``deleted``."""
        self._check_open()
        _check_id(message_id)
        while True:
            mailbox = self._mailboxes.get(message_id)
            if mailbox is None:
                try:
                    row = self.db.stored_message(message_id)
                except CorruptRecord:
                    # Its parts cannot be read, but the row can still go.
                    row = self.db.stored_message_header(message_id)
                mailbox = self._start_actor(row, row)
            try:
                await mailbox.request(RequestKind.DELETE)
                return
            except ActorGone:
                continue  # it retired just now: start another

    async def delete_session_messages(self, session_id: str) -> None:
        """Delete each message of a session, one by one (each publishes ``deleted``)."""
        self._check_open()
        for message_id in self.db.message_ids(session_id):
            # Deleted meanwhile by another task: the goal is met.
            with contextlib.suppress(MessageNotFound):
                await self.delete(message_id)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, message_id: str) -> Message:
        """The newest state accepted for the message, buffered or written."""
        await trio.lowlevel.checkpoint()
        _check_id(message_id)
        mailbox = self._mailboxes.get(message_id)
        if mailbox is not None and not mailbox.deleted:
            return mailbox.message()
        return self.db.stored_message(message_id)

    async def list(self, session_id: str) -> builtins.list[Message]:
        """The session's messages, oldest first, each in its newest accepted state."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.stored_messages(session_id))

    async def list_user_messages(self, session_id: str) -> builtins.list[Message]:
        """The session's user messages, newest first."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.stored_user_messages(session_id))

    async def list_all_user_messages(self) -> builtins.list[Message]:
        """Every user message of every session, newest first."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.stored_all_user_messages())

    async def get_last_assistant_message(self, session_id: str) -> Message | None:
        """The session's newest assistant message that is not a summary, or None."""
        await trio.lowlevel.checkpoint()
        found = self.db.stored_last_assistant_message(session_id)
        return None if found is None else self._overlay([found])[0]

    def _overlay(self, rows: Sequence[Message]) -> builtins.list[Message]:
        mailboxes = self._mailboxes
        out = []
        for row in rows:
            mailbox = mailboxes.get(row.id)
            out.append(row if mailbox is None or mailbox.deleted else mailbox.message())
        return out

    # -- events and statistics -------------------------------------------------------

    def subscribe(
        self, after: int | None = None, *, max_pending: int | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """``async with svc.subscribe() as events: async for event in events: ...``

        Live from now with ``after=None``. With ``after=SEQ`` (an ``Event.seq`` seen
        earlier, or ``svc.last_seq`` read before loading a snapshot), first the current
        state of every message and session changed after ``SEQ``, one event each in
        the order of its newest change, then live, with no gap and nothing twice; if the
        log no longer reaches back to ``SEQ``, the first receive raises
        ``ReloadRequired``. The queue holds one pending event per item (see
        ``_broker``); ``max_pending`` bounds the items (default: the service's).
        """
        return self.broker.subscribe(after, max_pending=max_pending)

    @property
    def last_seq(self) -> int:
        """The newest change number in the file: resume with it after a reload."""
        return self.feed.last_seq

    def statistics(self) -> ServiceStatistics:
        """A snapshot of the service's state and counters (see ``ServiceStatistics``)."""
        broker = self.broker
        counters = self._counters
        unwritten = [m for m in self._mailboxes.values() if m.holds_unwritten]
        return ServiceStatistics(
            live_actors=len(self._mailboxes),
            buffered=len(unwritten),
            oldest_unwritten_age=(
                trio.current_time() - min(m.unwritten_since for m in unwritten)
                if unwritten
                else 0.0
            ),
            updates=counters.updates,
            writes=counters.writes,
            write_errors=counters.write_errors,
            restarts=counters.restarts,
            stopped_actors=counters.stopped_actors,
            busy_waits=counters.busy_waits,
            folds=counters.folds,
            conflated=broker.conflated,
            drops=broker.drop_count,
            must_deliver_drops=broker.drop_count,
            reloads=broker.reloads,
            peak_pending=broker.peak_pending,
            last_seq=self.feed.last_seq,
            subscribers=broker.subscriber_count,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- actors --------------------------------------------------------------------------

    def _mailbox_for(self, message: Message) -> Mailbox:
        """Start an actor for a message that has none: the row is read once, which
        proves the id exists and gives the baseline for terminal changes."""
        _check_id(message.id)
        # Only this service's own journal can hold windows of a message it writes (a
        # retiring actor folds, a stopped one leaves its rows): no scan of the table.
        row = self.db.stored_message(message.id, own_journal_only=True)
        if message.session_id != row.session_id or message.role != row.role:
            raise _not_this_message(message, row)
        # Keep the caller's other fields: its strings are shared, not a second copy.
        return self._start_actor(message.with_parts([]), row)

    def _start_actor(self, base: Message, stored: Message | None) -> Mailbox:
        send, receive = trio.open_memory_channel[Letter](LETTERS)
        parts = [] if stored is None else stored.parts
        structure = Structure(False, (), False) if stored is None else structure_of(stored)
        # ``base`` gives the message's other fields; its parts are never read.
        mailbox = Mailbox(base, parts, structure, send, self._clock, self.debounce)
        actor = MessageActor(self._actors, mailbox, receive, stored)
        self._mailboxes[base.id] = mailbox
        # One name for all: a name built per task would cost every live actor 80 bytes.
        self._nursery.start_soon(actor.serve, name=_ACTOR_TASK_NAME)
        return mailbox

    def _forget(self, mailbox: Mailbox) -> None:
        if self._mailboxes.get(mailbox.id) is mailbox:
            del self._mailboxes[mailbox.id]

    def _interrupted(self, exc: BaseException) -> None:
        """A KeyboardInterrupt (or the like) in an actor: end the caller's block."""
        if self._interrupt is None:
            self._interrupt = exc
        if self._body is not None:
            self._body.cancel()

    def _report(self, message_id: str, error: BaseException, must_raise: bool) -> None:
        if must_raise:
            self._failures[message_id] = error

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosed("the message service has closed; open a new one")

    async def _shutdown(self) -> None:
        """Have every actor write what it holds, then stop them (shielded, bounded)."""
        self._closed = True
        with trio.CancelScope(shield=True, deadline=self._actors.last_words_deadline()):
            try:
                await self.flush_all()
            except Exception as exc:
                # The actors' last words try again and report what stays unwritten.
                logger.debug("final flush: %s", exc)
        self._nursery.cancel_scope.cancel()


def _check_id(message_id: object) -> None:
    if type(message_id) is not str:
        raise InvalidUpdate(f"message id must be str, got {type(message_id).__name__}")


def _not_this_message(message: Message, stored: Message) -> InvalidUpdate:
    return InvalidUpdate(
        f"message {message.id!r} belongs to session {stored.session_id!r} with role "
        f"{stored.role.value!r}; the update says session {message.session_id!r}, role "
        f"{Role(message.role).value!r} (those fields are the row's and cannot change)"
    )


@asynccontextmanager
async def open_message_service(
    db: Database,
    *,
    debounce: float = 0.033,
    max_pending: int = MAX_PENDING,
    poll_interval: float | None = None,
    repair: bool = True,
    idle_timeout: float = 1.0,
    busy_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    restart_policy: RestartPolicy | None = None,
) -> AsyncIterator[MessageService]:
    """Run a message service on ``db`` for the duration of the block.

    ``debounce``: the window in seconds (``<= 0`` writes every update at once).
    ``max_pending``: the most items with unread changes a subscriber may leave before
    it must reload. ``poll_interval``: seconds between checks for changes that other
    connections or processes commit to the file, which then reach subscribers as
    events (None, the default, checks never: a poller keeps a mock clock busy).

    Opening adds msgstore's change log, journal and lease tables to the file if it has
    none, and takes a lease: each message this service writes is claimed for it, so
    that ``msgstore.repair`` in any process leaves it alone. Then it folds the journal
    rows that services no longer alive left (no committed window is lost) and, with
    ``repair`` (the default), finishes what they left unfinished
    (``repair(db, only_dead_owners=True)``: messages a dead msgstore claimed; crush's
    own leftovers are for ``msgstore repair``). An actor with
    nothing pending retires after ``idle_timeout``. While another connection holds the
    write lock, writes wait on Trio time up to ``busy_timeout``. ``restart_policy``:
    how often an actor may fail before it is stopped (default: 3 restarts within 5 s).

    Leaving the block has every actor write what it holds (also when cancelled, for
    at most ``shutdown_timeout``) and ends every subscription. An exception raised in
    the block comes out as itself. Then, if messages were left unwritten (their last
    writes failed, or their actor was stopped with nobody told), ``UnwrittenMessages``
    names them; a ``KeyboardInterrupt`` that reached an actor is raised last.
    """
    if not isinstance(debounce, int | float) or math.isnan(debounce):
        raise ValueError(f"debounce must be a number of seconds, got {debounce!r}")
    policy = RestartPolicy() if restart_policy is None else restart_policy
    if poll_interval is not None and not poll_interval > 0:
        raise ValueError(f"poll_interval must be > 0 seconds or None, got {poll_interval!r}")
    async with open_broker(max_pending=max_pending) as broker:
        feed = ChangeFeed(db, broker)
        if poll_interval is not None:
            broker.nursery.start_soon(feed.watch, poll_interval)
        # The connection's own busy handler would sleep on the Trio thread and freeze
        # every task; the actors wait on Trio time instead.
        with db.without_busy_handler():
            lease = await _start(db, repair=repair, busy_timeout=busy_timeout)
            try:
                async with open_owned_nursery() as nursery:
                    service = MessageService(
                        db,
                        broker,
                        feed,
                        nursery,
                        debounce=debounce,
                        idle_timeout=idle_timeout,
                        busy_timeout=busy_timeout,
                        shutdown_timeout=shutdown_timeout,
                        restart_policy=policy,
                    )
                    nursery.start_soon(service._clock.run)
                    try:
                        with trio.CancelScope() as body:
                            service._body = body
                            yield service
                    finally:
                        await service._shutdown()
            finally:
                # Every actor has written its last words: nothing of ours is live.
                await _release(
                    db, lease, busy_timeout=busy_timeout, shutdown_timeout=shutdown_timeout
                )
    # Only reached when the block itself raised nothing.
    if service._interrupt is not None:
        raise service._interrupt
    if service._failures:
        failures = service._failures
        if len(failures) == 1:
            (only,) = failures.values()
            if isinstance(only, ActorFailed):
                raise only
        raise UnwrittenMessages(failures)


async def _start(db: Database, *, repair: bool, busy_timeout: float) -> Lease | None:
    """Before any actor runs: the file's msgstore tables, this service's lease, and
    what dead services left (their journals folded, their messages repaired)."""
    if db.read_only:
        return None  # nothing can be written: every write raises StorageError anyway
    await wait_out_busy(db.install_feed, busy_timeout=busy_timeout)
    lease = await wait_out_busy(lambda: Lease.acquire(db), busy_timeout=busy_timeout)
    try:
        db.start_claims(CLAIM_SQL, lease.owner)
        await wait_out_busy(_fold_dead_journals(db), busy_timeout=busy_timeout)
        if repair:
            report = await wait_out_busy(
                lambda: repair_file(db, only_dead_owners=True), busy_timeout=busy_timeout
            )
            if report.changed:
                logger.warning("repaired what a service that is gone left:\n%s", report)
    except BaseException:
        db.stop_claims()
        lease.abandon()  # as if we had crashed: the next repair cleans up after us
        raise
    return lease


def _fold_dead_journals(db: Database) -> Callable[[], list[str]]:
    def fold() -> list[str]:
        checks: list[OwnerCheck] = []

        def live_owners() -> Callable[[str], bool]:
            # Asked once fold_journals holds the write lock: a service starting
            # meanwhile has its lock by then, so it counts as alive.
            check = OwnerCheck(db)
            checks.append(check)
            return lambda owner: owner in check.live

        try:
            folded = db.fold_journals(live_owners)
        finally:
            for check in checks:
                check.close()
        if folded:
            logger.warning(
                "folded %d message(s) whose last windows a service that is gone left in "
                "the journal",
                len(folded),
            )
        return folded

    return fold


async def _release(
    db: Database, lease: Lease | None, *, busy_timeout: float, shutdown_timeout: float
) -> None:
    if lease is None:
        return
    db.stop_claims()
    with trio.move_on_after(shutdown_timeout, shield=True):
        try:
            await wait_out_busy(lease.release, busy_timeout=busy_timeout)
        except StorageError as exc:
            logger.warning("lease not released (%s); the next repair removes it", exc)
    lease.abandon()  # a no-op after a release; otherwise the lock goes with us


async def run_message_service(
    db: Database,
    *,
    task_status: trio.TaskStatus[MessageService] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """The lower tier: ``svc = await nursery.start(run_message_service, db)``.

    The service runs until the nursery is cancelled; the final flush then runs as in
    ``open_message_service``.
    """
    async with open_message_service(db, **options) as service:
        task_status.started(service)
        await trio.sleep_forever()


__all__ = [
    "MessageService",
    "open_message_service",
    "run_message_service",
]
