"""Selfie / SPA (METHODS.md §3): the policy annotates its own pairs from its logits.

Kim et al., "Spread Preference Annotation" (ICLR 2025, arXiv 2406.04412). One run = one iteration::

    split   labelled prompts -> seed (gold pairs) | test (held out); the rest + unlabelled -> pools 1..I
    sample  K responses per prompt of pool[iteration] from the policy (n=K per request)
    judge   r(y) = log pi_policy(y|x) - log pi_reference(y|x)          (teacher-forced, summed or per-token)
    pick    chosen = argmax r, rejected = argmin r, ties dropped
    noise   confidence = sigmoid(beta * (r_c - r_r)); the floor(refine_fraction * n) least confident
            pairs of the iteration are `noisy` and get label_smoothing = alpha (0 elsewhere)

Every step is a small pure function over Arrow tables / polars frames; ``main`` wires them with
``map_batches`` and writes ``data/selfie/{prompts,responses,pairs,test}`` and ``metrics.json``.

>>> plan_split(10, 40, SelfieSplit(seed=2000, pools=[8000, 20000, 30000], test=1000, shuffle_seed=0))
{'seed': 1, 'pool_1': 5, 'pool_2': 13, 'pool_3': 20, 'test': 1}
>>> round(confidence(pl.Series([0.0, 10.0]), beta=0.1)[1], 4)
0.7311
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.config import LLM, Execution, Params, Sampling, Selfie, SelfieSplit, SplitSize, fingerprint
from pipeline.execute import Checkpoint, map_batches
from pipeline.io import SourceError, read_table, write_json_atomic, write_shards
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import check_table, empty_table, stable_id

log = logging.getLogger(__name__)

STAGE = "selfie"
INGEST = Path("data/ingest")
OUT = Path("data/selfie")
CHECKPOINTS = Path(".prefpipe/checkpoints/selfie")
SCORER = "selfie_implicit_reward"
HIST_BINS = 10


# --- step 1: split ----------------------------------------------------------------------------------


def prompt_keys(messages: pa.Array | pa.ChunkedArray) -> list[str]:
    """Content id of each prompt (its message list), so the same prompt from two sources is one unit.

    >>> from pipeline.records import MESSAGES_TYPE
    >>> prompt_keys(pa.array([[{"role": "user", "content": "hi"}]], MESSAGES_TYPE)) == [
    ...     stable_id("prompt", [{"role": "user", "content": "hi"}])]
    True
    """
    return [stable_id("prompt", m) for m in messages.to_pylist()]


def _resolve(size: SplitSize, n: int) -> int:
    """A count as is; a fraction of ``n`` rounded down but at least 1 while ``n`` > 0."""
    if isinstance(size, float):
        return max(1, math.floor(size * n + 1e-9)) if n else 0
    return size


def shrink(requested: list[int], capacity: int) -> list[int]:
    """Scale ``requested`` down to sum to ``capacity`` when it does not fit, keeping the proportions.

    Largest-remainder rounding (ties to the earlier part); then every non-zero request left at 0
    takes one item from the currently largest part (in list order, while items last), so small
    inputs still fill every part. No part exceeds its request; the result is deterministic.

    >>> shrink([2, 3], 10)
    [2, 3]
    >>> shrink([2000, 8000, 20000, 30000, 1000], 10)
    [1, 1, 3, 4, 1]
    >>> shrink([5, 5, 5], 2)
    [1, 1, 0]
    """
    total = sum(requested)
    if total <= capacity:
        return list(requested)
    out = [r * capacity // total for r in requested]
    by_remainder = sorted(range(len(requested)), key=lambda i: (-(requested[i] * capacity % total), i))
    for i in by_remainder[: capacity - sum(out)]:
        out[i] += 1
    for i, r in enumerate(requested):
        if r > 0 and out[i] == 0:
            donor = max(range(len(out)), key=lambda j: (out[j], -j))
            if out[donor] > 1:
                out[donor] -= 1
                out[i] = 1
    return out


def plan_split(n_labelled: int, n_total: int, split: SelfieSplit) -> dict[str, int]:
    """Prompts per part. Seed and test are labelled prompts (fractions of ``n_labelled``); pools take
    the remaining labelled prompts and the unlabelled ones (fractions of ``n_total``).

    When the source holds fewer prompts than requested, all parts shrink in proportion (``shrink``,
    priority seed, pools, test for the one-each guarantee), so a handful of sample rows still gives a
    seed set and a non-empty first pool; seed + test never exceed the labelled prompts.
    """
    seed, test = _resolve(split.seed, n_labelled), _resolve(split.test, n_labelled)
    pools = [_resolve(p, n_total) for p in split.pools]
    sizes = shrink([seed, *pools, test], n_total)
    seed_n, test_n = sizes[0], sizes[-1]
    if seed_n + test_n > n_labelled:
        seed_n, test_n = shrink([seed_n, test_n], n_labelled)
        pools = shrink(pools, n_total - seed_n - test_n)
    else:
        pools = sizes[1:-1]
    return {"seed": seed_n, **{f"pool_{i + 1}": n for i, n in enumerate(pools)}, "test": test_n}


def assign_split(pairs: pa.Table, prompts: pa.Table, split: SelfieSplit) -> pl.DataFrame:
    """One row per distinct prompt: ``prompt_id``, ``labelled``, ``order``, ``part``.

    ``order`` = sha1(shuffle_seed, prompt_id), so the split depends on the content only, not on the
    input order. Labelled prompts are taken in that order into seed then test; the remaining
    labelled and all unlabelled prompts, in that order, fill pool_1, pool_2, ...; what is left is
    ``rest`` (reported). Every prompt lands in exactly one part.
    """
    labelled = pl.DataFrame(
        {"prompt_id": prompt_keys(pairs.column("prompt"))}, schema={"prompt_id": pl.String}
    )
    unlabelled = pl.DataFrame(
        {"prompt_id": prompt_keys(prompts.column("messages"))}, schema={"prompt_id": pl.String}
    )
    units = (
        pl.concat(
            [labelled.with_columns(labelled=pl.lit(True)), unlabelled.with_columns(labelled=pl.lit(False))]
        )
        .group_by("prompt_id")
        .agg(pl.col("labelled").any())
    )
    ids = units.get_column("prompt_id").to_list()
    units = units.with_columns(
        order=pl.Series([stable_id(split.shuffle_seed, p) for p in ids], dtype=pl.String)
    )
    plan = plan_split(int(units.get_column("labelled").sum()), units.height, split)

    lab = units.filter(pl.col("labelled")).sort("order").with_row_index("i")
    lab = lab.with_columns(
        part=pl.when(pl.col("i") < plan["seed"])
        .then(pl.lit("seed"))
        .when(pl.col("i") < plan["seed"] + plan["test"])
        .then(pl.lit("test"))
        .otherwise(pl.lit(None, pl.String))
    ).drop("i")
    pool = pl.concat([lab.filter(pl.col("part").is_null()).drop("part"), units.filter(~pl.col("labelled"))])
    bounds = [0]
    for i in range(len(split.pools)):
        bounds.append(bounds[-1] + plan[f"pool_{i + 1}"])
    part = pl.lit("rest")
    for i in reversed(range(len(split.pools))):
        part = pl.when(pl.col("i") < bounds[i + 1]).then(pl.lit(f"pool_{i + 1}")).otherwise(part)
    pool = pool.sort("order").with_row_index("i").with_columns(part=part).drop("i")
    return pl.concat([lab.filter(pl.col("part").is_not_null()), pool]).sort("order")


def _lineage(**fields: pl.Expr) -> pl.Expr:
    return pl.struct(**fields).struct.json_encode()


def export_labelled(pairs: pa.Table, assignment: pl.DataFrame, part: str, fp: str) -> pa.Table:
    """The gold pairs of the ``seed`` (or ``test``) prompts as ``method = "selfie"``, ``source = part``."""
    keys = pl.Series("prompt_id", prompt_keys(pairs.column("prompt")), dtype=pl.String)
    df = pl.from_arrow(pairs).with_columns(keys)
    df = df.join(assignment.filter(pl.col("part") == part).select("prompt_id"), on="prompt_id", how="semi")
    new_ids = [stable_id(STAGE, part, p) for p in df.get_column("pair_id").to_list()]
    df = df.with_columns(
        lineage=_lineage(
            stage=pl.lit(STAGE),
            split=pl.lit(part),
            input_pair_id=pl.col("pair_id"),
            input_source=pl.col("source"),
            fingerprint=pl.lit(fp),
        ),
        pair_id=pl.Series(new_ids, dtype=pl.String),
        method=pl.lit(STAGE),
        source=pl.lit(part),
        confidence=pl.lit(None, pl.Float64),
        label_smoothing=pl.lit(0.0),
        noisy=pl.lit(False),
    ).drop("prompt_id")
    return check_table(df.to_arrow(), "pairs")


def pool_prompts(pairs: pa.Table, prompts: pa.Table, assignment: pl.DataFrame, iteration: int) -> pa.Table:
    """The prompts of ``pool_<iteration>`` in the prompts contract (``prompt_id`` = content id).

    A prompt found in several inputs keeps the first by (source, origin_id).
    """
    from_pairs = pl.from_arrow(
        pa.table(
            {
                "messages": pairs.column("prompt"),
                "source": pairs.column("source"),
                "origin_id": pairs.column("pair_id"),
            }
        )
    )
    from_prompts = pl.from_arrow(
        pa.table(
            {
                "messages": prompts.column("messages"),
                "source": prompts.column("source"),
                "origin_id": prompts.column("prompt_id"),
            }
        )
    )
    both = pl.concat([from_pairs, from_prompts], how="vertical_relaxed")
    both = both.with_columns(
        prompt_id=pl.Series(prompt_keys(both.get_column("messages").to_arrow()), dtype=pl.String)
    )
    chosen = assignment.filter(pl.col("part") == f"pool_{iteration}").select("prompt_id")
    out = (
        both.join(chosen, on="prompt_id", how="semi")
        .sort("prompt_id", "source", "origin_id")
        .unique("prompt_id", keep="first", maintain_order=True)
    )
    return check_table(out.to_arrow(), "prompts")


# --- step 2: sample ---------------------------------------------------------------------------------


def sample(batch: pa.Table, engine, *, k: int, sampling: Sampling, iteration: int) -> pa.Table:
    """K responses per prompt from the policy, one ``generate(n=k)`` call per batch."""
    outs = engine.generate(batch.column("messages").to_pylist(), n=k, sampling=sampling)
    if len(outs) != batch.num_rows or any(len(o) != k for o in outs):
        raise RuntimeError(
            f"engine {engine.name!r} returned {[len(o) for o in outs]} responses for "
            f"{batch.num_rows} prompts with n={k}; expected {k} each"
        )
    ids = batch.column("prompt_id").to_pylist()
    prompt_ids = [p for p in ids for _ in range(k)]
    texts = [t for o in outs for t in o]
    return pa.table(
        {
            "prompt_id": prompt_ids,
            "response_id": [
                stable_id(STAGE, iteration, p, engine.name, j % k) for j, p in enumerate(prompt_ids)
            ],
            "text": pa.array(texts, pa.string()),
            "generator": [engine.name] * len(texts),
        }
    )


# --- step 3: judge from logits ----------------------------------------------------------------------


def teacher_force(batch: pa.Table, engine, *, role: str) -> pa.Table:
    """Summed log-probability and token count of each response under ``engine`` (one role)."""
    lps = engine.logprobs(batch.column("messages").to_pylist(), batch.column("text").to_pylist())
    return pa.table(
        {
            "response_id": batch.column("response_id"),
            f"logprob_{role}": pa.array([lp.logprob for lp in lps], pa.float64()),
            f"n_tokens_{role}": pa.array([lp.n_tokens for lp in lps], pa.int64()),
        }
    )


def implicit_reward(scored: pl.DataFrame, *, length_normalize: bool) -> pl.DataFrame:
    """``reward = logprob_policy - logprob_reference`` (sums), or the difference of per-token means.

    >>> df = pl.DataFrame({"logprob_policy": [-4.0], "n_tokens_policy": [2],
    ...                    "logprob_reference": [-9.0], "n_tokens_reference": [3]})
    >>> implicit_reward(df, length_normalize=False)["reward"][0]
    5.0
    >>> implicit_reward(df, length_normalize=True)["reward"][0]
    1.0
    """
    if length_normalize:

        def mean(role: str) -> pl.Expr:  # 0 for an empty response, like LogProb.mean
            n = pl.col(f"n_tokens_{role}")
            return pl.when(n > 0).then(pl.col(f"logprob_{role}") / n).otherwise(0.0)

        return scored.with_columns(reward=mean("policy") - mean("reference"))
    return scored.with_columns(reward=pl.col("logprob_policy") - pl.col("logprob_reference"))


# --- step 4: pairs with noise awareness -------------------------------------------------------------


def confidence(margin: pl.Series | pl.Expr, *, beta: float):
    """``sigmoid(beta * margin)``: the policy's own probability that chosen beats rejected."""
    return 1.0 / (1.0 + (-beta * margin).exp())


