"""Selfie / SPA stage: split, sampling, implicit reward, noise-aware pairs (METHODS.md §3)."""

from __future__ import annotations

import json
import math
import shutil

import polars as pl
import pyarrow as pa
import pytest
import xxhash
import yaml

from pipeline.config import Sampling, Selfie, SelfieSplit
from pipeline.gates import JudgeGateError, load_probes
from pipeline.io import StageError
from pipeline.llm.base import Completion, LogProb
from pipeline.records import MESSAGES_TYPE, check_table, empty_table, stable_id, to_table
from stages import selfie, selfie_output, selfie_reward, selfie_split

SAMPLING = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=8, stop=[], seed=0)


# --- helpers ----------------------------------------------------------------------------------------


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def make_pairs(rows: list[tuple[str, str, str]], source: str = "uf") -> pa.Table:
    return to_table(
        [
            {
                "pair_id": stable_id(source, i),
                "prompt": user(p),
                "chosen": assistant(c),
                "rejected": assistant(r),
                "score_chosen": 9.0,
                "score_rejected": 2.0,
                "margin": 7.0,
                "method": "ingest",
                "source": source,
                "lineage": "{}",
            }
            for i, (p, c, r) in enumerate(rows)
        ],
        "pairs",
    )


def make_prompts(texts: list[str], source: str = "extra") -> pa.Table:
    return to_table(
        [
            {"prompt_id": f"{source}-{i}", "messages": user(t), "source": source, "origin_id": str(i)}
            for i, t in enumerate(texts)
        ],
        "prompts",
    )


def real_pairs(real) -> pa.Table:
    """The 200 real UltraFeedback pairs in the pairs contract (what ingest makes of them)."""
    path = real / "ultrafeedback_binarized" / "data" / "processed" / "eval_clean.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return to_table(
        [
            {
                "pair_id": stable_id("uf", r["source_index"]),
                "prompt": user(r["prompt"]),
                "chosen": assistant(r["chosen"]),
                "rejected": assistant(r["rejected"]),
                "score_chosen": r["metadata"]["score_chosen"],
                "score_rejected": r["metadata"]["score_rejected"],
                "method": "ingest",
                "source": "ultrafeedback",
                "lineage": "{}",
            }
            for r in rows
        ],
        "pairs",
    )


class FakeEngine:
    """Scripted engine: sample j of a prompt is ``"<prompt> #j"`` + j "!" (or a fixed script; a scripted text
    ending in "..." comes back cut off at max_new_tokens), the log-prob of a response is
    ``-scale * len(text) + offset`` (+ ``bonus`` for a text in ``liked``), ``n_tokens`` = number of words."""

    def __init__(
        self,
        name: str,
        scale: float = 1.0,
        offset: float = 0.0,
        script: dict[str, list[str]] | None = None,
        liked: set[str] = frozenset(),
        bonus: float = 0.0,
    ):
        self.name, self.scale, self.offset, self.script = name, scale, offset, script or {}
        self.liked, self.bonus = liked, bonus
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts, n=1, sampling=None, schema=None):
        self.calls.append(("generate", len(prompts)))
        return [
            [
                Completion(t, "length" if t.endswith("...") else "stop")
                for t in self.script.get(
                    p[-1]["content"], [f"{p[-1]['content']} #{j}{'!' * j}" for j in range(n)]
                )[:n]
            ]
            for p in prompts
        ]

    def logprobs(self, prompts, responses):
        self.calls.append(("logprobs", len(prompts)))
        return [
            LogProb(
                -self.scale * len(r) + self.offset + (self.bonus if r in self.liked else 0.0), len(r.split())
            )
            for r in responses
        ]

    def choose(self, prompts, options):
        raise AssertionError("Selfie judges from logprobs, never with choose")


