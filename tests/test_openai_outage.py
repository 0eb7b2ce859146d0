"""A transient failure (a server down, overloaded, rate-limited: retries exhausted) is never a row's outcome,
structured calls included: the call raises ``RequestsFailed`` once its other requests are done and cached,
the step's checkpoint keeps only answered rows, and the rerun once the server is back resends only the
failed requests and gives what an uninterrupted run gives. Before, a structured sample became a
``GenerationFailure`` ("request failed: ..."): the WildFeedback detector and summaries and PUGC's queries
and sampled votes counted it as a failed row, the step checkpointed it, and the rerun reused it (a gate
failed again and again, or the stage committed outputs without those rows)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import resolve_params, resolve_role
from pipeline.errors import StageError
from pipeline.llm import GenerationFailure, sample_seed
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed
from pipeline.llm.structured import NoAnswer, generate_validated
from tests import test_openai as base
from tests.test_openai import KEY_ENV, PROMPTS, ROOT, SAMPLING, Query, config

pytestmark = pytest.mark.openai
server, env = base.server, base.env  # the loopback server and a clean cache/key per test

OVERLOADED = (503, "Service Unavailable: overloaded")
MARK = "haiku"  # in PROMPTS[2] only


def _bodies_since(server, start: int) -> list[dict]:
    return [body for _, _, _, body in server.log[start:]]


def test_generate_validated_leaves_an_unanswered_slot_alone_and_retries_the_invalid_ones():
    calls = []

    def sample(prompts, slots, attempt):
        calls.append((prompts, slots, attempt))
        return [[NoAnswer("HTTP 503") if p == "down" else ("{}" if attempt == 0 else '{"query": "q"}', False)
                 for _ in idx] for p, idx in zip(prompts, slots, strict=True)]

    out = generate_validated(sample, ["down", "up"], 1, Query, retries=2)
    assert out == [[NoAnswer("HTTP 503")], [Query(query="q")]]
    assert calls[1] == (["up"], [[0]], 1) and len(calls) == 2  # the unanswered slot is never re-asked


def test_a_structured_sample_the_server_cannot_answer_fails_the_call_and_the_rerun_equals_an_uninterrupted_run(
        server, tmp_path, monkeypatch):
    engine = OpenAIEngine(config(server, max_retries=1, structured_retries=2))
    server.refuse[MARK] = OVERLOADED
    start = len(server.log)
    with pytest.raises(RequestsFailed, match=r"generate: 2 of 6 requests failed \(first: prompt 2: HTTP 503: Service "
                                             r"Unavailable: overloaded; llm.max_retries=1\); the answers that came "
                                             r"back are cached, so a rerun resends only the failed ones") as e:
        engine.generate(PROMPTS, n=2, sampling=SAMPLING, schema=Query)
    assert "\n" not in str(e.value)
    # Not re-asked with the next attempt's seed: only attempt 0 of each of its samples (each tried twice).
    seeds = [b["seed"] for b in _bodies_since(server, start) if MARK in str(b["messages"])]
    assert sorted(seeds) == sorted(2 * [sample_seed(3, PROMPTS[2], j, 0) for j in (0, 1)])

    server.refuse.clear()
    start = len(server.log)
    got = engine.generate(PROMPTS, n=2, sampling=SAMPLING, schema=Query)
    assert _bodies_since(server, start) and all(MARK in str(b["messages"]) for b in _bodies_since(server, start))
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "uninterrupted"))
    assert got == OpenAIEngine(config(server, max_retries=1, structured_retries=2)).generate(
        PROMPTS, n=2, sampling=SAMPLING, schema=Query)


def test_a_refused_structured_sample_is_still_its_rows_failure_saying_refused(server):
    server.refuse[MARK] = (400, "The response was filtered due to the prompt triggering content management policy")
    out = OpenAIEngine(config(server, max_retries=0, structured_retries=1)).generate(
        PROMPTS, n=1, sampling=SAMPLING, schema=Query)
    assert all(isinstance(q, Query) for [q] in out[:2])
    assert out[2] == [GenerationFailure(error="request refused: HTTP 400: The response was filtered due to the "
                                              "prompt triggering content management policy", raw="", attempts=2)]


# --- stages: the step's checkpoint and the rerun ------------------------------------------------------


def test_wildfeedback_detector_outage_keeps_no_failure_row_and_the_resume_equals_an_uninterrupted_run(
        server, tmp_path, monkeypatch):
    from stages import wildfeedback as wf
    from tests.wildfeedback_fakes import frame, make_params

    role = {"backend": "openai", "base_url": server.url, "api_key_env": KEY_ENV, "max_retries": 0,
            "structured_retries": 0, "batch_size": 2, "sampling": {"max_new_tokens": 64, "temperature": 0.0}}
    params = make_params(detector="llm", roles={"detector": role, "summarizer": {}, "expert": {}, "policy": {},
                                                "judge": {}})
    turns, convs, _ = wf.scan(frame(), params.wildfeedback)
    assert turns.height == 8
    server.refuse["Sure."] = OVERLOADED  # the reply before c8's turn 4: the last batch's second turn
    with pytest.raises(StageError, match=r"^wildfeedback detect \(detector\) on the openai backend: model 'tiny' at "
                                         r".*generate: 1 of 2 requests failed \(first: prompt 1: HTTP 503: .*a rerun "
                                         r"resends only the failed ones$"):
        wf.run_detector(turns, convs, params, tmp_path / "ck")
    kept = [pq.read_table(p).to_pylist() for p in (tmp_path / "ck" / "detect").glob("chunk-*.parquet")]
    assert kept and all(r["ok"] and r["error"] is None for rows in kept for r in rows)  # no outage in a checkpoint

    server.refuse.clear()
    start = len(server.log)
    signals, failed, stats = wf.run_detector(turns, convs, params, tmp_path / "ck")
    assert len(server.log) - start == 1  # the failed turn only: its batch's other turn was cached
    assert failed.height == 0 and stats["model_failures"] == 0 and stats["model_ok"] == 8
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "uninterrupted"))
    again, _, again_stats = wf.run_detector(turns, convs, params, tmp_path / "ck-uninterrupted")
    assert signals.sort("conversation_id", "user_turn").equals(again.sort("conversation_id", "user_turn"))
    assert stats == again_stats


def test_a_pugc_scorer_gate_run_during_an_outage_passes_once_the_server_is_back(server, tmp_path, monkeypatch):
    """Sampled votes are structured calls. During an outage the gate step failed every vote, checkpointed them,
    and the scorer 'did not discriminate'; every rerun reused that checkpoint and failed the gate again."""
    from stages.pugc_judge import judge_gates

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["execution"]["on_gate_failure"] = "error"
    data["pugc"].update(scoring="sampled", n_judgments=2)
    data["pugc"]["roles"]["judge"] = {"backend": "openai", "base_url": server.url, "api_key_env": KEY_ENV,
                                      "max_retries": 0}
    data["tiny_overrides"]["pugc"]["gates"] = {"query_filter": 0.0, "scorer": 0.25}  # tiny's weakest scores 0.5
    params = resolve_params(data)
    gen, judge = (resolve_role(params.llm, getattr(params.pugc.roles, r)) for r in ("generator", "judge"))
    monkeypatch.chdir(tmp_path)
    server.refuse['"role"'] = OVERLOADED  # every chat request: the votes
    with pytest.raises(StageError, match=r"^pugc gate_scorer \(judge\) on the openai backend: .*generate: \d+ of "
                                         r"\d+ requests failed \(first: prompt 0: HTTP 503: ") as e:
        judge_gates(params, gen, judge)
    assert type(e.value) is StageError and "does not discriminate" not in str(e.value)

    server.refuse.clear()
    reports = judge_gates(params, gen, judge)
    assert reports["scorer"]["passed"] and reports["scorer"]["detail"]["unscored"] == 0
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")  # no checkpoint
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "uninterrupted"))
    assert judge_gates(params, gen, judge) == reports
