"""The process the crash test kills: ``python tests/crash_child.py DB SEED``.

It opens DB (recovering it if an earlier child was killed), creates a session and
streams ``MESSAGES`` assistant messages through the real service on the real clock,
printing one JSON line per acknowledgement, flushed at once so that a SIGKILL right
after cannot lose it (the parent reads them from a file):

* ``{"ev": "created", "m": k, "id": ...}``: ``create`` returned (the row is written).
* ``{"ev": "acc", "id": ..., "i": i, "term": bool, "t": monotonic}``: ``update`` of
  state ``i`` returned; when ``term`` it was terminal, so it is written.
* ``{"ev": "flush", "id": ..., "i": i}``: ``flush`` returned after state ``i`` was accepted.

The parts of state ``i`` of message ``k`` depend only on ``SEED`` and ``k`` (see
``scenario``), so the parent rebuilds them to compare with the file.
"""

from __future__ import annotations

import json
import random
import sys
import time

import trio

# Run as a script, this file's directory (tests/) is first on sys.path.
from scenario import LONG_WORDS, Step, Track, plan

import msgstore

MESSAGES = 4
LENGTH = 150
# Message 0 of every round is a long reply (about 24 KB of text, few tool calls): its
# windows go to the delta journal and it is folded while it streams.
LONG_LENGTH = 600
_PAUSES = (0, 0.001, 0.002, 0.005, 0.01, 0.02)


def steps_for(seed: int, k: int) -> list[Step]:
    rng = random.Random(f"{seed}-{k}")
    if k == 0:
        return plan(rng, LONG_LENGTH, words=LONG_WORDS, call_rate=0.01)
    return plan(rng, LENGTH)


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def stream(db: msgstore.Database, session_id: str, seed: int) -> None:
    rng = random.Random(seed)
    # No repair: the parent checks each round's rows as the child left them (a repair
    # at the next round's start would add finish parts); it repairs at the very end.
    async with msgstore.open_message_service(db, repair=False) as svc:
        tracks: list[Track] = []
        for k in range(MESSAGES):
            created = await svc.create(session_id, "assistant")
            say(ev="created", m=k, id=created.id)
            tracks.append(Track.build(created, steps_for(seed, k)))
        while live := [t for t in tracks if not t.done]:
            track = rng.choice(live)
            i = track.next
            track.next += 1
            await svc.update(track.states[i])
            say(ev="acc", id=track.id, i=i, term=track.terminal[i], t=time.monotonic())
            if rng.random() < 0.03:
                await svc.flush(track.id)
                say(ev="flush", id=track.id, i=i)
            pause = rng.choice(_PAUSES)
            if pause:
                await trio.sleep(pause)
    say(ev="done")


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    with msgstore.connect(path) as db:
        session = db.create_session(f"crash round {seed}")
        say(ev="ready", session=session.id, t=time.monotonic())
        trio.run(stream, db, session.id, seed)


if __name__ == "__main__":
    main()
