"""Selfie / SPA steps: split, sampling, implicit reward, noise-aware pairs (METHODS.md §3).

The stage end to end, with scripted engines, is in test_selfie_stage.py; implicit rewards from two tiny
models against direct teacher forcing in test_selfie_reward.py."""

from __future__ import annotations

import json
import math

import polars as pl
import pyarrow as pa
import pytest
import xxhash

from pipeline.config import SelfieSplit
from pipeline.records import MESSAGES_TYPE, check_table, empty_table, stable_id
from stages import selfie, selfie_output, selfie_reward, selfie_split
from tests.selfie_fakes import (
    SAMPLING,
    FakeEngine,
    assistant,
    make_pairs,
    make_prompts,
    real_pairs,
    selfie_params,
    user,
)

# --- step 1: split ----------------------------------------------------------------------------------


def test_shrink_keeps_proportions_and_fills_every_part():
    assert selfie_split.shrink([10, 20], 100) == [10, 20]
    assert selfie_split.shrink([2000, 8000, 20000, 30000, 1000], 61) == [2, 8, 20, 30, 1]
    assert selfie_split.shrink([1, 4], 2) == [1, 1]  # the small part keeps one
    assert selfie_split.shrink([3, 3, 3], 1) == [1, 0, 0]
    assert selfie_split.shrink([0, 5], 3) == [0, 3]
    for cap in range(0, 70):
        out = selfie_split.shrink([2000, 8000, 20000, 30000, 1000], cap)
        assert sum(out) == cap


def test_plan_split_counts_fractions_and_small_sources():
    paper = SelfieSplit(seed=2000, pools=[8000, 20000, 30000], test=1000, shuffle_seed=0)
    # a big source: counts as asked, the rest left over
    assert selfie_split.plan_split(61135, 61135, paper) == {
        "seed": 2000,
        "pool_1": 8000,
        "pool_2": 20000,
        "pool_3": 30000,
        "test": 1000,
    }
    # the samples: 10 labelled pairs + 30 prompts still give a seed, a test prompt and a first pool
    assert selfie_split.plan_split(10, 40, paper) == {
        "seed": 1,
        "pool_1": 5,
        "pool_2": 13,
        "pool_3": 20,
        "test": 1,
    }
    assert selfie_split.plan_split(10, 10, paper) == {
        "seed": 1,
        "pool_1": 1,
        "pool_2": 3,
        "pool_3": 4,
        "test": 1,
    }
    # few labelled, many unlabelled: seed + test capped by the labelled prompts
    # (and the pools share the other 49997 prompts in proportion)
    assert selfie_split.plan_split(3, 50000, paper) == {
        "seed": 2,
        "pool_1": 6896,
        "pool_2": 17240,
        "pool_3": 25861,
        "test": 1,
    }
    fractions = SelfieSplit(seed=0.1, pools=[0.25, 0.5], test=0.05, shuffle_seed=0)
    assert selfie_split.plan_split(200, 300, fractions) == {
        "seed": 20,
        "pool_1": 75,
        "pool_2": 150,
        "test": 10,
    }
    # a fraction of a tiny source is still one prompt
    assert selfie_split.plan_split(5, 5, fractions)["seed"] == 1


def test_split_sizes_are_validated():
    with pytest.raises(ValueError, match="fraction must lie in"):
        SelfieSplit(seed=1.5, pools=[10], test=0, shuffle_seed=0)
    with pytest.raises(ValueError, match="count must be >= 0"):
        SelfieSplit(seed=10, pools=[-1], test=0, shuffle_seed=0)
    with pytest.raises(ValueError, match="iteration 4 has no prompt pool"):
        selfie_params(iteration=4)
    with pytest.raises(ValueError, match="selfie.policy_model"):
        selfie_params(roles={"policy": {"model": "gpt2"}, "reference": {}})


def _parts(assignment: pl.DataFrame) -> dict[str, set[str]]:
    return {p: set(g.get_column("prompt_id")) for (p,), g in assignment.group_by("part")}


