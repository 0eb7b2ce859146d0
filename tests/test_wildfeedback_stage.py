"""WildFeedback stage end to end with the scripted fake engine (tests/wildfeedback_fakes.py): the judge
gates, the outputs, the metrics and the console line, and partitions that bound memory. The steps are in
tests/test_wildfeedback.py; pairs in tests/test_wildfeedback_pairs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.gates import JudgeGateError, load_probes
from pipeline.io import write_shards
from pipeline.records import to_table
from stages import wildfeedback as wf
from tests.wildfeedback_fakes import CONVS, FakeEngine, kinds, make_params, run_stage

# --- judge gates ------------------------------------------------------------------------------------------


def test_probe_sets_are_balanced():
    d = load_probes("wildfeedback_detector")
    assert sum(p["sat"] for p in d) * 2 == sum(p["dsat"] for p in d) * 2 == len(d) == 16
    assert sum(p["sat"] and p["dsat"] for p in d) == sum(not p["sat"] and not p["dsat"] for p in d) == 4
    assert all(p["follows"] != p["violates"] for p in load_probes("wildfeedback_judge"))


def test_gates_pass_for_a_discriminating_judge_and_are_reported(tmp_path, monkeypatch):
    _, pairs, _, m = run_stage(tmp_path, monkeypatch, FakeEngine())
    assert set(m["gates"]) == {"detector", "judge"} and m["gates_run"] == m["gates_passed"] == 2
    assert m["gates"]["detector"]["probes"] == 32 and m["gates"]["detector"]["accuracy"] == 1.0
    assert m["gates"]["judge"]["probes"] == 16 and m["gates"]["judge"]["key"] == "wildfeedback.gates.judge"


def test_a_position_biased_judge_fails_its_gate_before_any_real_row(tmp_path, monkeypatch):
    engine = FakeEngine(judge_bias="always_a")
    with pytest.raises(JudgeGateError, match="wildfeedback.gates.judge"):
        run_stage(tmp_path, monkeypatch, engine, _execution={"on_gate_failure": "error"})
    assert [k for k, _ in engine.seen].count("text") == 0  # no chosen answer was written before the gate


def test_withheld_judge_emits_none_of_its_labels(tmp_path, monkeypatch):
    _, pairs, rejects, m = run_stage(tmp_path, monkeypatch, FakeEngine(judge_bias="always_a"),
                                     _execution={"on_gate_failure": "withhold"})
    assert m["gates"]["judge"]["passed"] is False and m["gates"]["judge"]["labels"] == "withheld"
    assert kinds(pairs) == ["natural_revision"] and m["details"]["summaries"]["skipped_judge_withheld"] == 2


def test_detector_gate_error_and_withhold(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(JudgeGateError, match="wildfeedback.gates.detector"):
        run_stage(tmp_path / "a", monkeypatch, FakeEngine(detector="silent"), _execution={"on_gate_failure": "error"})
    signals, _, _, m = run_stage(tmp_path / "b", monkeypatch, FakeEngine(detector="silent"), combine="llm_overrides",
                                 _execution={"on_gate_failure": "withhold"})
    assert m["gates"]["detector"]["accuracy"] == 0.5 and not m["gates"]["detector"]["passed"]
    assert set(signals.column("detector").to_pylist()) == {"rules"} and m["details"]["detector_used"] == "rules"
    assert m["details"]["model_detector"]["sent_to_model"] == 0 and m["collapse_warnings"] == 0
    assert "detector" not in run_stage(tmp_path / "b", monkeypatch, FakeEngine(), detector="rules")[3]["gates"]


def test_a_detector_right_on_sat_and_blind_on_dsat_fails_its_gate(tmp_path, monkeypatch):
    """DSAT signals are what the pairs come from: a detector that answers DSAT on every turn (and SAT right)
    gets 24 of 32 answers right (0.75) and passed the 0.75 gate; the gate reads the weaker question."""
    _, _, _, m = run_stage(tmp_path, monkeypatch, FakeEngine(detector="dsat_always"), combine="llm_overrides",
                           _execution={"on_gate_failure": "withhold"})
    gate = m["gates"]["detector"]
    assert (gate["correct"], gate["probes"], gate["accuracy"], gate["passed"]) == (24, 32, 0.5, False)
    assert gate["contrasts"] == {"dsat": 0.5, "sat": 1.0} and gate["weakest"] == "dsat"


def test_a_detector_that_fails_on_every_probe_gets_none_right(tmp_path, monkeypatch):
    """A failed call carries sat = dsat = false; it must not count as the right answer to a 'neither' probe."""
    _, _, _, m = run_stage(tmp_path, monkeypatch, FakeEngine(detector="failing"),
                           _execution={"on_gate_failure": "withhold"})
    gate = m["gates"]["detector"]
    assert (gate["correct"], gate["passed"]) == (0, False) and gate["detail"]["failures"] == gate["detail"]["turns"] > 0


# --- the stage -----------------------------------------------------------------------------------------------


def test_stage_end_to_end_with_a_fair_judge(tmp_path, monkeypatch):
    signals, pairs, rejects, m = run_stage(tmp_path, monkeypatch, FakeEngine(), recall_sample=0.0,
                                           combine="llm_overrides")
    d = m["details"]
    assert signals.num_rows == 8 and d["turns_judged"] == 8
    by_kind = {}
    for r in pairs.to_pylist():
        by_kind.setdefault(json.loads(r["lineage"])["kind"], []).append(r)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("generated", 2), ("natural_revision", 1)]
    gen = next(r for r in by_kind["generated"] if json.loads(r["lineage"])["conversation_id"] == "c3")
    assert gen["chosen"][0]["content"] == "PREFERRED short answer." and gen["rejected"][0]["content"].startswith("DNS is")
    assert gen["prompt"][0] == {"role": "system", "content": "You are terse."}
    lin = json.loads(gen["lineage"])
    assert lin["judged_turn"] == 2 and lin["feedback_turn"] == 3 and lin["models"]["expert"] == "tiny"
    assert lin["preference"].startswith("Be concise") and gen["confidence"] == pytest.approx(0.8)
    assert lin["chosen_finish_reason"] == "stop" and "rejected_finish_reason" not in lin
    nat = json.loads(by_kind["natural_revision"][0]["lineage"])
    assert "chosen_finish_reason" not in nat and "rejected_finish_reason" not in nat  # no model wrote them
    assert d["conversations"] == {"in": 7, "selected": 4, "dropped_language": 1, "dropped_flagged": 1,
                                  "dropped_min_user_turns": 1}
    assert d["languages"] == {"en": 6, "fr": 1}  # #20: counted per language; c8 has no tag, py3langid reads it
    assert d["pairs"]["out"] == 3 and d["pairs"]["judged"] == 2 and not d["dropped"]
    assert d["summaries"]["attempted"] == d["summaries"]["kept"] == 2 and d["model_detector"]["sent_to_model"] == 6
    assert rejects.num_rows == 0 and d["signals"]["dsat_categories"]["Factual_Error"] == 2


def test_metrics_top_level_is_a_few_headline_numbers(tmp_path, monkeypatch):
    """#15: `dvc metrics show` reads the top level: headline numbers, the gate reports, details nested."""
    _, pairs, _, m = run_stage(tmp_path, monkeypatch, FakeEngine(), detector="rules")
    assert set(m) == {"conversations_selected", "signals_sat", "signals_dsat", "pairs", "pairs_natural_revision",
                       "pairs_generated", "gates_run", "gates_passed", "collapse_warnings", "gates", "models", "details"}
    assert set(m["models"]) == {"detector", "summarizer", "expert", "policy", "judge"}  # each role's weights
    assert m["pairs"] == pairs.num_rows == m["pairs_natural_revision"] + m["pairs_generated"] == 3
    assert (m["conversations_selected"], m["signals_dsat"]) == (4, 2) and m["details"]["detector"] == "rules"


