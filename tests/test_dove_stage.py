"""DOVE stage end to end on real Anthropic-helpful data: scripted and tiny judges, Ray, equal sides, contradictions
and the judge gate."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from pipeline.io import read_table, write_shards
from pipeline.records import to_table
from stages import dove as D
from stages import dove_items as I
from stages import dove_judge as J
from tests.dove_fakes import ScriptedJudge, comparisons, dove_cfg, helpful_tables, load_helpful, outputs, user


@pytest.fixture(scope="module")
def helpful(real):
    return load_helpful(real)


# --- the stage end to end ------------------------------------------------------------------------


def _stage_params(params, **dove_over):
    dove = dove_cfg(**{"inputs": [{"prompts": "data/ingest/prompts", "responses": "data/ingest/responses"}],
                       "pair_sources": ["hh_cond"], **dove_over})
    return params.model_copy(update={"dove": dove, "execution": params.execution.model_copy(update={"checkpoint_rows": 64})})


def _write_helpful(tmp_path, sft, cond):
    """The helpful slice as ingest's prompts / responses / pairs shard sets under ``tmp_path``."""
    prompts, responses, pairs = helpful_tables(sft, cond)
    for name, table in (("prompts", prompts), ("responses", responses), ("pairs", pairs)):
        write_shards(table, tmp_path / "data" / "ingest" / name, name=name)
    return prompts, responses, pairs


def test_main_on_real_helpful_slice_with_scripted_judge(helpful, params, tmp_path, monkeypatch, capsys):
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    prompts, responses, pairs = _write_helpful(tmp_path, sft[:60], cond[:30])
    engine = ScriptedJudge()
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: engine, raising=False)
    p = _stage_params(params)
    D.main(p)
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    out = read_table(tmp_path / "data/dove/pairs", "joint_pairs")
    assert metrics["pairs_written"] == out.num_rows == metrics["consistent"]
    assert metrics["conditional_comparisons"] == 30 and metrics["instructions"] == 60
    assert metrics["comparisons"] == metrics["joint_comparisons"] + 30
    assert metrics["judged"] + metrics["failures"] == metrics["comparisons"]
    assert metrics["position_consistency_rate"] == metrics["consistent"] / metrics["judged"]
    # the console says what it made, as the other stages do (it said only `dove: done`)
    assert (f"dove: 60 instructions -> {metrics['comparisons']} comparisons -> {out.num_rows} pairs "
            f"({metrics['ties']} ties, {metrics['failures']} failed, 0 labels withheld); details in data/dove/details.json"
            ) in capsys.readouterr().out.splitlines()
    first = (tmp_path / "data/dove/pairs").glob("*.parquet").__next__().read_bytes()
    D.main(p)  # identical inputs + params: identical bytes
    assert (tmp_path / "data/dove/pairs").glob("*.parquet").__next__().read_bytes() == first
    assert not (tmp_path / ".prefpipe/checkpoints/dove/judge").exists()


def test_main_rejects_unknown_pair_source(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts, responses, pairs = _write_helpful(tmp_path, [{"instruction": "Hi", "response": "Hello"}], [])
    with pytest.raises(ValueError, match=r"dove.pair_sources: no pairs with source \['hh_cond'\]"):
        D.main(_stage_params(params))


def test_a_prompt_budget_below_the_judge_template_fails_before_any_judging(helpful, params, tmp_path, monkeypatch):
    """max_prompt_chars: 300 used to cut every instruction and output to " [...]": the judge (and its probes)
    answered on empty texts, ties or labels, without a word. The template's own text is the floor."""
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    judge = ScriptedJudge()
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: judge, raising=False)
    floor = max(len(J.judge_prompt(t, "", "", "", "")) for t in D.judge_templates().values())
    with pytest.raises(J.StageError, match=rf"^dove.max_prompt_chars \({floor}\) leaves no room for the texts: "
                                           rf"the judge's prompt template alone is {floor} characters"):
        D.main(_stage_params(params, max_prompt_chars=floor))
    assert judge.calls == [] and not (tmp_path / "data/dove/pairs").exists()
    D.main(_stage_params(params, max_prompt_chars=floor + 400))  # room for the texts, cut: judged
    assert judge.calls