@pytest.mark.parametrize(
    "split",
    [
        SelfieSplit(seed=2000, pools=[8000, 20000, 30000], test=1000, shuffle_seed=0),
        SelfieSplit(seed=0.1, pools=[0.3, 0.3], test=0.1, shuffle_seed=7),
    ],
)
def test_split_on_real_ultrafeedback_is_deterministic_disjoint_and_covering(real, split):
    pairs = real_pairs(real)
    keys = set(selfie_split.prompt_keys(pairs.column("prompt")))
    extra = make_prompts([f"extra prompt {i}" for i in range(20)])
    a = selfie_split.assign_split(pairs, extra, split)

    # covering and disjoint: every distinct prompt exactly once
    assert a.get_column("prompt_id").n_unique() == a.height == len(keys) + 20
    parts = _parts(a)
    assert set().union(*parts.values()) == keys | set(selfie_split.prompt_keys(extra.column("messages")))
    names = list(parts)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert not parts[x] & parts[y], (x, y)
    # sizes follow the plan; seed and test hold labelled prompts only, and a prompt whose pair ties (25 of the
    # 200 real pairs: score_chosen == score_rejected) is no labelled prompt
    tied = {k for k, g in zip(selfie_split.prompt_keys(pairs.column("prompt")), selfie_split.gold(pairs),
                              strict=True) if not g}
    assert len(tied) == 25
    plan = selfie_split.plan_split(len(keys - tied), len(keys) + 20, split)
    for name, n in plan.items():
        assert len(parts.get(name, set())) == n, name
    assert parts["seed"] | parts["test"] <= keys - tied
    assert plan["seed"] > 0 and plan["pool_1"] > 0 and plan["test"] > 0

    # deterministic and independent of the input order
    shuffled = pairs.take(pa.array(list(reversed(range(pairs.num_rows)))))
    b = selfie_split.assign_split(shuffled, extra.take(pa.array(list(reversed(range(20))))), split)
    assert b.equals(a)
    # another shuffle seed gives another split of the same sizes
    c = selfie_split.assign_split(
        pairs, extra, split.model_copy(update={"shuffle_seed": split.shuffle_seed + 1})
    )
    assert _parts(c)["seed"] != parts["seed"]
    assert {k: len(v) for k, v in _parts(c).items()} == {k: len(v) for k, v in parts.items()}


def test_seed_and_test_export_gold_pairs(real):
    pairs = real_pairs(real)
    split = SelfieSplit(seed=0.1, pools=[0.5], test=0.05, shuffle_seed=0)
    a = selfie_split.assign_split(pairs, empty_table("prompts"), split)
    seed = selfie_split.export_labelled(pairs, a, "seed", "fp")
    test = selfie_split.export_labelled(pairs, a, "test", "fp")
    parts = _parts(a)
    # 175 gold pairs: the 25 whose scores tie state no preference and are no seed or test pair
    assert seed.num_rows == len(parts["seed"]) == 17 and test.num_rows == len(parts["test"]) == 8
    for part in (seed, test):
        scores = pl.from_arrow(part.select(["score_chosen", "score_rejected"]))
        assert (scores["score_chosen"] > scores["score_rejected"]).all()
    assert set(seed.column("source").to_pylist()) == {"seed"} and set(seed.column("method").to_pylist()) == {
        "selfie"
    }
    assert set(test.column("source").to_pylist()) == {"test"}
    assert set(selfie_split.prompt_keys(seed.column("prompt"))) == parts["seed"]
    # gold labels are carried over untouched
    by_id = {r["pair_id"]: r for r in pairs.to_pylist()}
    for row in seed.to_pylist():
        lineage = json.loads(row["lineage"])
        src = by_id[lineage["input_pair_id"]]
        assert (row["chosen"], row["rejected"], row["score_chosen"]) == (
            src["chosen"],
            src["rejected"],
            src["score_chosen"],
        )
        assert (
            lineage["input_source"] == "ultrafeedback"
            and lineage["written_by"] == {"chosen": "unknown", "rejected": "unknown"}  # the dataset names none
            and row["noisy"] is False
            and row["label_smoothing"] == 0
        )
        # pipeline.ids.hex_id("selfie", part, input pair_id)
        key = f"6:selfie4:seed{len(lineage['input_pair_id'].encode())}:{lineage['input_pair_id']}"
        assert row["pair_id"] == f"{xxhash.xxh3_64_intdigest(key.encode()):016x}"
    # pool prompts: the pool_1 prompts in the prompts contract
    pool = selfie_split.pool_prompts(pairs, empty_table("prompts"), a, 1)
    assert set(pool.column("prompt_id").to_pylist()) == parts["pool_1"]


