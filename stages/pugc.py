"""PUGC: preferences implied by user-generated content (Tan et al., ACL 2025; METHODS.md §2).

A person's post already holds a good answer to some reader's question. So::

    documents --1 pre-filter--> --2 one reader query each--> --3 its writer: "does the document answer it?"-->
    --4 K policy responses per query--> --5 judge scores each 1-5 with the document as reference-->
    --6 pairs: best vs worst response with another answer, kept when the margin reaches min_margin

Step 3 is asked of the model that wrote the query (the ``generator`` role), as the paper's LLM writes and
filters its reader queries; step 5 of the ``judge`` (the paper's reward model). Before step 2 both judgments
prove, on built-in probes, that they discriminate; below ``pugc.gates`` the stage fails or withholds those
labels (the judgments' steps and gates: ``stages/pugc_judge.py``;
pre-filter: ``stages/pugc_prefilter.py``; plumbing and outputs: ``stages/pugc_io.py``). Each step is a
small function over a polars frame / Arrow batch; model steps take an ``engine`` and run through
``map_batches``, doing only what needs the engine (ids, scores and JSON are polars over whole columns). A
row that leaves the flow gets a ``drop`` reason, and metrics count every row at every step (``in == kept +
sum(dropped)``). Every prompt is a template filled by ``pipeline.prompt.fill_rows``.

Outputs: ``data/pugc/queries`` (prompts, ``reference`` = the document), ``data/pugc/responses``
(all scored responses, for Curry-DPO and DOVE), ``data/pugc/pairs``, ``data/pugc/metrics.json`` (headline
numbers) and ``data/pugc/details.json`` (every count).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from pipeline.checks import same_text, shows_nothing
from pipeline.config import LLM, Params, Pugc, Sampling, fingerprint, resolve_role
from pipeline.drops import account, first_reason
from pipeline.llm.base import GenerationFailure, sample_fields
from pipeline.llm.identity import model_identities
from pipeline.llm.structured import PrintableStr
from pipeline.metrics import DETAILS, announce_overrides, counted
from pipeline.prompt import copies_template, fill_rows, template, template_phrases
from pipeline.text import normalise, word_counts
from stages.pugc_io import (
    StepClock,
    empty_queries,
    empty_samples,
    load_documents,
    pairs_table,
    publish,
    run_step,
    with_prompt_ids,
    with_response_ids,
)
from stages.pugc_judge import (
    chat,
    judge_gates,
    query_filter,
    run_answerable,
    run_scorer,
    to_scores,
)
from stages.pugc_prefilter import prefilter

DOCUMENTS = Path("data/ingest/documents")
OUT = Path("data/pugc")


# --- 2. query generation -------------------------------------------------------------------------


def query_prompts(documents: list[str]) -> list[list[dict[str, str]]]:
    """One chat prompt per document."""
    return [chat(t) for t in fill_rows(template("pugc_query"), document=documents)]


class Query(BaseModel):
    query: PrintableStr


QUERIES = pa.schema(
    {"doc_id": pa.string(), "query_index": pa.int64(), "query": pa.string(), "error": pa.string()}
)


def generate_queries(batch: pa.Table, engine, *, n: int, sampling: Sampling) -> pa.Table:
    """Engine step: ``n`` reader queries per document (its ``reference``: title and text); failures kept
    with their error."""
    prompts = query_prompts(batch["reference"].to_pylist())
    outs = engine.generate(prompts, n=n, sampling=sampling, schema=Query)
    rows = {"doc_id": [], "query_index": [], "query": [], "error": []}
    for doc_id, samples in zip(batch["doc_id"].to_pylist(), outs, strict=True):
        for i, out in enumerate(samples):
            failed = isinstance(out, GenerationFailure)
            rows["doc_id"].append(doc_id)
            rows["query_index"].append(i)
            rows["query"].append(None if failed else out.query.strip())
            rows["error"].append(out.error if failed else None)
    return pa.table(rows, schema=QUERIES)


def clean_queries(queries: pl.DataFrame, leak_patterns: list[str], min_words: int) -> pl.DataFrame:
    """Mark generation_failed / empty_query / leaks_source / copies_template (the template's placeholder
    ``<the query>`` or its quoted example, instead of a query) / short_query (under ``min_words`` words once
    normalised, a CJK character as one: "What?", "Explain" ask nothing a document answers) / duplicate_query
    (first by doc_id is kept)."""
    queries = queries.sort("doc_id", "query_index")
    leaks = "|".join(f"(?:{p})" for p in leak_patterns) if leak_patterns else None
    query = pl.col("query").fill_null("")
    marked = queries.with_columns(
        drop=first_reason(
            (pl.col("error").is_not_null() | pl.col("query").is_null(), "generation_failed"),
            (normalise(query) == "", "empty_query"),
            (query.str.contains(f"(?i){leaks}") if leaks else pl.lit(False), "leaks_source"),
            (copies_template(query, template_phrases(template("pugc_query"))), "copies_template"),
            (word_counts(normalise(query)) < min_words, "short_query"),
        )
    )
    key = normalise(pl.col("query"))
    dup = pl.col("drop").is_null() & ~key.is_first_distinct().over(pl.col("drop").is_null())
    return marked.with_columns(drop=pl.when(dup).then(pl.lit("duplicate_query")).otherwise(pl.col("drop")))


# --- 3. query filter: stages/pugc_judge.py -----------------------------------------------------------

# --- 4. sampling ---------------------------------------------------------------------------------


def sample_responses(batch: pa.Table, engine, *, k: int, sampling: Sampling) -> pa.Table:
    """Engine step: K responses per query, one request per query (``n=k``); the policy sees only the query.
    Each keeps why its generation ended (``finish_reason``: stop, length when cut off, failed when the
    engine could not produce it, e.g. a request the server refused)."""
    outs = engine.generate([chat(q) for q in batch["query"].to_pylist()], n=k, sampling=sampling)
    prompt_ids = batch["prompt_id"].to_pylist()
    completions = [(p, i, sample_fields(c)) for p, o in zip(prompt_ids, outs, strict=True) for i, c in enumerate(o)]
    return pa.table(
        {
            "prompt_id": pa.array([p for p, _, _ in completions], pa.string()),
            "sample_index": pa.array([i for _, i, _ in completions], pa.int64()),
            "text": pa.array([c[0] for _, _, c in completions], pa.string()),
            "finish_reason": pa.array([c[1] for _, _, c in completions], pa.string()),
        }
    )


def response_filter(responses: pl.DataFrame) -> pl.DataFrame:
    """Mark generation_failed (no answer came back), cut_off (the answer hit max_new_tokens: unfinished,
    never paired) and empty_response."""
    return responses.with_columns(
        drop=first_reason(
            (pl.col("finish_reason") == "failed", "generation_failed"),
            (pl.col("finish_reason") == "length", "cut_off"),
            (shows_nothing(pl.col("text")), "empty_response"),
        )
    )


# --- 5. reference-guided scoring: stages/pugc_judge.py -----------------------------------------------

# --- 6. pairs ------------------------------------------------------------------------------------


def _first(scored: pl.DataFrame, *, best: bool) -> pl.DataFrame:
    """Per query, the highest- (``best``) or lowest-scored response; equal scores go to the smallest
    response_id on both ends."""
    order = ["prompt_id", "score", "response_id"]
    return scored.sort(order, descending=[False, best, False]).group_by("prompt_id", maintain_order=True).first()


def worst_other_answer(scored: pl.DataFrame, best: pl.DataFrame) -> pl.DataFrame:
    """Per query, the lowest-scored response whose answer is not the best one's (``pipeline.checks.same_text``):
    where the lowest-scored response says what the best says (two samples that came out alike, scored apart),
    the next different answer up is taken; a query whose responses all give one answer has none. Answer keys
    are computed only for the queries where that happens."""
    worst = _first(scored, best=False)
    texts = best.select("prompt_id", _best="text")
    clash = worst.join(texts, on="prompt_id").filter(same_text(pl.col("text"), pl.col("_best")))["prompt_id"]
    if clash.is_empty():
        return worst
    others = (
        scored.filter(pl.col("prompt_id").is_in(clash.implode()))
        .join(texts, on="prompt_id")
        .filter(~same_text(pl.col("text"), pl.col("_best")))
        .drop("_best")
    )
    return pl.concat([worst.filter(~pl.col("prompt_id").is_in(clash.implode())), _first(others, best=False)])


def pick_pairs(prompt_ids: pl.Series, responses: pl.DataFrame, min_margin: float) -> pl.DataFrame:
    """One row per query in ``prompt_ids``: the best scored response vs the worst scored one among those that
    give a different answer (``worst_other_answer``); ``drop`` = why no pair is made: too_few_responses (fewer
    than two scored), same_text (every response is the same answer once whitespace is normalised, case folded
    and sentence punctuation set aside: no rejected side), below_min_margin (ties included).

    Ties are broken by response_id (smallest wins) on both ends, so the result is deterministic.
    """
    scored = responses.filter(pl.col("score").is_not_null())
    best = _first(scored, best=True)
    worst = worst_other_answer(scored, best)
    n = scored.group_by("prompt_id").len("n_scored")
    cols = ["response_id", "text", "score", "finish_reason"]

    def side(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.select("prompt_id", *[pl.col(c).alias(f"{name}_{c}") for c in cols])

    out = (
        pl.DataFrame({"prompt_id": prompt_ids.unique()}, schema={"prompt_id": pl.String})
        .join(n, on="prompt_id", how="left")
        .join(side(best, "chosen"), on="prompt_id", how="left")
        .join(side(worst, "rejected"), on="prompt_id", how="left")
        .with_columns(
            n_scored=pl.col("n_scored").fill_null(0),
            margin=(pl.col("chosen_score") - pl.col("rejected_score")).round(9),
        )
    )
    return out.with_columns(
        drop=first_reason(
            (pl.col("n_scored") < 2, "too_few_responses"),
            (pl.col("rejected_response_id").is_null(), "same_text"),
            (pl.col("margin") < min_margin, "below_min_margin"),
        )
    ).sort("prompt_id")


# --- the stage: the six steps in order ----------------------------------------------------------------


def query_step(docs: pl.DataFrame, params: Params, gen: LLM, *, gate_passed: bool) -> tuple[pl.DataFrame, dict]:
    """Step 2: ``queries_per_document`` reader queries per document, then the failure / leakage /
    template-copy / length / duplicate filter; returns the kept queries (with ``prompt_id``) and the step's counts. With
    the query filter's gate withheld no query would be kept, so none is generated."""
    cfg = params.pugc
    to_query = docs if gate_passed else docs.clear()
    queries = run_step(to_query.select("doc_id", "reference"), generate_queries, params, "queries", engine=gen,
                       n=cfg.queries_per_document, sampling=gen.sampling)
    queries = clean_queries(queries if queries is not None else empty_queries(), cfg.leak_patterns,
                            cfg.min_query_words)
    errors = queries["error"].drop_nulls().value_counts().sort(["count", "error"], descending=[True, False])
    counts = {
        **account(queries),
        "documents_skipped_gate_withheld": docs.height - to_query.height,
        "top_errors": [[e, int(n)] for e, n in errors.head(3).iter_rows()],
    }
    return with_prompt_ids(queries.filter(pl.col("drop").is_null()), docs), counts


