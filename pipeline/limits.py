"""Size limits that keep reading bounded by ``max_record_bytes`` whatever the input's bytes.

A reader holds one record at a time, and a record over ``max_record_bytes`` is a reject; these
helpers make that hold where a format's library would otherwise read more than one record's worth:

- a JSON line is read in pieces and never held whole past the limit (``bounded_lines``);
- a ``.json`` file (an array, parsed whole) is read through a byte cap of ``JSON_FILE_RECORDS``
  times the limit, so a gzip bomb stops at the cap (``read_capped``);
- a CSV row is fed to the csv module line by line through ``CsvLines``, which stops holding a row
  (not only a field, which ``csv.field_size_limit`` bounds) once it is over the limit;
- a Parquet row group is read in batches of about the limit's bytes, sized from what its page headers say
  its pages may decode to (``group_plan``), instead of 10,000 rows whatever their size; a row group that
  cannot be read so (``page_refusal``) is one reject, and a row whose strings alone are over the limit is
  rejected before it becomes Python values (``sized_rows``).

What the bounds cost on normal input and buy on hostile input, each against the reader before them in one
process: ``bench/bounded_readers.py`` (figures in bench/README.md, "Bounded reads on hostile input").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.encodings import UNCONVERTIBLE, batch_rows, python_values
from pipeline.jsontext import preview_of
from pipeline.parquetpages import DELTA_BYTE_ARRAY, DICTIONARY_ENCODINGS, DICTIONARY_PAGE, Chunk, Page
from pipeline.rawrows import open_binary

# A .json file is parsed whole (json.loads builds every record at once): it may hold at most this many
# times max_record_bytes of (decompressed) text; a bigger one is one reject saying to convert it.
JSON_FILE_RECORDS = 16
PARQUET_BATCH_ROWS = 10_000  # the most rows per batch, for row groups of small rows
# A Parquet page is decompressed whole: one over this many times max_record_bytes (as for a .json file) whose
# values average over the limit, or a row group whose rows may decode to more on average, is not read.
PARQUET_PAGE_RECORDS = JSON_FILE_RECORDS


SETTING = "ingest.max_record_bytes"


def over_limit(limit: int, size: int | None = None, what: str = "record", note: str = "") -> str:
    """The reject reason of a record over the limit: its size where it is known, and the setting that keeps it.

    >>> over_limit(1000, 1200)
    'record is 1200 bytes, over max_record_bytes=1000; raise ingest.max_record_bytes to keep it'
    >>> over_limit(1000, note=" (a CSV row)")
    'record is over max_record_bytes=1000 (a CSV row); raise ingest.max_record_bytes to keep it'
    """
    size_text = "" if size is None else f"{size} bytes, "
    return f"{what} is {size_text}over max_record_bytes={limit}{note}; raise {SETTING} to keep it"


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
    with open_binary(path) as f:  # through gzip for .gz and .GZ alike, as every other reader
        return f.read(cap + 1)


class RowTooLong(Exception):
    """A CSV row whose very structure is over the limit (pathological quoting); the rest of its line is skipped."""


# A run of quotes, or of other characters on one line. The csv module's parse state after a run is the same as
# after its stand-in: an odd run of quotes acts as one, an even run as two, and any other run as one character
# (followed by the delimiter if the run ends with one), in every state (in or out of quotes, after a quote).
_RUNS = re.compile(r'"+|[^"\r\n]+')


def _stand_in(m: re.Match[str], delimiter: str = ",") -> str:
    run = m.group()
    if run[0] == '"':
        return '"' if len(run) % 2 else '""'
    # a delimiter that starts or ends the run stays where it is: a quote next to it opens or closes a field, which
    # the csv module in strict mode checks (`"",abc` is two fields; `""x` would be an error)
    head = delimiter if run[0] == delimiter else ""
    tail = delimiter if run[-1] == delimiter and len(run) > 1 else ""
    return head + ("x" if len(run) > len(head) + len(tail) else "") + tail


def stand_ins(text: str, delimiter: str = ",") -> str:
    """``text`` with each run replaced by its stand-in: a few characters per run of quotes."""
    return _RUNS.sub(_stand_in if delimiter == "," else lambda m: _stand_in(m, delimiter), text)


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

    def __init__(self, f: IO[str], limit: int, delimiter: str = ",") -> None:
        self.f, self.limit, self.size, self.over, self.delimiter = f, limit, 0, False, delimiter
        self.served = 0  # lines handed to the csv module (its line_num does not count a line it raised on)

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
                self.served += 1
                return line
            self.over = True
        stand = stand_ins(line, self.delimiter)
        ended = ("\n", "\r")
        while len(stand) <= self.limit and not line.endswith(ended) and (line := self.f.readline(self.limit + 1)):
            stand = stand_ins(stand + line, self.delimiter)  # a stand-in stands in for itself: runs merge
        self.size += len(stand)  # the row's text up to the limit, then its stand-ins up to the limit again
        if self.size <= 2 * self.limit and (not line or line.endswith(ended)):  # a whole line, or the last one
            self.served += 1
            return stand
        while line and not line.endswith(ended):
            line = self.f.readline(self.limit + 1)
        raise RowTooLong(f"over max_record_bytes={self.limit}")


def parquet_batch_size(group_bytes: int, group_rows: int, limit: int) -> int:
    """Rows per batch so that a batch of a row group holds about ``limit`` bytes (``group_bytes``, what the
    group decodes to, over its rows), between 1 and ``PARQUET_BATCH_ROWS``."""
    per_row = -(-max(group_bytes, 1) // max(group_rows, 1))
    return max(1, min(PARQUET_BATCH_ROWS, limit // per_row))


def decoded_bound(pages: list[Page], byte_array: bool, longest: int | None = None) -> int:
    """The most bytes a column chunk's ``pages`` decode to: a page as many as it holds (at least 8 a value), a
    dictionary-encoded value as many as the longest dictionary entry (``longest`` where it was read, else what
    the dictionary page's size allows; a fixed width is known), a prefix-compressed (DELTA_BYTE_ARRAY) value
    as many as its page."""
    dictionary = next((p for p in pages if p.kind == DICTIONARY_PAGE), None)
    if longest is None or not byte_array:  # fixed-width entries: the page's size over its entries
        entries = max(dictionary.values, 1) if dictionary else 1
        size = dictionary.size if dictionary else 0
        longest = max(0, size - 4 * entries) if byte_array else size // entries
    total = 0
    for p in pages:
        if p.kind == DICTIONARY_PAGE:
            total += p.size
        elif p.encoding in DICTIONARY_ENCODINGS:
            total += p.values * (longest + 8)
        elif p.encoding == DELTA_BYTE_ARRAY:
            total += p.values * (p.size + 8)
        else:
            total += max(p.size, 8 * p.values)
    return total


def page_refusal(column: str, pages: list[Page], limit: int) -> str | None:
    """Why ``column``'s chunk cannot be read within ``PARQUET_PAGE_RECORDS`` x ``limit``: a page over that
    (a page is decompressed whole) whose values average over ``limit`` (so it holds a record over it), or None."""
    cap = PARQUET_PAGE_RECORDS * limit
    for p in pages:
        if p.size > cap and p.size > limit * max(p.values, 1):
            what = "dictionary page" if p.kind == DICTIONARY_PAGE else "page"
            return (f"column {column!r} has a {what} of {p.size} bytes holding {p.values} value(s), over "
                    f"max_record_bytes={limit} each on average, and a page is read whole: this one is over "
                    f"{PARQUET_PAGE_RECORDS} x max_record_bytes")
    return None


def parquet_plan(chunks: Iterable[Chunk], rows: int, limit: int, longest: Callable[[Chunk], int | None],
                 group: int = 0) -> tuple[int, str | None]:
    """``group_plan`` without the group's bytes (what tests and ``bench/parquet_groups.py`` compare; the reader
    calls ``group_plan``)."""
    batch, why, _ = group_plan(chunks, rows, limit, longest, group)
    return batch, why


def group_plan(chunks: Iterable[Chunk], rows: int, limit: int, longest: Callable[[Chunk], int | None],
               group: int = 0) -> tuple[int, str | None, int]:
    """Rows per batch for row group ``group`` of ``rows`` rows, from its column ``chunks``, or why it is not
    read (``page_refusal``, or rows that may decode to over ``PARQUET_PAGE_RECORDS`` x ``limit`` each on
    average), in one line that says what to do; and the most bytes the group decodes to (its columns' bounds
    summed; 0 where it is not read), so that row groups far under ``limit`` can be read several at a time.

    Bounds use each dictionary's longest entry, ``longest(chunk)`` (read from the file); it is read only where
    it could change the answer, i.e. where bounds with an entry as long as the dictionary page allows and
    with entries of no length give different batches, so the plan is the same whether it is read or not."""
    chunks = list(chunks)
    why = next(filter(None, (page_refusal(c.column, c.pages, limit) for c in chunks)), None)
    if why is None:
        lower = [decoded_bound(c.pages, c.byte_array, 0) for c in chunks]
        upper = [decoded_bound(c.pages, c.byte_array) for c in chunks]
        if _decide(chunks, upper, rows, limit) != _decide(chunks, lower, rows, limit):
            upper = [decoded_bound(c.pages, True, longest(c)) if c.byte_array and high > low else high
                     for c, low, high in zip(chunks, lower, upper, strict=True)]
        batch, why = _decide(chunks, upper, rows, limit)
        if why is None:
            return batch, None, sum(upper)
    return 0, (f"Parquet row group {group} is not read ({rows} row{'' if rows == 1 else 's'} lost): {why}; "
               "rewrite the file with smaller row groups, or raise ingest.max_record_bytes"), 0


def _decide(chunks: list[Chunk], bounds: list[int], rows: int, limit: int) -> tuple[int, str | None]:
    for chunk, bound in zip(chunks, bounds, strict=True):
        if bound > PARQUET_PAGE_RECORDS * limit * max(rows, 1):
            return 0, (f"column {chunk.column!r} may decode to {bound // max(rows, 1)} bytes a row (by its page "
                       f"headers), over {PARQUET_PAGE_RECORDS} x max_record_bytes={limit}")
    return min(parquet_batch_size(sum(bounds), rows, limit), max(rows, 1)), None


def _text(kind: pa.DataType) -> bool:
    return any(is_(kind) for is_ in (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view,
                                     pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view))


_UNVIEWED = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def _unview(column: pa.Array) -> pa.Array:
    """A string_view or binary_view column (as polars and newer Arrow writers store text) as the large_string or
    large_binary one it holds: Arrow's length and slice kernels take no view type, which lost the row group."""
    return column.cast(_UNVIEWED[column.type]) if column.type in _UNVIEWED else column


