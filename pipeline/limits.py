"""Size limits that keep reading bounded by ``max_record_bytes`` whatever the input's bytes.

A reader holds one record at a time, and a record over ``max_record_bytes`` is a reject; these
helpers make that hold where a format's library would otherwise read more than one record's worth:

- a JSON line is read in pieces and never held whole past the limit (``bounded_lines``);
- a ``.json`` file (an array, parsed whole) is read through a byte cap of ``JSON_FILE_RECORDS``
  times the limit, so a gzip bomb stops at the cap (``read_capped``);
- a CSV row is fed to the csv module line by line through ``CsvLines``, which stops holding a row
  (not only a field, which ``csv.field_size_limit`` bounds) once it is over the limit;
- a Parquet row group is read in batches of about the limit's bytes, sized from the row group's
  metadata (``parquet_batch_size``), instead of 10,000 rows whatever their size.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# A .json file is parsed whole (json.loads builds every record at once): it may hold at most this many
# times max_record_bytes of (decompressed) text; a bigger one is one reject saying to convert it.
JSON_FILE_RECORDS = 16
PARQUET_BATCH_ROWS = 10_000  # the most rows per batch, for row groups of small rows


def bounded_lines(f, limit: int | None) -> Iterator[tuple[bytes, int]]:
    """(line, its length) for every b"\\n"-terminated line of ``f``, newline removed.

    A line longer than ``limit`` is never held whole: its first ``limit + 1`` bytes come back with
    the full length, and the rest is skipped in 1 MiB steps.
    """
    while True:
        line = f.readline(limit + 1) if limit else f.readline()
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1], len(line) - 1
            continue
        n = len(line)
        while limit:  # an over-long line (or the file's last line, which has no newline)
            more = f.readline(1 << 20)
            if not more:
                break
            if more.endswith(b"\n"):
                n += len(more) - 1
                break
            n += len(more)
        yield line, n


def json_too_big(cap: int) -> str:
    """Why a .json file over ``cap`` (``JSON_FILE_RECORDS`` x max_record_bytes), not JSON lines, is not read."""
    return (f"the file is over {cap} bytes ({JSON_FILE_RECORDS} x max_record_bytes) and is not JSON lines "
            "(its first line is no record on its own): a .json array is parsed whole, so none of it is read; "
            "convert it to JSON lines (one record per line, named .jsonl)")


def read_capped(path: Path, cap: int) -> bytes:
    """The (decompressed, for ``.gz``) bytes of ``path``, at most ``cap + 1`` of them: a result longer
    than ``cap`` means the file is over it, and nothing past the cap was read or decompressed."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        return f.read(cap + 1)


class RowTooLong(Exception):
    """A CSV row whose very structure is over the limit (pathological quoting); the rest of its line is skipped."""


# A run of quotes, or of other characters on one line. The csv module's parse state after a run is the same as
# after its stand-in: an odd run of quotes acts as one, an even run as two, and any other run as one character
# (followed by the delimiter if the run ends with one), in every state (in or out of quotes, after a quote).
_RUNS = re.compile(r'"+|[^"\r\n]+')


def _stand_in(m: re.Match[str]) -> str:
    run = m.group()
    if run[0] == '"':
        return '"' if len(run) % 2 else '""'
    return "x," if run[-1] == "," else "x"


def stand_ins(text: str) -> str:
    """``text`` with each run replaced by its stand-in: a few characters per run of quotes."""
    return _RUNS.sub(_stand_in, text)


def csv_field_limit(limit: int) -> int:
    """``csv.field_size_limit`` for rows of at most ``limit`` characters read through ``CsvLines``: a field
    never trips it (a row over the limit is rejected whole), even with the stand-ins of a row over it."""
    return 2 * limit + 1


class CsvLines:
    """The lines of text file ``f`` for ``csv.reader`` (excel dialect), read in pieces of at most
    ``limit + 1`` characters, counting the characters of the current row (``start_row`` starts again).

    Once the row is over ``limit`` (``over``), the rest of it reaches the csv module as stand-ins that parse
    to the same structure (``_RUNS``) but hold a few characters per run of quotes: the row still ends where
    it ends, so the next row is read right, and its text is never held. The csv module so holds at most
    ``2 * limit`` characters of a row (``csv_field_limit``); only a row whose stand-ins are over the limit too
    raises ``RowTooLong`` (the csv reader passes it on), and the next row starts at the next line.
    """

    def __init__(self, f: IO[str], limit: int) -> None:
        self.f, self.limit, self.size, self.over = f, limit, 0, False

    def __iter__(self) -> CsvLines:
        return self

    def start_row(self) -> None:
        self.size, self.over = 0, False

    def __next__(self) -> str:
        line = self.f.readline(self.limit + 1)
        if not line:
            raise StopIteration
        if not self.over:
            if self.size + len(line) <= self.limit:
                self.size += len(line)
                return line
            self.over = True
        stand = stand_ins(line)
        ended = ("\n", "\r")
        while len(stand) <= self.limit and not line.endswith(ended) and (line := self.f.readline(self.limit + 1)):
            stand = stand_ins(stand + line)  # a stand-in stands in for itself: runs merge
        self.size += len(stand)  # the row's text up to the limit, then its stand-ins up to the limit again
        if self.size <= 2 * self.limit and (not line or line.endswith(ended)):  # a whole line, or the last one
            return stand
        while line and not line.endswith(ended):
            line = self.f.readline(self.limit + 1)
        raise RowTooLong(f"over max_record_bytes={self.limit}")


def parquet_batch_size(group_bytes: int, group_rows: int, limit: int) -> int:
    """Rows per batch so that a batch of a row group holds about ``limit`` bytes (its metadata's
    uncompressed size over its rows), between 1 and ``PARQUET_BATCH_ROWS``."""
    per_row = -(-max(group_bytes, 1) // max(group_rows, 1))
    return max(1, min(PARQUET_BATCH_ROWS, limit // per_row))
