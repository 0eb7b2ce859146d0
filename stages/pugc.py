"""PUGC: preferences implied by user-generated content (Tan et al., ACL 2025; METHODS.md §2).

A person's post already holds a good answer to some reader's question. So::

    documents --1 pre-filter--> --2 one reader query each--> --3 "does the document answer it?"-->
    --4 K policy responses per query--> --5 judge scores each 1-5 with the document as reference-->
    --6 pairs: best vs worst response, kept when the margin reaches min_margin

Each step is a small function over a polars frame / Arrow batch; model steps take an ``engine``
and run through ``map_batches``. A row that leaves the flow gets a ``drop`` reason, and metrics
count every row at every step (``in == kept + sum(dropped)``).

Outputs: ``data/pugc/queries`` (prompts, ``reference`` = the document), ``data/pugc/responses``
(all scored responses, for Curry-DPO and DOVE), ``data/pugc/pairs``, ``data/pugc/metrics.json``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from pipeline.config import LLM, Params, Pugc, Sampling, fingerprint, resolve_role
from pipeline.execute import CHECKPOINT_ROOT, Checkpoint, map_batches
from pipeline.io import StageError, read_table, write_json_atomic, write_shards
from pipeline.llm.base import GenerationFailure
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import MESSAGES_TYPE, stable_id
from pipeline.text import minhash, near_duplicate_groups, ngram_hashes, normalise

DOCUMENTS = Path("data/ingest/documents")
OUT = Path("data/pugc")
PROMPTS = Path(__file__).resolve().parents[1] / "pipeline" / "prompts"
SCORES = ["1", "2", "3", "4", "5"]
MINHASH_SEED = 0

# Frequent English function words: their share of a text's words is ~0.4 for English prose and
# near 0 for other languages, a dependency-free language check good enough for a pre-filter.
STOPWORDS = sorted(
    "a about after all also am an and any are as at be because been but by can could did do does for from "
    "get got had has have he her him his how i if in into is it its just like me my no not now of on one or "
    "our out so some than that the their them then there they this to up us was we were what when which "
    "who will with would you your".split()
)


def template(name: str) -> str:
    return (PROMPTS / f"pugc_{name}.txt").read_text(encoding="utf-8")


def unfence(text: str) -> str:
    """User text cannot close its fence: runs of 3+ angle brackets are shortened to 2."""
    return re.sub(r">{3,}", ">>", re.sub(r"<{3,}", "<<", text))


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def drop_counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = frame.filter(pl.col("drop").is_not_null())["drop"].value_counts(sort=True)
    return {r: int(n) for r, n in sorted(counts.iter_rows())}


def account(frame: pl.DataFrame) -> dict:
    """{in, kept, dropped: {reason: n}} of a frame carrying a ``drop`` column."""
    dropped = drop_counts(frame)
    return {"in": frame.height, "kept": frame.height - sum(dropped.values()), "dropped": dropped}


def first_reason(*conditions: tuple[pl.Expr, str]) -> pl.Expr:
    """The reason of the first condition that holds, else null."""
    expr = pl.lit(None, dtype=pl.String)
    for cond, reason in reversed(conditions):
        expr = pl.when(cond).then(pl.lit(reason)).otherwise(expr)
    return expr


# --- 1. pre-filter -------------------------------------------------------------------------------


def document_view() -> pl.Expr:
    """What the models read: the title (when there is one), a blank line, the text."""
    title = pl.col("title").fill_null("").str.strip_chars()
    return (
        pl.when(title != "")
        .then(pl.concat_str([title, pl.lit("\n\n"), pl.col("text")]))
        .otherwise(pl.col("text"))
    )


def quality_filter(docs: pl.DataFrame, cfg: Pugc) -> pl.DataFrame:
    """Mark too_short / too_long / not_english / exact_duplicate (first by doc_id is kept)."""
    docs = docs.sort("doc_id")
    words = pl.col("text").str.to_lowercase().str.extract_all(r"[a-z']+")
    stats = docs.with_columns(
        n_words=pl.col("text").str.count_matches(r"\S+"),
        stop_ratio=words.list.eval(pl.element().is_in(STOPWORDS)).list.mean().fill_null(0.0),
        ascii_ratio=(
            pl.col("text").str.count_matches(r"[A-Za-z]") / pl.col("text").str.count_matches(r"\p{L}")
        )
        .fill_nan(0.0)
        .fill_null(0.0),
    )
    marked = stats.with_columns(
        drop=first_reason(
            (pl.col("n_words") < cfg.min_words, "too_short"),
            (pl.col("n_words") > cfg.max_words, "too_long"),
            (pl.col("ascii_ratio") < cfg.min_ascii_letter_ratio, "not_english"),
            (pl.col("stop_ratio") < cfg.min_english_stopword_ratio, "not_english"),
        )
    )
    # Exact duplicates are judged among the documents that passed, so a dropped one cannot shadow a kept one.
    live = pl.col("drop").is_null()
    repeat = live & ~normalise(document_view()).is_first_distinct().over(live)
    return marked.with_columns(
        drop=pl.when(repeat).then(pl.lit("exact_duplicate")).otherwise(pl.col("drop"))
    ).drop("n_words", "stop_ratio", "ascii_ratio")


def minhash_step(batch: pa.Table, *, shingle_words: int, num_perm: int) -> pa.Table:
    """CPU step: a ``signature`` column (MinHash of word shingles of title + text).

    ``pipeline.text`` hashes whole columns at once (xxh3, stable across machines and versions); a library
    such as ``datasketch`` would update one shingle at a time from Python.
    """
    frame = pl.from_arrow(batch)
    views = normalise(frame.select(document_view()).to_series())
    sig = minhash(ngram_hashes(views, shingle_words), len(views), num_perm, seed=MINHASH_SEED)
    return batch.append_column(
        "signature", pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), num_perm)
    )


def near_duplicate_filter(docs: pl.DataFrame, cfg: Pugc) -> pl.DataFrame:
    """Mark near_duplicate among rows with no drop yet: all but the first (by doc_id) of each group."""
    docs = docs.sort("doc_id").with_row_index("_row")
    live = docs.filter(pl.col("drop").is_null())
    if live.height == 0:
        return docs.drop("signature", "_row")
    sig = live["signature"].to_numpy().astype(np.uint64).reshape(live.height, cfg.minhash_perms)
    group = near_duplicate_groups(sig, bands=cfg.minhash_bands, threshold=cfg.near_duplicate_threshold)
    repeats = live["_row"].filter(pl.Series(group != np.arange(live.height)))
    return docs.with_columns(
        drop=pl.when(pl.col("_row").is_in(repeats.implode()))
        .then(pl.lit("near_duplicate"))
        .otherwise(pl.col("drop"))
    ).drop("signature", "_row")


# --- 2. query generation -------------------------------------------------------------------------


class Query(BaseModel):
    query: str


def generate_queries(batch: pa.Table, engine, *, prompt: str, n: int, sampling: Sampling) -> pa.Table:
    """Engine step: ``n`` reader queries per document; failures kept with their error."""
    frame = pl.from_arrow(batch)
    views = frame.select(document_view()).to_series().to_list()
    outs = engine.generate(
        [chat(prompt.format(document=unfence(v))) for v in views], n=n, sampling=sampling, schema=Query
    )
    rows = {"doc_id": [], "query_index": [], "query": [], "error": []}
    for doc_id, samples in zip(frame["doc_id"], outs, strict=True):
        for i, out in enumerate(samples):
            failed = isinstance(out, GenerationFailure)
            rows["doc_id"].append(doc_id)
            rows["query_index"].append(i)
            rows["query"].append(None if failed else out.query.strip())
            rows["error"].append(out.error if failed else None)
    return pa.table(
        rows,
        schema=pa.schema(
            [
                ("doc_id", pa.string()),
                ("query_index", pa.int64()),
                ("query", pa.string()),
                ("error", pa.string()),
            ]
        ),
    )


def clean_queries(queries: pl.DataFrame, leak_patterns: list[str]) -> pl.DataFrame:
    """Mark generation_failed / empty_query / leaks_source / duplicate_query (first by doc_id is kept)."""
    queries = queries.sort("doc_id", "query_index")
    leaks = "|".join(f"(?:{p})" for p in leak_patterns) if leak_patterns else None
    marked = queries.with_columns(
        drop=first_reason(
            (pl.col("error").is_not_null() | pl.col("query").is_null(), "generation_failed"),
            (normalise(pl.col("query").fill_null("")) == "", "empty_query"),
            (pl.col("query").str.contains(f"(?i){leaks}") if leaks else pl.lit(False), "leaks_source"),
        )
    )
    key = normalise(pl.col("query"))
    dup = pl.col("drop").is_null() & ~key.is_first_distinct().over(pl.col("drop").is_null())
    return marked.with_columns(drop=pl.when(dup).then(pl.lit("duplicate_query")).otherwise(pl.col("drop")))


# --- 3. query filter -----------------------------------------------------------------------------


def judge_answerable(batch: pa.Table, engine, *, prompt: str) -> pa.Table:
    """Engine step: ``p_true`` = the judge's probability that the document answers the query."""
    prompts = [
        chat(prompt.format(query=unfence(q), document=unfence(d)))
        for q, d in zip(batch["query"].to_pylist(), batch["reference"].to_pylist(), strict=True)
    ]
    probs = np.asarray(engine.choose(prompts, ["True", "False"]), dtype=np.float64).reshape(len(prompts), 2)
    return batch.append_column("p_true", pa.array(probs[:, 0] / probs.sum(axis=1)))