def noisy_count(n_pairs: int, refine_fraction: float) -> int:
    """``floor(refine_fraction * n_pairs)``: the noisy share never exceeds ``refine_fraction``.

    >>> noisy_count(10, 0.1), noisy_count(19, 0.1), noisy_count(100, 0.29)
    (1, 1, 29)
    """
    return math.floor(refine_fraction * n_pairs + 1e-9)  # 1e-9: 0.29 * 100 is 28.999999999999996


def pick_pairs(scored: pl.DataFrame, *, iteration: int) -> tuple[pl.DataFrame, int]:
    """Per prompt: chosen = highest reward, rejected = lowest (ties between responses broken by
    response_id); prompts whose best and worst rewards are equal are dropped. Returns the pairs
    (prompt_id, chosen_*/rejected_* columns, margin, pair_id) and the number of tied prompts.
    """
    cols = ["response_id", "text", "reward", "n_tokens_policy"]
    best = scored.sort(["prompt_id", "reward", "response_id"], descending=[False, True, False])
    worst = scored.sort(["prompt_id", "reward", "response_id"], descending=[False, False, True])
    first = {"maintain_order": True}
    chosen = (
        best.group_by("prompt_id", **first)
        .first()
        .select("prompt_id", *[pl.col(c).alias(f"chosen_{c}") for c in cols])
    )
    rejected = (
        worst.group_by("prompt_id", **first)
        .first()
        .select("prompt_id", *[pl.col(c).alias(f"rejected_{c}") for c in cols])
    )
    pairs = chosen.join(rejected, on="prompt_id").with_columns(
        margin=pl.col("chosen_reward") - pl.col("rejected_reward")
    )
    ties = int((pairs.get_column("margin") == 0).sum())
    pairs = pairs.filter(pl.col("margin") != 0)
    ids = [
        stable_id(STAGE, iteration, p, c, r)
        for p, c, r in zip(
            *(
                pairs.get_column(c).to_list()
                for c in ("prompt_id", "chosen_response_id", "rejected_response_id")
            ),
            strict=True,
        )
    ]
    return pairs.with_columns(pair_id=pl.Series(ids, dtype=pl.String)).sort("pair_id"), ties


