"""Repair: make a file usable again after a process died in the middle of a turn.

A process killed while it streams leaves assistant messages with no finish part (a UI
shows them streaming for ever) and tool calls with no tool result (a provider rejects
the conversation). ``repair`` finds both and completes them the way a provider expects:

* an unfinished assistant message keeps every part it had and gets a ``canceled``
  finish saying the stream was interrupted. Its tool calls whose input was still
  streaming are marked finished and reasoning still open is closed, so nothing in it
  looks live any more; the reasoning's end and the finish take the time the row was
  last written (when the stream stopped, to within a window);
* the tool calls of an assistant message that no tool result answers, in that message
  (a provider-executed call) or any later message of the session, get one error result
  each (``is_error``), in one new ``tool`` message that sorts right after the assistant
  message: it takes the assistant message's ``created_at``, and crush orders a session
  by ``created_at`` then insertion, so it lands after every message of that second and
  before the first of a later one (``AddedToolResults.messages_between`` counts the
  same-second messages it could not overtake).

Who may be touched. A message claimed by a live service (``_lease.py``), in this or
another process, is never touched. A message claimed by a service that is gone is
repaired, and the claims of dead services are removed. A message nobody claimed was
written by crush or by a msgstore without leases, and crush may still be streaming it
(crush writes nothing while a tool runs, and a sub-agent's turn runs in a child
session): it is repaired only when neither its session nor any sub-session has been
written for ``grace`` seconds.

One transaction does every write. The file is read twice: once without the write lock
to find what needs repair (the whole file, or only ``only_dead_owners``' sessions), then,
under ``BEGIN IMMEDIATE``, the sessions found are read again and decided again, so a
service that claims a message in between is seen. Messages are read through
``Database``'s reads and written through its writes; ``_repair_plan.py`` decides, and
holds the only SQL of its own (the new tool messages' ``created_at``, and the latest
write of a sub-session).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Final

import apsw

from . import _schema
from ._errors import DatabaseBusy, DatabaseError, MessageNotFound, StorageError
from ._lease import OwnerCheck
from ._repair_plan import Planner
from ._repair_report import RepairReport
from ._storage import Database, connect

#: Seconds an unclaimed message's conversation must have been quiet before repair
#: touches it. crush may still be streaming it, or running its tools (up to ten
#: minutes for a shell command); a finish written over a live crush stream is
#: overwritten by crush's next write, but a tool result added to a live turn answers
#: the call twice. An hour is far past both; ``grace=0`` when you know nothing runs.
DEFAULT_GRACE: Final = 3600.0


def repair(
    db: Database | str | os.PathLike[str],
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    only_dead_owners: bool = False,
) -> RepairReport:
    """Finish what dead processes left unfinished; return what was (or would be) done.

    ``db`` is a ``Database`` (not inside a transaction of its own), or the path of an
    existing file, opened for the call (read-only with ``dry_run``, which changes
    nothing: no row, no claim, no lock file). ``grace``: see ``DEFAULT_GRACE``.
    ``only_dead_owners`` looks only at sessions holding a message claimed by a service
    that is gone: exactly what a dead msgstore process left, without reading the whole
    file (what a service does when it starts). Raises ``DatabaseBusy`` when another
    connection holds the write lock and this connection does not wait for it; nothing
    was written then, so it can be retried.
    """
    if not isinstance(grace, int | float) or not grace >= 0:
        raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
    if isinstance(db, Database):
        return _repair(db, dry_run=dry_run, grace=grace, only_dead_owners=only_dead_owners)
    path = os.fspath(db)
    if not os.path.isfile(path):
        raise DatabaseError(f"{path}: no such file")
    with connect(path, read_only=dry_run) as opened:
        return _repair(opened, dry_run=dry_run, grace=grace, only_dead_owners=only_dead_owners)


def _repair(db: Database, *, dry_run: bool, grace: float, only_dead_owners: bool) -> RepairReport:
    now = time.time()
    con = db.connection
    with _transaction(db, "BEGIN"):
        check = OwnerCheck(db)
        try:
            plan = Planner(db, check, now, grace).plan(_sessions(db, check, only_dead_owners))
        finally:
            check.close()
    stale = _stale_claims(check)
    if dry_run or not (plan.finishes or plan.additions or stale or check.dead):
        return plan.report(db, dry_run=dry_run, check=check, stale=stale)
    with _transaction(db, "BEGIN IMMEDIATE"):
        check = OwnerCheck(db)
        try:
            # And the sessions of an owner that died since the first look: its claims go
            # now, so its messages are decided now, not left to the grace rule.
            again = list(dict.fromkeys(plan.sessions_to_change() + _sessions(db, check, True)))
            decided = Planner(db, check, now, grace).plan(again)
            written = decided.write(db).keeping(plan, again)
            stale = check.forget_dead(con)
        except BaseException:
            check.close()
            raise
    try:
        check.remove_dead_lock_files()
    finally:
        check.close()
    return written.report(db, dry_run=False, check=check, stale=stale)


def _stale_claims(check: OwnerCheck) -> int:
    return sum(1 for owner in check.claims.values() if owner not in check.live)


def _sessions(db: Database, check: OwnerCheck, only_dead_owners: bool) -> list[str]:
    if not only_dead_owners:
        return [s.id for s in db.all_sessions()]
    found: dict[str, None] = {}  # ordered, no repeats
    for message_id, owner in sorted(check.claims.items()):
        if owner in check.live:
            continue
        with contextlib.suppress(MessageNotFound):  # a claim outliving its message
            found[db.stored_message_header(message_id).session_id] = None
    return list(found)


@contextlib.contextmanager
def _transaction(db: Database, begin: str) -> Iterator[None]:
    """``_schema.immediate``, with SQLite's errors at BEGIN and COMMIT typed (those
    raised by the block itself pass as they are)."""
    failed_in_block = False
    try:
        with _schema.immediate(db.connection, begin):
            try:
                yield
            except BaseException:
                failed_in_block = True
                raise
    except apsw.Error as e:
        if failed_in_block:
            raise
        if isinstance(e, apsw.BusyError | apsw.LockedError):
            raise DatabaseBusy(f"repair: {db.path!r} is locked by another connection") from e
        raise StorageError(f"repair of {db.path!r} failed: {e}") from e


__all__ = ["DEFAULT_GRACE", "RepairReport", "repair"]