def test_pool_prompts_merge_duplicates_across_sources():
    pairs = make_pairs([("same question", "good", "bad"), ("other", "a", "b")])
    prompts = make_prompts(["same question", "new one"])
    a = selfie_split.assign_split(pairs, prompts, SelfieSplit(seed=1, pools=[10], test=0, shuffle_seed=0))
    assert a.height == 3  # "same question" is one unit
    pool = selfie_split.pool_prompts(pairs, prompts, a, 1)
    assert pool.num_rows == 2 and len(set(pool.column("prompt_id").to_pylist())) == 2


def test_select_sources_names_a_missing_source():
    pairs = make_pairs([("q", "a", "b")], source="sample_seed_pairs")
    assert (
        selfie_split.select_sources(
            pairs, ["sample_seed_pairs"], selfie_split.INGEST, "pair_sources"
        ).num_rows
        == 1
    )
    with pytest.raises(
        selfie_split.SourceError, match=r"selfie.pair_sources: no rows with source \['typo'\]"
    ):
        selfie_split.select_sources(pairs, ["typo"], selfie_split.INGEST, "pair_sources")


# --- steps 2-3: sampling and implicit reward --------------------------------------------------------


def _prompt_batch(texts: list[str]) -> pa.Table:
    msgs = [user(t) for t in texts]
    return pa.table(
        {"prompt_id": [stable_id("prompt", m) for m in msgs], "messages": pa.array(msgs, MESSAGES_TYPE)}
    )


def test_sample_asks_n_per_prompt_and_ids_are_stable():
    eng = FakeEngine("pol")
    batch = _prompt_batch(["a", "b", "c"])
    out = selfie.sample(batch, eng, k=2, sampling=SAMPLING)
    assert eng.calls == [("generate", 3)]
    assert out.num_rows == 6 and out.column("text").to_pylist()[:2] == ["a #0", "a #1!"]
    assert out.column("sample_index").to_pylist() == [0, 1] * 3
    assert out.column("generator").to_pylist() == ["pol"] * 6

    def response_ids(table: pa.Table, iteration: int) -> list[str]:
        return selfie.with_response_ids(pl.from_arrow(table), iteration=iteration)["response_id"].to_list()

    ids = response_ids(out, 1)
    again = selfie.sample(batch.slice(1), eng, k=2, sampling=SAMPLING)  # another batch: same ids per row
    assert response_ids(again, 1) == ids[2:] and len(set(ids)) == 6
    assert not set(response_ids(out, 2)) & set(ids)  # each iteration its own ids
    # pinned: pipeline.ids.hex_id("selfie", iteration, prompt_id, generator, sample_index)
    one = pl.DataFrame({"prompt_id": ["p1"], "generator": ["pol"], "sample_index": [1]})
    assert selfie.with_response_ids(one, iteration=2)["response_id"].item() == "03adead5b98faaa0"
    bad = FakeEngine("pol", script={"a": ["only one"]})
    with pytest.raises(RuntimeError, match="expected 2 each"):
        selfie.sample(batch, bad, k=2, sampling=SAMPLING)


