"""Rules of pipeline/hub_source.py that hand mutants showed untested: how an hf:// id is split, which environment
values mean offline, what the reachability check asks for, row numbers, and the offline-cache hint."""

from __future__ import annotations

import pytest

from pipeline import hub_source
from pipeline.errors import SourceError


@pytest.mark.parametrize(("dataset_id", "expected"), [
    ("hf://org/name", ("org/name", None, "train")),
    ("hf://org/name:test", ("org/name", None, "test")),
    ("hf://org/name/config/sub:validation", ("org/name", "config/sub", "validation")),
])
def test_an_hf_id_is_repo_then_config_then_split_train_by_default(dataset_id, expected):
    """Mutants H1 (another default split) and H2 (the repo cut after the organisation)."""
    assert hub_source._hub_spec(dataset_id) == expected


@pytest.mark.parametrize(("var", "value", "offline"), [
    ("HF_HUB_OFFLINE", "1", True), ("HF_HUB_OFFLINE", " yes ", True), ("HF_DATASETS_OFFLINE", "true", True),
    ("HF_DATASETS_OFFLINE", "On", True), ("HF_HUB_OFFLINE", "0", False), ("HF_HUB_OFFLINE", "", False),
])
def test_offline_is_either_variable_set_to_a_true_word(monkeypatch, var, value, offline):
    """Mutants H3 (only "1"), H4 (HF_DATASETS_OFFLINE ignored) and H11 (white space around the value not trimmed)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(var, value)
    assert hub_source._offline() is offline


def test_the_reachability_check_asks_for_the_repository_not_the_id(monkeypatch):
    """Mutant H6 (the whole id, config and split included, asked for): every set with a config or split failed."""
    import huggingface_hub

    asked = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, name, timeout: asked.append(name))
    hub_source.check_hub("hf://org/name/config:test")
    assert asked == ["org/name"]


def test_hub_rows_are_numbered_from_one_to_the_end(monkeypatch):
    """Mutants H8 (numbered from 0) and H9 (the end of the stream taken for a failure)."""
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or iter([{"x": 1}, {"x": 2}]))
    assert list(hub_source.hub_rows("hf://org/name/cfg:test")) == [(1, {"x": 1}), (2, {"x": 2})]
    assert calls == [(("org/name", "cfg"), {"split": "test", "streaming": True})]


def test_an_offline_error_while_online_does_not_blame_the_offline_cache(monkeypatch):
    """Mutant H7 (the hint given whenever the error says offline): online, it told the user to unset a variable that
    was not set."""
    import datasets

    def refuse(*a, **kw):
        raise RuntimeError("server went offline")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_source, "check_hub", lambda dataset_id: None)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(SourceError) as err:
        next(hub_source.hub_rows("hf://org/name"))
    assert "HF_HUB_OFFLINE is set" not in str(err.value) and "Check the id and split, your network" in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as err:
        next(hub_source.hub_rows("hf://org/name"))
    assert "HF_HUB_OFFLINE is set and the set is not in the local cache" in str(err.value)