def flag_noise(pairs: pl.DataFrame, *, beta: float, refine_fraction: float, alpha: float) -> pl.DataFrame:
    """Adds ``confidence``, ``noisy`` (exactly ``noisy_count`` least confident pairs; equal
    confidences broken by pair_id) and ``label_smoothing`` (alpha on noisy pairs, 0 elsewhere)."""
    k = noisy_count(pairs.height, refine_fraction)
    ranked = pairs.with_columns(confidence=confidence(pl.col("margin"), beta=beta)).sort(
        ["confidence", "pair_id"]
    )
    return (
        ranked.with_row_index("_rank")
        .with_columns(
            noisy=pl.col("_rank") < k,
        )
        .with_columns(
            label_smoothing=pl.when(pl.col("noisy")).then(pl.lit(alpha)).otherwise(0.0),
        )
        .drop("_rank")
        .sort("pair_id")
    )


def to_pairs(
    pairs: pl.DataFrame,
    prompts: pa.Table,
    *,
    iteration: int,
    policy: str,
    reference: str,
    length_normalize: bool,
    fp: str,
) -> pa.Table:
    """The pairs contract: prompt messages joined back, one assistant message per side."""
    msgs = pl.from_arrow(prompts.select(["prompt_id", "messages"]))

    def turn(col: str) -> pl.Expr:
        return pl.concat_list(pl.struct(role=pl.lit("assistant"), content=pl.col(col)))

    df = pairs.join(msgs, on="prompt_id", how="left").select(
        "pair_id",
        pl.col("messages").alias("prompt"),
        turn("chosen_text").alias("chosen"),
        turn("rejected_text").alias("rejected"),
        pl.col("chosen_reward").alias("score_chosen"),
        pl.col("rejected_reward").alias("score_rejected"),
        "margin",
        "confidence",
        "label_smoothing",
        "noisy",
        method=pl.lit(STAGE),
        source=pl.lit(f"iteration_{iteration}"),
        lineage=_lineage(
            stage=pl.lit(STAGE),
            iteration=pl.lit(iteration),
            prompt_id=pl.col("prompt_id"),
            chosen_response_id=pl.col("chosen_response_id"),
            rejected_response_id=pl.col("rejected_response_id"),
            policy=pl.lit(policy),
            reference=pl.lit(reference),
            length_normalize=pl.lit(length_normalize),
            fingerprint=pl.lit(fp),
        ),
    )
    return check_table(df.to_arrow(), "pairs")


