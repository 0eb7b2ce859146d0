"""PUGC plumbing: resumable model steps, the input documents, the three output tables and their publishing.

Kept apart from ``stages/pugc.py`` so that module reads as the method.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline import ids
from pipeline.config import LLM, Params
from pipeline.execute import CHECKPOINT_ROOT, Checkpoint, clear_checkpoints, map_batches, step_checkpoint
from pipeline.io import StageError, read_table, shard_sizes, write_shards
from pipeline.metrics import gate_headline, write_metrics
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import MESSAGES_TYPE, one_message

STAGE = pl.lit("pugc")  # the first part of every PUGC id
ROLE_OF = {"queries": "generator", "query_filter": "generator", "gate_query_filter": "generator", "sampling": "policy",
           "scoring": "judge", "gate_scorer": "judge"}  # the role each engine step runs (progress, errors)


def run_step(
    table: pl.DataFrame, fn, params: Params, step: str, *, engine: LLM | None = None, **kwargs
) -> pl.DataFrame | None:
    """``fn`` over ``table`` through ``map_batches``, resumable from ``.prefpipe/checkpoints/pugc/<step>``."""
    out = map_batches(
        table.to_arrow(),
        fn,
        execution=params.execution,
        engine=engine,
        fn_kwargs=kwargs,
        desc=f"pugc {step}" + (f" ({ROLE_OF[step]})" if step in ROLE_OF else ""),
        checkpoint=checkpoint_of(params, step, engine),
    )
    return None if out is None else pl.from_arrow(out)


def checkpoint_of(params: Params, step: str, engine: LLM | None = None) -> Checkpoint:
    """Where ``run_step`` keeps step ``step``'s finished results: ``.prefpipe/checkpoints/pugc/<step>``, under
    the fingerprint of ``pugc`` params and the step's engine."""
    return step_checkpoint(CHECKPOINT_ROOT / "pugc", step, params.pugc, engine or params.execution)


class StepClock:
    """Seconds per step (``tick`` at each step's end), for the console line: timings never go to the metrics,
    a DVC output that stays byte-identical for identical inputs and params."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def tick(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._start, 1)
        self._start = now


def load_documents(path: Path, sources: list[str]) -> tuple[pl.DataFrame, dict]:
    docs = pl.from_arrow(read_table(path, "documents"))
    present = sorted(docs["source"].unique().to_list())
    missing = [s for s in sources if s not in present]
    if len(missing) == len(sources):
        raise StageError(
            f"{path}: no documents from pugc.sources {sources}; sources present: {present}: ingest wrote no "
            f"documents of them (see {path.parent / 'details.json'}: an empty file?), or has not run since they were "
            "added to ingest.sources: run `dvc repro`"  # params validation checked their names and kinds
        )
    chosen = docs.filter(pl.col("source").is_in(sources))
    return chosen, {
        "rows": docs.height,
        "selected": chosen.height,
        "sources": sources,
        "missing_sources": missing,
    }


def with_prompt_ids(queries: pl.DataFrame, docs: pl.DataFrame) -> pl.DataFrame:
    """Kept queries with their document's ``reference`` and ``source``; ``prompt_id`` = id of (doc, query)."""
    return (
        queries.join(docs.select("doc_id", "reference", "source"), on="doc_id")
        .with_columns(prompt_id=ids.hex_id(STAGE, "doc_id", "query"))
        .rename({"doc_id": "origin_id"})
    )


def with_response_ids(samples: pl.DataFrame) -> pl.DataFrame:
    """``response_id`` = id of (prompt, sample index, text)."""
    return samples.with_columns(response_id=ids.hex_id(STAGE, "prompt_id", "sample_index", "text"))


