"""The dataset card's "Training on it with TRL" section: a paragraph and snippet for each config the release holds,
and one for TRL's other preference trainers (reward model, KTO, ORPO, CPO) on the same rows.
``stages/export_card.py`` places it in the card."""

from __future__ import annotations

from typing import Any

from pipeline.metrics import counted

TRAIN_SNIPPET = '''```python
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer

REPO = "{repo}"  # the Hub repo id this card belongs to, or a local copy of this folder
# (a folder rebuilt in place: read it with load_dataset("parquet", data_dir=...), as prefpipe's README says)
{all}```'''

ALL_LINES = '''train = load_dataset(REPO, "all", split="train")   # prompt / chosen / rejected message lists
trainer = DPOTrainer(model="your/sft-model", args=DPOConfig(output_dir="dpo"), train_dataset=train)
trainer.train()
'''

CURRY_SNIPPET = '''```python
# Curry-DPO: one DPO run per level, easiest (0) first; each run starts from, and uses as reference,
# the previous level's model. Pass it on as a saved folder: DPOTrainer loads its reference from the
# model's path, so handing on `trainer.model` would reference every level against the SFT model.
curry = load_dataset(REPO, "curry", split="train")
model = "your/sft-model"
for level in sorted(set(curry["level"])):
    stage = curry.filter(lambda r: r["level"] == level)
    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=f"curry-{level}"), train_dataset=stage)
    trainer.train()
    model = f"curry-{level}/final"
    trainer.save_model(model)  # the weights and the tokenizer
```'''


DOVE_SNIPPET = '''```python
dove = load_dataset(REPO, "dove", split="train")
same = dove.filter(lambda r: r["chosen_prompt"] == r["rejected_prompt"])
same = same.rename_column("chosen_prompt", "prompt").remove_columns("rejected_prompt")
trainer = DPOTrainer(model="your/sft-model", args=DPOConfig(output_dir="dpo-dove"), train_dataset=same)
trainer.train()
```'''


OTHER_TRAINERS = (
    "**Other TRL trainers** (TRL 1.16). `ORPOTrainer` and `CPOTrainer` (`trl.experimental`) take a conditional "
    "config as `DPOTrainer` does. `RewardTrainer` reads a `margin` column as a margin the reward gap must exceed: "
    "this release's `margin` is a score gap on each method's own scale, null for a method without scores (a batch "
    "holding a null stops it), so drop the column. `KTOTrainer` unpairs the rows itself, every chosen before every "
    "rejected, and its default sampler reads them in order, so its batches hold one label each; a prompt's chosen "
    "repeats in each of its Curry-DPO pairs, and with Curry-DPO's `pairing: all` a response is chosen in one pair "
    "and rejected in another. Unpair first, keep each (prompt, completion) once, and only when every pair gives "
    "it the same label, then shuffle:\n")

OTHER_SNIPPET = '''```python
import json
from trl import KTOConfig, KTOTrainer, RewardConfig, RewardTrainer
from trl.data_utils import unpair_preference_dataset

train = load_dataset(REPO, "all", split="train")
trainer = RewardTrainer(model="your/sft-model", args=RewardConfig(output_dir="rm"),
                        train_dataset=train.remove_columns("margin"))  # TRL's `margin` is not this one
trainer.train()

kto = unpair_preference_dataset(train)  # prompt / completion / label
labels = {}  # (prompt, completion) -> (its first row, the labels its pairs give it)
for i, r in enumerate(kto.select_columns(["prompt", "completion", "label"])):
    labels.setdefault(json.dumps([r["prompt"], r["completion"]]), (i, set()))[1].add(r["label"])
kto = kto.select(sorted(i for i, given in labels.values() if len(given) == 1)).shuffle(seed=0)
trainer = KTOTrainer(model="your/sft-model", args=KTOConfig(output_dir="kto"), train_dataset=kto)
trainer.train()
```'''


def training_part(stats: dict[str, Any], repo: str) -> list[str]:
    """The card's "Training on it with TRL" section: a paragraph (and snippet) for each config the release holds
    and none for one it does not, so no snippet asks ``load_dataset`` for a config the front matter leaves out;
    the snippets that read a `train` split (`all`, Curry-DPO's loop) only for a config that has one."""
    held = {c for c, splits in stats["rows"].items() if splits}
    trained = {c for c, splits in stats["rows"].items() if splits.get("train")}
    parts = ["## Training on it with TRL\n", TRAIN_SNIPPET.format(repo=repo, all=ALL_LINES if "all" in trained else "") + "\n"]
    if "all" in trained:
        parts += [OTHER_TRAINERS, OTHER_SNIPPET + "\n"]
    if "selfie" in held:
        parts.append(
            "`label_smoothing` and `noisy` come from Selfie/SPA: a trainer that supports per-example label "
            "smoothing can use them (TRL's `DPOConfig.label_smoothing` is one value for the whole run; filter "
            "`noisy` rows out, or train them in a separate run with `label_smoothing=0.1`). The `selfie` config lists "
            "the seed pairs (`source` \"seed\") first, then each iteration's (`source` \"iteration_1\", "
            "\"iteration_2\", ...), the seed pairs all in its `train` split (Selfie held out its own test prompts): SPA "
            "trains on the seed pairs, then on each iteration's pairs in turn, each run starting from the previous "
            "run's model (filter on `source`).\n")
    if "curry" in trained:
        train = stats["levels_by_split"].get("curry", {}).get("train", {})
        levels = ", ".join(f"level {lv}: {n}" for lv, n in train.items())
        parts += [
            "**Curry-DPO** pairs must be seen in curriculum order" + (f" (`train` split: {levels})" if levels else "")
            + ": one run per level (the paper, below), or one run over the whole config with "
            "`DPOConfig(train_sampling_strategy=\"sequential\")` (transformers >= 5.2; the default sampler shuffles the "
            "rows, and older versions have no such option: train one run per level there):\n",
            CURRY_SNIPPET + "\n"]
    if "dove" in held:
        same = stats["same_prompt"].get("dove", {}).get("train", 0)
        parts.append(
            "**DOVE** rows compare two *different* instructions; their loss is DPO on joint log-probabilities "
            "log pi(x, y) = log pi(x) + log pi(y | x), with prompt tokens not masked. TRL's `DPOTrainer` assumes a "
            "shared prompt, so train the `dove` config with a JPO/DOVE trainer (github.com/Hritikbansal/dove) that "
            "reads `chosen_prompt`, `chosen`, `rejected_prompt`, `rejected`. Given to `DPOTrainer` as is, the `dove` "
            "config stops with an error (it has no `prompt` column and its two sides share none). Rows with "
            "`chosen_prompt == rejected_prompt` are ordinary conditional pairs, which `DPOTrainer` takes once the "
            "prompt column is named `prompt`" + (f" ({counted(same, 'such row')} in this release's `train` split):\n"
                                                 if same else "; this release's `train` split holds none.\n"))
        if same:
            parts.append(DOVE_SNIPPET + "\n")
    return parts