def query_filter_step(queries: pl.DataFrame, params: Params, gen: LLM, *, gate_passed: bool) -> tuple[pl.DataFrame, dict]:
    """Step 3: keep the queries their document answers (``p_true`` at or above ``query_filter_threshold``), as
    the model that wrote them (``gen``, the generator role) judges, like the paper's LLM that writes and filters
    the reader queries; with the gate withheld no query is kept on its word."""
    cfg = params.pugc
    if gate_passed:
        judged = run_answerable(queries, params, "query_filter", gen)
        filtered = query_filter(
            queries.join(judged.select("prompt_id", "p_true"), on="prompt_id")
            if judged is not None
            else queries.with_columns(p_true=pl.lit(None, pl.Float64)),
            cfg.query_filter_threshold,
        )
    else:
        filtered = queries.with_columns(p_true=pl.lit(None, pl.Float64), drop=pl.lit("gate_withheld"))
    counts = {
        **account(filtered),
        "threshold": cfg.query_filter_threshold,
        # 6 decimals: a diagnostic, stable when CPU thread counts move the scores' last float bits
        "p_true_mean": None if (m := filtered["p_true"].fill_nan(None).mean()) is None else round(m, 6),
    }
    return filtered.filter(pl.col("drop").is_null()).drop("drop", "p_true"), counts


