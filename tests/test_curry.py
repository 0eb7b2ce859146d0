"""Curry-DPO (stages/curry.py) pairing rules on hand-written cases: pairing, tie dropping, both level
schemes, output order, pinned ids. The stage's files, real data and a trainer are in test_curry_stage.py."""

from __future__ import annotations

import gzip
import itertools
import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import xxhash

from pipeline.checks import same_text
from pipeline.config import fingerprint
from stages.curry import build_pairs
from tests.curry_fakes import build, cfg, frames, prompt, resp


def xxh3_key(*values: str, seed: int = 0) -> int:
    """pipeline.ids.hash64 of ``values``, by hand: xxh3-64 of "<UTF-8 length>:<value>" per value."""
    return xxhash.xxh3_64_intdigest("".join(f"{len(v.encode())}:{v}" for v in values).encode(), seed=seed)


def pair_hash(prompt_id: str, scorer: str, chosen: str, rejected: str) -> int:
    """The documented pair hash (docs/curry.md): xxh3-64 of the three 8-byte big-endian hashes."""
    parts = (xxh3_key(prompt_id, scorer), xxh3_key(chosen), xxh3_key(rejected))
    return xxhash.xxh3_64_intdigest(b"".join(h.to_bytes(8, "big") for h in parts))


def xxh3_hex(prompt_id: str, scorer: str, chosen: str, rejected: str) -> str:
    return f"{pair_hash(prompt_id, scorer, chosen, rejected):016x}"


def ids(rows: list[dict]) -> list[tuple[str, str, int]]:
    """(chosen response, rejected response, level) per pair, from the lineage."""
    out = []
    for r in rows:
        lin = json.loads(r["lineage"])
        out.append((lin["chosen_id"], lin["rejected_id"], r["level"]))
    return out


# --- hand-written cases ------------------------------------------------------------------------------


def test_a_pair_names_who_wrote_its_responses_when_a_dataset_did():
    """The card named the models this pipeline ran, never those that wrote a rated dataset's responses
    (UltraFeedback's completions: GPT-4, LLaMA, ...), whose terms a release of them carries. A rated input's
    pairs name each side's writer as the dataset does (``written_by``, JSON-escaped); a model-scored input's
    pairs (a stage's own answers, its ``models``) name none."""
    rated = [{**r, "generator": f'gpt-4 "{r["response_id"]}"'} for r in PAPER]
    p0, r0 = frames([prompt("p1")], rated)
    p1, r1 = frames([prompt("p2")], [{**r, "prompt_id": "p2"} for r in PAPER], input_set=1)
    two = [{"prompts": "p", "responses": "r", "scores": "rated"}, {"prompts": "q", "responses": "s", "scores": "model"}]
    table, _ = build_pairs(pa.concat_tables([p0, p1]), pa.concat_tables([r0, r1]), cfg(inputs=two))
    by = {(lin["prompt_id"], lin["rejected_id"]): lin.get("written_by") for lin in map(json.loads, table["lineage"].to_pylist())}
    assert by == {**{("p1", x): {"chosen": 'gpt-4 "a"', "rejected": f'gpt-4 "{x}"'} for x in "bcd"},
                  **{("p2", x): None for x in "bcd"}}


PAPER = [resp("p1", "a", 9), resp("p1", "b", 7), resp("p1", "c", 4), resp("p1", "d", 1)]