def text_bytes(batch: pa.RecordBatch) -> pa.Array | None:
    """Per row of ``batch``, the bytes of its top-level string and binary values (None if it has none): no
    more than the length of the row as JSON (escapes and quotes only add), so a row over a limit by them is a
    record over it too."""
    total = None
    for column in batch.columns:
        if pa.types.is_dictionary(column.type) and _text(column.type.value_type):
            lengths = pc.take(pc.binary_length(_unview(column.dictionary)), column.indices)
        elif _text(column.type):
            lengths = pc.binary_length(_unview(column))
        else:
            continue
        lengths = pc.fill_null(lengths.cast(pa.int64()), 0)
        total = lengths if total is None else pc.add(total, lengths)
    return total


def sized_rows(batch: pa.RecordBatch, limit: int) -> Iterator[tuple[dict[str, Any] | None, str | None, str]]:
    """``(row, error, preview)`` for each row of a Parquet batch, as ``batch_rows`` gives them, but a row whose
    text alone is over ``limit`` (``text_bytes``) is the reject ingest would make of it, ``record is over
    max_record_bytes``, without being turned into Python values (its preview is read from its first 500
    characters); a row that is also not UTF-8 is the reject that says so, as before."""
    sizes = text_bytes(batch) if batch.nbytes > limit else None  # a row holds no more than its batch
    over = [] if sizes is None else pc.indices_nonzero(pc.greater(sizes, limit)).to_pylist()
    start = 0
    for j in [*over, batch.num_rows]:
        if j > start:
            yield from ((rec, error, "") for rec, error in batch_rows(batch.slice(start, j - start)))
        start = j + 1
        if j == batch.num_rows:
            return
        row = batch.slice(j, 1)
        try:
            row.validate(full=True)  # UTF-8 of its strings
        except pa.ArrowInvalid:
            yield from ((rec, error, "") for rec, error in batch_rows(row))
            continue
        try:
            preview = preview_of(python_values(_head(row))[0])
        except UNCONVERTIBLE:  # a value Python cannot hold (a timestamp past year 9999) besides its long text
            preview = ""
        yield None, over_limit(limit), preview


def _head(row: pa.RecordBatch) -> pa.RecordBatch:
    """``row`` with its top-level strings and binaries cut to 500 characters (bytes): enough for a preview."""
    columns = []
    for column in row.columns:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        column = _unview(column)
        if _text(column.type):
            cut = pc.utf8_slice_codeunits if "string" in str(column.type) else pc.binary_slice
            column = cut(column, 0, 500)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=row.schema.names)
