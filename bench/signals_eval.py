"""How well the WildFeedback `rules` detector agrees with hand labels on real chatbot logs.

    python bench/signals_eval.py            # print the tables
    python bench/signals_eval.py --write    # ...and rewrite them in README.md, docs/wildfeedback*.md, bench/README.md
    python bench/signals_eval.py --smoke    # the same tables, printed (it takes seconds)
    python bench/signals_eval.py --part dev # the dev part only (to iterate on rules without seeing test)
    python bench/signals_eval.py --part dev-a   # one half of dev (write rules on one half, check them on the other)

The labels are tests/fixtures/wildchat_labels.jsonl: 1,803 user turns of all 582 multi-turn real WildChat
conversations (texts read from ../shared/data/real/wildchat_sample), split by conversation into dev (the rules were
tuned on it) and test (read only to report). What stands between the ``signals-eval`` markers of README.md (one
line: the test part's figures), docs/wildfeedback.md (the headline table), docs/wildfeedback_signals.md and
bench/README.md is this script's output;
tests/test_wildfeedback_context.py checks they are current.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code and tests/ helpers

from tests.wildfeedback_fixture import detect_wildchat, load_labelled, stage_params, wildchat_scores  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
GOAL = {"dsat_precision": 0.85, "dsat_recall": 0.6, "sat_precision": 0.85}
MARK = "<!-- signals-eval:{} -->"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pr(s: dict) -> str:
    return f"{_f(s['precision'])} / {_f(s['recall'])}"


PARTS = ("test", "dev")
DEV_HALVES = ("dev-a", "dev-b")


def dev_half(conversation_id: str) -> str:
    """dev-a or dev-b: one bit of sha256("wildchat-dev-half:" + id), so a conversation stays in one half. Rules
    are written while reading one half's misses and kept only if they also help the other half."""
    return "dev-b" if hashlib.sha256(f"wildchat-dev-half:{conversation_id}".encode()).digest()[0] & 1 else "dev-a"


def scores(real: Path = REAL, parts: tuple[str, ...] = PARTS) -> dict:
    """Scores per part (dev, test) and per treatment of ambiguous turns (all, unambiguous)."""
    frame = detect_wildchat(real)
    frame = frame.with_columns(pl.when(pl.col("split") == "dev").then(pl.col("conversation_id").map_elements(
        dev_half, return_dtype=pl.String)).alias("half"))
    out = {}
    for part in parts:
        p = frame.filter((pl.col("half") if part in DEV_HALVES else pl.col("split")) == part)
        staged = p.filter(pl.col("stage_judges"))
        out[part] = {"all": wildchat_scores(p), "unambiguous": wildchat_scores(p.filter(~pl.col("ambiguous"))),
                     # what a run with params.yaml judges: only these turns can get a signal in `dvc repro`
                     "stage": wildchat_scores(staged), "stage_unambiguous": wildchat_scores(staged.filter(~pl.col("ambiguous"))),
                     "conversations": p["conversation_id"].n_unique(),
                     "stage_conversations": staged["conversation_id"].n_unique(),
                     "rejected_conversations": p.filter(~pl.col("ingested"))["conversation_id"].n_unique()}
    return out


def goals_met(s: dict) -> list[bool]:
    """Issue #16's goals on test: DSAT precision, DSAT recall, SAT precision."""
    t = s["test"]["all"]
    return [t["dsat"]["precision"] >= GOAL["dsat_precision"], t["dsat"]["recall"] >= GOAL["dsat_recall"],
            (t["sat"]["precision"] or 0) >= GOAL["sat_precision"]]


def headline(s: dict) -> str:
    rows = ["| part | turns | gold DSAT / SAT | DSAT P / R | SAT P / R | without ambiguous turns: DSAT P / R | SAT P / R |",
            "|---|---|---|---|---|---|---|"]
    names = {("test", "all"): "**test** (headline)", ("dev", "all"): "dev (tuned on)",
             ("test", "stage"): "test, the turns a params.yaml run judges", ("dev", "stage"): "dev, the turns a params.yaml run judges"}
    for part, which in (("test", "all"), ("dev", "all"), ("test", "stage"), ("dev", "stage")):
        a, u = s[part][which], s[part]["unambiguous" if which == "all" else "stage_unambiguous"]
        gold = f"{a['dsat']['tp'] + a['dsat']['fn']} / {a['sat']['tp'] + a['sat']['fn']}"
        rows.append(f"| {names[part, which]} | {a['turns']} | {gold} | {_pr(a['dsat'])} | {_pr(a['sat'])} | "
                    f"{_pr(u['dsat'])} | {_pr(u['sat'])} |")
    judged = {part: (s[part]["stage"]["turns"], s[part]["all"]["turns"], s[part]["stage_conversations"],
                     s[part]["conversations"]) for part in ("test", "dev")}
    cfg = stage_params().wildfeedback
    rejected = sum(s[part]["rejected_conversations"] for part in ("test", "dev"))
    rows.append("")
    rows.append(f"A run with params.yaml (`stages.wildfeedback.scan` on these conversations as ingest gives them: "
                f"`languages` [{', '.join(cfg.languages)}], identified by py3langid as the sample carries no language "
                f"tag; `min_user_turns` {cfg.min_user_turns}; `drop_flags`) judges " + " and ".join(
                    f"{t} of the {n} {part} turns ({c} of {m} conversations)" for part, (t, n, c, m) in judged.items())
                + f"; the others (other languages, shorter conversations, {rejected} conversation{'' if rejected == 1 else 's'} ingest rejects) "
                "never get a signal there. The first two rows score the rules on every labelled turn.")
    met = goals_met(s)
    rows.append("")
    rows.append(f"Goal on test (issue #16): DSAT precision >= {GOAL['dsat_precision']} "
                f"({'met' if met[0] else '**not met**'}), DSAT recall >= {GOAL['dsat_recall']} "
                f"({'met' if met[1] else '**not met**'}), SAT precision >= {GOAL['sat_precision']} "
                f"({'met' if met[2] else '**not met**'}).")
    return "\n".join(rows)


