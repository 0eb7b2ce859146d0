"""Curry-DPO (stages/curry.py) as a stage: the level folders it writes, counts on real OpenAssistant and
Stack Exchange data, a trainer reading the curriculum in order, and a misspelt input path. The pairing
rules on hand-written cases are in test_curry.py."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SourceError
from pipeline.io import read_table, verify_shards, write_shards
from pipeline.records import check_table, to_table
from stages.curry import curriculum_files, run
from tests.adapter_sources import SE_IMAGE_ANSWERS, SE_IMAGE_QUESTIONS, SE_THREAD_REFERENCES, run_source
from tests.curry_fakes import build, cfg, execution, prompt, resp

OASST = Path("oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl")
POSTS = Path("stackexchange_coffee/Posts.xml")


def test_run_writes_one_shard_set_per_level_in_curriculum_order(tmp_path, capsys):
    prompts = [prompt(f"p{i}") for i in range(5)]
    responses = [resp(f"p{i}", f"p{i}-{k}", float(s)) for i in range(5) for k, s in enumerate([5, 3, 2, 2])]
    write_shards(to_table(prompts, "prompts"), tmp_path / "in" / "prompts", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 tmp_path / "in" / "responses", name="responses")
    c = cfg(inputs=[{"prompts": str(tmp_path / "in" / "prompts"), "responses": str(tmp_path / "in" / "responses"),
                    "scores": "rated"}])
    out = tmp_path / "curry"
    m = run(c, execution(), out)
    pairs = out / "pairs"
    assert sorted(p.name for p in pairs.iterdir()) == ["_levels.json", "level=0", "level=1"]
    index = json.loads((pairs / "_levels.json").read_text())
    assert index["rows"] == 15 and [lv["rows"] for lv in index["levels"]] == [10, 5]
    for sub in ("level=0", "level=1"):
        assert verify_shards(pairs / sub) == []
        assert set(read_table(pairs / sub, "pairs").column("level").to_pylist()) == {int(sub[-1])}
    files = curriculum_files(pairs)
    assert [f.parent.name for f in files] == ["level=0", "level=1"]
    whole = pa.concat_tables(pq.read_table(f) for f in files)
    assert whole.column("level").to_pylist() == [0] * 10 + [1] * 5
    # within a level the files keep the seeded shuffle of build_pairs, not the id order of a plain shard set
    shuffled = [r["pair_id"] for r in build(prompts, responses)[0]]
    assert whole.column("pair_id").to_pylist() == shuffled and shuffled[:10] != sorted(shuffled[:10])
    # Readers that walk the level folders (export) see each pair once: no top-level shard set, and a reader of
    # one shard set pointed at the tree is told so rather than reading it as empty.
    with pytest.raises(SourceError, match=r"holds shard sets in sub-folders \(level=0, level=1\)"):
        read_table(pairs, "pairs")
    assert json.loads((out / "details.json").read_text()) == m
    assert json.loads((out / "metrics.json").read_text()) == {"rows_in": m["responses"]["read"], "pairs": 15}
    assert m["pairs"]["per_source"] == {"hand": 15} and m["pairs"]["per_level"] == {"0": 10, "1": 5, "2": 0}
    # the console says what it made, as the other stages do (it said only `curry: done`)
    assert capsys.readouterr().out.splitlines() == [
        f"curry: 20 responses -> 15 pairs (per level: 0 10, 1 5, 2 0); details in "
        f"{out / 'details.json'}"]
    before = {f: (pairs / f).read_bytes() for f in [x["path"] for x in index["files"]]}
    run(c, execution(), out)
    assert {f: (pairs / f).read_bytes() for f in before} == before  # byte-identical rerun


# --- real data -----------------------------------------------------------------------------------------
# The stage's input comes from the real ingest adapters (stages/ingest.py, pipeline/adapters.py). The
# expected counts come from small independent readers of the raw files that follow the adapters'
# documented conventions: OpenAssistant: a prompter message with >= 2 ranked assistant replies is a
# prompt (the path down to it); its ranked replies score 1 - position / (n - 1) (best 1.0, worst 0.0);
# deleted or failed-review messages are pruned with their replies. Stack Exchange: a question is a
# prompt, its answers are responses scored by their vote Score.


def ingested(path: Path, fmt: str) -> tuple[list[dict], list[dict]]:
    result = run_source(path, fmt, "rated", name=fmt)
    return result.rows["prompts"], result.rows["responses"]


def oasst_scores(path: Path) -> list[dict]:
    responses = []

    def usable(m):
        return m.get("deleted") is not True and m.get("review_result") is not False

    def walk(m):
        kept = [r for r in m.get("replies") or [] if usable(r)]
        ranked = sorted((r for r in kept if isinstance(r.get("rank"), int)), key=lambda r: r["rank"])
        if m["role"] == "prompter" and len(ranked) >= 2:
            responses.extend({"prompt_id": m["message_id"], "response_id": r["message_id"],
                              "score": 1 - pos / (len(ranked) - 1)} for pos, r in enumerate(ranked))
        for r in kept:
            walk(r)

    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            root = json.loads(line)["prompt"]
            if usable(root):
                walk(root)
    return responses


def stackexchange_scores(path: Path) -> list[dict]:
    """Answers by vote Score, less those ingest rejects: the 19 that lean on posts of their thread, the 30 that show
    an image and the answers of the 15 questions that show one."""
    return [{"prompt_id": el.get("ParentId"), "response_id": el.get("Id"), "score": float(el.get("Score"))}
            for _, el in ET.iterparse(path) if el.tag == "row" and el.get("PostTypeId") == "2"
            and el.get("Id") not in SE_THREAD_REFERENCES | SE_IMAGE_ANSWERS and el.get("ParentId") not in SE_IMAGE_QUESTIONS]


def expected(responses: list[dict], pairing: str, n_levels: int = 3) -> dict[str, int]:
    """Pairs per level by a plain per-prompt loop (an independent implementation of the rules)."""
    groups = defaultdict(list)
    for r in responses:
        if r["score"] is not None:
            groups[r["prompt_id"]].append(r["score"])
    counts: dict[str, int] = defaultdict(int)
    for scores in groups.values():
        scores.sort(reverse=True)
        idx = [(0, k) for k in range(1, len(scores))] if pairing == "best_vs_rest" else \
            [(i, k) for i in range(len(scores)) for k in range(i + 1, len(scores))]
        gaps = [scores[i] - scores[k] for i, k in idx if scores[i] - scores[k] > 0]
        distinct = sorted(set(gaps), reverse=True)
        for g in gaps:
            counts[str(distinct.index(g) * n_levels // max(len(distinct), n_levels))] += 1
    return dict(counts)


def test_real_openassistant_ranked_replies(real):
    prompts, responses = ingested(real / OASST, "oasst")
    raw = oasst_scores(real / OASST)
    assert (len(prompts), len(responses), len(raw)) == (212, 641, 641)  # SOURCES.md: 641 ranked sibling replies
    rows, m = build(prompts, responses)
    want = expected(raw, "best_vs_rest")
    assert {k: v for k, v in m["pairs"]["per_level"].items() if v} == want
    # 641 ranked - 212 prompts = 429 pairs; prompts with 6+ ranked replies put two gaps in a level.
    assert want == {"0": 225, "1": 164, "2": 40}
    assert m["responses"]["dropped"] == {} and m["pairs"]["dropped"] == {"gap_le_min_gap": 0}
    # Each prompt's best-vs-worst pair has gap 1.0 on the 0..1 rank scale and is in level 0.
    assert sorted(r["level"] for r in rows if r["margin"] == 1.0) == [0] * 212
    assert [r["level"] for r in rows] == sorted(r["level"] for r in rows)
    assert all(r["prompt"][-1]["role"] == "user" and r["source"] == "oasst" for r in rows)
    rows_all, m_all = build(prompts, responses, pairing="all")
    assert m_all["pairs"]["per_level"] == {**{"0": 0, "1": 0, "2": 0}, **expected(raw, "all")}
    assert m_all["pairs"]["written"] == len(rows_all) == 754


def test_real_stackexchange_answers_by_score(real):
    prompts, responses = ingested(real / POSTS, "stackexchange")
    raw = stackexchange_scores(real / POSTS)
    # Ingest rejects 19 of the 327 answers for referring to comments or other answers, 30 for showing an image, and
    # the 15 questions that show one with their 19 other answers (tests/adapter_sources.py).
    assert (len(prompts), len(responses), len(raw)) == (210, 259, 259)
    rows, m = build(prompts, responses)
    want = expected(raw, "best_vs_rest")
    assert {k: v for k, v in m["pairs"]["per_level"].items() if v} == want
    assert want == {"0": 58, "1": 11, "2": 2} and len(rows) == 71
    # 57 questions have >= 2 answers: 259 answers - 183 answered questions = 76 candidate (R1, Rk)
    # pairs, 5 of them ties on Score.
    assert m["pairs"]["candidates"] == 76 and m["pairs"]["dropped"] == {"gap_le_min_gap": 5}
    assert m["prompts"]["dropped"]["fewer_than_2_scored"] == 126
    quantile = build(prompts, responses, levels="quantile")[0]
    gaps = sorted((r["margin"] for r in rows), reverse=True)
    want_q = defaultdict(int)
    for g in gaps:  # rank = how many gaps are strictly larger
        want_q[sum(x > g for x in gaps) * 3 // len(gaps)] += 1
    got_q = defaultdict(int)
    for r in quantile:
        got_q[r["level"]] += 1
    assert got_q == want_q == {0: 26, 1: 25, 2: 20}


# --- a trainer reads the curriculum in order ---------------------------------------------------------


@pytest.mark.e2e
def test_trl_dpo_trainer_gets_batches_level_by_level(tmp_path):
    """The release order, loaded with ``datasets`` and trained with TRL's DPOTrainer and sequential
    sampling on the tiny model: every batch holds one level, and levels arrive 0, 1, 2."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    prompts = [prompt(f"p{i}", f"How do I brew coffee method {i}?") for i in range(8)]
    responses = [resp(f"p{i}", f"p{i}-{k}", float(s), f"Answer {k} for method {i}.")
                 for i in range(8) for k, s in enumerate([9, 6, 4, 1])]
    write_shards(to_table(prompts, "prompts"), tmp_path / "in" / "prompts", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 tmp_path / "in" / "responses", name="responses")
    c = cfg(inputs=[{"prompts": str(tmp_path / "in" / "prompts"), "responses": str(tmp_path / "in" / "responses"),
                    "scores": "rated"}])
    run(c, execution(), tmp_path / "curry")
    pairs = tmp_path / "curry" / "pairs"
    files = [str(f) for f in curriculum_files(pairs)]
    assert [Path(f).parent.name for f in files] == ["level=0", "level=1", "level=2"]
    ds = Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    assert ds["level"] == [0] * 8 + [1] * 8 + [2] * 8

    class LevelProbe(DPOTrainer):
        """Keeps ``level`` through TRL's column pruning so the collator can record it."""

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "level" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "level"]

    path = resolve_model("tiny")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=4, max_steps=6,
                     train_sampling_strategy="sequential", learning_rate=1e-4, max_length=128,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                     dataloader_num_workers=0)
    trainer = LevelProbe(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(path))
    seen: list[list[int]] = []
    collate = trainer.data_collator

    def recording(examples):
        seen.append([e.pop("level") for e in examples])
        return collate(examples)

    trainer.data_collator = recording
    trainer.train()
    assert trainer.state.global_step == 6
    assert seen[:6] == [[0] * 4, [0] * 4, [1] * 4, [1] * 4, [2] * 4, [2] * 4]
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_a_misspelt_input_path_names_its_params_key(tmp_path):
    """`curry.inputs[1].prompts: data/selfie/prompt` (a typo) said only "data/selfie/prompt: not found; run
    the stage that writes it first": the key tells where to fix it when no stage writes that folder."""
    from pipeline.io import SourceError
    from stages.curry import load_inputs

    empty = [{"prompts": str(tmp_path / "p"), "responses": str(tmp_path / "r")}]
    for name in ("p", "r"):
        write_shards(to_table([], "prompts" if name == "p" else "responses"), tmp_path / name,
                     name="prompts" if name == "p" else "responses")
    with pytest.raises(SourceError) as err:
        load_inputs([*empty, {"prompts": str(tmp_path / "prompt"), "responses": str(tmp_path / "r")}])
    assert str(err.value) == (f"curry.inputs[1].prompts: {tmp_path / 'prompt'}: not found; run the stage that writes "
                              "it first (`dvc repro`), or correct curry.inputs[1].prompts in params.yaml")


