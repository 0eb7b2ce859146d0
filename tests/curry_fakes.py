"""Shared by the Curry-DPO tests: the stage's config, hand-written prompts and scored responses in the
contracts, and ``build`` (build_pairs over them)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.config import Curry, Execution
from pipeline.records import check_table, to_table
from stages.curry import build_pairs
from tests.llm_configs import execution_config


def cfg(**kw) -> Curry:
    base = dict(inputs=[{"prompts": "p", "responses": "r", "scores": "rated"}], pairing="best_vs_rest", min_gap=0.0,
                relative_min_gap=0.05, levels="per_prompt", n_levels=3, seed=0, histogram_bins=4)
    return Curry(**{**base, **kw})


def execution() -> Execution:
    return execution_config(row_group_bytes=1 << 26, on_gate_failure="error")


def prompt(pid: str, text: str | None = None, source: str = "hand") -> dict:
    return {"prompt_id": pid, "messages": [{"role": "user", "content": text or f"question {pid}"}],
            "source": source, "origin_id": pid}


def resp(pid: str, rid: str, score: float | None, text: str | None = None, scorer: str = "hand") -> dict:
    return {"prompt_id": pid, "response_id": rid, "text": text if text is not None else f"answer {rid}",
            "generator": "human", "score": score, "scorer": scorer, "detail": None}


def frames(prompts: list[dict], responses: list[dict], input_set: int = 0) -> tuple[pa.Table, pa.Table]:
    """Contract tables as ``load_inputs`` gives them (``input`` = the input set's position)."""
    p = to_table(prompts, "prompts").select(["prompt_id", "messages", "source"])
    r = check_table(pl.DataFrame(responses, schema_overrides={"score": pl.Float64, "detail": pl.String}).to_arrow(),
                    "responses")
    return (p.append_column("input", pa.array([input_set] * p.num_rows, pa.int32())),
            r.append_column("input", pa.array([input_set] * r.num_rows, pa.int32())))


def build(prompts: list[dict], responses: list[dict], **kw):
    table, metrics = build_pairs(*frames(prompts, responses), cfg(**kw))
    return table.to_pylist(), metrics
