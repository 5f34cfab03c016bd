"""The Python rows: what ``update`` does in each.

(a)/(b) ``MsgstoreStore``: the real service. (c) ``NaiveStore``: what a user would write
instead, every update encoded and written at once through the same schema and the same
connection setup. (e) ``FloorStore``: ``update`` only checkpoints; no store can cost less.
(c) and (e) create their rows the same way, so a row's cost minus (e)'s is its updates.
"""

from __future__ import annotations

import trio

from msgstore import Database, Message, MessageService, Role, encode_parts

MODEL = "bench-model"
PROVIDER = "bench"


class MsgstoreStore:
    def __init__(self, service: MessageService) -> None:
        self.service = service

    async def create(self, session_id: str) -> Message:
        return await self.service.create(session_id, Role.ASSISTANT, model=MODEL, provider=PROVIDER)

    async def update(self, message: Message) -> None:
        await self.service.update(message)


class NaiveStore:
    """Every update written before it returns: ``encode_parts`` + one UPDATE with apsw."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, session_id: str) -> Message:
        message = self.db.insert_message(
            session_id=session_id, role=Role.ASSISTANT, model=MODEL, provider=PROVIDER
        )
        await trio.lowlevel.checkpoint()
        return message

    async def update(self, message: Message) -> None:
        finish = message.finish_part()
        self.db.write_parts(
            message.id, encode_parts(message.parts), None if finish is None else finish.time
        )
        await trio.lowlevel.checkpoint()


class FloorStore(NaiveStore):
    """Creates rows like the naive store; ``update`` is one checkpoint and nothing else."""

    async def update(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
