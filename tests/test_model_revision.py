"""``llm.revision``: a Hub model's branch, tag or commit, resolved to a commit once (the cache, else the Hub) and
loaded exactly, so the weights identity recorded at stage start is the weights loaded, and a resume after the
first download keeps its checkpoints. Offline: a fake cache layout and a fake ``HfApi`` (no network here)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import huggingface_hub
import pyarrow as pa
import pytest
import yaml
from huggingface_hub import constants as hub_constants

import pipeline.llm
from pipeline.config import LLM, ParamsError, Sampling, fingerprint, load_params, resolve_role
from pipeline.execute import Checkpoint, map_batches
from pipeline.llm import identity, resolve_model
from pipeline.llm.base import LogProb
from pipeline.llm.identity import model_identity
from tests.llm_configs import execution_config, llm_config

ROOT = Path(__file__).resolve().parents[1]
A, B, S = "a" * 40, "b" * 40, "5" * 40
CFG = dict(dtype="float32", batch_size=4, max_model_len=512, enable_prefix_caching=False, structured_retries=0,
           cpu_threads=1, sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, stop=[], seed=0))
ROWS = pa.table({"id": [f"r{i}" for i in range(12)], "text": [f"question {i}?" for i in range(12)]})


class FakeApi:
    """``HfApi`` answering ``model_info`` with the Hub's current commit ``head`` (None: unreachable)."""

    head: str | None = S
    calls: list = []

    def model_info(self, name, revision=None, timeout=None, **kw):
        FakeApi.calls.append((name, revision))
        if FakeApi.head is None:
            raise ConnectionError("no network")
        return type("Info", (), {"sha": FakeApi.head})()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, online, the Hub answering ``S``; a fresh process (no commit resolved yet)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "calls", [])
    monkeypatch.setattr(FakeApi, "head", S)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(identity, "_HUB", {}, raising=False)
    monkeypatch.setattr(identity, "_UNRESOLVED", {}, raising=False)
    monkeypatch.setattr(identity, "_REF_FAILED", set(), raising=False)
    return cache


def cache_model(cache: Path, name: str, commit: str, ref: str | None = "main", files: str | None = None) -> None:
    """What a download leaves: ``snapshots/<commit>`` (``files``' copy, else a config.json), ``refs/<ref>``."""
    repo = cache / f"models--{name.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    if files:
        shutil.copytree(files, snap)
    else:
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def test_a_commit_revision_is_the_identity_without_any_lookup(hub):
    cfg = llm_config(model="org/m", revision=A, **CFG)
    assert model_identity(cfg) == f"hub:{A}" and identity.load_revision(cfg) == A and identity.pinned(cfg) is cfg
    assert FakeApi.calls == []  # neither cached nor asked


def test_a_branch_or_tag_is_resolved_from_the_cache_refs(hub):
    cache_model(hub, "org/m", A)  # refs/main
    cache_model(hub, "org/m", B, ref="v1.0")
    assert model_identity(llm_config(model="org/m", **CFG)) == f"hub:{A}"
    tagged = llm_config(model="org/m", revision="v1.0", **CFG)
    assert model_identity(tagged) == f"hub:{B}" and identity.pinned(tagged).revision == B
    assert FakeApi.calls == []


def test_a_branch_not_cached_is_asked_of_the_hub_once_and_that_commit_loaded(hub):
    cfg = llm_config(model="org/m", revision="dev", **CFG)
    assert model_identity(cfg) == f"hub:{S}"
    FakeApi.head = B  # the branch moves during the run: the run keeps the commit it started with
    assert model_identity(cfg) == f"hub:{S}" and identity.load_revision(cfg) == S and identity.pinned(cfg).revision == S
    assert FakeApi.calls == [("org/m", "dev")]