def to_responses(scored: pl.DataFrame, *, iteration: int, reference: str, length_normalize: bool) -> pa.Table:
    """Scored responses (score = r), log-probs and token counts of both models in ``detail``."""
    detail = _lineage(
        iteration=pl.lit(iteration),
        logprob_policy=pl.col("logprob_policy"),
        n_tokens_policy=pl.col("n_tokens_policy"),
        logprob_reference=pl.col("logprob_reference"),
        n_tokens_reference=pl.col("n_tokens_reference"),
        reference=pl.lit(reference),
        length_normalize=pl.lit(length_normalize),
    )
    df = scored.select(
        "prompt_id",
        "response_id",
        "text",
        "generator",
        score=pl.col("reward"),
        scorer=pl.lit(SCORER),
        detail=detail,
    )
    return check_table(df.to_arrow(), "responses")


# --- metrics ----------------------------------------------------------------------------------------


def reward_report(scored: pl.DataFrame) -> dict[str, Any]:
    """Reward range, and a plain warning when every reward is 0 (policy and reference agree)."""
    if scored.is_empty():
        return {"responses": 0, "all_zero": False}
    r = scored.get_column("reward")
    all_zero = bool((r == 0).all())
    report = {
        "responses": scored.height,
        "min": r.min(),
        "max": r.max(),
        "mean": r.mean(),
        "all_zero": all_zero,
    }
    if all_zero:
        report["warning"] = (
            "every implicit reward is 0: the policy and reference models give identical log-probabilities, "
            "so every pair is a tie and none is kept; point selfie.policy_model at the model trained on the "
            "seed pairs (or the previous iteration's output)"
        )
    return report


