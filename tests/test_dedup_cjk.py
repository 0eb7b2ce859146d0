"""Word counts and near-duplicate shingles of Chinese and Japanese text, which writes no spaces between words: a
Han, Hiragana or Katakana character counts as a word (``pipeline.text.raw_word_counts``, ``cjk_words``) in PUGC's
pre-filter and in export's near-duplicate prompts, as it already did in decontamination (test_decontam_cjk.py)."""

from __future__ import annotations

import polars as pl

from pipeline.dedup import Signatures, dedup_within, prompt_keys, turn_texts
from pipeline.records import to_table
from pipeline.text import raw_word_counts
from stages.export import light_pairs
from stages.export_split import LEAVES
from stages.pugc_prefilter import minhash_step, quality_filter
from tests.export_fixtures import build, msg, pair, removed, write_method
from tests.pugc_fakes import docs_frame, make_params, reasons

# 109 characters, no space: one whitespace "word", 8 once punctuation is folded
CHINESE_POST = ("我上个月买了一台新的咖啡研磨机，但是磨出来的粉粗细不均匀，用它做意式浓缩的时候总是萃取过度或者不足。"
                "我已经试过调整研磨度和清洗刀盘，问题还是存在。请问这是机器本身的质量问题，还是我的使用方法不对？有什么办法可以改善吗？")


def test_raw_word_counts_count_cjk_characters_and_leave_other_text_as_whitespace_tokens():
    texts = ["请写一首诗。", "猫についての詩を書いて", "Don't panic — it's fine.", "用Python写，快速排序！", ""]
    assert raw_word_counts(pl.Series(texts)).to_list() == [5, 11, 5, 7, 0]
    english = pl.Series(["  two words ", "a\tb\nc d", "e.g. 3.5 (x)"])
    assert raw_word_counts(english).to_list() == english.str.count_matches(r"\S+").to_list()


def test_a_chinese_post_is_not_too_short_for_its_lack_of_spaces():
    cfg = make_params(languages=["zh"], min_words=20, max_words=800).pugc
    docs = docs_frame([("zh", CHINESE_POST), ("short", "咖啡机怎么清洗？"), ("long", CHINESE_POST * 8)])
    assert reasons(quality_filter(docs, cfg)) == {"zh": None, "short": "too_short", "long": "too_long"}


def test_a_chinese_post_edited_in_a_few_characters_is_a_near_duplicate():
    """Split at punctuation only, the post was 8 "words": an edit changed whole clauses and every 5-gram."""
    cfg = make_params(languages=["zh"]).pugc
    edited = CHINESE_POST.replace("上个月", "上周").replace("意式浓缩", "美式咖啡")
    docs = quality_filter(docs_frame([("a", CHINESE_POST), ("b", edited)]), cfg)
    sig = pl.from_arrow(minhash_step(docs.to_arrow(), shingle_words=5, num_perm=128))["signature"].to_list()
    assert sum(x == y for x, y in zip(*sig, strict=True)) / 128 > 0.65  # true Jaccard of the character 5-grams 0.79


def _kept(prompts: list[str]) -> list[str]:
    rows = [pair(f"p{i}", p, "pugc") for i, p in enumerate(prompts)]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"),
                                                             pl.int_range(len(rows)).alias("_seq"))
    keys = prompt_keys(df, "prompt")
    sigs = Signatures(shingle=5, num_perm=128)
    sigs.add(keys["_key"], keys["_text"])
    kept, _ = dedup_within(light_pairs(df, keys["_key"], turn_texts(df, "prompt", 4)).drop("_same"), sigs, 32, 0.8, LEAVES)
    return sorted(kept["pair_id"].to_list())


def test_near_duplicate_chinese_prompts_keep_one():
    """Real WildChat user turns: "对你的感觉原唱？" and "对你的感觉 原唱？" were one word and two (different shingles); a
    post asked again with "上周" for "上个月" shared no 5-gram of its 8 punctuation-split "words"."""
    assert len(_kept(["对你的感觉原唱？", "对你的感觉 原唱？"])) == 1
    assert len(_kept([CHINESE_POST, CHINESE_POST.replace("上个月", "上周")])) == 1
    assert _kept(["请写一首关于猫的诗", "请写一首关于狗的诗"]) == ["p0", "p1"]  # another animal, another prompt



def test_a_multi_turn_prompt_asked_again_with_a_typo_in_its_short_last_request_is_a_near_duplicate(tmp_path):
    """A last-user-turn signature required on top of the whole prompt's (tried and reverted, bench/README.md) kept
    290 of 315 such real WildChat prompts apart: one changed word leaves a short turn no 5-word shingle in common."""
    opening = ("Write a short story about a lighthouse keeper who finds a message in a bottle that was sent by his own "
               "grandfather fifty years ago, and describe how the keeper decides to answer it.")
    answer = " ".join(["The keeper climbed the stairs at dusk, as he had every night for thirty years."] * 12)
    rows = []
    for i, last in enumerate(["Now make the ending happier please", "Now make the endingg happier please"]):
        row = pair(f"p{i}", opening, "pugc", confidence=0.9 - i / 10)
        row["prompt"] = [*row["prompt"], *msg("assistant", answer), *msg("user", last)]
        rows.append(row)
    write_method(tmp_path, "pugc", rows)
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert removed(release).select("pair_id", "reason").rows() == [("p1", "duplicate_prompt_near")]
