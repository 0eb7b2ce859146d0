"""DOVE steps: pairing, items and comparisons, rows; on real Anthropic-helpful data. The joint judgment (AB/BA
verdicts, ties, failures): test_dove_judge.py. The stage end to end, equal sides, contradictions and the judge
gate: test_dove_stage.py."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from pipeline.io import write_shards
from pipeline.records import check_table, to_table
from stages import dove as D
from stages import dove_items as I
from stages.dove_similarity import nearest_partners, row_cosine, tfidf_matrix
from tests.dove_fakes import (
    ScriptedJudge,
    dove_cfg,
    helpful_items,
    helpful_tables,
    load_helpful,
    run_judge,
    user,
)


@pytest.fixture(scope="module")
def helpful(real):
    return load_helpful(real)


# --- pairing -------------------------------------------------------------------------------------


def test_random_partners_never_self_distinct_and_seeded():
    p = D.random_partners(50, 3, seed=7)
    assert p.shape == (50, 3)
    assert not (p == np.arange(50)[:, None]).any()
    assert all(len(set(row)) == 3 for row in p.tolist())
    assert (p == D.random_partners(50, 3, seed=7)).all()
    assert not (p == D.random_partners(50, 3, seed=8)).all()
    assert D.random_partners(3, 5, seed=0).shape == (3, 2)  # at most n - 1 others exist
    assert D.random_partners(1, 2, seed=0).shape == (1, 0)


def test_nearest_partners_excludes_self_and_near_duplicates():
    texts = ["how do I bake sourdough bread", "How  do I bake Sourdough bread",  # identical once normalised
             "how do I bake sourdough bread?", "how do I bake rye bread", "file my taxes"]
    x = tfidf_matrix(texts, 3, 5, 1 << 14)
    assert 0.85 < row_cosine(x, np.array([0]), np.array([2]))[0] < 0.95
    for max_similarity, partner in ((1.0, 2), (0.95, 2), (0.85, 3)):
        p, _ = nearest_partners(x, k=1, max_similarity=max_similarity)
        assert p[0, 0] == partner and p[1, 0] == partner, max_similarity
    p, s = nearest_partners(x, k=6, max_similarity=0.95)  # more slots than valid partners: -1 / NaN
    assert (p[0] == [2, 3, 4, -1, -1, -1]).all() and np.isnan(s[0, 3:]).all()
    assert not (p == np.arange(5)[:, None]).any()
    blocked, _ = nearest_partners(x, k=6, max_similarity=0.95, block_cells=7)  # one row per block
    assert (blocked == p).all()


def test_similar_pairs_nearer_than_random_on_real_instructions(helpful):
    sft, _ = helpful
    texts = sorted({r["instruction"] for r in sft})
    space = tfidf_matrix(texts, 3, 5, 1 << 18)
    out = {}
    for mode in ("random", "similar"):
        cfg = dove_cfg(pairing=mode, pairs_per_instruction=2)
        pairs, counts = D.pair_instructions(texts, cfg, space)
        again, _ = D.pair_instructions(texts, cfg, space)
        assert pairs.equals(again)  # deterministic
        a, b = pairs["inst_a"].to_numpy(), pairs["inst_b"].to_numpy()
        assert (a != b).all() and counts["no_partner"] == 0
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        assert len(set(zip(lo.tolist(), hi.tolist(), strict=True))) == pairs.height  # each unordered pair once
        out[mode] = float(row_cosine(space, a, b).mean())
        assert pairs["similarity"].mean() == pytest.approx(out[mode], rel=1e-5)
    # Measured on these 500 instructions: ~0.20 vs ~0.02.
    assert out["similar"] > 3 * out["random"], out


def test_pair_instructions_with_one_instruction_yields_nothing():
    pairs, counts = D.pair_instructions(["only one"], dove_cfg(pairing="similar"))
    assert pairs.height == 0 and counts["no_partner"] == 1
    pairs, _ = D.pair_instructions(["only one"], dove_cfg(pairing="random"))
    assert pairs.height == 0


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random-weights BERT saved as a local folder: the embedding path runs offline."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("encoder")
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def test_embedding_model_space(tiny_encoder):
    from stages.dove_similarity import embed_texts

    texts = ["bake bread", "bake bread", "file taxes", "walk the dog", "bake a cake"]
    e = embed_texts(texts, tiny_encoder, batch_size=2)
    assert e.shape == (5, 16) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.allclose(e[0], e[1], atol=1e-5)  # same text, same vector, across batches
    # A random encoder maps everything close together (cosine > 0.95): keep only exact duplicates out.
    cfg = dove_cfg(pairing="similar", embedding_model=tiny_encoder, pairs_per_instruction=2, max_partner_similarity=1.0)
    uniq = sorted(set(texts))
    pairs, counts = D.pair_instructions(uniq, cfg)
    assert (pairs["inst_a"] != pairs["inst_b"]).all() and counts["no_partner"] == 0
    assert pairs["similarity"].to_numpy() == pytest.approx(row_cosine(
        embed_texts(uniq, tiny_encoder), pairs["inst_a"].to_numpy(), pairs["inst_b"].to_numpy()), abs=1e-5)
    random_pairs, _ = D.pair_instructions(uniq, dove_cfg(pairing="random", embedding_model=tiny_encoder))
    assert random_pairs["similarity"].null_count() == random_pairs.height  # the model is not loaded for `random`


# --- items and comparisons -----------------------------------------------------------------------


def test_items_join_dedupe_and_reject():
    prompts = to_table([
        {"prompt_id": "p1", "messages": user("Name a fruit."), "source": "rated", "origin_id": "1"},
        {"prompt_id": "p2", "messages": [{"role": "system", "content": "Be brief."}, *user("Hi"),
                                         {"role": "assistant", "content": "Hello!"}, *user("Name a colour.")],
         "source": "rated", "origin_id": "2"},
    ], "prompts")
    responses = to_table([
        {"prompt_id": "p1", "response_id": "r1", "text": "Apple.", "generator": "m"},
        {"prompt_id": "p1", "response_id": "r2", "text": "  ", "generator": "m"},
        {"prompt_id": "p2", "response_id": "r1", "text": "Blue.", "generator": "m"},
        {"prompt_id": "gone", "response_id": "r1", "text": "Orphan.", "generator": "m"},
    ], "responses")
    pairs = to_table([{"pair_id": "x", "prompt": user("Name a fruit."), "chosen": [{"role": "assistant", "content": "Apple."}],
                       "rejected": [{"role": "assistant", "content": "Rock."}], "method": "ingest", "source": "seed",
                       "lineage": "{}"}], "pairs")
    scored, orphans = I.items_from_scored(prompts, responses)
    assert orphans["row"].to_list() == [3] and "without a prompt" in orphans["reason"][0]
    assert orphans["source"].to_list() == ["responses"]
    items, rejects, counts = I.normalise_items([scored, I.items_from_pairs(pairs)])
    assert counts == {"items_in": 5, "empty_response": 1, "duplicate_items": 1, "items": 3}
    assert rejects["reason"].to_list() == ["empty response"] and rejects["row"].to_list() == [1]
    assert sorted(items["response"].to_list()) == ["Apple.", "Blue.", "Rock."]
    assert "p1:r1" in items["item_id"].to_list()  # the pair's identical item merged into the lower id
    texts = dict(zip(items["response"], items["instruction_text"], strict=True))
    assert texts["Apple."] == "Name a fruit."
    assert texts["Blue."] == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Name a colour."
    # who wrote each: the ingested responses' generator; an ingested pair's dataset names none
    assert dict(zip(items["response"], items["written_by"], strict=True)) == {"Apple.": "m", "Blue.": "m", "Rock.": "unknown"}



def test_a_response_that_shows_nothing_is_no_item():
    """U+FFFD alone (bytes a tokenizer could not decode) or zero-width marks alone say nothing: rejected as empty,
    never judged (the samples run judged the tiny model's "\\ufffd" answer twice, and export removed both pairs)."""
    prompts = to_table([{"prompt_id": "p1", "messages": user("Name a fruit."), "source": "rated", "origin_id": "1"}],
                       "prompts")
    responses = to_table([{"prompt_id": "p1", "response_id": f"r{i}", "text": t, "generator": "m"}
                          for i, t in enumerate(["\ufffd", "\u200b \u2060", "Pear."])], "responses")
    items, rejects, counts = I.normalise_items([I.items_from_scored(prompts, responses)[0]])
    assert counts["empty_response"] == 2 and items["response"].to_list() == ["Pear."]
    assert rejects["reason"].to_list() == ["empty response"] * 2

def test_a_misspelt_input_or_pairs_path_names_its_params_key(tmp_path, monkeypatch):
    from pipeline.io import SourceError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"^dove\.inputs\[0\]\.prompts: data/pugc/query: not found; .* or correct "
                       r"dove\.inputs\[0\]\.prompts in params\.yaml$"):
        I.load_items(dove_cfg(inputs=[{"prompts": "data/pugc/query", "responses": "data/pugc/responses"}]))
    with pytest.raises(SourceError, match=r"^dove\.pairs: data/ingest/pair: not found"):
        I.load_items(dove_cfg(pairs="data/ingest/pair", pair_sources=["hh"]))
    prompts, responses, _ = helpful_tables([], [])  # a second input: its own index in the key
    for name, table in (("prompts", prompts), ("responses", responses)):
        write_shards(table, tmp_path / "data" / "ingest" / name, name=name)
    good = {"prompts": "data/ingest/prompts", "responses": "data/ingest/responses"}
    with pytest.raises(SourceError, match=r"^dove\.inputs\[1\]\.responses: data/ingest/respones: not found"):
        I.load_items(dove_cfg(inputs=[good, good | {"responses": "data/ingest/respones"}]))


