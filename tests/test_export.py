"""Export: merge, split, release files, plots and the card. Identical/duplicate/near-duplicate pairs are in
test_export_dedup.py, decontamination in test_export_decontam.py."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.dedup import opening_key, prompt_keys, text_of
from pipeline.hub import verify_release
from pipeline.io import write_shards
from pipeline.records import to_table
from stages.export import build_release
from stages.export_read import ExportError, read_pairs_tree
from tests.export_fixtures import (
    TOPICS,
    build,
    export_cfg,
    joint,
    pair,
    removed,
    standard_methods,
    write_held_out,
    write_method,
)

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


def dialogue(opening: str, i: int) -> list[dict[str, str]]:
    """A prompt that goes on from ``opening``: WildFeedback's pair on a later turn of the same conversation."""
    return [{"role": "user", "content": opening}, {"role": "assistant", "content": f"Short answer number {i}."},
            {"role": "user", "content": "That is too short, give me more detail please."}]


def test_the_prompts_of_one_conversation_share_a_split(tmp_path):
    """WildFeedback pairs on two turns of one conversation have the prompts ``[u0]`` and ``[u0, a1, u2]``. Keyed
    on the whole prompt they fell in different splits for 8 of these 12 conversations (main): the train row
    held the test row's whole prompt and its rejected answer ``a1``. Keyed on the first user turn they share one;
    a lone user turn keeps its old split (its opening is the whole prompt)."""
    rows = []
    for i, t in enumerate(TOPICS):
        later = pair(f"wf{i}b", t, "wildfeedback", rejected=f"Second weak answer {i}.")
        later["prompt"] = dialogue(t, i)
        rows += [pair(f"wf{i}a", t, "wildfeedback", rejected=f"Short answer number {i}."), later]
    write_method(tmp_path, "wildfeedback", rows)
    release, stats = build(tmp_path, methods=["wildfeedback"], test_fraction=0.5)
    opening = pl.col("prompt").list.first().struct.field("content")
    split_of = {}
    for split in ("train", "test"):
        for o in pl.read_parquet(release / "wildfeedback" / f"{split}-*.parquet").select(opening)[:, 0]:
            split_of.setdefault(o, set()).add(split)
    assert len(split_of) == 12 and all(len(s) == 1 for s in split_of.values()), split_of
    assert 0 < stats["rows"]["wildfeedback"]["test"] < 24 and json.loads((release / "audit.json").read_text())["passed"]
    lone = pl.DataFrame({"prompt": [pair("x", t, "pugc")["prompt"] for t in TOPICS]})
    assert lone.select(opening_key("prompt"))[:, 0].to_list() == prompt_keys(lone, "prompt")["_key"].to_list()


def test_a_test_prompt_in_a_later_turn_of_a_train_dialogue_leaves_train(tmp_path):
    """A test prompt ("write a poem about cats") can be a later user turn of another conversation's train prompt
    (["hi", a1, "write a poem about cats"]; the openings, which the split keys on, differ): main kept that train row,
    which holds the test prompt and an answer to it, and its audit passed; so was a train prompt that is a test
    dialogue's later turn. Such train rows go (``test_prompt_in_train``, naming the test pair); a turn under
    ``min_words`` words ("continue") joins nothing."""
    from stages.export_split import in_test_split

    short = ["continue", "thanks a lot", "go on then", "more please", "ok next", "and then"]
    rows, opens = [], []
    for i, t in enumerate(TOPICS + short):
        rows.append(pair(f"alone{i}", t, "wildfeedback"))
        later = pair(f"talk{i}", t, "wildfeedback")
        opens.append(f"Hi there, I have question number {i} for you today.")
        later["prompt"] = [{"role": "user", "content": opens[-1]}, {"role": "assistant", "content": "Sure, ask away."},
                           {"role": "user", "content": t}]
        rows.append(later)
    write_method(tmp_path, "wildfeedback", rows)
    release, stats = build(tmp_path, methods=["wildfeedback"], test_fraction=0.5)
    keys = prompt_keys(pl.DataFrame({"prompt": [pair("x", t, "p")["prompt"] for t in TOPICS + short + opens]}), "prompt")
    test = in_test_split(keys["_key"], 0.5, export_cfg().split_salt)
    n = len(TOPICS + short)
    # the test row's prompt is the train row's later turn, or the test row's later turn is the train row's prompt
    leaks = {f"talk{i}": f"alone{i}" for i in range(len(TOPICS)) if test[i] and not test[n + i]}
    leaks |= {f"alone{i}": f"talk{i}" for i in range(len(TOPICS)) if test[n + i] and not test[i]}
    kept_short = [f"{a}{i}" for i in range(len(TOPICS), n) if test[i] != test[n + i]
                  for a in ("talk", "alone") if not test[i if a == "alone" else n + i]]
    assert {p[:4] for p in leaks} == {"talk", "alon"} and kept_short  # the fixture holds every case
    gone = removed(release).filter(pl.col("reason") == "test_prompt_in_train")
    assert sorted(gone["pair_id"]) == sorted(leaks) and stats["drops"]["test_prompt_in_train"] == len(leaks)
    assert {p: json.loads(d) for p, d in gone.select("pair_id", "detail").iter_rows()} == {
        p: {"test_method": "wildfeedback", "test_pair_id": t} for p, t in leaks.items()}
    train = set(pl.read_parquet(release / "wildfeedback" / "train-*.parquet")["pair_id"])
    assert set(kept_short) <= train and not set(leaks) & train
    assert "test_prompt_in_train" in (release / "README.md").read_text()


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
        "rows_in": 48, "pairs": stats["total"], "removed_from_release": sum(stats["drops_from_release"].values()),
        "removed_from_release_by_reason": stats["drops_from_release"],
        "left_out_of_all_only": sum(stats["drops_from_all_only"].values()),
        "left_out_of_all_only_by_reason": stats["drops_from_all_only"], "gates_withheld": 0, "gates_lowered": 0}
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


