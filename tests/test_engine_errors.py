"""An engine that fails as a whole (its server down, bad settings, retries exhausted) is reported as one
line naming the stage, the role and the backend, keeping the finished batches for a rerun; a judge whose
every probe call failed is reported as that, not as a judge at chance."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipeline import cli
from pipeline.config import LLM, Execution, LLMOverride, load_params, resolve_role, section_roles
from pipeline.errors import ModelLoadError, StageError
from pipeline.execute import Checkpoint, map_batches
from pipeline.gates import JudgeGateError, check_gate
from pipeline.llm.identity import model_identity
from pipeline.llm.openai_client import ServerError
from tests.llm_configs import execution_config, llm_config
from tests.params_edits import parent_of, write

ROOT = Path(__file__).resolve().parents[1]
DOWN = "http://127.0.0.1:9/v1"  # nothing listens on port 9


class _FailsFrom:
    """An engine whose ``choose`` fails as a whole from row ``at`` on (a server that went away)."""

    def __init__(self, at: int):
        self.at, self.name = at, "fake"

    def choose(self, prompts, options):
        if any(int(p[0]["content"]) >= self.at for p in prompts):
            raise ServerError("model 'fake': the server rejected the API key (HTTP 401); check llm.api_key_env")
        return [[1.0, 0.0] for _ in prompts]


def _pick(batch: pa.Table, engine) -> pa.Table:
    out = engine.choose([[{"role": "user", "content": str(i)}] for i in batch["i"].to_pylist()], ["a", "b"])
    return pa.table({"i": batch["i"], "p": [p[0] for p in out]})


def _execution() -> Execution:
    return execution_config(batch_size=4, checkpoint_rows=100, target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20,
                            on_gate_failure="error")


def _llm() -> LLM:
    return llm_config(backend="openai", base_url=DOWN, batch_size=4, enable_prefix_caching=False, structured_retries=0,
                      sampling={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "stop": [], "seed": 0})


def test_an_engine_failure_names_the_step_and_role_and_the_finished_batches_are_kept(tmp_path):
    table = pa.table({"i": list(range(20))})
    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")
    with pytest.raises(StageError) as e:
        map_batches(table, _pick, execution=_execution(), engine=_llm(), checkpoint=ck, desc="pugc scoring (judge)",
                    engine_factory=lambda cfg: _FailsFrom(9))
    assert str(e.value) == ("pugc scoring (judge) on the openai backend: model 'fake': the server rejected the API "
                            "key (HTTP 401); check llm.api_key_env")
    assert [p.name[:31] for p in (tmp_path / "ck").glob("chunk-*")] == ["chunk-000000000000-000000000008"]
    seen = []

    def counted(batch, engine):
        seen.extend(batch["i"].to_pylist())
        return _pick(batch, engine)

    out = map_batches(table, counted, execution=_execution(), engine=_llm(), checkpoint=ck,
                      engine_factory=lambda cfg: _FailsFrom(10**9))
    assert seen == list(range(8, 20)) and out["i"].to_pylist() == list(range(20))  # resumed after the kept rows


@pytest.fixture(autouse=True)
def _outputs_outside_the_checkout(monkeypatch):
    """`prefpipe run` here runs in a project under tmp_path: from the checkout it recovers, writes into and
    discards the staging of data/<stage>, a developer's real outputs (or those of a `dvc repro` running there)."""
    real = cli.prepare_outputs

    def prepare(stage, module):
        out = cli.output_folder(module)
        assert out is None or not Path(out).resolve().is_relative_to(ROOT), f"{stage} would write into the checkout"
        return real(stage, module)

    monkeypatch.setattr(cli, "prepare_outputs", prepare)


def _params(tmp_path: Path, edit) -> object:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_params(path)


@pytest.mark.openai
def test_a_pugc_judge_behind_a_server_that_is_down_fails_the_stage_in_one_line(tmp_path, monkeypatch, capsys):
    """The real openai engine against a closed port: the gate's first engine step raises ``RequestsFailed``,
    which comes out of the stage as a ``StageError`` naming the step and role (the CLI prints it as one
    line and exits 1, no traceback)."""
    from stages.pugc_judge import judge_gates

    params = _params(tmp_path, lambda d: d["pugc"]["roles"].update(
        judge={"backend": "openai", "base_url": DOWN, "max_retries": 0, "timeout_s": 5}))
    gen, judge = (resolve_role(params.llm, getattr(params.pugc.roles, r)) for r in ("generator", "judge"))  # as stages/pugc.py
    monkeypatch.chdir(tmp_path)
    # The query filter is the generator's (tiny here, its gate lowered); the scorer's gate is the judge's first call.
    with pytest.raises(StageError, match=r"^pugc gate_scorer \(judge\) on the openai backend: .*choose: \d+ of "
                                         r"\d+ requests failed .*connection"):
        judge_gates(params, gen, judge)

    monkeypatch.setattr("stages.pugc.main", lambda p: judge_gates(p, gen, judge))
    assert cli.main(["run", "pugc", "--params", str(tmp_path / "params.yaml")]) == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("prefpipe")]  # not progress
    assert len(err) == 1 and err[0].startswith("prefpipe: pugc gate_scorer (judge) on the openai backend:")