def test_comparisons_joint_and_conditional(helpful):
    items = helpful_items(*helpful)
    comps, metrics = D.build_comparisons(items, dove_cfg(pairing="random", pairs_per_instruction=1))
    joint, cond = comps.filter(~pl.col("conditional")), comps.filter(pl.col("conditional"))
    assert (joint["instruction_text_1"] != joint["instruction_text_2"]).all()
    assert cond.height == metrics["instructions_with_several_responses"] == 363
    assert (cond["instruction_text_1"] == cond["instruction_text_2"]).all()
    assert (cond["response_1"] != cond["response_2"]).all()
    assert comps["comparison_id"].n_unique() == comps.height
    again, _ = D.build_comparisons(items, dove_cfg(pairing="random", pairs_per_instruction=1))
    assert comps.equals(again)
    no_cond, m2 = D.build_comparisons(items, dove_cfg(include_conditional=False))
    assert not no_cond["conditional"].any() and m2["conditional_comparisons"] == 0


# --- rows ----------------------------------------------------------------------------------------


def test_joint_pairs_rows_follow_the_winner(helpful):
    items = helpful_items(*helpful).head(40)
    comps, _ = D.build_comparisons(items, dove_cfg(pairing="similar"))
    comps = comps.with_columns(response_2=pl.col("response_2") + " GOOD")  # the scripted judge prefers side 2
    out = run_judge(comps, ScriptedJudge())
    assert set(out["outcome"]) == {"second"}
    table = check_table(D.joint_pairs(out, pairing="similar", judge_model="scripted", fp="fp0"), "joint_pairs")
    rows = table.to_pylist()
    assert len(rows) == comps.height
    for row, comp in zip(rows, comps.iter_rows(named=True), strict=True):
        assert row["chosen"] == [{"role": "assistant", "content": comp["response_2"]}]
        assert row["rejected"] == [{"role": "assistant", "content": comp["response_1"]}]
        assert row["chosen_prompt"] == comp["instruction_2"] and row["rejected_prompt"] == comp["instruction_1"]
        lineage = json.loads(row["lineage"])
        assert lineage["conditional"] == comp["conditional"]
        assert lineage["chosen_item"] == comp["item_id_2"] and lineage["judge"] == "scripted"
        assert lineage["pairing"] == ("conditional" if comp["conditional"] else "similar")
        assert row["method"] == "dove" and math.isclose(row["confidence"], 0.8)
    assert len({r["pair_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("include_conditional", [True, False])
def test_a_joint_comparison_over_one_instruction_is_conditional(include_conditional):
    """DOVE's joint preferences compare *different* instructions (the repo: "joint rankings are acquired over
    non-identical instructions"). Two prompts that differ only in case and spacing are one instruction: comparing
    their responses is a conditional comparison, judged with the one-instruction prompt (or left out when
    conditional comparisons are off), never a joint one."""
    prompts = to_table([{"prompt_id": p, "messages": user(t), "source": "s", "origin_id": p}
                        for p, t in (("p1", "Write a haiku about rain."), ("p2", "write a  haiku about rain."))],
                       "prompts")
    responses = to_table([{"prompt_id": p, "response_id": r, "text": t, "generator": "g"}
                          for p, r, t in (("p1", "r1", "Rain taps the window."), ("p2", "r2", "Grey clouds drift."))],
                         "responses")
    scored, _ = I.items_from_scored(prompts, responses)
    items, _, _ = I.normalise_items([scored])
    comps, m = D.build_comparisons(items, dove_cfg(pairing="random", include_conditional=include_conditional))
    assert m["joint_with_same_instruction"] == 1 and m["joint_comparisons"] == 0
    assert comps["conditional"].to_list() == ([True] if include_conditional else [])


def _one_instruction_items(texts: list[str]) -> pl.DataFrame:
    prompts = to_table([{"prompt_id": "p1", "messages": user("Name a fruit."), "source": "s", "origin_id": "1"}],
                       "prompts")
    responses = to_table([{"prompt_id": "p1", "response_id": f"r{i}", "text": t, "generator": "g"}
                          for i, t in enumerate(texts)], "responses")
    scored, _ = I.items_from_scored(prompts, responses)
    return I.normalise_items([scored])[0]


def test_a_same_answer_draw_is_redrawn_not_dropped():
    """Two draws of one instruction that give the same answer ("Apple." / "apple") were dropped although the
    instruction holds a different answer ("Pear."): the comparison is redrawn (seeded, bounded) and counted;
    with max_redraws 0 it is dropped, as before. The same inputs give the same comparisons on every run."""
    items = _one_instruction_items(["Apple.", "apple", "Pear."])
    for seed in range(40):  # some seeds draw the two apples first
        _, first = D.build_comparisons(items, dove_cfg(pairing="random", seed=seed, max_redraws=0))
        if first["dropped_same_text"]:
            break
    assert first["dropped_same_text"] == 1 and first["conditional_comparisons"] == 0
    comps, m = D.build_comparisons(items, dove_cfg(pairing="random", seed=seed))
    assert m["dropped_same_text"] == 0 and m["redrawn"] == 1 and m["conditional_comparisons"] == 1
    assert "Pear." in (comps["response_1"][0], comps["response_2"][0])
    again, _ = D.build_comparisons(items, dove_cfg(pairing="random", seed=seed))
    assert comps.equals(again)


def test_conditional_draws_that_repeat_are_redrawn():
    """With two pairs sought per instruction, a second draw equal to the first was dropped (one comparison where
    three different pairs exist); it is redrawn, so the instruction gets two different comparisons."""
    items = _one_instruction_items(["Apple.", "Pear.", "Plum."])
    cfg = dict(pairing="random", conditional_pairs_per_instruction=2)
    short = [s for s in range(40)
             if D.build_comparisons(items, dove_cfg(**cfg, seed=s, max_redraws=0))[1]["conditional_comparisons"] < 2]
    assert short  # some seeds drew one pair twice
    for seed in short:
        comps, m = D.build_comparisons(items, dove_cfg(**cfg, seed=seed))
        assert m["conditional_comparisons"] == 2 and m["redrawn"] >= 1
        assert comps.select(pl.struct("item_id_1", "item_id_2").n_unique()).item() == 2


def test_a_text_with_no_other_answer_is_still_dropped_after_the_redraws():
    items = _one_instruction_items(["Apple.", "apple"])
    comps, m = D.build_comparisons(items, dove_cfg(pairing="random"))
    assert comps.height == 0 and m["dropped_same_text"] == 1 and m["redrawn"] == 0


def test_a_same_text_joint_draw_is_redrawn():
    """Two prompts that are one instruction up to spacing, whose drawn responses were one answer, lost their
    comparison; another response of theirs is drawn instead."""
    prompts = to_table([{"prompt_id": p, "messages": user(t), "source": "s", "origin_id": p}
                        for p, t in (("p2", "Say  hi."), ("p3", "Say hi."))], "prompts")
    responses = to_table([{"prompt_id": p, "response_id": r, "text": t, "generator": "g"}
                          for p, r, t in (("p2", "r1", "Hi there!"), ("p2", "r2", "Hello."), ("p3", "r1", "Hi  there!"))],
                         "responses")
    scored, _ = I.items_from_scored(prompts, responses)
    items = I.normalise_items([scored])[0]
    seed = next(s for s in range(40)
                if D.build_comparisons(items, dove_cfg(pairing="random", seed=s, max_redraws=0))[1]["dropped_same_text"])
    comps, m = D.build_comparisons(items, dove_cfg(pairing="random", seed=seed))
    assert m["redrawn"] == 1 and m["dropped_same_text"] == 0 and m["joint_with_same_instruction"] == 1
    across = comps.filter(pl.col("item_id_1").str.slice(0, 2) != pl.col("item_id_2").str.slice(0, 2))
    assert sorted([across["response_1"][0], across["response_2"][0]]) == ["Hello.", "Hi  there!"]


def test_pairs_of_another_stages_responses_name_the_models_behind_them(tmp_path):
    """DOVE re-reads PUGC's and Selfie's responses, yet its pairs named only its own judge: the release card's
    dove row and weights table left out the models that wrote the instructions and answers it compares. An item
    from a stage's responses carries that stage's roles (``models`` in the details.json beside them) into the
    lineage of every pair it is in, and details.json lists them with their weights identity; a pair of
    ingested responses names none. An ingested response's side names instead who wrote it, as its dataset says
    (``written_by``: the release card lists them; it named no model of the input data)."""
    folders = {}
    for stage, prompts_dir, pid in (("pugc", "queries", "q"), ("ingest", "prompts", "h")):
        root = tmp_path / "data" / stage
        write_shards(to_table([{"prompt_id": f"{pid}{i}", "messages": user(f"{stage} question number {i}?"),
                                "source": stage, "origin_id": str(i)} for i in range(3)], "prompts"),
                     root / prompts_dir, name="prompts")
        write_shards(to_table([{"prompt_id": f"{pid}{i}", "response_id": f"r{k}", "generator": f"{stage}-writer",
                                "text": f"{stage} answer {k} to {i}" + " GOOD" * k} for i in range(3) for k in range(2)],
                              "responses"), root / "responses", name="responses")
        folders[stage] = {"prompts": str(root / prompts_dir), "responses": str(root / "responses")}
    models = {"generator": {"model": "gen-m", "identity": "hub:" + "a" * 40},
              "policy": {"model": "policy-m", "identity": "hub:" + "b" * 40}}
    (tmp_path / "data" / "pugc" / "details.json").write_text(json.dumps({"models": models}))
    cfg = dove_cfg(inputs=[folders["pugc"], folders["ingest"]], pairing="random")
    items, _, _, _ = I.load_items(cfg)
    comps, _ = D.build_comparisons(items, cfg)
    out = run_judge(comps, ScriptedJudge())
    table = check_table(D.joint_pairs(out, pairing="random", judge_model="judge-m", fp="fp0"), "joint_pairs")
    lineage = [json.loads(x) for x in table.column("lineage").to_pylist()]
    pugc = {"pugc.generator": "gen-m", "pugc.policy": "policy-m"}
    sides = [(lin["chosen_item"][0], lin["rejected_item"][0]) for lin in lineage]
    assert {"q", "h"} <= {s for pair in sides for s in pair} and ("h", "h") in sides
    assert [lin.get("models") for lin in lineage] == [pugc if "q" in s else None for s in sides]
    writer = {"h": "ingest-writer", "q": None}  # PUGC's answers: its policy's, named by models
    assert [lin.get("written_by") for lin in lineage] == [
        {"chosen": writer[c], "rejected": writer[r]} if "h" in (c, r) else None for c, r in sides]
    assert all(lin["judge"] == "judge-m" and lin["fingerprint"] == "fp0" for lin in lineage)
    named = sum("q" in s for s in sides)
    assert D.upstream_models(cfg, pl.from_arrow(table.column("lineage"))) == {
        f"pugc.{role}": {**r, "from": folders["pugc"]["responses"], "pairs": named} for role, r in models.items()}
    ingest_only = [lin for lin in table.column("lineage").to_pylist() if '"q' not in lin]
    assert D.upstream_models(cfg, pl.Series(ingest_only, dtype=pl.String)) == {}
