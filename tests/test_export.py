"""Export: merge, PII, identical/duplicate/near-duplicate pairs, decontamination, split, release files."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.decontam import prompts_sha256
from pipeline.dedup import Signatures, dedup_within, prompt_keys, text_of
from pipeline.hub import verify_release
from pipeline.io import StageError, write_shards
from pipeline.records import to_table
from stages.export import LEAVES, build_release, light_pairs
from stages.export_read import ExportError, read_pairs_tree
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_held_out, write_method


def build(tmp_path, **overrides):
    cfg = export_cfg(**overrides)
    stats = build_release(cfg, tmp_path, tmp_path / "data" / "release", "fp-test")
    return tmp_path / "data" / "release", stats


def removed(release) -> pl.DataFrame:
    return pl.read_ndjson(release / "removed.jsonl") if (release / "removed.jsonl").stat().st_size else pl.DataFrame()


# --- the release as libraries see it -------------------------------------------------------------


def test_datasets_loads_every_config_and_split(tmp_path):
    import datasets

    standard_methods(tmp_path)
    release, stats = build(tmp_path, test_fraction=0.3)
    card = (release / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "odc-by" and {"trl", "dpo"} <= set(front["tags"])
    assert front["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c for c in front["configs"]}
    assert set(configs) == {"all", "pugc", "selfie", "curry", "dove"}
    assert configs["all"].get("default") is True
    assert sum(len(c["data_files"]) for c in configs.values()) >= 7  # test splits exist where prompts fell there
    for name, entry in configs.items():
        ds = datasets.load_dataset(str(release), name, cache_dir=str(tmp_path / "hf-cache"))
        assert set(ds) == {f["split"] for f in entry["data_files"]}
        for split, d in ds.items():
            assert d.num_rows == stats["rows"][name][split]
            if name == "dove":
                assert {"chosen_prompt", "chosen", "rejected_prompt", "rejected"} <= set(d.column_names)
            else:
                row = d[0]
                assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
                assert set(row["prompt"][0]) == {"role", "content"}
    assert verify_release(release) == []
    assert stats["skipped"] == {"wildfeedback": "data/wildfeedback/pairs not found (stage not run or not merged yet)"}
    assert "wildfeedback" in card and "not found" in card  # the card says what is missing


def test_no_prompt_in_both_splits_and_dove_rows_never_straddle(tmp_path):
    standard_methods(tmp_path)
    release, stats = build(tmp_path, test_fraction=0.4)

    def prompts(config, split, col="prompt"):
        f = release / config / f"{split}-00000-of-00001.parquet"
        return set(pl.read_parquet(f).select(text_of(col))[:, 0]) if f.exists() else set()

    train, test = prompts("all", "train"), prompts("all", "test")
    assert train and test and not (train & test)
    # DOVE: both prompts of a row sit in that row's split, and agree with the conditional configs' assignment
    d_train = prompts("dove", "train", "chosen_prompt") | prompts("dove", "train", "rejected_prompt")
    d_test = prompts("dove", "test", "chosen_prompt") | prompts("dove", "test", "rejected_prompt")
    assert not (d_train & d_test)
    straddle = removed(release).filter(pl.col("reason") == "split_straddle")
    assert straddle.height == stats["drops"].get("split_straddle", 0) > 0
    assert stats["rows"]["dove"].get("train", 0) + stats["rows"]["dove"].get("test", 0) + straddle.height == 12


def test_curry_levels_read_recursively_in_level_order(tmp_path):
    for level in (10, 2, 0):
        write_method(tmp_path, "curry", [pair(f"c{level}", f"q {level}", "curry")], sub=f"level={level}")
    table = read_pairs_tree(tmp_path / "data" / "curry" / "pairs", "pairs")
    assert table.column("pair_id").to_pylist() == ["c0", "c2", "c10"]
    assert table.column("level").to_pylist() == [0, 2, 10]  # filled from the folder name
    write_method(tmp_path, "pugc", [pair("p", "some other question", "pugc")])
    release, stats = build(tmp_path, methods=["curry"])
    assert stats["levels"] == {"curry": {"0": 1, "2": 1, "10": 1}}
    assert stats["skipped"]["pugc"] == "present but not listed in export.methods" and "pugc" not in stats["methods"]
    for shard in sorted((release / "curry").glob("*.parquet")):  # rows are written in curriculum order
        levels = pl.read_parquet(shard)["level"].to_list()
        assert levels == sorted(levels), shard.name
    assert (release / "wildfeedback").is_dir()  # every config folder exists (they are DVC outs), empty if unused


def test_the_all_config_is_in_level_order_then_pair_id_unleveled_pairs_last(tmp_path):
    """``all`` is read in curriculum order: a pair id says nothing of its level (ids are hashes)."""
    write_method(tmp_path, "curry", [pair("a1", TOPICS[0], "curry", level=1), pair("b1", TOPICS[1], "curry", level=1)],
                 sub="level=1")
    write_method(tmp_path, "curry", [pair("c0", TOPICS[2], "curry", level=0), pair("d0", TOPICS[3], "curry", level=0)],
                 sub="level=0")
    write_method(tmp_path, "pugc", [pair("0p", TOPICS[4], "pugc"), pair("1p", TOPICS[5], "pugc")])
    release, _ = build(tmp_path, methods=["curry", "pugc"], test_fraction=0.0)
    rows = pl.read_parquet(release / "all" / "train-*.parquet").select("pair_id", "level").rows()
    assert rows == [("c0", 0), ("d0", 0), ("a1", 1), ("b1", 1), ("0p", None), ("1p", None)]


def test_row_groups_are_capped_for_the_hub_viewer(tmp_path):
    prompts = [f"{TOPICS[i % 12]} Also: {TOPICS[(i // 12 + 1 + i) % 12]}" for i in range(24)]  # 24 distinct
    write_method(tmp_path, "pugc", [pair(f"p{i}", t, "pugc") for i, t in enumerate(prompts)])
    release, _ = build(tmp_path, methods=["pugc"], row_group_rows=3, test_fraction=0.0)
    meta = pq.ParquetFile(release / "pugc" / "train-00000-of-00001.parquet").metadata
    assert meta.num_rows == 24 and meta.num_row_groups == 8
    assert all(meta.row_group(i).num_rows <= 3 for i in range(meta.num_row_groups))


def test_identical_output_for_identical_input(tmp_path):
    standard_methods(tmp_path)
    release, _ = build(tmp_path)
    first = json.loads((release / "_manifest.json").read_text())
    release, _ = build(tmp_path)
    assert json.loads((release / "_manifest.json").read_text()) == first  # shards, card, stats, plots: same bytes


def test_streaming_in_small_batches_and_spilled_runs_changes_no_byte(tmp_path):
    """Both passes read 3 pairs at a time and every writer spills sorted runs: the same release."""
    standard_methods(tmp_path)
    cfg = export_cfg(test_fraction=0.3, row_group_rows=2)
    whole = build_release(cfg, tmp_path, tmp_path / "whole", "fp")
    streamed = build_release(cfg, tmp_path, tmp_path / "streamed", "fp", batch_rows=3, spill_bytes=1)
    assert streamed == whole and whole["total"] > 10
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "streamed")
                                     for p in (tmp_path / "streamed").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "whole" / f).read_bytes() == (tmp_path / "streamed" / f).read_bytes(), f


def test_removed_jsonl_is_the_same_bytes_whatever_the_batch_size(tmp_path):
    """removed.jsonl kept the order of polars' join per batch: with Curry's pairs stored in curriculum order (not
    by id), `execution.batch_size` 3 wrote the samples' 99 removals in another order than 4096, so the release's
    manifest changed with a knob documented to change no byte. The records follow the order the pairs are read."""
    write_method(tmp_path, "pugc", [pair(f"p{i:02d}", TOPICS[i], "pugc") for i in range(12)])
    curriculum = [pair(f"c{i:02d}", TOPICS[i % 12], "curry", level=0) for i in reversed(range(40))]  # not by id
    write_shards(to_table(curriculum, "pairs"), tmp_path / "data" / "curry" / "pairs" / "level=0", name="pairs",
                 sort=False)
    cfg = export_cfg(methods=["pugc", "curry"], test_fraction=0.0)
    build_release(cfg, tmp_path, tmp_path / "whole", "fp")
    build_release(cfg, tmp_path, tmp_path / "batched", "fp", batch_rows=3)
    whole = (tmp_path / "whole" / "removed.jsonl").read_bytes()
    assert [json.loads(line)["pair_id"] for line in whole.splitlines()] == [f"c{i:02d}" for i in reversed(range(40))]
    assert (tmp_path / "batched" / "removed.jsonl").read_bytes() == whole
    assert (tmp_path / "batched" / "_manifest.json").read_bytes() == (tmp_path / "whole" / "_manifest.json").read_bytes()


def test_stats_and_plot_data(tmp_path):
    standard_methods(tmp_path)
    sig = [{"conversation_id": f"c{i}", "user_turn": 2, "target_turn": 1, "sat": i == 0, "dsat": i > 0,
            "sat_categories": ["Gratitude"] if i == 0 else [], "dsat_categories": ["Revision", "Style"][: i],
            "detector": "rules"} for i in range(3)]
    write_shards(to_table(sig, "signals"), tmp_path / "data" / "wildfeedback" / "signals", name="signals")
    release, stats = build(tmp_path, summary_png=True)
    assert stats["categories"] == {"SAT:Gratitude": 1, "DSAT:Revision": 2, "DSAT:Style": 1}
    assert pl.read_csv(release / "plots" / "categories.csv").rows() == [
        ("SAT:Gratitude", 1), ("DSAT:Revision", 2), ("DSAT:Style", 1)]
    on_disk = json.loads((release / "details.json").read_text())
    assert on_disk == stats and json.loads((release / "stats.json").read_text()) == {  # headline: dvc metrics show
        "rows_in": 48, "pairs": stats["total"], "removed": sum(stats["drops"].values()),
        "removed_by_reason": dict(sorted(stats["drops"].items())), "gates_withheld": 0,
        "gates_lowered": 0}
    assert on_disk["methods"]["curry"] == {"input": 24, "output": 24, "in_all": 24}
    assert "in_all" not in on_disk["methods"]["dove"]  # joint pairs are never in `all`
    # each released pair is counted once: in its method's config, not again in `all`
    assert stats["total"] == sum(m["output"] for m in stats["methods"].values()) < sum(
        n for splits in stats["rows"].values() for n in splits.values())
    assert on_disk["levels"]["curry"] == {"0": 12, "1": 12}
    conf = pl.read_csv(release / "plots" / "confidence.csv")
    assert conf.height == 20 and conf["all"].sum() == 36  # every conditional pair has a confidence in [0, 1]
    assert set(conf.columns) == {"bin", "all", "pugc", "selfie", "curry"}
    levels = pl.read_csv(release / "plots" / "levels.csv")
    assert levels.rows() == [(0, 12), (1, 12)]
    assert (release / "plots" / "summary.png").read_bytes()[:4] == b"\x89PNG"


# --- cleaning rules ------------------------------------------------------------------------------


def test_a_margin_histogram_of_one_value_puts_every_pair_in_its_first_bin(tmp_path):
    """Every margin equal (a method scoring on a fixed scale): the bins span [m, m + 1), not one point repeated."""
    from stages.export_write import write_plots

    pairs = pl.DataFrame({"margin": [2.0, 2.0, 2.0], "confidence": [0.5, 0.5, 0.5], "_config": ["pugc"] * 3})
    write_plots(tmp_path, pairs, {"levels": {}}, 4, [])
    assert pl.read_csv(tmp_path / "margin.csv").rows() == [(2.0, 3, 3), (2.25, 0, 0), (2.5, 0, 0), (2.75, 0, 0)]
    # a margin that is no number (NaN, infinite) is left out, not stretched over the bins
    pairs = pl.DataFrame({"margin": [1.0, float("nan"), float("inf"), 2.0], "confidence": [0.5] * 4, "_config": ["pugc"] * 4})
    write_plots(tmp_path, pairs, {"levels": {}}, 2, [])
    assert pl.read_csv(tmp_path / "margin.csv").rows() == [(1.0, 1, 1), (1.5, 1, 1)]


def test_a_method_not_run_is_one_warning_line_naming_the_stage_once(tmp_path, capsys, caplog):
    """It was a log record, "WARNING stages.export: export: skipping wildfeedback: ..." under the CLI's log
    format: the stage named twice, unlike the other stages' warnings ("WARNING dove: ...", ``say``)."""
    standard_methods(tmp_path)  # no wildfeedback pairs
    caplog.set_level("WARNING")
    build(tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert "WARNING export: skipping wildfeedback: data/wildfeedback/pairs not found (stage not run or not merged " \
           "yet)" in out
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # said once, on the console


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
    kept, drops = dedup_within(light_pairs(df, prompts["_key"]).drop("_same"), sigs, 32, 0.8, LEAVES)
    assert kept["pair_id"].to_list() == ["b"]
    assert drops.select("pair_id", "reason", "configs").rows() == [("a", "duplicate_prompt_near", ["pugc", "all"])]


def test_identical_pairs_within_a_method_keep_one():
    rows = [pair("a", TOPICS[0], "pugc", confidence=0.2, rejected="x"),
            pair("b", TOPICS[0], "pugc", confidence=0.9, rejected="x"),
            pair("c", TOPICS[0], "pugc", confidence=0.1, rejected="y")]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"), pl.int_range(3).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    df = light_pairs(df, prompts["_key"])
    sigs = Signatures(shingle=5, num_perm=64)
    sigs.add(prompts["_key"], prompts["_text"])
    kept, drops = dedup_within(df.drop("_same"), sigs, 16, 0.8, LEAVES)
    assert sorted(kept["pair_id"]) == ["b", "c"]
    assert drops.select("pair_id", "reason").rows() == [("a", "duplicate_pair")]


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


def test_unreadable_method_output_names_the_folder(tmp_path):
    bad = tmp_path / "data" / "pugc" / "pairs"
    bad.mkdir(parents=True)
    pl.DataFrame({"pair_id": ["x"]}).write_parquet(bad / "part-00000-of-00001.parquet")
    with pytest.raises(ExportError, match="data/pugc/pairs.*dvc repro pugc"):
        build(tmp_path, methods=["pugc"])


def test_cli_runs_the_stage_from_the_project_root(tmp_path, monkeypatch, root, capsys):
    from pipeline.cli import main as cli

    standard_methods(tmp_path)
    write_held_out(tmp_path, ["A held-out question nobody trains on?"])
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # dvc runs stages from the project root; paths in params are relative to it
    assert cli(["run", "export"]) == 0
    stats = json.loads((tmp_path / "data" / "release" / "details.json").read_text())
    assert stats["rows"]["all"]["train"] > 0 and verify_release(tmp_path / "data" / "release") == []
    # ../shared is not beside this copy: the optional eval sets are reported, not fatal
    assert stats["decontamination"] and all(v["status"].startswith("unavailable") for v in stats["decontamination"].values())
    # the console says what `dvc repro` built and where (it said only `export: done in N s`)
    rows = {c: sum(s.values()) for c, s in stats["rows"].items()}
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("export: ") and "pairs in" in x)
    assert line.startswith(f"export: {stats['total']} pairs in data/release (")
    assert f"`all` holds {rows['all']} of them" in line and f"curry {rows['curry']}" in line
    assert ", ".join(f"{r} {n}" for r, n in stats["drops"].items()) in line
    assert line.endswith("audit passed; look at it with `prefpipe inspect data/release`")


