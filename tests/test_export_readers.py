"""The release as its downstream readers see it: the card's ``dataset_info`` describes every shard exactly, and
``datasets`` (the release folder, streaming, the parquet builder), pyarrow, polars and pandas read the same rows
in the same order, without a warning."""

from __future__ import annotations

import warnings

import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from stages.export import build_release
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_method


def front(release) -> dict:
    return yaml.safe_load((release / "README.md").read_text(encoding="utf-8").split("---\n")[1])


def test_the_cards_dataset_info_gives_each_configs_features_rows_and_sizes_as_its_shards_hold_them(tmp_path):
    from datasets import Features

    standard_methods(tmp_path)
    write_method(tmp_path, "pugc", [pair("pugc-ja", "日本語で短い自己紹介を書いてください、丁寧な言葉でお願いします。", "pugc",
                                         confidence=None, margin=None)])  # non-ASCII, null scores: a one-row config
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp-info")
    card = front(release)
    assert [i["config_name"] for i in card["dataset_info"]] == [c["config_name"] for c in card["configs"]]
    for info, config in zip(card["dataset_info"], card["configs"], strict=True):
        declared = Features._from_yaml_list(info["features"])
        shards = sorted((release / info["config_name"]).glob("*.parquet"))
        assert all(Features.from_arrow_schema(pq.read_schema(s)) == declared for s in shards)  # read without a cast
        assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [
            (d["split"], sum(pq.read_metadata(f).num_rows for f in release.glob(d["path"]))) for d in config["data_files"]]
        assert info["download_size"] == sum(s.stat().st_size for s in shards)
        assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"]) > 0
    assert [s["num_examples"] for i in card["dataset_info"] if i["config_name"] == "pugc" for s in i["splits"]] == [1]


def test_load_dataset_on_the_release_folder_reads_a_rebuilt_one_afresh(tmp_path):
    """``datasets`` keys its cache of a local folder on the card alone: with configs and no ``dataset_info`` the
    card of a rebuilt release was the same text, and ``load_dataset(folder, "all")`` returned the previous
    release's rows (36 where the folder held 31)."""
    import datasets

    standard_methods(tmp_path)
    release, cache = tmp_path / "data" / "release", str(tmp_path / "hf-cache")

    def load(config: str) -> list[str]:
        return list(datasets.load_dataset(str(release), config, split="train", cache_dir=cache)["pair_id"])

    def written(config: str) -> list[str]:
        return pq.read_table(sorted((release / config).glob("train-*.parquet"))).column("pair_id").to_pylist()

    build_release(export_cfg(), tmp_path, release, "fp-first")
    first = load("all"), load("pugc")
    write_method(tmp_path, "pugc", [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:3])])  # fewer pairs
    build_release(export_cfg(), tmp_path, release, "fp-second")
    assert (written("all"), written("pugc")) != first
    assert (load("all"), load("pugc")) == (written("all"), written("pugc"))


def test_every_reader_reads_every_config_and_split_alike(tmp_path):
    import datasets

    standard_methods(tmp_path)
    release, cache = tmp_path / "data" / "release", str(tmp_path / "hf-cache")
    build_release(export_cfg(row_group_rows=2, shard_bytes=2_000), tmp_path, release, "fp-readers")  # several shards
    card = front(release)
    assert len(list((release / "curry").glob("train-*.parquet"))) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for config in card["configs"]:
            for d in config["data_files"]:
                name, split, files = config["config_name"], d["split"], sorted(str(f) for f in release.glob(d["path"]))
                rows = pq.read_table(files).to_pylist()
                read = {
                    "folder": datasets.load_dataset(str(release), name, split=split, cache_dir=cache).to_list(),
                    "streaming": list(datasets.load_dataset(str(release), name, split=split, streaming=True)),
                    "parquet": datasets.load_dataset("parquet", data_files={split: files}, split=split,
                                                     cache_dir=cache).to_list(),
                    "pyarrow.dataset": pads.dataset(files, format="parquet").to_table().to_pylist(),
                    "polars": pl.scan_parquet(str(release / d["path"])).collect().to_dicts(),
                }
                for reader, got in read.items():
                    assert got == rows, (name, split, reader)
                pandas = pd.concat([pd.read_parquet(f, dtype_backend="numpy_nullable") for f in files])
                assert list(pandas["pair_id"]) == [r["pair_id"] for r in rows], (name, split, "pandas")
                assert name == "dove" or str(pandas["level"].dtype) == "Int64"  # docs/training.md: nulls kept
