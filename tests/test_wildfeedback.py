"""WildFeedback steps: select, feedback turns, the model detector and how it combines with the rules
(scripted fake engine in tests/wildfeedback_fakes.py). The stage end to end, judge gates and metrics:
tests/test_wildfeedback_stage.py; pairs: tests/test_wildfeedback_pairs.py."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pyarrow as pa
import pytest

import pipeline.llm
from pipeline.errors import StageError
from pipeline.io import SourceError
from stages import wildfeedback as wf
from stages import wildfeedback_detect as det
from stages.wildfeedback_common import prompt
from stages.wildfeedback_pairs import natural_revisions
from tests.wildfeedback_fakes import (
    CONVS,
    ROOT,
    FakeEngine,
    conv,
    fenced,
    frame,
    kinds,
    make_params,
    run_stage,
)


def test_select_counts_every_drop_reason():
    cfg = make_params().wildfeedback
    kept, counts = wf.select_conversations(frame(), cfg)
    assert sorted(kept["conversation_id"]) == ["c1", "c2", "c3", "c8"]
    drops = {k: n for k, n in counts.items() if not k.startswith("language:")}
    assert drops == {"in": 7, "selected": 4, "dropped_language": 1, "dropped_flagged": 1, "dropped_min_user_turns": 1}
    assert sum(n for k, n in counts.items() if k.startswith("language:")) == 7 and counts["language:fr"] == 1
    strict = make_params(keep_unknown_language=False, detect_language=False, min_user_turns=2).wildfeedback
    kept, counts = wf.select_conversations(frame(), strict)
    assert "c8" not in kept["conversation_id"].to_list() and counts["dropped_language"] == 2


def test_the_stage_without_its_conversations_fails_instead_of_writing_empty_outputs(tmp_path, monkeypatch):
    """`prefpipe run wildfeedback` before ingest used to write empty signals and pairs, as if the log held
    no feedback; like every other stage it now stops, naming the missing folder and what to do, and before
    its judge gates (it ran their probes first: minutes with a real model)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: FakeEngine(), raising=False)
    monkeypatch.setattr(wf, "run_gates", lambda params: pytest.fail("the judge gates ran before the input check"))
    with pytest.raises(SourceError, match=r"data/ingest/conversations: not found; run the stage that writes it"):
        wf.main(make_params())
    assert not [p for p in (tmp_path / "data/wildfeedback").rglob("*") if p.is_file()]


def test_sources_with_no_conversation_stop_the_stage_before_the_gates(tmp_path, monkeypatch):
    """`wildfeedback.sources: [sample_posts]` (a documents source) wrote empty signals and pairs, as if the
    log held no feedback, after running the judge gates; like PUGC it now stops, naming what is there."""
    monkeypatch.setattr(wf, "run_gates", lambda params: pytest.fail("the judge gates ran before the input check"))
    with pytest.raises(StageError, match=r"data/ingest/conversations: no conversations from wildfeedback\.sources "
                       r"\['posts'\]; sources present: \['logs', 'other'\]: ingest wrote no conversations of them "
                       r"\(see data/ingest/details\.json: an empty file\?\), or has not run since they were added "
                       r"to ingest\.sources: run `dvc repro`$"):
        run_stage(tmp_path, monkeypatch, FakeEngine(), sources=["posts"])
    assert not (tmp_path / "data/wildfeedback").exists()


def test_untagged_conversations_get_their_language_identified():
    english = ["How do I descale my espresso machine at home?", "Use citric acid.", "And how often should I do it?",
               "Monthly.", "What about the milk frother, does it need the same treatment?"]
    french = ["Comment détartrer ma machine à espresso à la maison ?", "Avec de l'acide citrique.",
              "Et à quelle fréquence faut-il le faire ?", "Tous les mois.", "Et le mousseur à lait, pareil ?"]
    rows = frame([conv("u-en", english, language=None), conv("u-fr", french, language=None)])
    kept, counts = wf.select_conversations(rows, make_params(min_user_turns=2).wildfeedback)
    assert kept["conversation_id"].to_list() == ["u-en"] and kept.columns == rows.columns
    assert counts["language:en"] == 1 and counts["language:fr"] == 1 and counts["dropped_language"] == 1


