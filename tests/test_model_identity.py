"""Model weights are part of what a checkpoint must match: a local model folder re-trained in place between a
killed step and its resume starts the step over (its name, and every config key, stayed the same)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path

import pyarrow as pa
import pytest

import pipeline.llm
from pipeline.config import Sampling
from pipeline.execute import RECORD_FILE, Checkpoint, map_batches
from pipeline.llm import identity, resolve_model
from pipeline.llm.identity import folder_identity, hub_commit, model_identities, model_identity
from tests.llm_configs import execution_config, llm_config

CFG = dict(dtype="float32", batch_size=4, max_model_len=512, enable_prefix_caching=False, structured_retries=0,
           cpu_threads=1, sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, stop=[], seed=0))
EXECUTION = execution_config(batch_size=4, checkpoint_rows=4, target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error")
ROWS = pa.table({"id": [f"r{i}" for i in range(12)], "text": [f"question number {i}?" for i in range(12)]})


def score(batch: pa.Table, engine, marker: str) -> pa.Table:
    """A model step: each row's log-probability of one answer; fails at row r8 while ``marker`` exists."""
    prompts = [[{"role": "user", "content": t}] for t in batch["text"].to_pylist()]
    scored = engine.logprobs(prompts, ["Yes, it is."] * len(prompts))
    if "r8" in batch["id"].to_pylist() and Path(marker).exists():
        raise RuntimeError("killed at r8")
    return pa.table({"id": batch["id"], "logprob": [s.logprob for s in scored]})


def _install(src: str, folder: Path) -> None:
    """Write the model folder ``src`` into ``folder`` file by file, as a training run saving there does."""
    folder.mkdir(exist_ok=True)
    for f in Path(src).iterdir():
        shutil.copyfile(f, folder / f.name)


def _fresh_process(monkeypatch) -> None:
    """What a new process has: no engine loaded yet."""
    monkeypatch.setattr(pipeline.llm, "_ENGINES", {})
    monkeypatch.setattr(pipeline.llm, "_LOADED", {})


