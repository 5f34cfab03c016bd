"""The demo's shared state: its options, the conversations, and what the view reads.

Apart from ``_demo.py`` (the agent that drives the service) and ``_demo_view.py`` (the
screens), which both use these without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from msgstore import Event, EventType, Message, MessageService, ServiceStatistics

from ._demo_scripts import Script


@attrs.frozen
class DemoOptions:
    db_path: Path
    streams: int = 4
    speed: float = 1.0
    seed: int | None = None
    plain: bool = False
    debounce: float = 0.033


@attrs.define
class Conversation:
    """One simulated conversation, as the view follows it."""

    index: int
    title: str
    session_id: str = ""
    message_ids: list[str] = attrs.Factory(list)
    tokens: int = 0
    tool_calls: int = 0
    done: bool = False


@attrs.frozen
class DemoResult:
    db_path: Path
    conversations: tuple[Conversation, ...]
    tokens: int
    stats: ServiceStatistics
    rows_created: int
    events: int
    elapsed: float
    #: Why the demo ended early (``"interrupted"``, ``"output closed"``), or None.
    stopped: str | None = None

    @property
    def coalescing(self) -> float:
        """Updates per SQL write: how many streamed states each write carried."""
        return self.stats.updates / self.stats.writes if self.stats.writes else 0.0


class DemoState:
    """What the agent and the view share: the conversations, the latest states, counters."""

    def __init__(self, options: DemoOptions, scripts: list[Script]) -> None:
        self.options = options
        self.conversations = [Conversation(i, s.title) for i, s in enumerate(scripts)]
        self.messages: dict[str, Message] = {}  # newest state seen in an event
        self.tokens = 0
        self.rows_created = 0
        self.events = 0
        self.started_at = trio.current_time()
        self.service: MessageService | None = None
        self.followed = trio.Event()
        self.stopped: str | None = None
        # Entered around the agents; cancelling it (even before) ends the demo early.
        self.agents_scope = trio.CancelScope()
        self._by_session: dict[str, Conversation] = {}

    def stop(self, reason: str) -> None:
        """End the demo early: the agents stop, the service writes what it accepted."""
        if self.stopped is None:
            self.stopped = reason
        self.agents_scope.cancel()

    @property
    def elapsed(self) -> float:
        return trio.current_time() - self.started_at

    def statistics(self) -> ServiceStatistics | None:
        return None if self.service is None else self.service.statistics()

    def conversation_of(self, session_id: str) -> Conversation | None:
        return self._by_session.get(session_id)

    def bind(self, conversation: Conversation, session_id: str) -> None:
        conversation.session_id = session_id
        self._by_session[session_id] = conversation

    async def follow(
        self,
        service: MessageService,
        on_event: Callable[[Event], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep ``messages`` current from the broker until the service closes.

        The subscription ends with the service's scope, after every event published
        before that has been taken: the last states always reach the view.
        """
        try:
            async with service.subscribe() as events:
                task_status.started()
                async for event in events:
                    message = event.payload
                    if not isinstance(message, Message):
                        continue  # a session's (``svc.sessions``): the view follows messages
                    self.events += 1
                    if event.type is EventType.DELETED:
                        self.messages.pop(message.id, None)
                    else:
                        self.messages[message.id] = message
                    on_event(event)
        finally:
            self.followed.set()