@pytest.mark.openai
def test_a_detector_behind_a_server_that_is_down_fails_the_stage_in_one_line_not_its_gate(tmp_path):
    """The detector's calls are structured ones, and a server that is down fails them as it fails every other
    engine call (``RequestsFailed``: a rerun may succeed), never as 16 failed probes: under the default
    on_gate_failure: withhold those made a "passed: false" gate report, and the stage went on with the rules
    alone and committed outputs without the model's verdicts, lost to an outage. (A judge whose every probe
    call was refused still gets the gate's "answered none of its probes": test_gate_messages_tell_...)"""
    from stages.wildfeedback_detect import detector_gate

    def edit(d):
        d["tiny_overrides"].pop("wildfeedback", None)
        d["wildfeedback"]["roles"]["detector"] = {"backend": "openai", "base_url": DOWN, "max_retries": 0,
                                                  "timeout_s": 5, "sampling": {"max_new_tokens": 64}}

    params = _params(tmp_path, edit)
    assert params.execution.on_gate_failure == "withhold"
    with pytest.raises(StageError, match=r"^wildfeedback detector gate \(detector\) on the openai backend: model "
                                         r"'tiny' at http://127.0.0.1:9/v1: generate: 16 of 16 requests failed \(first: "
                                         r"prompt 0: connection failed .*none was answered: check that the server is up and "
                                         r"serves this model; .*a rerun resends only the failed ones$") as e:
        detector_gate(params)
    assert type(e.value) is StageError and "\n" not in str(e.value)


@pytest.mark.openai
def test_a_dove_judge_behind_a_server_that_is_down_fails_the_stage_in_one_line_not_its_gate(tmp_path):
    """DOVE's judge step made every exception a comparison's failure row: with its server down, all 24 probe
    calls "failed", the gate withheld the judge (on_gate_failure: withhold) and the stage committed its outputs
    with 0 pairs and exit 0, an outage recorded as a judge that cannot judge."""
    import polars as pl

    from stages.dove import judge_comparisons

    def edit(d):
        d["tiny_overrides"].pop("dove", None)
        d["dove"]["roles"]["judge"] = {"backend": "openai", "base_url": DOWN, "max_retries": 0, "timeout_s": 5}

    params = _params(tmp_path, edit)
    assert params.execution.on_gate_failure == "withhold"
    judge = resolve_role(params.llm, params.dove.roles.judge)
    ck = {step: Checkpoint(tmp_path / step, fingerprint="fp") for step in ("gate_judge", "judge")}
    with pytest.raises(StageError, match=r"^dove judge probes \(judge\) on the openai backend: model 'tiny' at "
                                         r"http://127.0.0.1:9/v1: choose: \d+ of \d+ requests failed \(first: prompt 0: "
                                         r"connection failed") as e:
        judge_comparisons(pl.DataFrame(), params.dove, params.execution, judge, ck)
    assert type(e.value) is StageError and "\n" not in str(e.value)


def test_gate_messages_tell_failed_calls_from_a_judge_at_chance():
    with pytest.raises(JudgeGateError, match=r"answered none of its probes: all 2 calls failed \(first: HTTP 503"):
        check_gate("dove", "judge", "m", [False] * 4, min_accuracy=0.75, key="dove.gates.judge",
                   errors=["HTTP 503: overloaded", "HTTP 503: overloaded"])
    with pytest.raises(JudgeGateError, match=r"does not discriminate.*2 of 4 probes right.*1 of 2 probe calls failed"):
        check_gate("dove", "judge", "m", [True, False, True, False], min_accuracy=0.75, key="dove.gates.judge",
                   errors=[None, "HTTP 503: overloaded"])
    report = check_gate("dove", "judge", "m", [True] * 4, min_accuracy=0.75, key="dove.gates.judge", errors=[None, None])
    assert report["passed"] and report["failed_calls"] == 0