def selfie_params(**over) -> Selfie:
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "params.yaml").read_text())["selfie"]
    data.update(over)
    return Selfie.model_validate(data)


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
    # sizes follow the plan; seed and test hold labelled prompts only
    plan = selfie_split.plan_split(len(keys), len(keys) + 20, split)
    for name, n in plan.items():
        assert len(parts.get(name, set())) == n, name
    assert parts["seed"] | parts["test"] <= keys
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
    assert seed.num_rows == len(parts["seed"]) == 20 and test.num_rows == len(parts["test"]) == 10
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
    assert dropped == {"same_text": 0, "tie": 1}  # p2
    assert got == {"p1": ("p1-1", "p1-2", 3.0), "p3": ("p3-0", "p3-2", 1.0), "p4": ("p4-1", "p4-0", 6.0)}
    assert pairs.get_column("pair_id").to_list() == sorted(pairs.get_column("pair_id").to_list())
    # pinned: pipeline.ids.hex_id("selfie", iteration, prompt_id, chosen_response_id, rejected_response_id)
    assert dict(pairs.select("prompt_id", "pair_id").iter_rows())["p1"] == "06f03d6a181b20f6"


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
    assert pairs.height == 0 and dropped == {"same_text": 0, "tie": 2}
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


# --- the stage end to end (scripted engines) --------------------------------------------------------


def _project(tmp_path, monkeypatch, engines: dict[str, FakeEngine], on_gate_failure="error", **selfie_over):
    """A tmp project with ingest-like inputs (10 labelled pairs, 30 prompts, plus an unselected source)
    and ``get_engine`` answering with the scripted engines by model name. The reward gate is lowered
    (0.0) unless ``gates`` is given: the scripted rewards are not meant to pass it."""
    import pipeline.llm
    from pipeline.config import Params
    from pipeline.io import write_shards
    from tests.conftest import ROOT

    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engines[cfg.model], raising=False)
    monkeypatch.chdir(tmp_path)
    pairs = pa.concat_tables(
        [
            make_pairs(
                [(f"seed question {i}", f"good {i}", f"bad {i}") for i in range(10)],
                source="sample_seed_pairs",
            ),
            make_pairs([("unselected", "a", "b")], source="elsewhere"),
        ]
    )
    write_shards(pairs, tmp_path / "data/ingest/pairs", name="pairs")
    write_shards(
        make_prompts([f"pool question {i}" for i in range(30)], source="sample_prompts"),
        tmp_path / "data/ingest/prompts",
        name="prompts",
    )
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["ingest"] = {"sources": [], "max_reject_fraction": 0.5, "max_record_bytes": 1 << 20}
    data["execution"]["on_gate_failure"] = on_gate_failure
    data["selfie"].update({"gates": {"reward": 0.0}, **selfie_over})
    data["selfie"]["sampling"]["max_new_tokens"] = 8
    return Params.model_validate(data)


def _out(tmp_path, name: str, contract: str):
    from pipeline.io import read_table

    return read_table(tmp_path / "data/selfie" / name, contract)


def _pairs(tmp_path) -> pl.DataFrame:
    """Every pair under data/selfie/pairs, read the way the release reads it."""
    from stages.export_read import read_pairs_tree

    return pl.from_arrow(read_pairs_tree(tmp_path / "data/selfie/pairs", "pairs"))


def _metrics(tmp_path) -> dict:
    return json.loads((tmp_path / "data/selfie/details.json").read_text())