def test_a_conversation_of_unknown_language_is_dropped_by_default_as_the_paper_keeps_english_only():
    """params.yaml kept an untagged conversation whose language cannot be identified (no letter in its user
    turns): the paper keeps English conversations only; ``keep_unknown_language: true`` is the opt-in."""
    turns = ["12 * 34 = ?", "408", "??? 12 * 34", "12 * 34 = 408.", "408 !!!", "Yes."]
    rows = frame([conv("u-num", turns, language=None)])
    kept, counts = wf.select_conversations(rows, make_params().wildfeedback)
    assert kept.is_empty() and counts["dropped_language"] == 1 and counts["language:und"] == 1
    kept, _ = wf.select_conversations(rows, make_params(keep_unknown_language=True).wildfeedback)
    assert kept["conversation_id"].to_list() == ["u-num"]


def test_feedback_turns_index_messages_and_skip_the_first_user_turn():
    turns = wf.feedback_turns(frame([CONVS[2], CONVS[3]]))
    assert turns.select("conversation_id", "user_turn", "target_turn").rows() == [
        ("c3", 3, 2), ("c3", 5, 4), ("c4", 2, 1)]
    assert turns["prev"][0].startswith("DNS is a long story")
    # the rules' context: the messages two and four before, when the user's (c3 opens with a system message)
    assert turns.filter(pl.col("conversation_id") == "c3").select("prev_user", "prev_user2").rows() == [
        ("Explain DNS.", None), ("Way too long, make it shorter.", "Explain DNS.")]


def test_the_stages_rule_pass_sees_the_earlier_requests_a_resend_is_dsat():
    """The resend rules need ``prev_user`` / ``prev_user2``: the stage gives them to the detector, so a request
    sent again (right after the answer, or after a turn in between) is Revision, as the WildChat scores say."""
    rows = frame([conv("r1", ["Write a haiku about autumn leaves.", "Autumn is a season of change.",
                              "Write a haiku about autumn leaves."]),
                  conv("r2", ["Flink 1.17 打包", "使用 mvn package 命令。", "flink-maven-plugin 拉取不到", "请检查仓库配置。",
                              "Flink 1.17 打包"])])
    out = wf.rules_signals(wf.feedback_turns(rows), make_params().wildfeedback)
    verdicts = {(r["conversation_id"], r["user_turn"]): (r["dsat"], r["rationale"]) for r in out.to_dicts()}
    assert verdicts[("r1", 2)] == (True, "Revision:resend")
    assert verdicts[("r2", 4)] == (True, "Revision:resend_earlier")


def test_recall_sample_is_seeded_and_batch_independent():
    turns = pl.DataFrame({"conversation_id": [f"c{i}" for i in range(4000)], "user_turn": [2] * 4000})
    s = det.recall_sample(turns, 0.1, seed=0)
    assert 300 < s.sum() < 500
    assert s[:1000].to_list() == det.recall_sample(turns[:1000], 0.1, seed=0).to_list()
    assert s.to_list() != det.recall_sample(turns, 0.1, seed=1).to_list()
    assert det.recall_sample(turns, 0.0, seed=0).sum() == 0


def test_recall_sample_is_pinned_across_versions():
    # xxh3 of (conversation_id, user_turn) through pipeline.ids, not polars' native hash (which may change
    # on a polars upgrade): these exact turns are sampled on any machine and version.
    turns = pl.DataFrame({"conversation_id": [f"c{i}" for i in range(20)], "user_turn": [i % 3 for i in range(20)]})
    assert det.recall_sample(turns, 0.3, seed=7).arg_true().to_list() == [0, 1, 10, 16]


def test_routing_per_combine_rule():
    """llm_overrides / agree send every rule hit; add_recall sends only uncertain verdicts and the sample."""
    turns, convs, counts = wf.scan(frame(), make_params(recall_sample=0.0, combine="llm_overrides").wildfeedback)
    sent = turns.filter(pl.col("to_model"))
    assert sent.height == turns.filter(pl.col("sat") | pl.col("dsat")).height > 0
    assert set(convs["conversation_id"]) == {"c1", "c2", "c3", "c8"}
    assert counts["turns"] == turns.height == 8
    add = make_params(recall_sample=0.0).wildfeedback
    scanned = wf.scan(frame(), add)[0]  # the rules' own confidence: only their unsure verdicts go to the model
    assert add.combine == "add_recall" and scanned["to_model"].to_list() == (scanned["confidence"] < add.rule_confidence).to_list()
    rated = turns.with_columns(confidence=pl.Series([0.95, 0.4, None, 0.79, 0.8, 0.1, 0.99, 1.0]))
    assert det.route(rated, add).to_list() == [False, True, False, True, False, True, False, False]
    assert det.route(rated, make_params(recall_sample=1.0).wildfeedback).to_list() == (
        (pl.Series([False, True, False, True, False, True, False, False]) | ~(rated["sat"] | rated["dsat"])).to_list())


