"""A local HTTP/1.1 server that replays recorded event streams to the real SDK clients.

It runs in the test's own Trio run (``trio.serve_tcp`` on 127.0.0.1, a free port), so
the OpenAI and Anthropic clients talk to it through their whole stack: httpx, SSE
decoding, their own stream classes. Each request gets the next queued reply. A reply
is Server-Sent Events text (``tests/data/providers/*.sse``), sent one event per HTTP
chunk; two SSE comment lines act on the connection instead of being sent:

- ``: cut`` closes the connection there without ending the chunked body, which the
  client sees as a connection broken mid-stream (not as a normal end);
- ``: hold`` waits until the test calls ``server.release()`` (for cancelling mid-stream).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from msgstore import EventType, Message
from msgstore.testing import EventRecorder, Harness, open_event_recorder, open_test_service

DATA = Path(__file__).resolve().parent / "data" / "providers"
CUT = ": cut"
HOLD = ": hold"


def sse(name: str) -> str:
    """A recorded stream from ``tests/data/providers``."""
    return (DATA / name).read_text(encoding="utf-8")


def events_of(text: str) -> list[str]:
    """The events (and markers) of SSE text: blocks separated by blank lines."""
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [block.strip("\n") for block in blocks if block.strip("\n")]


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the JSON the client sent, or None


@attrs.frozen
class Reply:
    body: str
    status: int = 200
    content_type: str = "text/event-stream"


class ProviderServer:
    """Replays queued replies, one per request, and keeps the requests it got."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Request] = []
        self._replies: deque[Reply] = deque()
        self._released = trio.Event()

    def reply(self, body: str, *, status: int = 200, content_type: str = "") -> None:
        """Queue the reply to the next request: SSE text, or JSON with a ``status``."""
        kind = content_type or ("text/event-stream" if status == 200 else "application/json")
        self._replies.append(Reply(body, status, kind))

    def release(self) -> None:
        self._released.set()

    async def handle(self, stream: trio.SocketStream) -> None:
        # The client hangs up when it stops reading (once a stream fails, say).
        with contextlib.suppress(trio.BrokenResourceError):
            await self._handle(stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await _read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            if not self._replies:
                await _send_whole(stream, 500, "application/json", '{"error": "no reply queued"}')
                return
            reply = self._replies.popleft()
            if reply.content_type != "text/event-stream":
                await _send_whole(stream, reply.status, reply.content_type, reply.body)
                return
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            for event in events_of(reply.body):
                if event == CUT:
                    return  # no terminating chunk: the body is broken off
                if event == HOLD:
                    await self._released.wait()
                    continue
                data = (event + "\n\n").encode("utf-8")
                await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))
            await stream.send_all(b"0\r\n\r\n")


async def _read_request(stream: trio.SocketStream) -> Request | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            return None
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some()
        if not chunk:
            return None
        body += chunk
    return Request(method, path, headers, json.loads(body) if body else None)


async def _send_whole(stream: trio.SocketStream, status: int, kind: str, body: str) -> None:
    data = body.encode("utf-8")
    await stream.send_all(
        f"HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {len(data)}\r\n"
        "connection: close\r\n\r\n".encode("latin-1")
        + data
    )


@asynccontextmanager
async def open_provider_server() -> AsyncIterator[ProviderServer]:
    """A ``ProviderServer`` listening on 127.0.0.1 for the block."""
    server = ProviderServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        server.url = f"http://{host}:{port}"
        try:
            yield server
        finally:
            server.release()
            nursery.cancel_scope.cancel()


@attrs.frozen
class Rig:
    """A test's whole setup: the server, a real SDK client on it, a service, its events."""

    server: ProviderServer
    client: Any
    harness: Harness
    events: EventRecorder

    def updates(self, message_id: str) -> list[Message]:
        """The states of one message that subscribers were told of, in order."""
        return [
            e.payload
            for e in self.events.of(message_id)
            if e.type is EventType.UPDATED and isinstance(e.payload, Message)
        ]


@asynccontextmanager
async def open_rig(
    directory: Path, make_client: Callable[[str], Any], **options: Any
) -> AsyncIterator[Rig]:
    """``make_client(server_url)`` makes the client, closed with ``async with``; ``options``
    go to ``open_message_service``."""
    async with (
        open_provider_server() as server,
        make_client(server.url) as client,
        open_test_service(directory, **options) as harness,
        open_event_recorder(harness.service, sessions=True) as events,
    ):
        yield Rig(server, client, harness, events)
