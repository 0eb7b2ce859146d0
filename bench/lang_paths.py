"""The hot paths today's language changes touched, against another checkout's code in the same process.

``normalise`` (NFKC, ``\\p{Cf}``), ``cjk_words(normalise(...))`` (shingles), PUGC's raw word counts, the export
checks ``repeats_itself`` and ``ends_mid_sentence``, and each PII kind alone, on ``bench/export.py``'s synthetic
English prompts (20-60 words, 5% with an e-mail and a phone number) and answers made of 1-6 of them as sentences.
Each step runs this checkout's module and ``--baseline-code``'s alternately, least CPU of ``--rounds``; the keys and
flags of ``normalise`` and the checks must be equal (the script stops otherwise).

    python bench/lang_paths.py --baseline-code ../main            # 200,000 rows
    python bench/lang_paths.py --smoke    # 2,000 rows, 1 round, this checkout against itself
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import resource
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from export import synthetic_prompts  # noqa: E402


def module(root: Path, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, root / rel)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def least(fn, rounds: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = cpu()
        out = fn()
        best = min(best, cpu() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-code", type=Path, default=ROOT,
                    help="another checkout, e.g. ../main (default: this one, against itself)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows, 1 round (figures mean nothing)")
    args = ap.parse_args()
    rows, rounds = (2_000, 1) if args.smoke else (args.rows, args.rounds)
    code = {"this": ROOT, "baseline": args.baseline_code.resolve()}
    mods = {k: {rel: module(root, f"pipeline/{rel}.py", f"_{k}_{rel}") for rel in ("text", "checks", "pii")}
            for k, root in code.items()}
    prompts = pl.Series(synthetic_prompts(rows))
    rng = random.Random(1)
    answers = pl.DataFrame({"t": [". ".join(prompts[rng.randrange(rows)][:120] for _ in range(rng.randint(1, 6))) + "."
                                  for _ in range(rows)]})
    steps = {
        "normalise": lambda m: m["text"].normalise(prompts),
        "cjk_words(normalise)": lambda m: (getattr(m["text"], "cjk_words", lambda s: s))(m["text"].normalise(prompts)),
        "repeats_itself": lambda m: answers.select(m["checks"].repeats_itself(pl.col("t")))[:, 0],
        "ends_mid_sentence": lambda m: answers.select(m["checks"].ends_mid_sentence(pl.col("t")))[:, 0],
    }
    kinds = [k for k in mods["this"]["pii"].KINDS if k in mods["baseline"]["pii"].KINDS]
    new_kinds = [k for k in mods["this"]["pii"].KINDS if k not in kinds]
    print(f"{rows:,} rows, least CPU of {rounds} round(s); baseline code {code['baseline']}")
    print("| step | this | baseline | ratio |\n|---|---|---|---|")
    for name, fn in steps.items():
        t_this, out_this = least(lambda fn=fn: fn(mods["this"]), rounds)
        t_base, out_base = least(lambda fn=fn: fn(mods["baseline"]), rounds)
        if name != "cjk_words(normalise)" and not out_this.equals(out_base):
            sys.exit(f"{name}: outputs differ from the baseline's; fix the change before timing it")
        print(f"| {name} | {t_this:.3f} s | {t_base:.3f} s | {t_this / t_base:.2f}x |")
    for kind in kinds + new_kinds:
        t_this, _ = least(lambda k=kind: mods["this"]["pii"].redact(prompts, [k]), rounds)
        t_base = least(lambda k=kind: mods["baseline"]["pii"].redact(prompts, [k]), rounds)[0] if kind in kinds else None
        base = f"{t_base:.3f} s | {t_this / t_base:.2f}x" if t_base else "(new kind) | -"
        print(f"| pii {kind} | {t_this:.3f} s | {base} |")


if __name__ == "__main__":
    main()