def test_every_shard_of_every_config_has_one_schema_when_optional_columns_are_null_in_some(tmp_path):
    """Small shards: some hold only pairs whose `level`, `margin` and `confidence` are null. Each must still carry
    the typed columns (a shard with a null-typed column makes `datasets` refuse the config), and every
    conditional config the same schema, so `load_dataset` and streaming read every config whole."""
    import datasets

    standard_methods(tmp_path)
    write_method(tmp_path, "wildfeedback", [pair(f"w{i}", f"Wildfeedback question {i}: {t}", "wildfeedback",
                                                 confidence=None, margin=None) for i, t in enumerate(TOPICS)])
    release = tmp_path / "data" / "release"
    stats = build_release(export_cfg(shard_bytes=1500, row_group_rows=2, test_fraction=0.3,
                                     methods=["wildfeedback", "pugc", "selfie", "curry", "dove"]),
                          tmp_path, release, "fp")
    schemas = {f: pq.read_schema(f) for f in sorted(release.glob("*/*.parquet"))}
    assert len([f for f in schemas if f.parent.name == "all"]) > 2  # several shards per config
    conditional = {s.to_string() for f, s in schemas.items() if f.parent.name != "dove"}
    joint_ = {s.to_string() for f, s in schemas.items() if f.parent.name == "dove"}
    assert len(conditional) == 1 and len(joint_) == 1
    assert not any(str(field.type) == "null" for s in schemas.values() for field in s)
    for name, splits in stats["rows"].items():
        if not splits:
            continue
        loaded = datasets.load_dataset(str(release), name, cache_dir=str(tmp_path / "hf"))
        streamed = datasets.load_dataset(str(release), name, streaming=True)
        assert {s: d.num_rows for s, d in loaded.items()} == splits
        assert {s: sum(1 for _ in d) for s, d in streamed.items()} == splits


