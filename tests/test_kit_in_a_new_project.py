"""The README's test-kit example, copied into a new project as a user would.

A temporary directory outside this repository gets the pytest config the README gives
(``PYPROJECT``), the README's ``conftest.py`` and the README's test module, and pytest
runs there in a subprocess with none of msgstore's own pytest config: not its
``pyproject.toml`` (the project is elsewhere), nor ``PYTEST_*`` variables.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "## Testing code that uses msgstore"

# What the README tells a user to do, verbatim: install the extra, put these lines in
# the project's pyproject.toml (pytest-trio's trio mode: every async test runs under
# Trio), and enable the plugin in conftest.py (the README's first python block).
INSTALL = 'pip install "msgstore[testing]"'
PYPROJECT = "[tool.pytest.ini_options]\ntrio_mode = true\n"


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def _readme_conftest_and_tests() -> tuple[str, str]:
    python = _blocks(_readme_section(), "python")
    assert len(python) == 2, "the README's testing section should hold two python blocks"
    return python[0], python[1]


def _user_env() -> dict[str, str]:
    """This process's environment minus anything that configures pytest."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def test_readme_gives_the_install_line_and_the_config_this_test_uses() -> None:
    section = _readme_section()
    assert INSTALL in section
    assert PYPROJECT in _blocks(section, "toml"), (
        f"the README's testing section should give this pyproject.toml block:\n{PYPROJECT}"
    )
    conftest, _ = _readme_conftest_and_tests()
    assert conftest == 'pytest_plugins = ["msgstore.pytest_plugin"]\n'


def test_testing_extra_brings_pytest_and_pytest_trio_and_test_has_them_too() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras["testing"] == ["pytest>=8.3", "pytest-trio>=0.8"]
    assert set(extras["testing"]) <= set(extras["test"])


def test_readme_example_passes_when_copied_into_a_new_project() -> None:
    conftest, test_module = _readme_conftest_and_tests()
    expected = len(re.findall(r"^(?:async )?def test_", test_module, flags=re.MULTILINE))
    assert expected >= 1
    with tempfile.TemporaryDirectory(prefix="msgstore-user-project-") as name:
        project = Path(name).resolve()
        assert REPO not in project.parents, "the project must live outside the repository"
        (project / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
        (project / "conftest.py").write_text(conftest, encoding="utf-8")
        (project / "test_my_code.py").write_text(test_module, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
            cwd=project,
            env=_user_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # pytest used the new project's config, not msgstore's.
    assert f"rootdir: {project}" in proc.stdout, out
    assert "configfile: pyproject.toml" in proc.stdout, out
    assert re.search(rf"=+ {expected} passed in [^,]*=+\s*$", proc.stdout), out
