"""Agreement of the WildFeedback `llm` detector with the hand labels, on a sample of the WildChat test part.

    python bench/signals_llm.py --model smollm2 --n 120
    python bench/signals_llm.py --smoke     # 2 turns with the built-in tiny model: the path runs end to end

Runs the stage's own `llm` detector (stages.wildfeedback_detect: ``with_context`` -> ``llm_detect`` with
the ``wildfeedback_detect`` prompt, ``roles.detector`` sampling, ``context_messages`` and
``max_message_chars`` from params.yaml) on ``--n`` test turns (a fixed sample: the first by
sha256 of conversation id and turn), and prints precision / recall against the labels for the model, for
the rules on the same turns, and for the rules with the model's verdict on the turns whose rule
confidence is below ``ROUTE_BELOW`` (what a rules+llm detector could send it). CPU-bound for a local
model; a few hundred turns at most on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_params, resolve_role  # noqa: E402
from pipeline.llm import get_engine  # noqa: E402
from stages.wildfeedback_common import prompt  # noqa: E402
from stages.wildfeedback_detect import llm_detect, with_context  # noqa: E402
from stages.wildfeedback_rules import ROUTE_BELOW  # noqa: E402
from tests.wildfeedback_fixture import detect_wildchat, wildchat_conversations  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"


def _prf(gold: pl.Series, pred: pl.Series) -> str:
    tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
    p = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
    r = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
    return f"P {p} R {r} (tp {tp}, fp {fp}, fn {fn})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="llm.model for the detector role")
    ap.add_argument("--n", type=int, default=120, help="test turns to judge")
    ap.add_argument("--max-model-len", type=int, default=8192,
                    help="llm.max_model_len (the detect prompt with 6 context messages of 1,500 chars needs ~3k tokens)")
    ap.add_argument("--context-messages", type=int, help="dialogue messages shown (default: params.yaml)")
    ap.add_argument("--max-chars", type=int, help="each shown message cut to this (default: params.yaml)")
    ap.add_argument("--smoke", action="store_true", help="2 turns, the built-in tiny model, short context")
    args = ap.parse_args()
    if args.smoke:
        args.model, args.n, args.context_messages, args.max_chars = "tiny", 2, 1, 200
    params = load_params(ROOT / "params.yaml")
    cfg = params.wildfeedback.model_copy(update={
        k: v for k, v in (("context_messages", args.context_messages), ("max_message_chars", args.max_chars)) if v})
    llm = params.llm.model_copy(update={"model": args.model, "max_model_len": args.max_model_len})
    role = resolve_role(llm, cfg.roles.detector)

    labelled = detect_wildchat(REAL).filter(pl.col("split") == "test")
    key = pl.concat_str("conversation_id", pl.col("user_turn").cast(pl.String), separator="#")
    order = [hashlib.sha256(k.encode()).hexdigest() for k in labelled.select(key).to_series()]
    sample = labelled.with_columns(pl.Series("_h", order)).sort("_h").head(args.n).drop("_h")
    conv = wildchat_conversations(REAL, set(sample["conversation_id"]))
    turns = sample.select("conversation_id", "user_turn", (pl.col("user_turn") - 1).alias("target_turn"))
    table = with_context(turns, conv, cfg.context_messages).select(
        "conversation_id", "user_turn", "text", "prev", "context").to_arrow()

    engine = get_engine(role)
    t0 = time.perf_counter()
    parts = []
    for i in range(0, table.num_rows, role.batch_size):
        parts.append(pl.from_arrow(llm_detect(table.slice(i, role.batch_size), engine, sampling=role.sampling,
                                              template_text=prompt("detect"), max_chars=cfg.max_message_chars,
                                              context_messages=cfg.context_messages)))
        print(f"  judged {min(i + role.batch_size, table.num_rows)} / {table.num_rows} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    judged = pl.concat(parts)
    seconds = time.perf_counter() - t0
    rows = sample.join(judged.select("conversation_id", "user_turn", "ok", m_sat="sat", m_dsat="dsat"),
                       on=["conversation_id", "user_turn"], how="left")
    ok = rows["ok"].fill_null(False)
    print(f"context_messages {cfg.context_messages}, max_message_chars {cfg.max_message_chars}, "
          f"max_new_tokens {role.sampling.max_new_tokens}")
    print(f"model {args.model}: {rows.height} test turns ({int(rows['dsat'].sum())} DSAT, {int(rows['sat'].sum())} SAT "
          f"by the labels) in {seconds:.0f} s; valid judgments {int(ok.sum())} / {rows.height}")
    use = (rows["confidence"] < ROUTE_BELOW) & ok
    m_sat, m_dsat = rows["m_sat"].fill_null(False), rows["m_dsat"].fill_null(False)
    for name, sat, dsat in (
        ("llm (a failed judgment counts as no signal)", m_sat, m_dsat),
        ("rules", rows["p_sat"], rows["p_dsat"]),
        (f"rules, with the model's verdict where rule confidence < {ROUTE_BELOW} ({int(use.sum())} turns)",
         use.zip_with(m_sat, rows["p_sat"]), use.zip_with(m_dsat, rows["p_dsat"])),
    ):
        print(f"  {name}: DSAT {_prf(rows['dsat'], dsat)}; SAT {_prf(rows['sat'], sat)}")

if __name__ == "__main__":
    main()