def test_the_console_line_is_a_sentence_of_the_headline_numbers(tmp_path, monkeypatch):
    _, pairs, _, m = run_stage(tmp_path, monkeypatch, FakeEngine(), detector="rules")
    line = wf.console_line(m)
    assert line.startswith("wildfeedback: 7 conversations -> 4 selected -> ") and "\n" not in line
    assert f"DSAT 2; detector rules) -> {pairs.num_rows} pairs (1 from natural revisions, 2 generated)" in line


def assert_same_outputs(run, other, root, other_root):
    """Two runs' signals, pairs and rejects are equal tables and every shard file is the same bytes."""
    for a, b in zip(run[:3], other[:3], strict=True):
        assert a.equals(b)
    for table in ("signals", "pairs", "rejects"):
        out = Path("data/wildfeedback") / table
        for f in sorted((other_root / out).iterdir()):
            assert f.read_bytes() == (root / out / f.name).read_bytes(), f


def test_partitions_are_cut_by_partition_conversations_alone_not_by_the_read_batch_size(tmp_path, monkeypatch):
    """Partitions were cut at the first read batch that reached ``partition_conversations``: 3 per partition
    read 2 at a time gave partitions of 4 and 3, not 3, 3 and 1, so the model saw other batches (a real model's
    scores move with them) and details.json changed with `execution.batch_size`, documented to change no byte."""
    runs = []
    for batch_size in (2, 4096):
        (tmp_path / str(batch_size)).mkdir()
        engine = FakeEngine()
        runs.append((engine.calls, run_stage(tmp_path / str(batch_size), monkeypatch, engine, partition_conversations=3,
                                             recall_sample=0.3, combine="llm_overrides",
                                             _execution={"batch_size": batch_size})[3]))
    (calls, details), (calls_whole, details_whole) = runs
    assert details["details"]["partitions"] == 3 and details == details_whole
    assert calls == calls_whole


