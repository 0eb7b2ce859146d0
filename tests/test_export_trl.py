"""End to end: TRL's DPOTrainer trains on the release shards exactly as `load_dataset` returns them."""

from __future__ import annotations

import pytest

from stages.export import build_release
from tests.export_fixtures import export_cfg, standard_methods


@pytest.mark.e2e
def test_dpo_trainer_takes_two_steps_on_the_release(tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp-e2e")
    train = datasets.load_dataset(str(release), "all", split="train", cache_dir=str(tmp_path / "hf-cache"))
    curry = datasets.load_dataset(str(release), "curry", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert curry["level"] == sorted(curry["level"])  # curriculum order survives the round trip

    path = resolve_model("tiny")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=2, max_length=96,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=train,
                         processing_class=AutoTokenizer.from_pretrained(path))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    out = trainer.train()
    assert out.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters())  # it learned something
