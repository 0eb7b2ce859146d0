"""Selfie / SPA stage end to end with scripted engines: cut-off and blank samples, the reward gate (METHODS.md
§3). Kept iterations are in test_selfie_iterations.py; implicit rewards from two real tiny models, pair picking
and the gate's params in test_selfie_reward.py."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipeline.gates import JudgeGateError, load_probes
from pipeline.llm.chat import InputTooLong
from stages import selfie, selfie_split
from tests.selfie_fakes import (
    FakeEngine,
    _metrics,
    _out,
    _pairs,
    _project,
)

# --- the stage end to end (scripted engines) --------------------------------------------------------


def _run_failing_to_write_outputs(monkeypatch) -> int:
    """``prefpipe run selfie`` with the disk full while its outputs are committed: the CLI's exit code."""
    import errno
    import os

    from pipeline import cli

    def full(out):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(selfie, "commit_outputs", full)
        return cli.main(["run", "selfie"])


def test_a_run_that_fails_writing_its_outputs_resumes_from_its_model_steps(tmp_path, monkeypatch, capsys):
    # Selfie (and WildFeedback) cleared each step's checkpoint as soon as the step ended, so a full disk (or a
    # kill) while the outputs were written cost every model call again. Now the stage clears them once its
    # outputs are committed.
    import pipeline.config
    from pipeline import cli

    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    monkeypatch.setattr(pipeline.config, "load_params", lambda path: params)
    assert _run_failing_to_write_outputs(monkeypatch) == 1
    assert "No space left on device (ENOSPC)" in capsys.readouterr().err
    assert not (tmp_path / "data/selfie/.staging").exists()  # no half-written outputs hold the space
    checkpoints = tmp_path / ".prefpipe/checkpoints/selfie"
    assert {d.name for d in checkpoints.iterdir() if any(d.glob("chunk-*.parquet"))} == {
        "sample", "logprob_policy", "logprob_reference", "gate_logprob_policy", "gate_logprob_reference"}
    for engine in engines.values():
        engine.calls.clear()
    assert cli.main(["run", "selfie"]) == 0
    assert [c for e in engines.values() for c in e.calls if c[0] == "generate"] == []  # nothing sampled again
    assert not checkpoints.exists()  # cleared once the outputs are in place


def test_a_policy_folder_retrained_in_place_before_the_resume_is_sampled_again(tmp_path, monkeypatch, caplog):
    """The policy is a local folder a training run overwrites (same file names and sizes) between a run that
    failed writing its outputs and the rerun: the policy's checkpoints were made by the old weights, so its
    steps start over (they were reused, the output mixing two models), and details.json names the new weights."""
    import pipeline.config
    from pipeline import cli

    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old weights")
    engines = {str(folder): FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model=str(folder), reference_model="ref")
    monkeypatch.setattr(pipeline.config, "load_params", lambda path: params)
    assert _run_failing_to_write_outputs(monkeypatch) == 1
    assert any((tmp_path / ".prefpipe/checkpoints/selfie/sample").glob("chunk-*.parquet"))
    (folder / "model.safetensors").write_bytes(b"new weights")  # re-trained in place
    for engine in engines.values():
        engine.calls.clear()
    assert cli.main(["run", "selfie"]) == 0
    assert [c for c in engines[str(folder)].calls if c[0] == "generate"]  # sampled again, by the new weights
    said = [r.getMessage() for r in caplog.records if "starting the step over" in r.getMessage()]
    # sample, logprob_policy and the gate's probes (gate_logprob_policy), a line each: the gate is decided again
    assert len(said) == 3 and all(str(folder) in m for m in said)
    from pipeline.llm.identity import folder_identity

    policy = _metrics(tmp_path)["models"]["policy"]
    assert policy == {"model": str(folder), "identity": f"local:{folder_identity(folder)}"}