def test_main_fails_loudly_when_the_judge_fails_everything(helpful, params, tmp_path, monkeypatch):
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    prompts, responses, pairs = _write_helpful(tmp_path, sft[:10], cond[:5])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: ScriptedJudge(boom=" "), raising=False)
    with pytest.raises(D.DoveError, match=r"dove: (\d+) of \1 judgments failed \(100% .*top reasons: engine error \(\1\)"):
        D.main(_stage_params(params))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())  # written first, for inspection
    assert metrics["failures"] == metrics["comparisons"] >= 10 and metrics["pairs_written"] == 0
    assert read_table(tmp_path / "data/dove/rejects", "rejects").num_rows == metrics["failures"]


def test_main_with_no_items_writes_empty_outputs(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts, responses, pairs = _write_helpful(tmp_path, [], [])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: ScriptedJudge(), raising=False)
    D.main(_stage_params(params, pairing="similar").model_copy(update={"dove": dove_cfg(
        inputs=[{"prompts": "data/ingest/prompts", "responses": "data/ingest/responses"}], pairing="similar")}))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    assert (metrics["items"]["items"], metrics["comparisons"], metrics["pairs_written"]) == (0, 0, 0)
    assert read_table(tmp_path / "data/dove/pairs", "joint_pairs").num_rows == 0


def test_tiny_judge_on_real_helpful_slice(helpful, params, tmp_path, monkeypatch):
    """The real engine path: the built-in tiny model judges a slice of Anthropic-helpful through map_batches."""
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    prompts, responses, pairs = _write_helpful(tmp_path, sft[:6], cond[:3])
    p = _stage_params(params, position_calibration="median")
    D.main(p)
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    assert metrics["judge"] == params.llm.model == "tiny"
    gate = metrics["gates"]["judge"]
    assert (gate["lowered"], gate["passed"], gate["labels"], gate["probes"]) == (True, True, "used, gate lowered", 48)
    assert metrics["failures"] == 0 and metrics["comparisons"] == metrics["joint_comparisons"] + 3
    assert metrics["judged"] == metrics["consistent"] + metrics["ties"] == metrics["comparisons"]
    assert 0.0 <= metrics["position_a_rate"] <= 1.0 and math.isfinite(metrics["position_bias_logit"])
    out = read_table(tmp_path / "data/dove/pairs", "joint_pairs").to_pylist()
    assert len(out) == metrics["pairs_written"]
    for row in out:
        lineage = json.loads(row["lineage"])
        assert lineage["judge"] == "tiny" and 0.5 < row["confidence"] <= 1.0
        assert {lineage["chosen_item"], lineage["rejected_item"]} <= {*{f"{r['prompt_id']}:sft" for r in responses.to_pylist()},
                                                                     *{f"{q['pair_id']}:{s}" for q in pairs.to_pylist()
                                                                       for s in ("chosen", "rejected")}}


@pytest.mark.ray
def test_ray_backend_gives_the_same_pairs_as_local(helpful, params, tmp_path, monkeypatch, ray_cluster):
    sft, cond = helpful
    prompts, responses, pairs = helpful_tables(sft[:3], cond[:1])
    outputs_by_backend = {}
    for backend in ("local", "ray"):
        work = tmp_path / backend
        monkeypatch.chdir(work.mkdir() or work)
        for name, table in (("prompts", prompts), ("responses", responses), ("pairs", pairs)):
            write_shards(table, work / "data" / "ingest" / name, name=name)
        p = _stage_params(params, position_calibration="median")
        D.main(p.model_copy(update={"execution": p.execution.model_copy(update={"backend": backend})}))
        metrics = json.loads((work / "data/dove/details.json").read_text())
        outputs_by_backend[backend] = (read_table(work / "data/dove/pairs", "joint_pairs").to_pylist(),
                                       {k: metrics[k] for k in ("comparisons", "consistent", "ties", "failures")})
    assert outputs_by_backend["ray"] == outputs_by_backend["local"]
    assert outputs_by_backend["local"][1]["failures"] == 0


# --- equal sides, contradictions, the judge gate -------------------------------------------------


