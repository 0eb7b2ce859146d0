"""End to end: TRL's DPOTrainer trains on the release shards exactly as `load_dataset` returns them."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from stages.export import build_release
from tests.docs_text import text
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_method


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


def test_the_readme_way_of_loading_a_local_release_reads_a_rebuilt_one_afresh(tmp_path):
    """README "Training on the output" reads a local release with the ``parquet`` builder: after a rebuild into
    the same folder, the same call (same cache) returns the new rows. Loaded as ``load_dataset(folder, "all")``,
    datasets 5.2 keyed its cache on the card alone and returned the previous release's rows."""
    import datasets

    assert 'load_dataset("parquet", data_dir="data/release/all", split="train")' in text("README.md")
    standard_methods(tmp_path)
    release, cache = tmp_path / "data" / "release", str(tmp_path / "hf-cache")

    def load() -> list[str]:
        return datasets.load_dataset("parquet", data_dir=str(release / "all"), split="train", cache_dir=cache)["pair_id"]

    def written() -> list[str]:
        return pq.read_table(sorted((release / "all").glob("train-*.parquet"))).column("pair_id").to_pylist()

    build_release(export_cfg(), tmp_path, release, "fp-first")
    first = load()
    assert first == written()
    write_method(tmp_path, "pugc", [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:3])])  # fewer pairs
    build_release(export_cfg(), tmp_path, release, "fp-second")
    assert written() != first
    assert load() == written()
