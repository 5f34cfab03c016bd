"""What a repair did (or, in a dry run, would do): frozen values with a readable text."""

from __future__ import annotations

import attrs


@attrs.frozen
class FinishedMessage:
    """An assistant message that was left unfinished and got a ``canceled`` finish."""

    message_id: str
    session_id: str
    #: Its tool calls whose input had not finished streaming, now marked finished.
    tool_calls_marked_finished: tuple[str, ...] = ()
    #: Whether its reasoning was still open (``finished_at`` 0) and was closed.
    reasoning_closed: bool = False
    #: The dead owner whose claim it had, or None when no service had claimed it.
    owner: str | None = None


@attrs.frozen
class AddedToolResults:
    """A new ``tool`` message with an error result for each call that never got one."""

    session_id: str
    #: The assistant message whose calls these answer.
    assistant_message_id: str
    tool_call_ids: tuple[str, ...]
    #: The new message's id; None in a dry run (nothing was created).
    message_id: str | None = None
    #: Messages that sort between the assistant message and the new one: crush orders
    #: a session by ``created_at`` in whole seconds, then by insertion, so a message
    #: written in the same second after the assistant message cannot be overtaken.
    messages_between: int = 0


@attrs.frozen
class SkippedMessage:
    """A message that needs repair but was left alone, and why."""

    message_id: str
    session_id: str
    reason: str


@attrs.frozen
class UnreadableSession:
    """A session with a message that cannot be decoded: nothing in it was touched."""

    session_id: str
    error: str


@attrs.frozen
class RepairReport:
    """The result of ``repair``: every change made (or, with ``dry_run``, to be made)."""

    database: str
    dry_run: bool
    finished: tuple[FinishedMessage, ...] = ()
    tool_results: tuple[AddedToolResults, ...] = ()
    skipped: tuple[SkippedMessage, ...] = ()
    unreadable: tuple[UnreadableSession, ...] = ()
    #: Owners found dead (their lock free, or their lock file gone).
    dead_owners: tuple[str, ...] = ()
    #: Claims with no live owner, removed (or, in a dry run, to be removed).
    stale_claims: int = 0

    @property
    def changed(self) -> bool:
        """Whether the repair changed (or, in a dry run, would change) the file."""
        return bool(self.finished or self.tool_results or self.dead_owners or self.stale_claims)

    def __str__(self) -> str:
        verb = "would " if self.dry_run else ""
        calls = sum(len(t.tool_call_ids) for t in self.tool_results)
        done = []
        if self.finished:
            done.append(f"{verb}finish {_n(len(self.finished), 'message')}")
        if self.tool_results:
            done.append(
                f"{verb}add {_n(calls, 'tool result')} in "
                f"{_n(len(self.tool_results), 'new tool message')}"
            )
        head = f"{self.database}: {', '.join(done) or 'nothing to repair'}"
        if self.dry_run:
            head += " (dry run: nothing was changed)"
        lines = [head]
        for f in self.finished:
            notes = []
            if f.tool_calls_marked_finished:
                notes.append(
                    f"tool calls {', '.join(f.tool_calls_marked_finished)} marked finished"
                )
            if f.reasoning_closed:
                notes.append("reasoning closed")
            notes.append("unclaimed" if f.owner is None else f"its service ({f.owner[:8]}) is gone")
            lines.append(
                f"  finished     {f.message_id} (session {f.session_id}): canceled; "
                + "; ".join(notes)
            )
        for t in self.tool_results:
            line = (
                f"  tool result  {t.message_id or 'a new tool message'} (session {t.session_id}) "
                f"after {t.assistant_message_id}: error results for {', '.join(t.tool_call_ids)}"
            )
            if t.messages_between:
                line += (
                    f"; {_n(t.messages_between, 'message')} of the same second sort between them"
                )
            lines.append(line)
        for s in self.skipped:
            lines.append(f"  skipped      {s.message_id} (session {s.session_id}): {s.reason}")
        for u in self.unreadable:
            lines.append(f"  unreadable   session {u.session_id}, left as it is: {u.error}")
        if self.dead_owners or self.stale_claims:
            lines.append(
                f"  {verb}remove {_n(self.stale_claims, 'stale claim')} and "
                f"{_n(len(self.dead_owners), 'dead service')}"
            )
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
