"""The ``msgstore`` command: a live demo, and a look inside crush/msgstore database files.

Read commands (``sessions``, ``show``, ``export``, ``stats``) open the file read-only
and apply no migrations, so pointing them at crush's own database never changes it;
``import`` and ``repair`` (unless ``--dry-run``) are the commands that write.
Every expected failure is one ``msgstore: error: ...`` line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO

import apsw

from msgstore import MsgstoreError, connect

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(MsgstoreError):
    """A failure the command line reports as one line."""


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- commands -----------------------------------------------------------------------------


def _terminal_width(stream: IO[str]) -> int | None:
    """The width to fit tables to: ``$COLUMNS`` when set, the terminal's width on a
    terminal, else None (piped output is never cut)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if stream.isatty():
        return shutil.get_terminal_size().columns
    return None


def _cmd_sessions(args: argparse.Namespace) -> int:
    from ._inspect import open_read_only, session_tree
    from ._render import Output, sessions_json, sessions_lines, write_json

    with open_read_only(args.db) as db:
        tree = session_tree(db)
    if args.json:
        write_json(sys.stdout.buffer, sessions_json(tree))
        return 0
    Output(sys.stdout).lines(sessions_lines(tree, width=_terminal_width(sys.stdout)))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from ._inspect import open_read_only, require_sessions
    from ._render import Output, show_json, show_lines, write_json

    with open_read_only(args.db) as db:
        (session,) = require_sessions(db, [args.session_id])
        messages = db.stored_messages(session.id)
    if args.json:
        write_json(sys.stdout.buffer, show_json(session, messages))
        return 0
    Output(sys.stdout).lines(show_lines(session, messages))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from ._inspect import file_stats, open_read_only, wal_size
    from ._render import Output, stats_json, stats_lines, write_json

    wal = wal_size(args.db)
    with open_read_only(args.db) as db:
        stats = file_stats(db, wal_size=wal)
    if args.json:
        write_json(sys.stdout.buffer, stats_json(stats))
        return 0
    Output(sys.stdout).lines(stats_lines(stats))
    return 0


