"""Decontamination of Chinese/Japanese text, which has no spaces between words: each Han, Hiragana and Katakana
character counts as a word (Korean writes spaces) (``pipeline.text.cjk_words``), so a held-out or eval prompt quoted inside, or
lightly edited in, a train prompt is caught as its English twin is, and a test turn held by a train dialogue goes.
Without it "请写一首关于猫的诗" was one word: only an equal whole prompt matched."""

from __future__ import annotations

import polars as pl

from pipeline import split_leaks
from pipeline.decontam import contamination
from pipeline.dedup import turn_keys
from pipeline.split_leaks import drop_test_turns
from pipeline.text import cjk_words, normalise


def _hits(texts: list[str], evals: dict[str, str], n: int = 13, threshold: float = 0.5) -> list[tuple]:
    prompts = pl.DataFrame({"_key": list(range(1, len(texts) + 1)), "_text": texts},
                           schema={"_key": pl.UInt64, "_text": pl.String}).with_columns(normalise(pl.col("_text")))
    ev = pl.DataFrame({"eval_set": ["ceval"] * len(evals), "eval_id": list(evals), "text": list(evals.values())})
    return [tuple(r) for r in contamination(prompts, ev, n, threshold, min_words=4)
            .select("_key", "eval_id", pl.col("overlap").round(3)).iter_rows()]


def test_a_short_chinese_eval_prompt_quoted_inside_a_longer_prompt_is_caught_like_its_english_twin():
    evals = {"cat": "请写一首关于猫的诗", "cat_en": "Write a poem about cats"}
    prompts = ["你好请写一首关于猫的诗要求押韵", "Hi there, write a poem about cats that rhymes, please.",
               "请写一首关于狗的诗要求押韵"]  # a dog: another poem
    assert _hits(prompts, evals) == [(1, "cat", 1.0), (2, "cat_en", 1.0)]


def test_a_chinese_eval_prompt_with_a_changed_ending_overlaps_in_character_ngrams():
    evals = {"q": "请解释一下量子计算的基本原理以及它与经典计算的区别"}
    assert _hits(["请解释一下量子计算的基本原理以及它与经典计算有什么不同", "今天天气怎么样我们去公园散步吧好不好呢"],
                 evals) == [(1, "q", 0.769)]  # 10 of the eval prompt's 13 character 13-grams


def test_japanese_and_mixed_text_splits_into_characters_and_latin_words():
    s = normalise(pl.Series(["猫についての詩を書いて", "用Python写一个快速排序", "hello world"]))
    assert cjk_words(s).to_list() == ["猫 に つ い て の 詩 を 書 い て", "用 python 写 一 个 快 速 排 序", "hello world"]


def _dialogues(*rows: tuple[str, str, list[str]]) -> pl.DataFrame:
    prompt = [[m for t in turns for m in ({"role": "user", "content": t}, {"role": "assistant", "content": "好的"})]
              for *_, turns in rows]
    return pl.DataFrame({"pair_id": [r[0] for r in rows], "_split": [r[1] for r in rows], "_config": ["wf"] * len(rows),
                         "prompt": prompt})


def test_a_chinese_test_turn_held_by_a_train_dialogue_leaves_train_and_short_turns_join_nothing():
    df = _dialogues(("t1", "test", ["请写一首关于猫的诗"]), ("t2", "test", ["谢谢"]),
                    ("a", "train", ["你好", "请写一首关于猫的诗"]),  # holds test prompt t1 as its second turn
                    ("b", "train", ["继续", "谢谢"]),  # "谢谢", two characters: under min_words, kept
                    ("c", "train", ["请写一首关于狗的诗"]))
    df = df.with_columns(turn_keys(df, "prompt", 4))
    assert df["_turns"].list.len().to_list() == [1, 0, 1, 0, 1]
    kept, gone = drop_test_turns(df, ["_turns"], split_leaks.test_turns([(df, ["_turns"])]), pl.lit(["wf"]))
    assert gone["pair_id"].to_list() == ["a"] and gone["reason"].to_list() == ["test_prompt_in_train"]
    assert kept["pair_id"].to_list() == ["t1", "t2", "b", "c"]