def pair_report(pairs: pl.DataFrame) -> dict[str, Any]:
    """Confidence histogram (10 equal bins over [0, 1]), noisy fraction, chosen vs rejected length."""
    edges = [i / HIST_BINS for i in range(HIST_BINS + 1)]
    if pairs.is_empty():
        return {
            "pairs": 0,
            "noisy": 0,
            "noisy_fraction": 0.0,
            "confidence_histogram": {"edges": edges, "counts": [0] * HIST_BINS},
        }
    conf = pairs.get_column("confidence")
    bins = (conf * HIST_BINS).floor().clip(0, HIST_BINS - 1).cast(pl.Int64)
    counts = [int((bins == i).sum()) for i in range(HIST_BINS)]
    return {
        "pairs": pairs.height,
        "noisy": int(pairs.get_column("noisy").sum()),
        "noisy_fraction": float(pairs.get_column("noisy").mean()),
        "confidence_histogram": {"edges": edges, "counts": counts},
        "confidence_mean": float(conf.mean()),
        "margin_mean": float(pairs.get_column("margin").mean()),
        "mean_chars_chosen": float(pairs.get_column("chosen_text").str.len_chars().mean()),
        "mean_chars_rejected": float(pairs.get_column("rejected_text").str.len_chars().mean()),
        "mean_tokens_chosen": float(pairs.get_column("chosen_n_tokens_policy").mean()),
        "mean_tokens_rejected": float(pairs.get_column("rejected_n_tokens_policy").mean()),
    }


