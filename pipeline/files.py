"""Atomic files and folders, and the provenance a manifest records.

``replace_dir`` publishes a finished folder by renaming it over the old one, ``built_dir`` builds a
folder once (a copy another process finished first is kept), and ``write_json_atomic`` writes a JSON
file through a temporary beside it, so a reader never sees half an output. ``file_sha256`` and
``package_version`` are what shard-set manifests (``pipeline.io``) and the release's manifest record
of each file and of the code that wrote it. Nothing here knows a table or a contract.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(path: Path) -> str:
    """What an output holds, cheaply: a file's sha256; a folder's file names and sizes, and the sha256 of its JSON
    files (each shard set's ``_manifest.json`` holds its shards' sha256). Not an inode number: a folder removed and
    copied back (``dvc checkout``) often gets the same one."""
    if not path.is_dir() or path.is_symlink():
        return file_sha256(path) if path.is_file() else "-"
    h = sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\0{file_sha256(p) if p.suffix == '.json' else ''}\0".encode())
    return h.hexdigest()


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("prefpipe")
    except Exception:
        return "0+unknown"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Kubernetes and ``kill`` send before SIGKILL), raised like Ctrl-C where
    ``pipeline.cli`` turns it into an exception, so the same clean-up runs (``terminate_raises``)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` in the block (in the main thread; a SIGTERM set to be ignored stays so):
    the finished batches of a model step are checkpointed and the staging folder removed, as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, then deliver the first one to its own handler: a
    swap of a few renames is not left halfway (only the main thread can; elsewhere the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    held = {sig: handler for sig, handler in previous.items() if handler is not None and handler != signal.SIG_IGN}
    for sig in held:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing it; the old folder is renamed away first, then removed. A Ctrl-C
    between the two renames takes effect after the second (a kill there: ``pipeline.outputs.recover``)."""
    old, done = None, False
    try:
        with interrupts_held():
            if dst.exists():
                old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(dst, old)
            os.rename(src, dst)
            done = True
    finally:
        if done and old is not None:  # a failed second rename keeps the old folder for ``recover``
            try:
                shutil.rmtree(old)
            except OSError as e:  # a read-only sub-folder: said now, and again when the next start removes it
                log.warning("%s is in place; the previous version, %s, cannot be removed (%s: %s); remove it by hand",
                            dst, old, e.strerror or e, e.filename)


@contextmanager
def built_dir(path: Path) -> Iterator[Path]:
    """Build a folder atomically: yields a temp folder beside ``path``, renamed to ``path`` when the block
    succeeds. A ``path`` another process finished first is kept (builds are deterministic); the temp
    folder never outlives the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException as e:
        left_out(tmp, e, path)
        raise


def left_out(tmp: Path, e: BaseException, path: str | Path) -> None:
    """After a write to ``tmp`` (the temporary of ``path``) failed: remove what it left, which a full disk needs
    back (a ``.computed_with.json.tmp-*`` stayed in a model step's checkpoints), and give an OSError that names no
    file (a failed write does not) ``path``, so the one line says where, not the stage's output folder."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
    if isinstance(e, OSError) and e.filename is None:
        e.filename = str(path)
