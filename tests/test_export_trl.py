"""End to end: TRL's DPOTrainer trains on the release shards exactly as `load_dataset` returns them, and the card's
training snippets ask only for the configs and rows the release holds."""

from __future__ import annotations

import re
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.metrics import counted
from stages.export import build_release
from tests.docs_text import guide_text
from tests.export_fixtures import TOPICS, build, export_cfg, joint, pair, standard_methods, write_method


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
    """docs/training.md reads a local release with the ``parquet`` builder: after a rebuild into
    the same folder, the same call (same cache) returns the new rows. Loaded as ``load_dataset(folder, "all")``,
    datasets 5.2 keys its cache on the card alone: tests/test_export_readers.py covers that way."""
    import datasets

    assert 'load_dataset("parquet", data_dir="data/release/all", split="train")' in guide_text()
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


def card_block(card: str, first_line: str) -> str:
    """The card's python block that starts with ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    return next(b for b in blocks if b.startswith(first_line))


def snippet_configs(card: str) -> set[str]:
    """The configs the card's python blocks ask ``load_dataset`` for."""
    return set(re.findall(r'load_dataset\(REPO, "(\w+)"', "".join(re.findall(r"```python\n(.*?)```", card, re.S))))


def listed_configs(card: str) -> set[str]:
    """The configs the card's front matter lists (those ``load_dataset`` can open)."""
    return {c["config_name"] for c in yaml.safe_load(card.split("---\n")[1])["configs"]}


def test_the_cards_snippets_load_only_configs_the_release_holds(tmp_path):
    """A release without Curry-DPO or DOVE pairs (the method disabled, or its judge withheld, as DOVE's is with
    smollm2) showed their snippets anyway, and a DOVE-only one the `all` snippet: ``load_dataset`` stopped at them
    ("BuilderConfig 'curry' not found"). A `dove` config with no same-prompt row showed the snippet that hands those
    rows to DPOTrainer, which stopped on the empty dataset with a bare StopIteration."""
    cards = {}
    for method, rows in (("pugc", [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:4])]),
                         ("dove", [joint(f"dove{i}", TOPICS[i], TOPICS[i + 4]) for i in range(4)])):
        write_method(tmp_path / method, method, rows)
        release, _ = build(tmp_path / method, test_fraction=0.0)
        cards[method] = (release / "README.md").read_text(encoding="utf-8")
        assert snippet_configs(cards[method]) <= listed_configs(cards[method]) == ({"all", "pugc"} if method == "pugc"
                                                                                  else {"dove"})
    assert not any(f"**{m}**" in cards["pugc"] for m in ("Curry-DPO", "DOVE")) and "`selfie` config" not in cards["pugc"]
    assert "this release's `train` split holds none" in cards["dove"] and "same = " not in cards["dove"]


def snippet_loads(card: str) -> set[tuple[str, str]]:
    """The (config, split) pairs the card's python blocks ask ``load_dataset`` for."""
    code = "".join(re.findall(r"```python\n(.*?)```", card, re.S))
    return set(re.findall(r'load_dataset\(REPO, "(\w+)", split="(\w+)"\)', code))


def test_the_cards_snippets_read_only_splits_the_release_holds(tmp_path):
    """Curry-DPO's pairs of one prompt fell in `test` (split salt "s5"): the card listed `curry` with a `test` split
    alone and still showed its loop, whose ``load_dataset(REPO, "curry", split="train")`` stopped (Unknown split)."""
    write_method(tmp_path, "pugc", [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:8])])
    prompt = "Describe the water cycle for a curious ten year old, with one simple experiment to try at home."
    write_method(tmp_path, "curry", [pair(f"c{lv}", prompt, "curry", level=lv, rejected=f"weak {lv}") for lv in (0, 1)])
    release, stats = build(tmp_path, methods=["pugc", "curry"], split_salt="s5")
    assert stats["rows"]["curry"] == {"test": 2} and stats["rows"]["all"]["train"]
    card = (release / "README.md").read_text(encoding="utf-8")
    listed = {(c["config_name"], d["split"]) for c in yaml.safe_load(card.split("---\n")[1])["configs"]
              for d in c["data_files"]}
    assert snippet_loads(card) == {("all", "train")} <= listed


