"""``python -m benchmarks.feed_delay``: how long another process's commit takes to
become an event (issue #11).

A child process writes the file with the standard library's ``sqlite3`` (another
SQLite library, as crush or a script would): one new message row per commit (so that
no two conflate into one event), at random intervals of 10-50 ms, printing the
wall-clock time right after each commit. The parent
runs a message service with ``poll_interval`` and one subscriber, and notes the wall
clock when each change arrives as an event. The delay is the difference, matched by
the text each commit writes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import trio

import msgstore

_CHILD = textwrap.dedent(
    """
    import json, random, sqlite3, sys, time
    path, session_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 10000")
    rng = random.Random(1)
    for k in range(count):
        time.sleep(rng.uniform(0.01, 0.05))
        parts = json.dumps([{"type": "text", "data": {"text": f"commit {k}"}}])
        con.execute(
            "INSERT INTO messages (id, session_id, role, parts, created_at, updated_at) "
            "VALUES (?, ?, 'user', ?, strftime('%s', 'now'), strftime('%s', 'now'))",
            (f"delay-{k}", session_id, parts),
        )
        print(k, time.time(), flush=True)
    """
)


async def _measure(path: Path, count: int, poll: float) -> dict[str, object]:
    received: dict[int, float] = {}
    with msgstore.connect(path) as db:
        session = db.create_session("feed delay")
        async with (
            msgstore.open_message_service(db, poll_interval=poll) as svc,
            svc.subscribe() as events,
        ):
            child = await trio.lowlevel.open_process(
                [sys.executable, "-c", _CHILD, str(path), session.id, str(count)],
                stdout=subprocess.PIPE,
            )
            assert child.stdout is not None
            output = bytearray()

            async def read_child() -> None:
                assert child.stdout is not None
                async for chunk in child.stdout:
                    output.extend(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_child)
                with trio.fail_after(60 + count * 0.1):
                    while len(received) < count:
                        event = await events.receive()
                        if event.kind == "message" and event.payload is not None:
                            text = event.payload.content().text
                            if text.startswith("commit "):
                                received.setdefault(int(text.split()[1]), time.time())
                await child.wait()
                nursery.cancel_scope.cancel()
    committed = {
        int(k): float(t) for k, t in (line.split() for line in output.decode().splitlines())
    }
    delays = sorted((received[k] - committed[k]) * 1000 for k in received if k in committed)
    return {
        "poll_interval_ms": poll * 1000,
        "commits": count,
        "events": len(delays),
        "delay_p50_ms": statistics.median(delays),
        "delay_p99_ms": delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))],
        "delay_max_ms": delays[-1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feed_delay", description=__doc__)
    p.add_argument("--commits", type=int, default=300)
    p.add_argument("--poll", type=float, default=0.02, help="poll_interval, seconds")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="msgstore-feed-delay-") as tmp:
        result = trio.run(_measure, Path(tmp) / "delay.db", args.commits, args.poll)
    result["loadavg_1m"] = os.getloadavg()[0]
    print(json.dumps(result))
    print(
        f"another process's commit -> event, poll {args.poll * 1000:g} ms: "
        f"p50 {result['delay_p50_ms']:.1f} ms, p99 {result['delay_p99_ms']:.1f} ms, "
        f"max {result['delay_max_ms']:.1f} ms over {result['events']} commits"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
