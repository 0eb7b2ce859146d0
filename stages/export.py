"""Export: merge the methods' pairs into one release any trainer reads, with a card, stats, plots and an audit.

    merge -> redact PII -> drop chosen == rejected -> de-duplicate -> decontaminate -> split
          -> drop held-out prompts from train -> pick one method per prompt for `all` -> write -> audit

1. merge: ``data/<method>/pairs`` for every enabled method (sub-folders such as Curry-DPO's ``level=N``
   are read in order; DOVE: the joint_pairs contract). An absent folder is skipped and noted in details.json.
2. redact: every string the release writes (messages, ``lineage``, ``source``) by ``pipeline.pii``.
3. drop pairs with a message holding a control character or a bidi override, or showing nothing
   (``unprintable_text``: what a model or a server may answer), whose chosen equals rejected after normalisation
   (``pipeline.checks.same_text``), acknowledges
   feedback or revises a version its prompt does not hold (``unprompted_acknowledgement``), loops over its own
   sentences (``looping_chosen``) or stops mid-sentence (``cut_off_chosen``: an external answer truncated upstream
   carries no finish reason): counted, never the whole release failing its audit.
4. de-duplicate *within* each method: identical pairs, and near-duplicate prompts (MinHash); several
   pairs of one method for one exact prompt (Curry-DPO's levels) stay together.
5. decontaminate: drop pairs whose prompt shares word n-grams with an evaluation prompt (redacted like
   the prompts, so an evaluation prompt holding an email address still matches).
6. split train/test by a salted hash of the prompt's normalised first user turn (``pipeline.dedup.opening_key``:
   a lone user turn is the whole prompt), so the prompts of one conversation (WildFeedback pairs on two of its
   turns) share a split; a DOVE row whose prompts straddle the splits is dropped. Selfie/SPA's seed pairs (``source``
   "seed"; ``TRAIN_FIRST``), trained on first, pin their openings to train with every pair opening the same way, in
   any config and in ``all`` (Selfie holds out its own test prompts), and so does every pair sharing (or quoting)
   a user turn with a seed pair, so no seed pair goes for the split. A train prompt one of whose user turns is,
   or quotes inside a longer turn, a user turn of a test prompt (of ``decontamination.min_words`` words or more;
   ``pipeline.split_leaks``: equal turn keys, then step 5's overlap on the turns' texts), goes
   (``test_prompt_in_train``): the test split is held out too.
7. held-out: drop train pairs whose prompt (DOVE: either prompt) is in a held-out set, or overlaps one as step 5
   measures it (``held_out``).
8. ``all``: a prompt several methods share (exactly or nearly) is kept there for the first method in
   ``dedup.priority``; the others keep the pair in their own config only.
9. write ``data/release/<config>/<split>-0000i-of-0000N.parquet``, ``_manifest.json``, the card
   ``README.md``, ``stats.json`` (headline numbers; every figure in ``details.json``), ``plots/``,
   ``removed.jsonl`` (every pair that left a config, why, which configs and its texts) and ``audit.json``:
   ``pipeline.audit`` re-reads the release and the stage fails on any hard violation, leaving the candidate in ``data/.release.rejected`` and ``data/release`` as it was.

Memory stays bounded by streaming in two passes (``build_release``): the first reads and redacts every method's
pairs batch by batch, keeping ids, scores, prompt keys, text hashes, one MinHash signature per distinct prompt and
the user turns of prompts the hash puts in test; steps 3-8 decide on those (step 6 reads the prompts once more to
compare their user turns with the test prompts'); the second pass streams the kept pairs into the shard writers.

Steps 1 and 2, which both passes run, are ``stages/export_read.py``; steps 3-8's decisions (``decide``) are
``stages/export_decide.py``, step 6's split in it ``stages/export_split.py``; the writers, stats, plots and gate
reports of step 9 are ``stages/export_write.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from pipeline import audit
from pipeline.checks import (
    control_token_text,
    ends_mid_sentence,
    looping_chosen,
    same_text,
    unprintable_text,
    unprompted_acknowledgement,
)
from pipeline.config import Export, Params, fingerprint
from pipeline.decontam import (
    contamination,
    eval_index,
    held_index,
    load_held_out,
    near_held_out,
    release_eval_prompts,
)
from pipeline.dedup import (
    Signatures,
    opening_key,
    prompt_keys,
    text_hash,
    text_of,
    turn_key_lists,
    turn_texts,
)
from pipeline.files import file_sha256, package_version, replace_dir, write_json_atomic
from pipeline.io import FORMAT, MANIFEST
from pipeline.metrics import counted, say, write_metrics
from pipeline.outputs import publishing
from pipeline.records import SCHEMAS
from pipeline.split_leaks import quoted_test_turns, turns_overlapping
from pipeline.train_first import trained_first
from stages import export_card
from stages.export_decide import decide
from stages.export_read import (
    JOINT_SIDES,
    PAIR_SIDES,
    ExportError,
    method_batches,
    method_inputs,
    prompt_turns,
    redacted,
)
from stages.export_split import test_candidates
from stages.export_write import (
    CONDITIONAL,
    JOINT,
    ReleaseWriter,
    build_stats,
    gate_reports,
    model_reports,
    release_headline,
    release_order,
    row_counts,
    signal_categories,
    split_sizes,
    write_plots,
    write_png,
)

log = logging.getLogger(__name__)

OUT_DIR = Path("data/release")


# --- 3. identical --------------------------------------------------------------------------------


def identical(sides: list[tuple[str, str]]) -> pl.Expr:
    """True where the chosen side equals the rejected side, whitespace normalised, case folded and
    sentence punctuation aside (``pipeline.checks.same_text``), on every column pair."""
    return pl.all_horizontal([same_text(text_of(a), text_of(b)) for a, b in sides])


# --- the stage -----------------------------------------------------------------------------------

LIGHT = ["pair_id", "_config", "_seq", "confidence", "lineage"]


def light_pairs(df: pl.DataFrame, key: pl.Series, turns: pl.DataFrame) -> pl.DataFrame:
    """What the decisions need of a redacted batch of pairs: ids, scores, prompt ``key``, its user turns' keys
    (``_turns``, of ``turns``: ``turn_texts``), text hashes, whether its method trains on it first (``_first``)."""
    return df.select(*LIGHT, "level", "margin", identical([("chosen", "rejected")]).alias("_same"),
                     unprintable_text(list(PAIR_SIDES)).alias("_unprintable"),
                     control_token_text(list(PAIR_SIDES)).alias("_control"),
                     unprompted_acknowledgement("chosen", "prompt").alias("_ack"), looping_chosen("chosen").alias("_loop"),
                     ends_mid_sentence(text_of("chosen")).alias("_cut"), trained_first(pl.col("_config")).alias("_first"),
                     key.alias("_key"), opening_key("prompt").alias("_open"), turn_key_lists(turns, df.height),
                     text_hash("chosen").alias("_ch"), text_hash("rejected").alias("_rh"))


def light_joint(df: pl.DataFrame, key_c: pl.Series, key_r: pl.Series, turns_c: pl.DataFrame,
                turns_r: pl.DataFrame) -> pl.DataFrame:
    same = identical([("chosen_prompt", "rejected_prompt"), ("chosen", "rejected")])
    return df.select(*LIGHT, same.alias("_same"), unprintable_text(list(JOINT_SIDES)).alias("_unprintable"),
                     control_token_text(list(JOINT_SIDES)).alias("_control"),
                     unprompted_acknowledgement("chosen", "chosen_prompt").alias("_ack"),
                     looping_chosen("chosen").alias("_loop"), ends_mid_sentence(text_of("chosen")).alias("_cut"),
                     key_c.alias("_key_c"), key_r.alias("_key_r"), opening_key("chosen_prompt").alias("_open_c"),
                     opening_key("rejected_prompt").alias("_open_r"), turn_key_lists(turns_c, df.height).alias(
                         "_turns_c"), turn_key_lists(turns_r, df.height).alias("_turns_r"),
                     text_hash("chosen").alias("_ch"), text_hash("rejected").alias("_rh"),
                     text_hash("chosen_prompt").alias("_cph"), text_hash("rejected_prompt").alias("_rph"))


def _empty(name: str) -> pl.DataFrame:
    return pl.from_arrow(SCHEMAS[name].empty_table()).with_columns(pl.lit("").alias("_config"),
                                                                   pl.lit(0, pl.Int64).alias("_seq"))


class Scanned(NamedTuple):
    """Pass 1's result: the light frames (``light_pairs`` / ``light_joint``), prompt signatures, contamination hits,
    redactions and rows read per kind / method, the held-out keys (prompts near one added), and the user turns
    (``_turn``, ``_text``) of the prompts the hash puts in test and of the pairs trained first."""

    pairs: pl.DataFrame
    joint: pl.DataFrame
    sigs: Signatures
    hits: pl.DataFrame
    pii: dict[str, int]
    counts: dict[str, int]
    held: pl.DataFrame
    texts: pl.DataFrame
    seeds: pl.DataFrame


def scan(cfg: Export, inputs: dict[str, Path], evals: pl.DataFrame, batch_rows: int, held: pl.DataFrame) -> Scanned:
    """Pass 1: every method's pairs streamed once, redacted, reduced to the light frames the
    decisions need; prompt signatures, contamination hits and prompts near a held-out one (added to
    ``held``, which is returned) are computed batch by batch; the texts of the user turns of the prompts the hash
    puts in test and of the pairs trained first are kept for step 6."""
    sigs = Signatures(cfg.dedup.shingle, cfg.dedup.num_perm)
    dc = cfg.decontamination
    eg = eval_index(evals, dc.ngram, dc.min_words) if evals.height else None
    pairs, joint, hits, near, texts, seeds = [], [], [], [held.select("_key", "held_out")], [], []
    hg = held_index(held, dc.ngram, dc.min_words) if held.height else None
    counts = dict.fromkeys(inputs, 0)
    pii = dict.fromkeys(cfg.pii_kinds, 0)
    for method, df in method_batches(inputs, batch_rows):
        counts[method] += df.height
        df, found = redacted(df, method, cfg)
        pii = {k: pii[k] + found.get(k, 0) for k in pii}
        if method in JOINT:
            pc_, pr = prompt_keys(df, "chosen_prompt"), prompt_keys(df, "rejected_prompt")
            tc, tr = turn_texts(df, "chosen_prompt", dc.min_words), turn_texts(df, "rejected_prompt", dc.min_words)
            joint.append(light := light_joint(df, pc_["_key"], pr["_key"], tc, tr))
            prompts = pl.concat([pc_, pr])
            texts += [test_candidates(tc, light["_open_c"], cfg), test_candidates(tr, light["_open_r"], cfg)]
        else:
            prompts = prompt_keys(df, "prompt")
            tt = turn_texts(df, "prompt", dc.min_words)  # once: turn keys, test candidates, seed turns
            pairs.append(light := light_pairs(df, prompts["_key"], tt))
            sigs.add(prompts["_key"], prompts["_text"])
            texts.append(test_candidates(tt, light["_open"], cfg))
            seeds.append(tt.filter(light["_first"].gather(tt["_r"])).drop("_r"))
        prompts = prompts.select("_key", "_text").unique("_key", keep="first", maintain_order=True).sort("_key")
        hits.append(contamination(prompts, evals, dc.ngram, dc.threshold, eg, dc.min_words))
        near.append(near_held_out(prompts, held, dc.ngram, dc.threshold, dc.min_words, hg))
    no_key = pl.Series([], dtype=pl.UInt64)
    hits_df = pl.concat(hits).unique("_key", keep="first").sort("_key") if hits else contamination(
        pl.DataFrame(schema={"_key": pl.UInt64, "_text": pl.String}), evals, 1, 1.0)
    no_turns = turn_texts(_empty("pairs"), "prompt", dc.min_words)
    pairs_df = pl.concat(pairs) if pairs else light_pairs(_empty("pairs"), no_key, no_turns)
    joint_df = pl.concat(joint) if joint else light_joint(_empty("joint_pairs"), no_key, no_key, no_turns, no_turns)
    held = pl.concat(near).unique("_key", keep="first", maintain_order=True).sort("_key")
    texts_df = pl.concat([no_turns.drop("_r"), *texts]).unique("_turn", keep="first")
    seeds_df = pl.concat([no_turns.drop("_r"), *seeds]).unique("_turn", keep="first")
    return Scanned(pairs_df, joint_df, sigs, hits_df, pii, counts, held, texts_df, seeds_df)


def removed_records(df: pl.DataFrame, gone: pl.DataFrame, method: str) -> pl.DataFrame:
    """removed.jsonl's records for the removed rows of one redacted batch: the removal (pair_id, method, reason,
    detail, configs) and the pair's texts as released (message lists: prompt, chosen, rejected; DOVE: both prompts),
    in the batch's row order, so the file's order is the methods' and does not depend on the batch size."""
    texts = JOINT_SIDES if method in JOINT else PAIR_SIDES
    return df.select("pair_id", "_config", *texts).join(gone, on=["pair_id", "_config"], how="inner",
                                                        maintain_order="left").select(
        "pair_id", "method", "reason", "detail", "configs", *texts)


