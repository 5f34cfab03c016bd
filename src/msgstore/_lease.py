"""Leases: how a live message service marks the messages it owns, so repair leaves them be.

Two tables in crush's file (crush ignores tables it does not know):

* ``msgstore_owners``: one row per live service (``owner`` is a random uuid4 hex; ``pid``,
  ``host`` and ``started_at`` are there for people reading a report);
* ``msgstore_claims``: message id -> the owner that last wrote it. A service claims a
  message in the same transaction as its first write of it and keeps the claim until
  it closes: a finished reply with tool calls still needs its owner's protection while
  the tools run and their results are written.

Whether an owner is alive is not written in the file: a heartbeat would need a task on
Trio time and would make a killed process look alive until it went stale. Each lease
holds an exclusive ``flock`` on its own lock file, ``<db file>-msgstore-leases/<owner>.lock``,
for as long as it lives. The kernel drops the lock when the process dies, however it
dies (SIGKILL included), so an owner is dead exactly when another open of its file can
take the lock with ``LOCK_NB`` (or the file is gone). ``flock`` locks belong to the
open file description, not the process: two services in one process each open their own
file and are told apart, and a repair in the same process sees both as alive.

Limits, all shared with SQLite's WAL mode (which needs every connection on one host):
lock files on a local filesystem (over NFS, Linux emulates ``flock`` with POSIX locks,
which are per process); a child made with a bare ``fork()`` (no exec) inherits the lock
and keeps the owner alive until it exits (the descriptor is close-on-exec, so
``subprocess`` children do not). A database with no file (``:memory:``) has no other
process: there a lease is alive while its ``Lease`` object is (a weak registry in this
process stands in for the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeAlias, cast

import apsw
import attrs

from ._errors import DatabaseBusy, StorageError

if TYPE_CHECKING:  # at run time only its attributes are used: _schema may import this
    from ._storage import Database

# -- SQL --------------------------------------------------------------------------------

_CREATE_OWNERS = """CREATE TABLE IF NOT EXISTS msgstore_owners (
    owner TEXT PRIMARY KEY,
    pid INTEGER,
    host TEXT,
    started_at INTEGER
)"""
_CREATE_CLAIMS = """CREATE TABLE IF NOT EXISTS msgstore_claims (
    message_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL
)"""
_INSERT_OWNER = "INSERT INTO msgstore_owners (owner, pid, host, started_at) VALUES (?, ?, ?, ?)"
#: What the actor runs inside its own write transaction, the first time it writes a
#: message (``Lease.claim_statement`` gives the parameters). OR REPLACE: the latest
#: writer of a message is its owner.
CLAIM_SQL: Final = "INSERT OR REPLACE INTO msgstore_claims (message_id, owner) VALUES (?, ?)"
_DELETE_CLAIMS = "DELETE FROM msgstore_claims WHERE owner = ?"
_DELETE_OWNER = "DELETE FROM msgstore_owners WHERE owner = ?"
_HAS_LEASE_TABLES = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
    "AND name IN ('msgstore_owners', 'msgstore_claims')"
)
_OWNERS = "SELECT owner, pid, host, started_at FROM msgstore_owners"
_CLAIMS = "SELECT message_id, owner FROM msgstore_claims"
# Claims whose owner has no row: its row was removed, so nobody is alive to own them.
_DELETE_ORPHAN_CLAIMS = (
    "DELETE FROM msgstore_claims WHERE owner NOT IN (SELECT owner FROM msgstore_owners)"
)

_OwnerRow: TypeAlias = tuple[str, int | None, str | None, int | None]

LOCK_DIR_SUFFIX: Final = "-msgstore-leases"

# In-process stand-in for the lock file when the database has no file.
_UNFILED: weakref.WeakValueDictionary[str, Lease] = weakref.WeakValueDictionary()


def install_lease_tables(conn: apsw.Connection) -> None:
    """Create the two lease tables if they are missing (idempotent; one statement each)."""
    conn.execute(_CREATE_OWNERS)
    conn.execute(_CREATE_CLAIMS)


def remove_lease_tables(conn: apsw.Connection) -> None:
    """Drop the lease tables (a file handed back to crush alone)."""
    with conn:
        conn.execute("DROP TABLE IF EXISTS msgstore_claims")
        conn.execute("DROP TABLE IF EXISTS msgstore_owners")


def has_lease_tables(conn: apsw.Connection) -> bool:
    return bool(conn.execute(_HAS_LEASE_TABLES).get == 2)


def lock_dir(db: Database) -> str | None:
    """Where a database's lock files live; None for a database with no file."""
    # SQLite's own full path: the same file reached by another relative path (or,
    # SQLite resolving symlinks, another link) gives the same directory.
    filename = db.connection.filename
    return f"{filename}{LOCK_DIR_SUFFIX}" if filename else None