def query_filter(queries: pl.DataFrame, threshold: float) -> pl.DataFrame:
    return queries.with_columns(
        drop=pl.when(pl.col("p_true") >= threshold)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit("not_answerable"))
    )


# --- 4. sampling ---------------------------------------------------------------------------------


def sample_responses(batch: pa.Table, engine, *, k: int, sampling: Sampling) -> pa.Table:
    """Engine step: K responses per query, one request per query (``n=k``); the policy sees only the query."""
    outs = engine.generate([chat(q) for q in batch["query"].to_pylist()], n=k, sampling=sampling)
    ids, index, texts = [], [], []
    for prompt_id, samples in zip(batch["prompt_id"].to_pylist(), outs, strict=True):
        for i, text in enumerate(samples):
            ids.append(prompt_id)
            index.append(i)
            texts.append(text)
    return pa.table(
        {
            "prompt_id": pa.array(ids, pa.string()),
            "sample_index": pa.array(index, pa.int64()),
            "text": pa.array(texts, pa.string()),
        }
    )


def empty_response_filter(responses: pl.DataFrame) -> pl.DataFrame:
    return responses.with_columns(
        drop=first_reason((pl.col("text").str.strip_chars() == "", "empty_response"))
    )


# --- 5. reference-guided scoring -----------------------------------------------------------------


