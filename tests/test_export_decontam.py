"""Export's decontamination: evaluation prompts (MT-Bench, Arena-Hard, Vicuna-80, Koala) kept out of the release."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from pipeline.decontam import prompts_sha256
from pipeline.io import StageError
from tests.export_fixtures import (
    TOPICS,
    build,
    pair,
    removed,
    write_method,
)


def test_decontamination_removes_mt_bench_and_arena_hard_prompts_and_keeps_a_near_miss(tmp_path, real):
    mt = [json.loads(x) for x in (real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n") if x]
    arena = [json.loads(x) for x in (real / "arena_hard/data/arena-hard-v0.1/question.jsonl").read_text().split("\n") if x]
    q81 = next(q for q in mt if q["question_id"] == 81)
    hard = next(a for a in arena if len(a["prompt"].split()) > 60)
    near_miss = q81["turns"][0].replace("Hawaii", "Iceland")  # breaks every 13-gram of this 19-word prompt
    write_method(tmp_path, "pugc", [
        pair("mt", q81["turns"][0], "pugc"),
        pair("arena", "Please help me with this. " + hard["prompt"] + " Thank you!", "pugc"),
        pair("near", near_miss, "pugc"),
        pair("clean", TOPICS[3], "pugc"),
    ])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    gone = {r["pair_id"]: json.loads(r["detail"]) for r in removed(release).iter_rows(named=True)}
    assert set(gone) == {"mt", "arena"}
    assert gone["mt"]["eval_set"] == "mt_bench" and gone["mt"]["eval_id"] == "81#turn1" and gone["mt"]["overlap"] == 1.0
    assert gone["arena"]["eval_set"] == "arena_hard" and gone["arena"]["eval_id"] == hard["uid"]
    entry = stats["decontamination"]["mt_bench"]
    assert {k: entry[k] for k in ("prompts", "status", "removed")} == {"prompts": 160, "status": "ok", "removed": 1}
    # the release records what it was checked against: a fingerprint of the set's (id, prompt) list as read
    ids = [f"{q['question_id']}#turn{i + 1}" for q in mt for i in range(len(q["turns"]))]
    assert entry["prompts_sha256"] == prompts_sha256(ids, [t for q in mt for t in q["turns"]])
    assert f"`{entry['prompts_sha256'][:12]}`" in (release / "README.md").read_text()
    assert stats["decontamination"]["arena_hard"]["removed"] == 1
    kept = set(pl.read_parquet(release / "pugc" / "train-00000-of-00001.parquet")["pair_id"])
    assert kept == {"near", "clean"}


def test_decontamination_catches_a_short_eval_prompt_inside_a_longer_prompt(tmp_path, real):
    """An eval prompt shorter than `ngram` words is one n-gram of all its words, which no 13-gram of a longer
    prompt equals: a fifth of MT-Bench's and Arena-Hard's prompts (4-12 words) were caught only when a release
    prompt equalled them, and "Please prove the Pythagorean theorem." reached train. A short text found whole
    in the other now goes; under `min_words` it must still be equal, and a different short prompt stays."""
    mt = [json.loads(x) for x in (real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n") if x]
    arena = [json.loads(x) for x in (real / "arena_hard/data/arena-hard-v0.1/question.jsonl").read_text().split("\n") if x]
    proof = next(f"{q['question_id']}#turn{i + 1}" for q in mt for i, t in enumerate(q["turns"])
                 if t == "Prove the Pythagorean theorem.")
    dylan = next(a["uid"] for a in arena if a["prompt"] == "Write a song about catfish in the style of Bob Dylan.")
    equity = next(a["uid"] for a in arena if a["prompt"].startswith("Describe how to incorporate AI in the private equity"))
    write_method(tmp_path, "pugc", [
        pair("prefixed", "Please prove the Pythagorean theorem.", "pugc"),
        pair("suffixed", "write a song about catfish in the style of bob dylan! Three verses and a chorus, please.", "pugc"),
        pair("inside", "How to incorporate AI in the private equity deal sourcing process?", "pugc"),  # 11 of its 12 words
        pair("other", "What is the Pythagorean theorem?", "pugc"),
        pair("clean", TOPICS[3], "pugc"),
    ])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    gone = {r["pair_id"]: json.loads(r["detail"]) for r in removed(release).iter_rows(named=True)}
    assert {k: (v["eval_set"], v["eval_id"], v["overlap"]) for k, v in gone.items()} == {
        "prefixed": ("mt_bench", proof, 1.0), "suffixed": ("arena_hard", dylan, 1.0),
        "inside": ("arena_hard", equity, 1.0)}
    assert set(pl.read_parquet(release / "pugc" / "train-00000-of-00001.parquet")["pair_id"]) == {"other", "clean"}
    _, strict = build(tmp_path, methods=["pugc"], test_fraction=0.0, decontamination={"min_words": 12})
    assert strict["drops"] == {}


def test_decontamination_covers_vicuna80_and_koala(tmp_path, real):
    """Vicuna-80 and Koala (in AlpacaEval's prompts) are default decontamination sets: a release prompt quoting
    one of theirs goes, naming the set and id (on main only MT-Bench and Arena-Hard were checked, and Koala's
    "do not train on it" prompts reached train)."""
    vic = json.loads((real / "vicuna80/fastchat/eval/table/question.jsonl").read_text().split("\n")[0])
    koala = json.loads((real / "koala/koala_test_set.jsonl").read_text().split("\n")[2])
    write_method(tmp_path, "pugc", [pair("vicuna", "Hi! " + vic["text"], "pugc"),
                                    pair("koala", koala["prompt"].upper(), "pugc"), pair("clean", TOPICS[3], "pugc")])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    gone = {r["pair_id"]: json.loads(r["detail"]) for r in removed(release).iter_rows(named=True)}
    assert {k: (v["eval_set"], v["eval_id"]) for k, v in gone.items()} == {
        "vicuna": ("vicuna80", str(vic["question_id"])), "koala": ("koala", koala["id"])}
    assert {s: stats["decontamination"][s]["prompts"] for s in ("vicuna80", "koala")} == {"vicuna80": 80, "koala": 180}


def test_a_koala_prompt_behind_a_sharegpt_regenerate_counter_is_caught_by_its_clean_text(tmp_path, real):
    """13 of Koala's 180 prompts open with the ShareGPT page's regenerate counter glued to the text ("3 / 3Write a
    funny, interesting, inspiring poem for Women's Day."): normalised, its first word was "3write", so a release
    prompt of the clean text, shorter than `ngram` words, was neither equal to it nor found whole in it, and
    reached train. The counter is read off the eval prompt: every one of the 13 goes by its clean text."""
    rows = [json.loads(x) for x in (real / "koala/koala_test_set.jsonl").read_text().split("\n") if x]
    counted = {r["id"]: re.sub(r"^\d+ / \d+", "", r["prompt"]) for r in rows if re.match(r"\d+ / \d+\S", r["prompt"])}
    assert len(counted) == 13 and counted["koala_131"] == "Write a funny, interesting, inspiring poem for Women's Day."
    write_method(tmp_path, "pugc", [pair(k, v, "pugc") for k, v in counted.items()] + [pair("clean", TOPICS[3], "pugc")])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    gone = {r["pair_id"]: json.loads(r["detail"]) for r in removed(release).iter_rows(named=True)}
    assert {k: (v["eval_set"], v["eval_id"]) for k, v in gone.items()} == {k: ("koala", k) for k in counted}
    assert stats["decontamination"]["koala"]["removed"] == 13
    assert set(pl.read_parquet(release / "pugc" / "train-00000-of-00001.parquet")["pair_id"]) == {"clean"}


def test_decontamination_threshold_and_ngram_are_parameters(tmp_path, real):
    q = json.loads((real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n")[0])
    words = q["turns"][0].split()
    half = " ".join(words[: len(words) // 2 + 1]) + " and then something else entirely about gardening today"
    write_method(tmp_path, "pugc", [pair("half", half, "pugc")])
    _, loose = build(tmp_path, methods=["pugc"], decontamination={"ngram": 5, "threshold": 0.3})
    _, strict = build(tmp_path, methods=["pugc"], decontamination={"ngram": 5, "threshold": 0.9})
    assert loose["drops"] == {"contaminated": 1} and strict["drops"] == {}


def test_overlap_is_over_the_shorter_text_and_the_threshold_is_inclusive():
    """overlap = shared n-grams / n-grams of the *shorter* text, contaminated at >= threshold: an eval prompt
    quoted inside a long user prompt is caught, and an overlap exactly at the threshold goes."""
    from pipeline.decontam import contamination

    evals = pl.DataFrame({"eval_set": ["e", "e"], "eval_id": ["quoted", "half"], "text": [
        "name three rivers that flow through more than four european capital cities",
        "alpha bravo charlie delta echo foxtrot golf hotel"]})
    prompts = pl.DataFrame({"_key": [1, 2, 3], "_text": [
        # the whole 12-word eval prompt inside 40 other words: 8 of 8 eval 5-grams, 8 of 48 prompt 5-grams
        " ".join(f"filler{i}" for i in range(20)) + " name three rivers that flow through more than four european "
        "capital cities " + " ".join(f"padding{i}" for i in range(20)),
        # 2 of the eval's 4 5-grams (alpha..echo, bravo..foxtrot): overlap exactly 0.5
        "alpha bravo charlie delta echo foxtrot zulu yankee xray whiskey",
        "a prompt about something else entirely with no shared words"]},
        schema={"_key": pl.UInt64, "_text": pl.String})
    hits = contamination(prompts, evals, 5, 0.5)
    assert hits.select("_key", "eval_id", "overlap").rows() == [(1, "quoted", 1.0), (2, "half", 0.5)]
    assert contamination(prompts, evals, 5, 0.51)["_key"].to_list() == [1]


def test_decontaminates_dove_rows_on_either_prompt(tmp_path, real):
    q = json.loads((real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n")[1])
    from tests.export_fixtures import joint

    write_method(tmp_path, "dove", [joint("d1", TOPICS[0], q["turns"][0]), joint("d2", TOPICS[1], TOPICS[2])])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert stats["drops"] == {"contaminated": 1} and removed(release)["pair_id"].to_list() == ["d1"]


def test_an_eval_prompt_with_personal_data_still_decontaminates(tmp_path):
    """The release's prompts are redacted before they are compared: an evaluation prompt shorter than
    `ngram` words must appear verbatim, so it is redacted the same way, or it never matches."""
    evals = tmp_path / "evals.jsonl"
    question = "Draft a reply to bob.smith@example.com declining the meeting."
    evals.write_text(json.dumps({"id": "e1", "prompt": question}) + "\n")
    write_method(tmp_path, "pugc", [pair("p1", question, "pugc"), pair("p2", TOPICS[1], "pugc")])
    sets = [{"name": "mine", "path": str(evals), "text_field": "prompt", "id_field": "id", "optional": False}]
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0, decontamination={"sets": sets})
    assert stats["drops"] == {"contaminated": 1} and removed(release)["pair_id"].to_list() == ["p1"]


def test_missing_eval_set_fails_unless_optional(tmp_path):
    write_method(tmp_path, "pugc", [pair("p", TOPICS[0], "pugc")])
    sets = [{"name": "gone", "path": str(tmp_path / "nope.jsonl"), "text_field": "prompt", "id_field": "id",
             "optional": False}]
    with pytest.raises(StageError, match="'gone'.*nope.jsonl.*optional: true"):
        build(tmp_path, methods=["pugc"], decontamination={"sets": sets})
    sets[0]["optional"] = True
    # a Hub id read through pipeline.io (the suite runs with HF_HUB_OFFLINE=1, so it cannot be fetched)
    sets.append({"name": "hub", "path": "hf://HuggingFaceH4/mt_bench_prompts:train", "text_field": "prompt",
                 "id_field": "prompt_id", "optional": True})
    release, stats = build(tmp_path, methods=["pugc"], decontamination={"sets": sets})
    assert stats["decontamination"]["gone"]["status"].startswith("unavailable")
    assert "OfflineModeIsEnabled" in stats["decontamination"]["hub"]["status"]
    assert "unavailable" in (release / "README.md").read_text()
    # the status is published: the set's file by name, never the local path (main printed /tmp/.../nope.jsonl)
    assert stats["decontamination"]["gone"]["status"].startswith("unavailable: nope.jsonl: ")
    for f in ("README.md", "details.json", "stats.json"):
        assert str(tmp_path) not in (release / f).read_text(), f
