"""Shared by the adapter tests (tests/test_adapters.py, tests/test_adapters_real.py): one source through
ingest, and the check that every record read was accepted or rejected."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Source
from stages.ingest import ingest_source

MAX_BYTES = 4 << 20
# The coffee.stackexchange answers (Posts.xml Ids) that lean on posts of their thread ("as mentioned in the
# comments", "As @Chris said", "@PythonMaster's answer"), read one by one: ingest rejects exactly these.
SE_THREAD_REFERENCES = {"34", "64", "69", "82", "168", "365", "403", "414", "423", "430", "446", "461", "484", "1528",
                        "1534", "1548", "1554", "1574", "1585"}


def run_source(path: Path | str, fmt: str, kind: str, mapping: dict[str, str] | None = None, name: str = "src"):
    return ingest_source(Source(name=name, kind=kind, path=str(path), format=fmt, mapping=mapping or {}), MAX_BYTES)


def assert_accounted(result) -> None:
    m = result.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(result.rejects)
