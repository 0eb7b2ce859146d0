"""Selfie / SPA (METHODS.md §3): the policy annotates its own pairs from its logits.

Kim et al., "Spread Preference Annotation" (ICLR 2025, arXiv 2406.04412). One run = one iteration::

    split   labelled prompts -> seed (gold pairs) | test (held out); the rest + unlabelled -> pools 1..I
            (stages/selfie_split.py)
    gate    the implicit reward must prefer the good response of built-in probe pairs (pipeline/gates.py)
    sample  K responses per prompt of pool[iteration] from the policy (n=K per request); cut-off ones dropped
    judge   r(y) = log pi_policy(y|x) - log pi_reference(y|x)          (teacher-forced, summed or per-token)
    pick    chosen = argmax r, rejected = argmin r among the responses whose text differs from chosen's;
            ties and prompts without two distinct texts dropped
    noise   confidence = sigmoid(beta * (r_c - r_r)); the floor(refine_fraction * n) least confident
            pairs of the iteration are `noisy` and get label_smoothing = alpha (0 elsewhere)

Every step is a small pure function over Arrow tables / polars frames; ``main`` wires them with
``map_batches`` and writes ``data/selfie/{prompts,responses,pairs,test}``, ``metrics.json`` and ``details.json``;
``data/selfie/pairs`` keeps one folder per iteration (stages/selfie_output.py).

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

from pipeline import ids
from pipeline.checks import answer_key, shows_nothing
from pipeline.config import LLM, Execution, Params, Sampling, Selfie, fingerprint
from pipeline.execute import CHECKPOINT_ROOT, clear_checkpoints, map_batches, step_checkpoint
from pipeline.io import SourceError, shard_sizes
from pipeline.llm.base import sample_fields
from pipeline.llm.chat import per_prompt
from pipeline.llm.identity import model_identities
from pipeline.metrics import announce_overrides, counted, gate_headline, write_metrics
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import empty_table
from stages.selfie_output import (
    console_line,
    kept_iterations,
    migrate_flat_layout,
    pairs_report,
    reward_report,
    sample_report,
    to_pairs,
    to_responses,
    write_outputs,
)
from stages.selfie_reward import (
    confidence,
    gate_skipped,
    implicit_reward,
    reward_gate,
    same_model,
    teacher_force,
)
from stages.selfie_split import (
    INGEST,
    STAGE,
    assign_split,
    export_labelled,
    gold,
    pool_prompts,
    read_inputs,
    split_report,
)

log = logging.getLogger(__name__)

OUT = Path("data/selfie")
CHECKPOINTS = CHECKPOINT_ROOT / "selfie"
NOTHING_SAMPLED = {"prompt_too_long": 0, "generation_failed": 0, "cut_off": 0, "empty": 0}  # when nothing is sampled
PROMPT_TOO_LONG = "prompt_too_long"  # the finish reason of a sample whose prompt does not fit the policy


# --- step 2: sample ---------------------------------------------------------------------------------


def sample(batch: pa.Table, engine, *, k: int, sampling: Sampling) -> pa.Table:
    """K responses per prompt from the policy, one ``generate(n=k)`` call per batch, each with its
    ``sample_index`` and ``finish_reason`` (``length``: cut at max_new_tokens; ``failed``: the engine could
    not produce it, e.g. a request the server refused; ``prompt_too_long``: the prompt does not fit the
    policy's ``llm.max_model_len``, as a real UltraFeedback prompt of 2,162 tokens did not; either way its
    text is empty)."""
    outs = per_prompt(lambda ps: engine.generate(ps, n=k, sampling=sampling), batch.column("messages").to_pylist(),
                      lambda e: [None] * k)
    if len(outs) != batch.num_rows or any(len(o) != k for o in outs):
        raise RuntimeError(
            f"engine {engine.name!r} returned {[len(o) for o in outs]} responses for "
            f"{batch.num_rows} prompts with n={k}; expected {k} each"
        )
    prompt_ids = [p for p in batch.column("prompt_id").to_pylist() for _ in range(k)]
    samples = [("", PROMPT_TOO_LONG) if c is None else sample_fields(c) for o in outs for c in o]
    return pa.table(
        {
            "prompt_id": pa.array(prompt_ids, pa.string()),
            "sample_index": pa.array(list(range(k)) * batch.num_rows, pa.int64()),
            "text": pa.array([fields[0] for fields in samples], pa.string()),
            "finish_reason": pa.array([fields[1] for fields in samples], pa.string()),
            "generator": pa.array([engine.name] * len(prompt_ids), pa.string()),
        }
    )


def with_response_ids(sampled: pl.DataFrame, *, iteration: int) -> pl.DataFrame:
    """``response_id`` = id of (stage, iteration, prompt, generator, sample index), over the whole column."""
    return sampled.with_columns(
        response_id=ids.hex_id(pl.lit(STAGE), pl.lit(iteration), "prompt_id", "generator", "sample_index")
    )


# --- step 3: the implicit reward (stages/selfie_reward.py) ----------------------------------------


# --- step 4: pairs with noise awareness -------------------------------------------------------------


def noisy_count(n_pairs: int, refine_fraction: float) -> int:
    """``floor(refine_fraction * n_pairs)``: the noisy share never exceeds ``refine_fraction``.

    >>> noisy_count(10, 0.1), noisy_count(19, 0.1), noisy_count(100, 0.29)
    (1, 1, 29)
    """
    return math.floor(refine_fraction * n_pairs + 1e-9)  # 1e-9: 0.29 * 100 is 28.999999999999996


def pick_pairs(scored: pl.DataFrame, *, iteration: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Per prompt: chosen = highest reward (ties broken by smallest response_id); rejected = lowest reward
    among the responses that are not chosen's answer (``pipeline.checks.answer_key``: whitespace, case and
    sentence punctuation aside; ties broken by
    largest response_id). Dropped, counted: ``nonfinite_reward`` (a response whose reward is NaN or
    infinite, e.g. a token the reference gives probability 0, is left out before picking), ``same_text``
    (every response says the same), ``tie`` (chosen and rejected rewards are equal). Returns the pairs
    (prompt_id, chosen_*/rejected_* columns, margin, pair_id) and the drop counts.
    """
    cols = ["response_id", "text", "reward", "n_tokens_policy", "finish_reason"]
    finite = pl.col("reward").is_finite().fill_null(False)
    nonfinite = scored.filter(~finite).height
    scored = scored.filter(finite).with_columns(_key=answer_key(pl.col("text")))
    first = {"maintain_order": True}
    chosen = (
        scored.sort(["prompt_id", "reward", "response_id"], descending=[False, True, False])
        .group_by("prompt_id", **first)
        .first()
    )
    others = scored.join(chosen.select("prompt_id", _chosen_key="_key"), on="prompt_id").filter(
        pl.col("_key") != pl.col("_chosen_key")
    )
    rejected = (
        others.sort(["prompt_id", "reward", "response_id"], descending=[False, False, True])
        .group_by("prompt_id", **first)
        .first()
    )
    pairs = (
        chosen.select("prompt_id", *[pl.col(c).alias(f"chosen_{c}") for c in cols])
        .join(rejected.select("prompt_id", *[pl.col(c).alias(f"rejected_{c}") for c in cols]), on="prompt_id")
        .with_columns(margin=pl.col("chosen_reward") - pl.col("rejected_reward"))
    )
    dropped = {"nonfinite_reward": nonfinite, "same_text": chosen.height - pairs.height,
               "tie": int((pairs.get_column("margin") == 0).sum())}
    pairs = pairs.filter(pl.col("margin") != 0)
    sides = ("prompt_id", "chosen_response_id", "rejected_response_id")
    pair_id = ids.hex_id(pl.lit(STAGE), pl.lit(iteration), *sides)
    return pairs.with_columns(pair_id=pair_id).sort("pair_id"), dropped


