"""Every routine the project runs: tests, lint, typecheck, bench, demo, crash."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (the fast part of the reliability sweeps included)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


# The oldest versions pyproject.toml admits; the suite must pass on them too.
LOWEST = [
    "trio==0.27.0",
    "trio-util==0.8.0",
    "apsw==3.46.1.0",
    "cattrs==25.1.1",
    "attrs==24.3.0",
    "openai==1.98.0",
    "anthropic==0.46.0",
]


@nox.session
def lowest(session: nox.Session) -> None:
    """The test suite on the lowest supported dependency versions."""
    session.install("-e", ".[test]", *LOWEST)
    session.run("pytest", "-m", "not reliability", *session.posargs)


@nox.session
def crash(session: nox.Session) -> None:
    """The long reliability sweeps: fault injection, power loss, process kills."""
    session.install("-e", ".[test]")
    # The long sweeps run minutes per test: the hang detector gets room for them.
    session.run(
        "pytest",
        "-m",
        "reliability",
        "-o",
        "faulthandler_timeout=900",
        *session.posargs,
        env={"MSGSTORE_LONG_SWEEPS": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[cli,test]", "mypy>=1.11")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark harness (see benchmarks/README)."""
    session.install("-e", ".[cli]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a live demo on an embedded SQLite file."""
    session.install("-e", ".[cli]")
    session.run("msgstore", "demo", *session.posargs)