@contextlib.contextmanager
def _output_file(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a file that only appears (atomically) once it is complete."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(
            f"{path} is a directory: give -o a file name (e.g. {target / 'export.jsonl'})"
        )
    if not (target.parent or Path(".")).is_dir():
        raise CliError(f"{target.parent}: no such directory")
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _cmd_export(args: argparse.Namespace) -> int:
    from ._export import export_jsonl, export_markdown
    from ._inspect import open_read_only

    write = export_jsonl if args.format == "jsonl" else export_markdown
    with open_read_only(args.db) as db, _output_file(args.output) as out:
        sessions, messages = write(db, args.session_ids, out)
    if args.output not in (None, "-"):
        print(f"exported {_n(sessions, 'session')}, {_n(messages, 'message')} to {args.output}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from ._export import counted, import_export, read_export

    source = Path(args.file)
    if not source.is_file():
        raise CliError(f"{source}: no such file")
    # Checked whole before the database is opened: a bad file creates nothing.
    with source.open("rb") as f:
        data = read_export(f, name=str(source))
    with connect(args.db) as db:
        result = import_export(db, data, skip_existing=args.skip_existing)
    renamed = (
        len(result.renamed_sessions) + len(result.renamed_messages) + len(result.renamed_files)
    )
    note = f" ({renamed} given new ids: the file already had them)" if renamed else ""
    if args.skip_existing:
        note += f"; skipped {counted(**result.skipped)} already in the database"
    what = counted(result.sessions, result.messages, result.files, result.read_files)
    print(f"imported {what} into {args.db}{note}")
    for old, new in result.renamed_sessions.items():
        print(f"session {old} -> {new}")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    import trio

    from ._watch import watch

    if args.after is not None and args.after < 0:
        raise CliError("--after must be a change number >= 0")
    if not args.poll > 0:
        raise CliError("--poll must be greater than 0")
    trio.run(lambda: watch(args.db, after=args.after, as_json=args.json, poll_interval=args.poll))
    return 0


def _cmd_detach(args: argparse.Namespace) -> int:
    with connect(args.db) as db:
        folded = db.remove_feed()
    note = f"; folded the journal of {_n(len(folded), 'message')} first" if folded else ""
    print(f"removed msgstore's change log and journal from {args.db}{note}")
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from ._repair import run_repair

    return run_repair(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import default_db_path, run_demo_cli
    from ._demo_state import DemoOptions

    if args.streams < 1:
        raise CliError("--streams must be at least 1")
    if not args.speed > 0:
        raise CliError("--speed must be greater than 0")
    db_path = Path(args.db) if args.db else default_db_path()
    if not db_path.parent.is_dir():
        raise CliError(f"{db_path.parent}: no such directory")
    from ._demo_provider import ProviderDemoOptions, run_provider_demo_cli

    provider = ProviderDemoOptions.from_flags(
        db_path=db_path,
        openai_base_url=args.openai_base_url,
        anthropic_base_url=args.anthropic_base_url,
        model=args.model,
    )
    if provider is not None:  # a real model server instead of the simulated agent
        return run_provider_demo_cli(provider)
    options = DemoOptions(
        db_path=db_path,
        streams=args.streams,
        speed=args.speed,
        seed=args.seed,
        plain=args.plain,
    )
    return run_demo_cli(options)


# -- the parser ---------------------------------------------------------------------------


def _package_version() -> str:
    try:
        return version("msgstore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help=(
            "the crush or msgstore database file (default: $MSGSTORE_DB, else the "
            "current project's .crush/crush.db, looked for in this directory and upward)"
        ),
    )
    p.set_defaults(find_db=True)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")


def _resolve_db(args: argparse.Namespace) -> None:
    """Fill in ``args.db`` when it was not given, and say on stderr which file it is."""
    from ._inspect import find_database

    found = find_database(args.db)
    if found.how is not None:
        print(f"msgstore: using {found.path} ({found.how})", file=sys.stderr)
    args.db = found.path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgstore",
        description=(
            "A Trio message store for streaming LLM output. Run the live demo, or look "
            "inside a crush/msgstore database file (read commands never change the file)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"msgstore {_package_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help: str, description: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description)
        p.set_defaults(func=func)
        return p

    p = command(
        "demo",
        _cmd_demo,
        "a simulated agent streaming several conversations through the service, live",
        "A simulated coding agent runs several conversations at once through the real "
        "message service: prompts, streamed reasoning, text and tool calls, tool results. "
        "A live view (rich) shows each message grow and counts tokens, SQL writes and "
        "events. Without a terminal it prints progress lines. Leaves a database that "
        "'msgstore show' can open.",
    )
    p.add_argument(
        "--db",
        metavar="PATH",
        help="database file to write (default: demo.db in a new temporary directory)",
    )
    p.add_argument(
        "--streams", type=int, default=4, metavar="N", help="conversations at once (default 4)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="run X times faster than a real model (default 1: about 10 seconds)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    p.add_argument("--plain", action="store_true", help="progress lines, even on a terminal")
    p.add_argument(
        "--openai-base-url",
        metavar="URL",
        help="stream a real conversation from an OpenAI-compatible server instead (e.g. "
        "http://localhost:11434/v1 for Ollama; key from $OPENAI_API_KEY, if any)",
    )
    p.add_argument(
        "--anthropic-base-url",
        metavar="URL",
        help="the same from Anthropic's API or a compatible server (e.g. "
        "https://api.anthropic.com; key from $ANTHROPIC_API_KEY)",
    )
    p.add_argument("--model", metavar="NAME", help="the model to ask, with a base URL")

    p = command(
        "sessions",
        _cmd_sessions,
        "list sessions: id, title, messages, tokens, cost, last update",
        "List every session, newest first, sub-sessions under their parent. Opens the "
        "file read-only.",
    )
    _add_db(p)
    _add_json(p)

    p = command(
        "show",
        _cmd_show,
        "print one conversation for reading",
        "Print a session's messages: roles, reasoning, text, tool calls with their ids "
        "and inputs, tool results with the call they answer, finish reasons. Opens the "
        "file read-only.",
    )
    _add_db(p)
    _add_json(p)
    p.add_argument(
        "session_id", metavar="SESSION_ID", help="a session id, or a unique prefix of one"
    )

    p = command(
        "export",
        _cmd_export,
        "write sessions as JSONL (lossless, for import) or Markdown",
        "Export sessions (all when none is named). JSONL is a versioned format that "
        "round-trips every part type; Markdown is for people. Opens the file read-only.",
    )
    _add_db(p)
    p.add_argument("session_ids", nargs="*", metavar="SESSION_ID")
    p.add_argument("--format", choices=["jsonl", "markdown"], default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")

    p = command(
        "import",
        _cmd_import,
        "load a JSONL export into a database",
        "Load a JSONL export (creating and migrating the database if needed). Rows whose "
        "id the database already has get new ids (or, with --skip-existing, are left "
        "out); nothing is overwritten, and every column, updated_at too, is kept as "
        "exported. The whole file is imported in one transaction, or nothing is.",
    )
    _add_db(p)
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip rows whose id the database already has (importing a file twice "
        "changes nothing), instead of giving them new ids",
    )

    p = command(
        "repair",
        _cmd_repair,
        "finish what a crashed process left: unfinished replies, unanswered tool calls",
        "Give assistant messages left unfinished by a process that is gone a 'canceled' "
        "finish (keeping every part), and tool calls that never got a result an error "
        "result, in one transaction. Messages a live msgstore service owns are never "
        "touched; messages nobody owns (crush's) only once their conversation has been "
        "quiet for --grace seconds. Prints what was done.",
    )
    _add_db(p)
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be repaired; change nothing"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a conversation nobody owns must have been quiet (default 3600; "
        "0 when you know crush is not running)",
    )

    p = command(
        "stats",
        _cmd_stats,
        "rows, parts by type, file and WAL size",
        "Count rows per table, messages per role and parts per type, and give the sizes "
        "of the file and its WAL. Opens the file read-only.",
    )
    _add_db(p)
    _add_json(p)

    p = command(
        "watch",
        _cmd_watch,
        "follow the file's changes live, like tail -f",
        "Print one line per change of a message or session, whoever writes the file "
        "(a msgstore service, crush, a script), as it is committed: its number, what "
        "changed and a summary of the new state. --after SEQ first prints the current "
        "state of everything changed after change SEQ. Adds msgstore's change log to the "
        "file if it has none (`msgstore detach` removes it). Stop with Ctrl-C.",
    )
    _add_db(p)
    _add_json(p)
    p.add_argument("--after", type=int, default=None, metavar="SEQ", help="resume after change SEQ")
    p.add_argument(
        "--poll",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="how often to look for other processes' commits (default 0.05)",
    )

    p = command(
        "detach",
        _cmd_detach,
        "remove msgstore's change log and journal from a file",
        "Fold any journal entries into their messages, then drop the msgstore_* tables "
        "and triggers the message service added: the file holds crush's schema alone "
        "again. Run it while no msgstore service uses the file.",
    )
    _add_db(p)
    return parser


def _fail(message: str) -> int:
    # One line, whatever the error text holds.
    print(f"msgstore: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


def _tolerant_streams() -> None:
    # A terminal whose encoding cannot show some character of a message must not turn
    # `show` into a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    _tolerant_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if getattr(args, "find_db", False):
            _resolve_db(args)
        return func(args)
    except KeyboardInterrupt:
        print("msgstore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``msgstore show ... | head``): not an error worth a word.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except MsgstoreError as e:
        return _fail(str(e))
    except apsw.Error as e:
        return _fail(f"{getattr(args, 'db', None) or 'database'}: {e}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