def test_best_vs_rest_paper_levels_and_row_contents():
    rows, m = build([prompt("p1")], PAPER)
    # The paper: (R1,R4) easy, (R1,R3) medium, (R1,R2) hard, written in that order.
    assert ids(rows) == [("a", "d", 0), ("a", "c", 1), ("a", "b", 2)]
    first = rows[0]
    assert first["prompt"] == [{"role": "user", "content": "question p1"}]
    assert first["chosen"] == [{"role": "assistant", "content": "answer a"}]
    assert first["rejected"] == [{"role": "assistant", "content": "answer d"}]
    assert (first["score_chosen"], first["score_rejected"], first["margin"]) == (9.0, 1.0, 8.0)
    assert (first["method"], first["source"], first["noisy"], first["label_smoothing"]) == ("curry", "hand", False, 0.0)
    lin = json.loads(first["lineage"])
    assert lin == {"stage": "curry", "prompt_id": "p1", "scorer": "hand", "chosen_id": "a", "rejected_id": "d",
                   "written_by": {"chosen": "human", "rejected": "human"},  # a rated input: its dataset's writers
                   "fingerprint": lin["fingerprint"]} and len(lin["fingerprint"]) == 16
    # Pinned: pair_id = the documented xxh3 pair hash (docs/curry.md), recomputed here with the Python
    # xxhash package, independently of polars.
    assert [r["pair_id"] for r in rows] == ["b644fa090aca68bd", "a7ecf65aca68a57c", "9bc3e0e83f7b72b2"]
    assert [r["pair_id"] for r in rows] == [xxh3_hex("p1", "hand", "a", x) for x in "dcb"]
    assert m["pairs"]["per_level"] == {"0": 1, "1": 1, "2": 1}
    assert m["gap"]["min"] == 2.0 and m["gap"]["max"] == 8.0 and sum(m["gap"]["histogram"]["counts"]) == 3


def test_params_default_to_the_papers_curriculum():
    import yaml

    from pipeline.config import resolve_params
    from tests.conftest import ROOT

    c = resolve_params(yaml.safe_load((ROOT / "params.yaml").read_text())).curry
    assert (c.pairing, c.levels, c.n_levels, c.min_gap) == ("best_vs_rest", "per_prompt", 3, 0.0)


def test_all_pairing_uses_every_positive_gap():
    rows, m = build([prompt("p1")], PAPER, pairing="all")
    got = sorted(ids(rows))
    # Gaps: a-d 8, b-d 6, a-c 5, b-c 3, c-d 3, a-b 2 -> 5 distinct gaps over 3 levels: r * 3 // 5.
    assert got == sorted([("a", "d", 0), ("b", "d", 0), ("a", "c", 1), ("b", "c", 1), ("c", "d", 1), ("a", "b", 2)])
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    assert [r["level"] for r in rows] == sorted(r["level"] for r in rows)
    assert m["pairs"]["candidates"] == 6 and m["pairs"]["written"] == 6


def test_ties_are_dropped_never_paired():
    responses = [resp("p1", "b", 5), resp("p1", "a", 5), resp("p1", "c", 3), resp("p1", "d", 3)]
    rows, m = build([prompt("p1")], responses)
    # Equal best scores: the smaller response_id is R1; (R1, R2) has gap 0 and is dropped. (R1,R3) and
    # (R1,R4) have the same gap: one distinct gap, so both are level 0.
    assert ids(rows) == [("a", "c", 0), ("a", "d", 0)] or ids(rows) == [("a", "d", 0), ("a", "c", 0)]
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 1}
    rows, m = build([prompt("p1")], responses, pairing="all")
    assert sorted(ids(rows)) == [("a", "c", 0), ("a", "d", 0), ("b", "c", 0), ("b", "d", 0)]
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 2}
    rows, m = build([prompt("p1")], responses, min_gap=2.0)
    assert rows == [] and m["prompts"]["dropped"]["all_pairs_tied"] == 1 and m["pairs"]["dropped"] == {"gap_le_min_gap": 3}


def test_a_response_that_shows_nothing_is_blank_and_never_paired():
    """A model's answer of U+FFFD alone (or zero-width marks alone) says nothing: blank_text, as export and the
    audit judge a message (it was paired, and export removed the pair as unprintable_text)."""
    responses = [resp("p1", "a", 9), resp("p1", "b", 1, text="\ufffd"), resp("p1", "c", 2, text="\u200b"),
                 resp("p1", "d", 5)]
    rows, m = build([prompt("p1")], responses)
    assert ids(rows) == [("a", "d", 0)]
    assert m["responses"]["dropped"] == {"blank_text": 2}