def test_ctrl_c_keeps_the_finished_batches_and_the_cli_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    table = pa.table({"i": list(range(20))})
    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")

    def interrupted(batch, engine):
        if batch["i"][0].as_py() >= 12:
            raise KeyboardInterrupt
        return _pick(batch, engine)

    with pytest.raises(KeyboardInterrupt):
        map_batches(table, interrupted, execution=_execution(), engine=_llm(), checkpoint=ck,
                    engine_factory=lambda cfg: _FailsFrom(10**9))
    assert [p.name[:31] for p in (tmp_path / "ck").glob("chunk-*")] == ["chunk-000000000000-000000000012"]

    def stage(params):
        raise KeyboardInterrupt

    _params(tmp_path, lambda d: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("stages.curry.main", stage)
    assert cli.main(["run", "curry", "--params", str(tmp_path / "params.yaml")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prefpipe: interrupted; a stage's outputs change only when it finishes, and the finished batches "
                   "of its model steps are checkpointed: run it again to resume"]


def test_ctrl_c_in_audit_or_publish_does_not_speak_of_stages_and_checkpoints(tmp_path, monkeypatch, capsys):
    """The run message (stage outputs, checkpointed model batches) is not true of audit or publish."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.release_folder.release_problem", interrupted)
    assert cli.main(["audit", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["prefpipe audit: interrupted; run it again"]
    monkeypatch.setattr("pipeline.hub.publish", interrupted)
    assert cli.main(["publish", "--repo-id", "me/x", "--path", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "prefpipe publish: interrupted; nothing local changed: re-run the same command to resume the upload "
        "(files already committed are skipped)"]


def test_a_reader_that_leaves_early_is_not_a_traceback(tmp_path):
    """`prefpipe inspect ... | head` printed a BrokenPipeError traceback once head had what it wanted."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["x" * 500] * 20_000}), tmp_path / "big.parquet")  # ~10 MB of rows shown
    proc = subprocess.run(f"{sys.executable} -m pipeline.cli inspect {tmp_path / 'big.parquet'} --rows 20000 "
                          "--width 1000 | head -c 1 > /dev/null", shell=True, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("name", "why"), [
    ("prefpipe-tests/no-such-model", "not in the local cache, and the Hugging Face Hub cannot be asked ("),
    ("no such/model id", "not in the local cache, and the Hugging Face Hub cannot be asked (HFValidationError: "),
    ("models/sft", "not in the local cache, and the Hugging Face Hub cannot be asked ("),
])
def test_a_hub_model_that_cannot_be_fetched_fails_at_once_in_one_line(tmp_path, name, why):
    """No network (HF_HUB_OFFLINE unset), or a misspelt id: one request, one line. It was ~50 s of
    'Retrying in 8s' warnings from transformers (10 lines) before the error. The line says no folder of that
    name is there either: `models/sft` (docs/real_models.md's `hf download ... --local-dir models/NAME`, not yet
    downloaded) was read as a Hub id, and the error spoke only of the cache and the network."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))  # nothing listens on port 9
    code = ("import sys; from pipeline.config import LLM; from pipeline.errors import ModelLoadError\n"
            "from pipeline.llm.hf import TransformersEngine\n"
            f"cfg = LLM.model_validate({{**LLM.model_validate(__import__('yaml').safe_load(open('params.yaml'))['llm'])"
            f".model_dump(), 'model': {name!r}}})\n"
            "try: TransformersEngine(cfg)\n"
            "except ModelLoadError as e: sys.exit(str(e))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Retrying" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"model {name!r}: no folder of that name in {ROOT}; {why}")
    assert lines[0].endswith("check the id and your network, or set llm.model (or the role's model) to tiny, smollm2, "
                             "a Hugging Face model id (ORG/NAME; offline: one in the local cache) or a local folder "
                             "holding a model")


def test_a_max_model_len_too_small_for_the_judge_prompts_fails_the_stage_in_one_line(tmp_path, monkeypatch, capsys):
    """Was a 40-line traceback ending in ``InputTooLong`` (``llm.max_model_len: 10`` with the tiny model)."""
    from stages.pugc_judge import judge_gates

    params = _params(tmp_path, lambda d: d["llm"].update(max_model_len=64))
    gen, judge = (resolve_role(params.llm, getattr(params.pugc.roles, r)) for r in ("generator", "judge"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("stages.pugc.main", lambda p: judge_gates(p, gen, judge))
    assert cli.main(["run", "pugc", "--params", str(tmp_path / "params.yaml")]) == 1
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("prefpipe")]  # not progress
    assert len(err) == 1 and err[0].startswith("prefpipe: pugc gate_query_filter (generator) on the transformers backend: "
                                               "model 'tiny': prompt + response of ")
    assert "does not fit llm.max_model_len=64" in err[0] and err[0].endswith("or raise max_model_len")


def _params_with(tmp_path: Path, **keys):
    """params.yaml with dotted ``keys`` set (``selfie.policy_model="./ckpt"``), loaded from ``tmp_path``."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in keys.items():
        node, last = parent_of(data, dotted)
        node[last] = value
    return load_params(write(tmp_path, data))


@pytest.mark.parametrize(("keys", "section", "role", "named"), [
    ({"selfie.policy_model": "./ckpt"}, "selfie", "policy", "selfie.policy_model"),  # no such folder
    ({"pugc.roles.judge.model": "EMPTY"}, "pugc", "judge", "pugc.roles.judge.model"),  # a folder with no model
    ({"llm.model": "./ckpt"}, "dove", "judge", "llm.model"),  # a role that inherits llm's model
])
def test_a_model_that_cannot_load_names_the_params_key_that_set_it(tmp_path, monkeypatch, keys, section, role, named):
    """Was "set llm.model (or the role's model)" whichever key held the bad model (selfie.policy_model here)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    params = _params_with(tmp_path, **{k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in keys.items()})
    cfg = section_roles(params, section)[role]
    with pytest.raises(ModelLoadError) as e:
        map_batches(pa.table({"i": [1, 2]}), _pick, execution=_execution(), engine=cfg)
    error = str(e.value)
    assert f"; set {named} to tiny, smollm2, a Hugging Face model id" in error and "role's model" not in error
    again = LLM.model_validate(cfg.model_dump())  # the key is no setting: no dump, identity or fingerprint has it
    assert again.model_dump_json() == cfg.model_dump_json() and named not in cfg.model_dump_json()
    assert model_identity(again) == model_identity(cfg) and again.model_key == "llm.model"


def _openai_judge(tmp_path: Path, **judge) -> LLM:
    """PUGC's judge, its server (nothing listens) and ``judge``'s settings set on the role, not on llm."""
    keys = {"pugc.roles.judge": {"backend": "openai", "base_url": DOWN, "max_retries": 0, **judge}}
    return section_roles(_params_with(tmp_path, **keys), "pugc")["judge"]


@pytest.mark.openai
def test_an_openai_role_s_errors_name_the_keys_set_on_the_role(tmp_path, monkeypatch):
    """Said "llm.max_retries=0" / "no answer within llm.timeout_s=7 s" / "llm.api_key_env (or the role's)" when
    the role set them (pugc.roles.judge.*), so the user edited llm, which the role overrides."""
    import openai

    from pipeline.execute_step import build_engine

    monkeypatch.chdir(tmp_path)
    judge = _openai_judge(tmp_path, timeout_s=7)
    with pytest.raises(StageError) as e:
        map_batches(pa.table({"i": [1, 2]}), _pick, execution=_execution(), engine=judge, desc="pugc scoring (judge)")
    assert "connection failed" in str(e.value) and str(e.value).endswith(
        "; pugc.roles.judge.max_retries=0); none was answered: check that the server is up and serves this model; "
        "the answers that came back are cached, so a rerun resends only the failed ones")
    engine = build_engine(judge.shipped())  # as a map_batches worker builds it (another process on Ray)
    hung = openai.APITimeoutError.__new__(openai.APITimeoutError)  # what the client raises after timeout_s
    assert engine.transport._describe(hung) == "no answer within pugc.roles.judge.timeout_s=7 s"

    monkeypatch.delenv("PREFPIPE_NO_SUCH_KEY", raising=False)
    with pytest.raises(StageError, match=r": pugc.roles.judge.api_key_env names PREFPIPE_NO_SUCH_KEY, which is not set"):
        map_batches(pa.table({"i": [1, 2]}), _pick, execution=_execution(), desc="pugc scoring (judge)",
                    engine=_openai_judge(tmp_path, api_key_env="PREFPIPE_NO_SUCH_KEY"))


def test_a_role_s_keys_are_those_params_yaml_spells_and_llm_s_where_it_inherits(tmp_path):
    params = _params_with(tmp_path, **{"pugc.roles.judge": {"timeout_s": 7, "sampling": {"temperature": 0.5}},
                                       "selfie.roles.policy": {"max_retries": 2}})
    judge, policy = section_roles(params, "pugc")["judge"], section_roles(params, "selfie")["policy"]
    assert judge.naming("llm.timeout_s=7, llm.max_retries=6, llm.sampling.temperature, llm.sampling.top_p, "
                        "pipeline.llm.hf") == ("pugc.roles.judge.timeout_s=7, llm.max_retries=6, pugc.roles.judge."
                                               "sampling.temperature, llm.sampling.top_p, pipeline.llm.hf")
    assert [policy.key(f) for f in ("model", "max_retries", "timeout_s")] == [
        "selfie.policy_model", "selfie.roles.policy.max_retries", "llm.timeout_s"]
    assert LLM.unshipped(judge.shipped()).key("timeout_s") == "pugc.roles.judge.timeout_s"
    assert resolve_role(params.llm, LLMOverride(timeout_s=1)).key("timeout_s") == "the role's timeout_s"
