"""Judge gates and resume: a stage that fails after its gates (here: writing its outputs, the disk full) resumes
without asking its judges' probes again, and so decides each gate from the answers its first run got; a gate
that stops the stage drops its probes' checkpoint, so the rerun after a fix asks them again; a judge whose
every probe call was refused is named as such (``pipeline.gates.check_gate``'s ``errors``), in every stage."""

from __future__ import annotations

import errno
import os

import polars as pl
import pytest

from pipeline.gates import JudgeGateError
from pipeline.llm.base import FailedValue
from stages import dove, pugc, pugc_io, pugc_judge, selfie, selfie_reward
from stages import wildfeedback as wf
from stages.wildfeedback_models import judge_gate
from tests import pugc_fakes, selfie_fakes, wildfeedback_fakes
from tests.dove_fakes import ScriptedJudge, load_helpful

REFUSED = "request refused: HTTP 400: content filter"


def _first_run_fails_writing_outputs(monkeypatch, module, run) -> None:
    """``run()`` once with ``module``'s ``commit_outputs`` failing (the disk full), after the stage's gates."""
    def full(out):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(module, "commit_outputs", full)
        with pytest.raises(OSError):
            run()


# --- resumed: no probe asked again ------------------------------------------------------------------------


def test_a_resumed_dove_run_does_not_ask_the_judge_its_probes_again(params, real, tmp_path, monkeypatch):
    from tests.test_dove_stage import _stage_params, _write_helpful

    sft, cond = load_helpful(real)
    monkeypatch.chdir(tmp_path)
    _write_helpful(tmp_path, sft[:10], cond[:5])
    engine = ScriptedJudge()
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: engine, raising=False)
    p = _stage_params(params)
    _first_run_fails_writing_outputs(monkeypatch, dove, lambda: dove.main(p))
    kept = (tmp_path / ".prefpipe/checkpoints/dove/gate_judge").is_dir()
    engine.calls.clear()
    dove.main(p)
    assert engine.calls == []  # on main's code: the 48 probe orders again (the comparisons came from their checkpoint)
    assert kept
    assert (tmp_path / "data/dove/details.json").exists() and not (tmp_path / ".prefpipe/checkpoints/dove").exists()


