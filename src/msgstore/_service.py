"""The message service: crush's ``Service`` on Trio, one actor task per message.

``open_message_service`` owns a nursery with the actors, the alarm clock and a broker.
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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from ._actor import ActorContext, MessageActor
from ._alarm_clock import AlarmClock
from ._broker import Broker, Event, open_broker
from ._content import Finish, FinishReason, Message, Part, Role, check_parts
from ._errors import (
    ActorFailed,
    CorruptRecord,
    InvalidPart,
    InvalidUpdate,
    MessageNotFound,
    ServiceClosed,
    UnwrittenMessages,
)
from ._mailbox import LETTERS, ActorGone, Letter, Mailbox, RequestKind
from ._nursery import open_owned_nursery
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
            broker=broker,
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
        #: Sessions (crush's ``session.Service``), publishing on this service's broker.
        self.sessions = SessionService(
            db,
            broker=broker,
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
        self, buffer_size: int | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """``async with svc.subscribe() as events:``; see ``Broker.subscribe``."""
        return self.broker.subscribe(buffer_size)

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
            drops=broker.drop_count,
            must_deliver_drops=broker.must_deliver_drop_count,
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
        row = self.db.stored_message(message.id)
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
    buffer_size: int = 4096,
    must_deliver_timeout: float = 0.05,
    idle_timeout: float = 1.0,
    busy_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    restart_policy: RestartPolicy | None = None,
) -> AsyncIterator[MessageService]:
    """Run a message service on ``db`` for the duration of the block.

    ``debounce``: the window in seconds (``<= 0`` writes every update at once).
    ``buffer_size`` and ``must_deliver_timeout`` go to the broker. An actor with
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
    async with open_broker(
        buffer_size=buffer_size, must_deliver_timeout=must_deliver_timeout
    ) as broker:
        # The connection's own busy handler would sleep on the Trio thread and freeze
        # every task; the actors wait on Trio time instead.
        with db.without_busy_handler():
            async with open_owned_nursery() as nursery:
                service = MessageService(
                    db,
                    broker,
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