def gap(s: dict) -> str:
    """The DSAT turns the rules miss on test, by class and by language, in a sentence."""
    t = s["test"]["all"]
    parts = [f"{k} {v['n'] - v['found']} of {v['n']}" for k, v in t["kinds"].items() if v["n"] > v["found"]]
    other = t["languages"]["other"]
    return (f"Missed on test (DSAT turns the rules do not flag, by `kind`): {', '.join(parts)}; "
            f"by language: {other['fn']} of the {other['tp'] + other['fn']} DSAT turns not in English, "
            f"{t['languages']['en']['fn']} of the {t['languages']['en']['tp'] + t['languages']['en']['fn']} in English.")


def kinds(s: dict) -> str:
    rows = ["| how the DSAT shows (`kind`) | test: found / gold | recall | dev: found / gold | recall |", "|---|---|---|---|---|"]
    names = list(dict.fromkeys(list(s["test"]["all"]["kinds"]) + list(s["dev"]["all"]["kinds"])))
    for k in names:
        cells = []
        for part in ("test", "dev"):
            v = s[part]["all"]["kinds"].get(k)
            cells += [f"{v['found']} / {v['n']}", _f(v["recall"])] if v else ["0 / 0", "-"]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def categories(s: dict) -> str:
    rows = ["| category | test P / R (tp, fp, fn) | dev P / R (tp, fp, fn) |", "|---|---|---|"]
    names = sorted(set(s["test"]["all"]["categories"]) | set(s["dev"]["all"]["categories"]))
    for c in names:
        cells = []
        for part in ("test", "dev"):
            v = s[part]["all"]["categories"].get(c)
            cells.append(f"{_pr(v)} ({v['tp']}, {v['fp']}, {v['fn']})" if v else "-")
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def languages(s: dict) -> str:
    rows = ["| turns | test DSAT P / R (tp, fp, fn) | dev DSAT P / R (tp, fp, fn) |", "|---|---|---|"]
    for lang, name in (("en", "English"), ("other", "other languages (zh, ru, ar, fr, ja, es, ...)")):
        cells = [f"{_pr(v)} ({v['tp']}, {v['fp']}, {v['fn']})" for v in (s[p]["all"]["languages"][lang] for p in ("test", "dev"))]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def confidence(s: dict) -> str:
    rows = ["| rule confidence | test: turns, verdict right | dev: turns, verdict right |", "|---|---|---|"]
    for b in ("< 0.7", "0.7-0.8", "0.8-0.9", ">= 0.9"):
        if not any(b in s[part]["all"]["confidence"] for part in ("test", "dev")):
            continue
        cells = []
        for part in ("test", "dev"):
            v = s[part]["all"]["confidence"].get(b)
            cells.append(f"{v['turns']}, {_f(v['right'])}" if v else "0, -")
        rows.append(f"| {b} | " + " | ".join(cells) + " |")
    rows.append("")
    for part in ("test", "dev"):
        r, n = s[part]["all"]["routing"], s[part]["all"]["turns"]
        rows.append(f"- {part}: {r['turns']} of {n} turns ({r['turns'] / n:.0%}) have confidence < {r['below']}; they hold "
                    f"{r['dsat_missed_below']} of the {r['dsat_missed']} DSAT turns the rules miss and "
                    f"{r['dsat_false_below']} of their {r['dsat_false']} false DSAT verdicts; a model that judged those "
                    f"turns as the labellers did would bring DSAT to P / R {_pr(r['dsat_if_routed_right'])} "
                    "(`rules+llm`, `combine: add_recall`).")
    for part in ("test", "dev"):
        r, n = s[part]["stage"]["routing"], s[part]["stage"]["turns"]
        rows.append(f"- {part}, the turns a params.yaml run judges: {r['turns']} of {n} ({r['turns'] / n:.0%}) have "
                    f"confidence < {r['below']}; judged as the labellers did, DSAT P / R {_pr(r['dsat_if_routed_right'])}.")
    return "\n".join(rows)


