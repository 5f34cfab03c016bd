"""Helpers for testing your own code that uses msgstore, made for Trio's mock clock.

Run tests with ``autojump_clock`` (pytest-trio) or ``trio.testing.MockClock(
autojump_threshold=0)``: the service's windows then pass in no real time, and every
wait here is bounded in Trio time, so a missing event fails the test instead of
hanging it.

- ``open_test_service(directory)``: a service on a fresh database file, with a session.
- ``open_event_recorder(service)``: collects every event; ``await recorder.wait_for(...)``
  waits for the next matching one (after the one the previous ``wait_for`` returned;
  ``since=0`` looks at all of them).
- ``row_now(source, message_id)`` / ``assert_row(...)``: what the file holds right now,
  read through a separate read-only connection (not the service's buffered state).

The same helpers as pytest fixtures: ``pytest_plugins = ["msgstore.pytest_plugin"]``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ._broker import Event, EventType
from ._content import FinishReason, Message, Part, Role, ToolCall, ToolResult
from ._errors import MessageNotFound
from ._service import MessageService, open_message_service
from ._storage import Database, connect

__all__ = [
    "EventRecorder",
    "Harness",
    "assert_row",
    "open_event_recorder",
    "open_test_service",
    "row_now",
]


@attrs.frozen
class Harness:
    """A running service on its own database file, and a session to put messages in."""

    path: Path
    db: Database
    service: MessageService
    session_id: str

    async def create(
        self, role: Role | str = Role.ASSISTANT, parts: Sequence[Part] = (), **kwargs: Any
    ) -> Message:
        """``service.create`` in this harness's session."""
        return await self.service.create(self.session_id, role, parts, **kwargs)

    def row_now(self, message_id: str) -> Message:
        """What the file holds for ``message_id`` right now; see ``row_now``."""
        return row_now(self.path, message_id)

    def assert_row(self, message_id: str, **expected: Any) -> Message | None:
        """``assert_row`` on this harness's file."""
        return assert_row(self.path, message_id, **expected)


def _fresh_file(directory: Path) -> Path:
    for n in range(1, 10_000):
        path = directory / ("msgstore.db" if n == 1 else f"msgstore-{n}.db")
        if not path.exists():
            return path
    raise FileExistsError(f"no free msgstore-N.db name in {directory}")


@asynccontextmanager
async def open_test_service(
    directory: str | os.PathLike[str],
    *,
    session_title: str = "test session",
    **options: Any,
) -> AsyncIterator[Harness]:
    """A ``Harness``: a new database file in ``directory`` (``tmp_path``), a session in it,
    and ``open_message_service(db, **options)`` running for the block.

    Leaving the block runs the service's shutdown (the final flush) and closes the file.
    """
    path = _fresh_file(Path(directory))
    with connect(path) as db:
        session = db.create_session(session_title)
        async with open_message_service(db, **options) as service:
            yield Harness(path, db, service, session.id)


# -- events -------------------------------------------------------------------------------


def _describe(
    type: EventType | str | None, message_id: str | None, predicate: object | None
) -> str:
    bits = []
    if type is not None:
        bits.append(f"type={EventType(type).value}")
    if message_id is not None:
        bits.append(f"message_id={message_id!r}")
    if predicate is not None:
        bits.append(f"predicate={getattr(predicate, '__name__', predicate)!r}")
    return ", ".join(bits) or "any event"


def _summary(event: Event) -> str:
    payload = event.payload
    if isinstance(payload, Message):
        text = payload.content().text
        return (
            f"{event.type.value} {payload.id} ({payload.role.value}, {len(payload.parts)} parts, "
            f"text {text[:30]!r}{'...' if len(text) > 30 else ''})"
        )
    return f"{event.type.value} {payload!r:.60}"


