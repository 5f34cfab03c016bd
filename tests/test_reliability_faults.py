"""Disk faults through an apsw VFS shim: the k-th xWrite/xSync/xLock/xRead/xTruncate fails.

For every method, error code (IOERR, FULL, BUSY) and mode (once, sticky until cleared),
k is raised until a run completes without the fault firing. After each run: every error
a caller saw was a typed ``MsgstoreError``; the service still held each message's newest
accepted state; once the fault cleared, that state reached the file without any further
call; every acknowledged state is in the file and ``integrity_check`` is ``ok``.

The sweep runs with ``wal_autocheckpoint`` at 8 pages so that checkpoints (the only
place SQLite calls xSync and xTruncate in WAL mode with ``synchronous=NORMAL``) happen
inside the faulted stretch.
"""

from __future__ import annotations

import math
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from conftest import long_sweeps
from faultvfs import CODES, METHODS, Fault, FaultVFS
from scenario import (
    Track,
    create_tracks,
    drive,
    flush_all,
    integrity,
    open_plain,
    stored_parts,
    verdict,
)

import msgstore
from msgstore import MsgstoreError, open_message_service

pytestmark = pytest.mark.reliability

_MESSAGES = 3
_LENGTH = 14
_RETRY_SETTLE = 10.0  # seconds of Trio time: longer than the longest retry backoff