def old_fixture(real: Path = REAL) -> str:
    from stages.wildfeedback_rules import detect

    labelled = load_labelled(real)
    rows = [r for r in labelled if not r["ambiguous"]]
    out = detect(pl.DataFrame({"text": [r["text"] for r in rows], "prev": [r["prev"] for r in rows]}))
    cells = []
    for pol in ("sat", "dsat"):
        gold, pred = pl.Series([r[pol] for r in rows]), out[pol]
        tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
        cells.append(f"{pol.upper()} {_f(tp / max(1, tp + fp))} / {_f(tp / max(1, tp + fn))}")
    return (f"Older fixture (`tests/fixtures/wildfeedback_labels.jsonl`, {len(labelled)} OpenAssistant / HH-RLHF turns the "
            f"first patterns were tuned on, scored on the {len(rows)} not marked ambiguous; not chatbot logs, not the "
            f"headline): {', '.join(cells)} (P / R).")


def readme_block(s: dict) -> str:
    """README.md's one line: the test part's figures and whether they meet issue #16's goals."""
    t = s["test"]["all"]
    return (f"On the {t['turns']} hand-labelled WildChat test turns (read only to report) the `rules` detector reaches "
            f"DSAT P / R {_pr(t['dsat'])} and SAT P / R {_pr(t['sat'])}; issue #16 asks DSAT P >= {GOAL['dsat_precision']} / "
            f"R >= {GOAL['dsat_recall']} and SAT P >= {GOAL['sat_precision']}: "
            f"{'met' if all(goals_met(s)) else '**not met**'}.")


def docs_block(s: dict, old: str) -> str:
    return "\n\n".join([headline(s), gap(s), kinds(s), confidence(s), old])


def bench_block(s: dict) -> str:
    return "\n\n".join([headline(s), gap(s), categories(s), languages(s), kinds(s), confidence(s)])


def blocks(s: dict, old: str) -> dict[str, str]:
    """What goes between the markers of each file that holds them (paths relative to the checkout)."""
    return {"README.md": readme_block(s), "docs/wildfeedback.md": headline(s),
            "docs/wildfeedback_signals.md": docs_block(s, old), "bench/README.md": bench_block(s)}


def replace_block(text: str, block: str, path: Path, mark: str = MARK) -> str:
    start, end = mark.format("start"), mark.format("end")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {start} ... {end} markers; add them where the tables belong")
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text)


def current_block(path: Path, mark: str = MARK) -> str:
    text = path.read_text(encoding="utf-8")
    m = re.search(re.escape(mark.format("start")) + r"\n(.*?)\n" + re.escape(mark.format("end")), text, re.S)
    return m.group(1) if m else ""


def dev_block(s: dict, part: str = "dev") -> str:
    """A dev part alone: overall, per category, per language and per kind (no test figure in it)."""
    a, u = s[part]["all"], s[part]["unambiguous"]
    gold = f"{a['dsat']['tp'] + a['dsat']['fn']} / {a['sat']['tp'] + a['sat']['fn']}"
    rows = [f"{part}: {a['turns']} turns, gold DSAT / SAT {gold}; DSAT P / R {_pr(a['dsat'])} "
            f"(tp {a['dsat']['tp']}, fp {a['dsat']['fp']}, fn {a['dsat']['fn']}); SAT P / R {_pr(a['sat'])} "
            f"(tp {a['sat']['tp']}, fp {a['sat']['fp']}, fn {a['sat']['fn']}); without ambiguous turns: "
            f"DSAT {_pr(u['dsat'])}, SAT {_pr(u['sat'])}"]
    rows.append("| category | dev P / R (tp, fp, fn) |\n|---|---|")
    rows += [f"| {c} | {_pr(v)} ({v['tp']}, {v['fp']}, {v['fn']}) |" for c, v in sorted(a["categories"].items())]
    for lang, v in a["languages"].items():
        rows.append(f"DSAT {lang}: {_pr(v)} ({v['tp']}, {v['fp']}, {v['fn']})")
    rows += [f"kind {k}: {v['found']} / {v['n']}" for k, v in a["kinds"].items()]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the tables in README.md, docs/wildfeedback.md, docs/wildfeedback_signals.md and bench/README.md")
    ap.add_argument("--smoke", action="store_true", help="print the tables only (the default; for the bench smoke test)")
    ap.add_argument("--part", choices=["dev", *DEV_HALVES],
                    help="score the dev part or one of its halves only (iterate on rules without seeing test)")
    args = ap.parse_args()
    if args.part:
        if args.write:
            raise SystemExit("--write needs both parts: run it without --part")
        print(dev_block(scores(parts=(args.part,)), args.part))
        return
    s, old = scores(), old_fixture()
    print(bench_block(s) + "\n\n" + old)
    if args.write and not args.smoke:
        for rel, block in blocks(s, old).items():
            path = ROOT / rel
            path.write_text(replace_block(path.read_text(encoding="utf-8"), block, path), encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