def test_weights_overwritten_between_a_killed_step_and_its_resume_start_the_step_over(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "sft"
    _install(resolve_model("tiny"), folder)
    cfg = llm_config(model=str(folder), **CFG)
    ck, marker = Checkpoint(tmp_path / "ck", fingerprint="params"), tmp_path / "kill"
    marker.touch()
    with pytest.raises(RuntimeError, match="killed at r8"):
        map_batches(ROWS, score, execution=EXECUTION, engine=cfg, checkpoint=ck, fn_kwargs={"marker": str(marker)})
    ck_dir = Path(ck.dir)
    assert sorted(p.name[:31] for p in ck_dir.glob("chunk-*")) == [
        "chunk-000000000000-000000000004", "chunk-000000000004-000000000008"]  # rows 0-7 done by the old weights
    marker.unlink()

    _install(resolve_model("tiny@1"), folder)  # re-trained in place: same names, sizes, safetensors header
    _fresh_process(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        resumed = map_batches(ROWS, score, execution=EXECUTION, engine=cfg, checkpoint=ck,
                              fn_kwargs={"marker": str(marker)})
    _fresh_process(monkeypatch)
    clean = map_batches(ROWS, score, execution=EXECUTION, engine=cfg, fn_kwargs={"marker": str(marker)})
    assert resumed.equals(clean)  # every row from the new weights, none from the old
    said = [r.getMessage() for r in caplog.records if "changed since these checkpoints" in r.getMessage()]
    assert len(said) == 1 and str(folder) in said[0] and "starting the step over" in said[0]
    assert json.loads((ck_dir / RECORD_FILE).read_text())["identity"] == model_identity(cfg)

    # The same weights again (copied anew: other modification times): every checkpoint is reused.
    _install(resolve_model("tiny@1"), folder)
    again = map_batches(ROWS, score, execution=EXECUTION, engine=cfg, checkpoint=ck, fn_kwargs={"marker": str(marker)},
                        engine_factory=_no_engine)
    assert again.equals(clean)


def _no_engine(cfg):
    class Unused:  # every row comes from the checkpoints: no call reaches it
        def logprobs(self, *a):
            raise AssertionError("a checkpointed row was computed again")

    return Unused()


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return f.read(n)


def test_a_retrained_folder_has_another_identity_though_its_header_and_sizes_are_the_same(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _install(resolve_model("tiny"), a)
    _install(resolve_model("tiny@1"), b)
    wa, wb = a / "model.safetensors", b / "model.safetensors"
    # what a header-and-size identity would see: nothing
    assert _safetensors_header(wa) == _safetensors_header(wb) and wa.stat().st_size == wb.stat().st_size
    assert folder_identity(a) != folder_identity(b)
    c = tmp_path / "c"
    _install(str(a), c)
    os.utime(c / "model.safetensors", ns=(1, 1))
    assert folder_identity(c) == folder_identity(a)  # content, not where or when it was written


def test_a_large_weight_file_is_sampled_and_a_change_in_a_sampled_block_is_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "WHOLE_BYTES", 1 << 16)
    monkeypatch.setattr(identity, "BLOCK", 1 << 10)
    path = tmp_path / "w.bin"
    data = bytearray(os.urandom(1 << 20))
    path.write_bytes(data)
    before = folder_identity(path)
    data[-1] ^= 1  # the last block ends at the file's end
    path.write_bytes(data)
    assert folder_identity(path) != before


def test_identities_of_built_in_hub_and_served_models(tmp_path):
    tiny = llm_config(model="tiny", **CFG)
    assert model_identity(tiny) == f"tiny:{Path(resolve_model('tiny')).name.removeprefix('tiny-')}"
    assert model_identity(tiny) != model_identity(llm_config(model="tiny@1", **CFG))
    served = llm_config(**CFG, model="my-judge", backend="openai", base_url="http://localhost:8000/v1")
    assert model_identity(served) == "openai:my-judge"
    assert model_identity(llm_config(model=str(tmp_path / "gone"), **CFG)) == "local:missing"
    # A Hub id: the commit its cached snapshot resolves to (refs/main), read offline.
    repo = tmp_path / "hub" / "models--org--m"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert hub_commit("org/m", cache_dir=tmp_path / "hub") == "a" * 40
    (repo / "refs" / "main").write_text("b" * 40)  # the cache moved to a new snapshot
    assert hub_commit("org/m", cache_dir=tmp_path / "hub") == "b" * 40
    assert hub_commit("org/not-cached", cache_dir=tmp_path / "hub") is None
    assert model_identities({"judge": tiny}) == {"judge": {"model": "tiny", "identity": model_identity(tiny)}}


def test_the_release_names_the_weights_each_stage_ran_without_a_local_folders_parents(tmp_path):
    from stages.export_write import model_reports

    (tmp_path / "data" / "pugc").mkdir(parents=True)
    (tmp_path / "data" / "pugc" / "details.json").write_text(json.dumps({"models": {
        "judge": {"model": "/home/alice/ckpt/sft", "identity": "local:0123456789abcdef"},
        "policy": {"model": "tiny", "identity": "tiny:784f991e5e1e"}}}))
    assert model_reports(tmp_path, ["pugc", "curry"]) == {"pugc": {
        "judge": {"model": "local:sft", "identity": "local:0123456789abcdef"},
        "policy": {"model": "tiny", "identity": "tiny:784f991e5e1e"}}}


def test_another_model_named_in_params_is_not_said_to_have_changed_its_weights(tmp_path, caplog):
    """`dvc exp run -S llm.model=smollm2` after the samples run: the step's checkpoints were the tiny model's.
    That is a params change the user made, not weights changed under a name: it said "the weights of model
    smollm2 (tiny:..., now smollm2:...) changed". The same name with new weights is still said."""
    from pipeline.execute import _say_why_started_over

    libs = {"torch": "2.13.0"}
    (tmp_path / RECORD_FILE).write_text(json.dumps(
        {"code": "c", "libraries": libs, "model": "tiny", "identity": "tiny:d85f222e16ed"}))
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        _say_why_started_over(tmp_path, {"code": "c", "libraries": libs, "model": "smollm2",
                                         "identity": "smollm2:80843d27dd91"})
        assert not [r for r in caplog.records if "changed since" in r.getMessage()]
        _say_why_started_over(tmp_path, {"code": "c", "libraries": libs, "model": "tiny", "identity": "tiny:0123"})
    said = [r.getMessage() for r in caplog.records if "changed since" in r.getMessage()]
    assert len(said) == 1 and "the weights of model tiny (tiny:d85f222e16ed, now tiny:0123)" in said[0]
