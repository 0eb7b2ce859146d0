"""Shared by the DOVE tests: params, the real Anthropic-helpful slice as tables and items, scripted judges."""

from __future__ import annotations

import json
import re

import polars as pl

from pipeline.config import Dove
from pipeline.prompt import template
from pipeline.records import stable_id, to_table
from stages import dove_items as I
from stages import dove_judge as J

JOINT = template("dove_judge")
CONDITIONAL = template("dove_judge_conditional")
JUDGE_KW = {"joint_template": JOINT, "conditional_template": CONDITIONAL, "max_prompt_chars": 6000}
JUDGE_COLS = ["comparison_id", "conditional", "instruction_text_1", "response_1", "instruction_text_2", "response_2"]


def dove_cfg(**over) -> Dove:
    base = dict(
        roles={"judge": {}}, inputs=[], pairs="data/ingest/pairs", pair_sources=[], pairing="similar",
        pairs_per_instruction=1, embedding_model=None, ngram_min=3, ngram_max=5, hash_features=1 << 18,
        max_partner_similarity=0.95, include_conditional=True, conditional_pairs_per_instruction=1,
        max_redraws=8, position_calibration="none", max_prompt_chars=6000, gates={"judge": 0.0}, seed=0,
    )
    return Dove.model_validate({**base, **over})


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def load_helpful(real):
    """Anthropic-helpful (DOVE repo): 500 SFT instruction/response rows and 363 conditional pairs."""
    base = real / "dove" / "data" / "anthropic_helpful"
    return _jsonl(base / "val_sft.jsonl"), _jsonl(base / "val_conditional_pref.jsonl")


def helpful_tables(sft, cond):
    prompts, responses = [], []
    for r in sft:
        pid = stable_id("hh", r["instruction"])
        prompts.append({"prompt_id": pid, "messages": user(r["instruction"]), "source": "hh_sft", "origin_id": pid})
        responses.append({"prompt_id": pid, "response_id": "sft", "text": r["response"], "generator": "hh"})
    pairs = [
        {"pair_id": stable_id("hhc", c), "prompt": user(c["i_chosen"]), "chosen": [{"role": "assistant", "content": c["r_chosen"]}],
         "rejected": [{"role": "assistant", "content": c["r_reject"]}], "method": "ingest", "source": "hh_cond", "lineage": "{}"}
        for c in cond
    ]
    return to_table(prompts, "prompts"), to_table(responses, "responses"), to_table(pairs, "pairs")


def helpful_items(sft, cond) -> pl.DataFrame:
    prompts, responses, pairs = helpful_tables(sft, cond)
    scored, _ = I.items_from_scored(prompts, responses)
    items, _, _ = I.normalise_items([scored, I.items_from_pairs(pairs)])
    return items


# --- scripted judges -----------------------------------------------------------------------------

_FENCE = re.compile(r"<<<(OUTPUT_[AB])\n(.*?)\n\1>>>", re.S)


def outputs(prompt) -> tuple[str, str]:
    found = dict(_FENCE.findall(prompt[0]["content"]))
    return found["OUTPUT_A"], found["OUTPUT_B"]


class ScriptedJudge:
    """Prefers the output with more 'GOOD' in it, P = 0.8 (ties 0.5); records every call."""

    name = "scripted"

    def __init__(self, boom: str | None = None, nan_on: str | None = None, bias: float | None = None):
        self.calls: list[int] = []
        self.boom, self.nan_on, self.bias = boom, nan_on, bias

    def choose(self, prompts, options):
        assert options == ["a", "b"]
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            a, b = outputs(p)
            if self.boom and self.boom in a + b:
                raise RuntimeError("CUDA out of memory")
            if self.nan_on and self.nan_on in a + b:
                out.append([float("nan"), float("nan")])
                continue
            if self.bias is not None:  # a judge that only looks at the position
                out.append([self.bias, 1 - self.bias])
                continue
            ga, gb = a.count("GOOD"), b.count("GOOD")
            out.append([0.8, 0.2] if ga > gb else [0.2, 0.8] if gb > ga else [0.5, 0.5])
        return out


def comparisons(rows: list[tuple[str, str, str, str]], conditional=False) -> pl.DataFrame:
    """Hand-written comparisons (instruction 1, response 1, instruction 2, response 2), all columns set."""
    cols: dict[str, list] = {"comparison_id": [f"c{i}" for i in range(len(rows))], "conditional": [conditional] * len(rows)}
    for side, (i, r) in ((1, (0, 1)), (2, (2, 3))):
        cols[f"item_id_{side}"] = [f"item{side}-{k}" for k in range(len(rows))]
        cols[f"instruction_{side}"] = [user(row[i]) for row in rows]
        cols[f"instruction_text_{side}"] = [row[i] for row in rows]
        cols[f"response_{side}"] = [row[r] for row in rows]
        cols[f"origin_{side}"] = ["hand"] * len(rows)
        cols[f"models_{side}"] = [None] * len(rows)  # no stage's model behind the hand-written texts
        cols[f"written_by_{side}"] = [None] * len(rows)  # nor a dataset's writer
    cols["similarity"] = [None] * len(rows)
    return pl.DataFrame(cols, schema_overrides={"similarity": pl.Float64, "written_by_1": pl.String,
                                                "written_by_2": pl.String})


def run_judge(comps: pl.DataFrame, engine, **kw) -> pl.DataFrame:
    judged = J.judge(comps.select(JUDGE_COLS).to_arrow(), engine, **{**JUDGE_KW, **kw})
    return J.verdicts(comps.join(pl.from_arrow(judged), on="comparison_id", how="left", maintain_order="left"))
