"""Selfie / SPA outputs: the contract tables, one pairs folder per iteration, and the metrics reports.

``data/selfie/pairs`` keeps every iteration::

    data/selfie/pairs/seed/           gold pairs of the seed prompts (source "seed"), rewritten every run
    data/selfie/pairs/iteration=1/    iteration 1's pairs (source "iteration_1"), kept when iteration 2 runs
    data/selfie/pairs/iteration=2/    ...

A run writes ``seed/`` and its own ``iteration=<i>/`` and leaves the others alone, after checking that each
earlier folder still belongs to the current split (its prompts lie in its own pool), so a changed split can
never put a seed or test prompt into a kept iteration. ``stages/export_read.py`` (``iter_pairs_tree``) reads
every sub-folder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.io import MANIFEST, StageError, read_table, write_shards
from pipeline.metrics import counted
from pipeline.records import check_table, one_message
from stages.selfie_split import STAGE, lineage_json, prompt_keys

SCORER = "selfie_implicit_reward"
HIST_BINS = 10
SEED_DIR = "seed"
_ITERATION_DIR = re.compile(r"^iteration=(\d+)$")


# --- contract tables --------------------------------------------------------------------------------


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
    """The pairs contract: prompt messages joined back, one assistant message per side; lineage records
    why each side's generation ended (``chosen_finish_reason`` / ``rejected_finish_reason``)."""
    msgs = pl.from_arrow(prompts.select(["prompt_id", "messages"]))

    df = pairs.join(msgs, on="prompt_id", how="left").select(
        "pair_id",
        pl.col("messages").alias("prompt"),
        one_message("assistant", "chosen_text").alias("chosen"),
        one_message("assistant", "rejected_text").alias("rejected"),
        pl.col("chosen_reward").alias("score_chosen"),
        pl.col("rejected_reward").alias("score_rejected"),
        "margin",
        "confidence",
        "label_smoothing",
        "noisy",
        method=pl.lit(STAGE),
        source=pl.lit(f"iteration_{iteration}"),
        lineage=lineage_json(
            stage=pl.lit(STAGE),
            iteration=pl.lit(iteration),
            prompt_id=pl.col("prompt_id"),
            chosen_response_id=pl.col("chosen_response_id"),
            rejected_response_id=pl.col("rejected_response_id"),
            chosen_finish_reason=pl.col("chosen_finish_reason"),
            rejected_finish_reason=pl.col("rejected_finish_reason"),
            policy=pl.lit(policy),
            reference=pl.lit(reference),
            length_normalize=pl.lit(length_normalize),
            fingerprint=pl.lit(fp),
        ),
    )
    return check_table(df.to_arrow(), "pairs")


