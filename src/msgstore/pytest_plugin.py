"""pytest fixtures for code that uses msgstore (opt-in; needs pytest-trio).

Install ``msgstore[testing]`` (pytest and pytest-trio), turn on pytest-trio's Trio mode
in your project's pytest config (``pyproject.toml``)::

    [tool.pytest.ini_options]
    trio_mode = true

and enable the plugin in your ``conftest.py``::

    pytest_plugins = ["msgstore.pytest_plugin"]

Fixtures (each test gets its own database file under ``tmp_path``):

- ``msgstore_options``: keyword arguments for ``open_message_service``; ``{}`` unless
  you override the fixture (``return {"debounce": 1.0}``).
- ``msgstore_harness``: a ``msgstore.testing.Harness`` (``.service``, ``.db``, ``.path``,
  ``.session_id``).
- ``msgstore_service``, ``msgstore_db``, ``msgstore_session_id``: its parts.
- ``msgstore_events``: an ``EventRecorder`` subscribed before the test starts.

Ask for ``autojump_clock`` in the test function's own arguments: pytest-trio only
uses the clock when the test itself requests it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ._service import MessageService
from ._storage import Database
from .testing import EventRecorder, Harness, open_event_recorder, open_test_service


@pytest.fixture
def msgstore_options() -> dict[str, Any]:
    """Options for ``open_message_service``; override this fixture to change them."""
    return {}


@pytest.fixture
async def msgstore_harness(
    tmp_path: Path, msgstore_options: dict[str, Any]
) -> AsyncIterator[Harness]:
    """A running service on a fresh file in ``tmp_path``, with a session."""
    async with open_test_service(tmp_path, **msgstore_options) as harness:
        yield harness


@pytest.fixture
def msgstore_service(msgstore_harness: Harness) -> MessageService:
    return msgstore_harness.service


@pytest.fixture
def msgstore_db(msgstore_harness: Harness) -> Database:
    return msgstore_harness.db


@pytest.fixture
def msgstore_session_id(msgstore_harness: Harness) -> str:
    return msgstore_harness.session_id


@pytest.fixture
async def msgstore_events(msgstore_harness: Harness) -> AsyncIterator[EventRecorder]:
    """Every event of ``msgstore_service``, recorded from before the test starts."""
    async with open_event_recorder(msgstore_harness.service) as recorder:
        yield recorder