def test_unusable_responses_are_counted_by_reason():
    responses = [
        resp("p1", "a", 9), resp("p1", "b", None), resp("p1", "c", math.nan), resp("p1", "d", math.inf),
        resp("p1", "e", 3, text="   "), resp("p1", "a", 1), resp("p1", "f", 2),
        resp("p2", "g", 5), resp("p2", "h", None),  # one scored response: no pair
        resp("p9", "i", 5), resp("p9", "j", 1),  # no prompt row
    ]
    rows, m = build([prompt("p1"), prompt("p2")], responses)
    assert ids(rows) == [("a", "f", 0)]
    assert m["responses"]["dropped"] == {"blank_text": 1, "duplicate": 1, "missing_score": 3,
                                         "nonfinite_score": 1, "orphan": 2}
    assert m["responses"]["read"] == 11 and m["responses"]["ranked"] == 3
    assert m["prompts"]["dropped"]["fewer_than_2_scored"] == 1 and m["prompts"]["paired"] == 1


def test_quantile_levels_bin_the_gap_across_the_dataset():
    responses = [
        resp("p1", "a", 10), resp("p1", "b", 9),  # gap 1
        resp("p2", "c", 10), resp("p2", "d", 6),  # gap 4
        resp("p3", "e", 10), resp("p3", "f", 2), resp("p3", "g", 8),  # gaps 8, 2
        resp("p4", "h", 10), resp("p4", "i", 0),  # gap 10
        resp("p5", "j", 3), resp("p5", "k", 1),  # gap 2 (ties the p3 gap: same level)
    ]
    prompts = [prompt(f"p{i}") for i in range(1, 6)]
    rows, m = build(prompts, responses, levels="quantile")
    gap_level = sorted((r["margin"], r["level"]) for r in rows)
    # 6 gaps, descending 10 8 4 2 2 1 -> ranks 0 1 2 3 3 5 -> r * 3 // 6 = 0 0 1 1 1 2.
    assert gap_level == [(1.0, 2), (2.0, 1), (2.0, 1), (4.0, 1), (8.0, 0), (10.0, 0)]
    assert m["pairs"]["per_level"] == {"0": 2, "1": 3, "2": 1}
    assert m["levels"]["gap_range"] == {"0": [8.0, 10.0], "1": [2.0, 4.0], "2": [1.0, 1.0]}
    # per_prompt on the same data: p3 has two gaps (levels 0, 1); every other prompt one (level 0).
    rows, _ = build(prompts, responses)
    assert sorted((r["margin"], r["level"]) for r in rows) == [(1.0, 0), (2.0, 0), (2.0, 1), (4.0, 0), (8.0, 0), (10.0, 0)]


def test_quantile_levels_bin_each_scorers_gaps_on_its_own_scale():
    """Vote gaps (10s) and a 1-5 judge's gaps (0.1s) are binned apart: ranked together, every vote pair was
    easy and every judge pair hard, whatever its difficulty on its own scale."""
    responses = []
    for i, gap in enumerate([10, 20, 30]):
        responses += [resp(f"v{i}", f"v{i}a", 100.0 + gap, scorer="votes"), resp(f"v{i}", f"v{i}b", 100.0, scorer="votes")]
    for i, gap in enumerate([0.1, 0.2, 0.3]):
        responses += [resp(f"j{i}", f"j{i}a", 3.0 + gap, scorer="judge"), resp(f"j{i}", f"j{i}b", 3.0, scorer="judge")]
    prompts = [prompt(f"{k}{i}") for k in "vj" for i in range(3)]
    rows, m = build(prompts, responses, levels="quantile")
    assert sorted((round(r["margin"], 6), r["level"]) for r in rows) == [
        (0.1, 2), (0.2, 1), (0.3, 0), (10.0, 2), (20.0, 1), (30.0, 0)]
    assert m["pairs"]["per_level"] == {"0": 2, "1": 2, "2": 2}


def test_per_prompt_spreads_many_gaps_over_the_levels():
    responses = [resp("p1", f"r{i}", float(10 - i)) for i in range(7)]  # 6 gaps 1..6
    rows, _ = build([prompt("p1")], responses)
    assert sorted((r["margin"], r["level"]) for r in rows) == [
        (1.0, 2), (2.0, 2), (3.0, 1), (4.0, 1), (5.0, 0), (6.0, 0)]
    # fewer distinct gaps than levels: each keeps its rank (2 gaps over 4 levels -> 0, 1, not 0, 2)
    rows, _ = build([prompt("p1")], PAPER[:3], n_levels=4)
    assert sorted((r["margin"], r["level"]) for r in rows) == [(2.0, 1), (5.0, 0)]


