"""The structure of a message state, and which changes of it are terminal.

A terminal update must be written before ``update`` returns.

A state is compared with the last written one through its *structure*: is it finished,
the ``finished`` flag of each tool call in order, and whether reasoning has ended. The
structure is computed in one pass over the parts, so the per-token cost stays flat.
"""

from __future__ import annotations

from typing import NamedTuple

from ._content import PART_TYPES, Finish, Message, Part, ReasoningContent, TextContent, ToolCall
from ._errors import InvalidPart


class Structure(NamedTuple):
    finished: bool
    tool_calls_finished: tuple[bool, ...]
    reasoning_finished: bool


_PART_TYPES = frozenset(PART_TYPES)


def structure_of(message: Message, parts: list[Part] | None = None) -> Structure:
    """The structure of a state (``message``, or its id with ``parts``); also the
    check that every part is a part.

    One pass serves both, because it runs on every token.
    """
    finished = False
    calls: list[bool] = []
    reasoning_finished: bool | None = None  # only the first reasoning part counts
    for i, part in enumerate(message.parts if parts is None else parts):
        kind = type(part)
        if kind is TextContent:
            continue
        if kind is ToolCall:
            calls.append(part.finished)  # type: ignore[union-attr]
        elif kind is Finish:
            finished = True
        elif kind is ReasoningContent:
            if reasoning_finished is None:
                reasoning_finished = part.finished_at > 0  # type: ignore[union-attr]
        elif kind not in _PART_TYPES and not isinstance(part, PART_TYPES):
            raise InvalidPart(f"message {message.id!r} parts[{i}] is a {kind.__name__}, not a part")
    return Structure(finished, tuple(calls), bool(reasoning_finished))


def same_structure(old: list[Part], new: list[Part]) -> bool:
    """Whether ``new`` surely has the structure of ``old``, a validated earlier state.

    A token replaces one text, reasoning or tool-call part and leaves the others the
    very same (immutable) objects, so only the parts that differ are looked at: same
    type at the same place (which is also their validation), and the same finished
    flag. False means "not sure": compute ``structure_of``.
    """
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a is b:
            continue
        kind = type(b)
        if kind is not type(a):
            return False
        if kind is TextContent:
            continue
        if kind is ReasoningContent:
            if (a.finished_at > 0) != (b.finished_at > 0):  # type: ignore[union-attr]
                return False
        elif kind is ToolCall:
            if a.finished != b.finished:  # type: ignore[union-attr]
                return False
        else:
            return False
    return True


def is_terminal(written: Structure | None, new: Structure) -> bool:
    """Whether ``new`` must be written at once, against the last written state.

    Terminal: the message has a finish part; the number of tool calls changed; a tool
    call's ``finished`` flag changed (pairwise by position); reasoning ended. Before the
    first write, the baseline is an empty message.
    """
    if new.finished:
        return True
    if written is None:
        return bool(new.tool_calls_finished) or new.reasoning_finished
    return new.tool_calls_finished != written.tool_calls_finished or (
        new.reasoning_finished and not written.reasoning_finished
    )