# -- the lease ----------------------------------------------------------------------------


class Lease:
    """One live service's mark on a database: its owner row, its claims, its lock.

    Made by ``Lease.acquire``. Synchronous: each method is one short statement (or two
    in one transaction); a locked database raises ``DatabaseBusy`` at once when the
    connection's busy handler is off, and the caller retries (``_busy.wait_out_busy``).
    """

    def __init__(self, db: Database, owner: str, lock_path: str | None, fd: int | None) -> None:
        self.db = db
        self.owner = owner
        #: The lock file, None for a database with no file.
        self.lock_path = lock_path
        self._fd = fd
        # A lease dropped without release() dies as a crashed one does (and as an
        # unfiled one does, its registry being weak): its lock goes with the object.
        self._closer = None if fd is None else weakref.finalize(self, os.close, fd)
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Lease {self.owner} on {self.db.path!r} {state}>"

    @classmethod
    def acquire(cls, db: Database) -> Lease:
        """Take the lock, then write the owner row (in that order: a row whose lock is
        free means a dead owner, so the row must never exist before the lock is held).

        Creates the lease tables when the file has none. ``DatabaseBusy`` leaves
        nothing behind (no row, no lock file), so the call can simply be retried.
        """
        if db.read_only:
            raise StorageError(f"cannot lease {db.path!r}: it is open read-only")
        owner = uuid.uuid4().hex
        directory = lock_dir(db)
        if directory is None:
            lease = cls(db, owner, None, None)
            _UNFILED[owner] = lease
        else:
            try:
                lease = cls(db, owner, *_take_new_lock(directory, owner))
            except OSError as e:  # no room, no permission: say which directory
                raise StorageError(f"cannot take a lease lock in {directory!r}: {e}") from e
        con = db.connection
        try:
            install_lease_tables(con)
            con.execute(_INSERT_OWNER, (owner, os.getpid(), socket.gethostname(), int(time.time())))
        except apsw.Error as e:
            lease._drop_lock()
            raise db.storage_error(e, "acquire a lease") from e
        except BaseException:
            lease._drop_lock()
            raise
        return lease

    def claim_statement(self, message_id: str) -> tuple[str, tuple[str, str]]:
        """The claim as (SQL, parameters), for the actor's own write transaction."""
        return CLAIM_SQL, (message_id, self.owner)

    def claim(self, message_id: str) -> None:
        """Claim one message in a transaction of its own (tests, scripts)."""
        self._check_held()
        try:
            self.db.connection.execute(*self.claim_statement(message_id))
        except apsw.Error as e:
            raise self.db.storage_error(e, f"claim message {message_id!r}") from e

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """At a clean close: delete this owner's claims and row, then drop the lock.

        On ``DatabaseBusy`` the lease is still held (retry it); any other failure
        drops the lock anyway, leaving rows that the next repair removes as a dead
        owner's. A no-op once released.
        """
        if self._released:
            return
        con = self.db.connection
        try:
            with con:
                con.execute(_DELETE_CLAIMS, (self.owner,))
                con.execute(_DELETE_OWNER, (self.owner,))
        except apsw.Error as e:
            error = self.db.storage_error(e, "release a lease")
            if not isinstance(error, DatabaseBusy):
                self.abandon()
            raise error from e
        except BaseException:
            self.abandon()
            raise
        self.abandon()

    def abandon(self) -> None:
        """Drop the lock without touching the database: what a crash does. The owner
        is dead from now on; the next repair removes its row and claims."""
        self._released = True
        self._drop_lock()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _check_held(self) -> None:
        if self._released:
            raise StorageError(f"lease {self.owner} on {self.db.path!r} was released")

    def _drop_lock(self) -> None:
        _UNFILED.pop(self.owner, None)
        closer, self._closer = self._closer, None
        if closer is None or self.lock_path is None or closer.detach() is None:
            return
        # Unlinked while still locked, so no other process ever takes this lock and
        # finds the file still there.
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        fd, self._fd = self._fd, None
        assert fd is not None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.lock_path))  # only when no other lease is left


