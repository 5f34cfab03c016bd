"""What msgstore adds to crush's file: the change log, the delta journal, their triggers.

Every object is named ``msgstore_*`` and nothing of crush's is altered, so crush (and
``gobench dump``) still open the file and see their own schema unchanged.

* ``msgstore_log``: one row per committed change of a message or a session row, made by
  triggers, so that every writer is numbered: this process, another msgstore, crush,
  a plain ``sqlite3`` script. It records *that* a row changed (``kind``, ``item``,
  ``op``, and a message's session as ``parent``), never a copy of the row.
* ``msgstore_journal``: one row per window a msgstore actor wrote while a message
  streams, holding only what changed since the previous window (``_journal.py``). Its
  ``base`` says which ``parts`` text of the message row it builds on; rows whose base
  no longer matches the row were folded into it and are dead.

Both tables share one sequence: a new ``seq`` is one more than the largest in either,
read from the two rowid b-trees' last pages (no counter row to rewrite, which would
cost a page per commit). Nothing ever deletes the largest ``seq`` without writing a
larger one first, so the numbering never goes back, across restarts and processes.

The log prunes itself in a trigger, so the bound holds while crush alone writes the
file: once its span passes ``2 * LOG_KEEP`` changes, everything older than the newest
``LOG_KEEP`` goes, in one statement (amortised, not a delete per insert). The journal
only grows while a msgstore service streams, and that service deletes what it folded.
"""

from __future__ import annotations

from typing import Final

import apsw

#: A resume (``subscribe(after=SEQ)``) finds every change of the last this-many seqs.
LOG_KEEP: Final = 100_000

# crush's columns, but for updated_at: crush's own trigger sets it after every UPDATE,
# which would otherwise log each change twice.
_MESSAGE_COLUMNS: Final = (
    "id, session_id, role, parts, model, created_at, finished_at, provider, is_summary_message"
)
_SESSION_COLUMNS: Final = (
    "id, parent_session_id, title, message_count, prompt_tokens, completion_tokens, cost, "
    "created_at, summary_message_id, todos"
)

NEXT_SEQ: Final = (
    "(max(coalesce((SELECT max(seq) FROM msgstore_log), 0), "
    "coalesce((SELECT max(seq) FROM msgstore_journal), 0)) + 1)"
)


def _log(kind: str, item: str, op: str, parent: str) -> str:
    return (
        f"INSERT INTO msgstore_log (seq, kind, item, op, parent) "
        f"VALUES ({NEXT_SEQ}, '{kind}', {item}, '{op}', {parent});"
    )


TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS msgstore_log (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    op TEXT NOT NULL,
    parent TEXT
)""",
    # A message row's newest write, for readers of the journal (``_storage_feed``). Only
    # row writes (creates, folds, deletes, sessions) touch it, never a window.
    "CREATE INDEX IF NOT EXISTS msgstore_log_item ON msgstore_log (kind, item, seq)",
    """CREATE TABLE IF NOT EXISTS msgstore_journal (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    base INTEGER NOT NULL,
    delta TEXT NOT NULL
)""",
)

TRIGGERS: Final = {
    "msgstore_message_created": f"""CREATE TRIGGER IF NOT EXISTS msgstore_message_created
AFTER INSERT ON messages
BEGIN
{_log("message", "NEW.id", "created", "NEW.session_id")}
END""",
    "msgstore_message_updated": f"""CREATE TRIGGER IF NOT EXISTS msgstore_message_updated
AFTER UPDATE OF {_MESSAGE_COLUMNS} ON messages
BEGIN
{_log("message", "NEW.id", "updated", "NEW.session_id")}
END""",
    "msgstore_message_deleted": f"""CREATE TRIGGER IF NOT EXISTS msgstore_message_deleted
AFTER DELETE ON messages
BEGIN
{_log("message", "OLD.id", "deleted", "OLD.session_id")}
END""",
    "msgstore_session_created": f"""CREATE TRIGGER IF NOT EXISTS msgstore_session_created
AFTER INSERT ON sessions
BEGIN
{_log("session", "NEW.id", "created", "NULL")}
END""",
    "msgstore_session_updated": f"""CREATE TRIGGER IF NOT EXISTS msgstore_session_updated
AFTER UPDATE OF {_SESSION_COLUMNS} ON sessions
BEGIN
{_log("session", "NEW.id", "updated", "NULL")}
END""",
    "msgstore_session_deleted": f"""CREATE TRIGGER IF NOT EXISTS msgstore_session_deleted
AFTER DELETE ON sessions
BEGIN
{_log("session", "OLD.id", "deleted", "NULL")}
END""",
    "msgstore_log_prune": f"""CREATE TRIGGER IF NOT EXISTS msgstore_log_prune
AFTER INSERT ON msgstore_log
WHEN NEW.seq - (SELECT min(seq) FROM msgstore_log) >= {2 * LOG_KEEP}
BEGIN
DELETE FROM msgstore_log WHERE seq <= NEW.seq - {LOG_KEEP};
END""",
}

_INSTALLED = "SELECT count(*) FROM sqlite_master WHERE name IN ('msgstore_log', 'msgstore_journal')"


def is_installed(con: apsw.Connection) -> bool:
    return bool(con.execute(_INSTALLED).get == 2)


def install(con: apsw.Connection) -> None:
    """Create what is missing (idempotent); the caller holds a write transaction."""
    for statement in TABLES:
        con.execute(statement)
    for statement in TRIGGERS.values():
        con.execute(statement)


def remove(con: apsw.Connection) -> None:
    """Drop every msgstore object of the feed (the caller folded the journal first)."""
    for name in TRIGGERS:
        con.execute(f"DROP TRIGGER IF EXISTS {name}")
    con.execute("DROP INDEX IF EXISTS msgstore_log_item")
    con.execute("DROP TABLE IF EXISTS msgstore_journal")
    con.execute("DROP TABLE IF EXISTS msgstore_log")