def test_stage_writes_seed_and_iteration_pairs_responses_and_metrics(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", refine_fraction=0.5
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    split = metrics["split"]
    assert split["prompts"] == 40 and split["labelled_prompts"] == 10
    assert split["assigned"] == {"seed": 1, "test": 1, "pool_1": 5, "pool_2": 13, "pool_3": 20}
    prompts = _out(tmp_path, "prompts", "prompts")
    responses = _out(tmp_path, "responses", "responses")
    pairs = _pairs(tmp_path)
    assert prompts.num_rows == 5 and responses.num_rows == 10
    assert set(responses.column("prompt_id").to_pylist()) == set(prompts.column("prompt_id").to_pylist())
    # r = logprob_pol - logprob_ref = -len + 2 len = len(text): the longer sample wins
    for r in responses.to_pylist():
        assert r["score"] == len(r["text"])
        d = json.loads(r["detail"])
        assert (d["logprob_policy"], d["logprob_reference"]) == (-len(r["text"]), -2.0 * len(r["text"]))
    assert pairs.group_by("source").len().sort("source").rows() == [("iteration_1", 5), ("seed", 1)]
    it = pairs.filter(pl.col("source") == "iteration_1")
    assert all(c[0]["content"].endswith("#1!") for c in it.get_column("chosen").to_list())
    assert int(it.get_column("noisy").sum()) == 2 == metrics["pairs"]["noisy"]  # floor(0.5 * 5)
    lineage = [json.loads(x) for x in it.get_column("lineage")]
    assert {(x["chosen_finish_reason"], x["rejected_finish_reason"]) for x in lineage} == {("stop", "stop")}
    assert metrics["rewards"]["all_zero"] is False
    assert metrics["dropped"] == {"cut_off": 0, "same_text": 0, "tie": 0, "noisy": 0, "withheld": 0}
    assert (metrics["same_model"], metrics["logprob_passes"]) == (False, 2)
    assert metrics["gates"]["reward"]["labels"] == "used, gate lowered"
    assert _out(tmp_path, "test", "pairs").column("source").to_pylist() == ["test"]
    assert not (tmp_path / ".prefpipe/checkpoints/selfie/sample").exists()  # cleared on success

    # the same inputs and params give byte-identical shards
    before = {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs").rglob("*.parquet")}
    selfie.main(params)
    assert {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs").rglob("*.parquet")} == before


def test_stage_drops_noisy_pairs_when_asked(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path,
        monkeypatch,
        engines,
        policy_model="pol",
        reference_model="ref",
        refine_fraction=0.5,
        drop_noisy=True,
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height == 3 and not pairs.get_column("noisy").any()
    assert metrics["dropped"]["noisy"] == 2 and metrics["pairs"]["written"] == 3


def test_stage_with_policy_equal_reference_says_so_and_runs_one_logprob_pass(tmp_path, monkeypatch, capsys):
    same = FakeEngine("same")
    params = _project(
        tmp_path,
        monkeypatch,
        {"same": same},
        policy_model="same",
        reference_model="same",
        gates={"reward": 0.75},
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert (
        metrics["rewards"]["all_zero"] is True
        and "identical log-probabilities" in metrics["rewards"]["warning"]
    )
    assert metrics["dropped"]["tie"] == 5 and metrics["pairs"]["written"] == 0
    assert _out(tmp_path, "responses", "responses").num_rows == 10
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed"]
    # one log-probability pass (the reference's would be identical), said on the console and recorded;
    # the gate (0.75 here) is not failed: there are no labels to gate
    assert [c for c, _ in same.calls].count("logprobs") == 1
    assert (metrics["same_model"], metrics["logprob_passes"]) == (True, 1)
    gate = metrics["gates"]["reward"]
    assert gate["passed"] is None and "same model" in gate["skipped"] and gate["probes"] == 0
    assert "policy and reference are the same model (same)" in capsys.readouterr().out


def test_stage_names_a_misspelt_source(tmp_path, monkeypatch):
    params = _project(tmp_path, monkeypatch, {}, pair_sources=["sample_seed_pair"])
    with pytest.raises(selfie_split.SourceError, match="sample_seed_pair"):
        selfie.main(params)


def test_stage_with_an_empty_pool_writes_seed_pairs_and_empty_tables(tmp_path, monkeypatch):
    split = {"seed": 2, "pools": [0, 30], "test": 1, "shuffle_seed": 0}
    params = _project(tmp_path, monkeypatch, {}, split=split)  # no engine is ever built
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert metrics["sample"] == {"prompts": 0, "responses": 0, "cut_off": 0, "empty_responses": 0}
    assert metrics["split"]["assigned"] == {"seed": 2, "test": 1, "pool_2": 30, "rest": 7}
    assert _out(tmp_path, "responses", "responses").num_rows == 0
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed", "seed"]


# --- cut-off samples, equal texts ---------------------------------------------------------------------


def test_cut_off_samples_are_dropped_before_teacher_forcing_and_counted(tmp_path, monkeypatch):
    script = {
        f"pool question {i}": [f"answer {i}, complete.", f"a longer answer {i} that was cut ..."]
        for i in range(30)
    }
    script["pool question 19"] = ["short.", "a longer, finished answer."]
    engines = {"pol": FakeEngine("pol", scale=1.0, script=script), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    metrics = _metrics(tmp_path)
    responses = _out(tmp_path, "responses", "responses").column("text").to_pylist()
    assert not any(t.endswith("...") for t in responses)
    pool = [m[0]["content"] for m in _out(tmp_path, "prompts", "prompts").column("messages").to_pylist()]
    cut = [q for q in pool if q in script and q != "pool question 19"]
    assert metrics["dropped"]["cut_off"] == metrics["sample"]["cut_off"] == len(cut) > 0
    assert len(responses) == 2 * len(pool) - len(cut)
    # a prompt left with one answer cannot make a pair, so a cut-off answer is never paired
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height == len(pool) - len(cut) == 1
    assert not any(
        r[0]["content"].endswith("...") for r in pairs["rejected"].to_list() + pairs["chosen"].to_list()
    )


def test_pick_pairs_pairs_distinct_texts_only():
    texts = {
        "p1": ["Paris.", "Paris. ", "Lyon."],  # best "Paris." and worst "Lyon." differ: paired
        "p2": ["Paris.", "Lyon.", "Paris.\n"],  # argmin is the same answer as argmax: take "Lyon."
        "p3": ["It is Paris.", "It is  Paris."],  # whitespace variants only: no pair
        "p4": ["Same", "Same"],  # two identical samples (their rewards may differ by batch numerics)
    }
    rewards = {"p1": [2.0, 1.0, 0.0], "p2": [2.0, 1.0, 0.0], "p3": [1.0, 0.9], "p4": [1.0, 0.999]}
    scored = pl.DataFrame(
        [
            {
                "prompt_id": p,
                "response_id": f"{p}-{j}",
                "text": t,
                "reward": rewards[p][j],
                "n_tokens_policy": 2,
                "finish_reason": "stop",
            }
            for p, ts in texts.items()
            for j, t in enumerate(ts)
        ]
    )
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    got = {r["prompt_id"]: (r["chosen_text"], r["rejected_text"], r["margin"]) for r in pairs.to_dicts()}
    assert got == {"p1": ("Paris.", "Lyon.", 2.0), "p2": ("Paris.", "Lyon.", 1.0)}
    assert dropped == {"same_text": 2, "tie": 0}


# --- every iteration's pairs are kept -----------------------------------------------------------------


def test_iteration_two_keeps_iteration_one_and_the_release_reads_both(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    first = {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs/iteration=1").glob("*.parquet")}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2)
    selfie.main(params)
    root = tmp_path / "data/selfie/pairs"
    assert sorted(d.name for d in root.iterdir()) == ["iteration=1", "iteration=2", "seed"]
    assert {p.name: p.read_bytes() for p in (root / "iteration=1").glob("*.parquet")} == first  # untouched
    pairs = _pairs(tmp_path)
    assert dict(pairs.group_by("source").len().iter_rows()) == {
        "seed": 1,
        "iteration_1": 5,
        "iteration_2": 13,
    }
    assert pairs.get_column("pair_id").n_unique() == pairs.height
    assert _metrics(tmp_path)["iterations"] == {"iteration=1": 5, "iteration=2": 13}
    # the iterations' prompts are disjoint, and none is a seed or test prompt
    keys = {
        s: set(selfie_split.prompt_keys(g.to_arrow().column("prompt")))
        for (s,), g in pairs.group_by("source")
    }
    test = set(selfie_split.prompt_keys(_out(tmp_path, "test", "pairs").column("prompt")))
    assert not keys["iteration_1"] & keys["iteration_2"] and not (
        keys["iteration_1"] | keys["iteration_2"]
    ) & (keys["seed"] | test)


def test_a_kept_iteration_from_another_split_is_an_error(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    split = {"seed": 2000, "pools": [8000, 20000, 30000], "test": 1000, "shuffle_seed": 7}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2, split=split
    )
    with pytest.raises(StageError, match=r"iteration=1: \d+ of its 5 pairs have prompts outside pool_1"):
        selfie.main(params)


def test_rerunning_an_iteration_under_a_new_split_replaces_its_folder(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    split = {"seed": 2000, "pools": [8000, 20000, 30000], "test": 1000, "shuffle_seed": 7}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", split=split))
    root = tmp_path / "data/selfie/pairs"
    assert sorted(d.name for d in root.iterdir()) == ["iteration=1", "seed"]
    pairs = _pairs(tmp_path)
    assert pairs.get_column("pair_id").n_unique() == pairs.height  # no stale shard of the first run is kept
    assert _metrics(tmp_path)["iterations"] == {"iteration=1": pairs.filter(pl.col("source") == "iteration_1").height}


def test_the_flat_layout_of_earlier_versions_is_moved_into_iteration_folders(tmp_path, monkeypatch):
    from pipeline.io import write_shards

    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    root = tmp_path / "data/selfie/pairs"
    flat = _pairs(tmp_path)  # seed + iteration_1, as earlier versions wrote them: shards directly in pairs/
    for d in root.iterdir():
        shutil.rmtree(d)
    write_shards(check_table(flat.to_arrow(), "pairs"), root, name="pairs")
    selfie.main(
        _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2)
    )
    assert sorted(p.name for p in root.iterdir()) == ["iteration=1", "iteration=2", "seed"]
    assert dict(_pairs(tmp_path).group_by("source").len().iter_rows()) == {
        "seed": 1,
        "iteration_1": 5,
        "iteration_2": 13,
    }
    assert _metrics(tmp_path)["migrated_from_flat_layout"] == [1]


# --- the reward gate ----------------------------------------------------------------------------------


PROBE_GOOD = {p["good"] for p in load_probes("selfie_reward")}


def test_a_length_only_reward_is_at_chance_and_stops_the_stage(tmp_path, monkeypatch):
    probes = load_probes("selfie_reward")
    assert sum(len(p["good"]) > len(p["bad"]) for p in probes) * 2 == len(probes)  # length-balanced
    pol, ref = FakeEngine("pol", scale=1.0), FakeEngine("ref", scale=2.0)  # r = len(text)
    params = _project(
        tmp_path,
        monkeypatch,
        {"pol": pol, "ref": ref},
        policy_model="pol",
        reference_model="ref",
        gates={"reward": 0.75},
    )
    with pytest.raises(
        JudgeGateError, match=r"reward judge \(pol vs ref\).*12 of 24 probes right.*selfie.gates.reward"
    ):
        selfie.main(params)
    assert ("generate", 5) not in pol.calls  # the probes ran first: nothing was sampled


def test_a_reward_that_ties_every_probe_scores_exactly_chance_and_stops_the_stage(tmp_path, monkeypatch):
    """r(good) == r(bad) answers "r(good) > r(bad)?" no and "r(bad) > r(good)?" no: one of two right per
    probe, never a pass for a reward that cannot tell the answers apart."""
    engines = {"pol": FakeEngine("pol", scale=1.0, offset=5.0), "ref": FakeEngine("ref", scale=1.0)}  # r = 5
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", gates={"reward": 0.75}
    )
    with pytest.raises(JudgeGateError, match=r"12 of 24 probes right"):
        selfie.main(params)


def test_a_reward_that_prefers_the_good_answers_passes_and_withholding_emits_no_labels(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0, liked=PROBE_GOOD, bonus=1000.0), "ref": FakeEngine("ref")}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", gates={"reward": 0.75}
    )
    selfie.main(params)
    gate = _metrics(tmp_path)["gates"]["reward"]
    assert (gate["accuracy"], gate["passed"], gate["lowered"], gate["labels"]) == (1.0, True, False, "used")
    assert gate["detail"]["good_wins"] == 12 and gate["detail"]["confidence_mean"] > 0.99

    # the same pool under a reward at chance, withheld: seed pairs written, no iteration pairs or scores
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path,
        monkeypatch,
        engines,
        "withhold",
        policy_model="pol",
        reference_model="ref",
        gates={"reward": 0.75},
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert metrics["gates"]["reward"]["labels"] == "withheld" and metrics["dropped"]["withheld"] == 5
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed"]
    assert _out(tmp_path, "responses", "responses").num_rows == 0
    assert not any(c == "generate" for c, _ in engines["pol"].calls)


def test_params_gate_the_reward_for_real_models_and_lower_it_for_tiny():
    from pipeline.config import resolve_params
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert resolve_params(data).selfie.gates.reward == 0.0  # tiny@1 vs tiny: lowered, announced
    real = {
        **data,
        "selfie": {**data["selfie"], "policy_model": "org/dpo-iter1", "reference_model": "org/sft"},
    }
    assert resolve_params(real).selfie.gates.reward == 0.75
    assert resolve_params(real).selfie.sampling.max_new_tokens == 300  # SPA


# --- the real tiny engine: implicit rewards vs direct teacher forcing --------------------------------


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory) -> tuple[str, str]:
    """The built-in tiny model and a different one: a copy with every weight perturbed (seed 1)."""
    import shutil
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.llm.tiny import resolve_model

    base = Path(resolve_model("tiny"))
    other = tmp_path_factory.mktemp("models") / "tiny-perturbed"
    shutil.copytree(base, other)
    model = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(other)
    return str(base), str(other)


def direct_logprobs(folder: str, prompts: list, responses: list[str]) -> list[tuple[float, int]]:
    """Teacher forcing with plain transformers, one sequence at a time: the response's tokens plus the
    end-of-turn token, after the templated prompt (generation prompt on)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        p_ids = tok(
            tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(p_ids)] == p_ids
        end = ids.index(tok.eos_token_id, len(p_ids)) + 1
        with torch.no_grad():
            logits = model(torch.tensor([ids[:end]])).logits[0].double()
        lp = torch.log_softmax(logits[len(p_ids) - 1 : end - 1], dim=-1)
        target = torch.tensor(ids[len(p_ids) : end]).unsqueeze(-1)
        out.append((float(lp.gather(-1, target).sum()), end - len(p_ids)))
    return out


def test_implicit_rewards_with_two_tiny_models_match_direct_teacher_forcing(
    two_tiny_models, tmp_path, monkeypatch
):
    from pipeline.config import LLM, Execution, LLMOverride, resolve_role
    from tests.conftest import ROOT

    monkeypatch.chdir(tmp_path)  # the step checkpoints live under ./.prefpipe

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    base, execution = LLM.model_validate(data["llm"]), Execution.model_validate(data["execution"])

    policy_path, reference_path = two_tiny_models
    sel = selfie_params(
        policy_model=policy_path,
        reference_model=reference_path,
        sampling={**SAMPLING.model_dump(), "max_new_tokens": 40},
        gates={"reward": 0.0},  # two random-weights models
    )
    policy, reference = sel.role(base, "policy"), sel.role(base, "reference")
    assert policy == resolve_role(base, LLMOverride(model=policy_path))
    prompts = check_table(
        pa.table(
            {
                "prompt_id": ["p1", "p2", "p3"],
                "messages": pa.array(
                    [
                        user("Write a haiku about rain."),
                        user("What is 2 + 2?"),
                        [{"role": "system", "content": "Be brief."}, *user("Name a colour.")],
                    ],
                    MESSAGES_TYPE,
                ),
                "source": ["t"] * 3,
                "origin_id": ["1", "2", "3"],
            }
        ),
        "prompts",
    )
    scored, cut_off = selfie.annotate(prompts, sel, execution, policy, reference)
    assert (
        scored.height + cut_off == 6
        and scored.height > 0
        and set(scored.get_column("generator")) == {policy_path}
    )
    msgs = {r["prompt_id"]: r["messages"] for r in prompts.to_pylist()}
    convs = [msgs[p] for p in scored.get_column("prompt_id")]
    texts = scored.get_column("text").to_list()
    pol = direct_logprobs(policy_path, convs, texts)
    ref = direct_logprobs(reference_path, convs, texts)
    for row, (lp_p, n_p), (lp_r, n_r) in zip(scored.to_dicts(), pol, ref, strict=True):
        assert (row["n_tokens_policy"], row["n_tokens_reference"]) == (n_p, n_r)
        assert row["logprob_policy"] == pytest.approx(lp_p, abs=1e-3)
        assert row["logprob_reference"] == pytest.approx(lp_r, abs=1e-3)
        assert row["reward"] == pytest.approx(lp_p - lp_r, abs=1e-3)
    assert scored.get_column("reward").abs().min() > 1e-3  # two different models: non-zero rewards
    normed = selfie_reward.implicit_reward(scored, length_normalize=True).get_column("reward").to_list()
    for r, (lp_p, n_p), (lp_r, n_r) in zip(normed, pol, ref, strict=True):
        assert r == pytest.approx(lp_p / n_p - lp_r / n_r, abs=1e-4)

    # the same model in both roles: every reward is exactly 0, reported, and no pair survives
    same, _ = selfie.annotate(prompts, sel, execution, policy, policy)
    assert same.get_column("reward").to_list() == [0.0] * scored.height
    assert selfie_output.reward_report(same)["all_zero"] is True
    assert selfie.pick_pairs(same, iteration=1)[0].height == 0

    # the gate runs the probes through the same teacher forcing; random weights are not held to it here
    report = selfie_reward.reward_gate(sel, execution, policy, reference)
    assert report["probes"] == 24 and report["lowered"] and report["detail"]["pairs"] == 12
    assert report["detail"]["good_wins"] + report["detail"]["bad_wins"] == 12  # two models: no exact ties