def test_implicit_reward_is_policy_minus_reference():
    batch = pa.table(
        {"response_id": ["r1", "r2"], "messages": [user("q"), user("q")], "text": ["ab", "abc d"]}
    )
    pol = selfie_reward.teacher_force(batch, FakeEngine("pol", scale=1.0), role="policy")
    ref = selfie_reward.teacher_force(batch, FakeEngine("ref", scale=2.0, offset=1.0), role="reference")
    df = pl.from_arrow(pol).join(pl.from_arrow(ref), on="response_id")
    summed = selfie_reward.implicit_reward(df, length_normalize=False).get_column("reward").to_list()
    assert summed == [(-2.0) - (-4.0 + 1.0), (-5.0) - (-10.0 + 1.0)]
    mean = selfie_reward.implicit_reward(df, length_normalize=True).get_column("reward").to_list()
    assert mean == [(-2.0 / 1) - (-3.0 / 1), (-5.0 / 2) - (-9.0 / 2)]


# --- step 4: pairs, confidence, noise ---------------------------------------------------------------


def _scored(rewards: dict[str, list[float]]) -> pl.DataFrame:
    rows = [
        {
            "prompt_id": p,
            "response_id": f"{p}-{j}",
            "text": f"{p} answer {'x' * j}",
            "reward": r,
            "n_tokens_policy": 2 + j,
            "finish_reason": "stop",
        }
        for p, rs in rewards.items()
        for j, r in enumerate(rs)
    ]
    return pl.DataFrame(rows)


def test_pick_pairs_chooses_argmax_rejects_argmin_and_drops_ties():
    scored = _scored({"p1": [0.5, 2.0, -1.0], "p2": [3.0, 3.0], "p3": [1.0, 1.0, 0.0], "p4": [-2.0, 4.0]})
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    got = {
        r["prompt_id"]: (r["chosen_response_id"], r["rejected_response_id"], r["margin"])
        for r in pairs.to_dicts()
    }
    assert dropped == {"nonfinite_reward": 0, "same_text": 0, "tie": 1}  # p2
    assert got == {"p1": ("p1-1", "p1-2", 3.0), "p3": ("p3-0", "p3-2", 1.0), "p4": ("p4-1", "p4-0", 6.0)}
    assert pairs.get_column("pair_id").to_list() == sorted(pairs.get_column("pair_id").to_list())
    # pinned: pipeline.ids.hex_id("selfie", iteration, prompt_id, chosen_response_id, rejected_response_id)
    assert dict(pairs.select("prompt_id", "pair_id").iter_rows())["p1"] == "06f03d6a181b20f6"
    # equal rewards: chosen is the smallest response_id, rejected the largest (as documented)
    ends = selfie.pick_pairs(_scored({"p5": [2.0, 2.0, 0.0, 0.0]}), iteration=1)[0].row(0, named=True)
    assert (ends["chosen_response_id"], ends["rejected_response_id"]) == ("p5-0", "p5-3")


def test_a_rejected_that_is_the_chosen_answer_but_for_case_spaces_or_punctuation_is_passed_over():
    """The rejected side is the lowest reward among the answers that are not the chosen one's
    (``pipeline.checks.answer_key``): "Paris is the capital." and " paris is the capital!" are one answer."""
    scored = _scored({"p1": [2.0, 1.0, -1.0], "p2": [2.0, -1.0]}).with_columns(
        text=pl.Series(["Paris is the capital.", "Lyon is the capital.", " paris is  the capital!",
                        "Yes, it is.", "yes it is"]))
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    got = {r["prompt_id"]: (r["chosen_response_id"], r["rejected_response_id"]) for r in pairs.to_dicts()}
    assert got == {"p1": ("p1-0", "p1-1")} and dropped == {"nonfinite_reward": 0, "same_text": 1, "tie": 0}


def test_a_response_with_a_nan_or_infinite_reward_is_left_out_before_picking():
    """A token the reference gives probability 0 makes the reward +inf: that response must not become chosen."""
    scored = _scored({"p1": [0.5, float("inf"), -1.0], "p2": [float("nan"), 1.0, 0.0], "p3": [float("-inf"), 2.0]})
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    got = {r["prompt_id"]: (r["chosen_response_id"], r["rejected_response_id"]) for r in pairs.to_dicts()}
    assert got == {"p1": ("p1-0", "p1-2"), "p2": ("p2-1", "p2-2")}  # p3 is left with one answer
    assert dropped["nonfinite_reward"] == 3 and pairs.get_column("margin").is_finite().all()


