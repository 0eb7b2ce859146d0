"""One record read from a source file, and the helpers every reader shares to turn a damaged file into error rows.

A reader yields ``RawRow``s: a value, or the reason the record is unusable. A file whose bytes break off
(a truncated or corrupt gzip stream) ends in one error row naming what is lost (``numbered``); an error
of the file system (``cannot_read``: no permission, a disk error) is raised, so the source fails whole.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import one_line

T = TypeVar("T")

# What reading a damaged file raises: a truncated gzip stream (EOFError), a corrupt one
# (zlib.error, gzip.BadGzipFile, an OSError), an I/O error.
UNREADABLE = (EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class RawRow:
    """One input record, or the reason it could not be parsed."""

    file: str
    row: int  # 1-based line/record number within ``file``
    value: Any = None
    error: str | None = None
    raw: str = ""
    hint: str = ""  # what a reject of this record adds to its reason (a .json file that is one object wrapping a list)
    records: int = 1  # the input records an error row stands for (a Parquet row group not read: its rows)


def cannot_read(e: BaseException) -> bool:
    """An error of the file system (no permission, a disk error), not of the file's bytes: the file cannot be read
    at all, or may read differently next time, so ``iter_records`` fails the source instead of rejecting rows."""
    return isinstance(e, OSError) and e.errno is not None


def unreadable_rest(e: BaseException, after: str | None) -> str:
    """The error row for the part of a file that cannot be read (after ``after``, or at all), with what to do: a
    .gz name on bytes that are not gzip at all, else a file cut short or damaged in a copy.

    >>> print(unreadable_rest(gzip.BadGzipFile("Not a gzipped file (b'no')"), None))
    the file cannot be read (BadGzipFile: Not a gzipped file (b'no')); its name ends in .gz but it is not gzip data: rename it without .gz, or gzip it
    """
    where = f" after {after}" if after else ""
    fix = ("its name ends in .gz but it is not gzip data: rename it without .gz, or gzip it"
           if isinstance(e, gzip.BadGzipFile) and not after else
           "the rest of it is lost: copy or write the file again whole")
    return f"the file cannot be read{where} ({one_line(e)}); {fix}"


def open_binary(path: Path):
    """``path`` opened for reading bytes, through gzip when its name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # .GZ too


def numbered(items: Iterator[T], path: Path, unit: str) -> Iterator[tuple[int, T | RawRow]]:
    """``(n, item)`` for each item a reader's underlying iterator yields, numbered from 1; where the file's
    bytes break off, a last ``(n, RawRow)`` error row naming the ``unit`` (line, row) after which the rest is
    lost. A file-system error (``cannot_read``) is raised."""
    i = 0
    while True:
        try:
            item = next(items, None)
        except UNREADABLE as e:
            if cannot_read(e):
                raise
            yield i + 1, RawRow(str(path), i + 1, error=unreadable_rest(e, f"{unit} {i}" if i else None))
            return
        if item is None:
            return
        i += 1
        yield i, item