def sampling_step(queries: pl.DataFrame, params: Params, policy: LLM, *, gate_passed: bool) -> tuple[pl.DataFrame, dict]:
    """Step 4: ``responses_per_query`` policy responses per query, failed / cut-off / empty ones dropped; each
    kept one gets its ``response_id``. With the scorer's gate withheld there is nothing to score, so nothing
    is sampled."""
    cfg = params.pugc
    to_sample = queries if gate_passed else queries.clear()
    sampling = policy.sampling.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p})
    samples = run_step(to_sample.select("prompt_id", "query"), sample_responses, params, "sampling", engine=policy,
                       k=cfg.responses_per_query, sampling=sampling)
    samples = response_filter(samples if samples is not None else empty_samples())
    counts = {**account(samples), "queries": to_sample.height, "responses_per_query": cfg.responses_per_query}
    return with_response_ids(samples.filter(pl.col("drop").is_null()).drop("drop")), counts


def scoring_step(samples: pl.DataFrame, queries: pl.DataFrame, params: Params, judge: LLM) -> tuple[pl.DataFrame, dict]:
    """Step 5: the judge scores each response 1-5 with the document as reference; a response it cannot
    score is dropped (``judge_failed``)."""
    cfg = params.pugc
    to_score = samples.join(queries.select("prompt_id", "query", "reference"), on="prompt_id")
    scored = run_scorer(to_score, params, "scoring", judge)
    responses = (
        samples.join(to_scores(scored, cfg.scoring), on="response_id", how="left")
        if scored is not None
        else samples.with_columns(score=pl.lit(None, pl.Float64), detail=pl.lit(None, pl.String))
    )
    responses = responses.with_columns(drop=first_reason((pl.col("score").is_null(), "judge_failed")))
    counts = {**account(responses), "scoring": cfg.scoring, "score_mean": responses["score"].mean()}
    return responses.filter(pl.col("drop").is_null()).drop("drop"), counts


