"""What every adapter shares: the loop over a stream, and finishing a message that failed.

An adapter is a ``Mapper``: it turns one provider event into ``Message`` helper calls and
says whether the message changed. ``record`` feeds it the stream, hands each change to
``svc.update`` (so coalescing, terminal writes and events work as for any producer),
and, when the stream fails or is cancelled, finishes the message as ``error`` or
``canceled`` and makes that state durable before the exception goes on up.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, TypeVar

import attrs
import trio

from msgstore import FinishReason, Message, MessageService, MsgstoreError, ToolCall

from ._usage import Usage

logger = logging.getLogger("msgstore.providers")

#: How long a failed stream's message may take to be written, cancellation shielded.
FINISH_TIMEOUT = 5.0

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)


class StreamError(MsgstoreError):
    """The stream said something the adapter cannot record, or the provider reported an
    error inside it. The message is finished as ``error`` before this is raised."""


class UnknownToolCall(StreamError):
    """A delta names a tool call (by id, index or item) that the stream never opened.

    ``Message``'s helpers ignore an unknown id without a word, so the adapters check
    first: a mapping bug or a provider quirk must show, not lose the call's input.
    """

    def __init__(self, key: str | int, what: str) -> None:
        self.key = key  # as the delta named it: a tool call's index, item id or block index
        super().__init__(f"{what} {key!r}, which the stream never opened")


class IncompleteStream(StreamError):
    """The stream ended before the provider said why the model stopped (a connection
    closed early without an error, or a server that never finishes)."""


@attrs.frozen
class Recorded:
    """What a recorded stream left: the finished message, and the usage it reported.

    ``usage`` is None when the stream carried none (OpenAI's chat stream reports it only
    with ``stream_options={"include_usage": True}``). ``redacted_thinking`` holds the
    opaque ``data`` of Anthropic's redacted thinking blocks, which crush's file format
    has no field for; pass them back to the API when you continue the conversation.
    """

    message: Message
    usage: Usage | None
    redacted_thinking: tuple[str, ...] = ()


class Mapper(Protocol[E_contra]):
    """One provider's events, turned into ``Message`` helper calls."""

    #: What ends a stream that says why the model stopped, for ``IncompleteStream``.
    final_event: str
    usage: Usage | None
    redacted_thinking: list[str]

    def apply(self, event: E_contra) -> bool:
        """Record one event; True when the message changed."""
        ...


async def record(
    svc: MessageService,
    message: Message,
    stream: AsyncIterable[E],
    mapper: Mapper[E],
    *,
    finish_timeout: float = FINISH_TIMEOUT,
) -> Recorded:
    """Feed ``stream`` to ``mapper``, each change through ``svc.update``; see the module."""
    iterator = aiter(stream)
    try:
        async for event in iterator:
            if mapper.apply(event):
                # The finish is one of these updates: terminal, so it is written
                # before update returns, and so before this does.
                await svc.update(message)
        if not message.is_finished():
            raise IncompleteStream(f"the stream ended without {mapper.final_event}")
    except BaseException as exc:
        await _finish_after_failure(svc, message, exc, stream, iterator, finish_timeout)
        raise
    return Recorded(message, mapper.usage, tuple(mapper.redacted_thinking))


def _is_error(exc: BaseException) -> bool:
    # Cancelled, KeyboardInterrupt, SystemExit (and groups of them) are someone stopping
    # the stream; anything that is an Exception is the stream failing.
    return isinstance(exc, Exception)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # A Finish's message must be storable as UTF-8, whatever an SDK put in its error.
    return text.encode("utf-8", "replace").decode("utf-8")[:500]


async def _finish_after_failure(
    svc: MessageService,
    message: Message,
    exc: BaseException,
    stream: object,
    iterator: AsyncIterator[object],
    seconds: float,
) -> None:
    # Shielded, because the usual reason to be here is a cancellation, which would
    # otherwise cancel these writes too; bounded, so a stuck disk cannot hold up the
    # caller's cancellation forever.
    with trio.move_on_after(seconds, shield=True) as scope:
        if not message.is_finished():  # a finish the provider sent already stays
            if _is_error(exc):
                message.add_finish(FinishReason.ERROR, message=_describe(exc))
            else:
                message.add_finish(FinishReason.CANCELED)
        try:
            await svc.update(message)
            await svc.flush(message.id)
        except Exception as write_error:  # the original exception matters more
            logger.error(
                "message %s: could not write its %s finish: %s",
                message.id,
                message.finish_reason(),
                write_error,
            )
        await _close(iterator, stream)
    if scope.cancelled_caught:
        logger.error("message %s: its finish was not written within %g s", message.id, seconds)


async def _close(*objects: object) -> None:
    """Release the HTTP response: the SDKs close it only when their stream is read to
    the end, and an async generator left open is finalized whenever the GC gets to it."""
    for obj in objects:
        close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
        if close is None:
            continue
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # closing a broken connection may fail again
            logger.debug("closing %r after a failed stream: %s", obj, exc)


# -- helpers the mappers share ---------------------------------------------------------


def end_reasoning(message: Message) -> bool:
    """Stamp the reasoning's end once, when the model moves on to text or a tool call.

    A terminal change for the service (written before ``update`` returns).
    """
    reasoning = message.reasoning_content()
    if reasoning.started_at and not reasoning.finished_at:
        message.finish_thinking()
        return True
    return False


def finish(message: Message, reason: FinishReason, *, details: str = "", text: str = "") -> None:
    """The provider said why the model stopped: end reasoning, then add the finish."""
    end_reasoning(message)
    message.add_finish(reason, message=text, details=details)


class ToolCalls:
    """The tool calls one stream opened, by the key its deltas name them with.

    Checks every key before it reaches ``Message``'s helpers, which would ignore an
    unknown id; keeps the calls not yet finished, so the adapters can finish them when
    the stream moves on or ends.
    """

    def __init__(self, message: Message) -> None:
        self._message = message
        self._ids: dict[str | int, str] = {}  # the delta's key -> ToolCall.id
        self._open: dict[str, None] = {}  # ids not yet finished, in the order opened

    def id_of(self, key: str | int) -> str | None:
        return self._ids.get(key)

    def open(self, key: str | int, call: ToolCall) -> None:
        """A new call, named ``key`` by later deltas."""
        if call.id in self._ids.values():
            raise StreamError(f"the stream opened tool call {call.id!r} twice")
        end_reasoning(self._message)
        self._message.add_tool_call(call)
        self._ids[key] = call.id
        self._open[call.id] = None

    def append(self, key: str | int, delta: str, what: str) -> None:
        """Extend the input of the call ``key``; ``UnknownToolCall`` when none was opened."""
        call_id = self._ids.get(key)
        if call_id is None:
            raise UnknownToolCall(key, what)
        self._message.append_tool_call_input(call_id, delta)

    def replace(self, key: str | int, call: ToolCall) -> None:
        """The provider's final word on a call (its whole input)."""
        if key not in self._ids:
            self.open(key, call)
        else:
            self._message.add_tool_call(call)
        if call.finished:
            self._open.pop(call.id, None)

    def finish(self, key: str | int) -> bool:
        call_id = self._ids.get(key)
        if call_id is None:
            raise UnknownToolCall(key, "a finish for tool call")
        if self._open.pop(call_id, 0) is None:
            self._message.finish_tool_call(call_id)
            return True
        return False

    def finish_all(self) -> bool:
        """Finish every open call (the stream moved on, or ended); True if any was open."""
        if not self._open:
            return False
        for call_id in self._open:
            self._message.finish_tool_call(call_id)
        self._open.clear()
        return True