def _take_new_lock(directory: str, owner: str) -> tuple[str, int]:
    """Create ``<owner>.lock`` and lock it; retried when a repair's sweep removed the
    file or the directory between two steps (see ``OwnerCheck.remove_dead_lock_files``)."""
    path = os.path.join(directory, f"{owner}.lock")
    for _ in range(100):
        os.makedirs(directory, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue  # the (empty) directory was removed just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A sweep may have locked and unlinked the new, not yet locked file: the
            # lock must be on the file that the path names.
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.write(fd, f"{os.getpid()}\n".encode())  # for people; never read
                return path, fd
        except (BlockingIOError, FileNotFoundError):
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    raise StorageError(f"cannot take a lease lock in {directory!r}")


# -- telling the living from the dead (for repair) ----------------------------------------


@attrs.frozen
class Owner:
    """An owner row, as a report shows it."""

    owner: str
    pid: int | None
    host: str | None
    started_at: int | None

    def describe(self) -> str:
        return f"owner {self.owner[:8]} (pid {self.pid} on {self.host})"


class OwnerCheck:
    """Which owners of a database are alive, checked once, for one repair.

    The locks of the dead owners it found stay held until ``close``: nobody can take
    them meanwhile, and ``remove_dead_lock_files`` (after the repair committed) removes
    their files while holding them.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        con = db.connection
        self.tables = has_lease_tables(con)
        self.owners: dict[str, Owner] = {}
        self.claims: dict[str, str] = {}
        if self.tables:
            # The tables' own column types (a hand-edited file is read as it is).
            for row in con.execute(_OWNERS).fetchall():
                owner, pid, host, started = cast(_OwnerRow, row)
                self.owners[owner] = Owner(owner, pid, host, started)
            self.claims = dict(cast(list[tuple[str, str]], con.execute(_CLAIMS).fetchall()))
        self._directory = lock_dir(db)
        self._held: dict[str, int] = {}  # dead owners' locks, held by us
        self.live = {o for o in self.owners if self._alive(o)}
        self.dead = set(self.owners) - self.live
        #: Claims whose owner has no row (its row is gone, so its service is).
        self.orphan_claims = sum(1 for o in self.claims.values() if o not in self.owners)

    def _alive(self, owner: str) -> bool:
        if self._directory is None:
            return owner in _UNFILED
        path = os.path.join(self._directory, f"{owner}.lock")
        try:
            # Read-only is enough for flock, and works on another user's lock file.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: the safe answer
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return True
        except BaseException:
            os.close(fd)
            raise
        self._held[owner] = fd
        return False

    def claimed_by_live_owner(self, message_id: str) -> Owner | None:
        owner = self.claims.get(message_id)
        if owner is not None and owner in self.live:
            return self.owners[owner]
        return None

    def claimed(self, message_id: str) -> bool:
        return message_id in self.claims

    def forget_dead(self, con: apsw.Connection) -> int:
        """Delete the dead owners' rows and every claim with no live owner; return how
        many claims went. Runs inside the repair's transaction."""
        if not self.tables:
            return 0
        gone = sum(1 for o in self.claims.values() if o not in self.live)
        for owner in sorted(self.dead):
            con.execute(_DELETE_CLAIMS, (owner,))
            con.execute(_DELETE_OWNER, (owner,))
        con.execute(_DELETE_ORPHAN_CLAIMS)
        return gone

    def remove_dead_lock_files(self) -> None:
        """After the commit: remove the dead owners' lock files (we hold their locks)
        and lock files no owner row names (a crash between a lease's two steps)."""
        if self._directory is None:
            return
        for owner in self._held:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._directory, f"{owner}.lock"))
        for owner in _orphan_lock_owners(self._directory, set(self.owners)):
            self._sweep(owner)
        with contextlib.suppress(OSError):
            os.rmdir(self._directory)

    def _sweep(self, owner: str) -> None:
        assert self._directory is not None
        path = os.path.join(self._directory, f"{owner}.lock")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            # A lease takes its lock before it writes its row: an unlocked file with no
            # row is a crash between the two, or a lease being born right now, which
            # notices the unlink and starts again (``_take_new_lock``).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)


def _orphan_lock_owners(directory: str, known: set[str]) -> Iterator[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        owner, dot, ext = name.rpartition(".")
        if dot and ext == "lock" and owner not in known:
            yield owner
