"""Sessions: crush's ``session.Service`` on Trio.

Sessions are not streamed, so they need no actor: each call is one short statement
on the Trio thread, waiting out another connection's lock on Trio time like the
message actors do. Every change is published through the change feed (when there is
one) as an ``Event`` whose payload is the stored ``Session``: a UI shows titles,
token counts and costs from them.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from ._broker import EventType
from ._busy import wait_out_busy
from ._content import check_text
from ._errors import InvalidPart, InvalidUpdate
from ._storage import Database, Session

if TYPE_CHECKING:
    from ._feed import ChangeFeed

T = TypeVar("T")


class SessionService:
    """Create, read, save and delete sessions (crush's ``session.Service``).

    ``SessionService(db)`` works on its own; a message service offers one bound to
    itself as ``svc.sessions``, which publishes on the service's feed and deletes a
    session's messages through their actors (their buffered states are dropped and
    each publishes ``deleted``) before the session row goes.
    """

    def __init__(
        self,
        db: Database,
        *,
        feed: ChangeFeed | None = None,
        busy_timeout: float = 30.0,
        delete_messages: Callable[[str], Awaitable[None]] | None = None,
        on_busy_wait: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self._feed = feed
        self._busy_timeout = busy_timeout
        self._delete_messages = delete_messages
        self._on_busy_wait = on_busy_wait

    async def create(self, title: str, *, parent_session_id: str | None = None) -> Session:
        """Create a session (a sub-session when ``parent_session_id`` is given)."""
        try:
            check_text(title, "session title")
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        if parent_session_id is not None:
            self.db.get_session(parent_session_id)  # SessionNotFound: no orphans
        session = await self._write(
            lambda: self.db.create_session(title, parent_session_id=parent_session_id)
        )
        self._publish(EventType.CREATED, session)
        return session

    async def get(self, id: str) -> Session:
        """The session; ``SessionNotFound`` when there is none."""
        await trio.lowlevel.checkpoint()
        return self.db.get_session(id)

    async def list(self) -> builtins.list[Session]:
        """Top-level sessions (no parent), newest ``updated_at`` first."""
        await trio.lowlevel.checkpoint()
        sessions = self.db.list_sessions()
        # Stable: sessions updated in the same second keep their newest-created order.
        sessions.sort(key=lambda s: s.updated_at, reverse=True)
        return sessions

    async def save(self, session: Session) -> Session:
        """Store title, prompt/completion tokens, cost, summary message id and todos;
        return the session as stored (``updated_at`` set by the database)."""
        if not isinstance(session, Session):
            raise InvalidUpdate(f"save() needs a Session, got {type(session).__name__}")
        try:
            stored = await self._write(lambda: self.db.save_session(session))
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        self._publish(EventType.UPDATED, stored)
        return stored

    async def add_usage(
        self,
        id: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float = 0.0,
    ) -> Session:
        """Add to a session's token counts and cost (what a finished turn used).

        One statement adds to what the row holds, so concurrent calls never lose one.
        """
        try:
            stored = await self._write(
                lambda: self.db.add_session_usage(
                    id,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost=cost,
                )
            )
        except InvalidPart as exc:
            raise InvalidUpdate(str(exc)) from exc
        self._publish(EventType.UPDATED, stored)
        return stored

    async def delete(self, id: str) -> None:
        """Delete the session and its messages; ``SessionNotFound`` when there is none."""
        session = self.db.get_session(id)
        if self._delete_messages is not None:
            await self._delete_messages(id)
        await self._write(lambda: self.db.delete_session(id))
        self._publish(EventType.DELETED, session)

    async def _write(self, write: Callable[[], T]) -> T:
        with self.db.without_busy_handler():
            return await wait_out_busy(
                write, busy_timeout=self._busy_timeout, on_wait=self._on_busy_wait
            )

    def _publish(self, type: EventType, session: Session) -> None:
        if self._feed is not None:
            self._feed.committed(type, session, "session", session.id)