def test_the_rules_judge_many_read_batches_at_once_and_their_batch_changes_no_byte(tmp_path, monkeypatch):
    """The rules ran once per read batch (`execution.batch_size`, 4096 shipped): each call compiles ~160 cue
    regexes again (polars keeps 32), so at 1M conversations the rules cost ~4x their own work. They now judge
    ``rules_batch_conversations`` selected conversations per call, which changes no output."""
    calls, real = [], wf.rules_signals
    monkeypatch.setattr(wf, "rules_signals", lambda turns, cfg: calls.append(turns.height) or real(turns, cfg))
    runs = []
    for rules_batch in (1, 4096):
        (tmp_path / str(rules_batch)).mkdir()
        calls.clear()
        runs.append(run_stage(tmp_path / str(rules_batch), monkeypatch, FakeEngine(), recall_sample=0.3,
                              combine="llm_overrides", rules_batch_conversations=rules_batch,
                              _execution={"batch_size": 2}))
        runs[-1] = (*runs[-1], list(calls))
    (*one, calls_one), (*whole, calls_whole) = runs
    assert len(calls_whole) == 1 and len(calls_one) > 2  # one call for the partition, not one per read batch
    assert sum(calls_one) == sum(calls_whole) > 0
    assert one[3] == whole[3]
    assert_same_outputs(one, whole, tmp_path / "1", tmp_path / "4096")


def test_the_last_conversations_of_a_partition_join_the_rules_call_before(tmp_path, monkeypatch):
    """A partition's last few selected conversations were judged in a call of their own (at 1M synthetic
    conversations, ~1,100 of each 100k partition's ~66,700 after two calls of 32,768), and every call compiles the
    cue regexes again (~0.3 s). Now a remainder of a quarter of a rules batch or fewer joins the call before; the
    verdicts are the same as in one call."""
    rows = [{**c, "conversation_id": f"{c['conversation_id']}-{k:02d}"} for k in range(5) for c in CONVS]
    write_shards(to_table(sorted(rows, key=lambda r: r["conversation_id"]), "conversations"), tmp_path / "in",
                 name="conversations")
    calls, real = [], wf.judge_selected
    monkeypatch.setattr(wf, "judge_selected", lambda sel, cfg: calls.append(sel.height) or real(sel, cfg))
    cfg = make_params(detector="rules").wildfeedback
    runs = {}
    for rules_batch in (10**6, 8, 16):  # 20 selected, the last 5 (c8-*) read last
        calls.clear()
        parts = list(wf.scanned_partitions(tmp_path / "in", cfg.model_copy(update={"rules_batch_conversations": rules_batch}),
                                           1, len(rows)))
        runs[rules_batch] = parts[0], list(calls)
    (whole, [n_selected]) = runs.pop(10**6)
    assert runs[8][1] == [8, 8, 4]  # a remainder of 4 is more than a quarter of 8: a call of its own
    assert runs[16][1] == [20]  # ...and a quarter of 16 or fewer: judged with the call before (was 16 then 4)
    for part, sizes in runs.values():
        assert sum(sizes) == n_selected == 20
        assert part[0].equals(whole[0]) and part[1].equals(whole[1])


def test_partitions_bound_memory_without_changing_the_output(tmp_path, monkeypatch):
    """Two conversations per partition (4 partitions, each through every model step) = one partition."""
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    kw = {"recall_sample": 0.3, "combine": "llm_overrides"}
    whole = run_stage(tmp_path / "whole", monkeypatch, FakeEngine(), **kw)
    parts = run_stage(tmp_path / "parts", monkeypatch, FakeEngine(), partition_conversations=2, **kw)
    assert (whole[3]["details"].pop("partitions"), parts[3]["details"].pop("partitions")) == (1, 4)
    assert parts[3] == whole[3] and whole[3]["pairs"] == 3
    assert_same_outputs(parts, whole, tmp_path / "parts", tmp_path / "whole")
