"""What the tests of a stage's outputs (tests/test_outputs.py, tests/test_outputs_cli.py) write and check: a
stage's output set, a folder's bytes, a kill, a read-only folder."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_set(out: Path, tag: str) -> None:
    """What a stage writes: two folders and its metrics."""
    for name in ("pairs", "rejects"):
        (out / name).mkdir(parents=True)
        (out / name / "part-0.parquet").write_text(f"{name} {tag}")
    (out / "metrics.json").write_text(json.dumps({"run": tag}))


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no handler cleans up."""


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` as the kernel treats a read-only folder for a caller that is not root (tests run as root):
    no write access, and moving it to another folder (its ``..`` changes) refused."""
    real_access, real_rename = os.access, os.rename
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (not mode & os.W_OK and real_access(p, mode, **kw))
                        if Path(p) == folder else real_access(p, mode, **kw))

    def rename(src, dst, **kw):
        if Path(src) == folder and Path(dst).parent != folder.parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src), str(dst))
        return real_rename(src, dst, **kw)

    monkeypatch.setattr(os, "rename", rename)