def test_comparisons_whose_sides_are_equal_up_to_whitespace_are_dropped():
    """chosen == rejected must not slip through: two items that differ only in whitespace are distinct
    items, and today's code compared them (conditional) or paired them across instructions (joint)."""
    prompts = to_table([
        {"prompt_id": "p1", "messages": user("Name a fruit."), "source": "s", "origin_id": "1"},
        {"prompt_id": "p2", "messages": user("Say  hi."), "source": "s", "origin_id": "2"},
        {"prompt_id": "p3", "messages": user("Say hi."), "source": "s", "origin_id": "3"},
    ], "prompts")
    responses = to_table([
        {"prompt_id": "p1", "response_id": "r1", "text": "Apple.", "generator": "m"},
        {"prompt_id": "p1", "response_id": "r2", "text": "Apple. \n", "generator": "m"},
        {"prompt_id": "p2", "response_id": "r1", "text": "Hi there!", "generator": "m"},
        {"prompt_id": "p3", "response_id": "r1", "text": "Hi  there!", "generator": "m"},
    ], "responses")
    scored, _ = I.items_from_scored(prompts, responses)
    items, _, _ = I.normalise_items([scored])
    assert items.height == 4  # exact duplicates only are merged
    comps, m = D.build_comparisons(items, dove_cfg(pairing="random", pairs_per_instruction=2))
    sides = {(r["instruction_text_1"], r["response_1"], r["instruction_text_2"], r["response_2"])
             for r in comps.iter_rows(named=True)}
    assert not any(" ".join(i1.split()) == " ".join(i2.split()) and " ".join(r1.split()) == " ".join(r2.split())
                   for i1, r1, i2, r2 in sides)
    # The Apple pair (conditional) and the "Say hi." pair (joint) are gone; the rest was judged.
    assert m["dropped_same_text"] == 2 and comps.height == m["joint_comparisons"] + m["conditional_comparisons"]
    assert m["conditional_comparisons"] == 0


def _decided(rows, outcomes, conditional=False):
    comps = comparisons(rows, conditional=conditional)
    return comps.with_columns(outcome=pl.Series(outcomes), p_first_ab=pl.lit(0.8), p_first_ba=pl.lit(0.8),
                              q_first_ab=pl.lit(0.8), q_first_ba=pl.lit(0.8), confidence=pl.lit(0.8),
                              truncated=pl.lit(False), failure=pl.lit(None, pl.String))


def test_instructions_are_numbered_densely_with_their_first_row_and_count():
    items = pl.DataFrame({"instruction_text": ["a", "a", "a", "b", "c", "c"], "item_id": list("123456")})
    items, instructions = I.index_instructions(items)
    assert items["inst"].to_list() == [0, 0, 0, 1, 2, 2]
    assert instructions.rows() == [(0, "a", 0, 3), (1, "b", 3, 1), (2, "c", 4, 2)]


def test_a_tied_labelled_pair_is_no_gold_relation(tmp_path):
    """A labelled pair whose own scores tie (UltraFeedback-binarized: 25 of 200) states no preference, yet it was
    read as gold: a judge label preferring its 'rejected' side was dropped as contradicting it. Its sides stay items."""
    def pair(pid, chosen, rejected, sc, sr):
        return {"pair_id": pid, "prompt": user("Name a fruit."), "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}], "score_chosen": sc, "score_rejected": sr,
                "margin": sc - sr, "method": "ingest", "source": "gold", "lineage": "{}"}
    pairs = to_table([pair("g1", "Apple.", "Rock.", 9.0, 2.0), pair("g2", "Pear.", "Plum.", 7.0, 7.0)], "pairs")
    write_shards(pairs, tmp_path / "pairs", name="pairs")
    items, _, gold, counts = I.load_items(dove_cfg(pairs=str(tmp_path / "pairs"), pair_sources=["gold"]))
    assert items.height == 4 and gold.height == 1
    assert counts["inputs"][str(tmp_path / "pairs")]["tied_not_gold"] == 1
    decided = _decided([("Name a fruit.", "Plum.", "Name a fruit.", "Pear.")], ["first"])
    assert D.resolve_contradictions(decided, gold)["dropped"].to_list() == [None]


