"""The README's tutorial runs as written, in a fresh directory, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgstore

README = Path(__file__).resolve().parent.parent / "README.md"


def tutorial_code() -> str:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- tutorial:", 1)[1].split("```python", 1)[1]
    return block.split("```", 1)[0]


def test_the_readme_tutorial_runs_and_leaves_a_finished_turn(tmp_path: Path) -> None:
    script = tmp_path / "turn.py"
    script.write_text(tutorial_code(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "[assistant] 'It describes msgstore, a message store.'" in done.stdout
    with msgstore.connect(tmp_path / "agent.db", read_only=True) as db:
        (session,) = db.list_sessions()
        assert (session.prompt_tokens, session.completion_tokens) == (812, 64)
        roles = [m.role.value for m in db.stored_messages(session.id)]
        assert roles == ["user", "assistant", "tool", "assistant"]
        reasons = [m.finish_reason() for m in db.stored_messages(session.id)]
        assert reasons == ["stop", "tool_use", "stop", "end_turn"]