def test_order_is_by_level_then_a_seeded_shuffle_independent_of_input_order():
    prompts = [prompt(f"p{i:03d}") for i in range(60)]
    responses = [resp(f"p{i:03d}", f"p{i:03d}-{k}", float(s)) for i in range(60) for k, s in enumerate([4, 3, 2, 1])]
    rows, _ = build(prompts, responses)
    levels = [r["level"] for r in rows]
    assert levels == [0] * 60 + [1] * 60 + [2] * 60
    again, _ = build(prompts[::-1], responses[::-1])
    assert [r["pair_id"] for r in again] == [r["pair_id"] for r in rows]
    other, _ = build(prompts, responses, seed=1)
    assert [r["level"] for r in other] == levels
    assert [r["pair_id"] for r in other] != [r["pair_id"] for r in rows]
    for lv in range(3):
        assert sorted(r["pair_id"] for r in other if r["level"] == lv) == sorted(r["pair_id"] for r in rows if r["level"] == lv)
    # Shuffled, not left in prompt order.
    first = [json.loads(r["lineage"])["prompt_id"] for r in rows[:60]]
    assert first != sorted(first)


def test_scorers_and_input_sets_are_ranked_separately():
    p, r = frames([prompt("p1")], [resp("p1", "a", 9, scorer="x"), resp("p1", "b", 1, scorer="x"),
                                   resp("p1", "c", 100, scorer="y"), resp("p1", "d", 50, scorer="y")])
    p2, r2 = frames([prompt("p1", source="other")], [resp("p1", "a", 1), resp("p1", "b", 2)], input_set=1)
    two = [{"prompts": "p", "responses": "r", "scores": "rated"}, {"prompts": "p2", "responses": "r2", "scores": "rated"}]
    table, m = build_pairs(pa.concat_tables([p, p2]), pa.concat_tables([r, r2]), cfg(inputs=two))
    got = sorted((x["source"], json.loads(x["lineage"])["scorer"], *ids([x])[0][:2], x["margin"]) for x in table.to_pylist())
    assert got == [("hand", "x", "a", "b", 8.0), ("hand", "y", "c", "d", 50.0), ("other", "hand", "b", "a", 1.0)]
    assert m["prompts"]["paired"] == 3


def test_equal_texts_never_pair_the_best_scored_copy_stays():
    """Curry matched duplicates by response_id only, so equal texts with different scores paired."""
    responses = [resp("p1", "a", 9, text="Same answer."), resp("p1", "b", 7, text="SAME  answer.\n"),
                 resp("p1", "c", 4, text="Other answer."), resp("p1", "d", 1, text=" Same answer."),
                 resp("p1", "e", 2, text="Same answer.", scorer="other"), resp("p1", "f", 1, text="Third.", scorer="other")]
    for pairing in ("best_vs_rest", "all"):
        rows, m = build([prompt("p1")], responses, pairing=pairing)
        assert sorted(ids(rows)) == [("a", "c", 0), ("e", "f", 0)]  # scorer "other" is its own group
        assert m["responses"]["dropped"] == {"same_text": 2} and m["responses"]["ranked"] == 4
        for r in rows:
            assert " ".join(r["chosen"][0]["content"].lower().split()) != " ".join(r["rejected"][0]["content"].lower().split())



def test_equal_texts_beyond_ascii_fold_case_too():
    """ASCII texts are case-folded by Arrow, any other by polars' Unicode lower-casing: both must fold."""
    responses = [resp("p1", "a", 9, text="Ça VA, Éloïse."), resp("p1", "b", 7, text="ça  va, éloïse.\n"),
                 resp("p1", "c", 4, text="Other answer."), resp("p1", "d", 1, text="ÇA VA, ÉLOÏSE.")]
    rows, m = build([prompt("p1")], responses)
    assert sorted(ids(rows)) == [("a", "c", 0)]
    assert m["responses"]["dropped"] == {"same_text": 2}