def test_pairs_ranked_from_a_models_scores_carry_that_judges_gate(tmp_path):
    """Curry-DPO re-ranks PUGC's and Selfie's scored responses: a pair from a chance-level judge's scores
    (the samples' tiny scorer, its gate lowered) said "no gate recorded" on the release card. The gates
    the scoring stage recorded beside its responses come along, marked ``from``, and the release counts
    each judge once (its own stage's report)."""
    from stages.export_write import gate_reports, release_headline

    pugc = tmp_path / "data" / "pugc"
    prompts = [prompt(f"q{i}") for i in range(2)]
    responses = [resp(f"q{i}", f"q{i}-{k}", float(s), scorer="pugc:tiny") for i in range(2)
                 for k, s in enumerate([4.0, 1.0])]
    write_shards(to_table(prompts, "prompts"), pugc / "queries", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 pugc / "responses", name="responses")
    lowered = {"stage": "pugc", "role": "scorer", "model": "tiny", "probes": 36, "correct": 18, "accuracy": 0.5,
               "min_accuracy": 0.0, "passed": True, "lowered": True, "labels": "used, gate lowered"}
    (pugc / "details.json").write_text(json.dumps({"gates": {"scorer": lowered}}))
    rated = {"prompts": str(pugc / "queries"), "responses": str(pugc / "responses"), "scores": "rated"}
    assert run(cfg(inputs=[rated]), execution(), tmp_path / "rated")["gates"] == {}  # human ratings: no judge
    m = run(cfg(inputs=[{**rated, "scores": "model"}]), execution(), tmp_path / "data" / "curry")
    assert m["pairs"]["written"] == 2
    assert m["gates"] == {"pugc.scorer": {**lowered, "from": str(pugc / "responses"), "pairs_ranked": 2}}
    gates = gate_reports(tmp_path, ["pugc", "curry"])
    assert gates["curry"]["pugc.scorer"]["labels"] == "used, gate lowered"
    stats = {"gates": gates, "methods": {"pugc": {"input": 0}, "curry": {"input": 2}}, "total": 2, "drops": {},
             "drops_from_release": {}, "drops_from_all_only": {}}
    assert release_headline(stats)["gates_lowered"] == 1  # PUGC's scorer, not once more through Curry-DPO