def flag_noise(pairs: pl.DataFrame, *, beta: float, refine_fraction: float, alpha: float) -> pl.DataFrame:
    """Adds ``confidence``, ``noisy`` (exactly ``noisy_count`` least confident pairs; equal
    confidences broken by pair_id) and ``label_smoothing`` (alpha on noisy pairs, 0 elsewhere)."""
    k = noisy_count(pairs.height, refine_fraction)
    ranked = pairs.with_columns(confidence=confidence(pl.col("margin"), beta=beta)).sort(
        ["confidence", "pair_id"]
    )
    return (
        ranked.with_row_index("_rank")
        .with_columns(noisy=pl.col("_rank") < k)
        .with_columns(label_smoothing=pl.when(pl.col("noisy")).then(pl.lit(alpha)).otherwise(0.0))
        .drop("_rank")
        .sort("pair_id")
    )


# --- the stage --------------------------------------------------------------------------------------


def annotate(
    prompts: pa.Table, sel: Selfie, ex: Execution, policy: LLM, reference: LLM
) -> tuple[pl.DataFrame, int]:
    """Sample, drop cut-off and blank samples, then teacher-force with both roles (one pass when they are the
    same model: the reference's log-probabilities are the policy's). Returns one row per kept response with its
    reward, and the samples dropped by reason (``prompt_too_long``, ``generation_failed``, ``cut_off``, ``empty``). Each engine step resumes from its
    checkpoint."""

    cks = [
        step_checkpoint(CHECKPOINTS, "sample", policy, sel.sampling,
                        {"k": sel.samples_per_prompt, "iteration": sel.iteration}),
        step_checkpoint(CHECKPOINTS, "logprob_policy", policy),
        step_checkpoint(CHECKPOINTS, "logprob_reference", reference),
    ]
    responses = map_batches(
        prompts.select(["prompt_id", "messages"]),
        sample,
        execution=ex,
        engine=policy,
        checkpoint=cks[0],
        fn_kwargs={"k": sel.samples_per_prompt, "sampling": sel.sampling},
        desc="selfie sample (policy)",
    )
    if responses is None:
        return pl.DataFrame(), dict(NOTHING_SAMPLED)
    sampled = with_response_ids(pl.from_arrow(responses), iteration=sel.iteration)
    reason = pl.col("finish_reason")
    failed = reason.is_in(["failed", PROMPT_TOO_LONG])  # no text: neither was sampled
    cut, blank = reason == "length", shows_nothing(pl.col("text"))
    dropped = {"prompt_too_long": sampled.filter(reason == PROMPT_TOO_LONG).height,
               "generation_failed": sampled.filter(reason == "failed").height, "cut_off": sampled.filter(cut).height,
               "empty": sampled.filter(~failed & ~cut & blank).height}
    scored = sampled.filter(~failed & ~cut & ~blank)  # a blank answer is no answer: never a chosen, whatever its reward
    msgs = pl.from_arrow(prompts.select(["prompt_id", "messages"]))
    joined = scored.join(msgs, on="prompt_id", how="left").to_arrow()
    roles = [("policy", policy, cks[1])] + (
        [] if same_model(policy, reference) else [("reference", reference, cks[2])]
    )
    for role, cfg, c in roles:
        lp = map_batches(
            joined.select(["response_id", "messages", "text"]),
            teacher_force,
            execution=ex,
            engine=cfg,
            checkpoint=c,
            fn_kwargs={"role": role},
            desc=f"selfie logprobs ({role})",
        )
        scored = scored.join(
            pl.from_arrow(lp) if lp is not None else _no_logprobs(role), on="response_id", how="left"
        )
    if len(roles) == 1:
        scored = scored.with_columns(logprob_reference="logprob_policy", n_tokens_reference="n_tokens_policy")
    return implicit_reward(scored, length_normalize=sel.length_normalize), dropped


