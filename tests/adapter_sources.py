"""Shared by the ingest tests (tests/test_adapters.py, tests/test_adapters_real.py, tests/input_cases.py and
what uses it): one source through ingest, and the check that every record read was accepted or rejected."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.config import Source
from stages.ingest import ingest_source

# The shipped limit (params.yaml's ingest.max_record_bytes), read rather than restated so that it cannot drift.
MAX_BYTES: int = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["ingest"][
    "max_record_bytes"]
# The coffee.stackexchange answers (Posts.xml Ids) that lean on posts of their thread ("as mentioned in the
# comments", "As @Chris said", "@PythonMaster's answer"), read one by one: ingest rejects exactly these.
SE_THREAD_REFERENCES = {"34", "64", "69", "82", "168", "365", "403", "414", "423", "430", "446", "461", "484", "1528",
                        "1534", "1548", "1554", "1574", "1585"}
# The coffee.stackexchange posts whose body shows an image (<img>): as a prompt or a response their words point at it
# ("It came with this lid:", "The graph below shows"), so ingest rejects them, and the answers of such a question.
SE_IMAGE_QUESTIONS = {"4", "39", "84", "98", "113", "115", "120", "131", "157", "217", "218", "285", "300", "328", "345"}
SE_IMAGE_ANSWERS = {"8", "17", "41", "68", "91", "121", "138", "140", "143", "144", "166", "181", "194", "219", "246",
                    "283", "312", "318", "324", "439", "496", "497", "1500", "1503", "1510", "1513", "1515", "1536",
                    "1537", "1538"}


def run_source(path: Path | str, fmt: str, kind: str, mapping: dict[str, str] | None = None, name: str = "src",
               max_bytes: int = MAX_BYTES):
    return ingest_source(Source(name=name, kind=kind, path=str(path), format=fmt, mapping=mapping or {}), max_bytes)


def assert_accounted(result) -> None:
    """Every record read is accepted or has a rejects row of its own (none left unread), each with a reason."""
    m = result.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(result.rejects)
    assert all(r["reason"] for r in result.rejects)