class Vote(BaseModel):
    score: Literal[1, 2, 3, 4, 5]


ANSWER_FORMAT = {
    "expected": "Answer with a single digit from 1 to 5.",
    "sampled": 'Answer in JSON: {"score": <a digit from 1 to 5>}',
}


def expected_score(probs: np.ndarray) -> np.ndarray:
    """E[score] under each row's probabilities for "1".."5" (renormalised).

    >>> expected_score(np.array([[0.1, 0.2, 0.3, 0.2, 0.2]])).round(6).tolist()
    [3.2]
    """
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ np.arange(1, 6) / probs.sum(axis=1)


def score_responses(
    batch: pa.Table, engine, *, prompt: str, scoring: str, n_judgments: int, sampling: Sampling
) -> pa.Table:
    """Engine step: ``score`` (null when every sampled vote failed) and ``detail`` JSON per response."""
    prompts = [
        chat(
            prompt.format(
                query=unfence(q),
                document=unfence(d),
                response=unfence(r),
                answer_format=ANSWER_FORMAT[scoring],
            )
        )
        for q, d, r in zip(
            batch["query"].to_pylist(), batch["reference"].to_pylist(), batch["text"].to_pylist(), strict=True
        )
    ]
    scores: list[float | None] = []
    details: list[str] = []
    if scoring == "expected":
        probs = np.asarray(engine.choose(prompts, SCORES), dtype=np.float64).reshape(len(prompts), 5)
        probs = probs / probs.sum(axis=1, keepdims=True)
        for p, s in zip(probs, expected_score(probs), strict=True):
            scores.append(float(s))
            details.append(
                json.dumps(
                    {
                        "scoring": "expected",
                        "distribution": dict(zip(SCORES, p.round(6).tolist(), strict=True)),
                    }
                )
            )
    else:
        for samples in engine.generate(prompts, n=n_judgments, sampling=sampling, schema=Vote):
            votes = [v.score for v in samples if not isinstance(v, GenerationFailure)]
            hist = {s: (votes.count(int(s)) / len(votes) if votes else 0.0) for s in SCORES}
            scores.append(float(np.mean(votes)) if votes else None)
            details.append(
                json.dumps(
                    {
                        "scoring": "sampled",
                        "votes": votes,
                        "failures": len(samples) - len(votes),
                        "distribution": hist,
                    }
                )
            )
    return pa.table(
        {
            "response_id": batch["response_id"],
            "score": pa.array(scores, pa.float64()),
            "detail": pa.array(details, pa.string()),
        }
    )


