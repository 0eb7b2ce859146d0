"""Atomic files and folders, and the provenance a manifest records.

``replace_dir`` publishes a finished folder by renaming it over the old one, ``built_dir`` builds a
folder once (a copy another process finished first is kept), and ``write_json_atomic`` writes a JSON
file through a temporary beside it, so a reader never sees half an output. ``file_sha256`` and
``package_version`` are what shard-set manifests (``pipeline.io``) and the release's manifest record
of each file and of the code that wrote it. Nothing here knows a table or a contract.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("prefpipe")
    except Exception:
        return "0+unknown"


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing it; the old folder is renamed away first, then removed."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