def test_a_judge_behind_none_of_the_pairs_is_not_listed(tmp_path):
    """An input whose judge failed its gate (its scores withheld: none of its responses is ranked) gave
    Curry-DPO no pair, yet its gate was copied into curry's details and the release card read "withheld
    (failed)" for Curry-DPO. Only the judges behind at least one pair are listed, each with how many of
    Curry-DPO's pairs came from its input's scores, on the card too."""
    from stages.export_card import _gate_rows
    from stages.export_write import gate_reports

    def scored_set(stage: str, scores: list[float | None], gate: dict) -> dict[str, str]:
        folder = tmp_path / "data" / stage
        write_shards(to_table([prompt(f"{stage}{i}") for i in range(2)], "prompts"), folder / "prompts", name="prompts")
        rows = [resp(f"{stage}{i}", f"{stage}{i}-{k}", s, scorer=f"{stage}:tiny") for i in range(2)
                for k, s in enumerate(scores)]
        write_shards(check_table(pl.DataFrame(rows, schema_overrides={"detail": pl.String, "score": pl.Float64})
                                 .to_arrow(), "responses"), folder / "responses", name="responses")
        (folder / "details.json").write_text(json.dumps({"gates": {gate["role"]: gate}}))
        return {"prompts": str(folder / "prompts"), "responses": str(folder / "responses"), "scores": "model"}

    passed = {"stage": "pugc", "role": "scorer", "model": "m", "probes": 36, "correct": 30, "accuracy": 0.8333,
              "min_accuracy": 0.75, "passed": True, "lowered": False, "labels": "used"}
    failed = {"stage": "selfie", "role": "reward", "model": "m@1 vs m", "probes": 24, "correct": 10,
              "accuracy": 0.4167, "min_accuracy": 0.75, "passed": False, "lowered": False, "labels": "withheld"}
    inputs = [scored_set("pugc", [4.0, 1.0], passed), scored_set("selfie", [None, None], failed)]
    m = run(cfg(inputs=inputs), execution(), tmp_path / "data" / "curry")
    assert m["gates"] == {"pugc.scorer": {**passed, "from": inputs[0]["responses"], "pairs_ranked": 2}}
    assert [d["pairs"] for d in m["pairs"]["per_input"]] == [2, 0]
    rows = _gate_rows({"curry": gate_reports(tmp_path, ["curry"])["curry"]})
    assert rows == [["curry", "pugc.scorer", "m", "0.83 (30/36)", 0.75, "used; behind 2 of curry's input pairs"]]


