"""Every reason a pair can leave the release for is explained: ``pipeline.dedup.REASONS`` holds one sentence per
reason, ``removals`` refuses any other, the card's removals table shows the sentence, the docs' export section
names each, and stats.json counts removed.jsonl's records: those removed from the release and those left out of
``all`` only, each by reason."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipeline.dedup import REASONS, removals
from stages.export import build_release
from tests.docs_text import section
from tests.export_fixtures import TOPICS, export_cfg, pair, write_method

ROOT = Path(__file__).resolve().parent.parent


def export_section() -> str:
    """What the docs say about the release and export's steps: "Training on the output" (README.md's summary and
    docs/training.md) and docs/export.md's steps (the README's section up to "PII redaction" before it was split)."""
    return section("Training on the output") + "\n\n" + section("Export: what it does to the pairs")


def test_a_removal_with_an_unexplained_reason_is_refused():
    df = pl.DataFrame({"pair_id": ["p"], "_config": ["pugc"]})
    assert removals(df, "held_out", pl.lit(["pugc"])).height == 1
    with pytest.raises(ValueError, match="'malformed_dialogue' has no explanation.*REASONS"):
        removals(df, "malformed_dialogue", pl.lit(["pugc"]))


def test_every_reason_the_code_emits_is_explained_in_the_readme():
    """Reason literals handed to ``removals`` or ``drop_flagged`` in the export code are REASONS keys, and
    the docs' export section (README.md's summary, docs/training.md and docs/export.md) names every key."""
    sources = ["stages/export.py", "stages/export_decide.py", "stages/export_split.py", "pipeline/dedup.py",
               "pipeline/decontam.py", "pipeline/split_leaks.py"]
    text = "\n".join((ROOT / s).read_text() for s in sources)
    emitted = set(re.findall(r'removals\(.*?, "([a-z][a-z_]+)"', text))
    flagged = re.search(r"for flag, reason in (.*?\)\)):", text, re.S).group(1)  # export's drop_flagged rules
    emitted |= set(re.findall(r'\("_[a-z]+", "([a-z][a-z_]+)"\)', flagged))
    assert {"identical", "cut_off_chosen", "duplicate_pair", "contaminated", "held_out", "split_straddle"} <= emitted
    assert emitted <= set(REASONS)
    section = export_section()
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
    from pipeline.audit import CHECKS
    for name, description in CHECKS.items():  # the audit's checks, each with what it checks
        assert f"| `{name}` | {description} | 0 |" in card
    records = [json.loads(line) for line in (release / "removed.jsonl").read_text().splitlines()]
    stats = json.loads((release / "stats.json").read_text())
    assert stats["removed_from_release_by_reason"] == dict(Counter(r["reason"] for r in records)) == {
        "cut_off_chosen": 1, "looping_chosen": 1}
    assert stats["removed_from_release"] == len(records) and stats["left_out_of_all_only"] == 0


def test_every_pair_a_stage_wrote_is_released_or_listed_in_removed_jsonl(tmp_path):
    """Conservation on a release with removals of several reasons: per method, pairs read = pairs in its own
    config + records leaving that config; conditional pairs read = pairs in `all` + records leaving `all`."""
    from tests.export_fixtures import joint, standard_methods, write_held_out

    standard_methods(tmp_path)
    loop = "Here is my answer. " + "I am here to listen to you. " * 8
    write_method(tmp_path, "wildfeedback", [
        pair("w-same", TOPICS[0], "wildfeedback", chosen="Yes. It works.", rejected="yes.  it works."),
        pair("w-loop", TOPICS[1], "wildfeedback", chosen=loop), pair("w-ok", TOPICS[2], "wildfeedback"),
        pair("w-dup", TOPICS[2], "wildfeedback"), pair("w-held", TOPICS[11], "wildfeedback")])
    write_method(tmp_path, "dove", [joint(f"d{i}", f"Dove task {i}: {TOPICS[i]}", f"Dove task {i}: {TOPICS[i + 1]}")
                                    for i in range(6)])
    write_held_out(tmp_path, [TOPICS[11]])
    release = tmp_path / "data" / "release"
    build_release(export_cfg(methods=["wildfeedback", "pugc", "selfie", "curry", "dove"], test_fraction=0.3,
                             held_out=["data/selfie/test"]), tmp_path, release, "fp-test")
    records = pl.read_ndjson(release / "removed.jsonl").explode("configs")
    stats = json.loads((release / "stats.json").read_text())
    details = json.loads((release / "details.json").read_text())
    assert len(set(records["reason"])) >= 4, records  # the fixture exercises several rules
    released = {c: sum(s.values()) for c, s in details["rows"].items()}
    for m, v in details["methods"].items():
        left = records.filter((pl.col("method") == m) & (pl.col("configs") == m)).height
        assert v["input"] == released.get(m, 0) + left, m
    conditional = sum(v["input"] for m, v in details["methods"].items() if m != "dove")
    assert conditional == released["all"] + records.filter(pl.col("configs") == "all")["pair_id"].n_unique()
    whole = pl.read_ndjson(release / "removed.jsonl")  # stats.json counts its records, of either kind
    all_only = whole.filter(pl.col("configs").list.join(",") == "all").height
    assert stats["left_out_of_all_only"] == all_only
    assert stats["removed_from_release"] == whole.height - all_only == stats["rows_in"] - stats["pairs"]
    by_method = {}  # details.json's removals per method and reason are removed.jsonl's, to the pair
    for r in pl.read_ndjson(release / "removed.jsonl").iter_rows(named=True):
        by_method.setdefault(r["method"], Counter())[r["reason"]] += 1
    assert details["drops_by_method"] == {m: dict(c) for m, c in by_method.items()} and len(by_method) >= 3


def test_removed_jsonl_carries_each_removed_pairs_texts_as_redacted(tmp_path):
    """A user checking why a pair left needs its texts: prompt, chosen, rejected (DOVE: both prompts), redacted
    like the release."""
    from tests.export_fixtures import joint

    loop = "Here is my answer. " + "I am here to listen to you. " * 8
    write_method(tmp_path, "pugc", [pair("p-loop", TOPICS[0] + " Mail ann@example.org.", "pugc", chosen=loop),
                                    pair("p-ok", TOPICS[1], "pugc")])
    d = joint("d-loop", TOPICS[2], TOPICS[3])
    write_method(tmp_path, "dove", [{**d, "chosen": [{"role": "assistant", "content": loop}]}])
    release = tmp_path / "data" / "release"
    build_release(export_cfg(methods=["pugc", "dove"], test_fraction=0.0), tmp_path, release, "fp-test")
    records = {r["pair_id"]: r for r in map(json.loads, (release / "removed.jsonl").read_text().splitlines())}
    assert set(records) == {"p-loop", "d-loop"}
    p = records["p-loop"]
    assert p["reason"] == "looping_chosen" and p["chosen"] == [{"role": "assistant", "content": loop}]
    assert p["prompt"][-1]["content"].endswith("Mail [REDACTED_EMAIL].") and p["rejected"][0]["role"] == "assistant"
    assert records["d-loop"]["chosen_prompt"] == d["chosen_prompt"] and records["d-loop"]["rejected"] == d["rejected"]


def test_stats_and_card_tell_pairs_removed_from_the_release_from_pairs_left_out_of_all_only(tmp_path):
    """Was: stats.json's ``removed`` added the pairs only left out of ``all`` (still in their method's config) to
    those removed from the release (45 "removed" on a real run, 14 of them lost)."""
    shared = [TOPICS[0], TOPICS[1]]
    write_method(tmp_path, "pugc", [pair("p-same", TOPICS[2], "pugc", chosen="Yes. It works.", rejected="yes. it works."),
                                    *(pair(f"p{i}", t, "pugc") for i, t in enumerate(shared))])
    write_method(tmp_path, "selfie", [pair(f"s{i}", t, "selfie") for i, t in enumerate([*shared, TOPICS[3]])])
    release = tmp_path / "data" / "release"
    build_release(export_cfg(methods=["pugc", "selfie"], test_fraction=0.0), tmp_path, release, "fp-test")
    stats = json.loads((release / "stats.json").read_text())
    assert {k: v for k, v in stats.items() if "gates" not in k} == {
        "rows_in": 6, "pairs": 5, "removed_from_release": 1, "removed_from_release_by_reason": {"identical": 1},
        "left_out_of_all_only": 2, "left_out_of_all_only_by_reason": {"duplicate_prompt_exact": 2}}
    details = json.loads((release / "details.json").read_text())
    assert details["drops"] == {"duplicate_prompt_exact": 2, "identical": 1}  # every removed.jsonl record
    assert details["drops_from_release"] == {"identical": 1}
    assert details["drops_from_all_only"] == {"duplicate_prompt_exact": 2}
    card = (release / "README.md").read_text()
    assert ("Removed from the release: 1 pair (`identical` 1). Left out of `all` only: 2 pairs "
            "(`duplicate_prompt_exact` 2), each kept in its own method's config") in card