def test_contradictions_gold_wins_and_labels_judged_both_ways_are_dropped():
    gold_pairs = to_table([{"pair_id": "g1", "prompt": user("Name a fruit."),
                            "chosen": [{"role": "assistant", "content": "Apple."}],
                            "rejected": [{"role": "assistant", "content": "Rock."}], "method": "ingest",
                            "source": "gold", "lineage": "{}"}], "pairs")
    gold = I.gold_relations(I.items_from_pairs(gold_pairs))
    assert gold.height == 1
    decided = _decided([
        ("Name a fruit.", "Apple.", "Name a fruit.", "Rock."),      # agrees with gold: kept
        ("Name a fruit.", "Rock.", "Name a fruit.", " Apple. "),    # reverses gold (up to whitespace): dropped
        ("Q1", "x", "Q2", "y"),                                     # x > y ...
        ("Q2", "y", "Q1", "x"),                                     # ... and y > x: both dropped
        ("Q3", "z", "Q4", "w"),                                     # unrelated: kept
        ("Q3", "z", "Q4", "w  "),                                   # the same label again: kept
    ], ["first", "first", "first", "first", "second", "second"])
    out = D.resolve_contradictions(decided, gold)
    assert out["dropped"].to_list() == [None, "contradicts_gold", "judged_both_ways", "judged_both_ways", None, None]
    table = D.joint_pairs(out, pairing="random", judge_model="m", fp="f").to_pylist()
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in table] == [
        ("Apple.", "Rock."), ("w", "z"), ("w  ", "z")]
    m = D.contradiction_metrics(out, gold)
    assert m == {"contradicts_gold": 1, "judged_both_ways": 2, "gold_relations": 1, "labels_on_gold_pairs": 2}


class ContraryJudge(ScriptedJudge):
    """Prefers the output WITHOUT 'GOOD': with gold pairs whose chosen side says GOOD, it reverses them."""

    def choose(self, prompts, options):
        return [[p[1], p[0]] for p in super().choose(prompts, options)]


def test_main_never_publishes_a_label_that_reverses_a_gold_pair(helpful, params, tmp_path, monkeypatch):
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    marked = [{**c, "r_chosen": c["r_chosen"] + " GOOD"} for c in cond[:20]]
    _write_helpful(tmp_path, sft[:20], marked)
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: ContraryJudge(), raising=False)
    D.main(_stage_params(params))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    gold = {(" ".join(c["r_chosen"].split()), " ".join(c["r_reject"].split())) for c in marked}
    rows = read_table(tmp_path / "data/dove/pairs", "joint_pairs").to_pylist()
    published = {(" ".join(r["chosen"][0]["content"].split()), " ".join(r["rejected"][0]["content"].split())) for r in rows}
    assert not {(b, a) for a, b in gold} & published
    reversed_gold = metrics["contradictions"]["contradicts_gold"]
    assert reversed_gold == metrics["contradictions"]["labels_on_gold_pairs"] >= 15  # every label on a gold pair
    assert metrics["pairs_written"] == metrics["consistent"] - reversed_gold


class OracleJudge(ScriptedJudge):
    """Knows the probes' good outputs (P = 0.9 for them); real rows as ScriptedJudge."""

    good = {p["good"] for p in J.load_probes("dove_judge")}

    def choose(self, prompts, options):
        out = super().choose(prompts, options)
        for i, p in enumerate(prompts):
            a, b = outputs(p)
            if a in self.good or b in self.good:
                out[i] = [0.9, 0.1] if a in self.good else [0.1, 0.9]
        return out


def _gate_params(params, gate: float, on_failure: str = "error", **over):
    p = _stage_params(params, gates={"judge": gate}, **over)
    return p.model_copy(update={"execution": p.execution.model_copy(update={"on_gate_failure": on_failure})})


def test_probes_are_balanced_so_a_constant_judge_scores_chance():
    probes = J.probe_comparisons()
    kinds = probes["conditional"].value_counts().sort("conditional")["count"].to_list()
    assert kinds == [12, 12] and (probes["response_1"] != probes["response_2"]).all()
    cond = probes.filter(pl.col("conditional"))
    assert (cond["instruction_text_1"] == cond["instruction_text_2"]).all()
    for p_a in (0.9, 0.1, 0.5):  # always "a", always "b", no preference
        judged = probes.select("comparison_id", p_first_ab=pl.lit(p_a), p_first_ba=pl.lit(1 - p_a),
                               truncated=pl.lit(False), failure=pl.lit(None, pl.String))
        correct, detail = J.probe_report(probes, judged, "none")
        assert len(correct) == 48 and sum(correct) == (24 if p_a != 0.5 else 0), p_a
        assert detail["raw_accuracy"] == (0.5 if p_a != 0.5 else 0.0)


