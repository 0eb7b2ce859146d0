"""Language identification: py3langid (what prefpipe uses) against lingua and the former hand-written English
check, same texts, same process.

Texts with a known language:
- the 1,803 real WildChat user turns of tests/fixtures/wildchat_labels.jsonl, whose `language` was labelled by
  hand (texts read from ../shared/data/real/wildchat_sample);
- the shipped samples (data/samples/posts.jsonl and prompts.jsonl, all English).

Both identifiers are restricted to the same language set (`pipeline.langid.LANGUAGES`). Reported: exact
language accuracy, English-vs-not accuracy (what the stages decide), texts/s; lingua's model load separately.

    python bench/langid.py
    python bench/langid.py --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.langid import LANGUAGES, detect_languages  # noqa: E402

LABELS = ROOT / "tests" / "fixtures" / "wildchat_labels.jsonl"
WILDCHAT = ROOT.parent / "shared" / "data" / "real" / "wildchat_sample" / "conversations.jsonl"
STOPWORDS = set(
    "a about after all also am an and any are as at be because been but by can could did do does for from get got "
    "had has have he her him his how i if in into is it its just like me my no not now of on one or our out so some "
    "than that the their them then there they this to up us was we were what when which who will with would you "
    "your".split()
)


def labelled_texts() -> tuple[list[str], list[str]]:
    convs = {}
    for line in WILDCHAT.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            rec = json.loads(line)
            convs[rec["id"]] = rec["messages"]
    texts, gold = [], []
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts.append(convs[row["conversation_id"]][row["user_turn"]]["content"])
        gold.append(row["language"])
    for name in ("posts", "prompts"):
        for line in (ROOT / "data" / "samples" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            texts.append(rec.get("text") or rec.get("prompt") or "")
            gold.append("en")
    return texts, gold


def former_is_english(texts: list[str]) -> list[bool]:
    """PUGC's former check: >= 15% common English function words and >= 90% ASCII letters."""
    out = []
    for t in texts:
        words = [w for w in t.lower().split() if w.isalpha()]
        letters = [c for c in t if c.isalpha()]
        stop = sum(w in STOPWORDS for w in words) / len(words) if words else 0.0
        ascii_share = sum(c.isascii() for c in letters) / len(letters) if letters else 0.0
        out.append(stop >= 0.15 and ascii_share >= 0.9)
    return out


def lingua_codes(texts: list[str]) -> tuple[list[str], float, float]:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    t0 = time.perf_counter()
    codes = [getattr(IsoCode639_1, c.upper()) for c in LANGUAGES]
    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models().build()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = detector.detect_languages_in_parallel_of([t[:600] for t in texts])
    return [f.iso_code_639_1.name.lower() if f else "und" for f in found], load, time.perf_counter() - t0


def report(name: str, codes: list[str] | None, english: list[bool], gold: list[str], seconds: float) -> None:
    n = len(gold)
    exact = f"{sum(c == g for c, g in zip(codes, gold, strict=True)) / n:.3f}" if codes else "  -  "
    en = sum(e == (g == "en") for e, g in zip(english, gold, strict=True)) / n
    print(f"{name:<22} exact {exact}  english-vs-not {en:.3f}  {n / seconds:>9,.0f} texts/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="the first 100 texts only")
    args = ap.parse_args()
    texts, gold = labelled_texts()
    if args.smoke:
        texts, gold = texts[:100], gold[:100]
    print(f"{len(texts)} texts with a known language ({sum(g == 'en' for g in gold)} English)")
    t0 = time.perf_counter()
    detect_languages(pl.Series(["warm up: load the model"]))
    print(f"(py3langid's model load: {time.perf_counter() - t0:.1f} s, not counted below)")
    t0 = time.perf_counter()
    ours = detect_languages(pl.Series(texts)).to_list()
    report("py3langid (prefpipe)", ours, [c == "en" for c in ours], gold, time.perf_counter() - t0)
    t0 = time.perf_counter()
    former = former_is_english(texts)
    report("former English check", None, former, gold, time.perf_counter() - t0)
    try:
        codes, load, seconds = lingua_codes(texts)
        report("lingua", codes, [c == "en" for c in codes], gold, seconds)
        print(f"(lingua's model load: {load:.1f} s, not counted above)")
    except ImportError:
        print("lingua: not installed (pip install lingua-language-detector) - skipped")


if __name__ == "__main__":
    main()