def test_llm_detector_outputs_are_schema_valid_and_failures_are_recorded():
    params = make_params(recall_sample=0.0, combine="llm_overrides")
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    send = det.with_context(turns.filter(pl.col("to_model")), convs, 6)
    send = send.with_columns(pl.when(pl.col("conversation_id") == "c8").then(pl.lit("FAIL")).otherwise("text")
                             .alias("text"))
    out = det.llm_detect(send.select("conversation_id", "user_turn", "text", "prev", "context").to_arrow(),
                         FakeEngine(), sampling=params.llm.sampling, template_text=prompt("detect"), max_chars=100)
    judged = pl.from_arrow(out)
    for row in judged.filter(pl.col("ok")).to_dicts():  # every answer re-validates against the schema
        det.FeedbackJudgment.model_validate({k: row[k] for k in det.FeedbackJudgment.model_fields})
    assert judged.filter(~pl.col("ok"))["conversation_id"].to_list() == ["c8", "c8"]
    signals, failed = det.combine(turns, judged, "rules+llm", "llm_overrides")
    assert set(signals.filter(pl.col("detector") == "llm")["conversation_id"]) == {"c1", "c2", "c3"}
    assert failed.height == 2 and signals.height == turns.height  # rules verdict kept for the failed turns
    only_llm, _ = det.combine(turns, judged, "llm", "add_recall")
    assert "c8" not in only_llm["conversation_id"].to_list()
    assert "[rules: " in signals.filter(pl.col("detector") == "llm")["rationale"][0]


def test_a_silent_model_cannot_wipe_out_confident_rule_signals(tmp_path, monkeypatch, capsys):
    """#15: rules+llm with a model that says "no signal" everywhere (as the random tiny model does)."""
    for d in "abc":
        (tmp_path / d).mkdir()
    lowered = {"gates": {"detector": 0.0, "judge": 0.75}, "summarize": []}
    rules = run_stage(tmp_path / "a", monkeypatch, FakeEngine(), detector="rules", summarize=[])
    added = run_stage(tmp_path / "b", monkeypatch, FakeEngine(detector="silent"), recall_sample=1.0, **lowered)
    verdicts = ["conversation_id", "user_turn", "sat", "dsat", "sat_categories", "dsat_categories"]
    sides = ["pair_id", "prompt", "chosen", "rejected"]
    assert added[0].select(verdicts).equals(rules[0].select(verdicts))
    assert added[1].select(sides).equals(rules[1].select(sides))
    assert kinds(added[1]) == ["natural_revision"]
    rule_negatives = rules[0].num_rows - rules[3]["details"]["signals"]["turns_with_signal"]
    assert added[3]["details"]["model_detector"]["sent_to_model"] == rule_negatives == 2
    assert added[3]["collapse_warnings"] == 0
    capsys.readouterr()
    over = run_stage(tmp_path / "c", monkeypatch, FakeEngine(detector="silent"), combine="llm_overrides", **lowered)
    assert over[1].num_rows == 0 and over[3]["details"]["model_detector"]["model_cleared"] == 6
    assert over[3]["collapse_warnings"] == 3 and over[3]["details"]["collapse"] == [
        "DSAT signals fell from 2 (rules alone) to 0 with detector rules+llm (combine: llm_overrides)",
        "SAT signals fell from 4 (rules alone) to 0 with detector rules+llm (combine: llm_overrides)",
        "natural revision pairs fell from 1 (rules alone) to 0 with detector rules+llm (combine: llm_overrides)"]
    assert "WARNING wildfeedback: output collapsed: DSAT signals fell" in capsys.readouterr().out