def test_a_probe_the_judge_failed_on_is_never_counted_right():
    """An engine that errors on every probe must score 0, not pass the gate on the orders it never judged."""
    probes = J.probe_comparisons()
    judged = probes.select("comparison_id", p_first_ab=pl.lit(None, pl.Float64), p_first_ba=pl.lit(None, pl.Float64),
                           truncated=pl.lit(False), failure=pl.lit("engine error: boom"))
    for calibration in ("none", "median"):
        correct, detail = J.probe_report(probes, judged, calibration)
        assert len(correct) == 48 and sum(correct) == 0 and detail["failures"] == 24, calibration


def test_check_gate_passes_at_the_gate_and_reports_a_gate_at_chance_as_lowered():
    from pipeline.gates import check_gate

    def gate(right: int, min_accuracy: float) -> dict:
        return check_gate("dove", "judge", "m", [True] * right + [False] * (16 - right), min_accuracy=min_accuracy,
                          key="dove.gates.judge", on_failure="withhold")

    assert (gate(12, 0.75)["passed"], gate(12, 0.75)["lowered"], gate(12, 0.75)["labels"]) == (True, False, "used")
    assert (gate(11, 0.75)["passed"], gate(11, 0.75)["labels"]) == (False, "withheld")
    at_chance = gate(8, 0.5)  # a gate of 0.5 lets a chance-level judge through: said so, every run
    assert (at_chance["passed"], at_chance["lowered"], at_chance["labels"]) == (True, True, "used, gate lowered")


@pytest.mark.parametrize(("calibration", "right"), [("none", 24), ("median", 0)])
def test_gate_stops_an_always_a_judge_before_it_labels_anything(helpful, params, tmp_path, monkeypatch, calibration,
                                                                right):
    """The real-model failure: a judge that answered 'a' in every order still produced labelled pairs
    (with median calibration). Raw, it gets one of each probe's two orders right; calibrated, nothing
    is left of its answers (every probe is a tie)."""
    from pipeline.gates import JudgeGateError

    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    engine = ScriptedJudge(bias=0.9)
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: engine, raising=False)
    with pytest.raises(JudgeGateError, match=rf"dove: the judge \(tiny\) .* {right} of 48 probes right .* "
                                             r"dove.gates.judge=0.75"):
        D.main(_gate_params(params, 0.75, position_calibration=calibration))
    assert sum(engine.calls) == 48  # the probes, both orders; no real comparison was judged


def test_gate_withhold_writes_no_labels(helpful, params, tmp_path, monkeypatch, capsys):
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    engine = ScriptedJudge(bias=0.9)
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: engine, raising=False)
    D.main(_gate_params(params, 0.75, "withhold"))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    gate = metrics["gates"]["judge"]
    assert (gate["passed"], gate["labels"], gate["accuracy"], gate["probes"]) == (False, "withheld", 0.5, 48)
    assert gate["detail"]["position_a_rate"] == 1.0 and gate["detail"]["raw_accuracy"] == 0.5
    assert metrics["pairs_written"] == 0 and metrics["labels_withheld"] >= 10 and metrics["comparisons"] == 0
    assert read_table(tmp_path / "data/dove/pairs", "joint_pairs").num_rows == 0
    assert sum(engine.calls) == 48 and "labels are withheld" in capsys.readouterr().out


def test_gate_passes_a_judge_that_knows_the_probes(helpful, params, tmp_path, monkeypatch):
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], [{**c, "r_chosen": c["r_chosen"] + " GOOD"} for c in cond[:5]])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: OracleJudge(), raising=False)
    D.main(_gate_params(params, 0.75))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    gate = metrics["gates"]["judge"]
    assert (gate["passed"], gate["lowered"], gate["labels"], gate["accuracy"]) == (True, False, "used", 1.0)
    assert gate["detail"]["joint_accuracy"] == gate["detail"]["conditional_accuracy"] == 1.0
    assert metrics["pairs_written"] >= 5 and metrics["contradictions"]["contradicts_gold"] == 0


