"""Selfie / SPA step 1: the split of the labelled and unlabelled prompts, and the stage's inputs.

The split is made once, by prompt content (``sha1(shuffle_seed, prompt id)`` order), so it does not depend
on the input order and does not change between iterations: ``seed`` (gold pairs, trained on first),
``test`` (held out), and one pool of prompts per iteration.

>>> plan_split(10, 40, SelfieSplit(seed=2000, pools=[8000, 20000, 30000], test=1000, shuffle_seed=0))
{'seed': 1, 'pool_1': 5, 'pool_2': 13, 'pool_3': 20, 'test': 1}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline import ids
from pipeline.config import Selfie, SelfieSplit, SplitSize
from pipeline.io import SourceError, read_table
from pipeline.records import UNKNOWN_WRITER, check_table, empty_table, stable_id

STAGE = "selfie"
INGEST = Path("data/ingest")


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
    ``rest`` (reported). Every prompt lands in exactly one part. A prompt whose pairs all tie (``gold``)
    is unlabelled.
    """
    labelled = pl.DataFrame(
        {"prompt_id": prompt_keys(pairs.column("prompt")), "gold": gold(pairs)},
        schema={"prompt_id": pl.String, "gold": pl.Boolean},
    )
    unlabelled = pl.DataFrame(
        {"prompt_id": prompt_keys(prompts.column("messages"))}, schema={"prompt_id": pl.String}
    )
    units = (
        pl.concat(
            [labelled.rename({"gold": "labelled"}), unlabelled.with_columns(labelled=pl.lit(False))]
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


def split_report(assignment: pl.DataFrame, split: SelfieSplit, *, seed: pa.Table, test: pa.Table,
                 tied: int) -> dict[str, Any]:
    """The split as planned (``plan_split``) and as assigned (prompts per part), with the labelled pairs
    exported to seed and test and the ``tied`` ones left out of both (``gold``)."""
    labelled = int(assignment.get_column("labelled").sum())
    return {
        "prompts": assignment.height,
        "labelled_prompts": labelled,
        "tied_pairs": tied,
        "planned": plan_split(labelled, assignment.height, split),
        "assigned": dict(assignment.group_by("part").len().sort("part").iter_rows()),
        "seed_pairs": seed.num_rows,
        "test_pairs": test.num_rows,
    }


def lineage_json(**fields: pl.Expr) -> pl.Expr:
    return pl.struct(**fields).struct.json_encode()


def gold(pairs: pa.Table) -> pl.Series:
    """Per labelled pair, whether it states a preference: not when its scores tie (``score_chosen ==
    score_rejected``; 24 of the 199 real UltraFeedback-binarized pairs ingest keeps, as DOVE's ``tied_not_gold``).
    A tied pair is no gold pair: its prompt is an unlabelled one (``assign_split``), never a seed or test pair."""
    df = pl.from_arrow(pairs.select(["score_chosen", "score_rejected"]))
    return df.select((pl.col("score_chosen") != pl.col("score_rejected")).fill_null(True)).to_series()


def export_labelled(pairs: pa.Table, assignment: pl.DataFrame, part: str, fp: str) -> pa.Table:
    """The gold pairs (``gold``) of the ``seed`` (or ``test``) prompts as ``method = "selfie"``, ``source = part``;
    their responses are an input dataset's, which names no writer (``written_by`` unknown)."""
    keys = pl.Series("prompt_id", prompt_keys(pairs.column("prompt")), dtype=pl.String)
    df = pl.from_arrow(pairs).with_columns(keys).filter(gold(pairs))
    df = df.join(assignment.filter(pl.col("part") == part).select("prompt_id"), on="prompt_id", how="semi")
    df = df.with_columns(
        lineage=lineage_json(
            stage=pl.lit(STAGE),
            split=pl.lit(part),
            input_pair_id=pl.col("pair_id"),
            input_source=pl.col("source"),
            written_by=pl.struct(chosen=pl.lit(UNKNOWN_WRITER), rejected=pl.lit(UNKNOWN_WRITER)),
            fingerprint=pl.lit(fp),
        ),
        pair_id=ids.hex_id(pl.lit(STAGE), pl.lit(part), "pair_id"),
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