def test_zero_pairs_from_dsat_signals_is_a_collapse_and_a_share_at_the_fraction_is_not():
    """With the rules alone (no model to blame), DSAT signals that give no pair at all are still a collapse
    warning; a model step that keeps exactly ``collapse_fraction`` of what the rules found is not one."""
    from types import SimpleNamespace

    from stages.wildfeedback_report import collapse_warnings

    cfg = SimpleNamespace(collapse_fraction=0.1, combine="llm_overrides")

    def figures(dsat: int, rules_dsat: int, out: int) -> dict:
        return {"signals": {"turns_dsat": dsat, "turns_sat": 5}, "rules": {"turns_dsat": rules_dsat, "turns_sat": 5,
                "natural_revisions": 0}, "pairs": {"natural_revision_found": 0, "out": out}}

    assert collapse_warnings(figures(3, 3, 0), cfg, "rules") == ["0 pairs from 3 DSAT signals (see details.dropped)"]
    assert collapse_warnings(figures(3, 3, 1), cfg, "rules") == []
    assert collapse_warnings(figures(2, 20, 1), cfg, "rules+llm") == []
    assert collapse_warnings(figures(1, 20, 1), cfg, "rules+llm") == [
        "DSAT signals fell from 20 (rules alone) to 1 with detector rules+llm (combine: llm_overrides)"]


def test_a_collapse_already_named_is_not_warned_again_as_zero_pairs():
    from types import SimpleNamespace

    from stages.wildfeedback_report import collapse_warnings

    cfg = SimpleNamespace(collapse_fraction=0.1, combine="llm_overrides")
    d = {"signals": {"turns_dsat": 1, "turns_sat": 5}, "rules": {"turns_dsat": 20, "turns_sat": 5,
         "natural_revisions": 0}, "pairs": {"natural_revision_found": 0, "out": 0}}
    assert collapse_warnings(d, cfg, "rules+llm") == [
        "DSAT signals fell from 20 (rules alone) to 1 with detector rules+llm (combine: llm_overrides)"]


def test_a_console_warning_is_printed_once_not_also_logged_as_a_warning(capsys, caplog):
    """Under `prefpipe run` the CLI's log handler shows WARNING records: a warning both printed and logged
    at that level reached the console twice ("WARNING pipeline.gates: ..." then "WARNING ...")."""
    from pipeline.gates import check_gate
    from pipeline.metrics import say

    caplog.set_level("WARNING")
    check_gate("wildfeedback", "judge", "tiny", [True, False] * 4, min_accuracy=0.0, key="wildfeedback.gates.judge")
    check_gate("wildfeedback", "judge", "tiny", [True, False] * 4, min_accuracy=0.75, key="wildfeedback.gates.judge",
               on_failure="withhold")
    say("wildfeedback: output collapsed: DSAT signals fell from 2 (rules alone) to 0")
    out = capsys.readouterr().out
    assert out.count("WARNING wildfeedback: gate lowered for the judge (tiny)") == 1
    assert out.count("GATE FAILED wildfeedback: the judge (tiny)") == 1
    assert out.count("WARNING wildfeedback: output collapsed") == 1
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def test_add_recall_lets_the_model_decide_uncertain_rule_verdicts(tmp_path, monkeypatch):
    """With the rules' `confidence`, add_recall sends the uncertain verdicts, and the model decides them."""
    rules_detect = wf.detect
    monkeypatch.setattr(wf, "detect", lambda turns, **kw: rules_detect(turns, **kw).with_columns(
        confidence=pl.when(pl.col("text").str.contains("Thanks!")).then(0.3).otherwise(0.9)))
    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: FakeEngine(detector="silent"), raising=False)
    params = make_params(recall_sample=0.0)
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    assert turns.filter(pl.col("to_model"))["conversation_id"].to_list() == ["c2"]
    signals, _, stats = wf.run_detector(turns, convs, params, tmp_path)
    assert stats["sent_to_model"] == 1 and stats["model_cleared"] == 1  # "Thanks! Now write...": the model says no
    assert signals.filter(pl.col("detector") == "rules")["confidence"].to_list() == [0.9] * 7
    assert signals.filter(pl.col("detector") == "llm")["confidence"].to_list() == [None]


