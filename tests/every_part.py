"""A database made through the API that holds every part type (shared by the CLI tests)."""

from __future__ import annotations

from pathlib import Path

import attrs

from msgstore import (
    BinaryContent,
    Finish,
    ImageURLContent,
    Part,
    ReasoningContent,
    Role,
    ShellCommand,
    TextContent,
    ToolCall,
    ToolResult,
    connect,
)

PARENT = "parent-session"
CHILD = "child-session"


def every_part() -> list[Part]:
    """One part of each type, each field away from its zero value where it can be."""
    return [
        ReasoningContent(
            thinking='think <hard> & "well"',
            signature="EqQBsig==",
            thought_signature="dGhvdWdodA==",
            tool_id="call_9",
            responses_data={"id": "rs_1", "summary": [{"text": "s"}], "n": 1.5, "none": None},
            started_at=1700000000,
            finished_at=1700000003,
        ),
        TextContent("Hello ``` fence\nline two ✓ 日本"),
        ImageURLContent("https://example.com/a.png?x=1&y=2", "low"),
        BinaryContent(
            path="blob.bin", mime_type="application/octet-stream", data=bytes(range(256))
        ),
        ToolCall(
            id="call_1",
            name="bash",
            input='{"command":"ls -la"}',
            provider_executed=True,
            finished=True,
        ),
        ToolResult(
            tool_call_id="call_1",
            name="bash",
            content="permission denied",
            data="aGk=",
            mime_type="text/plain",
            metadata='{"x":1}',
            is_error=True,
        ),
        ShellCommand(command="make test", output="2 failed", exit_code=2),
        Finish(
            reason="error",
            time=1700000005,
            message="Provider error",
            details="429 Too Many Requests",
        ),
    ]


@attrs.frozen
class Sample:
    path: Path
    user_id: str
    every_id: str
    tool_id: str
    unfinished_id: str
    child_message_id: str


def make_sample_db(path: Path) -> Sample:
    """Two sessions (one a sub-session), with every part type, tokens, cost and a summary."""
    with connect(path) as db:
        db.create_session("Parent: every part", id=PARENT)
        db.create_session("Child task", id=CHILD, parent_session_id=PARENT)
        user = db.insert_message(
            session_id=PARENT,
            role=Role.USER,
            parts=[TextContent("please run the tests"), Finish(reason="stop", time=0)],
        )
        every = db.insert_message(
            session_id=PARENT,
            role=Role.ASSISTANT,
            parts=every_part(),
            model="model-x",
            provider="prov-y",
        )
        tool = db.insert_message(
            session_id=PARENT,
            role=Role.TOOL,
            parts=[
                ToolResult(tool_call_id="call_1", name="bash", content="ok output"),
                ToolResult(
                    tool_call_id="call_2", name="view", content="no such file", is_error=True
                ),
                Finish(reason="stop", time=0),
            ],
        )
        db.update_message(tool.id, tool.parts)  # finished_at = 0, as crush's update sets it
        unfinished = db.insert_message(
            session_id=PARENT,
            role=Role.ASSISTANT,
            parts=[TextContent("still going")],
            model="model-x",
            is_summary_message=True,
        )
        child = db.insert_message(
            session_id=CHILD,
            role=Role.ASSISTANT,
            parts=[
                ToolCall(id="call_c", name="grep", input='{"pattern":"x"}'),
                Finish(reason="canceled", time=1700000100, message="Request canceled"),
            ],
        )
        db.connection.execute(
            "UPDATE sessions SET prompt_tokens = 1200, completion_tokens = 345, cost = 0.0123, "
            "summary_message_id = ?, todos = ? WHERE id = ?",
            (unfinished.id, '[{"content":"x","status":"pending"}]', PARENT),
        )
    return Sample(path, user.id, every.id, tool.id, unfinished.id, child.id)