def test_the_card_counts_the_curry_levels_and_dove_same_prompt_rows_of_the_train_split_its_snippets_read(tmp_path):
    """The card gave Curry-DPO's pairs per level over train and test together, while its loop reads `train`."""
    standard_methods(tmp_path)
    same = "Dove task 20: how do I descale a kettle with vinegar?"
    write_method(tmp_path, "dove", [joint("dove-same", same, same)], sub="conditional")
    release, _ = build(tmp_path, test_fraction=0.3)
    card = (release / "README.md").read_text(encoding="utf-8")

    def table(config: str, split: str):
        return pq.read_table(sorted((release / config).glob(f"{split}-*.parquet")))

    assert table("curry", "test").num_rows  # the two splits' counts differ
    levels = table("curry", "train").column("level").value_counts().to_pylist()
    shown = ", ".join(f"level {c['values']}: {c['counts']}" for c in sorted(levels, key=lambda c: c["values"]))
    assert f"(`train` split: {shown})" in card
    dove = table("dove", "train").select(["chosen_prompt", "rejected_prompt"]).to_pylist()
    n = sum(r["chosen_prompt"] == r["rejected_prompt"] for r in dove)
    assert n == 1 and f"({counted(n, 'such row')} in this release's `train` split)" in card


@pytest.mark.e2e
def test_the_cards_curry_loop_trains_each_level_against_the_previous_levels_model(tmp_path, monkeypatch):
    """The card's Curry-DPO loop, run as written (tiny model, one step per level): each level's run starts from
    the previous level's trained model and uses it as reference (the paper). Passing ``trainer.model`` on, as
    the card did, left TRL to build the reference from the model's original path: every level was
    referenced against the SFT model."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp-card")
    code = card_block((release / "README.md").read_text(encoding="utf-8"), "# Curry-DPO")
    sft = resolve_model("tiny")
    runs: list[dict] = []

    def params(model) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    class Recording(DPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            runs.append({"start": params(self.model), "ref": params(self.ref_model)})

        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            runs[-1]["end"] = params(self.model)
            return out

    def config(**kwargs):  # the card's DPOConfig, kept to one quick CPU step
        return DPOConfig(**kwargs, max_steps=1, per_device_train_batch_size=2, max_length=96, learning_rate=1e-2,
                         report_to=[], save_strategy="no", use_cpu=True, seed=0)

    def load(*args, **kwargs):
        return datasets.load_dataset(*args, **kwargs, cache_dir=str(tmp_path / "hf-cache"))

    monkeypatch.chdir(tmp_path)
    exec(code.replace('"your/sft-model"', repr(str(sft))),  # noqa: S102 - the card's own snippet
         {"REPO": str(release), "load_dataset": load, "DPOConfig": config, "DPOTrainer": Recording})
    assert len(runs) == 2  # levels 0 and 1
    first = params(AutoModelForCausalLM.from_pretrained(sft))
    assert all(torch.equal(runs[0]["ref"][n], first[n]) for n in first)
    assert any(not torch.equal(runs[0]["end"][n], first[n]) for n in first)  # level 0 trained
    for name, value in runs[0]["end"].items():
        assert torch.equal(runs[1]["start"][name], value), f"level 1 does not start from level 0's model ({name})"
        assert torch.equal(runs[1]["ref"][name], value), f"level 1's reference is not level 0's model ({name})"


@pytest.mark.e2e
def test_dpo_trainer_refuses_the_dove_config_and_trains_its_same_prompt_rows_the_cards_way(tmp_path, monkeypatch):
    """DOVE's joint rows have two prompts and no `prompt` column: given as is, DPOTrainer must stop, not train on
    a prompt of its own making. The card's snippet turns the rows whose two prompts are equal into ordinary
    conditional pairs that it trains on, with their own prompt."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    standard_methods(tmp_path)
    same = joint("dove-same", "Dove task 20: how do I descale a kettle with vinegar?",
                 "Dove task 20: how do I descale a kettle with vinegar?")
    write_method(tmp_path, "dove", [same], sub="conditional")
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.0), tmp_path, release, "fp-dove")
    code = card_block((release / "README.md").read_text(encoding="utf-8"), 'dove = load_dataset(REPO, "dove"')
    sft = str(resolve_model("tiny"))
    seen: list = []

    def config(**kwargs):
        return DPOConfig(**kwargs, max_steps=1, per_device_train_batch_size=1, max_length=96, report_to=[],
                         save_strategy="no", use_cpu=True, seed=0)

    def load(*args, **kwargs):
        return datasets.load_dataset(*args, **kwargs, cache_dir=str(tmp_path / "hf-cache"))

    class Recording(DPOTrainer):
        def train(self, *args, **kwargs):
            seen.extend(self.train_dataset["prompt"])
            return super().train(*args, **kwargs)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - TRL's own error; what matters is that it does not train
        DPOTrainer(model=sft, args=config(output_dir="raw"), train_dataset=load(str(release), "dove", split="train"))
    exec(code.replace('"your/sft-model"', repr(sft)),  # noqa: S102 - the card's own snippet
         {"REPO": str(release), "load_dataset": load, "DPOConfig": config, "DPOTrainer": Recording})
    assert seen == [same["chosen_prompt"]]


