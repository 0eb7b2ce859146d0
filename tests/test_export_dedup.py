"""Export's cleaning rules: identical pairs, duplicate and near-duplicate prompts within and across methods."""

from __future__ import annotations

import json

import polars as pl

from pipeline.dedup import Signatures, dedup_within, prompt_keys, turn_texts
from pipeline.records import to_table
from stages.export import light_pairs
from stages.export_split import LEAVES
from tests.export_fixtures import (
    TOPICS,
    build,
    pair,
    removed,
    write_method,
)


def test_identical_chosen_and_rejected_are_dropped(tmp_path):
    write_method(tmp_path, "pugc", [
        pair("same", TOPICS[0], "pugc", chosen="Same answer.", rejected="Same answer.  "),
        pair("diff", TOPICS[1], "pugc"),
    ])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert stats["drops"] == {"identical": 1}
    assert removed(release).select("pair_id", "reason").rows() == [("same", "identical")]


def test_a_dove_pair_is_identical_only_when_both_prompts_and_both_answers_are(tmp_path):
    """A joint pair sets (instruction, answer) against (instruction, answer): one answer under two different
    instructions, or two answers to one instruction, is a comparison; the same answer to the same instruction
    on both sides is not."""
    from tests.export_fixtures import joint

    one_answer = joint("d-answer", TOPICS[0], TOPICS[1])
    one_answer["rejected"] = one_answer["chosen"]
    both = joint("d-both", TOPICS[2], TOPICS[2])
    both["rejected"] = [{"role": "assistant", "content": both["chosen"][0]["content"].upper()}]
    write_method(tmp_path, "dove", [one_answer, both, joint("d-prompt", TOPICS[3], TOPICS[3])])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert stats["drops"] == {"identical": 1}
    assert removed(release).select("pair_id", "reason").rows() == [("d-both", "identical")]
    assert stats["rows"]["dove"]["train"] == 2


def test_duplicate_prompts_across_methods_leave_only_the_all_config_by_priority(tmp_path):
    # ~75 words: one changed word alters 5 of ~70 shingles (estimated Jaccard ~0.87 >= 0.8)
    long = " ".join(TOPICS[4:9]) + " Mention the estates general, the debt crisis, bread prices and enlightenment ideas."
    near = long.replace("bread prices", "grain prices")
    write_method(tmp_path, "pugc", [pair("pugc-a", TOPICS[0], "pugc", confidence=0.1),
                                    pair("pugc-b", long, "pugc", confidence=None)])
    write_method(tmp_path, "selfie", [pair("selfie-a", TOPICS[0].upper(), "selfie", confidence=0.99),
                                      pair("selfie-c", TOPICS[2], "selfie", confidence=0.5)])
    # Curry: one prompt, two levels; both stay together in its own config
    write_method(tmp_path, "curry", [pair("curry-0", near, "curry", confidence=0.8, level=0),
                                     pair("curry-1", near, "curry", confidence=0.7, level=1, rejected="meh")],
                 sub="level=0")
    release, stats = build(tmp_path, methods=["pugc", "selfie", "curry"], test_fraction=0.0,
                           dedup={"priority": ["curry", "pugc", "selfie", "wildfeedback"]})

    def ids(config):
        return set(pl.read_parquet(release / config / "train-00000-of-00001.parquet")["pair_id"])

    # every method's config holds all its pairs: nothing was compared across methods there
    assert ids("pugc") == {"pugc-a", "pugc-b"} and ids("selfie") == {"selfie-a", "selfie-c"}
    assert ids("curry") == {"curry-0", "curry-1"}
    # `all`: the priority decides (selfie's confidence 0.99 does not beat pugc's 0.1); curry wins the near cluster
    assert ids("all") == {"pugc-a", "selfie-c", "curry-0", "curry-1"}
    gone = {r["pair_id"]: r for r in removed(release).iter_rows(named=True)}
    assert {k: (v["reason"], v["configs"]) for k, v in gone.items()} == {
        "selfie-a": ("duplicate_prompt_exact", ["all"]), "pugc-b": ("duplicate_prompt_near", ["all"])}
    assert json.loads(gone["pugc-b"]["detail"]) == {"kept_method": "curry", "kept_pair_id": "curry-0"}
    assert json.loads(gone["selfie-a"]["detail"]) == {"kept_method": "pugc", "kept_pair_id": "pugc-a"}
    assert stats["drops_by_config"] == {"all": {"duplicate_prompt_exact": 1, "duplicate_prompt_near": 1}}
    assert stats["methods"]["selfie"] == {"input": 2, "output": 2, "in_all": 1}
    card = (release / "README.md").read_text()
    assert "| `all` | `duplicate_prompt_exact` | 1 | " in card and "first of curry, pugc, selfie, wildfeedback" in card