def test_answers_that_differ_only_in_sentence_punctuation_are_one_answer():
    """Curry kept "You're welcome." and "You're welcome!" as two responses (whitespace and case only) and
    paired them; export then dropped the pair as ``identical`` and the next distinct answer never paired.
    Curry's rule is now the export's (``pipeline.checks.answer_key``); numbers and words still differ."""
    responses = [resp("p1", "a", 9, text="You're welcome."), resp("p1", "b", 7, text="You're welcome!"),
                 resp("p1", "c", 6, text='"you\'re  welcome"'), resp("p1", "d", 4, text="Any time."),
                 resp("p2", "a", 9, text="3.5"), resp("p2", "b", 7, text="35"), resp("p2", "c", 5, text="3.5!"),
                 resp("p3", "a", 9, text="¡Ça va, Éloïse!"), resp("p3", "b", 7, text="ÇA VA ÉLOÏSE"),
                 resp("p3", "c", 5, text="ça va, éloïse ?"), resp("p3", "d", 3, text="好的。"), resp("p3", "e", 1, text="好的"),
                 resp("p4", "a", 9, text="1,000"), resp("p4", "b", 7, text="1.000"), resp("p4", "c", 5, text="its fine"),
                 resp("p4", "d", 3, text="it's fine.")]
    rows, m = build([prompt(p) for p in ("p1", "p2", "p3", "p4")], responses, pairing="all")
    assert sorted((json.loads(r["lineage"])["prompt_id"], *ids([r])[0][:2]) for r in rows) == [
        ("p1", "a", "d"), ("p2", "a", "b"), ("p3", "a", "d"),
        ("p4", "a", "b"), ("p4", "a", "c"), ("p4", "a", "d"), ("p4", "b", "c"), ("p4", "b", "d"), ("p4", "c", "d")]
    assert m["responses"]["dropped"] == {"same_text": 6}


def _last_assistant_turn(dialogue: str) -> str:
    return dialogue.rsplit("\n\nAssistant:", 1)[-1]


def test_curry_treats_real_answer_pairs_as_the_same_answer_exactly_where_same_text_does(real):
    """UltraFeedback (200) and HH-RLHF harmless-base (300) chosen/rejected pairs, each also against its
    chosen answer with the final punctuation changed and the case upper: a prompt's two responses pair
    (a 9 vs 1 gap) exactly when ``same_text`` says they are different answers."""
    pairs = []
    for line in (real / "ultrafeedback_binarized/data/processed/eval_clean.jsonl").read_text().splitlines():
        r = json.loads(line)
        pairs.append((r["chosen"][-1]["content"] if isinstance(r["chosen"], list) else r["chosen"],
                      r["rejected"][-1]["content"] if isinstance(r["rejected"], list) else r["rejected"]))
    with gzip.open(real / "hh_rlhf/harmless-base/test.jsonl.gz", "rt") as f:
        for line in itertools.islice(f, 300):
            r = json.loads(line)
            pairs.append((_last_assistant_turn(r["chosen"]), _last_assistant_turn(r["rejected"])))
    pairs += [(a, (a.rstrip().rstrip(".!?") + "!").upper()) for a, _ in pairs]
    prompts, responses = [], []
    for i, (a, b) in enumerate(pairs):
        prompts.append(prompt(f"q{i}"))
        responses += [resp(f"q{i}", f"q{i}a", 9, text=a), resp(f"q{i}", f"q{i}b", 1, text=b)]
    rows, _ = build(prompts, responses)
    paired = {json.loads(r["lineage"])["prompt_id"] for r in rows}
    blank = [not a.strip() or not b.strip() for a, b in pairs]
    df = pl.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs]})
    same = df.select(same_text(pl.col("a"), pl.col("b"))).to_series().to_list()
    expected = {f"q{i}" for i in range(len(pairs)) if not same[i] and not blank[i]}
    assert paired == expected
    assert 100 < sum(same) < len(pairs) - 300  # both kinds are exercised


