"""A stage's outputs change together or not at all.

A stage writes every output under one staging folder and ``stage_outputs`` swaps them all into
place when the block ends without an exception::

    with stage_outputs(OUT) as out:                  # OUT = Path("data/pugc")
        write_shards(queries, out / "queries", ...)
        write_shards(pairs, out / "pairs", ...)
        write_json_atomic(metrics, out / "metrics.json")
    # every output is in place, or (the block raised) none of them changed

A stage whose writes are spread over its ``main`` uses the same protocol without re-indenting them:
``out = begin_outputs(OUT)``, write under ``out``, then ``commit_outputs(OUT)``.

How: ``out`` is ``OUT/.staging`` (inside ``OUT``, so every rename stays on one file system). When
the block ends, a commit journal ``OUT/.commit.json`` naming the staged entries is written
atomically; from then on the new outputs are the truth. Each entry is then swapped in: the old one
is renamed into ``OUT/.backup/``, the new one renamed from the staging folder into its place,
folders first and ``metrics*.json`` last; then the journal, backup and staging folder go (a Ctrl-C
meanwhile is held until the swap is done). A crash
(``kill -9``, power cut) at any point leaves either no journal, and the next start discards the
staging folder (rolled back: the old outputs were never touched), or a journal, and the next start
finishes the swap (rolled forward; unless what it swapped in was put back since, by ``dvc checkout`` or DVC's run
cache: discarded). ``recover`` does this, and also removes the temporaries an
interrupted run leaves (``.<name>.tmp-*`` of a ``ShardWriter`` spill or ``write_json_atomic``,
``.<name>.old-*`` of ``replace_dir``); ``stage_outputs`` and ``pipeline.cli`` call it when a stage
starts. A stage that publishes its folder whole (export: ``replace_dir`` of a folder built beside it) and
was killed between the two renames has its old folder renamed back (``.<name>.old-*``). One run of a
stage at a time: ``run_lock`` (a ``filelock`` lock on ``.prefpipe/locks/STAGE.lock``, held by ``pipeline.cli``
for the whole run, released by the OS when its process dies, even by ``kill -9``) makes a second run fail at once
in one line; without it the second run's ``recover`` took the first run's staging folder for an interrupted
run's and removed it (``dvc repro`` holds a repository lock, but a direct ``prefpipe run`` does not take it).
A run also holds a shared lock on each sibling output folder (``data/*``: what a stage can read) until it
swaps its own outputs in (``reading``), and a swap takes its folder's lock exclusively (``publishing``): a
swap waits for the runs reading that folder to finish (one warning says so), and a reader never sees the
swap halfway (one table new, the next old; or a manifest old and its shards new). A run releases what it
read before waiting to swap, so two runs never wait for each other. ``pending_commits`` names the sibling
output folders that a killed run left half swapped in (a journal and no run to finish it): ``pipeline.cli``
refuses to start a stage that could read them.
``check_writable`` tries a write before a stage spends hours on model steps; what a failed write says is
``pipeline.output_errors``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.errors import os_reason
from pipeline.files import folder_digest, interrupts_held
from pipeline.output_errors import (  # noqa: F401 (re-exported: the stages and pipeline.cli import them from here)
    ADVICE,
    BACKUP,
    JOURNAL,
    STAGING,
    STALE,
    OutputError,
    _errno,
    name_path,
    os_error_line,
    user_path,
)

log = logging.getLogger(__name__)

LOCK_ROOT = Path(".prefpipe/locks")  # beside .prefpipe/checkpoints: STAGE.lock (run_lock), NAME.swap.lock (reading)


def check_writable(*paths: str | Path) -> None:
    """Create each folder and write (then remove) a 64 KiB probe in it, or raise ``OutputError``."""
    for path in map(Path, paths):
        probe = path / f".write-check.tmp-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"\0" * (64 << 10))
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass
            blocker = next((q for q in (path, *path.parents)
                            if (q.exists() and not q.is_dir()) or (q.is_symlink() and not q.exists())), None)
            if blocker is not None and os_error_line(e) is None:  # EEXIST, ENOTDIR: a file where a folder goes
                what = (f"a link to {os.readlink(blocker)}, which does not exist; create that folder or remove the link"
                        if not blocker.exists() else "a file, not a folder; move it away (or remove it)")
                raise OutputError(f"cannot write {path}: {blocker} is {what} and run the stage again") from None
            raise OutputError(os_error_line(e, path) or f"cannot write {path}: {e}") from None


def check_replaceable(out_dir: str | Path, names: list[str] | None = None) -> None:
    """Raise EACCES naming the first output folder in ``out_dir`` (of ``names``, else every one there) that the
    swap could not move aside: renaming a folder into ``.backup/`` needs write permission on the folder itself
    (its ``..`` changes), so a read-only ``data/ingest/prompts`` used to stop the swap halfway, leaving the
    other tables new and that one old."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for name in names if names is not None else sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")):
        dst = out_dir / name
        if dst.is_dir() and not dst.is_symlink() and not os.access(dst, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_stale(p: Path) -> None:
    """Remove what an interrupted run left, or raise OutputError naming it (``rmtree``'s error names only a
    file's base name, with no folder)."""
    log.warning("%s: removing %s, left by an interrupted run", p.parent, p.name)
    try:
        _remove(p)
    except OSError as e:  # on a read-only file system chmod fails too: say what is read-only
        fix = (ADVICE[errno.EROFS] if _errno(e) == errno.EROFS else
               f"make it writable (chmod -R u+w {p}) or remove it by hand, then run the stage again")
        raise OutputError(f"{p}: left by an interrupted run and cannot be removed ({os_reason(e)}); {fix}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _order(staging: Path) -> list[str]:
    """Folders, then files, then metrics files: metrics are swapped in last."""
    entries = list(staging.iterdir())
    return [p.name for p in sorted(entries, key=lambda p: (p.name.startswith("metrics"), not p.is_dir(), p.name))]


def _roll_forward(out_dir: Path, names: list[str]) -> None:
    staging, backup = out_dir / STAGING, out_dir / BACKUP
    backup.mkdir(exist_ok=True)
    for name in names:
        new, dst = staging / name, out_dir / name
        if not os.path.lexists(new):  # already in place
            continue
        if os.path.lexists(dst):
            if os.path.lexists(backup / name):
                _remove(backup / name)
            os.rename(dst, backup / name)
        os.rename(new, dst)
    _fsync_dir(out_dir)
    (out_dir / JOURNAL).unlink()
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def commit_outputs(out_dir: str | Path) -> list[str]:
    """Swap everything in ``out_dir/.staging`` into ``out_dir`` (see the module docstring); returns the names.
    A Ctrl-C during the swap takes effect once it is done."""
    out_dir = Path(out_dir)
    names = _order(out_dir / STAGING)
    check_replaceable(out_dir, names)  # found now, while nothing was swapped, not halfway through the swap
    tmp = out_dir / f"{JOURNAL}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            # what each entry holds: a swapped-in entry replaced since (dvc checkout) tells ``recover`` it is stale
            json.dump({"names": names, "holds": {n: folder_digest(out_dir / STAGING / n) for n in names}}, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk: nothing was swapped, and no half-written journal is left either
        tmp.unlink(missing_ok=True)
        raise
    with publishing(out_dir), interrupts_held():
        os.replace(tmp, out_dir / JOURNAL)
        _fsync_dir(out_dir)
        _roll_forward(out_dir, names)
    return names


def _recover_replaced(out_dir: Path) -> None:
    """Undo what a ``replace_dir(tmp, out_dir)`` killed between its two renames left beside ``out_dir``: no
    ``out_dir``, the old one as ``.<name>.old-*`` (renamed back: the old complete version), and remove the
    ``.<name>.old-*`` and ``.<name>.tmp*`` temporaries of earlier interrupted runs."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    mine = re.compile(rf"^\.{re.escape(out_dir.name)}\.(tmp|old)(-[0-9a-f]{{8}})?$")
    left = [p for p in parent.iterdir() if mine.match(p.name)]
    olds = sorted((p for p in left if mine.match(p.name).group(1) == "old"), key=lambda p: p.lstat().st_ctime)
    if olds and not os.path.lexists(out_dir):
        log.warning("%s: restoring the previous version, which an interrupted run had moved to %s", out_dir, olds[-1].name)
        os.rename(olds[-1], out_dir)
        left.remove(olds[-1])
    for p in left:
        _remove_stale(p)


def recover(out_dir: str | Path) -> None:
    """Finish or discard what an interrupted run left in (and beside) ``out_dir``, and remove its stale
    temporaries."""
    out_dir = Path(out_dir)
    _recover_replaced(out_dir)
    if not out_dir.is_dir():
        return
    journal = out_dir / JOURNAL
    if journal.exists():
        try:
            entry = json.loads(journal.read_text(encoding="utf-8"))
            names = entry["names"]
        except (ValueError, KeyError, TypeError) as e:
            raise OutputError(f"{journal}: unreadable commit journal ({e}); remove it and {out_dir / STAGING}, "
                              "then run the stage again") from None
        replaced = _replaced_since(out_dir, entry)
        if replaced:
            log.warning("%s: an interrupted run was swapping in its outputs, and %s has been replaced or removed since "
                        "(dvc checkout, DVC's run cache); keeping what is there and discarding the rest of that run's "
                        "outputs", out_dir, ", ".join(replaced))
            _discard_journal(out_dir, names)
        else:
            log.warning("%s: finishing the commit an interrupted run started (%s)", out_dir, ", ".join(names))
            _roll_forward(out_dir, names)
    for p in sorted(out_dir.iterdir()):
        if p.name in (STAGING, BACKUP) or STALE.match(p.name):
            _remove_stale(p)


def _replaced_since(out_dir: Path, entry: dict) -> list[str]:
    """The entries a killed swap had put in place that are no longer the ones it put there: something else (``dvc
    checkout``, ``dvc repro`` restoring the stage from its run cache or removing its outputs before the command) has
    replaced them since, so rolling the journal forward would mix its outputs with theirs. A journal that does not
    say what they held (an older prefpipe's) names none."""
    holds = entry.get("holds") if isinstance(entry, dict) else None
    if not isinstance(holds, dict):
        return []
    swapped = [n for n in entry["names"] if n in holds and not os.path.lexists(out_dir / STAGING / n)]
    return [n for n in swapped if not os.path.lexists(out_dir / n) or folder_digest(out_dir / n) != holds[n]]


def _discard_journal(out_dir: Path, names: list[str]) -> None:
    """Drop a stale journal and what its swap had left to do; an entry the kill caught between its two renames
    (moved to the backup, its new one not yet in place) gets its old one back."""
    staging, backup = out_dir / STAGING, out_dir / BACKUP
    for name in names:
        if os.path.lexists(staging / name) and not os.path.lexists(out_dir / name) and os.path.lexists(backup / name):
            os.rename(backup / name, out_dir / name)
    (out_dir / JOURNAL).unlink()
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def discard_staged(out_dir: str | Path) -> None:
    """Remove the staging folder of a run that failed before its commit journal (nothing was swapped)."""
    out_dir = Path(out_dir)
    if not (out_dir / JOURNAL).exists():
        shutil.rmtree(out_dir / STAGING, ignore_errors=True)


def pending_commits(out_dir: str | Path) -> list[Path]:
    """The folders beside ``out_dir`` (``data/*``) holding a commit journal: outputs swapped in halfway by a
    killed run, which a reader would see mixed until that stage runs again (``recover``)."""
    out_dir = Path(out_dir)
    parent = out_dir.parent
    if not parent.is_dir():
        return []
    return sorted(j.parent for j in parent.glob(f"*/{JOURNAL}")
                  if j.parent.resolve() != out_dir.resolve() and not _stale(j))


def _stale(journal: Path) -> bool:
    """A journal whose outputs were put back whole since: its swapped-in entries replaced (``_replaced_since``), or every
    entry holding what it was swapping in (DVC's run cache restored that very run, and `dvc repro` skips the stage)."""
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
        holds, folder = entry.get("holds"), journal.parent
        return bool(_replaced_since(folder, entry)) or isinstance(holds, dict) and all(
            os.path.lexists(folder / n) and folder_digest(folder / n) == holds.get(n) for n in entry["names"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def begin_outputs(out_dir: str | Path) -> Path:
    """The staging folder of a stage that writes its outputs without a ``with`` block: write there, then
    call ``commit_outputs(out_dir)``. If the stage fails in between, nothing in ``out_dir`` changed and
    the next start discards the staging folder (``recover``)."""
    out_dir = Path(out_dir)
    recover(out_dir)
    staging = out_dir / STAGING
    staging.mkdir(parents=True)
    return staging


@contextmanager
def stage_outputs(out_dir: str | Path) -> Iterator[Path]:
    """A staging folder for every output of a stage, swapped into ``out_dir`` together when the block ends.

    On an exception nothing in ``out_dir`` changes and the staging folder is removed. See the module
    docstring for the commit protocol and its crash guarantees.
    """
    out_dir = Path(out_dir)
    staging = begin_outputs(out_dir)
    try:
        yield staging
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError):
            name_path(e, out_dir)
        raise
    try:
        commit_outputs(out_dir)
    except OSError as e:
        if not (out_dir / JOURNAL).exists():  # nothing was swapped: roll back now
            shutil.rmtree(staging, ignore_errors=True)
        name_path(e, out_dir)
        raise


@contextmanager
def run_lock(stage: str, out_dir: str | Path | None = None) -> Iterator[None]:
    """Hold the lock of ``stage`` for the block, or raise ``OutputError`` at once if another run holds it (a
    second terminal, a ``dvc repro`` beside a direct ``prefpipe run``). The lock is an OS file lock, so a run
    killed by any signal releases it: a lock file left on disk holds nothing. A run that fails where there was
    no ``.prefpipe`` folder (started from the wrong folder) leaves none."""
    fresh = not LOCK_ROOT.parent.exists()
    LOCK_ROOT.mkdir(parents=True, exist_ok=True)
    path = LOCK_ROOT / f"{stage}.lock"
    lock = FileLock(path, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(f"{out_dir or stage}: another run of {stage} is writing it (it holds {path}); wait for "
                          f"that run to finish, or stop it, then run {stage} again") from None
    try:
        yield
    except BaseException:
        lock.release()
        if fresh:
            with suppress(OSError):  # a folder holding checkpoints stays
                for p in LOCK_ROOT.iterdir():
                    p.unlink()
                LOCK_ROOT.rmdir()
                LOCK_ROOT.parent.rmdir()
        raise
    lock.release()


_READING: list[int] = []  # descriptors of the shared locks this process holds on the folders it reads


def _swap_lock(folder: Path) -> int:
    LOCK_ROOT.mkdir(parents=True, exist_ok=True)
    return os.open(LOCK_ROOT / f"{folder.name}.swap.lock", os.O_RDWR | os.O_CREAT, 0o644)


def _release_reading() -> None:
    while _READING:
        os.close(_READING.pop())  # closing the descriptor releases its lock


@contextmanager
def reading(folders: list[Path]) -> Iterator[None]:
    """Hold a shared lock on each of ``folders`` until the block ends or this process swaps its own outputs in
    (``publishing``): none of them is swapped meanwhile. Waits for a swap in progress (a few renames)."""
    try:
        for folder in folders:
            fd = _swap_lock(folder)
            _READING.append(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        _release_reading()


@contextmanager
def publishing(out_dir: str | Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock exclusively for the block (its swap), once no run reading it holds it. The
    folders this process read are released first: a writer that waits holds nothing its readers wait for."""
    out_dir = Path(out_dir)
    _release_reading()
    fd = _swap_lock(out_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: waiting for the runs reading it to finish before swapping in the new outputs", out_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
