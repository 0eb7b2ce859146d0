"""Redaction of numbers written back to back: the re-scan of ``pipeline/column_redact.py`` against the one it
replaced (``bench/_redact_baseline.py``, one number per scan of the whole row), in the same process.

A pattern bounded by a character takes it, so "+44 20 7946 0958+44 20 7946 0958..." gave up one number per scan of
the row: n numbers, n scans of an n-number row. Now what starts on a replacement's last character is replaced in
the same scan. Measures, for n back-to-back phone numbers in one text, the seconds of both; then redacts every
string of every file under ../shared/data/real (all kinds) with both and counts the texts that differ (must be 0).

    python bench/redact_rescan.py [--sizes 1200,3000,6000] [--smoke]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from _redact_baseline import old_replace_validated  # noqa: E402

import pipeline.pii as pii  # noqa: E402
from pipeline.column_redact import replace_validated  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _run(texts: pl.Series, old: bool) -> tuple[list[str], dict[str, int], float]:
    pii.replace_validated = old_replace_validated if old else replace_validated
    pii._phone_ok.cache_clear()
    t = time.perf_counter()
    out, counts = pii.redact(texts, pii.KINDS)
    return out.to_list(), counts, time.perf_counter() - t


def _strings(x: object) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [s for v in x for s in _strings(v)] if isinstance(x, list) else []


def real_texts() -> list[str]:
    """Every string of every JSON / JSON-lines file under ``REAL`` (gzipped too) and every Stack Exchange body."""
    texts: list[str] = []
    for f in sorted(REAL.rglob("*")):
        name = f.name.removesuffix(".gz")
        opener = gzip.open if f.suffix == ".gz" else open
        if name.endswith((".jsonl", ".json")):
            with opener(f, "rt", encoding="utf-8") as fh:
                raw = fh.read()
            try:
                texts += _strings(json.loads(raw))
            except json.JSONDecodeError:  # JSON lines named .json (dove's tldr/test.json)
                texts += [s for line in raw.split("\n") if line.strip() for s in _strings(json.loads(line))]
        elif name == "Posts.xml":
            texts += [r.get("Body", "") for r in ET.parse(f).getroot()]
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1200,3000,6000")
    ap.add_argument("--smoke", action="store_true", help="seconds: 200 numbers, the first 2,000 real texts")
    args = ap.parse_args()
    if args.smoke:
        args.sizes = "200"
    print("n back-to-back phones | old s | new s | both fully redacted")
    for n in [int(x) for x in args.sizes.split(",") if x]:
        texts = pl.Series(["call " + "+44 20 7946 0958" * n, "none here"])
        want = ["call " + "[REDACTED_PHONE]" * n, "none here"]
        o, _, to = _run(texts, old=True)
        w, _, tn = _run(texts, old=False)
        print(f"{n:,} | {to:.3f} | {tn:.3f} | {o == want and w == want}")
    texts = real_texts()[:2000] if args.smoke else real_texts()
    series = pl.Series(texts, dtype=pl.String)
    o, co, to = _run(series, old=True)
    w, cn, tn = _run(series, old=False)
    differ = sum(a != b for a, b in zip(o, w, strict=True))
    redacted = sum(a != b for a, b in zip(texts, w, strict=True))
    print(f"real: {len(texts):,} texts ({sum(map(len, texts)):,} chars) from {REAL}: old {to:.2f} s, new {tn:.2f} s; "
          f"{redacted:,} texts redacted; texts that differ old/new: {differ}; counts equal: {co == cn}")
    print(f"counts: {cn}")


if __name__ == "__main__":
    main()
