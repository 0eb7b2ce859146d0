"""Export's CPU steps against their baselines, side by side in one run.

- PII redaction: `pipeline.pii.redact` (polars regex per kind, validators once per distinct candidate:
  libphonenumber, Luhn, ipaddress) vs the previous regex-only redactor (`OLD_PATTERNS`, also vectorised
  polars), on the same texts: rows/s, and recall / near-misses altered on the labelled fixture
  (tests/pii_cases.py).
- Near-duplicate prompts: MinHash + LSH (`pipeline.text`) vs exact pairwise Jaccard of shingle sets
  (quadratic: run on the first `--naive-rows` prompts only, and extrapolated).
- The whole stage (`build_release`) on `--rows` synthetic pairs, at the shipped `execution.batch_size` (what
  `dvc repro` runs) and at 65,536-row batches, alternating (`--stage-rounds`), CPU seconds.
- `--pii-only`: the redaction alone, CPU seconds per kind and in all, best of three; with `--baseline-code DIR`
  the `pipeline.pii` of another checkout (e.g. main), with the `pipeline` modules it imports from that checkout
  too (`column_redact`), runs on the same texts, alternating with this one.

    python bench/export.py --rows 100000
    python bench/export.py --pii-only --rows 200000 --baseline-code ../main
    python bench/export.py --smoke            # 2,000 rows: checks the bench runs
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # this checkout's code (not an installed copy) and tests/

from executor import timed  # noqa: E402  (the sibling bench script's timer)

from pipeline.pii import KINDS, luhn_valid, redact  # noqa: E402
from pipeline.text import minhash, near_duplicate_groups, ngram_hashes, normalise  # noqa: E402

WORDS = ("alpha beta gamma delta model data train test prompt answer pair level method judge score "
         "python river mountain recipe travel history physics music garden code").split()


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i and rng.random() < 0.1:  # 10% near-duplicates of an earlier prompt (one word changed)
            words = out[rng.randrange(len(out))].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            out.append(" ".join(words))
            continue
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        if rng.random() < 0.05:
            text += f" mail me at user{i}@example.com or call +1 415-555-{i % 10000:04d}"
        out.append(text)
    return out


# The redactor before issue #17.7 (regexes only), kept here as the baseline.
OLD_PATTERNS: dict[str, tuple[str, str]] = {
    "openai_key": (r"\bsk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_\-]{20,}", "[REDACTED_API_KEY]"),
    "hf_token": (r"\bhf_[A-Za-z0-9]{30,}\b", "[REDACTED_HF_TOKEN]"),
    "aws_access_key": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[REDACTED_AWS_KEY]"),
    "github_token": (r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b", "[REDACTED_GITHUB_TOKEN]"),
    "bearer_token": (r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{16,}=*", "${1} [REDACTED_TOKEN]"),
    "email": (r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b", "[REDACTED_EMAIL]"),
    "credit_card": (r"\b\d(?:[ \-]?\d){12,18}\b", "[REDACTED_CREDIT_CARD]"),
    "ipv6": (r"(?i)\b(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){2,6}:(?:[0-9a-f]{1,4}:){0,4}[0-9a-f]{1,4}"
             r"|(?:[0-9a-f]{1,4}:){1,5}(?::[0-9a-f]{1,4}){2,5})\b", "[REDACTED_IP]"),
    "ipv4": (r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b", "[REDACTED_IP]"),
    "phone": (r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\b\d{2,4}[ .\-])\d{3,4}[ .\-]\d{3,4}\b", "[REDACTED_PHONE]"),
}


def old_redact(texts: pl.Series) -> pl.Series:
    """The previous redactor: one polars regex pass per kind, Luhn on distinct card candidates."""
    s = texts
    for kind, (pattern, repl) in OLD_PATTERNS.items():
        if kind == "credit_card":
            found = s.str.extract_all(pattern).explode().drop_nulls().unique().to_list()
            valid = sorted((c for c in found if luhn_valid(c)), key=len, reverse=True)
            s = s.str.replace_many(valid, [repl] * len(valid)) if valid else s
        else:
            s = s.str.replace_all(pattern, repl)
    return s


def fixture_scores(fn) -> tuple[float, int]:
    """(recall on the positives, near-misses altered) of a redactor on tests/pii_cases.py."""
    from tests.pii_cases import NEAR_MISSES, POSITIVES

    out = fn(pl.Series([t for _, t, _ in POSITIVES]))
    recall = sum(secret not in o for (_, _, secret), o in zip(POSITIVES, out, strict=True)) / len(POSITIVES)
    near = fn(pl.Series(NEAR_MISSES))
    return recall, sum(a != b for a, b in zip(NEAR_MISSES, near, strict=True))


def naive_near_dups(texts: list[str], shingle: int, threshold: float) -> int:
    sets = []
    for t in texts:
        w = re.sub(r"[^\w]+", " ", t.lower()).split()
        sets.append({" ".join(w[i:i + shingle]) for i in range(max(1, len(w) - shingle + 1))})
    found = 0
    for i in range(len(sets)):
        for j in range(i):
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold:
                found += 1
                break
    return found


def _cpu_best(fn, *args, repeat: int = 3) -> float:
    fn(*args)  # warm: compiled regexes, validator caches
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t)
    return best


def _ours(name: str) -> bool:
    return name == "pipeline" or name.startswith("pipeline.")


def load_baseline(checkout: Path):
    """``pipeline.pii`` of another checkout with every ``pipeline`` module it imports (``column_redact``) from that
    checkout as well: loading its pii.py by file path ran it on this checkout's ``column_redact``. This checkout's
    modules are back in ``sys.modules`` afterwards."""
    checkout = checkout.resolve()
    if not (checkout / "pipeline" / "pii.py").is_file():
        raise SystemExit(f"--baseline-code {checkout}: no pipeline/pii.py there; give the root of a prefpipe checkout")
    ours = {name: sys.modules.pop(name) for name in list(sys.modules) if _ours(name)}
    sys.path.insert(0, str(checkout))
    try:
        pii = importlib.import_module("pipeline.pii")
        theirs = {name: sys.modules.pop(name) for name in list(sys.modules) if _ours(name)}
    finally:
        sys.path.remove(str(checkout))
        sys.modules.update(ours)
    strays = [f"{n} ({m.__file__})" for n, m in theirs.items()
              if getattr(m, "__file__", None) and not Path(m.__file__).resolve().is_relative_to(checkout)]
    if strays:
        raise SystemExit(f"--baseline-code {checkout}: modules came from elsewhere: {strays}; is another copy of "
                         "pipeline installed ahead of sys.path (non-editable install)?")
    return pii


def pii_only(series: pl.Series, baseline: Path | None) -> None:
    """CPU seconds of ``redact`` per kind and over all kinds (best of three), this checkout's and a baseline's."""
    import pipeline.pii as this

    codes = {"this": this}
    if baseline is not None:
        codes["baseline"] = load_baseline(baseline)
        print(f"baseline: {codes['baseline'].__file__} (its column_redact: "
              f"{codes['baseline'].replace_validated.__code__.co_filename})")
    totals: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(2):  # alternate, so load from other processes falls on both
        for name, mod in codes.items():
            totals[name].append(_cpu_best(mod.redact, series, mod.KINDS))
    for name, mod in codes.items():
        counts = mod.redact(series, mod.KINDS)[1]
        print(f"PII {name:8s} {len(mod.KINDS)} kinds: CPU {' / '.join(f'{t:.2f}' for t in totals[name])} s for "
              f"{len(series):,} rows ({len(series) / min(totals[name]):,.0f} rows/s of CPU), "
              f"{sum(counts.values())} replacements")
    print("per kind (this checkout), CPU s: " + ", ".join(
        f"{k} {_cpu_best(this.redact, series, [k]):.3f}" for k in this.KINDS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--naive-rows", type=int, default=2_000)
    ap.add_argument("--stage-rounds", type=int, default=2, help="whole-stage runs per batch size (alternating)")
    ap.add_argument("--smoke", action="store_true", help="2,000 rows (checks the bench runs; figures mean nothing)")
    ap.add_argument("--pii-only", action="store_true", help="time the PII redaction alone, per kind")
    ap.add_argument("--baseline-code", type=Path, help="with --pii-only: a checkout whose pipeline/pii.py is the baseline")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.naive_rows, args.stage_rounds = 2_000, 200, 1
    texts = synthetic_prompts(args.rows)
    series = pl.Series(texts)
    if args.pii_only:
        pii_only(series, args.baseline_code)
        return

    (_, counts), t_new = timed(redact, series, KINDS)
    _, t_old = timed(old_redact, series)
    (new_recall, new_fp), (old_recall, old_fp) = fixture_scores(lambda s: redact(s, KINDS)[0]), fixture_scores(old_redact)
    print(f"PII redaction  new detectors: {args.rows / t_new:,.0f} rows/s   old regexes: {args.rows / t_old:,.0f} rows/s"
          f"   ({sum(counts.values())} replacements by the new ones)")
    print(f"PII fixture    new: recall {new_recall:.2f}, near-misses altered {new_fp}   old: recall {old_recall:.2f}, "
          f"near-misses altered {old_fp}")

    def lsh(s: pl.Series):
        norm = normalise(s)
        sig = minhash(ngram_hashes(norm, 5), len(s), 128)
        return near_duplicate_groups(sig, 32, 0.8)

    labels, t_lsh = timed(lsh, series)
    n = args.naive_rows
    found_naive, t_pair = timed(naive_near_dups, texts[:n], 5, 0.8)
    found_lsh = int((lsh(series[:n]) != range(n)).sum())
    print(f"near-dups      MinHash+LSH: {args.rows:,} prompts in {t_lsh:.1f} s ({args.rows / t_lsh:,.0f}/s)   "
          f"pairwise Jaccard: {n:,} prompts in {t_pair:.1f} s (~{t_pair * (args.rows / n) ** 2 / 3600:.1f} h "
          f"for {args.rows:,})   agreement on the first {n:,}: LSH {found_lsh} vs exact {found_naive}")

    from stages.export import build_release
    from tests.export_fixtures import export_cfg, pair, write_method

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        methods = ["pugc", "selfie"]
        rng = random.Random(1)  # seeded: the same pairs, and so the same drops, in every run
        for k, m in enumerate(methods):
            rows = [pair(f"{m}{i}", t, m, confidence=rng.random()) for i, t in enumerate(texts[k::2])]
            write_method(root, m, rows)
        # The stage reads (and redacts, checks, audits) execution.batch_size rows at a time; build_release's
        # default (65,536) is one batch for a small run and hid the per-batch costs (figures before 2026-12-01).
        shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["execution"]["batch_size"]
        sizes = [64, 512] if args.smoke else [shipped, 65_536]
        cpu: dict[int, list[float]] = {b: [] for b in sizes}
        for r in range(args.stage_rounds):  # alternating, so load from other processes falls on both
            for b in sizes if r % 2 == 0 else sizes[::-1]:
                t0, w0 = time.process_time(), time.perf_counter()
                stats = build_release(export_cfg(methods=methods), root, root / "data" / f"release{b}", "bench",
                                      batch_rows=b)
                cpu[b].append(time.process_time() - t0)
                print(f"export stage   {args.rows:,} pairs, batches of {b:,} rows: {time.perf_counter() - w0:.1f} s "
                      f"wall, {cpu[b][-1]:.1f} s CPU; drops {json.dumps(stats['drops'])}", flush=True)
        print("export stage   CPU by batch size (least of the rounds): " + ", ".join(
            f"{b:,} rows {min(v):.1f} s{' (execution.batch_size, as shipped)' if b == shipped else ''}"
            for b, v in cpu.items()))


if __name__ == "__main__":
    main()
