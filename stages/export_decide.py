"""Export's steps 3-8 on pass 1's light frames (``stages/export.py``): drop flagged pairs, de-duplicate,
decontaminate, split, drop test prompts from train and held-out prompts, pick one method per prompt for ``all``.
Each step returns the rows it keeps and a removal (``pipeline.dedup.removals``) per row it drops."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pipeline.config import Export
from pipeline.decontam import decontaminate, drop_held_out
from pipeline.dedup import Signatures, dedup_across, dedup_joint, dedup_within, removals
from pipeline.split_leaks import drop_test_turns, test_turns
from stages.export_split import LEAVES, LEAVES_JOINT, pin_counts, pinned_openings, split_joint, split_pairs


def drop_flagged(df: pl.DataFrame, flag: str, reason: str, configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows whose ``flag`` column, computed while scanning, is set go as ``reason``: ``_same``
    (``stages.export.identical``), ``_unprintable`` (``pipeline.checks.unprintable_text``), ``_control``
    (``pipeline.checks.control_token_text``), ``_ack``
    (``pipeline.checks.unprompted_acknowledgement``), ``_loop`` (``pipeline.checks.looping_chosen``) and ``_cut``
    (``pipeline.checks.ends_mid_sentence`` on the chosen answer)."""
    return df.filter(~pl.col(flag)).drop(flag), removals(df.filter(pl.col(flag)), reason, configs)


def decide(cfg: Export, pairs: pl.DataFrame, joint: pl.DataFrame, sigs: Signatures, hits: pl.DataFrame,
           held: pl.DataFrame, quoted: Callable[[pl.DataFrame], pl.DataFrame],
           seed_quotes: Callable[[pl.Series], pl.Series]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict]:
    """Steps 3-8 on the light frames: (kept pairs with ``_split`` and ``_primary``, kept joint rows, removals, the
    split's pinning counts). ``quoted``: the test turns (``test_turns``) -> the keys of user turns holding one
    (``quoted_test_turns``); ``seed_quotes``: the turn keys of the pairs trained first -> those of the turns that
    would match one (``turns_overlapping``)."""
    d = cfg.dedup
    drops = []
    for flag, reason in (("_unprintable", "unprintable_text"), ("_control", "control_token_text"), ("_same", "identical"),
                         ("_ack", "unprompted_acknowledgement"), ("_loop", "looping_chosen"), ("_cut", "cut_off_chosen")):
        pairs, r = drop_flagged(pairs, flag, reason, LEAVES)
        joint, r_joint = drop_flagged(joint, flag, reason, LEAVES_JOINT)
        drops += [r, r_joint]
    pairs, r = dedup_within(pairs, sigs, d.bands, d.near_threshold, LEAVES)
    drops.append(r)
    joint, r = dedup_joint(joint, LEAVES_JOINT)
    drops.append(r)
    pairs, r = decontaminate(pairs, ["_key"], hits, LEAVES)
    drops.append(r)
    joint, r = decontaminate(joint, ["_key_c", "_key_r"], hits, LEAVES_JOINT)
    drops.append(r)
    pinned, opens = pinned_openings(pairs, joint, seed_quotes)
    pairs = split_pairs(pairs, cfg.test_fraction, cfg.split_salt, pinned)
    joint, r = split_joint(joint, cfg.test_fraction, cfg.split_salt, pinned)
    drops.append(r)
    tests = test_turns([(pairs, ["_turns"]), (joint, ["_turns_c", "_turns_r"])])
    tests = pl.concat([tests, quoted(tests)])
    pairs, r = drop_test_turns(pairs, ["_turns"], tests, LEAVES)
    drops.append(r)
    joint, r = drop_test_turns(joint, ["_turns_c", "_turns_r"], tests, LEAVES_JOINT)
    drops.append(r)
    pairs, r = drop_held_out(pairs, ["_key"], held, LEAVES)
    drops.append(r)
    joint, r = drop_held_out(joint, ["_key_c", "_key_r"], held, LEAVES_JOINT)
    drops.append(r)
    pairs, r = dedup_across(pairs, d.priority, sigs, d.bands, d.near_threshold, pl.lit(["all"]))
    drops.append(r)
    return pairs, joint, pl.concat(drops).sort("reason", "method", "pair_id"), pin_counts(opens, cfg.test_fraction, cfg.split_salt)