class JointOnlyJudge(OracleJudge):
    """Knows the joint probes' good outputs; on the conditional ones (same instruction twice) it answers 'a'."""

    joint = {p["good"] for p in J.load_probes("dove_judge") if p["kind"] == "joint"}

    def choose(self, prompts, options):
        out = super().choose(prompts, options)
        for i, p in enumerate(prompts):
            a, b = outputs(p)
            if (a in self.good or b in self.good) and not (a in self.joint or b in self.joint):
                out[i] = [0.9, 0.1]
        return out


def test_gate_withholds_a_judge_at_chance_on_conditional_comparisons(helpful, params, tmp_path, monkeypatch):
    """The stage labels joint and conditional comparisons alike: a judge right on every joint probe and at
    chance on the conditional ones got 36 of 48 (0.75) and passed; the gate reads the weaker kind."""
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: JointOnlyJudge(), raising=False)
    D.main(_gate_params(params, 0.75, "withhold"))
    gate = json.loads((tmp_path / "data/dove/details.json").read_text())["gates"]["judge"]
    assert (gate["correct"], gate["accuracy"], gate["passed"], gate["weakest"]) == (36, 0.5, False, "conditional")
    assert gate["contrasts"] == {"conditional": 0.5, "joint": 1.0}


def test_gate_reads_only_the_comparisons_the_stage_labels(helpful, params, tmp_path, monkeypatch):
    """With include_conditional false the stage labels joint comparisons only: a judge right on every joint probe
    and at chance on the conditional ones passes on the joint distinction (it was failed on the unused one)."""
    sft, cond = helpful
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: JointOnlyJudge(), raising=False)
    D.main(_gate_params(params, 0.75, "withhold", include_conditional=False))
    gate = json.loads((tmp_path / "data/dove/details.json").read_text())["gates"]["judge"]
    assert (gate["accuracy"], gate["passed"], gate["weakest"], gate["contrasts"]) == (1.0, True, "joint", {"joint": 1.0})


class BiasedJudge(ScriptedJudge):
    """Log-odds 2 for position a plus 0.5 per 'GOOD' of difference: raw verdicts always 'a' (no agreement
    across orders), a faint signal that median calibration turns into labels."""

    def choose(self, prompts, options):
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            a, b = outputs(p)
            p_a = 1 / (1 + math.exp(-(2 + 0.5 * (a.count("GOOD") - b.count("GOOD")))))
            out.append([p_a, 1 - p_a])
        return out


def test_median_calibration_on_a_judge_without_raw_signal_says_so(helpful, params, tmp_path, monkeypatch, capsys,
                                                                  caplog):
    sft, cond = helpful
    caplog.set_level("WARNING")
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, [{**r, "response": r["response"] + " GOOD" * (i % 2)} for i, r in enumerate(sft[:30])], [])
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: BiasedJudge(), raising=False)
    D.main(_stage_params(params, pair_sources=[], position_calibration="median"))
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    assert metrics["raw_position_consistency_rate"] == 0.0 and metrics["pairs_written"] > 0
    assert metrics["calibration_warning"].startswith("dove: position_calibration=median made")
    assert capsys.readouterr().out.count("WARNING dove: position_calibration=median made") == 1
    assert not [r for r in caplog.records if "position_calibration" in r.getMessage()]  # not printed twice by the CLI
    D.main(_stage_params(params, pair_sources=[], position_calibration="none"))  # the paper: no labels, no note
    metrics = json.loads((tmp_path / "data/dove/details.json").read_text())
    assert metrics["pairs_written"] == 0 and metrics["calibration_warning"] is None


def test_params_give_the_paper_defaults_to_a_real_judge_and_lowered_settings_to_tiny(root):
    import yaml

    from pipeline.config import resolve_params

    data = yaml.safe_load((root / "params.yaml").read_text())
    tiny = resolve_params(data)
    assert (tiny.dove.position_calibration, tiny.dove.gates.judge) == ("median", 0.0)
    assert tiny.applied_overrides("dove") == {"position_calibration": "median", "gates.judge": 0.0}
    real = resolve_params({**data, "llm": {**data["llm"], "model": "HuggingFaceTB/SmolLM2-135M-Instruct"}})
    assert (real.dove.position_calibration, real.dove.gates.judge) == ("none", 0.75)
    assert real.applied_overrides("dove") == {}