def test_confidence_noisy_bottom_fraction_and_label_smoothing_are_pinned():
    # 20 prompts with margins 1..20 -> confidences sigmoid(0.1 * m); floor(0.15 * 20) = 3 noisy
    scored = _scored({f"p{i:02d}": [float(i), 0.0] for i in range(1, 21)})
    pairs, _ = selfie.pick_pairs(scored, iteration=1)
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=0.15, alpha=0.1)
    conf = dict(zip(flagged.get_column("prompt_id"), flagged.get_column("confidence"), strict=True))
    for i in range(1, 21):
        assert conf[f"p{i:02d}"] == pytest.approx(1 / (1 + math.exp(-0.1 * i)), abs=1e-15)
    noisy = set(flagged.filter(pl.col("noisy")).get_column("prompt_id"))
    assert noisy == {"p01", "p02", "p03"}
    ls = dict(zip(flagged.get_column("prompt_id"), flagged.get_column("label_smoothing"), strict=True))
    assert all(ls[p] == (0.1 if p in noisy else 0.0) for p in ls)


def test_noisy_ties_are_broken_by_pair_id_and_count_is_floor():
    # 12 pairs, all the same margin: floor(0.25 * 12) = 3 noisy, the 3 smallest pair_ids
    scored = _scored({f"p{i:02d}": [1.0, 0.0] for i in range(12)})
    pairs, _ = selfie.pick_pairs(scored, iteration=3)
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=0.25, alpha=0.2)
    expected = set(sorted(flagged.get_column("pair_id").to_list())[:3])
    assert set(flagged.filter(pl.col("noisy")).get_column("pair_id")) == expected
    # the same pairs in another input order give the same flags
    again = selfie.flag_noise(
        selfie.pick_pairs(scored.reverse(), iteration=3)[0], beta=0.1, refine_fraction=0.25, alpha=0.2
    )
    assert again.equals(flagged)
    # and so do the picked pairs handed over in reverse pair_id order (the tie-break is pair_id, not input order)
    assert selfie.flag_noise(pairs.reverse(), beta=0.1, refine_fraction=0.25, alpha=0.2).equals(flagged)
    assert (
        selfie.noisy_count(9, 0.1) == 0
        and selfie.noisy_count(10, 0.1) == 1
        and selfie.noisy_count(100, 0.29) == 29
    )
    assert selfie.noisy_count(7, 1.0) == 7 and selfie.noisy_count(7, 0.0) == 0


def test_to_pairs_and_to_responses_meet_the_contracts():
    prompts = check_table(
        pa.table({"prompt_id": ["p1"], "messages": [user("q")], "source": ["s"], "origin_id": ["o"]}),
        "prompts",
    )
    scored = _scored({"p1": [2.0, -1.0]}).with_columns(
        logprob_policy=pl.lit(-3.0),
        n_tokens_policy=pl.lit(2, pl.Int64),
        logprob_reference=pl.lit(-4.0),
        n_tokens_reference=pl.lit(2, pl.Int64),
        generator=pl.lit("pol"),
    )
    pairs, _ = selfie.pick_pairs(scored, iteration=2)
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=1.0, alpha=0.1)
    out = selfie_output.to_pairs(
        flagged, prompts, iteration=2, policy="pol", reference="ref", length_normalize=False, fp="fp"
    ).to_pylist()[0]
    assert out["prompt"] == user("q") and out["chosen"] == assistant("p1 answer ")
    assert out["rejected"] == assistant("p1 answer x") and out["margin"] == 3.0
    assert out["source"] == "iteration_2" and out["method"] == "selfie" and out["noisy"] is True
    assert out["label_smoothing"] == 0.1 and out["confidence"] == pytest.approx(1 / (1 + math.exp(-0.3)))
    lineage = json.loads(out["lineage"])
    assert lineage["policy"] == "pol" and lineage["reference"] == "ref" and lineage["iteration"] == 2
    resp = selfie_output.to_responses(
        scored, iteration=2, reference="ref", length_normalize=False
    ).to_pylist()
    assert [r["score"] for r in resp] == [2.0, -1.0] and resp[0]["scorer"] == selfie_output.SCORER
    detail = json.loads(resp[0]["detail"])
    assert detail["logprob_policy"] == -3.0 and detail["n_tokens_reference"] == 2


