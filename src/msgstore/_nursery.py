"""A nursery for an ``open_*`` context manager's background tasks.

Trio wraps whatever leaves a nursery in an ``ExceptionGroup``, so an exception raised
in the block of a context manager that owns a nursery would come out wrapped: Ctrl-C
as ``BaseExceptionGroup([KeyboardInterrupt])``, a caller's own ``ValueError`` as an
``ExceptionGroup``. Trio's guidance for such context managers: the caller's exception
comes out as itself. ``open_owned_nursery`` does exactly that, and only that: a group
that holds anything besides the block's own exception (a background task failed too)
is raised as it is, never unwrapped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (or ``exc`` itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_owned_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery()``, except that the block's own exception is not wrapped."""
    in_block: BaseException | None = None
    unwrapped = False
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                in_block = exc
                raise
    except BaseExceptionGroup as group:
        if in_block is None or sole_exception(group) is not in_block:
            raise
        unwrapped = True
    if unwrapped:
        assert in_block is not None
        raise in_block