# --- inputs -----------------------------------------------------------------------------------------


def select_sources(table: pa.Table, names: list[str], where: Path, key: str) -> pa.Table:
    """Rows whose ``source`` is listed; a listed name with no rows is an error (usually a typo)."""
    df = pl.from_arrow(table.select(["source"]))
    present = set(df.get_column("source").unique().to_list())
    missing = [n for n in names if n not in present]
    if missing:
        raise SourceError(
            f"selfie.{key}: no rows with source {missing} in {where} (sources there: {sorted(present)}); "
            "fix the name in params.yaml or add the source to ingest.sources and run `dvc repro ingest`"
        )
    mask = df.get_column("source").is_in(names).to_arrow()
    return table.filter(mask)


def read_inputs(sel: Selfie, root: Path = INGEST) -> tuple[pa.Table, pa.Table]:
    pairs = select_sources(
        read_table(root / "pairs", "pairs"), sel.pair_sources, root / "pairs", "pair_sources"
    )
    if sel.prompt_sources:
        prompts = read_table(root / "prompts", "prompts")
        prompts = select_sources(prompts, sel.prompt_sources, root / "prompts", "prompt_sources")
    else:
        prompts = empty_table("prompts")
    return pairs, prompts


# --- the stage --------------------------------------------------------------------------------------


def annotate(prompts: pa.Table, sel: Selfie, ex: Execution, policy: LLM, reference: LLM) -> pl.DataFrame:
    """Sample, then teacher-force with both roles: one row per response with its reward
    (two engine steps through ``map_batches``, each resumable from its checkpoint)."""

    def ck(step: str, *parts: Any) -> Checkpoint:
        return Checkpoint(CHECKPOINTS / step, fingerprint(*parts, {"step": step}))

    cks = [
        ck("sample", policy, sel.sampling, {"k": sel.samples_per_prompt, "iteration": sel.iteration}),
        ck("logprob_policy", policy),
        ck("logprob_reference", reference),
    ]
    responses = map_batches(
        prompts.select(["prompt_id", "messages"]),
        sample,
        execution=ex,
        engine=policy,
        checkpoint=cks[0],
        fn_kwargs={"k": sel.samples_per_prompt, "sampling": sel.sampling, "iteration": sel.iteration},
        desc="selfie sample",
    )
    if responses is None:
        return pl.DataFrame()
    msgs = pl.from_arrow(prompts.select(["prompt_id", "messages"]))
    joined = pl.from_arrow(responses).join(msgs, on="prompt_id", how="left").to_arrow()
    scored = pl.from_arrow(responses)
    for role, cfg, c in (("policy", policy, cks[1]), ("reference", reference, cks[2])):
        lp = map_batches(
            joined.select(["response_id", "messages", "text"]),
            teacher_force,
            execution=ex,
            engine=cfg,
            checkpoint=c,
            fn_kwargs={"role": role},
            desc=f"selfie logprobs {role}",
        )
        scored = scored.join(pl.from_arrow(lp), on="response_id", how="left")
    for c in cks:
        c.clear()
    return implicit_reward(scored, length_normalize=sel.length_normalize)