def test_the_headline_counts_gates_withheld_and_lowered_from_the_reports():
    """A report that records no verdict (a judge with no gate) is not withheld; a lowered gate is counted."""
    from stages.export_write import release_headline

    stats = {"gates": {"pugc": {"judge": {"passed": False}, "ref": {"passed": True, "lowered": True},
                                "scorer": {"labels": "kept"}},
                       "selfie": "no gate recorded"},
             "methods": {"pugc": {"input": 5}, "selfie": {"input": 2}}, "total": 3, "drops": {"identical": 1}}
    assert release_headline(stats) == {"rows_in": 7, "pairs": 3, "removed": 1, "removed_by_reason": {"identical": 1},
                                       "gates_withheld": 1, "gates_lowered": 1}


def test_a_method_whose_details_record_no_gate_says_so(tmp_path):
    """``"gates": {}`` (a stage with no judge) is "no gate recorded" on the card, not a method with no row at all."""
    from pipeline.metrics import DETAILS
    from stages.export_write import gate_reports

    for method, details in (("pugc", {"gates": {}}), ("selfie", {"gates": None}), ("dove", [1])):
        (tmp_path / "data" / method).mkdir(parents=True)
        (tmp_path / "data" / method / DETAILS).write_text(json.dumps(details))
    assert gate_reports(tmp_path, ["pugc", "selfie", "dove"]) == {m: "no gate recorded" for m in ("pugc", "selfie", "dove")}