# --- 6. pairs ------------------------------------------------------------------------------------


def pick_pairs(prompt_ids: pl.Series, responses: pl.DataFrame, min_margin: float) -> pl.DataFrame:
    """One row per query in ``prompt_ids``: best vs worst scored response, ``drop`` = why no pair is made.

    Ties are broken by response_id (smallest wins) on both ends, so the result is deterministic;
    a query whose responses all tie has margin 0 and is dropped as below_min_margin.
    """
    scored = responses.filter(pl.col("score").is_not_null())
    best = (
        scored.sort(["prompt_id", "score", "response_id"], descending=[False, True, False])
        .group_by("prompt_id", maintain_order=True)
        .first()
    )
    worst = (
        scored.sort(["prompt_id", "score", "response_id"]).group_by("prompt_id", maintain_order=True).first()
    )
    n = scored.group_by("prompt_id").len("n_scored")
    cols = ["response_id", "text", "score"]
    out = (
        pl.DataFrame({"prompt_id": prompt_ids.unique()}, schema={"prompt_id": pl.String})
        .join(n, on="prompt_id", how="left")
        .join(
            best.select("prompt_id", *[pl.col(c).alias(f"chosen_{c}") for c in cols]),
            on="prompt_id",
            how="left",
        )
        .join(
            worst.select("prompt_id", *[pl.col(c).alias(f"rejected_{c}") for c in cols]),
            on="prompt_id",
            how="left",
        )
        .with_columns(
            n_scored=pl.col("n_scored").fill_null(0),
            margin=(pl.col("chosen_score") - pl.col("rejected_score")).round(9),
        )
    )
    return out.with_columns(
        drop=first_reason(
            (pl.col("n_scored") < 2, "too_few_responses"),
            (pl.col("margin") < min_margin, "below_min_margin"),
            (pl.col("chosen_text") == pl.col("rejected_text"), "identical_texts"),
        )
    ).sort("prompt_id")


def pairs_table(picked: pl.DataFrame, queries: pl.DataFrame, lineage: dict) -> pa.Table:
    """Kept picks as rows of the ``pairs`` contract."""
    rows = picked.filter(pl.col("drop").is_null()).join(
        queries.select("prompt_id", "query", "origin_id", "source"), on="prompt_id"
    )
    pair_ids, lineages = [], []
    for r in rows.iter_rows(named=True):
        pair_ids.append(stable_id("pugc", r["prompt_id"], r["chosen_response_id"], r["rejected_response_id"]))
        lineages.append(
            json.dumps(
                {
                    **lineage,
                    "doc_id": r["origin_id"],
                    "prompt_id": r["prompt_id"],
                    "chosen_id": r["chosen_response_id"],
                    "rejected_id": r["rejected_response_id"],
                },
                sort_keys=True,
            )
        )
    msg = lambda role, col: pl.concat_list(pl.struct(role=pl.lit(role), content=pl.col(col)))  # noqa: E731
    table = rows.select(
        pair_id=pl.Series(pair_ids, dtype=pl.String),
        prompt=msg("user", "query"),
        chosen=msg("assistant", "chosen_text"),
        rejected=msg("assistant", "rejected_text"),
        score_chosen="chosen_score",
        score_rejected="rejected_score",
        margin="margin",
        label_smoothing=pl.lit(0.0),
        noisy=pl.lit(False),
        method=pl.lit("pugc"),
        source="source",
        lineage=pl.Series(lineages, dtype=pl.String),
    ).to_arrow()
    for name in ("prompt", "chosen", "rejected"):
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(MESSAGES_TYPE))
    return table


