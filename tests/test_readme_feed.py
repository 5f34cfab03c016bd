"""The README's reconnecting UI (the change feed section) works as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

import msgstore
from msgstore import Database, EventType, Role, open_message_service

README = Path(__file__).resolve().parent.parent / "README.md"


def follow_code() -> str:
    text = README.read_text(encoding="utf-8")
    block = text.split("A UI that reconnects:", 1)[1].split("```python", 1)[1]
    return block.split("```", 1)[0]


class Screen:
    def __init__(self) -> None:
        self.snapshots = 0
        self.texts: dict[str, str] = {}
        self.deleted: set[str] = set()

    def everything(self, messages: list[msgstore.Message]) -> None:
        self.snapshots += 1
        self.texts = {m.id: m.content().text for m in messages}

    def message(self, type: EventType, id: str, payload: Any) -> None:
        if type is EventType.DELETED:
            self.deleted.add(id)
            self.texts.pop(id, None)
        else:
            self.texts[id] = payload.content().text


async def test_the_readme_ui_follows_reloads_and_ends_with_the_files_state(
    autojump_clock: trio.testing.MockClock, db: Database, session_id: str
) -> None:
    namespace: dict[str, Any] = {"msgstore": msgstore}
    exec(follow_code(), namespace)
    screen = Screen()
    # max_pending=1: a create changes two items (the message, its session's count), so
    # each overflows the UI's queue at once, and the UI must reload.
    async with open_message_service(db, max_pending=1) as svc, trio.open_nursery() as nursery:
        nursery.start_soon(namespace["follow"], svc, session_id, screen)
        await trio.sleep(0.1)
        first = await svc.create(session_id, Role.USER, [msgstore.TextContent("hi")])
        await trio.sleep(0.1)
        burst = [
            await svc.create(session_id, Role.USER, [msgstore.TextContent(f"m{i}")])
            for i in range(3)
        ]
        await trio.sleep(0.1)
        await svc.delete(first.id)
        await trio.sleep(0.1)
        stats = svc.statistics()
        nursery.cancel_scope.cancel()
    assert stats.reloads >= 1
    assert screen.snapshots == 1 + stats.reloads  # the start, then one per reload
    # Whatever it missed, the screen ends as the file is.
    assert screen.texts == {m.id: m.content().text for m in burst}
    assert first.id not in screen.texts