# --- plots, warnings, errors and the card --------------------------------------------------------


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
             "methods": {"pugc": {"input": 5}, "selfie": {"input": 2}}, "total": 3,
             "drops_from_release": {"identical": 1}, "drops_from_all_only": {"duplicate_prompt_exact": 2}}
    assert release_headline(stats) == {"rows_in": 7, "pairs": 3, "removed_from_release": 1,
                                       "removed_from_release_by_reason": {"identical": 1}, "left_out_of_all_only": 2,
                                       "left_out_of_all_only_by_reason": {"duplicate_prompt_exact": 2},
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


def test_the_card_counts_the_responses_each_input_dataset_s_model_wrote(tmp_path):
    """The card named the models this pipeline ran, never those that wrote the input datasets' responses
    (UltraFeedback completions, Arena answers, WildChat's assistant turns), whose terms of use a release of them
    carries. It counts, per method, the sides whose lineage names a dataset's writer (``written_by``; a side this
    pipeline wrote is null there), a local folder by its last part only, as the models table does."""
    def written(row: dict, by: dict) -> dict:
        return {**row, "lineage": json.dumps({**json.loads(row["lineage"]), "written_by": by})}

    write_method(tmp_path, "pugc", [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:6])])
    write_method(tmp_path, "curry", [written(pair(f"curry{i}", t, "curry", level=0), {
        "chosen": "gpt-4-0314", "rejected": "/home/alice/gen/sft-x"}) for i, t in enumerate(TOPICS[6:])], sub="level=0")
    write_method(tmp_path, "dove", [written(joint(f"dove{i}", f"Dove task {i}: {TOPICS[i]}", f"Other {i}: {TOPICS[i + 1]}"),
                                            {"chosen": "unknown", "rejected": None}) for i in range(4)])
    release, stats = build(tmp_path, test_fraction=0.0)
    n_curry, n_dove = stats["rows"]["curry"]["train"], stats["rows"]["dove"]["train"]
    card = (release / "README.md").read_text()
    part = card.split("Responses taken from the input datasets", 1)[1].split("\n\n", 2)[1]
    assert part.splitlines()[2:] == [f"| curry | `gpt-4-0314` | {n_curry} |", f"| curry | `local:sft-x` | {n_curry} |",
                                     f"| dove | `unknown` | {n_dove} |"]
    assert n_curry == 6 and n_dove > 0 and "/home/alice" not in card


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


def test_a_gate_scored_on_contrasts_shows_its_weakest_contrast_beside_its_overall_count(tmp_path):
    from stages.export_card import _gate_rows
    from stages.export_write import gate_reports

    gate = {"model": "tiny", "accuracy": 0.5, "correct": 23, "probes": 36, "weakest": "good_vs_off_topic",
            "contrasts": {"good_vs_off_topic": 0.5, "good_vs_contradicting": 0.8333}, "min_accuracy": 0.0,
            "labels": "used, gate lowered"}
    # 23/36 is 0.64: shown bare beside 0.50, the two figures read as a contradiction
    (tmp_path / "data" / "pugc").mkdir(parents=True)
    (tmp_path / "data" / "pugc" / "details.json").write_text(json.dumps({"gates": {"scorer": gate}}))
    assert _gate_rows(gate_reports(tmp_path, ["pugc"]))[0][3] == "0.50 (weakest: `good_vs_off_topic`; 23/36 overall)"
