"""Selfie / SPA step 3: the implicit reward, and the gate it passes before it labels pairs.

``r(y) = log pi_policy(y|x) - log pi_reference(y|x)`` from teacher forcing under both models (sums, or per-token
means with ``length_normalize``). Before a run labels its pool, the reward must prefer the good response of the
built-in probe pairs (``pipeline/probes/selfie_reward.jsonl``: a prompt, a good and a bad response, the bad one
the longer in half of them), computed through the same ``teacher_force`` as the real rows. Each probe pair is
asked both ways, "r(good) > r(bad)?" (yes) and "r(bad) > r(good)?" (no), so a reward that cannot tell them apart
scores exactly 0.5 (chance). When policy and reference are the same model every reward is 0: there are no labels
to gate, and the stage says so instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.config import LLM, Execution, Selfie
from pipeline.execute import map_batches, step_checkpoint
from pipeline.gates import check_gate, load_probes
from pipeline.records import MESSAGES_TYPE
from stages.selfie_split import STAGE

PROBES = "selfie_reward"


def teacher_force(batch: pa.Table, engine, *, role: str, errors: bool = False) -> pa.Table:
    """Summed log-probability and token count of each response under ``engine`` (one role); with ``errors``
    (the gate's probes), ``error_<role>`` too: why the engine gave no log-probability (a ``FailedValue``'s
    reason: a request the server refused), else null."""
    lps = engine.logprobs(batch.column("messages").to_pylist(), batch.column("text").to_pylist())
    columns = {
        "response_id": batch.column("response_id"),
        f"logprob_{role}": pa.array([lp.logprob for lp in lps], pa.float64()),
        f"n_tokens_{role}": pa.array([lp.n_tokens for lp in lps], pa.int64()),
    }
    if errors:
        columns[f"error_{role}"] = pa.array([getattr(lp.logprob, "error", None) for lp in lps], pa.string())
    return pa.table(columns)


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


def same_model(policy: LLM, reference: LLM) -> bool:
    """Policy and reference load the same weights the same way: their log-probabilities are identical.

    The revision and the server are part of the weights: a trained policy pushed as a new commit of the
    reference's Hub repo (or served under the reference's name by another server) is another model, whose
    rewards are not all 0."""
    keys = {"backend", "model", "revision", "base_url", "dtype", "max_model_len"}
    return policy.model_dump(include=keys) == reference.model_dump(include=keys)


def confidence(margin: pl.Series | pl.Expr, *, beta: float):
    """``sigmoid(beta * margin)``: the policy's own probability that chosen beats rejected."""
    return 1.0 / (1.0 + (-beta * margin).exp())


# --- the gate -------------------------------------------------------------------------------------


def reward_gate(sel: Selfie, ex: Execution, policy: LLM, reference: LLM,
                checkpoint_root: Path | None = None) -> dict[str, Any]:
    """The implicit reward on ``pipeline/probes/selfie_reward.jsonl`` (a prompt, a good and a bad response;
    the bad one is the longer in half of them), through the same teacher forcing as the real rows. Each
    probe pair is asked both ways, "r(good) > r(bad)?" (yes) and "r(bad) > r(good)?" (no), so a reward that
    cannot tell them apart (equal rewards) scores exactly 0.5. With ``checkpoint_root`` each role's probe
    pass resumes from ``<root>/gate_logprob_<role>`` (keyed like that role's ``logprob_<role>`` step)."""
    probes = load_probes(PROBES)
    rows = [
        (f"{p['id']}/{side}", [{"role": "user", "content": p["prompt"]}], p[side])
        for p in probes
        for side in ("good", "bad")
    ]
    table = pa.table(
        {
            "response_id": [r[0] for r in rows],
            "messages": pa.array([r[1] for r in rows], MESSAGES_TYPE),
            "text": [r[2] for r in rows],
        }
    )
    scored = pl.from_arrow(table.select(["response_id"]))
    checkpoints = []
    for role, cfg in (("policy", policy), ("reference", reference)):
        ck = step_checkpoint(checkpoint_root, f"gate_logprob_{role}", cfg) if checkpoint_root is not None else None
        checkpoints.append(ck)
        lp = map_batches(
            table,
            teacher_force,
            execution=ex,
            engine=cfg,
            checkpoint=ck,
            fn_kwargs={"role": role, "errors": True},
            desc=f"selfie gate ({role})",
        )
        scored = scored.join(pl.from_arrow(lp), on="response_id")
    r = dict(
        implicit_reward(scored, length_normalize=sel.length_normalize)
        .select("response_id", "reward")
        .iter_rows()
    )
    margins = [r[f"{p['id']}/good"] - r[f"{p['id']}/bad"] for p in probes]
    # a pair the engine could not score (NaN reward: a refused request) is wrong both ways, not a tie
    correct = [c for m in margins for c in (m > 0, not (m < 0 or math.isnan(m)))]
    scored_m = [m for m in margins if not math.isnan(m)]  # the means over the pairs the engine scored
    detail = {
        "pairs": len(margins),
        "good_wins": sum(m > 0 for m in margins),
        "bad_wins": sum(m < 0 for m in margins),
        "margin_mean": round(sum(scored_m) / len(scored_m), 6) if scored_m else None,
        "confidence_mean": round(float(confidence(pl.Series(scored_m), beta=sel.beta).mean()), 6) if scored_m else None,
    }
    return check_gate(
        STAGE,
        "reward",
        f"{policy.model} vs {reference.model}",
        correct,
        min_accuracy=sel.gates.reward,
        key="selfie.gates.reward",
        on_failure=ex.on_gate_failure,
        detail=detail,
        errors=scored["error_policy"].to_list() + scored["error_reference"].to_list(),  # per engine call
        checkpoints=checkpoints,
    )


def gate_skipped(sel: Selfie, policy: LLM, why: str) -> dict[str, Any]:
    return {
        "stage": STAGE,
        "role": "reward",
        "model": policy.model,
        "key": "selfie.gates.reward",
        "min_accuracy": sel.gates.reward,
        "probes": 0,
        "passed": None,
        "skipped": why,
        "labels": "none",
    }