def to_responses(scored: pl.DataFrame, *, iteration: int, reference: str, length_normalize: bool) -> pa.Table:
    """Scored responses (score = r), log-probs and token counts of both models in ``detail``."""
    detail = lineage_json(
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


# --- one folder per iteration -----------------------------------------------------------------------


def iteration_dir(root: Path, iteration: int) -> Path:
    return root / f"iteration={iteration}"


def migrate_flat_layout(root: Path) -> list[int]:
    """Earlier versions wrote the seed and one iteration as shards directly in ``root``: move that
    iteration's pairs into its folder (unless the folder exists), drop the flat shards (the seed is
    rewritten). Returns the iterations moved."""
    if not (root / MANIFEST).exists() and not any(root.glob("*.parquet")):
        return []
    flat = pl.from_arrow(read_table(root, "pairs"))
    moved = []
    for (source,), rows in flat.group_by("source"):
        m = re.fullmatch(r"iteration_(\d+)", source)
        if m and not iteration_dir(root, int(m.group(1))).exists():
            write_shards(
                check_table(rows.to_arrow(), "pairs"), iteration_dir(root, int(m.group(1))), name="pairs"
            )
            moved.append(int(m.group(1)))
    for f in [*root.glob("*.parquet"), root / MANIFEST]:
        f.unlink(missing_ok=True)
    return sorted(moved)


def kept_iterations(root: Path, assignment: pl.DataFrame, iteration: int) -> dict[str, int]:
    """{folder: pairs} of the other iterations' folders, each checked against the current split: every
    prompt of ``iteration=<j>`` must be in ``pool_<j>``; otherwise the split (``selfie.split``, the
    sources or their rows) changed since it ran, and its pairs could hold seed or test prompts."""
    kept = {}
    folders = [d for d in root.iterdir() if _ITERATION_DIR.match(d.name)] if root.is_dir() else []
    for folder in sorted(folders, key=lambda d: int(_ITERATION_DIR.match(d.name).group(1))):
        j = int(_ITERATION_DIR.match(folder.name).group(1))
        if j == iteration:
            continue
        pairs = read_table(folder, "pairs")
        pool = assignment.filter(pl.col("part") == f"pool_{j}").get_column("prompt_id")
        stray = set(prompt_keys(pairs.column("prompt"))) - set(pool.to_list())
        if stray:
            raise StageError(
                f"{folder}: {len(stray)} of its {pairs.num_rows} pairs have prompts outside pool_{j} of the current "
                f"split (selfie.split or the selfie sources changed since iteration {j} ran), so they could hold "
                f"seed or test prompts. Restore the split, or delete {folder} and rerun iteration {j}."
            )
        kept[folder.name] = pairs.num_rows
    return kept


def write_pairs(root: Path, seed: pa.Table, pairs: pa.Table, iteration: int, *, previous: Path | None = None,
                **shard: Any) -> None:
    """``seed/`` and ``iteration=<iteration>/`` into ``root``, with the other iterations' folders of
    ``previous`` (the pairs folder being replaced) carried over as hard links, so a staged ``root``
    swapped into place keeps every earlier iteration without copying its bytes."""
    root.mkdir(parents=True, exist_ok=True)
    if previous is not None and previous.is_dir():
        for folder in previous.iterdir():
            m = _ITERATION_DIR.match(folder.name)
            if m and int(m.group(1)) != iteration:
                shutil.copytree(folder, root / folder.name, copy_function=os.link)
    write_shards(seed, root / SEED_DIR, name="pairs", **shard)
    write_shards(pairs, iteration_dir(root, iteration), name="pairs", **shard)


def write_outputs(out: Path, pool: pa.Table, responses: pa.Table, seed: pa.Table, pairs: pa.Table, test: pa.Table,
                  *, iteration: int, previous: Path, shard: dict[str, Any]) -> None:
    """``prompts`` (the iteration's pool), ``responses``, ``pairs`` (``seed/`` and ``iteration=<i>/``; the
    other iterations copied from ``previous``) and ``test`` under ``out``, each a shard set (``shard``:
    ``pipeline.io.shard_sizes``)."""
    write_shards(pool, out / "prompts", name="prompts", **shard)
    write_shards(responses, out / "responses", name="responses", **shard)
    write_pairs(out / "pairs", seed, pairs, iteration, previous=previous, **shard)
    write_shards(test, out / "test", name="pairs", **shard)


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


def sample_report(prompts: int, responses: int, unscored: dict[str, int]) -> dict[str, int]:
    """The sample step: prompts sampled, responses kept, and the samples dropped by reason."""
    return {"prompts": prompts, "responses": responses, "prompt_too_long": unscored["prompt_too_long"],
            "generation_failed": unscored["generation_failed"],
            "cut_off": unscored["cut_off"], "empty_responses": unscored["empty"]}


def pairs_report(pairs: pl.DataFrame, dropped: dict[str, int], written: int) -> dict[str, Any]:
    """``pair_report`` of the flagged pairs, with the candidates (pairs + same_text + tie drops) and the
    pairs written."""
    stats = pair_report(pairs)
    return {**stats, "candidates": stats["pairs"] + dropped["same_text"] + dropped["tie"], "written": written}


def console_line(iteration: int, prompts: int, sampled: int, responses: int, seed: int, pairs: int,
                 dropped: dict[str, int], max_new_tokens: int) -> str:
    """The stage's one-line summary, as PUGC and WildFeedback print theirs; when most samples were cut at the
    token budget (a real model's answers run past the paper's 300 tokens) it says which key to raise, since
    the iteration then has few pairs or none."""
    drops = ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
    line = (f"selfie: iteration {iteration}: {counted(prompts, 'pool prompt')} -> {counted(sampled, 'sample')} -> "
            f"{counted(responses, 'scored response')} -> {counted(pairs, 'pair')}, plus {counted(seed, 'seed pair')}"
            f"{f' (dropped: {drops})' if drops else ''}; details in data/selfie/details.json")
    cut = dropped.get("cut_off", 0)
    if sampled and 2 * cut > sampled:
        line += (f". {cut} of {counted(sampled, 'sample')} {'was' if cut == 1 else 'were'} cut at "
                 f"selfie.sampling.max_new_tokens ({max_new_tokens}) "
                 "and dropped: raise it")
    return line