def _no_logprobs(role: str) -> pl.DataFrame:
    return pl.DataFrame(
        schema={"response_id": pl.String, f"logprob_{role}": pl.Float64, f"n_tokens_{role}": pl.Int64}
    )


def reward_gate_or_skip(sel: Selfie, ex: Execution, policy: LLM, reference: LLM, pool: pa.Table, *,
                        same: bool) -> dict[str, Any]:
    """Gate: the implicit reward must prefer the good response of built-in probe pairs (``reward_gate``).
    Skipped, with no labels this iteration, when policy and reference are one model (``same``: every reward
    is 0) or the pool is empty."""
    if same:
        gate = gate_skipped(sel, policy, "policy and reference are the same model: every implicit reward is 0, "
                                         "so there are no labels to gate (and none are emitted)")
        print(
            f"selfie: policy and reference are the same model ({policy.model}): every implicit reward is 0 "
            "and this iteration labels no pairs (the seed pairs are still written); the reference "
            "log-probability pass is skipped. Point selfie.policy_model at the model trained on the seed pairs "
            "or the previous iteration's pairs."
        )
        return gate
    if pool.num_rows == 0:
        return gate_skipped(sel, policy, f"pool_{sel.iteration} is empty: nothing to label")
    return reward_gate(sel, ex, policy, reference, CHECKPOINTS)


