"""The message service: crush's ``Service`` on Trio, one actor task per message.

``open_message_service`` owns a nursery with the actors and a broker. ``update`` hands
the new state to the message's actor (starting one if needed); the actor writes when
its window ends, or at once on a terminal change, and publishes the event. Reads see
the newest accepted state, buffered or written.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._actor import MessageActor, RequestKind, wait_out_busy
from ._broker import Broker, Event, EventType, open_broker
from ._codec import encode_parts
from ._content import Finish, FinishReason, Message, Part, Role, check_parts
from ._errors import InvalidPart, InvalidUpdate, MessageNotFound, ServiceClosed
from ._terminal import structure_of
from ._timer import AlarmClock

if TYPE_CHECKING:
    from ._storage import Database

logger = logging.getLogger("msgstore")

# At most this many inline writes by one task in a row before it yields (about 0.5 ms
# of writes on the benchmark machine); see MessageService._owes_schedule_point.
_INLINE_STREAK = 8


@attrs.frozen
class ServiceStatistics:
    """A snapshot of the service's counters (see ``MessageService.statistics``)."""

    actors_alive: int
    buffered_messages: int
    updates: int
    writes: int
    failed_writes: int
    busy_waits: int
    drops: int
    must_deliver_drops: int
    subscribers: int


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
    ) -> None:
        self.db = db
        self.broker = broker
        self.debounce = debounce
        self.idle_timeout = idle_timeout
        self.busy_timeout = busy_timeout
        self.shutdown_timeout = shutdown_timeout
        self._nursery = nursery
        self._actors: dict[str, MessageActor] = {}
        self._alarm_clock = AlarmClock()
        self._closed = False
        # Counters behind statistics(); the actors update them too.
        self._dirty_count = 0
        self._updates = 0
        self._writes = 0
        self._failed_writes = 0
        self._busy_waits = 0
        # The fairness guard of inline writes (see _owes_schedule_point).
        self._streak_task: trio.lowlevel.Task | None = None
        self._streak = 0

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
        """
        self._check_open()
        try:
            role = Role(role)
        except ValueError:
            raise InvalidUpdate(f"unknown role {role!r}") from None
        try:
            checked = check_parts(parts)
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        if role is not Role.ASSISTANT:
            checked.append(Finish(reason=FinishReason.STOP, time=0))
        try:
            message = await wait_out_busy(
                self,
                lambda: self.db.insert_message(
                    session_id=session_id,
                    role=role,
                    parts=checked,
                    model=model,
                    provider=provider,
                    is_summary_message=is_summary_message,
                ),
            )
        except InvalidPart as exc:  # an argument of the wrong type
            raise InvalidUpdate(str(exc)) from exc
        # crush publishes ``created`` lossily; a UI that misses it never shows the
        # message, so it goes by must-deliver here.
        await self.broker.publish_must_deliver(EventType.CREATED, message.clone())
        return message

    async def update(self, message: Message) -> None:
        """Accept the new state of a message.

        It is written no later than ``debounce`` after the first unwritten update, and
        before this returns when it is terminal (finished, a tool call added or
        finished, reasoning ended) or when ``debounce <= 0``. The caller may go on
        mutating ``message``: the service keeps its own copy.
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
        actor = self._actors.get(message.id)
        try:
            if actor is not None:
                structure = actor.structure_for(parts)
            else:
                structure = structure_of(message, parts)  # before any actor starts
                actor = self._actor_for(message.id)
                actor.take_fields(message)
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        self._updates += 1
        if actor.accept(parts, structure) or self.debounce <= 0:
            await actor.write_through()
        else:
            self._streak_task = None
            await trio.lowlevel.checkpoint()

    async def flush(self, message_id: str) -> None:
        """Return once everything accepted for ``message_id`` before the call is written.

        That includes a write already under way. A no-op when nothing is pending.
        """
        actor = self._actors.get(message_id)
        if actor is None:
            await trio.lowlevel.checkpoint()
            return
        await actor.write_through()

    async def flush_all(self) -> None:
        """``flush`` for every message; raises the first failure after trying them all."""
        errors: list[Exception] = []
        requests = []
        for actor in tuple(self._actors.values()):
            try:
                request = actor.commit_or_queue()
            except Exception as exc:
                errors.append(exc)
            else:
                if request is not None:
                    requests.append(request)
        await trio.lowlevel.checkpoint()
        for request in requests:
            try:
                await request.wait()
            except Exception as exc:
                errors.append(exc)
        for extra in errors[1:]:
            logger.error("flush_all: another write failed too: %s", extra)
        if errors:
            raise errors[0]

    async def delete(self, message_id: str) -> None:
        """Delete the row, drop any buffered state, publish ``deleted``."""
        self._check_open()
        actor = self._actor_for(message_id)
        await actor.request(RequestKind.DELETE).wait()

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
        actor = self._actors.get(message_id)
        if actor is not None and not actor.deleted:
            return actor.latest
        return self.db.get_message(message_id)

    async def list(self, session_id: str) -> builtins.list[Message]:
        """The session's messages, oldest first, each in its newest accepted state."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.list_messages(session_id))

    async def list_user_messages(self, session_id: str) -> builtins.list[Message]:
        """The session's user messages, newest first."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.list_user_messages(session_id))

    async def list_all_user_messages(self) -> builtins.list[Message]:
        """Every user message of every session, newest first."""
        await trio.lowlevel.checkpoint()
        return self._overlay(self.db.list_all_user_messages())

    async def get_last_assistant_message(self, session_id: str) -> Message | None:
        """The session's newest assistant message that is not a summary, or None."""
        await trio.lowlevel.checkpoint()
        found = self.db.get_last_assistant_message(session_id)
        return None if found is None else self._overlay([found])[0]

    def _overlay(self, rows: Sequence[Message]) -> builtins.list[Message]:
        actors = self._actors
        out = []
        for row in rows:
            actor = actors.get(row.id)
            out.append(row if actor is None or actor.deleted else actor.latest)
        return out

    # -- events and statistics -------------------------------------------------------

    def subscribe(
        self, buffer_size: int | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """``async with svc.subscribe() as events:``; see ``Broker.subscribe``."""
        return self.broker.subscribe(buffer_size)

    def statistics(self) -> ServiceStatistics:
        broker = self.broker
        return ServiceStatistics(
            actors_alive=len(self._actors),
            buffered_messages=self._dirty_count,
            updates=self._updates,
            writes=self._writes,
            failed_writes=self._failed_writes,
            busy_waits=self._busy_waits,
            drops=broker.drop_count,
            must_deliver_drops=broker.must_deliver_drop_count,
            subscribers=broker.subscriber_count,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- for the actors ----------------------------------------------------------------

    def _owes_schedule_point(self) -> bool:
        """Whether an inline write must still yield, so that no task hogs the loop.

        A write done in the caller's task returns without a schedule point (see
        ``MessageActor.write_through``). A task that makes ``_INLINE_STREAK`` such
        writes in a row, with no other task's update and no yield of its own in
        ``update`` between them, yields on the last one: a loop of terminal updates
        holds the Trio thread for at most that many writes.
        """
        task = trio.lowlevel.current_task()
        if task is not self._streak_task:
            self._streak_task = task
            self._streak = 1
            return False
        self._streak += 1
        if self._streak < _INLINE_STREAK:
            return False
        self._streak_task = None
        return True

    def _write_state(self, state: Message) -> None:
        finish = state.finish_part()
        written = self.db.write_parts(
            state.id, encode_parts(state.parts), None if finish is None else finish.time
        )
        if not written:
            raise MessageNotFound(f"no message has id {state.id!r}")
        self._writes += 1

    def _actor_for(self, message_id: str) -> MessageActor:
        actor = self._actors.get(message_id)
        if actor is None:
            # The row is read once per actor: it proves the id exists (an update for
            # an unknown id is refused here, not lost at write time) and gives the
            # baseline for terminal detection.
            if not isinstance(message_id, str):
                raise InvalidUpdate(f"message id must be str, got {type(message_id).__name__}")
            actor = MessageActor(self, self.db.get_message(message_id))
            self._actors[message_id] = actor
            self._nursery.start_soon(actor.run)
        return actor

    def _forget(self, actor: MessageActor) -> None:
        if self._actors.get(actor.id) is actor:
            del self._actors[actor.id]

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosed("the message service has closed; open a new one")

    async def _shutdown(self) -> None:
        """Write everything still buffered, then stop the actors (shielded, bounded)."""
        self._closed = True
        with trio.move_on_after(self.shutdown_timeout, shield=True) as scope:
            await self._final_flush()
        if scope.cancelled_caught:
            logger.error(
                "shutdown timed out after %.1f s with %d messages unwritten",
                self.shutdown_timeout,
                self._dirty_count,
            )
        self._nursery.cancel_scope.cancel()

    async def _final_flush(self) -> None:
        # Each pass tries every message once: a message that cannot be written must not
        # use up the shutdown time of the others.
        pending = tuple(self._actors.values())
        started = trio.current_time()
        interrupted: BaseException | None = None
        while pending:
            failed: list[tuple[MessageActor, Exception]] = []
            for actor in pending:
                if not actor.dirty or actor.deleted:
                    continue
                try:
                    actor.write_now()
                except Exception as exc:
                    failed.append((actor, exc))
                except BaseException as exc:
                    # KeyboardInterrupt in one write: that message is left as it was;
                    # the others are still written, then the interrupt goes on.
                    interrupted = interrupted or exc
            if failed and trio.current_time() - started >= self.busy_timeout:
                for actor, error in failed:
                    logger.error("final write of message %s failed: %s", actor.id, error)
                break
            pending = tuple(actor for actor, _ in failed)
            if pending:
                await trio.sleep(0.01)
        if interrupted is not None:
            raise interrupted


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
) -> AsyncIterator[MessageService]:
    """Run a message service on ``db`` for the duration of the block.

    ``debounce``: the window in seconds (``<= 0`` writes every update at once).
    ``buffer_size`` and ``must_deliver_timeout`` go to the broker. An actor with
    nothing pending retires after ``idle_timeout``. While another connection holds the
    write lock, writes wait on Trio time up to ``busy_timeout``. Leaving the block
    writes everything buffered (also when cancelled, for at most ``shutdown_timeout``)
    and ends every subscription.
    """
    if not isinstance(debounce, int | float) or math.isnan(debounce):
        raise ValueError(f"debounce must be a number of seconds, got {debounce!r}")
    async with open_broker(
        buffer_size=buffer_size, must_deliver_timeout=must_deliver_timeout
    ) as broker:
        # The connection's own busy handler would sleep on the Trio thread and freeze
        # every task; the actors wait on Trio time instead.
        db.set_busy_timeout(0)
        try:
            async with trio.open_nursery() as nursery:
                service = MessageService(
                    db,
                    broker,
                    nursery,
                    debounce=debounce,
                    idle_timeout=idle_timeout,
                    busy_timeout=busy_timeout,
                    shutdown_timeout=shutdown_timeout,
                )
                nursery.start_soon(service._alarm_clock.run)
                try:
                    yield service
                finally:
                    await service._shutdown()
        finally:
            if not db.closed:
                db.set_busy_timeout(int(busy_timeout * 1000))


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
    "ServiceStatistics",
    "open_message_service",
    "run_message_service",
]