def pairs_table(picked: pl.DataFrame, queries: pl.DataFrame, lineage: dict) -> pa.Table:
    """Kept picks as rows of the ``pairs`` contract; ``pair_id`` = id of (prompt, chosen, rejected); lineage
    (JSON, keys sorted) names the document, the responses and why each side's generation ended
    (``chosen_finish_reason`` / ``rejected_finish_reason``), besides the stage-wide ``lineage`` fields."""
    rows = picked.filter(pl.col("drop").is_null()).join(
        queries.select("prompt_id", "query", "origin_id", "source"), on="prompt_id"
    )
    fields = {k: pl.lit(v) for k, v in lineage.items()} | {
        "doc_id": pl.col("origin_id"),
        "prompt_id": pl.col("prompt_id"),
        "chosen_id": pl.col("chosen_response_id"),
        "rejected_id": pl.col("rejected_response_id"),
        "chosen_finish_reason": pl.col("chosen_finish_reason"),
        "rejected_finish_reason": pl.col("rejected_finish_reason"),
    }
    table = rows.select(
        pair_id=ids.hex_id(STAGE, "prompt_id", "chosen_response_id", "rejected_response_id"),
        prompt=one_message("user", "query"),
        chosen=one_message("assistant", "chosen_text"),
        rejected=one_message("assistant", "rejected_text"),
        score_chosen="chosen_score",
        score_rejected="rejected_score",
        margin="margin",
        label_smoothing=pl.lit(0.0),
        noisy=pl.lit(False),
        method=pl.lit("pugc"),
        source="source",
        lineage=pl.struct(**{k: fields[k] for k in sorted(fields)}).struct.json_encode(),
    ).to_arrow()
    for name in ("prompt", "chosen", "rejected"):
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(MESSAGES_TYPE))
    return table


def write_outputs(
    params: Params,
    queries: pl.DataFrame,
    responses: pl.DataFrame,
    pairs: pa.Table,
    judge: LLM,
    policy: LLM,
    out: Path,
    *,
    fp: str,
) -> None:
    """``queries`` (prompts, ``reference`` = the document), ``responses`` (scored), ``pairs``; ``fp``: the
    stage's params fingerprint (``fingerprint(params.pugc, params.llm)``) for the shard manifests."""
    kw = shard_sizes(params.execution, fingerprint=fp)
    prompts = queries.select(
        "prompt_id",
        messages=one_message("user", "query"),
        source="source",
        origin_id="origin_id",
        reference="reference",
    ).to_arrow()
    prompts = prompts.set_column(1, "messages", prompts["messages"].cast(MESSAGES_TYPE))
    write_shards(prompts, out / "queries", name="prompts", **kw)
    scored = responses.select(
        "prompt_id",
        "response_id",
        "text",
        generator=pl.lit(policy.model),
        score="score",
        scorer=pl.lit(f"pugc:{judge.model}"),
        detail="detail",
    )
    write_shards(scored.to_arrow(), out / "responses", name="responses", **kw)
    write_shards(pairs, out / "pairs", name="pairs", **kw)


def publish(params: Params, out: Path, queries: pl.DataFrame, responses: pl.DataFrame, pairs: pa.Table,
            judge: LLM, policy: LLM, metrics: dict, *, fp: str) -> None:
    """Queries, responses, pairs, metrics.json (headline) and details.json (``metrics``) swapped into ``out``
    together (``pipeline.outputs``); then the step checkpoints go."""
    staged = begin_outputs(out)
    write_outputs(params, queries, responses, pairs, judge, policy, staged, fp=fp)
    write_metrics(staged, {"rows_in": metrics["input"]["selected"], "queries": metrics["query_filter"]["kept"],
                           "responses": metrics["scoring"]["kept"], "pairs": metrics["pairs"]["kept"],
                           **gate_headline(metrics["gates"])}, metrics)
    commit_outputs(out)
    clear_checkpoints("pugc")


def empty_queries() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"doc_id": pl.String, "query_index": pl.Int64, "query": pl.String, "error": pl.String}
    )


def empty_samples() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "prompt_id": pl.String,
            "sample_index": pl.Int64,
            "text": pl.String,
            "finish_reason": pl.String,
        }
    )
