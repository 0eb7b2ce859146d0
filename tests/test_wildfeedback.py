"""WildFeedback stage: select, feedback turns, detectors (with a scripted fake engine), summaries, pairs, judge."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import yaml

import pipeline.llm
from pipeline.config import Params
from pipeline.io import read_table, write_shards
from pipeline.llm.base import Completion, GenerationFailure
from pipeline.records import to_table
from stages import wildfeedback as wf
from stages.wildfeedback_pairs import PreferenceSummary, checklist, natural_revisions

ROOT = Path(__file__).resolve().parents[1]


def make_params(**wf_overrides) -> Params:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data.setdefault("ingest", {"sources": [], "max_reject_fraction": 0.5, "max_record_bytes": 1 << 20})
    # The model paths are what these tests pin: rules+llm unless a test says otherwise.
    data["wildfeedback"] = {**data["wildfeedback"], "sources": ["logs"], "detector": "rules+llm", **wf_overrides}
    data["execution"] = {**data["execution"], "backend": "local", "batch_size": 3, "checkpoint_rows": 4}
    return Params.model_validate(data)


def conv(cid: str, turns: list[str], *, language="en", flags=(), source="logs", system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"conversation_id": cid, "messages": msgs, "source": source, "language": language, "flags": list(flags)}


CONVS = [
    # DSAT on turn 1, revision turn 3 earns SAT at turn 4: a natural revision pair.
    conv("c1", ["Capital of Australia?", "Sydney.", "That's wrong, it's not Sydney.", "Canberra.", "Thanks, perfect!"]),
    # Thanked new task only: SAT, no DSAT, no pair.
    conv("c2", ["Write a haiku.", "Leaves fall softly.", "Thanks! Now write a limerick.", "There once was a cat.",
                "What rhymes with cat?"]),
    # Style complaint, never fixed: a generated pair candidate. Has a system message.
    conv("c3", ["Explain DNS.", "DNS is a long story. " * 5, "Way too long, make it shorter.", "DNS maps names.",
                "Who invented it?"], system="You are terse."),
    conv("c4", ["Hi", "Hello!", "Bye"]),  # too few user turns
    conv("c5", ["a", "b", "that's wrong", "d", "e"], language="fr"),
    conv("c6", ["a", "b", "that's wrong", "d", "e"], flags=["toxic"]),
    conv("c7", ["a", "b", "that's wrong", "d", "e"], source="other"),
    conv("c8", ["Hi", "Hello!", "ok", "Sure.", "thanks"], language=None),
]


def frame(rows=CONVS) -> pl.DataFrame:
    return pl.from_arrow(to_table(rows, "conversations"))


class FakeEngine:
    """Scripted engine: answers follow keywords in the prompt, deterministically."""

    name = "fake"

    def __init__(self, judge_bias: str = "fair"):
        self.judge_bias = judge_bias
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts, n=1, sampling=None, schema=None):
        self.calls.append((schema.__name__ if schema else "text", len(prompts)))
        out = []
        for p in prompts:
            text = p[-1]["content"]
            last = text.rsplit("<<<TURN", 1)[-1] if schema is wf.FeedbackJudgment else text
            if schema is wf.FeedbackJudgment:
                if "FAIL" in last:
                    out.append([GenerationFailure(error="cut at max_new_tokens", raw='{"sat": tr', attempts=3)])
                    continue
                dsat = "wrong" in last or "too long" in last.lower()
                sat = "thanks" in last.lower()
                out.append([wf.FeedbackJudgment(
                    sat=sat, sat_categories=["Gratitude"] if sat else [], dsat=dsat,
                    dsat_categories=["Factual_Error"] if dsat else [], refers_to_preceding=True, rationale="scripted")])
            elif schema is PreferenceSummary:
                unsafe = "UNSAFE" in text
                out.append([PreferenceSummary(preference="Be concise. Answer in one sentence", reasonable=True,
                                              safe=not unsafe)])
            else:
                system = p[0]["content"] if p[0]["role"] == "system" else ""
                out.append([Completion("PREFERRED short answer." if "Be concise" in system else "policy sample")] * n)
        return out

    def choose(self, prompts, options):
        assert options == ["A", "B"]
        out = []
        for p in prompts:
            text = p[-1]["content"]
            if self.judge_bias == "always_a":
                out.append([0.9, 0.1])
            else:
                a = text.split("<<<ANSWER A", 1)[1]
                out.append([0.8, 0.2] if a.lstrip().startswith("PREFERRED") else [0.2, 0.8])
        return out

    def logprobs(self, prompts, responses):
        raise AssertionError("WildFeedback never scores given text with logprobs")


def test_select_counts_every_drop_reason():
    cfg = make_params().wildfeedback
    kept, counts = wf.select_conversations(frame(), cfg)
    assert sorted(kept["conversation_id"]) == ["c1", "c2", "c3", "c8"]
    assert counts == {"in": 7, "selected": 4, "dropped_language": 1, "dropped_flagged": 1, "dropped_min_user_turns": 1}
    strict = make_params(keep_unknown_language=False, min_user_turns=2).wildfeedback
    kept, counts = wf.select_conversations(frame(), strict)
    assert "c8" not in kept["conversation_id"].to_list() and counts["dropped_language"] == 2


def test_feedback_turns_index_messages_and_skip_the_first_user_turn():
    turns = wf.feedback_turns(frame([CONVS[2], CONVS[3]]))
    assert turns.select("conversation_id", "user_turn", "target_turn").rows() == [
        ("c3", 3, 2), ("c3", 5, 4), ("c4", 2, 1)]
    assert turns["prev"][0].startswith("DNS is a long story")


def test_recall_sample_is_seeded_and_batch_independent():
    turns = pl.DataFrame({"conversation_id": [f"c{i}" for i in range(4000)], "user_turn": [2] * 4000})
    s = wf.recall_sample(turns, 0.1, seed=0)
    assert 300 < s.sum() < 500
    assert s[:1000].to_list() == wf.recall_sample(turns[:1000], 0.1, seed=0).to_list()
    assert s.to_list() != wf.recall_sample(turns, 0.1, seed=1).to_list()
    assert wf.recall_sample(turns, 0.0, seed=0).sum() == 0


def test_scan_rules_plus_llm_sends_flagged_turns_and_keeps_their_conversations():
    turns, convs, counts = wf.scan(frame(), make_params(recall_sample=0.0).wildfeedback)
    sent = turns.filter(pl.col("to_model"))
    assert sent.height == turns.filter(pl.col("sat") | pl.col("dsat")).height > 0
    assert set(convs["conversation_id"]) == {"c1", "c2", "c3", "c8"}
    assert counts["turns"] == turns.height == 8


def test_llm_detector_outputs_are_schema_valid_and_failures_are_recorded():
    params = make_params(recall_sample=0.0)
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    send = wf.with_context(turns.filter(pl.col("to_model")), convs, 6)
    send = send.with_columns(pl.when(pl.col("conversation_id") == "c8").then(pl.lit("FAIL")).otherwise("text")
                             .alias("text"))
    engine = FakeEngine()
    out = wf.llm_detect(send.select("conversation_id", "user_turn", "text", "prev", "context").to_arrow(), engine,
                        sampling=params.llm.sampling, prompt=wf.template("detect"), max_chars=100)
    judged = pl.from_arrow(out)
    ok = judged.filter(pl.col("ok"))
    for row in ok.to_dicts():  # every answer re-validates against the schema
        wf.FeedbackJudgment.model_validate({k: row[k] for k in wf.FeedbackJudgment.model_fields})
    assert judged.filter(~pl.col("ok"))["conversation_id"].to_list() == ["c8", "c8"]
    signals, failed = wf.merge_verdicts(turns, judged, "rules+llm")
    assert set(signals.filter(pl.col("detector") == "llm")["conversation_id"]) == {"c1", "c2", "c3"}
    assert failed.height == 2 and signals.height == turns.height  # rules verdict kept for the failed turns
    only_llm, _ = wf.merge_verdicts(turns, judged, "llm")
    assert "c8" not in only_llm["conversation_id"].to_list()
    assert "[rules: " in signals.filter(pl.col("detector") == "llm")["rationale"][0]


def test_natural_revision_pair_rows():
    turns, convs, _ = wf.scan(frame(), make_params(detector="rules").wildfeedback)
    nat = natural_revisions(turns, convs)
    assert nat.select("conversation_id", "target_turn", "chosen", "rejected").rows() == [
        ("c1", 1, "Canberra.", "Sydney.")]
    assert [m["role"] for m in nat["prompt"][0]] == ["user"]


def test_checklist_items():
    assert checklist("- Be brief\n- Use Python") == ["Be brief", "Use Python"]
    assert checklist("") == []


def _run_stage(tmp_path, monkeypatch, engine, rows=CONVS, **overrides):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engine, raising=False)
    write_shards(to_table(rows, "conversations"), tmp_path / "data/ingest/conversations", name="conversations")
    wf.main(make_params(**overrides))
    out = tmp_path / "data/wildfeedback"
    return (read_table(out / "signals", "signals"), read_table(out / "pairs", "pairs"),
            read_table(out / "rejects", "rejects"), json.loads((out / "metrics.json").read_text()))


def test_stage_end_to_end_with_a_fair_judge(tmp_path, monkeypatch):
    signals, pairs, rejects, m = _run_stage(tmp_path, monkeypatch, FakeEngine(), recall_sample=0.0)
    assert signals.num_rows == 8 and m["turns_judged"] == 8
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
    assert m["conversations"] == {"in": 7, "selected": 4, "dropped_language": 1, "dropped_flagged": 1,
                                  "dropped_min_user_turns": 1}
    assert m["pairs"]["out"] == 3 and m["pairs"]["judged"] == 2 and not any(m["dropped"].values())
    assert m["summaries"] == {"attempted": 2, "kept": 2} and m["model_detector"]["sent_to_model"] == 6
    assert rejects.num_rows == 0
    assert m["signals"]["dsat_categories"]["Factual_Error"] == 2


def test_partitions_bound_memory_without_changing_the_output(tmp_path, monkeypatch):
    """Two conversations per partition (4 partitions, each through every model step) = one partition."""
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = _run_stage(tmp_path / "whole", monkeypatch, FakeEngine(), recall_sample=0.3)
    parts = _run_stage(tmp_path / "parts", monkeypatch, FakeEngine(), recall_sample=0.3, partition_conversations=2)
    assert (whole[3].pop("partitions"), parts[3].pop("partitions")) == (1, 4)
    assert parts[3] == whole[3] and whole[3]["pairs"]["out"] == 3
    for a, b in zip(whole[:3], parts[:3], strict=True):
        assert a.equals(b)
    for table in ("signals", "pairs", "rejects"):
        out = Path("data/wildfeedback") / table
        for f in sorted((tmp_path / "whole" / out).iterdir()):
            assert f.read_bytes() == (tmp_path / "parts" / out / f.name).read_bytes(), f


def test_position_biased_judge_keeps_no_generated_pair(tmp_path, monkeypatch):
    _, pairs, _, m = _run_stage(tmp_path, monkeypatch, FakeEngine(judge_bias="always_a"), detector="rules")
    kinds = [json.loads(r)["kind"] for r in pairs.column("lineage").to_pylist()]
    assert kinds == ["natural_revision"]
    assert m["dropped"]["generated_lost_in_judge"] == m["pairs"]["generated_attempted"] == 2


def test_unsafe_summaries_are_dropped_with_their_reason(tmp_path, monkeypatch):
    rows = [dict(c) for c in CONVS]
    rows[2] = conv("c3", ["Explain DNS.", "Long.", "Way too long UNSAFE.", "Short.", "Who made it?"])
    _, pairs, _, m = _run_stage(tmp_path, monkeypatch, FakeEngine(), rows, detector="rules", natural_revisions=False)
    assert m["dropped"]["summary_unsafe"] == 1 and m["summaries"] == {"attempted": 2, "kept": 1}
    assert [json.loads(x)["conversation_id"] for x in pairs.column("lineage").to_pylist()] == ["c1"]


def test_sat_pairs_use_the_liked_answer_as_chosen(tmp_path, monkeypatch):
    _, pairs, _, m = _run_stage(tmp_path, monkeypatch, FakeEngine(judge_bias="always_a"), detector="rules",
                                summarize=["sat"], sat_pairs=True, checklist_judge=False, natural_revisions=False)
    sat = [r for r in pairs.to_pylist() if json.loads(r["lineage"])["kind"] == "sat"]
    assert sat and all(r["rejected"][0]["content"] == "policy sample" for r in sat)
    assert {r["chosen"][0]["content"] for r in sat} <= {"Canberra.", "Leaves fall softly.", "Sure.", "Hello!"}
    assert pa.types.is_string(pairs.schema.field("lineage").type) and m["pairs"]["sat_attempted"] == len(sat)


def test_tiny_engine_detector_summaries_and_judge_are_schema_valid():
    """The real built-in tiny model through the real prompts: every answer parses against the schemas."""
    from pipeline.config import resolve_role
    from pipeline.llm import get_engine
    from stages.wildfeedback_pairs import judge, summarize

    params = make_params(detector="rules+llm", recall_sample=0.0)
    cfg = params.wildfeedback
    detector = resolve_role(params.llm, cfg.roles.detector)
    engine = get_engine(detector)
    turns, convs, _ = wf.scan(frame(CONVS[:3]), cfg)
    send = wf.with_context(turns.filter(pl.col("to_model")), convs, cfg.context_messages).head(2)
    out = pl.from_arrow(wf.llm_detect(send.select("conversation_id", "user_turn", "text", "prev", "context").to_arrow(),
                                      engine, sampling=detector.sampling, prompt=wf.template("detect"), max_chars=300))
    assert out.height == 2 and out["ok"].all(), out["error"].to_list()
    for row in out.to_dicts():
        wf.FeedbackJudgment.model_validate({k: row[k] for k in wf.FeedbackJudgment.model_fields})

    summarizer = resolve_role(params.llm, cfg.roles.summarizer)
    from stages.wildfeedback_pairs import summary_candidates
    cands = summary_candidates(turns, convs, ["dsat"]).head(1)
    summ = pl.from_arrow(summarize(cands.to_arrow(), get_engine(summarizer), sampling=summarizer.sampling,
                                   prompt=wf.template("summarize"), context_messages=4, max_chars=300))
    for row in summ.to_dicts():
        if row["error"] is None:
            PreferenceSummary.model_validate({k: row[k] for k in ("preference", "reasonable", "safe")})
        else:
            assert row["preference"] is None
    table = cands.select("prompt", pl.col("answer").alias("chosen"), pl.col("feedback").alias("rejected"),
                         pl.lit("Be concise. Use Python").alias("preference")).to_arrow()
    judged = judge(table, get_engine(params.llm), prompt=wf.template("judge"), context_messages=4, max_chars=300)
    for a, b in zip(judged["p_chosen_first"].to_pylist(), judged["p_chosen_second"].to_pylist(), strict=True):
        assert 0 <= a <= 1 and 0 <= b <= 1