def test_each_method_config_holds_its_pairs_when_methods_share_prompts(tmp_path):
    """#14.1: Curry-DPO re-reads PUGC's responses; today's 'highest confidence' rule emptied `pugc`."""
    write_method(tmp_path, "pugc", [pair(f"pugc{i}", t, "pugc", confidence=None) for i, t in enumerate(TOPICS[:6])])
    write_method(tmp_path, "curry", [pair(f"curry{i}-{lv}", t, "curry", confidence=None, level=lv, rejected=f"r{lv}")
                                     for i, t in enumerate(TOPICS[:6]) for lv in (0, 1)], sub="level=0")
    release, stats = build(tmp_path, methods=["pugc", "curry"], test_fraction=0.0)
    import datasets

    pugc = datasets.load_dataset(str(release), "pugc", split="train", cache_dir=str(tmp_path / "hf"))
    assert pugc.num_rows == 6 and stats["methods"]["pugc"] == {"input": 6, "output": 6, "in_all": 6}
    assert stats["methods"]["curry"] == {"input": 12, "output": 12, "in_all": 0}  # pugc comes first in `all`
    assert stats["rows"]["all"] == {"train": 6}


def test_near_duplicate_prompts_within_a_method_keep_its_most_confident():
    long = " ".join(TOPICS[4:9]) + " Mention the estates general, the debt crisis, bread prices and enlightenment ideas."
    rows = [pair("a", long, "pugc", confidence=0.2), pair("b", long.replace("bread", "grain"), "pugc", confidence=0.9)]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"), pl.int_range(2).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    sigs = Signatures(shingle=5, num_perm=128)
    sigs.add(prompts["_key"], prompts["_text"])
    kept, drops = dedup_within(light_pairs(df, prompts["_key"], turn_texts(df, "prompt", 4)).drop("_same"), sigs, 32, 0.8, LEAVES)
    assert kept["pair_id"].to_list() == ["b"]
    assert drops.select("pair_id", "reason", "configs").rows() == [("a", "duplicate_prompt_near", ["pugc", "all"])]


def test_identical_pairs_within_a_method_keep_one():
    rows = [pair("a", TOPICS[0], "pugc", confidence=0.2, rejected="x"),
            pair("b", TOPICS[0], "pugc", confidence=0.9, rejected="x"),
            pair("c", TOPICS[0], "pugc", confidence=0.1, rejected="y")]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"), pl.int_range(3).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    df = light_pairs(df, prompts["_key"], turn_texts(df, "prompt", 4))
    sigs = Signatures(shingle=5, num_perm=64)
    sigs.add(prompts["_key"], prompts["_text"])
    kept, drops = dedup_within(df.drop("_same"), sigs, 16, 0.8, LEAVES)
    assert sorted(kept["pair_id"]) == ["b", "c"]
    assert drops.select("pair_id", "reason").rows() == [("a", "duplicate_pair")]


def _dedup_within(rows: list[dict]):
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"),
                                                             pl.int_range(len(rows)).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    sigs = Signatures(shingle=5, num_perm=128)
    sigs.add(prompts["_key"], prompts["_text"])
    return dedup_within(light_pairs(df, prompts["_key"], turn_texts(df, "prompt", 4)).drop("_same"), sigs, 32, 0.8, LEAVES)


def test_an_identical_pair_with_a_nan_confidence_loses_to_one_with_a_confidence():
    """NaN sorts above every number: taken as is, a pair whose judge gave no confidence beat every scored copy."""
    kept, _ = _dedup_within([pair("a", TOPICS[0], "pugc", confidence=float("nan"), rejected="x"),
                             pair("b", TOPICS[0], "pugc", confidence=0.6, rejected="x")])
    assert kept["pair_id"].to_list() == ["b"]


def test_near_duplicate_prompts_equally_confident_keep_the_one_with_more_pairs():
    long = " ".join(TOPICS[4:9]) + " Mention the estates general, the debt crisis, bread prices and enlightenment ideas."
    kept, drops = _dedup_within([pair("b", long.replace("bread", "grain"), "pugc", confidence=0.5),
                                 pair("a1", long, "pugc", confidence=0.5, rejected="r1"),
                                 pair("a2", long, "pugc", confidence=0.5, rejected="r2")])
    assert sorted(kept["pair_id"]) == ["a1", "a2"] and drops["pair_id"].to_list() == ["b"]
    assert json.loads(drops["detail"][0]) == {"kept_pair_id": "a1"}  # the kept prompt's first pair


def test_in_all_near_duplicate_prompts_of_one_method_keep_the_one_with_more_pairs():
    from pipeline.dedup import dedup_across

    long = " ".join(TOPICS[4:9]) + " Mention the estates general, the debt crisis, bread prices and enlightenment ideas."
    rows = [pair("b", long.replace("bread", "grain"), "pugc"), pair("a1", long, "pugc", rejected="r1"),
            pair("a2", long, "pugc", rejected="r2")]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"), pl.int_range(3).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    sigs = Signatures(shingle=5, num_perm=128)
    sigs.add(prompts["_key"], prompts["_text"])
    tagged, drops = dedup_across(light_pairs(df, prompts["_key"], turn_texts(df, "prompt", 4)).drop("_same"), ["pugc"], sigs, 32, 0.8, LEAVES)
    assert tagged.filter(pl.col("_primary"))["pair_id"].to_list() == ["a1", "a2"]
    assert drops.select("pair_id", "reason").rows() == [("b", "duplicate_prompt_near")]