def pairs_step(queries: pl.DataFrame, responses: pl.DataFrame, cfg: Pugc, lineage: dict, *,
               gate_passed: bool) -> tuple[pa.Table, dict]:
    """Step 6: best vs worst response per query, kept at ``min_margin`` or more, as ``pairs`` rows; with the
    scorer's gate withheld no pair is kept."""
    picked = pick_pairs(queries["prompt_id"], responses, cfg.min_margin)
    if not gate_passed:
        picked = picked.with_columns(drop=pl.lit("gate_withheld"))
    counts = {**account(picked), "queries": queries.height, "min_margin": cfg.min_margin}
    return pairs_table(picked, queries, lineage), counts


def main(params: Params, documents: Path = DOCUMENTS, out: Path = OUT) -> dict:
    """The six steps in order, each adding its counts to the metrics; the judge's gates run before any model
    work on real rows. Returns the metrics (details.json)."""
    cfg = params.pugc
    fp = fingerprint(cfg, params.llm)  # in every pair's lineage and every shard manifest
    gen, policy, judge = (resolve_role(params.llm, getattr(cfg.roles, r)) for r in ("generator", "policy", "judge"))
    metrics: dict = {"tiny_overrides": announce_overrides(params, "pugc"),
                     "models": model_identities({"generator": gen, "policy": policy, "judge": judge})}
    clock = StepClock()  # seconds per step go to the console, never to the metrics (a DVC output)

    docs, metrics["input"] = load_documents(documents, cfg.sources)
    docs, metrics["prefilter"] = prefilter(docs, params)
    clock.tick("prefilter")
    metrics["gates"] = judge_gates(params, gen, judge)
    use = {role: report["passed"] for role, report in metrics["gates"].items()}
    clock.tick("gates")
    queries, metrics["queries"] = query_step(docs, params, gen, gate_passed=use["query_filter"])
    clock.tick("queries")
    queries, metrics["query_filter"] = query_filter_step(queries, params, gen, gate_passed=use["query_filter"])
    clock.tick("query_filter")
    samples, metrics["sampling"] = sampling_step(queries, params, policy, gate_passed=use["scorer"])
    clock.tick("sampling")
    responses, metrics["scoring"] = scoring_step(samples, queries, params, judge)
    clock.tick("scoring")
    lineage = {"stage": "pugc", "generator": gen.model, "policy": policy.model, "judge": judge.model,
               "scoring": cfg.scoring, "fingerprint": fp}
    pairs, metrics["pairs"] = pairs_step(queries, responses, cfg, lineage, gate_passed=use["scorer"])
    clock.tick("pairs")

    publish(params, out, queries, responses, pairs, judge, policy, metrics, fp=fp)
    print(
        f"pugc: {counted(metrics['input']['selected'], 'document')} -> {metrics['prefilter']['kept']} kept -> "
        f"{counted(metrics['query_filter']['kept'], 'query', 'queries')} -> "
        f"{counted(metrics['scoring']['kept'], 'scored response')} -> {counted(metrics['pairs']['kept'], 'pair')} "
        f"(drops by reason in {out / DETAILS}); seconds per step: {clock.seconds}"
    )
    return metrics