def main(params: Params) -> None:
    sel = params.selfie
    policy, reference = sel.role(params.llm, "policy"), sel.role(params.llm, "reference")
    fp = fingerprint(sel, policy, reference)
    pairs_in, prompts_in = read_inputs(sel)
    if pairs_in.num_rows == 0:
        raise SourceError(f"selfie.pair_sources {sel.pair_sources}: no labelled pairs in {INGEST / 'pairs'}")

    assignment = assign_split(pairs_in, prompts_in, sel.split)
    seed = export_labelled(pairs_in, assignment, "seed", fp)
    test = export_labelled(pairs_in, assignment, "test", fp)
    pool = pool_prompts(pairs_in, prompts_in, assignment, sel.iteration)

    scored = annotate(pool, sel, params.execution, policy, reference) if pool.num_rows else pl.DataFrame()
    if scored.is_empty():
        picked, ties, flagged = pl.DataFrame(), 0, pl.DataFrame()
        responses, new_pairs = empty_table("responses"), empty_table("pairs")
    else:
        picked, ties = pick_pairs(scored, iteration=sel.iteration)
        flagged = flag_noise(picked, beta=sel.beta, refine_fraction=sel.refine_fraction, alpha=sel.alpha)
        responses = to_responses(
            scored, iteration=sel.iteration, reference=reference.model, length_normalize=sel.length_normalize
        )
        kept = flagged.filter(~pl.col("noisy")) if sel.drop_noisy else flagged
        new_pairs = (
            to_pairs(
                kept,
                pool,
                iteration=sel.iteration,
                policy=policy.model,
                reference=reference.model,
                length_normalize=sel.length_normalize,
                fp=fp,
            )
            if kept.height
            else empty_table("pairs")
        )

    ex = params.execution
    shard = {
        "fingerprint": fp,
        "target_shard_bytes": ex.target_shard_bytes,
        "row_group_bytes": ex.row_group_bytes,
    }
    out = begin_outputs(OUT)  # every output changes together (pipeline/outputs.py)
    write_shards(pool, out / "prompts", name="prompts", **shard)
    write_shards(responses, out / "responses", name="responses", **shard)
    write_shards(pa.concat_tables([seed, new_pairs]), out / "pairs", name="pairs", **shard)
    write_shards(test, out / "test", name="pairs", **shard)

    parts = assignment.group_by("part").len().sort("part")
    pair_stats = pair_report(flagged)
    write_json_atomic(
        {
            "iteration": sel.iteration,
            "policy": policy.model,
            "reference": reference.model,
            "split": {
                "prompts": assignment.height,
                "labelled_prompts": int(assignment.get_column("labelled").sum()),
                "planned": plan_split(
                    int(assignment.get_column("labelled").sum()), assignment.height, sel.split
                ),
                "assigned": dict(
                    zip(parts.get_column("part").to_list(), parts.get_column("len").to_list(), strict=True)
                ),
                "seed_pairs": seed.num_rows,
                "test_pairs": test.num_rows,
            },
            "sample": {
                "prompts": pool.num_rows,
                "responses": responses.num_rows,
                "empty_responses": int(
                    (pl.from_arrow(responses.select(["text"])).get_column("text") == "").sum()
                ),
            },
            "rewards": reward_report(scored),
            "pairs": {**pair_stats, "candidates": picked.height + ties, "written": new_pairs.num_rows},
            "dropped": {"tie": ties, "noisy": pair_stats["noisy"] if sel.drop_noisy else 0},
        },
        out / "metrics.json",
    )
    commit_outputs(OUT)
    log.info("selfie: %d seed pairs, %d iteration-%d pairs", seed.num_rows, new_pairs.num_rows, sel.iteration)