def test_pair_ids_do_not_depend_on_how_a_prompts_responses_are_spread_over_the_rows():
    """(prompt_id, scorer) is hashed once per run of equal rows: interleaved prompts and scorers, and a
    prompt whose responses are split across the input, must get the ids of the documented rule."""
    grouped = [resp(f"q{i}", f"q{i}{s}r{k}", float(v), scorer=s)
               for i in range(3) for s in ("x", "y") for k, v in enumerate([8, 5, 1])]
    spread = grouped[::2] + grouped[1::2]  # no two neighbours share (prompt_id, scorer), some runs split
    want = sorted(xxh3_hex(f"q{i}", s, f"q{i}{s}r0", f"q{i}{s}r{k}") for i in range(3) for s in ("x", "y") for k in (1, 2))
    for responses in (grouped, spread, spread[::-1]):
        rows, _ = build([prompt(f"q{i}") for i in range(3)], responses)
        assert sorted(r["pair_id"] for r in rows) == want
        assert all(json.loads(r["lineage"])["chosen_id"].endswith("r0") for r in rows)

def model_input(n_sets: int, scores: str = "model") -> list[dict]:
    return [{"prompts": "p", "responses": "r", "scores": scores}] * n_sets


def test_model_scores_pair_only_beyond_their_noise_rated_scores_as_the_paper():
    """A gap of 0.005 between a model's scores on a 1-5 scale became a pair; ratings keep the paper's rule."""
    prompts = [prompt(f"p{i}") for i in range(10)]
    # A judge's expected scores spread over 1..5; prompt p0's two answers differ by 0.005 (noise).
    responses = [resp("p0", "a", 3.005), resp("p0", "b", 3.0)] + [
        r for i in range(1, 10) for r in (resp(f"p{i}", f"x{i}", 1.0 + 0.44 * i), resp(f"p{i}", f"y{i}", 1.0 + 0.22 * i))]
    p, r = frames(prompts, responses)
    model, m = build_pairs(p, r, cfg(inputs=model_input(1)))
    # spread = p95 - p5 of the 20 scores; tie gap = 0.05 x spread (~0.17): p0's gap of 0.005 is a tie.
    (gap,) = m["tie_gaps"]
    assert gap["scores"] == "model" and gap["responses"] == 20
    assert gap["tie_gap"] == pytest.approx(0.05 * (gap["p95"] - gap["p05"])) and 0.15 < gap["tie_gap"] < 0.2
    # the spread is the 5th to 95th percentile (linear interpolation), not the full range
    scores = sorted(x["score"] for x in responses)
    assert (gap["p05"], gap["p95"]) == pytest.approx((float(np.percentile(scores, 5)), float(np.percentile(scores, 95))))
    assert gap["p05"] > scores[0] and gap["p95"] < scores[-1]
    pairs = {json.loads(x["lineage"])["prompt_id"]: x["margin"] for x in model.to_pylist()}
    assert "p0" not in pairs and set(pairs) == {f"p{i}" for i in range(1, 10)}  # 0.22 * i > 0.17 for i >= 1
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 1} and m["prompts"]["dropped"]["all_pairs_tied"] == 1
    rated, m_rated = build_pairs(p, r, cfg(inputs=model_input(1, "rated")))
    assert rated.num_rows == 10 and m_rated["tie_gaps"][0]["tie_gap"] == 0.0  # the paper: any positive gap
    # min_gap still applies, as a floor: gaps 0.22 * i > 0.5 for i >= 3.
    assert build_pairs(p, r, cfg(inputs=model_input(1), min_gap=0.5))[0].num_rows == 7


def test_an_inputs_own_min_gap_keeps_the_margins_its_stage_called_noise_out():
    """PUGC drops best-vs-worst margins under its min_margin (0.5: its judge's noise); with SmolLM2 every
    query's margin was 0.08-0.28, so PUGC made 0 pairs while Curry, reading the same scores with a tie gap
    of 0.05 x their spread (0.019), paired them. An input's own ``min_gap`` keeps Curry to that margin."""
    prompts = [prompt(f"p{i}") for i in range(10)]
    responses = [r for i in range(10) for r in (resp(f"p{i}", f"x{i}", 1.0 + 0.44 * i), resp(f"p{i}", f"y{i}", 1.0 + 0.22 * i))]
    p, r = frames(prompts, responses)
    own = [{"prompts": "p", "responses": "r", "scores": "model", "min_gap": 0.5}]
    pairs, m = build_pairs(p, r, cfg(inputs=own))
    margins = sorted(x["margin"] for x in pairs.to_pylist())
    assert len(margins) == 7 and margins[0] > 0.5 and m["tie_gaps"][0]["tie_gap"] == 0.5  # 0.22 * i > 0.5 for i >= 3
    assert build_pairs(p, r, cfg(inputs=model_input(1)))[0].num_rows == 9  # without it: 0.05 x spread only
    rated = [{**own[0], "scores": "rated"}]  # the floor applies to rated inputs too
    assert build_pairs(p, r, cfg(inputs=rated))[0].num_rows == 7


