"""What the demo's simulated agent says: a few coding-agent conversations, and a tokenizer.

Each script is a user prompt and the assistant turns that answer it. A turn with a
tool streams reasoning, some text and a tool call, and ends with ``tool_use``; the tool's
result comes back as a ``tool`` message and the next turn goes on from it. The last
turn ends with ``end_turn``.
"""

from __future__ import annotations

import re
from typing import Any

import attrs


@attrs.frozen
class ToolStep:
    name: str
    input: dict[str, Any]
    output: str
    is_error: bool = False
    seconds: float = 0.8  # how long the tool "runs" at speed 1


@attrs.frozen
class Turn:
    reasoning: str
    text: str
    tool: ToolStep | None = None


@attrs.frozen
class Script:
    title: str
    prompt: str
    turns: tuple[Turn, ...]


# Roughly what a BPE tokenizer gives: a word piece of up to five characters with the
# whitespace before it.
_TOKEN = re.compile(r"\s*[^\s]{1,5}|\s+")


def tokens(text: str) -> list[str]:
    """``text`` cut into model-sized deltas (they join back to ``text``)."""
    return _TOKEN.findall(text)


SCRIPTS: tuple[Script, ...] = (
    Script(
        title="Why is test_checkout flaky?",
        prompt="test_checkout fails about one run in ten on CI but never locally. Why?",
        turns=(
            Turn(
                reasoning=(
                    "A test that fails only sometimes and only on CI usually depends on "
                    "timing or ordering. I should find where test_checkout waits for "
                    "something, and look for sleeps or wall-clock deadlines."
                ),
                text="Let me find the test and what it waits on.",
                tool=ToolStep(
                    name="grep",
                    input={"pattern": "def test_checkout|sleep\\(", "path": "tests/"},
                    output=(
                        "tests/test_orders.py:88:def test_checkout(client, cart):\n"
                        "tests/test_orders.py:97:    time.sleep(0.2)  # wait for the worker\n"
                        "tests/helpers.py:12:    time.sleep(interval)"
                    ),
                ),
            ),
            Turn(
                reasoning=(
                    "There it is: a fixed 200 ms sleep waiting for a background worker. On "
                    "a loaded CI runner the worker can take longer. Let me read the test."
                ),
                text="A fixed sleep stands in for waiting on the worker. Reading the test:",
                tool=ToolStep(
                    name="view",
                    input={"file_path": "tests/test_orders.py", "offset": 85, "limit": 20},
                    output=(
                        "85  @pytest.mark.integration\n"
                        "86  # checkout enqueues a payment job; the worker settles it\n"
                        "88  def test_checkout(client, cart):\n"
                        "89      order = client.post('/checkout', json=cart).json()\n"
                        "97      time.sleep(0.2)  # wait for the worker\n"
                        "98      assert client.get(f'/orders/{order[\"id\"]}').json()"
                        "['state'] == 'paid'"
                    ),
                    seconds=0.5,
                ),
            ),
            Turn(
                reasoning=(
                    "The fix is to wait for the state change itself, with a generous "
                    "deadline, instead of guessing how long the worker needs."
                ),
                text=(
                    "The test races the payment worker. `test_checkout` posts the cart, "
                    "sleeps a fixed **200 ms**, and then expects the order to be `paid`. "
                    "Locally the worker settles the job in a few milliseconds, so the "
                    "sleep always covers it; on a busy CI runner the job sometimes "
                    "takes longer and the assertion sees `pending`.\n\n"
                    "Wait for the condition rather than for a guessed amount of time:\n\n"
                    "```python\n"
                    "def wait_for_state(client, order_id, state, timeout=10):\n"
                    "    deadline = time.monotonic() + timeout\n"
                    "    while time.monotonic() < deadline:\n"
                    "        if client.get(f'/orders/{order_id}').json()['state'] == state:\n"
                    "            return\n"
                    "        time.sleep(0.01)\n"
                    "    raise AssertionError(f'order never reached {state}')\n"
                    "```\n\n"
                    "Then replace the sleep and the assertion with "
                    "`wait_for_state(client, order['id'], 'paid')`. The test gets faster "
                    "on a quiet machine and stops failing on a slow one. The same pattern "
                    "hides in `tests/helpers.py:12`, which is worth a look too."
                ),
            ),
        ),
    ),
    Script(
        title="Add retries to the HTTP client",
        prompt="Make fetch_json in client.py retry on 502/503 with exponential backoff.",
        turns=(
            Turn(
                reasoning=(
                    "I need to see fetch_json first: how it raises on status codes and "
                    "whether it is sync or async, so the backoff sleeps the right way."
                ),
                text="Reading the client first.",
                tool=ToolStep(
                    name="view",
                    input={"file_path": "app/client.py"},
                    output=(
                        "1  import httpx\n"
                        "3  async def fetch_json(client: httpx.AsyncClient, url: str):\n"
                        "4      response = await client.get(url)\n"
                        "5      response.raise_for_status()\n"
                        "6      return response.json()"
                    ),
                    seconds=0.4,
                ),
            ),
            Turn(
                reasoning=(
                    "It is async and uses httpx. I will wrap the request in a loop with "
                    "a capped exponential backoff and jitter, retrying only 502 and 503."
                ),
                text="It is async, so the backoff must use an async sleep. Editing:",
                tool=ToolStep(
                    name="edit",
                    input={
                        "file_path": "app/client.py",
                        "old_string": "    response = await client.get(url)\n",
                        "new_string": "    response = await _get_with_retries(client, url)\n",
                    },
                    output="edit failed: old_string matches 2 places; give more context",
                    is_error=True,
                    seconds=0.3,
                ),
            ),
            Turn(
                reasoning=(
                    "The edit tool found two matches; include the function signature so "
                    "that the replacement is unique."
                ),
                text="Two matches; adding the signature line to make it unique.",
                tool=ToolStep(
                    name="edit",
                    input={
                        "file_path": "app/client.py",
                        "old_string": "url: str):\n    response = await client.get(url)\n",
                        "new_string": "url: str):\n    response = await _get_with_retries("
                        "client, url)\n",
                    },
                    output="app/client.py: 1 replacement, 14 lines added",
                    seconds=0.3,
                ),
            ),
            Turn(
                reasoning="Done. Summarise the change and the choices in it.",
                text=(
                    "`fetch_json` now goes through `_get_with_retries`, which retries a "
                    "**502** or **503** up to five times. The delay doubles each time "
                    "(0.25 s, 0.5 s, 1 s, 2 s, capped at 4 s) with full jitter, so that "
                    "many clients recovering from the same outage do not retry in "
                    "lockstep. Other errors, and a sixth failure, raise as before, so "
                    "callers see the same exceptions they handle today.\n\n"
                    "Two things I left as they were: a timeout is not retried (a slow "
                    "server under load is better left alone), and `Retry-After` is not "
                    "read yet. If the upstream sends it, honouring it is a two-line "
                    "change in the same helper."
                ),
            ),
        ),
    ),
    Script(
        title="Summarise the last commits",
        prompt="What changed in the last five commits? Short summary please.",
        turns=(
            Turn(
                reasoning="git log with stats gives the subjects and the size of each change.",
                text="Checking the log.",
                tool=ToolStep(
                    name="bash",
                    input={"command": "git log -5 --stat --format='%h %s'"},
                    output=(
                        "f221669 Export the service and broker\n"
                        " src/msgstore/__init__.py | 12 +++\n"
                        "fafef2a Add the parts JSON codec on cattrs\n"
                        " src/msgstore/_codec.py | 512 ++++++\n"
                        "50e5555 Add crush's schema migrations and the storage layer\n"
                        " src/msgstore/_schema.py | 240 +++\n"
                        "2d1765b Lint fixes in service and its tests\n"
                        "ec9437d Add the broker, terminal detection and message actors"
                    ),
                    seconds=0.6,
                ),
            ),
            Turn(
                reasoning="Group them by theme rather than listing them one by one.",
                text=(
                    "The last five commits build the storage core:\n\n"
                    "- **Actors and events** (`ec9437d`, `f221669`): one actor per message "
                    "buffers streamed updates and writes them once per window; a broker "
                    "fans events out to subscribers, and both are now exported.\n"
                    "- **Files** (`50e5555`): crush's schema and migrations, so either "
                    "program opens the other's database.\n"
                    "- **Wire format** (`fafef2a`): the parts JSON codec, byte-identical "
                    "to what the Go service writes.\n"
                    "- `2d1765b` is lint only."
                ),
            ),
        ),
    ),
    Script(
        title="What does the debounce window do?",
        prompt="In msgstore, what happens between update() and the SQL write?",
        turns=(
            Turn(
                reasoning=(
                    "The answer is in the message's actor: how it buffers, when the window "
                    "opens, and which updates skip the window. Let me look it up rather "
                    "than guess."
                ),
                text="Let me look up how an update reaches the file.",
                tool=ToolStep(
                    name="search_docs",
                    input={"query": "msgstore update() actor write window"},
                    # A description, not a quote of the code: it stays true as the code moves.
                    output=(
                        "Each message is owned by one Trio task (its actor). Updates reach "
                        "it over a memory channel. It writes when its window's deadline "
                        "comes, or at once on a terminal change."
                    ),
                    seconds=0.4,
                ),
            ),
            Turn(
                reasoning=(
                    "So: buffer the newest state, open a window at the first unwritten "
                    "update, and write at once when the change is terminal."
                ),
                text=(
                    "`update()` hands the new state to the message's actor and usually "
                    "returns at once. The actor keeps only the **newest** state: all the "
                    "updates that arrive within one window become one `UPDATE`.\n\n"
                    "The window (33 ms by default) opens at the first update that is not "
                    "written yet, and later updates do not move it, so a steady stream is "
                    "written every window and never starved. A *terminal* change skips "
                    "the wait: a finish part, a tool call added or finished, or the end "
                    "of reasoning is written before `update()` returns, and no event of "
                    "it is ever dropped. Reads always see the newest state, "
                    "buffered or written; the file lags by at most one window. This "
                    "demo's counters show the effect: compare updates with SQL writes (at "
                    "this pace, a few tokens share each write)."
                ),
            ),
        ),
    ),
    Script(
        title="Memory keeps growing in the worker",
        prompt="The worker's RSS grows by ~50 MB an hour. Can you find the leak?",
        turns=(
            Turn(
                reasoning=(
                    "Start with what holds memory: a heap summary of the running worker "
                    "shows which types grow. tracemalloc snapshots are exposed on the "
                    "debug endpoint."
                ),
                text="Taking a heap snapshot diff from the running worker.",
                tool=ToolStep(
                    name="bash",
                    input={"command": "curl -s localhost:9102/debug/heap?diff=600"},
                    output=(
                        "+48.1 MiB  app/cache.py:41  size=+48.1 MiB count=+1,203,911\n"
                        " +0.4 MiB  app/jobs.py:77   size=+0.4 MiB count=+2,010"
                    ),
                    seconds=1.0,
                ),
            ),
            Turn(
                reasoning="Nearly all of it is one line in the cache. Look at it.",
                text="Almost all of it is `app/cache.py:41`.",
                tool=ToolStep(
                    name="view",
                    input={"file_path": "app/cache.py", "offset": 35, "limit": 10},
                    output=(
                        "35  _results: dict[tuple[str, int], Result] = {}\n"
                        "38  def remember(job_id: str, attempt: int, result: Result):\n"
                        "41      _results[(job_id, attempt)] = result"
                    ),
                    seconds=0.4,
                ),
            ),
            Turn(
                reasoning="An unbounded module-level dict keyed by job and attempt.",
                text=(
                    "The leak is the module-level `_results` dict in `app/cache.py`: "
                    "every job attempt adds an entry and nothing ever removes one. At "
                    "your job rate that is about 1.2 million entries an hour, which "
                    "matches the 48 MiB growth in the heap diff.\n\n"
                    "Bound it. If results are only read back shortly after a job "
                    "finishes, an LRU cache with a fixed size is enough; if they are "
                    "needed until the job is acknowledged, delete the entry in the "
                    "acknowledgement handler instead. Either way, add a gauge for "
                    "`len(_results)` so the next leak shows up on a dashboard before it "
                    "shows up in RSS."
                ),
            ),
        ),
    ),
    Script(
        title="A haiku about SQLite",
        prompt="Write a haiku about SQLite.",
        turns=(
            Turn(
                reasoning=(
                    "Five, seven, five. Something about a single file, and the WAL "
                    "keeping readers and the writer apart."
                ),
                text=(
                    "One file holds it all;\n"
                    "the log remembers each write\n"
                    "while readers still read.\n\n"
                    "Streaming tokens in,\n"
                    "thirty-three milliseconds:\n"
                    "one write per window."
                ),
            ),
        ),
    ),
)
