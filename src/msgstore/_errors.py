"""The exception hierarchy: one base class, one subclass per thing a caller can act on."""

from __future__ import annotations


class MsgstoreError(Exception):
    """Base class of every error msgstore raises on purpose."""


class InvalidPart(MsgstoreError, TypeError):
    """A part (or a field of one) has the wrong type; the message names the field."""


class CorruptRecord(MsgstoreError):
    """A stored ``parts`` value cannot be decoded (bad JSON or an unknown part type)."""

    def __init__(self, reason: str, *, message_id: str | None = None) -> None:
        self.reason = reason
        self.message_id = message_id
        where = f" in message {message_id!r}" if message_id is not None else ""
        super().__init__(f"corrupt parts{where}: {reason}")


class DatabaseError(MsgstoreError):
    """The database file cannot be used (not a database, corrupt, unreadable).

    The SQLite error that caused it is kept in ``__cause__``.
    """


class StorageError(MsgstoreError):
    """A read or write through SQLite failed (disk full, I/O error, busy too long).

    The SQLite error is kept in ``__cause__``. Buffered state that failed to write
    stays buffered and is tried again.
    """


class NotFound(MsgstoreError, LookupError):
    """Base class for a row that does not exist."""


class MessageNotFound(NotFound):
    """No message has this id (never created, or deleted)."""


class SessionNotFound(NotFound):
    """No session has this id."""


class InvalidUpdate(MsgstoreError, ValueError):
    """An update that can never be written (wrong type, unknown id); nothing accepted is lost."""


class ServiceClosed(MsgstoreError):
    """The message service's scope has ended; it accepts no more calls."""


class ReloadRequired(MsgstoreError):
    """A subscriber cannot be told every change it missed: reload, then read on.

    Raised by a subscription's ``receive`` (so it ends an ``async for`` loop) when a
    resume asks for changes older than the log still holds, or when the subscriber left
    more than ``max_pending`` messages with unread changes. The subscription itself
    goes on: read the state you show again (``svc.list``...), then iterate it again;
    every change committed after the subscription began still arrives. ``seq`` is the
    newest change number known when it was raised.
    """

    def __init__(self, reason: str, *, seq: int | None) -> None:
        super().__init__(reason)
        self.seq = seq


class DatabaseBusy(StorageError):
    """Another connection holds the write lock; the write may be tried again later."""


class ActorFailed(MsgstoreError):
    """A message's actor failed more often than its restart policy allows and was
    stopped; ``__cause__`` is its last error."""

    def __init__(self, reason: str, *, message_id: str) -> None:
        super().__init__(reason)
        self.message_id = message_id


class UnwrittenMessages(StorageError):
    """Leaving the service left messages unwritten (their final writes failed).

    ``failures`` maps each message id to its error; every message was tried.
    """

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = dict(failures)
        ids = ", ".join(repr(i) for i in list(self.failures)[:10])
        more = f" and {len(self.failures) - 10} more" if len(self.failures) > 10 else ""
        first = next(iter(self.failures.values()))
        super().__init__(
            f"{len(self.failures)} message(s) left unwritten at shutdown: {ids}{more} "
            f"(first error: {first})"
        )