def test_the_card_front_matter_lists_configs_with_rows_the_first_default_without_all():
    """A config with no rows is left out (the Hub refuses a config with no data files); with no `all` (a DOVE-only
    release) the first config is the default one `load_dataset` opens."""
    from stages.export_card import front_matter

    configs = front_matter(export_cfg(), {"rows": {"dove": {"train": 3, "test": 1}, "pugc": {}}, "total": 4})["configs"]
    assert configs == [{"config_name": "dove", "default": True, "data_files": [
        {"split": "train", "path": "dove/train-*.parquet"}, {"split": "test", "path": "dove/test-*.parquet"}]}]
    configs = front_matter(export_cfg(), {"rows": {"pugc": {"train": 2}, "selfie": {}, "all": {"train": 2}}, "total": 2})
    assert [(c["config_name"], c.get("default")) for c in configs["configs"]] == [("pugc", None), ("all", True)]


def test_the_card_names_the_params_fingerprints_a_methods_lineage_records_under_either_key():
    from stages.export_card import lineage_summary

    pairs = pl.DataFrame({"_config": ["pugc", "pugc", "curry"],
                          "lineage": ['{"fingerprint": "f1", "judge": "j"}', '{"params_fingerprint": "f2"}', "{}"]})
    assert lineage_summary(pairs) == {"curry": {"models": [], "fingerprints": []},
                                      "pugc": {"models": ["j"], "fingerprints": ["f1", "f2"]}}