@pytest.mark.e2e
def test_dpo_trainer_reads_a_method_configs_dialogue_prompt_whole(tmp_path):
    """The other trainer runs read single-turn prompts through `all` and `curry`; a WildFeedback pair's prompt is
    the dialogue before the judged turn (a system message, earlier turns, any script). Read from its own config,
    DPOTrainer tokenizes the whole dialogue as the prompt and the chosen message alone as the completion."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    dialogue = [{"role": "system", "content": "Réponds brièvement."}, {"role": "user", "content": TOPICS[0]},
                {"role": "assistant", "content": "Feed it flour before you leave."}]
    rows = [pair(f"wf{i}", t, "wildfeedback", chosen=f"Shorter, with an example — 例えば {i}.") for i, t in enumerate(TOPICS[1:5])]
    for r in rows:
        r["prompt"] = dialogue + r["prompt"]
    write_method(tmp_path, "wildfeedback", rows)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(methods=["wildfeedback"]), tmp_path, release, "fp-dialogue")
    train = datasets.load_dataset(str(release), "wildfeedback", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert train[0]["prompt"][:3] == dialogue

    path = resolve_model("tiny")
    tok = AutoTokenizer.from_pretrained(path)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, max_length=256,
                     report_to=[], save_strategy="no", use_cpu=True, seed=0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=train,
                         processing_class=tok)
    row, first = trainer.train_dataset[0], train[0]
    assert tok.decode(row["prompt_ids"]).endswith(tok.apply_chat_template(first["prompt"], tokenize=False,
                                                                          add_generation_prompt=True))
    assert tok.decode(row["chosen_ids"]).startswith(first["chosen"][0]["content"])
    assert trainer.train().global_step == 1


@pytest.mark.e2e
def test_the_cards_reward_and_kto_snippet_trains_each_completion_once_with_one_label(tmp_path, monkeypatch):
    """TRL's RewardTrainer reads a `margin` column as the margin its reward gap must exceed: given `all` as is, it
    trained on each method's score gaps (a first loss of 1.31 here, where the margin-free loss is about 0.69) and
    stopped at the first batch holding a WildFeedback row, whose margin is null ("must be real number, not
    NoneType"). KTOTrainer unpairs `all` itself, every chosen first, and reads it in order: 30 of the samples
    release's 31 batches of 4 held one label; a Curry-DPO chosen came once per level, and under `pairing: all` a
    response was desirable in one pair and undesirable in another. The card's snippet trains both on all rows."""
    import json

    import datasets
    from trl import KTOConfig, KTOTrainer, RewardConfig, RewardTrainer

    from pipeline.llm.tiny import resolve_model
    from tests import export_fixtures as fx

    standard_methods(tmp_path)
    write_method(tmp_path, "wildfeedback", [pair(f"wf{i}", f"Which {c} houseplant survives a dark winter flat?",
                                                 "wildfeedback", margin=None, confidence=None)
                                            for i, c in enumerate(("small", "hardy", "cheap"))])
    prompt = "For my class project number {i}, {t} Please answer with concrete examples, numbers and a short summary."
    both = [pair(f"curry2-{i}", prompt.format(i=i, t=fx.broken(t.lower(), "(really)")), "curry", level=2,
                 chosen=f"weak answer 0 {i}", rejected=f"worse answer {i}") for i, t in enumerate(TOPICS[:4])]
    write_method(tmp_path, "curry", both, sub="level=2")  # `pairing: all`: level 0's rejected is chosen here
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.0, methods=["wildfeedback", "pugc", "selfie", "curry"]), tmp_path,
                  release, "fp-others")

    def load(*args, **kwargs):
        return datasets.load_dataset(*args, **kwargs, cache_dir=str(tmp_path / "hf-cache"))

    train = load(str(release), "all", split="train")
    given: dict[str, set] = {}
    for r in train:
        for side, label in (("chosen", True), ("rejected", False)):
            given.setdefault(json.dumps([r["prompt"], r[side]]), set()).add(label)
    assert None in train["margin"] and len(given) < 2 * len(train)  # the case: nulls, repeated completions
    assert sum(len(v) == 2 for v in given.values()) == 4

    code = card_block((release / "README.md").read_text(encoding="utf-8"), "import json")
    imports = "from trl import KTOConfig, KTOTrainer, RewardConfig, RewardTrainer\n"
    assert imports in code
    seen: dict[str, Any] = {}

    class Reward(RewardTrainer):
        def train(self, *args, **kwargs):
            seen["rm"] = self.train_dataset
            seen["rm_out"] = super().train(*args, **kwargs)
            seen["rm_loss"] = [h["loss"] for h in self.state.log_history if "loss" in h]
            return seen["rm_out"]

    class Kto(KTOTrainer):
        def train(self, *args, **kwargs):
            seen["kto"] = self.train_dataset
            seen["kto_out"] = super().train(*args, **kwargs)
            return seen["kto_out"]

    def config(cls, **more):
        return lambda **kwargs: cls(**kwargs, **more, per_device_train_batch_size=4, logging_steps=1, report_to=[],
                                    save_strategy="no", use_cpu=True, seed=0)

    monkeypatch.chdir(tmp_path)
    exec(code.replace(imports, "").replace('"your/sft-model"', repr(str(resolve_model("tiny")))),  # noqa: S102
         {"REPO": str(release), "load_dataset": load, "RewardTrainer": Reward, "KTOTrainer": Kto,
          "RewardConfig": config(RewardConfig, num_train_epochs=1), "KTOConfig": config(KTOConfig, max_steps=2)})
    assert "margin" not in seen["rm"].column_names and len(seen["rm"]) == len(train)
    assert seen["rm_out"].global_step == -(-len(train) // 4)  # every batch, the null-margin rows' too
    assert seen["rm_loss"][0] < 0.9

    kto = seen["kto"]
    keys = [json.dumps([p, c]) for p, c in zip(kto["prompt"], kto["completion"], strict=True)]
    assert sorted(keys) == sorted(k for k, v in given.items() if len(v) == 1)  # each once, none with two labels
    assert all(kto["label"][i] in given[k] for i, k in enumerate(keys))
    batches = [set(kto["label"][i:i + 4]) for i in range(0, len(kto), 4)]
    assert sum(len(b) == 2 for b in batches) > len(batches) / 2
    assert seen["kto_out"].global_step == 2


@pytest.mark.e2e
def test_the_docs_prompt_filter_keeps_orpo_off_rows_whose_prompt_fills_max_length(tmp_path):
    """ORPOTrainer (and CPOTrainer) cut the completion, never the prompt: a row whose prompt alone fills
    `max_length` trained on an empty completion, and from that step on the loss was NaN, logged as 0.0 (15 of the
    samples release's 61 `all` train rows at max_length=96). docs/training.md's filter drops exactly such rows."""
    import math

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from pipeline.llm.tiny import resolve_model

    line = re.search(r"`(train\.filter\(lambda r: .*apply_chat_template.*\))`", guide_text()).group(1)
    long_prompt = "Please plan my week in detail: " + " ".join(f"task {i} needs care." for i in range(60))
    rows = [pair(f"pugc{i}", t, "pugc") for i, t in enumerate(TOPICS[:5])] + [pair("long", long_prompt, "pugc")]
    write_method(tmp_path, "pugc", rows)
    release, _ = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    train = datasets.load_dataset("parquet", data_dir=str(release / "pugc"), split="train",
                                  cache_dir=str(tmp_path / "hf-cache"))
    path = resolve_model("tiny")
    tok = AutoTokenizer.from_pretrained(path)
    fits = eval(line.replace("1024", "160"), {"train": train, "tok": tok})  # noqa: S307 - the docs' own line
    assert sorted(train["pair_id"]) != sorted(fits["pair_id"]) and len(fits) == len(train) - 1
    assert long_prompt not in [r["prompt"][0]["content"] for r in fits]

    args = ORPOConfig(output_dir=str(tmp_path / "orpo"), max_steps=3, per_device_train_batch_size=2, max_length=160,
                      logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=0)
    trainer = ORPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=fits,
                          processing_class=tok)
    assert all(any(x != -100 for x in labels) for labels in trainer.train_dataset["chosen_labels"])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