def test_pairs_keep_each_sides_score_and_finish_reason():
    prompts = check_table(
        pa.table({"prompt_id": ["p1"], "messages": [user("q")], "source": ["s"], "origin_id": ["o"]}), "prompts")
    scored = _scored({"p1": [2.0, -1.0]}).with_columns(  # the rejected side was cut at the token limit
        finish_reason=pl.Series(["stop", "length"]))
    pairs, _ = selfie.pick_pairs(scored, iteration=1)
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=0.0, alpha=0.1)
    out = selfie_output.to_pairs(
        flagged, prompts, iteration=1, policy="pol", reference="ref", length_normalize=False, fp="fp"
    ).to_pylist()[0]
    assert (out["score_chosen"], out["score_rejected"]) == (2.0, -1.0)
    lineage = json.loads(out["lineage"])
    assert (lineage["chosen_finish_reason"], lineage["rejected_finish_reason"]) == ("stop", "length")


def test_reward_report_warns_only_when_every_reward_is_zero_and_confidence_one_is_in_the_top_bin():
    report = selfie_output.reward_report(pl.DataFrame({"reward": [0.0, 1.5, -0.5]}))
    assert report["all_zero"] is False and "warning" not in report
    pairs = pl.DataFrame({"confidence": [1.0, 0.0], "noisy": [False, True], "margin": [9.0, 0.0],
                          "chosen_text": ["a", "b"], "rejected_text": ["c", "d"],
                          "chosen_n_tokens_policy": [1, 1], "rejected_n_tokens_policy": [1, 1]})
    assert selfie_output.pair_report(pairs)["confidence_histogram"]["counts"] == [1] + [0] * 8 + [1]


def test_policy_equal_reference_gives_zero_rewards_no_pairs_and_a_report():
    batch = pa.table(
        {
            "response_id": ["a", "b", "c", "d"],
            "messages": [user("q")] * 2 + [user("r")] * 2,
            "text": ["x", "yy", "z", "wwww"],
            "prompt_id": ["q", "q", "r", "r"],
            "finish_reason": ["stop"] * 4,
        }
    )
    same = FakeEngine("m")
    df = pl.from_arrow(batch.select(["prompt_id", "response_id", "text", "finish_reason"]))
    for role in ("policy", "reference"):
        df = df.join(pl.from_arrow(selfie_reward.teacher_force(batch, same, role=role)), on="response_id")
    scored = selfie_reward.implicit_reward(df, length_normalize=False)
    assert scored.get_column("reward").to_list() == [0.0] * 4
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    assert pairs.height == 0 and dropped == {"nonfinite_reward": 0, "same_text": 0, "tie": 2}
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=0.1, alpha=0.1)
    assert flagged.height == 0
    report = selfie_output.reward_report(scored)
    assert report["all_zero"] is True and "policy_model" in report["warning"]
    assert selfie_output.pair_report(flagged)["pairs"] == 0


def test_pair_report_histogram_and_lengths():
    scored = _scored({f"p{i}": [float(10 * i), 0.0] for i in range(1, 5)})
    pairs, _ = selfie.pick_pairs(scored, iteration=1)
    flagged = selfie.flag_noise(pairs, beta=0.1, refine_fraction=0.5, alpha=0.1)
    rep = selfie_output.pair_report(flagged)
    # confidences sigmoid(1), sigmoid(2), sigmoid(3), sigmoid(4) = .73, .88, .95, .98
    assert rep["confidence_histogram"]["counts"] == [0] * 7 + [1, 1, 2]
    assert rep["noisy"] == 2 and rep["noisy_fraction"] == 0.5
    assert rep["mean_chars_chosen"] == len("p1 answer ") and rep["mean_chars_rejected"] == len("p1 answer x")
    assert rep["mean_tokens_chosen"] == 2 and rep["mean_tokens_rejected"] == 3