def test_two_inputs_ranked_from_one_judges_scores_name_both_responses_folders(tmp_path):
    """Two Curry inputs reading one judge's scores (``pugc.scorer``, recorded beside both responses folders)
    share its entry: ``pairs_ranked`` was summed but ``from`` named only the last input's folder, so the
    release's details named one source of the pairs. Now every folder is named (sorted); one folder read
    twice is still named once, as a path."""
    from stages.curry_upstream import scorer_gates
    from stages.export_write import gate_reports, release_headline

    gate = {"stage": "pugc", "role": "scorer", "model": "tiny", "probes": 36, "correct": 18, "accuracy": 0.5,
            "min_accuracy": 0.0, "passed": True, "lowered": True, "labels": "used, gate lowered"}
    spec = {}
    for name in ("pugc_b", "pugc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "details.json").write_text(json.dumps({"gates": {"scorer": gate}}))
        spec[name] = {"responses": str(tmp_path / name / "responses"), "scores": "model"}
    both = scorer_gates([spec["pugc_b"], spec["pugc"]], [3, 2])
    assert both == {"pugc.scorer": {**gate, "from": [spec["pugc"]["responses"], spec["pugc_b"]["responses"]],
                                    "pairs_ranked": 5}}
    assert scorer_gates([spec["pugc"], spec["pugc"]], [3, 2]) == {
        "pugc.scorer": {**gate, "from": spec["pugc"]["responses"], "pairs_ranked": 5}}
    # the release copies the list and still counts the judge once (its own stage's report, not Curry-DPO's copy)
    (tmp_path / "data" / "curry").mkdir(parents=True)
    (tmp_path / "data" / "curry" / "details.json").write_text(json.dumps({"gates": both}))
    gates = gate_reports(tmp_path, ["curry"])
    assert gates["curry"]["pugc.scorer"]["from"] == both["pugc.scorer"]["from"]
    stats = {"gates": gates, "methods": {"curry": {"input": 5}}, "total": 5, "drops": {},
             "drops_from_release": {}, "drops_from_all_only": {}}
    assert release_headline(stats)["gates_lowered"] == 0  # counted with PUGC's own report, not here


def test_pairs_ranked_from_a_models_scores_name_the_models_behind_them(tmp_path):
    """The release card showed "—" as Curry-DPO's models although most of its samples pairs were ranked by
    PUGC's judge: Curry-DPO re-reads another stage's scored responses and its lineage named only the scorer.
    A pair from a ``scores: model`` input now names that stage's model roles in its lineage, and details.json
    (so the card's weights table) lists them with their weights identity; a rated input's pairs name none."""
    from stages.export_card import lineage_summary
    from stages.export_write import model_reports

    pugc, ingest = tmp_path / "data" / "pugc", tmp_path / "data" / "ingest"
    write_shards(to_table([prompt(f"q{i}") for i in range(2)], "prompts"), pugc / "queries", name="prompts")
    write_shards(to_table([prompt(f"h{i}") for i in range(2)], "prompts"), ingest / "prompts", name="prompts")
    for folder, scorer, pid in ((pugc, "pugc:judge-m", "q"), (ingest, "rated", "h")):
        rows = [resp(f"{pid}{i}", f"{pid}{i}-{k}", s, scorer=scorer) for i in range(2) for k, s in enumerate([4.0, 1.0])]
        write_shards(check_table(pl.DataFrame(rows, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                     folder / "responses", name="responses")
    models = {"generator": {"model": "gen-m", "identity": "hub:" + "a" * 40},
              "judge": {"model": "judge-m", "identity": "hub:" + "b" * 40},
              "policy": {"model": "policy-m", "identity": "hub:" + "c" * 40}}
    (pugc / "details.json").write_text(json.dumps({"models": models}))
    rated = {"prompts": str(ingest / "prompts"), "responses": str(ingest / "responses"), "scores": "rated"}
    scored = {"prompts": str(pugc / "queries"), "responses": str(pugc / "responses"), "scores": "model"}

    human = tmp_path / "human"
    m = run(cfg(inputs=[rated]), execution(), human / "data" / "curry")
    assert m["pairs"]["written"] == 2 and m["models"] == {}
    pairs = pl.concat(map(pl.read_parquet, curriculum_files(human / "data" / "curry" / "pairs"))).with_columns(
        _config=pl.lit("curry"))
    assert lineage_summary(pairs)["curry"]["models"] == []  # human ratings: no model named
    assert model_reports(human, ["curry"]) == {}

    m = run(cfg(inputs=[rated, scored]), execution(), tmp_path / "data" / "curry")
    assert m["pairs"]["written"] == 4
    assert m["models"] == {f"pugc.{role}": {**r, "from": scored["responses"], "pairs_ranked": 2}
                           for role, r in models.items()}
    pairs = pl.concat(map(pl.read_parquet, curriculum_files(tmp_path / "data" / "curry" / "pairs"))).with_columns(
        _config=pl.lit("curry"))
    named = {json.loads(x)["prompt_id"]: json.loads(x).get("models") for x in pairs["lineage"]}
    assert named == {"q0": {"pugc.generator": "gen-m", "pugc.judge": "judge-m", "pugc.policy": "policy-m"},
                     "q1": {"pugc.generator": "gen-m", "pugc.judge": "judge-m", "pugc.policy": "policy-m"},
                     "h0": None, "h1": None}
    assert lineage_summary(pairs)["curry"]["models"] == ["gen-m", "judge-m", "policy-m"]  # the card's models column
    assert model_reports(tmp_path, ["curry"])["curry"]["pugc.judge"] == {"model": "judge-m", "identity": "hub:" + "b" * 40}
