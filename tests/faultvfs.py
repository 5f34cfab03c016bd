"""An apsw VFS shim over SQLite's own VFS that fails chosen calls and simulates power loss.

Faults: arm ``FaultVFS.fault`` with a ``Fault`` and the k-th call of that method (counted
over every file the VFS has open, from the moment ``arm()`` is called) raises the SQLite
error, once or on every call from then on ("sticky") until ``clear()``. This is how
SQLite's own test suite makes the disk fail.

Power loss: with ``track_unsynced`` on, every ``xWrite`` / ``xTruncate`` since a file's
last ``xSync`` is remembered with the bytes it overwrote. ``power_cut(rng, dest)`` writes
to ``dest`` what the files would hold after the machine lost power at that instant: the
synced content, plus a random subset of the unsynced writes (some of them torn at a
512-byte boundary), in any order the disk may have chosen. The live files are not
touched, so one run can take many cuts.

Only the Trio thread uses the shim (SQLite calls run inline there), so no locking.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import attrs

METHODS = ("xWrite", "xSync", "xLock", "xRead", "xTruncate")
CODES = {
    "IOERR": apsw.SQLITE_IOERR,
    "FULL": apsw.SQLITE_FULL,
    "BUSY": apsw.SQLITE_BUSY,
}
_SECTOR = 512


@attrs.frozen
class Fault:
    """Fail the ``k``-th call (1-based) of ``method``; every later one too if ``sticky``."""

    method: str
    k: int
    code: int
    sticky: bool = False


@attrs.define
class _Op:
    """One unsynced change to a file, with what it overwrote (to undo it at a cut)."""

    offset: int  # for a truncate: the new size
    data: bytes | None  # None for a truncate
    old_size: int
    old: bytes  # the bytes the change overwrote or cut off


class FaultFile(apsw.VFSFile):
    """A file of the default VFS whose calls go through ``FaultVFS``'s checks."""

    def __init__(self, vfs: FaultVFS, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)
        self._vfs = vfs
        self.path = name if isinstance(name, str) else (name.filename() if name else "")
        self.unsynced: list[_Op] = []
        self.closed = False

    # -- the faulting calls ------------------------------------------------------------

    def xRead(self, amount: int, offset: int) -> bytes:
        self._vfs.check("xRead")
        return super().xRead(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._vfs.check("xWrite")
        self._vfs.before_write()
        if self._vfs.track_unsynced:
            size = super().xFileSize()
            old = self._read(offset, len(data), size)
            self.unsynced.append(_Op(offset, bytes(data), size, old))
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self._vfs.check("xSync")
        super().xSync(flags)
        self.unsynced.clear()

    def xLock(self, level: int) -> None:
        self._vfs.check("xLock")
        super().xLock(level)

    def xTruncate(self, newsize: int) -> None:
        self._vfs.check("xTruncate")
        if self._vfs.track_unsynced:
            size = super().xFileSize()
            old = self._read(newsize, max(0, size - newsize), size)
            self.unsynced.append(_Op(newsize, None, size, old))
        super().xTruncate(newsize)

    def xClose(self) -> None:
        self.closed = True
        super().xClose()

    # -- power loss --------------------------------------------------------------------

    def _read(self, offset: int, amount: int, size: int) -> bytes:
        # The base VFS reads past the end as nothing at all, so clamp to the size.
        amount = min(amount, size - offset)
        if amount <= 0:
            return b""
        return bytes(super().xRead(amount, offset))

    def contents(self) -> bytearray:
        size = super().xFileSize()
        return bytearray(self._read(0, size, size))

    def after_power_loss(self, rng: random.Random) -> bytearray:
        """What the file holds after a power cut now: synced bytes plus a random subset."""
        image = self.contents()
        for op in reversed(self.unsynced):  # back to the last synced state
            _undo(image, op)
        for op in self.unsynced:
            roll = rng.random()
            if roll < 0.4:
                continue  # never reached the platter
            if op.data is not None and roll < 0.55 and len(op.data) > _SECTOR:
                # Torn: the first sectors made it, the rest did not.
                keep = rng.randrange(1, len(op.data) // _SECTOR + 1) * _SECTOR
                _apply(image, attrs.evolve(op, data=op.data[:keep]))
            else:
                _apply(image, op)
        return image


def _undo(image: bytearray, op: _Op) -> None:
    if op.data is None:
        del image[op.offset :]
        image.extend(op.old)
    else:
        image[op.offset : op.offset + len(op.old)] = op.old
        del image[op.old_size :]


def _apply(image: bytearray, op: _Op) -> None:
    if op.data is None:
        del image[op.offset :]
        image.extend(bytes(max(0, op.offset - len(image))))
        return
    end = op.offset + len(op.data)
    if len(image) < op.offset:
        image.extend(bytes(op.offset - len(image)))
    image[op.offset : end] = op.data


class FaultVFS(apsw.VFS):
    """See the module docstring. Use as a context manager: it unregisters on exit."""

    def __init__(self, name: str = "faultvfs") -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self.fault: Fault | None = None
        self.fired = 0
        self.counting = False
        self.track_unsynced = False
        self.files: list[FaultFile] = []
        self.writes = 0  # xWrite calls since arm()
        self.on_write: Callable[[int], None] | None = None
        super().__init__(name, "")

    def __enter__(self) -> FaultVFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unregister()

    def xOpen(self, name: Any, flags: list[int]) -> FaultFile:
        file = FaultFile(self, name, flags)
        self.files.append(file)
        return file

    def arm(self, fault: Fault | None = None) -> None:
        """Start counting calls from zero, with ``fault`` (if any) armed."""
        self.counts.clear()
        self.writes = 0
        self.fired = 0
        self.fault = fault
        self.counting = True

    def clear(self) -> None:
        """The disk is healthy again: no call fails from now on."""
        self.fault = None

    def check(self, method: str) -> None:
        if not self.counting:
            return
        self.counts[method] += 1
        fault = self.fault
        if fault is None or fault.method != method:
            return
        n = self.counts[method]
        if n == fault.k or (fault.sticky and n > fault.k):
            self.fired += 1
            raise apsw.exception_for(fault.code)

    def before_write(self) -> None:
        if self.counting:
            self.writes += 1
            if self.on_write is not None:
                self.on_write(self.writes)

    def power_cut(self, rng: random.Random, dest: Path) -> list[Path]:
        """Write to ``dest`` each open file as a power cut now would leave it.

        The ``-shm`` index is not a file of this VFS (SQLite rebuilds it on recovery), so
        it is not copied, as a reboot would lose it too.
        """
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for file in self.files:
            if file.closed or not file.path:
                continue
            target = dest / Path(file.path).name
            target.write_bytes(file.after_power_loss(rng))
            written.append(target)
        return written