class EventRecorder:
    """Every message event the service publishes while it records, in order (session
    events too with ``open_event_recorder(..., sessions=True)``).

    ``events`` is the list so far; ``of(message_id)`` one message's; ``wait_for(...)``
    waits (in Trio time) for the next one that matches: each call looks only at events
    after the one the previous ``wait_for`` returned, so waiting twice for ``UPDATED``
    gives two different events. Pass ``since=0`` to look at every event recorded.
    """

    def __init__(self, *, sessions: bool = False) -> None:
        self.sessions = sessions
        self.events: list[Event] = []
        self.closed = False
        self._changed = trio.Event()
        self._cursor = 0  # the index after the event the last wait_for returned

    def __len__(self) -> int:
        return len(self.events)

    def of(self, message_id: str) -> list[Event]:
        """The events about one message, in the order they came."""
        return [e for e in self.events if getattr(e.payload, "id", None) == message_id]

    def types(self, message_id: str | None = None) -> list[EventType]:
        """The event types so far (of one message when ``message_id`` is given)."""
        events = self.events if message_id is None else self.of(message_id)
        return [e.type for e in events]

    def _start(self, since: int | Event) -> int:
        if isinstance(since, Event):
            for index, event in enumerate(self.events):
                if event is since:
                    return index + 1
            raise ValueError(f"since: this recorder did not record {_summary(since)}")
        if since < 0:
            raise ValueError(f"since must be an index >= 0 or an Event, got {since!r}")
        return since

    def _index(
        self,
        type: EventType | None,
        message_id: str | None,
        predicate: Callable[[Message], bool] | None,
        start: int,
        stop: int | None = None,
    ) -> int | None:
        for index in range(start, len(self.events) if stop is None else stop):
            event = self.events[index]
            if type is not None and event.type is not type:
                continue
            if message_id is not None and getattr(event.payload, "id", None) != message_id:
                continue
            if predicate is not None and not predicate(event.payload):
                continue
            return index
        return None

    def find(
        self,
        type: EventType | str | None = None,
        *,
        message_id: str | None = None,
        predicate: Callable[[Message], bool] | None = None,
        since: int | Event = 0,
    ) -> Event | None:
        """The first recorded event that matches, or None; never waits.

        Looks from the start, or from index ``since``, or after the event ``since``.
        """
        want = None if type is None else EventType(type)
        index = self._index(want, message_id, predicate, self._start(since))
        return None if index is None else self.events[index]

    async def wait_for(
        self,
        type: EventType | str | None = None,
        *,
        message_id: str | None = None,
        predicate: Callable[[Message], bool] | None = None,
        since: int | Event | None = None,
        # A bound of its own, not the caller's cancel scope: under the autojump clock a
        # wait with no deadline anywhere hangs instead of failing.
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Event:
        """Wait for the next event that matches, and return it.

        "Next" means after the event the previous ``wait_for`` on this recorder
        returned (from the first event recorded, on the first call), whether it is
        recorded already or is still to come. So each call waits for something new::

            await svc.update(msg)                  # its window opens
            first = await events.wait_for(EventType.UPDATED)
            await svc.update(msg)
            second = await events.wait_for(EventType.UPDATED)  # not `first` again

        The rule depends only on the order of events, not on whether the recorder
        task has caught up with an event published just before the call, so the
        result is the same on every run.

        ``since`` looks elsewhere: ``since=0`` from the first event recorded, an
        index (``since=len(recorder)``: only what is recorded from now on), or an
        ``Event`` this recorder holds (the events after it). ``predicate`` gets the
        event's message. Fails the test with ``AssertionError`` (listing what was
        recorded, and any earlier match that was skipped) when none comes within
        ``timeout`` seconds of Trio time, or when the service closes first.
        """
        want = None if type is None else EventType(type)
        start = self._cursor if since is None else self._start(since)
        with trio.move_on_after(timeout):
            while True:
                index = self._index(want, message_id, predicate, start)
                if index is not None:
                    self._cursor = index + 1
                    await trio.lowlevel.checkpoint()
                    return self.events[index]
                if self.closed:
                    break
                await self._changed.wait()
        seen = "\n  ".join(_summary(e) for e in self.events[start:]) or "(none)"
        why = "the service closed" if self.closed else f"{timeout:g} s"
        message = (
            f"no event matching {_describe(want, message_id, predicate)} within {why}; "
            f"recorded from index {start}:\n  {seen}"
        )
        earlier = self._index(want, message_id, predicate, 0, min(start, len(self.events)))
        if earlier is not None:
            message += (
                f"\nan earlier event matches (index {earlier}: "
                f"{_summary(self.events[earlier])}); "
                "wait_for only looks after the event the previous wait_for returned: "
                "pass since=0 to look at every event"
            )
        raise AssertionError(message)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def _run(
        self,
        service: MessageService,
        max_pending: int | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with service.subscribe(max_pending=max_pending) as events:
                task_status.started()
                async for event in events:
                    if self.sessions or event.kind == "message":
                        self._record(event)
        finally:
            self.closed = True
            self._changed.set()


@asynccontextmanager
async def open_event_recorder(
    service: MessageService, *, sessions: bool = False, max_pending: int | None = None
) -> AsyncIterator[EventRecorder]:
    """Record the service's events for the block (subscribed before the block starts).

    The subscription conflates like any other: a state replaced before the recorder
    task ran is not recorded, the newer one is. Session events with ``sessions=True``.
    """
    recorder = EventRecorder(sessions=sessions)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder._run, service, max_pending)
        try:
            yield recorder
        finally:
            nursery.cancel_scope.cancel()


# -- rows ---------------------------------------------------------------------------------


def _path_of(source: Database | Harness | str | os.PathLike[str]) -> str:
    if isinstance(source, Database | Harness):
        return os.fspath(source.path)
    return os.fspath(source)


def row_now(source: Database | Harness | str | os.PathLike[str], message_id: str) -> Message:
    """The message as the database file holds it right now.

    Read through a new read-only connection, so it sees what was written, not what the
    service has buffered (``service.get`` gives that). ``MessageNotFound`` when no row
    has the id.
    """
    with connect(_path_of(source), read_only=True) as other:
        return other.stored_message(message_id)


_UNSET: Any = object()


def assert_row(
    source: Database | Harness | str | os.PathLike[str],
    message_id: str,
    *,
    text: str = _UNSET,
    reasoning: str = _UNSET,
    finish_reason: FinishReason | str | None = _UNSET,
    tool_calls: Sequence[ToolCall] = _UNSET,
    tool_results: Sequence[ToolResult] = _UNSET,
    parts: Sequence[Part] = _UNSET,
    exists: bool = True,
) -> Message | None:
    """Assert what the file holds for ``message_id`` right now; return the row.

    Only the fields given are checked: ``text`` (``content().text``), ``reasoning``
    (the thinking text), ``finish_reason`` (None: not finished), ``tool_calls``,
    ``tool_results``, ``parts`` (all of them, in order). ``exists=False`` asserts that
    no row has the id.
    """
    try:
        row = row_now(source, message_id)
    except MessageNotFound:
        if exists:
            raise AssertionError(f"no row for message {message_id!r} in the file") from None
        return None
    if not exists:
        raise AssertionError(f"message {message_id!r} still has a row in the file")
    checks: list[tuple[str, object, object]] = []
    if text is not _UNSET:
        checks.append(("text", row.content().text, text))
    if reasoning is not _UNSET:
        checks.append(("reasoning", row.reasoning_content().thinking, reasoning))
    if finish_reason is not _UNSET:
        actual = row.finish_reason() if row.is_finished() else None
        checks.append(("finish_reason", actual, finish_reason))
    if tool_calls is not _UNSET:
        checks.append(("tool_calls", row.tool_calls(), list(tool_calls)))
    if tool_results is not _UNSET:
        checks.append(("tool_results", row.tool_results(), list(tool_results)))
    if parts is not _UNSET:
        checks.append(("parts", row.parts, list(parts)))
    wrong = [
        f"  {name}: file has {got!r}, expected {want!r}"
        for name, got, want in checks
        if got != want
    ]
    if wrong:
        raise AssertionError(
            f"row {message_id!r} on disk differs (a buffered update may not be written "
            "yet: await service.flush(id) first, or let the window pass):\n" + "\n".join(wrong)
        )
    return row