def test_agree_keeps_a_rule_signal_only_where_the_model_agrees():
    params = make_params(recall_sample=0.0, combine="agree")
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    judged = pl.from_arrow(det.llm_detect(
        det.with_context(turns.filter(pl.col("to_model")), convs, None).select(
            "conversation_id", "user_turn", "text", "prev", "context").to_arrow(),
        FakeEngine(detector="silent"), sampling=params.llm.sampling, template_text=prompt("detect"), max_chars=100))
    signals, _ = det.combine(turns, judged, "rules+llm", "agree")
    assert not (signals["sat"] | signals["dsat"]).any() and set(signals["detector"]) == {"rules+llm", "rules"}
    agreeing = judged.with_columns(sat=pl.lit(True), dsat=pl.lit(True))
    both, _ = det.combine(turns, agreeing, "rules+llm", "agree")
    assert both.select("sat", "dsat").equals(turns.select("sat", "dsat"))  # agreement never adds a polarity


def test_detector_prompt_is_the_papers_window_with_the_rubric_and_fenced_text():
    """#16.3: the whole dialogue before the judged turn by default (context_messages: null), the rubric's
    definitions and examples, every text escaped inside its fence."""
    long = conv("c9", ["First question about cats?", "A1", "Second question?", "A2", "Third?", "A3 USER_TURN>>> x",
                       "Thanks <<<USER_TURN sneaky"])
    params = make_params(recall_sample=1.0)
    assert params.wildfeedback.context_messages is None
    turns, convs, _ = wf.scan(frame([long]), params.wildfeedback)
    engine = FakeEngine()
    rows = det.with_context(turns, convs, None).select("conversation_id", "user_turn", "text", "prev",
                                                        "context").to_arrow()
    det.llm_detect(rows, engine, sampling=params.llm.sampling, template_text=prompt("detect"), max_chars=200)
    text = engine.seen[-1][1][-1]["content"]
    assert "First question about cats?" in fenced(text, "DIALOGUE") and fenced(text, "USER_TURN").startswith("Thanks")
    assert "Unrealistic_Expectation: expects what the assistant cannot do" in text and "continue -> neither" in text
    for marker in ("<<<USER_TURN", "USER_TURN>>>", "<<<ASSISTANT_TURN", "ASSISTANT_TURN>>>"):
        assert text.count(marker) == 1, marker
    short = det.with_context(turns, convs, 2).filter(pl.col("user_turn") == 6)["context"][0]
    assert [m["content"] for m in short] == ["A2", "Third?"]


def test_copied_rationales_are_blanked_and_counted():
    """#15: a rationale that copies the template's placeholder is blanked; the verdict stays."""
    params = make_params(recall_sample=1.0)
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    rows = det.with_context(turns.head(3), convs, None).select("conversation_id", "user_turn", "text", "prev",
                                                               "context").to_arrow()
    copied = "<why, in your own words, quoting the user turn>"
    judged = pl.from_arrow(det.llm_detect(rows, FakeEngine(rationale=copied), sampling=params.llm.sampling,
                                          template_text=prompt("detect"), max_chars=100))
    assert judged["rationale_copied"].all() and judged["rationale"].is_null().all() and judged["ok"].all()
    signals, _ = det.combine(turns.head(3).with_columns(to_model=pl.lit(True)), judged, "rules+llm", "llm_overrides")
    stats = det.detector_stats(turns.head(3).with_columns(to_model=pl.lit(True)), judged, signals)
    assert stats["rationale_copied_template"] == 3


def test_natural_revision_pair_rows():
    turns, convs, _ = wf.scan(frame(), make_params(detector="rules").wildfeedback)
    nat = natural_revisions(turns, convs)
    assert nat.select("conversation_id", "target_turn", "chosen", "rejected").rows() == [
        ("c1", 1, "Canberra.", "Sydney.")]
    assert [m["role"] for m in nat["prompt"][0]] == ["user"]


