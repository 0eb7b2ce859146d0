"""Fixed cost per call of the steps a stage runs once per read batch, at params.yaml's shipped batch size.

A step called once per ``execution.batch_size`` rows pays its fixed cost (regex compilation past polars'
32-entry per-thread cache, automaton or index builds, schema checks, Python set-up) once per batch; a bench
that feeds it 100,000 rows at a time hides that (how bench/wildfeedback_signals.py once hid 75.9 s against
17.9 s CPU of the WildFeedback rules). For each step this prints, in one process, alternating, the least CPU
of ``--rounds`` calls on 2 rows (~ the fixed cost) and on one shipped batch, the fixed share of a shipped
batch, and the fixed CPU seconds paid at 1M rows (calls at 1M = batches x calls per batch as the stage runs it).

Synthetic pairs: ``bench/export.py``'s prompts (20-60 words, 5% with an e-mail and a phone number) as
prompt, chosen and rejected. The evaluation sets are params.yaml's (../shared/data/real), as export reads them.

    python bench/per_call.py              # shipped execution.batch_size (4,096)
    python bench/per_call.py --smoke      # 64-row batches, 1 round: checks the bench runs
    python bench/per_call.py --baseline-code ../main   # adds another checkout's decontamination, same process
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from export import synthetic_prompts  # noqa: E402  (the sibling bench's prompts)

from pipeline.config import resolve_params  # noqa: E402
from pipeline.decontam import contamination, eval_index, release_eval_prompts  # noqa: E402
from pipeline.dedup import Signatures, prompt_keys, turn_texts  # noqa: E402
from pipeline.langid import detect_languages  # noqa: E402
from pipeline.pii import redact  # noqa: E402
from pipeline.records import SCHEMAS  # noqa: E402
from stages.export import light_pairs  # noqa: E402
from stages.export_read import redacted  # noqa: E402
from stages.pugc_prefilter import minhash_step  # noqa: E402
from tests.export_fixtures import pair  # noqa: E402


def pairs_frame(texts: list[str]) -> pl.DataFrame:
    rows = [pair(f"p{i}", t, "pugc", chosen=t + " Sure.", rejected=t[::-1]) for i, t in enumerate(texts)]
    df = pl.from_arrow(pa.Table.from_pylist(rows, schema=SCHEMAS["pairs"]))
    return df.with_columns(pl.lit("pugc").alias("_config"), pl.int_range(0, df.height).alias("_seq"))  # as method_batches


def baseline_decontam(code: Path):
    """``pipeline/decontam.py`` of another checkout, loaded beside this one's (its imports resolve here)."""
    spec = importlib.util.spec_from_file_location("_baseline_decontam", code / "pipeline" / "decontam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="64-row batches, 1 round (figures mean nothing)")
    ap.add_argument("--baseline-code", type=Path, help="another checkout (../main): its decontamination, timed "
                    "alternately with this one's, its eval index built once as its export builds it")
    args = ap.parse_args()
    params = resolve_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    batch = 64 if args.smoke else params.execution.batch_size
    rounds = 1 if args.smoke else args.rounds
    cfg, dc = params.export, params.export.decontamination
    evals, _ = release_eval_prompts(dc.sets, cfg.pii_kinds, tuple(cfg.pii_phone_regions), ROOT)
    eg = eval_index(evals, dc.ngram, dc.min_words) if evals.height else None
    pg = params.pugc

    def export_scan(df: pl.DataFrame) -> None:  # stages/export.py scan(): one batch of pass 1
        red, _ = redacted(df, "pugc", cfg)
        prompts = prompt_keys(red, "prompt")
        light_pairs(red, prompts["_key"], turn_texts(red, "prompt", dc.min_words))
        Signatures(cfg.dedup.shingle, cfg.dedup.num_perm).add(prompts["_key"], prompts["_text"])
        contamination(prompts.select("_key", "_text").sort("_key"), evals, dc.ngram, dc.threshold, eg, dc.min_words)

    base = baseline_decontam(args.baseline_code) if args.baseline_code and evals.height else None
    base_eg = base.eval_index(evals, dc.ngram) if base else None  # once, as main's export and audit build it
    texts = synthetic_prompts(batch)
    frames = {n: pairs_frame(texts[:n]) for n in (2, batch)}
    docs = {n: pa.table({"title": [None] * n, "text": texts[:n]}, schema=pa.schema([("title", pa.string()),
                                                                                  ("text", pa.string())]))
            for n in (2, batch)}
    # (name, step on n rows, calls per batch of the stage at 1M rows)
    steps = [
        ("export scan: redact + keys + checks + MinHash + decontamination", lambda n: export_scan(frames[n]), 1),
        ("export redacted() (pass 1 and pass 2)", lambda n: redacted(frames[n], "pugc", cfg), 2),
        ("pii.redact, 23 kinds, one text column", lambda n: redact(frames[n]["prompt"].list.last().struct.field(
            "content"), cfg.pii_kinds, tuple(cfg.pii_phone_regions)), 1),
        ("decontamination vs params.yaml's eval sets", lambda n: contamination(
            prompt_keys(frames[n], "prompt").select("_key", "_text"), evals, dc.ngram, dc.threshold, eg, dc.min_words), 1),
        *([("decontamination, --baseline-code's", lambda n: base.contamination(
            prompt_keys(frames[n], "prompt").select("_key", "_text"), evals, dc.ngram, dc.threshold, base_eg,
            dc.min_words), 1)] if base else []),
        ("pugc minhash_step", lambda n: minhash_step(docs[n], shingle_words=pg.shingle_words,
                                                     num_perm=pg.minhash_perms), 1),
        ("langid detect_languages", lambda n: detect_languages(pl.Series(texts[:n])), 1),
    ]
    best = {(name, n): math.inf for name, _, _ in steps for n in (2, batch)}
    for _name, fn, _ in steps:  # warm: imports, compiled patterns, caches
        fn(2)
        fn(batch)
    for r in range(rounds):  # steps in reverse order every other round: the one after pii.redact ran ~4 ms slower
        for name, fn, _ in (steps if r % 2 == 0 else steps[::-1]):
            for n in ((2, batch) if r % 2 == 0 else (batch, 2)):
                t = time.process_time()
                fn(n)
                best[name, n] = min(best[name, n], time.process_time() - t)
    batches = math.ceil(1_000_000 / batch)
    print(f"execution.batch_size {batch:,}: {batches} batches at 1M rows; least CPU of {rounds} round(s); "
          f"{len(evals)} eval prompts")
    print(f"{'step':<66}{'2 rows ms':>10}{'batch ms':>10}{'fixed %':>9}{'calls@1M':>10}{'fixed s@1M':>11}")
    for name, _, per_batch in steps:
        small, full = best[name, 2], best[name, batch]
        calls = batches * per_batch
        print(f"{name:<66}{small * 1e3:>10.2f}{full * 1e3:>10.2f}{100 * small / full:>8.0f}%{calls:>10,}"
              f"{small * calls:>11.2f}")


if __name__ == "__main__":
    main()
