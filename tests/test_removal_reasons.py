"""Every reason a pair can leave the release for is explained: ``pipeline.dedup.REASONS`` holds one sentence per
reason, ``removals`` refuses any other, the card's removals table shows the sentence, README's export section
names each, and stats.json's ``removed_by_reason`` counts removed.jsonl's records."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.dedup import REASONS, removals
from stages.export import build_release
from tests.export_fixtures import TOPICS, export_cfg, pair, write_method

ROOT = Path(__file__).resolve().parent.parent


def test_a_removal_with_an_unexplained_reason_is_refused():
    df = pl.DataFrame({"pair_id": ["p"], "_config": ["pugc"]})
    assert removals(df, "held_out", pl.lit(["pugc"])).height == 1
    with pytest.raises(ValueError, match="'malformed_dialogue' has no explanation.*REASONS"):
        removals(df, "malformed_dialogue", pl.lit(["pugc"]))


def test_every_reason_the_code_emits_is_explained_in_the_readme():
    """Reason literals handed to ``removals`` or ``drop_flagged`` in the export code are REASONS keys, and
    README.md's export section names every key."""
    sources = ["stages/export.py", "pipeline/dedup.py", "pipeline/decontam.py"]
    text = "\n".join((ROOT / s).read_text() for s in sources)
    emitted = set(re.findall(r'removals\(.*?, "([a-z][a-z_]+)"', text))
    flagged = re.search(r"for flag, reason in (.*?\)\)):", text, re.S).group(1)  # export's drop_flagged rules
    emitted |= set(re.findall(r'\("_[a-z]+", "([a-z][a-z_]+)"\)', flagged))
    assert {"identical", "cut_off_chosen", "duplicate_pair", "contaminated", "held_out", "split_straddle"} <= emitted
    assert emitted <= set(REASONS)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("`dvc repro` ends with the `export` stage"):readme.index("### PII redaction")]
    assert [r for r in REASONS if f"`{r}`" not in section] == []


def test_the_card_explains_each_removal_and_stats_count_removed_jsonl(tmp_path):
    loop = "Here is my answer. " + "I am here to listen to you. " * 8
    cut = "This comparative analysis highlights the diverse adaptations of Venus flytraps, pitcher plants,"
    write_method(tmp_path, "pugc", [pair("p-loop", TOPICS[0], "pugc", chosen=loop),
                                    pair("p-cut", TOPICS[1], "pugc", chosen=cut),
                                    pair("p-ok", TOPICS[2], "pugc"), pair("p-ok2", TOPICS[3], "pugc")])
    release = tmp_path / "data" / "release"
    build_release(export_cfg(methods=["pugc"], test_fraction=0.0), tmp_path, release, "fp-test")
    card = (release / "README.md").read_text()
    assert "pairs whose chosen reacts to feedback nobody gave, loops or stops mid-sentence" in card
    for reason in ("looping_chosen", "cut_off_chosen"):
        assert f"| `pugc` | `{reason}` | 1 | {REASONS[reason]} |" in card
        assert f"| `all` | `{reason}` | 1 | {REASONS[reason]} |" in card
    records = [json.loads(line) for line in (release / "removed.jsonl").read_text().splitlines()]
    stats = json.loads((release / "stats.json").read_text())
    assert stats["removed_by_reason"] == dict(Counter(r["reason"] for r in records)) == {
        "cut_off_chosen": 1, "looping_chosen": 1}
    assert stats["removed"] == len(records)
