"""The readers' hand-written boundary checks against the libraries that could stand in for them, side by side.

    python bench/boundary_readers.py             # 20,000 records / rows
    python bench/boundary_readers.py --smoke

- **JSON records** (``pipeline/jsontext.py`` ``parse_json``, stdlib ``json`` plus checks) against ``orjson.loads``
  (installed) and bare ``json.loads``: what each does with hostile records (a key repeated with another value,
  a lone surrogate, 300 levels of nesting, a 5,000-digit integer), and records/s on the shipped samples' lines.
- **Stack Exchange XML** (``pipeline/xmlrows.py`` ``xml_rows``) against ``xml.etree.ElementTree.iterparse``:
  rows read from a dump with one malformed row in the middle, and rows/s on a clean dump.
- **Encodings** (``pipeline/encodings.py`` ``encoding_error``, evidence from the first 256 bytes: a byte order
  mark, an XML declaration, NUL-interleaved text) against ``charset_normalizer`` (installed) on the same bytes:
  the verdict each gives per file.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.encodings import encoding_error  # noqa: E402
from pipeline.jsontext import parse_json  # noqa: E402
from pipeline.xmlrows import xml_rows  # noqa: E402

HOSTILE = {
    "key repeated, other value": '{"prompt": "a", "prompt": "b"}',
    "lone surrogate": '{"prompt": "\\ud800"}',
    "nested 300 deep": '{"prompt": ' + "[" * 300 + "]" * 300 + "}",
    "5,000-digit integer": '{"n": ' + "7" * 5000 + "}",
}


def _verdict(f, text: str) -> str:
    try:
        value = f(text)
    except RecursionError:
        return "raises RecursionError"
    except ValueError as e:
        return f"rejects ({type(e).__name__})"
    if isinstance(value, tuple):  # parse_json: (value, reason)
        return f"rejects: {value[1][:60]}" if value[1] else "accepts"
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "accepts a string no encoder takes"
    return "accepts (keeps the last value)" if value == {"prompt": "b"} else "accepts"


def json_table(n: int) -> None:
    parsers = {"prefpipe parse_json": parse_json, "orjson.loads": orjson.loads, "json.loads": json.loads}
    print("| JSON record | " + " | ".join(parsers) + " |")
    print("|---|" + "---|" * len(parsers))
    for name, text in HOSTILE.items():
        print(f"| {name} | " + " | ".join(_verdict(f, text) for f in parsers.values()) + " |")
    lines = [line for p in sorted((ROOT / "data" / "samples").glob("*.jsonl"))
             for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = (lines * (n // len(lines) + 1))[:n]
    rates = []
    for f in parsers.values():
        t = time.perf_counter()
        for line in lines:
            f(line)
        rates.append(f"{n / (time.perf_counter() - t):,.0f}")
    print(f"| records/s ({n:,} sample lines) | " + " | ".join(rates) + " |")


def _dump(n: int, bad_at: int | None) -> bytes:
    rows = [f'<row Id="{i}" PostTypeId="1" Title="Question {i}" Body="&lt;p&gt;body {i}&lt;/p&gt;" />'
            for i in range(n)]
    if bad_at is not None:
        rows[bad_at] = f'<row Id="{bad_at}" Title="a <b> tag" />'  # '<' in an attribute value: not XML
    return ("<?xml version='1.0' encoding='utf-8'?>\n<posts>\n" + "\n".join(rows) + "\n</posts>\n").encode()


def _iterparse(data: bytes) -> tuple[int, str]:
    rows = 0
    try:
        for _, el in ET.iterparse(io.BytesIO(data)):
            if el.tag == "row":
                rows += 1
                el.clear()
    except ET.ParseError as e:
        return rows, f"stops: {e}"
    return rows, "-"


def _ours(data: bytes) -> tuple[int, str]:
    out = list(xml_rows(io.BytesIO(data), 64 << 20))
    bad = [reason for row, reason, _ in out if row is None]
    return sum(row is not None for row, _, _ in out), (f"{len(bad)} reject: {bad[0][:50]}" if bad else "-")


def xml_table(n: int) -> None:
    print("| XML dump | prefpipe xml_rows | ElementTree.iterparse |")
    print("|---|---|---|")
    broken, clean = _dump(n, n // 2), _dump(n, None)
    (o, o_why), (e, e_why) = _ours(broken), _iterparse(broken)
    print(f"| {n:,} rows, row {n // 2:,} malformed: rows read | {o:,} ({o_why}) | {e:,} ({e_why}) |")
    rates = []
    for f in (_ours, _iterparse):
        t = time.perf_counter()
        assert f(clean)[0] == n
        rates.append(f"{n / (time.perf_counter() - t):,.0f}")
    print(f"| rows/s, clean dump | {rates[0]} | {rates[1]} |")


def encoding_table() -> None:
    from charset_normalizer import from_bytes

    files = {
        "UTF-8, a multi-byte character cut at byte 256": ("😀 héllo wörld " * 40).encode(),
        "UTF-16LE without a byte order mark": ('{"a": "hello"}\n' * 30).encode("utf-16-le"),
        "UTF-16 with a byte order mark": ('{"a": "hello"}\n' * 30).encode("utf-16"),
        "XML declaring ISO-8859-1": b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<posts><row Title="Caf\xe9"/>',
        "Latin-1 text, nothing declared": "café naïve résumé ".encode("latin-1") * 10,
    }
    print("| file (first 256 bytes) | prefpipe encoding_error | charset_normalizer best guess |")
    print("|---|---|---|")
    for name, data in files.items():
        ours = encoding_error(io.BytesIO(data))
        best = from_bytes(data[:256]).best()
        ours = "UTF-8 (read on)" if ours is None else ours.split(" (")[0].removeprefix("the file is ")
        print(f"| {name} | {ours} | {best.encoding if best else 'none'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--smoke", action="store_true", help="200 records (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.records = 200
    json_table(args.records)
    print()
    xml_table(args.records)
    print()
    encoding_table()


if __name__ == "__main__":
    main()
