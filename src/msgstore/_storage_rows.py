"""The ``sessions`` row: its columns and the ``Session`` it reads as.

Apart from ``_storage`` so that ``_storage_reports``, whose queries ``Database``
inherits, can read sessions too without importing ``_storage``.
"""

from __future__ import annotations

from typing import TypeAlias, cast

import apsw
import attrs

_SESSION_COLUMNS = (
    "id, parent_session_id, title, message_count, prompt_tokens, completion_tokens, cost, "
    "updated_at, created_at, summary_message_id, todos"
)

# The column types the schema guarantees.
_SessionRow: TypeAlias = tuple[
    str, str | None, str, int, int, int, float, int, int, str | None, str | None
]


@attrs.frozen
class Session:
    """One row of crush's ``sessions`` table."""

    id: str
    parent_session_id: str | None
    title: str
    message_count: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    updated_at: int
    created_at: int
    summary_message_id: str | None
    todos: str | None


def _session(row: apsw.SQLiteValues) -> Session:
    return Session(*cast(_SessionRow, row))
