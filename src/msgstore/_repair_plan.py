"""Repair's decisions: what to finish, what to answer and what to leave, session by session.

``_repair.py`` says what is repaired and why; this is how. A ``Planner`` reads each
session through ``Database.stored_messages`` and makes a ``Plan``; the plan writes
itself (inside repair's transaction) and becomes the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final, cast

import apsw
import attrs

from ._content import (
    Finish,
    FinishReason,
    Message,
    Part,
    ReasoningContent,
    Role,
    ToolCall,
    ToolResult,
)
from ._errors import CorruptRecord, SessionNotFound, StorageError
from ._lease import OwnerCheck
from ._repair_report import (
    AddedToolResults,
    FinishedMessage,
    RepairReport,
    SkippedMessage,
    UnreadableSession,
)
from ._storage import Database

INTERRUPTED: Final = "The stream was interrupted: the process writing it ended before it finished."
REPAIRED_BY: Final = "finished by msgstore repair"
CALL_DID_NOT_COMPLETE: Final = (
    "The tool call did not complete: the process running it ended before it returned "
    "a result. It may have run in part."
)
CALL_NEVER_RAN: Final = (
    "The tool call did not complete: the stream was interrupted while its input was "
    "written, so it never ran."
)

_SET_CREATED_AT = "UPDATE messages SET created_at = ? WHERE id = ?"
_LATEST_WRITE = "SELECT max(updated_at) FROM messages WHERE session_id = ?"


@attrs.frozen
class _Finish:
    message: Message
    parts: list[Part]
    entry: FinishedMessage


@attrs.frozen
class _Addition:
    created_at: int
    parts: list[Part]
    entry: AddedToolResults


@attrs.frozen
class Plan:
    finishes: tuple[_Finish, ...]
    additions: tuple[_Addition, ...]
    skipped: tuple[SkippedMessage, ...]
    unreadable: tuple[UnreadableSession, ...]

    def sessions_to_change(self) -> list[str]:
        ids = [f.entry.session_id for f in self.finishes]
        ids += [a.entry.session_id for a in self.additions]
        return list(dict.fromkeys(ids))

    def keeping(self, earlier: Plan, decided_again: Sequence[str]) -> Plan:
        """This plan, with what ``earlier`` said of the sessions not decided again."""
        again = set(decided_again)
        return attrs.evolve(
            self,
            skipped=self.skipped + tuple(s for s in earlier.skipped if s.session_id not in again),
            unreadable=self.unreadable
            + tuple(u for u in earlier.unreadable if u.session_id not in again),
        )

    def write(self, db: Database) -> Plan:
        """Write every change (inside the caller's transaction); the plan with the new
        messages' ids."""
        for finish in self.finishes:
            db.update_message(finish.message.id, finish.parts)
        additions = []
        for addition in self.additions:
            entry = addition.entry
            created = db.insert_message(
                session_id=entry.session_id, role=Role.TOOL, parts=addition.parts
            )
            try:
                db.connection.execute(_SET_CREATED_AT, (addition.created_at, created.id))
            except apsw.Error as e:
                raise StorageError(f"repair: placing message {created.id!r} failed: {e}") from e
            additions.append(
                attrs.evolve(addition, entry=attrs.evolve(entry, message_id=created.id))
            )
        return attrs.evolve(self, additions=tuple(additions))

    def report(self, db: Database, *, dry_run: bool, check: OwnerCheck, stale: int) -> RepairReport:
        return RepairReport(
            database=db.path,
            dry_run=dry_run,
            finished=tuple(f.entry for f in self.finishes),
            tool_results=tuple(a.entry for a in self.additions),
            skipped=self.skipped,
            unreadable=self.unreadable,
            dead_owners=tuple(sorted(check.dead)),
            stale_claims=stale,
        )


class Planner:
    """Decides, session by session, what to finish, what to answer and what to skip."""

    def __init__(self, db: Database, check: OwnerCheck, now: float, grace: float) -> None:
        self._db = db
        self._check = check
        self._cutoff = now - grace
        self._grace = grace
        self._children: dict[str, list[str]] | None = None  # made when first needed
        self.finishes: list[_Finish] = []
        self.additions: list[_Addition] = []
        self.skipped: list[SkippedMessage] = []
        self.unreadable: list[UnreadableSession] = []

    def plan(self, session_ids: Sequence[str]) -> Plan:
        for session_id in session_ids:
            try:
                messages = self._db.stored_messages(session_id)
            except CorruptRecord as e:
                self.unreadable.append(UnreadableSession(session_id, str(e)))
                continue
            self._session(session_id, messages)
        return Plan(
            tuple(self.finishes), tuple(self.additions), tuple(self.skipped), tuple(self.unreadable)
        )

    def _session(self, session_id: str, messages: list[Message]) -> None:
        # The last message answering each tool call id: a call in message i is answered
        # when that is i (a provider-executed call) or later.
        last_answer: dict[str, int] = {}
        for i, m in enumerate(messages):
            for result in m.tool_results():
                last_answer[result.tool_call_id] = i
        quiet: bool | None = None  # the session's quietness, looked up once if needed
        placed: dict[int, int] = {}  # created_at -> new messages placed at it so far
        for i, message in enumerate(messages):
            if message.role is not Role.ASSISTANT:
                continue
            unfinished = not message.is_finished()
            dangling = [c for c in message.tool_calls() if last_answer.get(c.id, -1) < i]
            if not (unfinished or dangling):
                continue
            live = self._check.claimed_by_live_owner(message.id)
            if live is not None:
                self._skip(message, f"streamed by a live service: {live.describe()}")
                continue
            if not self._check.claimed(message.id) and self._grace:
                if quiet is None:
                    quiet = self._quiet(session_id, messages)
                if not quiet:
                    self._skip(
                        message,
                        "unclaimed (crush, or a msgstore without leases, may still be "
                        f"writing it) and its conversation was written less than "
                        f"{self._grace:g} s ago",
                    )
                    continue
            owner = self._check.claims.get(message.id)
            if unfinished:
                self.finishes.append(_finished(message, owner))
            if dangling:
                created_at = message.created_at
                between = sum(1 for m in messages[i + 1 :] if m.created_at == created_at)
                between += placed.get(created_at, 0)
                placed[created_at] = placed.get(created_at, 0) + 1
                self.additions.append(_answers(message, dangling, created_at, between))

    def _skip(self, message: Message, reason: str) -> None:
        self.skipped.append(SkippedMessage(message.id, message.session_id, reason))

    def _quiet(self, session_id: str, messages: list[Message]) -> bool:
        """Whether nothing in the session, or in its sub-sessions, was written since
        the cutoff."""
        latest = max((m.updated_at for m in messages), default=0)
        for sid in self._descendants(session_id):
            rows = self._db.connection.execute(_LATEST_WRITE, (sid,)).fetchall()
            latest = max(latest, cast(int | None, rows[0][0]) or 0)
        with contextlib.suppress(SessionNotFound):
            latest = max(latest, self._db.get_session(session_id).updated_at)
        return latest <= self._cutoff

    def _descendants(self, session_id: str) -> list[str]:
        if self._children is None:
            self._children = {}
            for s in self._db.all_sessions():
                if s.parent_session_id is not None:
                    self._children.setdefault(s.parent_session_id, []).append(s.id)
        out: list[str] = []
        todo = list(self._children.get(session_id, ()))
        seen = {session_id}
        while todo:
            sid = todo.pop()
            if sid not in seen:  # a parent cycle in a hand-edited file
                seen.add(sid)
                out.append(sid)
                todo.extend(self._children.get(sid, ()))
        return out


def _finished(message: Message, owner: str | None) -> _Finish:
    """The message with every part kept, nothing left looking live, and a finish."""
    stopped = max(message.updated_at, message.created_at)
    parts: list[Part] = []
    marked: list[str] = []
    closed = False
    for part in message.parts:
        if isinstance(part, ToolCall) and not part.finished:
            part = attrs.evolve(part, finished=True)
            marked.append(part.id)
        elif (
            isinstance(part, ReasoningContent)
            and not part.finished_at
            and (part.started_at or part.thinking)
        ):
            part = attrs.evolve(part, finished_at=max(stopped, part.started_at))
            closed = True
        parts.append(part)
    parts.append(
        Finish(reason=FinishReason.CANCELED, time=stopped, message=INTERRUPTED, details=REPAIRED_BY)
    )
    entry = FinishedMessage(
        message_id=message.id,
        session_id=message.session_id,
        tool_calls_marked_finished=tuple(marked),
        reasoning_closed=closed,
        owner=owner,
    )
    return _Finish(message, parts, entry)


def _answers(message: Message, calls: list[ToolCall], created_at: int, between: int) -> _Addition:
    """One error result per unanswered call, as crush writes a tool message."""
    parts: list[Part] = [
        ToolResult(
            tool_call_id=call.id,
            name=call.name,
            content=CALL_DID_NOT_COMPLETE if call.finished else CALL_NEVER_RAN,
            is_error=True,
        )
        for call in calls
    ]
    parts.append(Finish(reason=FinishReason.STOP, time=0))  # what create gives a tool message
    entry = AddedToolResults(
        session_id=message.session_id,
        assistant_message_id=message.id,
        tool_call_ids=tuple(call.id for call in calls),
        messages_between=between,
    )
    return _Addition(created_at, parts, entry)
