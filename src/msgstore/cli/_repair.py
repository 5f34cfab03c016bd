"""``msgstore repair``: finish what a crashed process left, and say what was done.

The one command besides ``import`` that writes: it opens the file read-write (bringing
an older crush file's schema up to date, as ``import`` does), except with ``--dry-run``,
which opens it read-only and changes nothing. What is repaired, and what is left alone,
is ``msgstore.repair``'s to decide.
"""

from __future__ import annotations

import argparse
import math
import os

import msgstore
from msgstore import DatabaseError, MsgstoreError


class BadGrace(MsgstoreError):
    """``--grace`` that is not a number of seconds >= 0."""


def run_repair(args: argparse.Namespace) -> int:
    """Repair ``args.db`` (or, with ``args.dry_run``, only say what would be done)."""
    path: str = args.db
    if not os.path.exists(path):
        raise DatabaseError(f"{path}: no such file")  # never create one
    if os.path.isdir(path):
        raise DatabaseError(f"{path}: is a directory, not a database file")
    grace: float | None = args.grace
    if grace is None:  # the library's default, whatever it is
        report = msgstore.repair(path, dry_run=args.dry_run)
    elif grace >= 0 and math.isfinite(grace):
        report = msgstore.repair(path, dry_run=args.dry_run, grace=grace)
    else:
        raise BadGrace(f"--grace must be a number of seconds >= 0, got {grace:g}")
    print(report)
    return 0