@pytest.fixture
def vfs() -> Iterator[FaultVFS]:
    with FaultVFS("faultvfs-sweep") as shim:
        yield shim


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated file with one session and the change log, copied for every run
    (migrating costs more, and the faults are for the stream's writes)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    with msgstore.connect(path) as db:
        db.install_feed()
        db.create_session("faults", id="s1")
    return path


@attrs.define
class Outcome:
    fired: int
    caller_errors: list[BaseException]
    lost: list[str]
    foreign: list[str]
    not_landed: list[str]  # buffered states that did not reach the file once the fault cleared
    integrity: str
    counts: Counter[str]


def run_case(
    template: Path, workdir: Path, vfs: FaultVFS, fault: Fault | None, seed: int
) -> Outcome:
    """One streaming run with ``fault`` armed, checked; see the module docstring."""
    path = workdir / f"run-{seed}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, path)
    vfs.files.clear()
    db = msgstore.connect(path, vfs=vfs.name)
    db.connection.pragma("wal_autocheckpoint", 8)
    errors: list[BaseException] = []
    tracks: list[Track] = []
    not_landed: list[str] = []
    latest: dict[str, int] = {}

    async def main() -> None:
        rng = random.Random(seed)
        # A short busy_timeout: a sticky BUSY (say on the checkpoint's xTruncate) makes
        # every writer wait it out, and each try is a real commit on the real disk.
        async with open_message_service(db, debounce=0.033, busy_timeout=2.0) as svc:
            # Armed once the service runs: the sweep is of the stream's I/O (a failure
            # while the service opens is a typed error of its own, tested elsewhere).
            vfs.arm(fault)
            for _ in range(_MESSAGES):
                for _attempt in range(5):
                    try:
                        tracks.extend(await create_tracks(svc, "s1", rng, 1, _LENGTH))
                        break
                    except MsgstoreError as exc:
                        errors.append(exc)
                        await trio.sleep(0.1)
            await drive(svc, tracks, rng, errors=errors)
            if rng.random() < 0.5:
                await flush_all(svc, tracks, errors)
            # The service must still hold every message's newest accepted state.
            for track in tracks:
                index = track.index_of[msgstore.encode_parts((await svc.get(track.id)).parts)]
                assert track.returned <= index <= track.attempted, "buffered state lost"
                latest[track.id] = index
            vfs.clear()
            # No further call: the actors' own retries must land everything.
            await trio.sleep(_RETRY_SETTLE)
            with open_plain(path) as con:
                on_disk = stored_parts(con)
            for track in tracks:
                if on_disk.get(track.id) != track.encoded[latest[track.id]]:
                    not_landed.append(track.id)
            # A write that failed after its terminal update returned (nothing can) or a
            # flush now: both must be no-ops or succeed.
            await flush_all(svc, tracks)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        vfs.counting = False
        counts = Counter(vfs.counts)
        fired = vfs.fired
        db.close()
    with open_plain(path) as con:
        check = integrity(con)
        result = verdict(stored_parts(con), tracks)
    for track in tracks:
        if result.stored.get(track.id, -1) != latest[track.id]:
            not_landed.append(f"{track.id} (after shutdown)")
    return Outcome(fired, errors, result.lost, result.foreign, not_landed, check, counts)


def ks(total: int) -> Iterator[int]:
    """The k values to try: all of them in the long sweep, about eight in CI, then on
    past the end until a run completes without the fault firing."""
    stride = 1 if long_sweeps() else max(1, math.ceil(total / 8))
    yield from range(1, total + 1, stride)
    k = total + 1
    while True:
        yield k
        k += 1


@pytest.mark.parametrize("sticky", [False, True], ids=["once", "sticky"])
@pytest.mark.parametrize("code", list(CODES))
@pytest.mark.parametrize("method", METHODS)
def test_fault_sweep_loses_no_acknowledged_state(
    template: Path, tmp_path: Path, vfs: FaultVFS, method: str, code: str, sticky: bool
) -> None:
    dry = run_case(template, tmp_path, vfs, None, seed=0)
    assert dry.fired == 0 and not dry.caller_errors and not dry.lost
    total = dry.counts[method]
    runs = fired_runs = caller_errors = 0
    for k in ks(total):
        outcome = run_case(template, tmp_path, vfs, Fault(method, k, CODES[code], sticky), seed=k)
        runs += 1
        where = f"{method} #{k} {code} {'sticky' if sticky else 'once'}"
        for exc in outcome.caller_errors:
            assert isinstance(exc, MsgstoreError), f"{where}: untyped error {exc!r}"
        assert outcome.integrity == "ok", f"{where}: {outcome.integrity}"
        assert not outcome.foreign, f"{where}: {outcome.foreign}"
        assert not outcome.lost, f"{where}: acknowledged state lost: {outcome.lost}"
        assert not outcome.not_landed, (
            f"{where}: did not land after the fault: {outcome.not_landed}"
        )
        caller_errors += len(outcome.caller_errors)
        if outcome.fired == 0:
            break
        fired_runs += 1
    print(
        f"REPORT faults method={method} code={code} mode={'sticky' if sticky else 'once'} "
        f"calls={total} runs={runs} fired_runs={fired_runs} caller_errors={caller_errors} lost=0"
    )


# -- one message's fault does not stop the others -------------------------------------------


async def test_a_failing_message_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    with msgstore.connect(db_path) as db:
        db.create_session("faults", id="s1")
        broken: set[str] = set()
        real_write = db.write_parts

        def write_parts(id: str, parts_json: str, finished_at: int | None) -> bool:
            if id in broken:
                raise msgstore.StorageError(f"write message {id!r}: disk on fire")
            return real_write(id, parts_json, finished_at)

        db.write_parts = write_parts  # type: ignore[method-assign]
        rng = random.Random(7)
        async with open_message_service(db, debounce=0.033) as svc:
            tracks = await create_tracks(svc, "s1", rng, 4, 30)
            broken.add(tracks[0].id)
            errors: list[BaseException] = []
            with trio.fail_after(60):
                await drive(svc, tracks, rng, errors=errors)
            assert errors and all(isinstance(e, msgstore.StorageError) for e in errors)
            with open_plain(db_path) as con:
                result = verdict(stored_parts(con), tracks[1:])
            # The others streamed to their end and are on disk, finish parts included.
            assert not result.lost
            assert all(result.stored[t.id] == len(t.states) - 1 for t in tracks[1:])
            assert svc.statistics().write_errors > 0
            broken.clear()
            await trio.sleep(_RETRY_SETTLE)
            with open_plain(db_path) as con:
                assert stored_parts(con)[tracks[0].id] == tracks[0].encoded[-1]


# -- faults while opening -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["xRead", "xWrite", "xLock", "xSync"])
def test_fault_while_opening_raises_a_typed_error_and_a_retry_opens(
    tmp_path: Path, vfs: FaultVFS, method: str
) -> None:
    k = 1
    while True:
        path = tmp_path / f"open-{method}-{k}.db"
        vfs.arm(Fault(method, k, CODES["IOERR"]))
        try:
            db = msgstore.connect(path, vfs=vfs.name)
        except MsgstoreError:
            assert vfs.fired
            vfs.clear()
        else:
            vfs.clear()
            db.close()
            if not vfs.fired:
                break
        with msgstore.connect(path) as db, open_plain(path) as con:
            assert integrity(con) == "ok"
            db.create_session("after the fault")
        k += 1 if long_sweeps() or k < 10 else 7
    print(f"REPORT open-faults method={method} k_max={k}")


async def test_a_message_that_cannot_be_written_does_not_stop_the_final_flush(
    autojump_clock: trio.testing.MockClock, db_path: Path
) -> None:
    with msgstore.connect(db_path) as db:
        db.create_session("faults", id="s1")
        real_write = db.write_parts
        broken: set[str] = set()

        def write_parts(id: str, parts_json: str, finished_at: int | None) -> bool:
            if id in broken:
                raise msgstore.StorageError(f"write message {id!r}: disk on fire")
            return real_write(id, parts_json, finished_at)

        db.write_parts = write_parts  # type: ignore[method-assign]
        with pytest.raises(msgstore.UnwrittenMessages) as raised:
            async with open_message_service(db, debounce=3600) as svc:
                messages = [await svc.create("s1", "assistant") for _ in range(3)]
                broken.add(messages[0].id)
                for n, msg in enumerate(messages):
                    msg.append_content(f"buffered {n}")
                    await svc.update(msg)
        # Leaving the block says which message was left unwritten, and why.
        assert list(raised.value.failures) == [messages[0].id]
        assert "disk on fire" in str(raised.value)
        # The first message's state could never be written; the final flush still wrote
        # the others before its time ran out.
        assert db.stored_message(messages[0].id).parts == []
        assert [db.stored_message(m.id).parts for m in messages[1:]] == [
            m.parts for m in messages[1:]
        ]