def test_a_resumed_selfie_run_does_not_teacher_force_its_probes_again(tmp_path, monkeypatch):
    from tests.selfie_fakes import _project

    engines = {"pol": selfie_fakes.FakeEngine("pol", scale=1.0), "ref": selfie_fakes.FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    _first_run_fails_writing_outputs(monkeypatch, selfie, lambda: selfie.main(params))
    for engine in engines.values():
        engine.calls.clear()
    selfie.main(params)
    assert [c for e in engines.values() for c in e.calls] == []  # on main's code: the probes teacher-forced again, both roles
    assert not (tmp_path / ".prefpipe/checkpoints/selfie").exists()


def test_a_resumed_wildfeedback_run_does_not_ask_its_detector_and_judge_their_probes_again(tmp_path, monkeypatch):
    engine = wildfeedback_fakes.FakeEngine()
    _first_run_fails_writing_outputs(monkeypatch, wf, lambda: wildfeedback_fakes.run_stage(tmp_path, monkeypatch, engine))
    gates = {d.name for d in (tmp_path / ".prefpipe/checkpoints/wildfeedback").iterdir() if d.name.startswith("gate")}
    engine.seen.clear()
    *_, details = wildfeedback_fakes.run_stage(tmp_path, monkeypatch, engine)
    assert engine.seen == []  # on main's code: the detector's and the judge's probes again
    assert gates == {"gate_detect", "gate_judge"}
    assert {g["passed"] for g in details["gates"].values()} == {True} and len(details["gates"]) == 2


def test_a_resumed_pugc_run_does_not_ask_its_judges_their_probes_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pugc_fakes.write_documents(tmp_path / "docs", [{"doc_id": f"d{i}", "text": t, "title": None, "source": "posts"}
                                                   for i, t in enumerate(pugc_fakes.POSTS[:3])])
    engine = pugc_fakes.use_engine(monkeypatch, pugc_fakes.FakeEngine("sharp"))
    params = pugc_fakes.make_params(gates={"query_filter": 0.75, "scorer": 0.75})
    _first_run_fails_writing_outputs(monkeypatch, pugc_io,
                                     lambda: pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out"))
    engine.calls.clear()
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert engine.calls == [] and {g["passed"] for g in m["gates"].values()} == {True}


# --- a judge whose every probe call was refused ---------------------------------------------------------


class RefusingScorer(pugc_fakes.FakeEngine):
    """Answers the query filter; the server refuses every 1-5 score request (a content filter) while
    ``refusing``."""

    refusing = True

    def choose(self, prompts, options):
        if options == pugc_judge.SCORES and self.refusing:
            self.calls.append(("choose", [p[-1]["content"] for p in prompts], len(options)))
            return [[FailedValue(REFUSED)] * 5 for _ in prompts]
        return super().choose(prompts, options)


def test_a_pugc_scorer_refused_on_every_probe_is_named_and_the_rerun_after_the_fix_asks_again(tmp_path,
                                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    pugc_fakes.write_documents(tmp_path / "docs", [{"doc_id": "d0", "text": pugc_fakes.POSTS[0], "title": None,
                                                    "source": "posts"}])
    engine = pugc_fakes.use_engine(monkeypatch, RefusingScorer("sharp"))
    params = pugc_fakes.make_params(gates={"query_filter": 0.75, "scorer": 0.75})
    # on main's code: "does not discriminate on its probe set: 0 of 36 probes right", no word of the refusals
    with pytest.raises(JudgeGateError, match=r"^pugc: the scorer judge \(tiny\) answered none of its probes: all 24 "
                                             rf"calls failed \(first: {REFUSED}\)"):
        pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert not (tmp_path / ".prefpipe/checkpoints/pugc/gate_scorer").exists()  # asked again on the rerun
    engine.refusing = False  # the server's filter fixed: no setting changed
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert m["gates"]["scorer"]["passed"] and m["gates"]["scorer"]["failed_calls"] == 0


def test_a_pugc_query_filter_refused_on_the_relevant_probes_is_not_counted_right():
    """p(True) NaN (a refused request) compared above the threshold in polars, so a filter refused on every
    relevant probe that drops the others passed its gate with every probe right without having kept one."""
    probes = pugc_judge.query_filter_probes()
    refused = probes.with_columns(p_true=pl.when(pl.col("answerable")).then(float("nan")).otherwise(0.1))
    correct, detail, contrasts = pugc_judge.grade_query_filter(refused, 0.5)
    assert sum(correct) == 12 and set(contrasts.values()) == {0.5}
    assert detail["kept"] == {"placeholder": 0, "relevant": 0, "unrelated": 0}
    assert detail["p_true_mean"]["relevant"] is None


def test_a_pugc_query_filter_refused_on_the_unanswerable_probes_is_not_counted_right_for_dropping_them():
    """The other side: a refused probe is dropped by the stage, but that is no right answer on a query the
    document does not answer either, or a filter refused on all of those would pass as a perfect one."""
    probes = pugc_judge.query_filter_probes()
    refused = probes.with_columns(p_true=pl.when(pl.col("answerable")).then(0.9).otherwise(float("nan")))
    correct, detail, contrasts = pugc_judge.grade_query_filter(refused, 0.5)
    assert sum(correct) == 12 and set(contrasts.values()) == {0.5}
    assert detail["kept"] == {"placeholder": 0, "relevant": 12, "unrelated": 0}


def test_a_wildfeedback_judge_refused_on_every_probe_is_named_not_a_traceback(tmp_path, monkeypatch):
    class Refusing(wildfeedback_fakes.FakeEngine):
        def choose(self, prompts, options):
            return [[FailedValue(REFUSED)] * 2 for _ in prompts]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pipeline.llm.get_engine", lambda cfg: Refusing(), raising=False)
    params = wildfeedback_fakes.make_params(_execution={"on_gate_failure": "error"})
    # on main's code: TypeError: '>' not supported between instances of 'NoneType' and 'float'
    with pytest.raises(JudgeGateError, match=rf"judge \(tiny\) answered none of its probes: all 8 calls failed "
                                             rf"\(first: {REFUSED}\)"):
        judge_gate(params)


def test_a_selfie_reference_refused_on_every_probe_is_named_and_its_pairs_are_wrong_not_ties(tmp_path, monkeypatch):
    from tests.selfie_fakes import _project

    class Refusing(selfie_fakes.FakeEngine):
        def logprobs(self, prompts, responses):
            return [type(lp)(FailedValue(REFUSED), lp.n_tokens) for lp in super().logprobs(prompts, responses)]

    engines = {"pol": selfie_fakes.FakeEngine("pol"), "ref": Refusing("ref")}
    params = _project(tmp_path, monkeypatch, engines, "withhold", policy_model="pol", reference_model="ref",
                      gates={"reward": 0.75})
    sel = params.selfie
    report = selfie_reward.reward_gate(sel, params.execution, sel.role(params.llm, "policy"),
                                       sel.role(params.llm, "reference"))
    # on main's code: 12 of 24 right (every unscored pair a tie), and no word of the refusals
    assert (report["correct"], report["failed_calls"], report["passed"]) == (0, 24, False)
    assert report["detail"]["margin_mean"] is None


def test_a_gate_at_chance_is_lowered_and_a_judge_that_failed_some_calls_is_graded_on_its_answers():
    from pipeline.gates import check_gate

    def gate(correct, **kw):
        return check_gate("dove", "judge", "m", correct, key="dove.gates.judge", **kw)

    at_chance = gate([True, False] * 4, min_accuracy=0.5, on_failure="withhold")
    assert (at_chance["passed"], at_chance["lowered"], at_chance["labels"]) == (True, True, "used, gate lowered")
    # one refused call of eight is no outage: the judge is named for its answers, with the failure counted
    with pytest.raises(JudgeGateError, match=r"does not discriminate.*4 of 8 probes right.*1 of 8 probe calls failed"):
        gate([True, False] * 4, min_accuracy=0.75, errors=[None] * 7 + [REFUSED])
    assert gate([], min_accuracy=0.75, on_failure="withhold")["passed"] is False  # no probes: nothing proven
