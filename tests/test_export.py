"""Export: merge, PII, identical/duplicate/near-duplicate pairs, decontamination, split, release files."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.hub import verify_release
from pipeline.io import write_shards
from pipeline.pii import KINDS, luhn_valid, redact
from pipeline.records import to_table
from stages.export import (
    ExportError,
    Signatures,
    build_release,
    dedup_pairs,
    light_pairs,
    prompt_keys,
    read_pairs_tree,
    redact_messages,
    text_of,
)
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_method


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
    on_disk = json.loads((release / "stats.json").read_text())
    assert on_disk["methods"]["curry"] == {"input": 24, "output": 24}
    assert on_disk["levels"]["curry"] == {"0": 12, "1": 12}
    conf = pl.read_csv(release / "plots" / "confidence.csv")
    assert conf.height == 20 and conf["all"].sum() == 36  # every conditional pair has a confidence in [0, 1]
    assert set(conf.columns) == {"bin", "all", "pugc", "selfie", "curry"}
    levels = pl.read_csv(release / "plots" / "levels.csv")
    assert levels.rows() == [(0, 12), (1, 12)]
    assert (release / "plots" / "summary.png").read_bytes()[:4] == b"\x89PNG"


# --- cleaning rules ------------------------------------------------------------------------------


def test_identical_chosen_and_rejected_are_dropped(tmp_path):
    write_method(tmp_path, "pugc", [
        pair("same", TOPICS[0], "pugc", chosen="Same answer.", rejected="Same answer.  "),
        pair("diff", TOPICS[1], "pugc"),
    ])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert stats["drops"] == {"identical": 1}
    assert removed(release).select("pair_id", "reason").rows() == [("same", "identical")]


def test_duplicate_prompts_across_methods_keep_the_most_confident(tmp_path):
    # ~75 words: one changed word alters 5 of ~70 shingles (estimated Jaccard ~0.87 >= 0.8)
    long = " ".join(TOPICS[4:9]) + " Mention the estates general, the debt crisis, bread prices and enlightenment ideas."
    near = long.replace("bread prices", "grain prices")
    write_method(tmp_path, "pugc", [pair("pugc-a", TOPICS[0], "pugc", confidence=0.9),
                                    pair("pugc-b", long, "pugc", confidence=0.6)])
    write_method(tmp_path, "selfie", [pair("selfie-a", TOPICS[0].upper(), "selfie", confidence=0.5),
                                      pair("selfie-c", TOPICS[2], "selfie", confidence=0.5)])
    # Curry: one prompt, two levels; both survive together, and win the near-duplicate cluster
    write_method(tmp_path, "curry", [pair("curry-0", near, "curry", confidence=0.8, level=0),
                                     pair("curry-1", near, "curry", confidence=0.7, level=1, rejected="meh")],
                 sub="level=0")
    release, stats = build(tmp_path, methods=["pugc", "selfie", "curry"], test_fraction=0.0)
    gone = removed(release)
    assert dict(gone.select("pair_id", "reason").rows()) == {
        "selfie-a": "duplicate_prompt_exact", "pugc-b": "duplicate_prompt_near"}
    detail = json.loads(gone.filter(pl.col("pair_id") == "pugc-b")["detail"][0])
    assert detail["kept_method"] == "curry"
    kept = set(pl.read_parquet(release / "all" / "train-00000-of-00001.parquet")["pair_id"])
    assert kept == {"pugc-a", "selfie-c", "curry-0", "curry-1"}
    assert stats["drops"] == {"duplicate_prompt_exact": 1, "duplicate_prompt_near": 1}


def test_identical_pairs_within_a_method_keep_one():
    rows = [pair("a", TOPICS[0], "pugc", confidence=0.2, rejected="x"),
            pair("b", TOPICS[0], "pugc", confidence=0.9, rejected="x"),
            pair("c", TOPICS[0], "pugc", confidence=0.1, rejected="y")]
    df = pl.from_arrow(to_table(rows, "pairs")).with_columns(pl.lit("pugc").alias("_config"))
    prompts = prompt_keys(df, "prompt")
    df = light_pairs(df, prompts["_key"])
    sigs = Signatures(shingle=5, num_perm=64)
    sigs.add(prompts["_key"], prompts["_text"])
    kept, drops = dedup_pairs(df.drop("_same"), ["pugc"], sigs, 16, 0.8)
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
    assert stats["decontamination"]["mt_bench"] == {"prompts": 160, "status": "ok", "removed": 1}
    assert stats["decontamination"]["arena_hard"]["removed"] == 1
    kept = set(pl.read_parquet(release / "pugc" / "train-00000-of-00001.parquet")["pair_id"])
    assert kept == {"near", "clean"}


def test_decontamination_threshold_and_ngram_are_parameters(tmp_path, real):
    q = json.loads((real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n")[0])
    words = q["turns"][0].split()
    half = " ".join(words[: len(words) // 2 + 1]) + " and then something else entirely about gardening today"
    write_method(tmp_path, "pugc", [pair("half", half, "pugc")])
    _, loose = build(tmp_path, methods=["pugc"], decontamination={"ngram": 5, "threshold": 0.3})
    _, strict = build(tmp_path, methods=["pugc"], decontamination={"ngram": 5, "threshold": 0.9})
    assert loose["drops"] == {"contaminated": 1} and strict["drops"] == {}


def test_decontaminates_dove_rows_on_either_prompt(tmp_path, real):
    q = json.loads((real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl").read_text().split("\n")[1])
    from tests.export_fixtures import joint

    write_method(tmp_path, "dove", [joint("d1", TOPICS[0], q["turns"][0]), joint("d2", TOPICS[1], TOPICS[2])])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert stats["drops"] == {"contaminated": 1} and removed(release)["pair_id"].to_list() == ["d1"]


def test_missing_eval_set_fails_unless_optional(tmp_path):
    write_method(tmp_path, "pugc", [pair("p", TOPICS[0], "pugc")])
    sets = [{"name": "gone", "path": str(tmp_path / "nope.jsonl"), "text_field": "prompt", "id_field": "id",
             "optional": False}]
    with pytest.raises(ExportError, match="'gone'.*nope.jsonl.*optional: true"):
        build(tmp_path, methods=["pugc"], decontamination={"sets": sets})
    sets[0]["optional"] = True
    # a Hub id read through pipeline.io (the suite runs with HF_HUB_OFFLINE=1, so it cannot be fetched)
    sets.append({"name": "hub", "path": "hf://HuggingFaceH4/mt_bench_prompts:train", "text_field": "prompt",
                 "id_field": "prompt_id", "optional": True})
    release, stats = build(tmp_path, methods=["pugc"], decontamination={"sets": sets})
    assert stats["decontamination"]["gone"]["status"].startswith("unavailable")
    assert "OfflineModeIsEnabled" in stats["decontamination"]["hub"]["status"]
    assert "unavailable" in (release / "README.md").read_text()


def test_unreadable_method_output_names_the_folder(tmp_path):
    bad = tmp_path / "data" / "pugc" / "pairs"
    bad.mkdir(parents=True)
    pl.DataFrame({"pair_id": ["x"]}).write_parquet(bad / "part-00000-of-00001.parquet")
    with pytest.raises(ExportError, match="data/pugc/pairs.*dvc repro pugc"):
        build(tmp_path, methods=["pugc"])


# --- PII -----------------------------------------------------------------------------------------

PII_CASES = {
    "email": ("write to jane.doe+test@mail.example.co.uk today", "[REDACTED_EMAIL]"),
    "phone": ("call (555) 123-4567 or +44 20 7946 0958", "[REDACTED_PHONE]"),
    "ipv4": ("server at 192.168.10.254 is down", "[REDACTED_IP]"),
    "ipv6": ("ping 2001:db8:85a3::8a2e:370:7334 now", "[REDACTED_IP]"),
    "credit_card": ("card 4111-1111-1111-1111 expires soon", "[REDACTED_CREDIT_CARD]"),
    "openai_key": ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx1234", "[REDACTED_API_KEY]"),
    "hf_token": ("token hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 here", "[REDACTED_HF_TOKEN]"),
    "aws_access_key": ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "[REDACTED_AWS_KEY]"),
    "github_token": ("git clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x/y", "[REDACTED_GITHUB_TOKEN]"),
    "bearer_token": ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Bearer [REDACTED_TOKEN]"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_pii_each_kind_is_redacted_and_counted(kind):
    text, marker = PII_CASES[kind]
    out, counts = redact(pl.Series([text]), [kind])
    assert marker in out[0], out[0]
    assert counts == {kind: 2 if kind == "phone" else 1}  # the phone case holds two numbers
    leftovers = {"email": "jane.doe", "ipv4": "192.168", "credit_card": "1111", "hf_token": "hf_AbC", "bearer_token": "eyJ"}
    if kind in leftovers:
        assert leftovers[kind] not in out[0]


def test_pii_leaves_look_alikes_alone():
    texts = ["at 12:30:45 use std::vector", "order 123456789 costs 1234.50", "sk-short and hf_short",
             "see section 3.2.1 of the book", "email me at work"]
    out, counts = redact(pl.Series(texts), KINDS)
    assert out.to_list() == texts and sum(counts.values()) == 0
    out, counts = redact(pl.Series(["card 4111 1111 1111 1112"]), ["credit_card"])  # fails the Luhn check
    assert out[0] == "card 4111 1111 1111 1112" and counts == {"credit_card": 0}
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")


def test_pii_redacted_in_every_message_column(tmp_path):
    rows = [pair("p1", "My email is a@b.io, call 555-123-4567", "pugc", chosen="Mail a@b.io", rejected="IP 10.0.0.1")]
    df = pl.from_arrow(to_table(rows, "pairs"))
    out, counts = redact_messages(df, ["prompt", "chosen", "rejected"], KINDS)
    assert counts["email"] == 2 and counts["phone"] == 1 and counts["ipv4"] == 1
    assert out["prompt"][0][0]["content"] == "My email is [REDACTED_EMAIL], call [REDACTED_PHONE]"
    assert out["rejected"][0][0] == {"role": "assistant", "content": "IP [REDACTED_IP]"}
    write_method(tmp_path, "pugc", rows)
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert stats["pii"]["email"] == 2
    released = repr(pq.read_table(release / "pugc" / "train-00000-of-00001.parquet").to_pylist())
    assert "a@b.io" not in released and "[REDACTED_EMAIL]" in released


def test_cli_runs_the_stage_from_the_project_root(tmp_path, monkeypatch, root):
    from pipeline.cli import main as cli

    standard_methods(tmp_path)
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # dvc runs stages from the project root; paths in params are relative to it
    assert cli(["run", "export"]) == 0
    stats = json.loads((tmp_path / "data" / "release" / "stats.json").read_text())
    assert stats["rows"]["all"]["train"] > 0 and verify_release(tmp_path / "data" / "release") == []
    # ../shared is not beside this copy: the optional eval sets are reported, not fatal
    assert all(v["status"].startswith("unavailable") for v in stats["decontamination"].values())