def test_no_import_cycle_between_the_wildfeedback_modules():
    """#8: the pair builder and the detector load without the driver."""
    code = ("import sys, stages.wildfeedback_pairs, stages.wildfeedback_models, stages.wildfeedback_detect; "
            "print('stages.wildfeedback' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tiny_engine_detector_summaries_and_judge_are_schema_valid():
    """The real built-in tiny model through the real prompts: every answer parses against the schemas."""
    from pipeline.config import resolve_role
    from pipeline.llm import get_engine
    from stages.wildfeedback_models import PreferenceSummary, judge, summarize
    from stages.wildfeedback_pairs import summary_candidates

    params = make_params(detector="rules+llm", recall_sample=1.0)
    cfg = params.wildfeedback
    detector = resolve_role(params.llm, cfg.roles.detector)
    engine = get_engine(detector)
    turns, convs, _ = wf.scan(frame(CONVS[:3]), cfg)
    send = det.with_context(turns.filter(pl.col("to_model")), convs, cfg.context_messages).head(2)
    out = pl.from_arrow(det.llm_detect(send.select("conversation_id", "user_turn", "text", "prev", "context")
                                       .to_arrow(), engine, sampling=detector.sampling,
                                       template_text=prompt("detect"), max_chars=300))
    assert out.height == 2 and out["ok"].all(), out["error"].to_list()
    for row in out.to_dicts():
        row["rationale"] = row["rationale"] or ""  # blanked when it copies the template
        det.FeedbackJudgment.model_validate({k: row[k] for k in det.FeedbackJudgment.model_fields})
    summarizer = resolve_role(params.llm, cfg.roles.summarizer)
    cands = summary_candidates(turns, convs, ["dsat"]).head(1)
    summ = pl.from_arrow(summarize(cands.to_arrow(), get_engine(summarizer), sampling=summarizer.sampling,
                                   template_text=prompt("summarize"), context_messages=4, max_chars=300))
    for row in summ.to_dicts():
        if row["error"] is None:
            PreferenceSummary.model_validate({k: row[k] for k in ("preference", "reasonable", "safe")})
        else:
            assert row["preference"] is None
    table = cands.select("prompt", pl.col("answer").alias("chosen"), pl.col("feedback").alias("rejected"),
                         pl.lit("Be concise. Use Python").alias("preference")).to_arrow()
    judged = judge(table, get_engine(params.llm), template_text=prompt("judge"), context_messages=4, max_chars=300)
    for a, b in zip(judged["p_chosen_first"].to_pylist(), judged["p_chosen_second"].to_pylist(), strict=True):
        assert 0 <= a <= 1 and 0 <= b <= 1


def test_llm_overrides_and_agree_send_the_recall_sample_of_unflagged_turns_too():
    turns = wf.scan(frame(), make_params(recall_sample=0.0).wildfeedback)[0]
    assert not (turns["sat"] | turns["dsat"]).all()  # some turns the rules left unflagged
    for combine in ("llm_overrides", "agree"):
        assert det.route(turns, make_params(recall_sample=1.0, combine=combine).wildfeedback).all()


class _AboutAnEarlierTurn:
    """A model that hears feedback in the turn but says it is not about the answer just before."""

    def generate(self, prompts, n=1, sampling=None, schema=None):
        return [[det.FeedbackJudgment(rationale="thanks for an earlier answer", sat=True, sat_categories=["Gratitude"],
                                      dsat=True, dsat_categories=["Factual_Error"], refers_to_preceding=False)]
                for _ in prompts]


def test_a_verdict_about_an_earlier_turn_is_no_signal():
    params = make_params(recall_sample=1.0)
    rows = pa.Table.from_pylist([{"conversation_id": "c1", "user_turn": 2, "text": "Thanks, the first one was wrong.",
                                  "prev": "Here is another poem.", "context": [{"role": "user", "content": "A poem."}]}])
    out = det.llm_detect(rows, _AboutAnEarlierTurn(), sampling=params.llm.sampling, template_text=prompt("detect"),
                         max_chars=100).to_pylist()[0]
    assert out["ok"] and out["refers_to_preceding"] is False
    assert (out["sat"], out["dsat"], out["sat_categories"], out["dsat_categories"]) == (False, False, [], [])


def test_the_stage_clears_its_checkpoints_once_its_outputs_are_committed(tmp_path, monkeypatch):
    """Only `prefpipe run` cleared the model steps' checkpoints, so `wildfeedback.main()` run any other way
    left them behind; the stage now clears them itself, after its outputs are committed (not before: a run
    that fails writing them resumes from them)."""
    checkpoints = tmp_path / ".prefpipe/checkpoints/wildfeedback"
    at_commit = []
    commit = wf.commit_outputs

    def committing(out):
        at_commit.append(len(list(checkpoints.rglob("chunk-*.parquet"))))
        commit(out)

    monkeypatch.setattr(wf, "commit_outputs", committing)
    run_stage(tmp_path, monkeypatch, FakeEngine())
    assert len(at_commit) == 1 and at_commit[0] > 0  # still there while the outputs were swapped in
    assert not checkpoints.exists()