def test_offline_and_not_cached_is_not_cached_with_one_warning_saying_how_to_pin(hub, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = llm_config(model="org/m", **CFG)
    with caplog.at_level(logging.WARNING, logger="pipeline.llm.identity"):
        assert model_identity(cfg) == model_identity(cfg) == "hub:not-cached"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "\n" not in said[0] and "HF_HUB_OFFLINE" in said[0]
    assert "will not be reused" in said[0] and "revision:" in said[0] and "org/m" in said[0]
    assert FakeApi.calls == [] and identity.load_revision(cfg) is None
    # Online but the Hub unreachable: the same, asked once.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(identity, "_HUB", {}, raising=False)
    FakeApi.head = None
    with caplog.at_level(logging.WARNING, logger="pipeline.llm.identity"):
        assert model_identity(cfg) == model_identity(cfg) == "hub:not-cached"
    assert FakeApi.calls == [("org/m", None)] and "could not be asked" in caplog.records[-1].getMessage()


def _downloading_engine(cache: Path, loaded: list):
    """An engine factory that downloads as ``transformers`` would: the commit it is given, else the Hub's head
    (then ``refs/main``), and scores every row; ``loaded`` gets each revision it was given."""

    def factory(cfg):
        rev = getattr(cfg, "revision", None)
        loaded.append(rev)
        if identity.hub_commit(cfg.model, **({"revision": rev} if rev else {})) is None:
            commit = rev if rev and identity.COMMIT.fullmatch(rev) else FakeApi.head
            cache_model(cache, cfg.model, commit, ref=None if commit == rev else (rev or "main"))

        class Engine:
            def logprobs(self, prompts, responses):
                return [LogProb(-float(len(p[0]["content"])), 1) for p in prompts]

        return Engine()

    return factory


def score(batch: pa.Table, engine, marker: str) -> pa.Table:
    if "r8" in batch["id"].to_pylist() and Path(marker).exists():
        raise RuntimeError("killed at r8")
    prompts = [[{"role": "user", "content": t}] for t in batch["text"].to_pylist()]
    return pa.table({"id": batch["id"], "logprob": [s.logprob for s in engine.logprobs(prompts, ["yes"] * len(prompts))]})


def _first_run_killed_at_r8(cfg: LLM, hub, tmp_path: Path):
    """A first run of ``score`` over ROWS with ``cfg``'s engine, killed at r8: its (checkpoint, marker, loaded)."""
    ck, marker, loaded = Checkpoint(tmp_path / "ck", fingerprint="params"), tmp_path / "kill", []
    marker.touch()
    with pytest.raises(RuntimeError, match="killed at r8"):
        map_batches(ROWS, score, execution=_execution(), engine=cfg, checkpoint=ck, engine_factory=_downloading_engine(
            hub, loaded), fn_kwargs={"marker": str(marker)})
    marker.unlink()
    return ck, marker, loaded


def test_a_resume_after_the_first_download_keeps_its_checkpoints(hub, tmp_path, monkeypatch):
    cfg = llm_config(model="org/m", **CFG)  # no revision, not cached: main's head, asked of the Hub
    ck, marker, loaded = _first_run_killed_at_r8(cfg, hub, tmp_path)
    monkeypatch.setattr(identity, "_HUB", {}, raising=False)  # a new process
    monkeypatch.setattr(pipeline.llm, "_ENGINES", {})
    calls = []
    done = map_batches(ROWS, score, execution=_execution(), engine=cfg, checkpoint=ck,
                       engine_factory=_counting(_downloading_engine(hub, loaded), calls), fn_kwargs={"marker": str(marker)})
    assert done.num_rows == 12 and calls == [4]  # rows 0-7 from the checkpoints: only r8-r11 computed
    assert loaded == [S, S]  # both runs loaded the commit the identity names, not "main"


def test_an_offline_run_after_the_first_online_one_finds_the_branch_it_downloaded(hub, tmp_path, monkeypatch):
    cfg = llm_config(model="org/m", **CFG)  # no revision, not cached: main's head asked of the Hub, that commit loaded
    ck, marker, loaded = _first_run_killed_at_r8(cfg, hub, tmp_path)
    assert (hub / "models--org--m" / "refs" / "main").read_text() == S  # as a download of main records it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cluster: a new process, offline
    monkeypatch.setattr(identity, "_HUB", {})
    monkeypatch.setattr(pipeline.llm, "_ENGINES", {})
    FakeApi.head = B  # main moved meanwhile: offline, the cache's commit is the one
    assert model_identity(cfg) == f"hub:{S}" and identity.load_revision(cfg) == S
    calls = []
    done = map_batches(ROWS, score, execution=_execution(), engine=cfg, checkpoint=ck,
                       engine_factory=_counting(_downloading_engine(hub, loaded), calls), fn_kwargs={"marker": str(marker)})
    assert done.num_rows == 12 and calls == [4] and loaded == [S, S] and FakeApi.calls == [("org/m", None)]


def test_a_snapshot_loaded_by_commit_earlier_gets_its_ref_when_the_hub_names_that_commit(hub):
    cache_model(hub, "org/m", S, ref=None)  # what main's code left: the snapshot, no refs/dev
    assert model_identity(llm_config(model="org/m", revision="dev", **CFG)) == f"hub:{S}"
    assert (hub / "models--org--m" / "refs" / "dev").read_text() == S


@pytest.mark.parametrize(("ref_to", "snapshot", "after"), [
    (A, True, A),  # a ref to a cached snapshot (another download's, maybe newer): left as it is
    (A, False, S),  # a ref to nothing cached (a failed download's): the Hub's answer replaces it
])
def test_a_ref_is_replaced_only_when_it_names_no_cached_snapshot(hub, ref_to, snapshot, after):
    cfg = llm_config(model="org/m", **CFG)
    assert model_identity(cfg) == f"hub:{S}"  # not cached: asked
    cache_model(hub, "org/m", S, ref=None)  # then downloaded by commit
    if snapshot:
        cache_model(hub, "org/m", ref_to)  # meanwhile another download of main, to A
    else:
        (hub / "models--org--m" / "refs").mkdir()
        (hub / "models--org--m" / "refs" / "main").write_text(ref_to)
    identity.record_ref("org/m")
    assert (hub / "models--org--m" / "refs" / "main").read_text() == after


def test_no_ref_is_written_before_the_snapshot_is_there_nor_for_a_pinned_commit(hub, caplog):
    assert model_identity(llm_config(model="org/m", **CFG)) == f"hub:{S}"
    identity.record_ref("org/m")
    assert not (hub / "models--org--m").exists()  # a role never loaded leaves the cache as it was
    cache_model(hub, "org/m", A, ref=None)
    assert model_identity(llm_config(model="org/m", revision=A, **CFG)) == f"hub:{A}"
    identity.record_ref("org/m", A)
    assert not (hub / "models--org--m" / "refs").exists()


def test_a_cache_that_cannot_be_written_is_one_warning(hub, monkeypatch, caplog):
    assert model_identity(llm_config(model="org/m", **CFG)) == f"hub:{S}"
    cache_model(hub, "org/m", S, ref=None)
    (hub / "models--org--m" / "refs").write_text("not a folder")  # what a read-only cache answers: an OSError
    with caplog.at_level(logging.WARNING, logger="pipeline.llm.identity"):
        identity.record_ref("org/m")
        identity.record_ref("org/m")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "\n" not in said[0] and f"revision to {S}" in said[0] and "offline" in said[0]


def _counting(factory, calls: list):
    def make(cfg):
        engine = factory(cfg)
        inner = engine.logprobs
        engine.logprobs = lambda prompts, responses: (calls.append(len(prompts)), inner(prompts, responses))[1]
        return engine

    return make


def _execution():
    return execution_config(batch_size=4, checkpoint_rows=4, target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error")


def test_the_transformers_engine_loads_the_commit_its_identity_names(hub, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.llm.hf import TransformersEngine

    cache_model(hub, "org/m", A, files=resolve_model("tiny"))
    seen = []

    def recording(original):
        def load(path, **kw):
            seen.append((path, kw.get("revision")))
            snapshot = hub / "models--org--m" / "snapshots" / kw["revision"]
            return original(str(snapshot if snapshot.is_dir() else resolve_model("tiny")),
                            **{k: v for k, v in kw.items() if k != "revision"})
        return load

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording(AutoTokenizer.from_pretrained))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording(AutoModelForCausalLM.from_pretrained))
    engine = TransformersEngine(llm_config(model="org/m", **CFG))  # main, cached at A
    assert seen == [("org/m", A)] * 2 and engine.revision == A
    seen.clear()
    TransformersEngine(llm_config(model="org/m", revision=B, **CFG))  # a pinned commit, not cached: asked to download it
    assert seen == [("org/m", B)] * 2 and FakeApi.calls == [("org/m", B)]  # check_hub_model: it exists


def test_the_openai_engine_loads_its_tokenizer_at_the_commit_its_revision_names(hub, monkeypatch):
    """The openai engine's local tokenizer (chat template and token ids of scored prompts) came from whatever the
    cache's refs/main named, and ``revision`` on backend openai was a params error: a moved branch changed the
    token ids sent with nothing in params to pin them. The served weights stay the server's (``openai:<name>``)."""
    from transformers import AutoTokenizer

    from pipeline.llm.openai_engine import OpenAIEngine, _tokenizer

    cache_model(hub, "org/m", A, ref="v1", files=resolve_model("tiny"))
    cache_model(hub, "org/m", B, ref="main", files=resolve_model("tiny"))
    seen = []
    original = AutoTokenizer.from_pretrained

    def load(path, **kw):
        seen.append((path, kw.get("revision")))
        return original(str(hub / "models--org--m" / "snapshots" / kw["revision"]))

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", load)
    _tokenizer.cache_clear()
    served = {**CFG, "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    cfg = llm_config(**served, model="org/m", revision="v1")
    engine = OpenAIEngine(cfg)  # option_scoring: sequence loads the codec up front
    assert engine.codec is not None and seen == [("org/m", A)] and FakeApi.calls == []  # from the cache's refs/v1
    assert model_identity(cfg) == "openai:org/m" and identity.pinned(cfg).revision == A
    assert identity.load_revision(llm_config(**served, model="gpt-4o-mini")) is None and FakeApi.calls == []  # no lookup
    _tokenizer.cache_clear()


def _params(tmp_path: Path, llm: dict, judge: dict | None = None) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["llm"].update(llm)
    if judge is not None:
        data["pugc"]["roles"]["judge"] = {**(data["pugc"]["roles"]["judge"] or {}), **judge}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("llm", "judge", "where", "why"), [
    ({"model": "tiny", "revision": "main"}, None, "llm", "built in"),
    ({"model": "smollm2", "revision": A}, None, "llm", "built in"),
    ({"model": "./models/sft", "revision": "main"}, None, "llm", "local folder"),
    ({}, {"backend": "openai", "base_url": "http://a/v1", "model": "./models/sft", "revision": "v1"}, "pugc.roles.judge",
     "local folder"),
    ({"model": "org/m", "revision": "has space"}, None, "llm.revision", "branch, tag or 40-hex commit"),
])
def test_a_revision_where_it_means_nothing_is_a_one_line_params_error(tmp_path, llm, judge, where, why):
    with pytest.raises(ParamsError, match=rf"{where}.*{why}") as e:
        load_params(_params(tmp_path, llm, judge))
    assert len(str(e.value).strip().splitlines()) <= 2  # the "invalid parameters" header and the one line


def test_a_revision_is_inherited_by_roles_on_its_model_only_and_fingerprinted_only_when_set(tmp_path):
    p = load_params(_params(tmp_path, {"model": "org/m", "revision": "v1"}, {"model": "tiny"}))
    assert resolve_role(p.llm, p.pugc.roles.judge).revision is None  # another model: v1 is not its revision
    assert resolve_role(p.llm, p.pugc.roles.policy).revision == "v1"
    default = load_params(ROOT / "params.yaml")
    before = default.llm.model_dump(mode="json")
    del before["revision"]
    assert default.llm.revision is None and fingerprint(default.llm) == fingerprint(before)
    assert fingerprint(default.llm.model_copy(update={"model": "org/m", "revision": A})) != fingerprint(
        default.llm.model_copy(update={"model": "org/m"}))


def test_a_role_naming_llms_own_model_keeps_its_revision(tmp_path):
    p = load_params(_params(tmp_path, {"model": "org/m", "revision": "v1"}, {"model": "org/m"}))
    assert resolve_role(p.llm, p.pugc.roles.judge).revision == "v1"


def test_a_revision_the_hub_lacks_fails_at_once_in_one_line(hub, monkeypatch):
    from huggingface_hub.errors import RevisionNotFoundError

    from pipeline.errors import ModelLoadError
    from pipeline.llm.tiny import check_hub_model

    def missing(self, name, revision=None, **kw):
        raise RevisionNotFoundError.__new__(RevisionNotFoundError)  # what the Hub answers an unknown branch

    monkeypatch.setattr(FakeApi, "model_info", missing)
    with pytest.raises(ModelLoadError, match=r"model 'org/m': the Hugging Face Hub has no revision 'v9'") as e:
        check_hub_model("org/m", "v9")
    assert "\n" not in str(e.value)
    cache_model(hub, "org/m", A, ref="v9")
    check_hub_model("org/m", "v9")  # cached at that revision: no request