# --- stage ---------------------------------------------------------------------------------------


def _run(
    table: pl.DataFrame, fn, params: Params, step: str, *, engine: LLM | None = None, **kwargs
) -> pl.DataFrame | None:
    fp = fingerprint(params.pugc, engine or params.execution, {"step": step})
    out = map_batches(
        table.to_arrow(),
        fn,
        execution=params.execution,
        engine=engine,
        fn_kwargs=kwargs,
        desc=f"pugc {step}",
        checkpoint=Checkpoint(CHECKPOINT_ROOT / "pugc" / step, fp),
    )
    return None if out is None else pl.from_arrow(out)


def load_documents(path: Path, sources: list[str]) -> tuple[pl.DataFrame, dict]:
    docs = pl.from_arrow(read_table(path, "documents"))
    present = sorted(docs["source"].unique().to_list())
    missing = [s for s in sources if s not in present]
    if len(missing) == len(sources):
        raise StageError(
            f"{path}: no documents from pugc.sources {sources}; sources present: {present}. "
            "Fix pugc.sources in params.yaml or add the source to ingest.sources."
        )
    chosen = docs.filter(pl.col("source").is_in(sources))
    return chosen, {
        "rows": docs.height,
        "selected": chosen.height,
        "sources": sources,
        "missing_sources": missing,
    }


