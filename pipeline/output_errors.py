"""What a stage's failed write says to the user, in one line.

An ``OSError`` raised in a ``pipeline.outputs.stage_outputs`` block (disk full, read-only file system, no permission) that names no
file (a failed write does not) is given ``OUT`` as its file name, so ``os_error_line`` can say where; ``pipeline.cli`` prints
that one line instead of a traceback.

The names of the outputs protocol's folders and temporaries (``pipeline.outputs``) are here too: ``user_path``
reads them out of a path, so an error names the output the user knows, not the staging folder it went through.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import suppress
from pathlib import Path

from pipeline.errors import StageError, printable

STAGING, BACKUP, JOURNAL = ".staging", ".backup", ".commit.json"
# Left by an interrupted ShardWriter, write_json_atomic or replace_dir: ".<name>.tmp-1a2b3c4d"
STALE = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}$")

ADVICE = {
    errno.ENOSPC: "the disk is full: free some space (or move data/ to a larger disk) and run the stage again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the stage again",
    errno.EFBIG: "a file grew past the file system's or the process's size limit (`ulimit -f`): raise it "
                 "(`ulimit -f unlimited`) or move data/ to a file system that allows larger files, and run the stage again",
    errno.EROFS: "the file system is read-only: run from a writable checkout, or remount it read-write",
    errno.EACCES: "no permission to write there: fix the folder's owner or permissions, or run as its owner",
    errno.EPERM: "the operation is not permitted there: fix the folder's owner or permissions",
}


class OutputError(StageError):
    """A stage cannot write its outputs; the message names the path and what to do."""


def _errno(e: OSError) -> int | None:
    """The error number; Arrow may give it only inside its message ("... [errno 28] No space left on device"), and
    Polars (Rust's I/O error) only there ("No space left on device (os error 28)", from ``write_ndjson``)."""
    if e.errno is not None:
        return e.errno
    found = re.search(r"\[errno (\d+)\]|\(os error (\d+)\)", " ".join(map(str, e.args)), re.I)
    return int(found.group(1) or found.group(2)) if found else None


def name_path(e: OSError, path: Path) -> None:
    """Give an OSError that names no file ``path`` (writes fail without one), keeping its message readable."""
    code = _errno(e)
    if e.filename is None and code is not None:
        e.errno, e.strerror, e.filename = code, e.strerror or os.strerror(code), str(path)


def user_path(path: str | Path) -> str:
    """The output a user knows for a path written through ``.staging/`` or a temporary (``.<name>.tmp-1a2b3c4d``, named
    as ``<name>``; the journal's and the write check's as their folder): a full disk said ``.staging/metrics.json``.
    Only the part below the working folder (the project root) is looked at: a project in ``~/.backup/`` keeps it.

    >>> user_path("data/ingest/.staging/.rejects.tmp-cc1c83b3/part-0.parquet"), user_path("d/.commit.json.tmp-9636b7a5")
    ('data/ingest/rejects', 'd')
    """
    if Path(path).is_absolute():
        with suppress(OSError, ValueError):  # below the project root: the folders above it stay as they are
            return str(Path.cwd() / user_path(Path(path).relative_to(Path.cwd())))
    parts: list[str] = []
    for part in Path(path).parts:
        if part in (STAGING, BACKUP):
            continue
        if STALE.match(part):
            name = part[1:part.rindex(".", 0, -9)]
            if f".{name}" not in (JOURNAL, ".write-check"):
                parts.append(name)
            break
        parts.append(part)
    return str(Path(*parts)) if parts else str(path)


def os_error_line(e: OSError, where: str | Path | None = None) -> str | None:
    """One line for an OSError a user can fix (disk full, read-only, no permission), else None; it names the output
    the user knows (``user_path``), not the staging folder or temporary it was written through."""
    code = _errno(e)
    if code not in ADVICE:
        return None
    path = printable(user_path(e.filename or where)) if (e.filename or where) else "(unknown path)"
    return f"cannot write {path}: {os.strerror(code)} ({errno.errorcode[code]}); {ADVICE[code]}"
