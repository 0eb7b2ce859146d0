"""Shared by the ingest case tests (tests/test_input_boundaries*.py, tests/test_hostile_reasons.py,
tests/test_ingest_exports.py, tests/test_ingest_fuzz.py, tests/test_bounded_memory.py, tests/test_decontam_rules.py):
JSON lines (as text or written to a file), a user and an assistant turn, one source through ingest with every
record read accepted or rejected with a reason."""

from __future__ import annotations

import json
from pathlib import Path

from tests.adapter_sources import MAX_BYTES, assert_accounted, run_source

U, A = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _jsonl(path: Path, recs: list) -> Path:
    path.write_text(_lines(*recs))
    return path


def _ingest(path: Path, fmt: str = "prompts", kind: str = "prompts", max_bytes: int = MAX_BYTES):
    res = run_source(path, fmt, kind, max_bytes=max_bytes)
    assert_accounted(res)
    return res