def main(params: Params, documents: Path = DOCUMENTS, out: Path = OUT) -> dict:
    cfg = params.pugc
    role = {
        name: resolve_role(params.llm, getattr(cfg.roles, name)) for name in ("generator", "policy", "judge")
    }
    # Timings go to the log, not to metrics.json: metrics are a DVC output and stay byte-identical
    # for identical inputs and params.
    metrics: dict = {}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(step: str) -> None:
        nonlocal clock
        timings[step] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    # 1. pre-filter
    docs, metrics["input"] = load_documents(documents, cfg.sources)
    docs = quality_filter(docs, cfg)
    live = docs.filter(pl.col("drop").is_null())
    signed = _run(
        live, minhash_step, params, "minhash", shingle_words=cfg.shingle_words, num_perm=cfg.minhash_perms
    )
    if signed is not None:
        docs = pl.concat(
            [docs.filter(pl.col("drop").is_not_null()).with_columns(signature=pl.lit(None)), signed],
            how="diagonal_relaxed",
        )
        docs = near_duplicate_filter(docs, cfg)
    metrics["prefilter"] = account(docs)
    docs = docs.filter(pl.col("drop").is_null()).with_columns(reference=document_view())
    tick("prefilter")

    # 2. query generation + leakage / duplicate filter
    gen = role["generator"]
    queries = _run(
        docs.select("doc_id", "title", "text"),
        generate_queries,
        params,
        "queries",
        engine=gen,
        prompt=template("query"),
        n=cfg.queries_per_document,
        sampling=gen.sampling,
    )
    queries = clean_queries(queries if queries is not None else _empty_queries(), cfg.leak_patterns)
    errors = (
        queries["error"]
        .drop_nulls()
        .value_counts()
        .sort(["count", "error"], descending=[True, False])
        .head(3)
    )
    metrics["queries"] = {**account(queries), "top_errors": [[e, int(n)] for e, n in errors.iter_rows()]}
    queries = (
        queries.filter(pl.col("drop").is_null())
        .join(docs.select("doc_id", "reference", "source"), on="doc_id")
        .with_columns(
            prompt_id=pl.struct("doc_id", "query").map_elements(
                lambda r: stable_id("pugc", r["doc_id"], r["query"]), return_dtype=pl.String
            )
        )
        .rename({"doc_id": "origin_id"})
    )
    tick("queries")

    # 3. query filter
    judge = role["judge"]
    scored_q = _run(
        queries.select("prompt_id", "query", "reference"),
        judge_answerable,
        params,
        "query_filter",
        engine=judge,
        prompt=template("query_filter"),
    )
    filtered = query_filter(
        queries.join(scored_q.select("prompt_id", "p_true"), on="prompt_id")
        if scored_q is not None
        else queries.with_columns(p_true=pl.lit(None, pl.Float64)),
        cfg.query_filter_threshold,
    )
    metrics["query_filter"] = {
        **account(filtered),
        "threshold": cfg.query_filter_threshold,
        "p_true_mean": filtered["p_true"].mean(),
    }
    queries = filtered.filter(pl.col("drop").is_null()).drop("drop", "p_true")
    tick("query_filter")

    # 4. sampling
    policy = role["policy"]
    sampling = policy.sampling.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p})
    samples = _run(
        queries.select("prompt_id", "query"),
        sample_responses,
        params,
        "sampling",
        engine=policy,
        k=cfg.responses_per_query,
        sampling=sampling,
    )
    samples = empty_response_filter(samples if samples is not None else _empty_samples())
    metrics["sampling"] = {
        **account(samples),
        "queries": queries.height,
        "responses_per_query": cfg.responses_per_query,
    }
    samples = (
        samples.filter(pl.col("drop").is_null())
        .drop("drop")
        .with_columns(
            response_id=pl.struct("prompt_id", "sample_index", "text").map_elements(
                lambda r: stable_id("pugc", r["prompt_id"], r["sample_index"], r["text"]),
                return_dtype=pl.String,
            )
        )
    )
    tick("sampling")

    # 5. reference-guided scoring
    to_score = samples.join(queries.select("prompt_id", "query", "reference"), on="prompt_id")
    scores = _run(
        to_score.select("response_id", "query", "reference", "text"),
        score_responses,
        params,
        "scoring",
        engine=judge,
        prompt=template("judge"),
        scoring=cfg.scoring,
        n_judgments=cfg.n_judgments,
        sampling=judge.sampling,
    )
    responses = (
        samples.join(scores, on="response_id", how="left")
        if scores is not None
        else samples.with_columns(score=pl.lit(None, pl.Float64), detail=pl.lit(None, pl.String))
    )
    responses = responses.with_columns(drop=first_reason((pl.col("score").is_null(), "judge_failed")))
    metrics["scoring"] = {
        **account(responses),
        "scoring": cfg.scoring,
        "score_mean": responses["score"].mean(),
    }
    responses = responses.filter(pl.col("drop").is_null()).drop("drop")
    tick("scoring")

    # 6. pairs
    picked = pick_pairs(queries["prompt_id"], responses, cfg.min_margin)
    metrics["pairs"] = {**account(picked), "queries": queries.height, "min_margin": cfg.min_margin}
    lineage = {
        "stage": "pugc",
        "generator": gen.model,
        "policy": policy.model,
        "judge": judge.model,
        "scoring": cfg.scoring,
        "fingerprint": fingerprint(cfg, params.llm),
    }
    pairs = pairs_table(picked, queries, lineage)
    tick("pairs")

    staged = begin_outputs(out)  # queries, responses, pairs and metrics change together (pipeline/outputs.py)
    _write(params, queries, responses, pairs, judge, policy, staged)
    write_json_atomic(metrics, staged / "metrics.json")
    commit_outputs(out)
    for step in ("minhash", "queries", "query_filter", "sampling", "scoring"):
        Checkpoint(CHECKPOINT_ROOT / "pugc" / step, "").clear()
    print(
        f"pugc: {metrics['input']['selected']} documents -> {metrics['prefilter']['kept']} kept -> "
        f"{metrics['query_filter']['kept']} queries -> {metrics['scoring']['kept']} scored responses -> "
        f"{metrics['pairs']['kept']} pairs (drops by reason in {out / 'metrics.json'}); seconds per step: {timings}"
    )
    return metrics


def _write(
    params: Params,
    queries: pl.DataFrame,
    responses: pl.DataFrame,
    pairs: pa.Table,
    judge: LLM,
    policy: LLM,
    out: Path,
) -> None:
    fp = fingerprint(params.pugc, params.llm)
    ex = params.execution
    kw = {
        "fingerprint": fp,
        "target_shard_bytes": ex.target_shard_bytes,
        "row_group_bytes": ex.row_group_bytes,
    }
    prompts = queries.select(
        "prompt_id",
        messages=pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.col("query"))),
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


def _empty_queries() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"doc_id": pl.String, "query_index": pl.Int64, "query": pl.String, "error": pl.String}
    )


def _empty_samples() -> pl.DataFrame:
    return pl.DataFrame(schema={"prompt_id": pl.String, "sample_index": pl.Int64, "text": pl.String})
