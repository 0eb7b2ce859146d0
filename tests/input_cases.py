"""Shared by the second pass of input boundaries (tests/test_input_boundaries.py,
tests/test_input_boundaries_sources.py): JSON lines, a user and an assistant turn, one source through ingest
with every record read accepted or rejected."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Source
from stages.ingest import ingest_source

MAX_BYTES = 4 << 20
U, A = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _ingest(path: Path, fmt: str = "wildchat", kind: str = "conversations", **mapping: str):
    res = ingest_source(Source(name="s", kind=kind, path=str(path), format=fmt, mapping=mapping), MAX_BYTES)
    m = res.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(res.rejects)
    return res