def test_the_cards_audit_section_gives_the_verdict_and_counts_the_card_among_the_files():
    from pipeline.audit import CHECKS
    from stages.export_card import _audit_part

    checks = {name: {"description": d, "violations": 0, "by_config": {}, "examples": []} for name, d in CHECKS.items()}
    checks["pii"] = {**checks["pii"], "violations": 1, "by_config": {"pugc": 1}, "examples": ["pugc/p1:lineage"]}
    part = _audit_part({"passed": False, "files": 9, "rows": 40, "checks": checks, "skipped": {}})
    assert "re-read every file of this release (40 rows, 10 files with this card): **FAILED**" in part
    assert "FAIL  pii: 1 (pugc: 1)" in part


def test_a_hidden_or_underscored_folder_in_a_methods_pairs_is_not_read(tmp_path):
    """A shard set being written (``.tmp``) or set aside (``_old``) is not part of the method's pairs."""
    for sub, pid in (("level=0", "c0"), (".tmp", "partial"), ("_old", "stale")):
        write_method(tmp_path, "curry", [pair(pid, f"q {pid}", "curry")], sub=sub)
    assert read_pairs_tree(tmp_path / "data" / "curry" / "pairs", "pairs").column("pair_id").to_pylist() == ["c0"]


def test_the_card_tags_name_trl_and_dpo_once():
    from stages.export_card import front_matter

    cfg = export_cfg()
    cfg = cfg.model_copy(update={"card": cfg.card.model_copy(update={"tags": ["dpo", "synthetic"]})})
    assert front_matter(cfg, {"rows": {}, "total": 0})["tags"] == ["trl", "dpo", "synthetic"]


def _dedup_within(rows: list[dict]):
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"),
                                                             pl.int_range(len(rows)).alias("_seq"))
    prompts = prompt_keys(df, "prompt")
    sigs = Signatures(shingle=5, num_perm=128)
    sigs.add(prompts["_key"], prompts["_text"])
    return dedup_within(light_pairs(df, prompts["_key"]).drop("_same"), sigs, 32, 0.8, LEAVES)


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
    tagged, drops = dedup_across(light_pairs(df, prompts["_key"]).drop("_same"), ["pugc"], sigs, 32, 0.8, LEAVES)
    assert tagged.filter(pl.col("_primary"))["pair_id"].to_list() == ["a1", "a2"]
    assert drops.select("pair_id", "reason").rows() == [("b", "duplicate_prompt_near")]
