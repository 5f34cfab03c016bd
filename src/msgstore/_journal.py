"""The delta journal's format: what changed in a message between two written states.

A window of a streaming message mostly appends a few tokens to one text, reasoning or
tool-input field. Rewriting the whole ``parts`` row for that makes the bytes written
grow with the square of the reply's length (crush#3579), so a window writes a *delta*
instead: a JSON list of operations on the parts list, applied in order,

* ``[i, "a", "text"]``: append to part ``i``'s streaming field (``TextContent.text``,
  ``ReasoningContent.thinking`` or ``ToolCall.input``);
* ``[i, "p", "[{...}]"]``: part ``i`` becomes the encoded part (``encode_parts`` of a
  one-part list); ``i == len(parts)`` adds it at the end.

A change that is neither (a part removed or replaced by one of another type, a
streaming part changed other than by an append) has no delta: the actor folds, i.e.
rewrites the row.

Each journal row names its *base*, the exact ``parts`` text of the row it builds on, by
``base_of`` (its length and CRC-32). A reader applies a message's journal rows whose
base matches the row it read, in ``seq`` order; once the row is rewritten (a fold,
crush, a repair), the older rows no longer match and are ignored until deleted.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any, Final

import attrs

from ._codec import decode_parts, encode_parts
from ._content import Part, ReasoningContent, TextContent, ToolCall
from ._errors import CorruptRecord

# The field of each part type that grows while it streams.
_STREAMING_FIELD: Final[dict[type[Any], str]] = {
    TextContent: "text",
    ReasoningContent: "thinking",
    ToolCall: "input",
}
_OTHER_FIELDS: Final = {
    cls: tuple(a.name for a in attrs.fields(cls) if a.name != name)
    for cls, name in _STREAMING_FIELD.items()
}


def base_of(parts_json: str) -> int:
    """Names one ``parts`` text: its length in the high bits, its CRC-32 in the low."""
    data = parts_json.encode("utf-8", "surrogatepass")
    return (len(data) << 32) | zlib.crc32(data)


def delta(old: Sequence[Part], new: Sequence[Part]) -> str | None:
    """The delta from ``old`` to ``new`` as JSON text; None when a fold must write it.

    Unchanged parts are the same objects (parts are immutable and the service copies
    only the list), so the common case is one identity check per part.
    """
    if len(new) < len(old):
        return None
    ops: list[list[object]] = []
    for i, part in enumerate(new):
        if i < len(old):
            before = old[i]
            if part is before:
                continue
            if type(part) is not type(before):
                return None
            field = _STREAMING_FIELD.get(type(part))
            if field is not None:
                # A streaming part only ever grows in the journal: anything else (an
                # edit, a reset) is rare, and a fold is simpler to read back.
                grown = _appended(before, part, field)
                if grown is None:
                    return None
                if grown:
                    ops.append([i, "a", grown])
                continue
        ops.append([i, "p", encode_parts([part])])
    if not ops:
        return None
    return json.dumps(ops, ensure_ascii=False, separators=(",", ":"))


def _appended(before: Part, after: Part, field: str) -> str | None:
    """What ``after`` appends to ``before``'s streaming field, if that is all it does."""
    old_text: str = getattr(before, field)
    new_text: str = getattr(after, field)
    if not new_text.startswith(old_text):
        return None
    for name in _OTHER_FIELDS[type(after)]:
        if getattr(before, name) != getattr(after, name):
            return None
    return new_text[len(old_text) :]


def apply(parts: list[Part], delta_json: str, *, message_id: str) -> None:
    """Apply one journal row to ``parts`` in place; ``CorruptRecord`` if it cannot be."""
    try:
        ops = json.loads(delta_json)
        for i, code, value in ops:
            if type(i) is not int or not 0 <= i <= len(parts):
                raise ValueError(f"part index {i!r} out of range")
            if code == "a":
                part = parts[i]
                field = _STREAMING_FIELD[type(part)]
                parts[i] = attrs.evolve(part, **{field: getattr(part, field) + value})
            elif code == "p":
                (new,) = decode_parts(value, message_id=message_id)
                if i == len(parts):
                    parts.append(new)
                else:
                    parts[i] = new
            else:
                raise ValueError(f"unknown operation {code!r}")
    except CorruptRecord:
        raise
    except Exception as e:  # malformed JSON, an index or a type that does not fit
        raise CorruptRecord(f"journal entry cannot be applied: {e!r}", message_id=message_id) from e