def build_release(cfg: Export, root: Path, out_dir: Path, fp: str, *, batch_rows: int = 65_536,
                  spill_bytes: int = 64 << 20) -> dict[str, Any]:
    """Run every step, audit the result and publish ``out_dir`` atomically. Returns details.json's content.

    Two passes over the methods' pairs: the first keeps only ids, scores, prompt keys, text hashes and
    MinHash signatures (so memory grows by ~1 KB per distinct prompt, not by the texts); the decisions
    run on those; the second streams the pairs again, redacts them and routes the kept ones to
    streaming shard writers per config and split.
    """
    inputs, skipped = method_inputs(root, cfg.methods)
    for m, why in skipped.items():
        say(f"export: skipping {m}: {why}")  # "WARNING export: ...", as the other stages' warnings
    evals, eval_status = release_eval_prompts(cfg.decontamination.sets, cfg.pii_kinds, tuple(cfg.pii_phone_regions))
    held, held_status = load_held_out(cfg.held_out, root, batch_rows, cfg.pii_kinds, tuple(cfg.pii_phone_regions))
    s = scan(cfg, inputs, evals, batch_rows, held)
    dc = cfg.decontamination
    pairs, joint, drops, split = decide(cfg, s.pairs, s.joint, s.sigs, s.hits, s.held, lambda tests: quoted_test_turns(
        prompt_turns(inputs, batch_rows, cfg), tests, s.texts, dc.ngram, dc.threshold, dc.min_words),
        lambda keys: turns_overlapping(s.texts, s.seeds.filter(pl.col("_turn").is_in(keys.implode())), dc.ngram,
                                       dc.threshold, dc.min_words))
    present = [m for m in cfg.methods if m in inputs]
    configs = (["all"] if any(m in CONDITIONAL for m in present) else []) + [m for m in present if m in CONDITIONAL]
    order_p = release_order(pairs, configs)
    order_j = release_order(joint, [m for m in present if m in JOINT])
    rows = row_counts(order_p, configs) | row_counts(order_j, [m for m in present if m in JOINT])
    stats = build_stats(pairs, joint, rows, drops, s.pii, s.counts, skipped, eval_status, held_status)
    stats["gates"] = gate_reports(root, list(inputs))
    stats["models"] = model_reports(root, list(inputs))
    stats["split"] = split
    stats["fingerprint"] = fp

    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    for stale in (tmp, out_dir.parent / f".{out_dir.name}.rejected"):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    writer = ReleaseWriter(tmp, cfg, rows, spill_bytes)
    gone, written = drops.with_columns(pl.col("method").alias("_config")), 0
    try:
        with open(tmp / "removed.jsonl", "wb") as removed_file:
            for method, df in method_batches(inputs, batch_rows):  # pass 2
                order = order_j if method in JOINT else order_p
                df, _ = redacted(df, method, cfg)
                records = removed_records(df, gone, method)
                records.write_ndjson(removed_file)
                written += records.height
                df = df.join(order.drop("level", "_seq", "_primary", strict=False), on=["pair_id", "_config"], how="inner")
                writer.write(df, "joint_pairs" if method in JOINT else "pairs")
        if written != drops.height:
            raise ExportError(f"{tmp / 'removed.jsonl'}: {written} removal records with texts for {drops.height} removals; "
                              "the methods' pairs changed while export read them, rerun `dvc repro export`")
        files = writer.close()
        return publish_folder(cfg, root, tmp, out_dir, files, stats, pairs, joint, fp, batch_rows)
    except BaseException:  # a full disk while writing the card or the manifest too: no candidate left behind
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_folder(cfg: Export, root: Path, tmp: Path, out_dir: Path, files: list[dict], stats: dict,
                   pairs: pl.DataFrame, joint: pl.DataFrame, fp: str, batch_rows: int) -> dict[str, Any]:
    """Add stats, plots, the audit, the card and the manifest to the temporary folder beside ``out_dir`` (which
    already holds the shards and removed.jsonl); rename it into place when the audit passes."""
    categories = signal_categories(root)
    if categories:
        stats["categories"] = {r["category"]: r["count"] for r in categories}
    plots = write_plots(tmp / "plots", pairs, stats, cfg.histogram_bins, categories)
    if cfg.summary_png:
        try:
            write_png(tmp / "plots" / "summary.png", stats, plots)
        except ImportError as e:
            stats["notes"] = {"summary_png": f"not written: {e} (pip install matplotlib)"}
    write_metrics(tmp, release_headline(stats), stats, name="stats.json")
    report = audit.audit_release(tmp, root=root, cfg=cfg, batch_rows=batch_rows)
    rows = pl.concat([pairs.select("_config", "lineage"), joint.select("_config", "lineage")])
    card = export_card.render_card(cfg, stats, export_card.lineage_summary(rows), png=(tmp / "plots" / "summary.png").exists(),
                                   audit=report, writers=export_card.response_writers(rows), sizes=split_sizes(tmp, files))
    report = audit.add_text_check(report, "README.md", card, cfg.pii_kinds, tuple(cfg.pii_phone_regions))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    write_json_atomic(report, tmp / audit.AUDIT_FILE)
    others = sorted(p for p in tmp.rglob("*") if p.is_file() and p.suffix != ".parquet")
    manifest = {
        "table": "release",
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "other_files": [{"path": str(p.relative_to(tmp)), "sha256": file_sha256(p)} for p in others],
        "configs": stats["rows"],
        "fingerprint": fp,
        "prefpipe_version": package_version(),
        "format": FORMAT,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if not report["passed"]:
        rejected = out_dir.parent / f".{out_dir.name}.rejected"
        tmp.rename(rejected)
        raise ExportError(f"the release fails its audit; {out_dir} is left as it was and the candidate is in "
                          f"{rejected} (`prefpipe audit {rejected}` repeats the check):\n"
                          + "\n".join(audit.summary_lines(report)))
    with publishing(out_dir):  # once no run reading the release holds it (pipeline/outputs.py)
        replace_dir(tmp, out_dir)
    return stats


def main(params: Params) -> None:
    cfg = params.export
    fp = fingerprint(cfg)
    ex = params.execution
    stats = build_release(cfg, Path("."), OUT_DIR, fp, batch_rows=ex.batch_size, spill_bytes=ex.spill_bytes)
    log.info("%s written to %s", counted(stats["total"], "pair"), OUT_DIR)  # the logger's name says "stages.export"
    print(summary_line(stats, OUT_DIR))


def summary_line(stats: dict[str, Any], out_dir: Path) -> str:
    """What `dvc repro` ends with: the release's pairs per config, its removals by reason, and how to look."""
    rows = {c: sum(splits.values()) for c, splits in stats["rows"].items()}
    configs = ", ".join(f"{c} {n}" for c, n in rows.items() if c != "all")
    merged = f"; `all` holds {rows['all']} of them" if "all" in rows else ""
    gone, all_only = (", ".join(f"{reason} {n}" for reason, n in stats[k].items()) or "none"
                      for k in ("drops_from_release", "drops_from_all_only"))
    return (f"export: {counted(stats['total'], 'pair')} in {out_dir} ({configs}{merged}); removed from the release: "
            f"{gone}; left out of `all` only: {all_only} ({out_dir / 'removed.jsonl'}); audit passed; "
            f"look at it with `prefpipe inspect {out_dir}`")
