"""Ingest under hostile input, third pass: a deterministic fuzz of every format and kind in every container a
reader knows.

``tests/test_hostile.py`` fuzzes JSON lines; here the same hostile records (real ones from its seeds, mutated by
its strategies) are written as a JSON array, CSV (plain and gzipped), a folder of Parquet files and, for Stack
Exchange, an XML dump, and each is ingested as a user's params would: no exception escapes, every record written
is read (``rows_in`` is the number of records, so none is dropped without a reason), ``rows_in == accepted +
rejected``, every reject has a reason and none falls through to the catch-all, and what is accepted can be
written. A second property damages those files' bytes (flips, cuts, inserted quotes, tags and NULs) and checks
the same invariants but the count. The defects this campaign found are pinned by tests/test_input_boundaries_fuzz.py
(records) and tests/test_input_boundaries_files.py (files and paths).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import re
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.records import to_table
from tests.input_cases import _ingest
from tests.test_hostile import _MARK, CASES, HYPOTHESIS, LITERALS, _mutate, seeds


def _check(res, expected: int | None) -> None:
    """The invariants: counts add up (to ``expected`` records when given), reasons everywhere, output writable."""
    m = res.metrics
    assert expected is None or m["rows_in"] == expected, (m, res.rejects)
    assert not [r["reason"] for r in res.rejects if "unexpected record shape" in r["reason"]]
    for table, rows in res.rows.items():
        to_table(rows, table)
    to_table(res.rejects, "rejects")


# --- writing hostile records in every container ---------------------------------------------------------

# Literals that keep a JSON array's structure (test_hostile's others cut it: '[1,', an unclosed string).
SAFE_LITERALS = [i for i, lit in enumerate(LITERALS) if lit.count(b'"') % 2 == 0 and lit.count(b"[") == lit.count(b"]")]


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def write_json(recs: list, d: Path) -> tuple[Path, int]:
    data = json.dumps(recs, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for i in SAFE_LITERALS:
        data = data.replace(json.dumps(_MARK.format(i)).encode(), LITERALS[i])
    (d / "in.json").write_bytes(data)
    return d / "in.json", len(recs)


def write_csv(recs: list, d: Path, gz: bool = False) -> tuple[Path, int]:
    rows = [r for r in recs if isinstance(r, dict)]
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["id"]
    buf = io.StringIO(newline="")
    out = csv.writer(buf)
    out.writerow(columns)
    out.writerows([_text(r[c]) if c in r else "" for c in columns] for r in rows)
    data = buf.getvalue().encode("utf-8", "surrogatepass")
    path = d / ("in.csv.gz" if gz else "in.csv")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path, len(rows)


def write_parquet(recs: list, d: Path) -> tuple[Path, int]:
    """One file per record (records differ in types), in a folder: the folder is the source."""
    folder, n = d / "pq", 0
    folder.mkdir()
    for i, rec in enumerate(recs):
        try:
            table = pa.Table.from_pylist([rec])
            if table.num_columns:  # Parquet stores no rows without a column
                pq.write_table(table, folder / f"{i:03}.parquet")
                n += 1
        except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError, AttributeError):
            (folder / f"{i:03}.parquet").unlink(missing_ok=True)  # a record Arrow cannot hold is not written
    if n == 0:
        pq.write_table(pa.table({"id": ["p"]}), folder / "none.parquet")
        n = 1
    return folder, n


_XML_NAME = re.compile(r"\A[A-Za-z_][\w.-]*\Z")


def write_xml(recs: list, d: Path) -> tuple[Path, int]:
    rows = [r for r in recs if isinstance(r, dict)]
    body = "".join("  <row " + " ".join(f"{k}={quoteattr(_text(v))}" for k, v in r.items() if _XML_NAME.match(k))
                   + " />\n" for r in rows)
    (d / "Posts.xml").write_bytes(f'<?xml version="1.0" encoding="utf-8"?>\n<posts>\n{body}</posts>\n'
                                  .encode("utf-8", "surrogatepass"))
    return d / "Posts.xml", len(rows)


def containers(fmt: str):
    yield write_json
    yield write_csv
    yield lambda recs, d: write_csv(recs, d, gz=True)
    yield write_parquet
    if fmt == "stackexchange":
        yield write_xml


@st.composite
def hostile_records(draw, records: list[dict]):
    rec = copy.deepcopy(draw(st.sampled_from(records)))
    for _ in range(draw(st.integers(1, 3))):
        rec = _mutate(draw, rec)
    return rec


@pytest.mark.parametrize(("fmt", "kind"), CASES)
def test_hostile_records_in_every_container_are_each_accepted_or_rejected_with_a_reason(fmt, kind, tmp_path):
    n = iter(range(10**6))

    @HYPOTHESIS
    @given(st.lists(hostile_records(seeds()[fmt]), min_size=1, max_size=3))
    def check(recs: list) -> None:
        for write in containers(fmt):
            d = tmp_path / str(next(n))
            d.mkdir()
            path, expected = write(recs, d)
            _check(_ingest(path, fmt, kind), expected)

    check()


DAMAGE = [b'"', b"\x00", b"<row ", b"<", b",", b"\n", b"\r", b"\xff", b"\xef\xbb\xbf", b"&", b"'", b"<!--", b"-->",
          b"<![CDATA["]


@pytest.mark.parametrize(("fmt", "kind"), [c for c in CASES if c[0] in ("stackexchange", "documents", "wildchat")])
def test_damaged_csv_and_xml_bytes_are_each_accepted_or_rejected_with_a_reason(fmt, kind, tmp_path):
    n = iter(range(10**6))

    @HYPOTHESIS
    @given(st.lists(hostile_records(seeds()[fmt]), min_size=1, max_size=3), st.data())
    def check(recs: list, data) -> None:
        for write in (write_csv, write_xml):
            d = tmp_path / str(next(n))
            d.mkdir()
            path, _ = write(recs, d)
            raw = path.read_bytes()
            for _ in range(data.draw(st.integers(1, 4))):
                at = data.draw(st.integers(0, len(raw)))
                op = data.draw(st.sampled_from(["insert", "cut", "drop"]))
                if op == "insert":
                    raw = raw[:at] + data.draw(st.sampled_from(DAMAGE)) + raw[at:]
                elif op == "cut":
                    raw = raw[:at]
                else:
                    raw = raw[:at] + raw[at + data.draw(st.integers(1, 40)):]
            path.write_bytes(raw)
            _check(_ingest(path, fmt, kind), None)

    check()
