"""Reading a child process's output line by line from a Trio receive stream."""

from __future__ import annotations

import trio


class Lines:
    """Lines from a Trio receive stream (a child's stdout or stderr)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("the child closed its output")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()
