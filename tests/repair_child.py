"""A process "streaming" a message: ``python tests/repair_child.py DB SESSION_ID``.

It takes a lease on DB, creates an assistant message in SESSION_ID that is left mid-
stream (some text, a tool call whose input is still coming, no finish), claims it, and
prints one JSON line ``{"message": ID, "owner": OWNER, "lock": PATH}``, flushed. Then it
waits on stdin: the parent kills it (SIGKILL: what a crash looks like), or closes stdin,
and the child releases its lease cleanly and exits 0.
"""

from __future__ import annotations

import json
import sys

import msgstore
from msgstore import Role, TextContent, ToolCall
from msgstore._lease import Lease


def main() -> None:
    path, session_id = sys.argv[1], sys.argv[2]
    with msgstore.connect(path) as db:
        lease = Lease.acquire(db)
        message = db.insert_message(
            session_id=session_id,
            role=Role.ASSISTANT,
            parts=[
                TextContent("Let me look at "),
                ToolCall(id="call-live", name="view", input='{"path": "READ'),
            ],
        )
        lease.claim(message.id)
        line = {"message": message.id, "owner": lease.owner, "lock": lease.lock_path}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it (or kills us first)
        lease.release()


if __name__ == "__main__":
    main()