def test_pair_ids_and_curriculum_order_are_pinned():
    """Order = level, then xxh3-64 of the pair hash's 8 big-endian bytes seeded with curry.seed, then pair
    id; recomputed here from the rule alone (Python xxhash), and pinned, so an upgrade of polars cannot
    move a pair."""
    prompts = [prompt(f"q{i}") for i in range(4)]
    responses = [resp(f"q{i}", f"q{i}r{k}", float(s)) for i in range(4) for k, s in enumerate([8, 5, 3, 1])]
    for seed in (0, 7):
        rows, _ = build(prompts, responses, seed=seed)
        want = []
        for i in range(4):
            for k, level in ((3, 0), (2, 1), (1, 2)):
                h = pair_hash(f"q{i}", "hand", f"q{i}r0", f"q{i}r{k}")
                want.append((level, xxhash.xxh3_64_intdigest(h.to_bytes(8, "big"), seed=seed), f"{h:016x}"))
        assert [r["pair_id"] for r in rows] == [pid for _, _, pid in sorted(want)]
    rows, _ = build(prompts, responses, seed=0)
    assert [r["pair_id"] for r in rows] == [
        "3d5e18596b8633b1", "6071363ab63c202c", "0c61f0f2ecd2e389", "aecd2df1200084af",
        "947e944c6b2d8f9a", "2552a0257fb22618", "7cdc8b137a128c2f", "99f1ca7ee510934d",
        "25f7c0cc46693851", "2682f31b3f1fa88d", "43ace875bbf49d41", "7258534a9e63ca07",
    ]


def test_lineage_is_valid_json_when_ids_need_escaping():
    rows, _ = build([prompt('p"1')], [resp('p"1', "a\\b", 2), resp('p"1', "c\nd", 1)])
    lin = json.loads(rows[0]["lineage"])
    assert (lin["prompt_id"], lin["chosen_id"], lin["rejected_id"]) == ('p"1', "a\\b", "c\nd")


def test_lineage_is_valid_json_when_only_a_backslash_or_only_the_last_id_needs_escaping():
    for ids in (["dir\\x1", "b"], ["a", 'b"'], ["a", "b\t"]):  # a backslash alone; a quote or tab in the last id
        rows, _ = build([prompt("p1")], [resp("p1", ids[0], 2), resp("p1", ids[1], 1)])
        lin = json.loads(rows[0]["lineage"])
        assert (lin["chosen_id"], lin["rejected_id"]) == tuple(ids), ids


def test_empty_input_gives_no_pairs():
    rows, m = build([prompt("p1")], [resp("p1", "a", None)])
    assert rows == [] and m["pairs"]["written"] == 0 and m["gap"]["histogram"] == {"edges": [], "counts": []}


def test_lineage_names_the_models_of_its_input_set_whether_or_not_ids_need_escaping():
    models = ',"models":{"pugc.judge":"j"}'
    for ids in (["a", "b"], ["a", 'b"']):  # joined as strings; encoded by polars' JSON writer
        p, r = frames([prompt("p1")], [resp("p1", ids[0], 2), resp("p1", ids[1], 1)])
        table, _ = build_pairs(p, r, cfg(), [models])
        lin = json.loads(table.column("lineage")[0].as_py())
        assert (lin["chosen_id"], lin["models"], lin["fingerprint"]) == ("a", {"pugc.judge": "j"}, fingerprint(cfg()))
        assert "models" not in json.loads(build_pairs(p, r, cfg(), [""])[0].column("lineage")[0].as_py())
