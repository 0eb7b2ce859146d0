"""Literal variants of an evaluation, held-out or test prompt that a real log holds (text copied from a web page
or an HTML export, emoji with variation selectors, invisible joiners) are still that prompt: none reaches train.
Found by fuzzing export with variants of MT-Bench prompts (docs/export.md, "Prompt variants")."""

from __future__ import annotations

import json

import polars as pl

from pipeline.dedup import opening_key
from stages.export_split import in_test_split
from tests.export_fixtures import TOPICS, build, export_cfg, msg, pair, removed, write_held_out, write_method

APOS = "What's area of the circle circumscribing the triangle?"  # MT-Bench, 8 words: matched whole, not by 13-grams
SHORT = "Prove the Pythagorean theorem."  # MT-Bench, 4 words


def _gone(release) -> dict[str, str]:
    return {r["pair_id"]: r["reason"] for r in removed(release).iter_rows(named=True)}


def test_html_references_and_invisible_characters_in_an_eval_prompt_are_caught(tmp_path, real):
    """On main "What&#39;s" normalised to "what 39 s", "Prove&nbsp;the" to "prove nbsp the", and a variation selector
    or a combining grapheme joiner (marks, kept inside words) split or added a word: every short eval prompt so
    written reached train. A different prompt on the same words stays."""
    variants = {
        "dec": APOS.replace("'", "&#39;"), "hex": APOS.replace("'", "&#x27;"),
        "nbsp": SHORT.replace(" ", "&nbsp;"), "amp": "Q&amp;A: " + APOS,
        "vs16": SHORT.replace("the ", "the \u2764\ufe0f ", 1), "cgj": SHORT.replace("Pyth", "Py\u034fth"),
    }
    write_method(tmp_path, "pugc", [pair(k, v, "pugc") for k, v in variants.items()]
                 + [pair("other", "What&#39;s the area of a circle?", "pugc"), pair("clean", TOPICS[3], "pugc")])
    release, _ = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert _gone(release) == dict.fromkeys(variants, "contaminated")
    assert set(pl.read_parquet(release / "pugc" / "train-00000-of-00001.parquet")["pair_id"]) == {"other", "clean"}


def test_a_held_out_prompt_written_with_html_references_leaves_train(tmp_path):
    held = "Don't you think it's time to learn Rust properly?"
    write_held_out(tmp_path, [held])
    write_method(tmp_path, "pugc", [pair("coded", held.replace("'", "&#39;"), "pugc"), pair("ok", TOPICS[6], "pugc")])
    release, _ = build(tmp_path, methods=["pugc"], test_fraction=0.0, held_out=["data/selfie/test"])
    assert _gone(release) == {"coded": "held_out"}


def test_a_test_prompt_written_with_html_references_in_a_train_dialogue_is_dropped(tmp_path):
    """A train dialogue whose later turn is a test prompt copied with ``&#39;`` held the test prompt: its turn key
    and its words ("what 39 s") differed from the test turn's."""
    asks = ["What's a good name for a grey cat?", "Where's the best place to watch a meteor shower?",
            "Who's the author of the oldest known recipe book?", "How's a rainbow formed after a summer storm?"]
    keys = pl.DataFrame({"prompt": [msg("user", p) for p in asks + TOPICS]}).select(opening_key("prompt"))[:, 0]
    where = dict(zip(asks + TOPICS, in_test_split(keys, 0.5, export_cfg().split_salt).tolist(), strict=True))
    test = next(p for p in asks if where[p])
    opening = next(p for p in TOPICS if not where[p])
    talk = pair("talk", opening, "pugc")
    talk["prompt"] = msg("user", opening) + msg("assistant", "Sure.") + msg("user", test.replace("'", "&#39;"))
    write_method(tmp_path, "pugc", [pair("test", test, "pugc"), talk])
    release, _ = build(tmp_path, methods=["pugc"], test_fraction=0.5)
    assert _gone(release) == {"talk": "test_prompt_in_train"}
    gone = removed(release).row(0, named=True)
    assert json.loads(gone["detail"])["test_pair_id"] == "test"