def test_stage_writes_seed_and_iteration_pairs_responses_and_metrics(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", refine_fraction=0.5
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    split = metrics["split"]
    assert split["prompts"] == 40 and split["labelled_prompts"] == 10
    assert split["assigned"] == {"seed": 1, "test": 1, "pool_1": 5, "pool_2": 13, "pool_3": 20}
    prompts = _out(tmp_path, "prompts", "prompts")
    responses = _out(tmp_path, "responses", "responses")
    pairs = _pairs(tmp_path)
    assert prompts.num_rows == 5 and responses.num_rows == 10
    assert set(responses.column("prompt_id").to_pylist()) == set(prompts.column("prompt_id").to_pylist())
    # r = logprob_pol - logprob_ref = -len + 2 len = len(text): the longer sample wins
    for r in responses.to_pylist():
        assert r["score"] == len(r["text"])
        d = json.loads(r["detail"])
        assert (d["logprob_policy"], d["logprob_reference"]) == (-len(r["text"]), -2.0 * len(r["text"]))
    assert pairs.group_by("source").len().sort("source").rows() == [("iteration_1", 5), ("seed", 1)]
    it = pairs.filter(pl.col("source") == "iteration_1")
    assert all(c[0]["content"].endswith("#1!") for c in it.get_column("chosen").to_list())
    assert int(it.get_column("noisy").sum()) == 2 == metrics["pairs"]["noisy"]  # floor(0.5 * 5)
    lineage = [json.loads(x) for x in it.get_column("lineage")]
    assert {(x["chosen_finish_reason"], x["rejected_finish_reason"]) for x in lineage} == {("stop", "stop")}
    assert metrics["rewards"]["all_zero"] is False
    assert metrics["dropped"] == {"prompt_too_long": 0, "generation_failed": 0, "cut_off": 0, "empty": 0, "nonfinite_reward": 0, "same_text": 0, "tie": 0,
                                  "noisy": 0, "withheld": 0}
    assert (metrics["same_model"], metrics["logprob_passes"]) == (False, 2)
    assert metrics["gates"]["reward"]["labels"] == "used, gate lowered"
    assert _out(tmp_path, "test", "pairs").column("source").to_pylist() == ["test"]
    assert not (tmp_path / ".prefpipe/checkpoints/selfie").exists()  # the stage clears them once committed

    # the same inputs and params give byte-identical shards
    before = {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs").rglob("*.parquet")}
    selfie.main(params)
    assert {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs").rglob("*.parquet")} == before


def test_stage_drops_noisy_pairs_when_asked(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path,
        monkeypatch,
        engines,
        policy_model="pol",
        reference_model="ref",
        refine_fraction=0.5,
        drop_noisy=True,
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height == 3 and not pairs.get_column("noisy").any()
    assert metrics["dropped"]["noisy"] == 2 and metrics["pairs"]["written"] == 3


def test_stage_with_policy_equal_reference_says_so_and_runs_one_logprob_pass(tmp_path, monkeypatch, capsys):
    same = FakeEngine("same")
    params = _project(
        tmp_path,
        monkeypatch,
        {"same": same},
        policy_model="same",
        reference_model="same",
        gates={"reward": 0.75},
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert (
        metrics["rewards"]["all_zero"] is True
        and "identical log-probabilities" in metrics["rewards"]["warning"]
    )
    assert metrics["dropped"]["tie"] == 5 and metrics["pairs"]["written"] == 0
    assert _out(tmp_path, "responses", "responses").num_rows == 10
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed"]
    # one log-probability pass (the reference's would be identical), said on the console and recorded;
    # the gate (0.75 here) is not failed: there are no labels to gate
    assert [c for c, _ in same.calls].count("logprobs") == 1
    assert (metrics["same_model"], metrics["logprob_passes"]) == (True, 1)
    gate = metrics["gates"]["reward"]
    assert gate["passed"] is None and "same model" in gate["skipped"] and gate["probes"] == 0
    assert "policy and reference are the same model (same)" in capsys.readouterr().out


def test_stage_names_a_misspelt_source(tmp_path, monkeypatch):
    params = _project(tmp_path, monkeypatch, {}, pair_sources=["sample_seed_pair"])
    with pytest.raises(selfie_split.SourceError, match="sample_seed_pair"):
        selfie.main(params)


def test_stage_with_an_empty_pool_writes_seed_pairs_and_empty_tables(tmp_path, monkeypatch):
    split = {"seed": 2, "pools": [0, 30], "test": 1, "shuffle_seed": 0}
    params = _project(tmp_path, monkeypatch, {}, split=split)  # no engine is ever built
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert metrics["sample"] == {"prompts": 0, "responses": 0, "prompt_too_long": 0, "generation_failed": 0,
                                 "cut_off": 0, "empty_responses": 0}
    assert metrics["split"]["assigned"] == {"seed": 2, "test": 1, "pool_2": 30, "rest": 7}
    assert _out(tmp_path, "responses", "responses").num_rows == 0
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed", "seed"]


# --- cut-off samples, equal texts ---------------------------------------------------------------------


def test_cut_off_samples_are_dropped_before_teacher_forcing_and_counted(tmp_path, monkeypatch):
    script = {
        f"pool question {i}": [f"answer {i}, complete.", f"a longer answer {i} that was cut ..."]
        for i in range(30)
    }
    script["pool question 19"] = ["short.", "a longer, finished answer."]
    engines = {"pol": FakeEngine("pol", scale=1.0, script=script), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    metrics = _metrics(tmp_path)
    responses = _out(tmp_path, "responses", "responses").column("text").to_pylist()
    assert not any(t.endswith("...") for t in responses)
    pool = [m[0]["content"] for m in _out(tmp_path, "prompts", "prompts").column("messages").to_pylist()]
    cut = [q for q in pool if q in script and q != "pool question 19"]
    assert metrics["dropped"]["cut_off"] == metrics["sample"]["cut_off"] == len(cut) > 0
    assert len(responses) == 2 * len(pool) - len(cut)
    # a prompt left with one answer cannot make a pair, so a cut-off answer is never paired
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height == len(pool) - len(cut) == 1
    assert not any(
        r[0]["content"].endswith("...") for r in pairs["rejected"].to_list() + pairs["chosen"].to_list()
    )


class TooLongFor(FakeEngine):
    """A scripted policy whose ``llm.max_model_len`` one prompt does not fit (``InputTooLong``, as the transformers
    engine raises for a real 2,162-token UltraFeedback prompt under max_model_len 2048)."""

    def __init__(self, name: str, too_long: str, **kw):
        super().__init__(name, **kw)
        self.too_long = too_long

    def generate(self, prompts, n=1, sampling=None, schema=None):
        if any(p[-1]["content"] == self.too_long for p in prompts):
            raise InputTooLong(f"model {self.name!r}: prompt of 2162 tokens does not fit llm.max_model_len=2048")
        return super().generate(prompts, n, sampling, schema)


def test_a_pool_prompt_the_policy_cannot_hold_is_dropped_and_counted_not_the_stage(tmp_path, monkeypatch):
    # The stage failed on the first pool prompt longer than max_model_len (a real UltraFeedback prompt under
    # the tiny model): one long prompt cost the whole iteration. Now its samples are dropped and counted.
    engines = {"pol": TooLongFor("pol", "pool question 19", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pool = [m[0]["content"] for m in _out(tmp_path, "prompts", "prompts").column("messages").to_pylist()]
    assert "pool question 19" in pool
    assert metrics["dropped"]["prompt_too_long"] == metrics["sample"]["prompt_too_long"] == 2  # its k=2 samples
    assert metrics["dropped"]["generation_failed"] == 0
    assert metrics["dropped"]["empty"] == 0  # counted once, as prompt_too_long: its empty text is no empty answer
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height == len(pool) - 1
    assert "pool question 19" not in [p[-1]["content"] for p in pairs.get_column("prompt").to_list()]


def test_the_stage_prints_its_summary_and_says_to_raise_the_token_budget_when_most_samples_are_cut(
        tmp_path, monkeypatch, capsys):
    """SmolLM2 as the policy had 8 of its 10 samples cut at 300 tokens: the run made no pair and printed only
    `selfie: done`; the summary line now counts each step and names the key to raise."""
    script = {f"pool question {i}": ["cut one ...", "cut two ..."] for i in range(30)}
    script["pool question 19"] = ["short.", "a longer, finished answer."]
    engines = {"pol": FakeEngine("pol", scale=1.0, script=script), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pool, cut = metrics["sample"]["prompts"], metrics["sample"]["cut_off"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("selfie: iteration 1:"))
    assert metrics["pairs"]["written"] == 1  # "1 pair, plus 1 seed pair": it said "1 pairs, plus 1 seed pairs"
    assert f"{pool} pool prompts -> {2 * pool} samples -> {metrics['sample']['responses']} scored responses -> " \
           "1 pair, plus 1 seed pair" in line
    assert f"cut_off {cut}" in line
    assert f"{cut} of {2 * pool} samples were cut at selfie.sampling.max_new_tokens (8) and dropped: raise it" in line


def test_blank_samples_are_dropped_before_teacher_forcing_and_counted(tmp_path, monkeypatch):
    """A blank answer can out-score every real one (the empty string is cheap under the policy); it is no
    answer, so it is dropped before scoring, counted, and never a chosen."""
    script = {f"pool question {i}": ["", "   ", f"answer {i}, complete.", f"another answer {i}."] for i in range(30)}
    # reward = -2 len + len: the shorter the better, so a blank answer would be every prompt's chosen
    engines = {"pol": FakeEngine("pol", scale=2.0, script=script), "ref": FakeEngine("ref", scale=1.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", samples_per_prompt=4)
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pool = [m[0]["content"] for m in _out(tmp_path, "prompts", "prompts").column("messages").to_pylist()]
    blank = 2 * sum(q in script for q in pool)
    assert metrics["dropped"]["empty"] == metrics["sample"]["empty_responses"] == blank > 0
    assert all(t.strip() for t in _out(tmp_path, "responses", "responses").column("text").to_pylist())
    pairs = _pairs(tmp_path).filter(pl.col("source") == "iteration_1")
    assert pairs.height > 0 and all(c[0]["content"].strip() for c in pairs.get_column("chosen").to_list())


def test_samples_that_show_nothing_are_blank_too(tmp_path, monkeypatch):
    """U+FFFD alone (bytes the tokenizer could not decode) or zero-width marks alone say nothing: dropped as
    ``empty`` like white space, so neither Selfie nor Curry-DPO / DOVE (which read its responses) pairs them
    (the samples run's "\\ufffd" answer became 4 pairs that export removed as unprintable_text)."""
    script = {f"pool question {i}": ["\ufffd", "\u200b\u2060", f"answer {i}, complete.", f"another answer {i}."]
              for i in range(30)}
    engines = {"pol": FakeEngine("pol", scale=2.0, script=script), "ref": FakeEngine("ref", scale=1.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", samples_per_prompt=4)
    selfie.main(params)
    metrics = _metrics(tmp_path)
    pool = [m[0]["content"] for m in _out(tmp_path, "prompts", "prompts").column("messages").to_pylist()]
    assert metrics["dropped"]["empty"] == 2 * sum(q in script for q in pool) > 0
    texts = _out(tmp_path, "responses", "responses").column("text").to_pylist()
    assert texts and not any(t in ("\ufffd", "\u200b\u2060") for t in texts)

# --- the reward gate ----------------------------------------------------------------------------------


PROBE_GOOD = {p["good"] for p in load_probes("selfie_reward")}


def test_a_length_only_reward_is_at_chance_and_stops_the_stage(tmp_path, monkeypatch):
    probes = load_probes("selfie_reward")
    assert sum(len(p["good"]) > len(p["bad"]) for p in probes) * 2 == len(probes)  # length-balanced
    pol, ref = FakeEngine("pol", scale=1.0), FakeEngine("ref", scale=2.0)  # r = len(text)
    params = _project(
        tmp_path,
        monkeypatch,
        {"pol": pol, "ref": ref},
        policy_model="pol",
        reference_model="ref",
        gates={"reward": 0.75},
    )
    with pytest.raises(
        JudgeGateError, match=r"reward judge \(pol vs ref\).*12 of 24 probes right.*selfie.gates.reward"
    ):
        selfie.main(params)
    assert ("generate", 5) not in pol.calls  # the probes ran first: nothing was sampled


def test_a_reward_that_ties_every_probe_scores_exactly_chance_and_stops_the_stage(tmp_path, monkeypatch):
    """r(good) == r(bad) answers "r(good) > r(bad)?" no and "r(bad) > r(good)?" no: one of two right per
    probe, never a pass for a reward that cannot tell the answers apart."""
    engines = {"pol": FakeEngine("pol", scale=1.0, offset=5.0), "ref": FakeEngine("ref", scale=1.0)}  # r = 5
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", gates={"reward": 0.75}
    )
    with pytest.raises(JudgeGateError, match=r"12 of 24 probes right"):
        selfie.main(params)


def test_a_reward_that_prefers_the_good_answers_passes_and_withholding_emits_no_labels(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0, liked=PROBE_GOOD, bonus=1000.0), "ref": FakeEngine("ref")}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", gates={"reward": 0.75}
    )
    selfie.main(params)
    gate = _metrics(tmp_path)["gates"]["reward"]
    assert (gate["accuracy"], gate["passed"], gate["lowered"], gate["labels"]) == (1.0, True, False, "used")
    assert gate["detail"]["good_wins"] == 12 and gate["detail"]["confidence_mean"] > 0.99

    # the same pool under a reward at chance, withheld: seed pairs written, no iteration pairs or scores
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(
        tmp_path,
        monkeypatch,
        engines,
        "withhold",
        policy_model="pol",
        reference_model="ref",
        gates={"reward": 0.75},
    )
    selfie.main(params)
    metrics = _metrics(tmp_path)
    assert metrics["gates"]["reward"]["labels"] == "withheld" and metrics["dropped"]["withheld"] == 5
    assert _pairs(tmp_path).get_column("source").to_list() == ["seed"]
    assert _out(tmp_path, "responses", "responses").num_rows == 0
    assert not any(c == "generate" for c, _ in engines["pol"].calls)
