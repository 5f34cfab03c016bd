"""``msgstore watch``: follow a database's changes live, like ``tail -f``.

One line per numbered change, from any writer (a msgstore service, crush, a script),
through the public API: a message service that writes nothing, polling the file for
other connections' commits, and one subscription. ``--after SEQ`` first replays what
changed after ``SEQ``.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import trio

from msgstore import Event, Message, ReloadRequired, Session, connect, open_message_service


def event_record(event: Event) -> dict[str, Any]:
    """The JSON line of one event: what changed, and a summary of the new state."""
    record: dict[str, Any] = {
        "seq": event.seq,
        "type": event.type.value,
        "kind": event.kind,
        "id": event.id,
    }
    payload = event.payload
    if isinstance(payload, Message):
        finish = payload.finish_part()
        record.update(
            session_id=payload.session_id,
            role=payload.role.value,
            parts=len(payload.parts),
            text_chars=len(payload.content().text),
            tool_calls=len(payload.tool_calls()),
            finish_reason=None if finish is None else str(finish.reason),
        )
    elif isinstance(payload, Session):
        record.update(
            title=payload.title,
            message_count=payload.message_count,
            prompt_tokens=payload.prompt_tokens,
            completion_tokens=payload.completion_tokens,
            cost=payload.cost,
        )
    return record


def event_line(event: Event) -> str:
    """The human line of one event."""
    r = event_record(event)
    head = f"{r['seq']:>8}  {r['type']:<7}  {r['kind']:<7}  {r['id']}"
    if "role" in r:
        finish = f", finished: {r['finish_reason']}" if r["finish_reason"] else ""
        tools = f", {r['tool_calls']} tool calls" if r["tool_calls"] else ""
        return (
            f"{head}  {r['role']}, {r['parts']} parts, {r['text_chars']} chars of text"
            f"{tools}{finish}"
        )
    if "title" in r:
        return (
            f"{head}  {r['title']!r}, {r['message_count']} messages, "
            f"{r['prompt_tokens']}+{r['completion_tokens']} tokens"
        )
    return head


async def watch(
    path: str,
    *,
    after: int | None,
    as_json: bool,
    poll_interval: float,
    out: IO[str] = sys.stdout,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with connect(path) as db:
        if not db.feed_installed:
            db.install_feed()
            print(
                f"msgstore: added the change log to {path} (`msgstore detach` removes it)",
                file=sys.stderr,
            )
        async with (
            open_message_service(db, poll_interval=poll_interval) as svc,
            svc.subscribe(after) as events,
        ):
            where = "" if after is None else f" after change {after}"
            print(f"msgstore: watching {path}{where} (Ctrl-C stops)", file=sys.stderr, flush=True)
            task_status.started()
            while True:
                try:
                    async for event in events:
                        _write(out, event, as_json)
                    return
                except ReloadRequired as e:
                    _reload(out, e, as_json)


def _write(out: IO[str], event: Event, as_json: bool) -> None:
    line = json.dumps(event_record(event), ensure_ascii=False) if as_json else event_line(event)
    out.write(line + "\n")
    out.flush()


def _reload(out: IO[str], error: ReloadRequired, as_json: bool) -> None:
    if as_json:
        line = json.dumps({"type": "reload", "seq": error.seq, "reason": str(error)})
    else:
        line = f"{'':>8}  reload   {error}"
    out.write(line + "\n")
    out.flush()