def label_pairs(scored: pl.DataFrame, pool: pa.Table, sel: Selfie, policy: LLM, reference: LLM,
                fp: str) -> tuple[pl.DataFrame, pa.Table, pa.Table, dict[str, int]]:
    """Pick and noise over the scored responses: (every pair with its ``noisy`` flag, the responses table,
    the iteration's pairs table, drops by reason). With ``drop_noisy`` the noisy pairs are left out."""
    dropped = {"nonfinite_reward": 0, "same_text": 0, "tie": 0, "noisy": 0}
    if scored.is_empty():
        return pl.DataFrame(), empty_table("responses"), empty_table("pairs"), dropped
    picked, picks_dropped = pick_pairs(scored, iteration=sel.iteration)
    dropped.update(picks_dropped)
    flagged = flag_noise(picked, beta=sel.beta, refine_fraction=sel.refine_fraction, alpha=sel.alpha)
    responses = to_responses(scored, iteration=sel.iteration, reference=reference.model,
                             length_normalize=sel.length_normalize)
    out_pairs = flagged.filter(~pl.col("noisy")) if sel.drop_noisy else flagged
    dropped["noisy"] = flagged.height - out_pairs.height
    new_pairs = (
        to_pairs(out_pairs, pool, iteration=sel.iteration, policy=policy.model, reference=reference.model,
                 length_normalize=sel.length_normalize, fp=fp)
        if out_pairs.height
        else empty_table("pairs")
    )
    return flagged, responses, new_pairs, dropped


def main(params: Params) -> None:
    """One iteration: split, gate, sample + judge (``annotate``), pick + noise (``label_pairs``), then the
    outputs and metrics, swapped in together (``pipeline.outputs``)."""
    sel, ex = params.selfie, params.execution
    policy, reference = sel.role(params.llm, "policy"), sel.role(params.llm, "reference")
    same = same_model(policy, reference)
    fp = fingerprint(sel, policy, reference)
    applied = announce_overrides(params, "selfie")
    pairs_in, prompts_in = read_inputs(sel)
    if pairs_in.num_rows == 0:
        raise SourceError(f"selfie.pair_sources {sel.pair_sources}: no labelled pairs in {INGEST / 'pairs'}")

    assignment = assign_split(pairs_in, prompts_in, sel.split)
    seed = export_labelled(pairs_in, assignment, "seed", fp)
    test = export_labelled(pairs_in, assignment, "test", fp)
    pool = pool_prompts(pairs_in, prompts_in, assignment, sel.iteration)
    migrated = migrate_flat_layout(OUT / "pairs")
    kept = kept_iterations(OUT / "pairs", assignment, sel.iteration)

    gate = reward_gate_or_skip(sel, ex, policy, reference, pool, same=same)
    withheld = gate["passed"] is False
    scored, unscored = (
        (pl.DataFrame(), dict(NOTHING_SAMPLED))
        if withheld or not pool.num_rows
        else annotate(pool, sel, ex, policy, reference)
    )
    flagged, responses, new_pairs, picks_dropped = label_pairs(scored, pool, sel, policy, reference, fp)
    dropped = {**unscored, **picks_dropped, "withheld": pool.num_rows if withheld else 0}

    out = begin_outputs(OUT)  # prompts, responses, pairs, test and metrics change together (pipeline/outputs.py)
    write_outputs(out, pool, responses, seed, new_pairs, test, iteration=sel.iteration, previous=OUT / "pairs",
                  shard=shard_sizes(ex, fingerprint=fp))
    headline = {"rows_in": assignment.height, "responses": responses.num_rows, "pairs": new_pairs.num_rows,
                **gate_headline({"reward": gate})}
    write_metrics(out, headline, {
        "iteration": sel.iteration,
        "policy": policy.model,
        "reference": reference.model,
        "same_model": same,
        "models": model_identities({"policy": policy, "reference": reference}),
        "logprob_passes": 0 if scored.is_empty() else 1 if same else 2,
        "tiny_overrides": applied,
        "gates": {"reward": gate},
        "split": split_report(assignment, sel.split, seed=seed, test=test, tied=int((~gold(pairs_in)).sum())),
        "sample": sample_report(pool.num_rows, responses.num_rows, unscored),
        "rewards": reward_report(scored),
        "pairs": pairs_report(flagged, dropped, new_pairs.num_rows),
        "dropped": dropped,
        "iterations": {**kept, f"iteration={sel.iteration}": new_pairs.num_rows},
        "migrated_from_flat_layout": migrated,
    })
    commit_outputs(OUT)
    clear_checkpoints("selfie")
    log.info("%s, %s of iteration %d", counted(seed.num_rows, "seed pair"), counted(new_pairs.num_rows, "pair"),
             sel.iteration)
    sampled = 0 if withheld or not pool.num_rows else pool.num_rows * sel.samples_per_prompt
    print(console_line(sel.iteration, pool.num_rows, sampled, responses.num_rows, seed.num_rows, new_pairs.num_rows,
                       dropped, sel.sampling.max_new_tokens))
