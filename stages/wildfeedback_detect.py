"""WildFeedback's model detector, and how its verdicts combine with the rules' (METHODS.md section 1, step 1).

The model reads the dialogue before the judged assistant turn (``context_messages``; all of it by default,
as the paper does), the judged turn and the user's reply, each fenced, with the rubric's definitions and
short examples (``pipeline/prompts/wildfeedback_detect.txt``), and returns a ``FeedbackJudgment``. A prompt
that does not fit the model leaves out the dialogue's oldest messages (then shortens the judged turn and the
reply) until it does (``fitted_prompt``), counted, rather than failing.

With ``detector: rules+llm`` the ``combine`` rule decides who has the last word:

- ``add_recall`` (default): confident rule verdicts stand; the model judges the turns the rules are unsure
  about (rule ``confidence`` below ``rule_confidence``; while the rules give no confidence, every rule
  verdict counts as confident) and a ``recall_sample`` of the turns the rules left unflagged. The model
  can add the signals the rules miss, never wipe out their confident hits.
- ``llm_overrides``: every rule hit and the recall sample go to the model, whose verdict replaces the rules'.
- ``agree``: the same turns go to the model; a rule signal survives only where the model agrees.

A turn the model fails on (invalid output after retries, a prompt a server refused as too long) keeps the
rules' verdict and is recorded in the rejects. A rationale that copies the template's placeholder is
blanked (the verdict is kept, counted as ``rationale_copied_template``): the gate, not the rationale,
decides whether the model's verdicts are worth using.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipeline import ids
from pipeline.budget import shorten
from pipeline.config import Params, Sampling, Wildfeedback, resolve_role
from pipeline.execute import map_batches, step_checkpoint
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import GenerationFailure
from pipeline.llm.chat import per_prompt, token_fit
from pipeline.llm.structured import PrintableStr
from pipeline.prompt import copies_template, fill, template_phrases
from stages.wildfeedback_common import prompt, render, window
from stages.wildfeedback_rules import DSAT_CATEGORIES, SAT_CATEGORIES

SatCategory = Literal[tuple(SAT_CATEGORIES)]  # type: ignore[valid-type]
DsatCategory = Literal[tuple(DSAT_CATEGORIES)]  # type: ignore[valid-type]


class FeedbackJudgment(BaseModel):
    """The paper's structured annotation of one user turn (validated against the category lists). The
    rationale comes first, so the verdict is written after the reason (ours)."""

    model_config = ConfigDict(extra="forbid")
    rationale: PrintableStr = Field(max_length=400)
    sat: bool
    sat_categories: list[SatCategory] = Field(max_length=len(SAT_CATEGORIES))
    dsat: bool
    dsat_categories: list[DsatCategory] = Field(max_length=len(DSAT_CATEGORIES))
    refers_to_preceding: bool


# --- which turns the model sees ---------------------------------------------------------------------


def recall_sample(turns: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    """A seeded, batch-independent random choice of turns: ``ids.hash64`` (xxh3) of (conversation_id,
    user_turn), stable across runs, machines and polars versions, which pins the sample across reruns.
    """
    if fraction <= 0:
        return pl.Series([False] * turns.height, dtype=pl.Boolean)
    h = ids.hash64("conversation_id", pl.col("user_turn").cast(pl.String), seed=seed)
    return turns.select((h % 1_000_003 < int(fraction * 1_000_003)).alias("s"))["s"]


def route(turns: pl.DataFrame, cfg: Wildfeedback) -> pl.Series:
    """``to_model``: the turns the model judges (see the module doc for each ``detector`` / ``combine``)."""
    if cfg.detector == "rules":
        return pl.Series("to_model", [False] * turns.height, dtype=pl.Boolean)
    if cfg.detector == "llm":
        return pl.Series("to_model", [True] * turns.height, dtype=pl.Boolean)
    hit = turns["sat"] | turns["dsat"]
    sample = recall_sample(turns, cfg.recall_sample, cfg.seed)
    if cfg.combine == "add_recall":
        uncertain = turns["confidence"].fill_null(1.0) < cfg.rule_confidence
        return (uncertain | (sample & ~hit)).alias("to_model")
    return (hit | sample).alias("to_model")


# --- the model's judgment -----------------------------------------------------------------------------


def with_context(turns: pl.DataFrame, conv: pl.DataFrame, n_messages: int | None) -> pl.DataFrame:
    """Add ``text`` (the user turn), ``prev`` (the judged assistant turn) and ``context`` (the messages
    before the judged turn: the last ``n_messages``, or all of them when None) from the conversations."""
    start = pl.lit(0) if n_messages is None else pl.max_horizontal(pl.col("target_turn") - n_messages, pl.lit(0))
    content = lambda i: pl.col("messages").list.get(i).struct.field("content")  # noqa: E731
    return turns.drop("text", "prev", strict=False).join(
        conv.select("conversation_id", "messages"), on="conversation_id", how="left"
    ).with_columns(
        content(pl.col("user_turn")).alias("text"), content(pl.col("target_turn")).alias("prev"),
        pl.col("messages").list.slice(start, pl.col("target_turn") - start).alias("context"),
    ).drop("messages")


_LLM_OUT = pa.schema([
    ("conversation_id", pa.string()), ("user_turn", pa.int64()), ("ok", pa.bool_()), ("sat", pa.bool_()),
    ("dsat", pa.bool_()), ("sat_categories", pa.list_(pa.string())), ("dsat_categories", pa.list_(pa.string())),
    ("refers_to_preceding", pa.bool_()), ("rationale", pa.string()), ("rationale_copied", pa.bool_()),
    ("error", pa.string()), ("context_left_out", pa.int64()),
    ("turn_shortened", pa.bool_()),
])


ANSWER_TOKENS = 256  # context kept free for the judgment (params.yaml's detector role: max_new_tokens 256)


def detect_prompt(row: dict, template_text: str, max_chars: int, context: list[dict], left_out: int = 0) -> list[dict]:
    """The chat prompt for one turn: every user- or model-written text escaped inside its fence; ``context``
    = the dialogue messages shown, after ``left_out`` earlier ones that did not fit (said in the fence)."""
    shown = render(context, max_chars)
    if left_out:
        shown = f"[{left_out} earlier message{'s' if left_out > 1 else ''} not shown]" + ("\n\n" + shown if shown else "")
    return [{"role": "user", "content": fill(
        template_text, dialogue=shown or "(none)", assistant=row["prev"][:max_chars], user=row["text"][:max_chars])}]


def fitted_prompt(row: dict, template_text: str, max_chars: int, context_messages: int | None,
                  fits) -> tuple[list[dict], int, bool]:
    """(prompt, messages left out, turn shortened): the dialogue window (``context_messages``, all of it by
    default) with its oldest messages left out until the prompt fits the model (``fits``, from ``token_fit``;
    None: no local count, the whole window is sent and the engine refuses what does not fit). When even no
    dialogue is too long, the judged turn and the reply are shortened too, longest first (``pipeline.budget``)."""
    context = window(row["context"], context_messages)
    full = detect_prompt(row, template_text, max_chars, context)
    if fits is None or fits(full):
        return full, 0, False
    lo, hi = 0, len(context) - 1  # the most recent messages that fit: fewer messages, shorter prompt
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(detect_prompt(row, template_text, max_chars, context[-mid:], len(context) - mid)):
            lo = mid
        else:
            hi = mid - 1
    kept, left_out = context[len(context) - lo:], len(context) - lo
    short = detect_prompt(row, template_text, max_chars, kept, left_out)
    if fits(short):
        return short, left_out, False

    def texts_fit(d: dict[str, str]) -> bool:
        return fits(detect_prompt({**row, "prev": d["assistant"], "text": d["user"]}, template_text, max_chars, [],
                                  left_out))

    texts, _ = shorten("{assistant}\n{user}", 2 * max_chars + 1, texts_fit, assistant=row["prev"][:max_chars],
                       user=row["text"][:max_chars])
    return detect_prompt({**row, "prev": texts["assistant"], "text": texts["user"]}, template_text, max_chars, [],
                         left_out), left_out, True


def llm_detect(batch: pa.Table, engine, *, sampling: Sampling, template_text: str, max_chars: int,
               context_messages: int | None = None) -> pa.Table:
    """Ask the model for a ``FeedbackJudgment`` per turn; failures come back as rows with ``ok`` false."""
    rows = batch.to_pylist()
    fits = token_fit(engine, min(sampling.max_new_tokens, ANSWER_TOKENS), judge=True)
    fitted = [fitted_prompt(r, template_text, max_chars, context_messages, fits) for r in rows]
    prompts = [p for p, _, _ in fitted]
    results = per_prompt(lambda ps: engine.generate(ps, n=1, sampling=sampling, schema=FeedbackJudgment), prompts,
                         lambda e: [GenerationFailure(error=f"prompt too long: {e}", raw="", attempts=0)])
    phrases = template_phrases(template_text)
    out = []
    for r, (res,), (_, left_out, cut) in zip(rows, results, fitted, strict=True):
        base = {"conversation_id": r["conversation_id"], "user_turn": r["user_turn"], "context_left_out": left_out,
                "turn_shortened": cut}
        if isinstance(res, GenerationFailure):
            out.append({**base, "ok": False, "sat": False, "dsat": False, "sat_categories": [], "dsat_categories": [],
                        "refers_to_preceding": False, "rationale": None, "rationale_copied": False,
                        "error": f"{res.error} (raw: {res.raw[:200]!r})"})
            continue
        refers = res.refers_to_preceding  # a signal is about the turn just before, by definition
        copied = bool(copies_template(pl.Series([res.rationale]), phrases)[0])
        out.append({**base, "ok": True, "sat": res.sat and refers, "dsat": res.dsat and refers,
                    "sat_categories": list(dict.fromkeys(res.sat_categories)) if res.sat and refers else [],
                    "dsat_categories": list(dict.fromkeys(res.dsat_categories)) if res.dsat and refers else [],
                    "refers_to_preceding": refers, "rationale": None if copied else res.rationale,
                    "rationale_copied": copied, "error": None})
    return pa.Table.from_pylist(out, schema=_LLM_OUT)


# --- combining the verdicts -----------------------------------------------------------------------------

SIGNAL_COLUMNS = ["conversation_id", "user_turn", "target_turn", "sat", "dsat", "sat_categories", "dsat_categories",
                  "detector", "rationale", "confidence"]


def combine(turns: pl.DataFrame, judged: pl.DataFrame | None, detector: str,
            mode: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Final signals from the rule verdicts (``turns``) and the model's (``judged``).

    Returns (signals in the contract's columns, failures: conversation_id, source, user_turn, m_error).
    In ``llm`` mode a turn the model failed on has no verdict and goes to the failures frame only.
    """
    if judged is None or judged.height == 0:
        judged = pl.DataFrame(schema=pl.from_arrow(_LLM_OUT.empty_table()).schema)
    j = judged.rename({c: f"m_{c}" for c in judged.columns if c not in ("conversation_id", "user_turn")})
    t = turns.join(j, on=["conversation_id", "user_turn"], how="left")
    ok = pl.col("m_ok").fill_null(False)
    rules_note = pl.when(pl.col("rationale").is_not_null()).then(pl.lit(" [rules: ") + pl.col("rationale") + "]")
    if detector == "rules+llm" and mode == "agree":
        keep_sat, keep_dsat = pl.col("sat") & pl.col("m_sat"), pl.col("dsat") & pl.col("m_dsat")
        empty = pl.lit([], dtype=pl.List(pl.String))
        final = [
            pl.when(ok).then(keep_sat).otherwise(pl.col("sat")).alias("sat"),
            pl.when(ok).then(keep_dsat).otherwise(pl.col("dsat")).alias("dsat"),
            pl.when(ok & ~keep_sat).then(empty).otherwise(pl.col("sat_categories")).alias("sat_categories"),
            pl.when(ok & ~keep_dsat).then(empty).otherwise(pl.col("dsat_categories")).alias("dsat_categories"),
            pl.when(ok).then(pl.lit("rules+llm")).otherwise(pl.col("detector")).alias("detector"),
            pl.when(ok).then(pl.col("rationale").fill_null("") + " [llm: " + pl.col("m_rationale").fill_null("") + "]")
            .otherwise(pl.col("rationale")).alias("rationale"),
        ]
    else:  # the model's verdict where it answered (add_recall only sends the turns it may decide)
        final = [pl.when(ok).then(pl.col(f"m_{c}")).otherwise(pl.col(c)).alias(c)
                 for c in ("sat", "dsat", "sat_categories", "dsat_categories")]
        final += [
            pl.when(ok).then(pl.lit("llm")).otherwise(pl.col("detector")).alias("detector"),
            pl.when(ok).then(pl.col("m_rationale").fill_null("") + rules_note.fill_null(""))
            .otherwise(pl.col("rationale")).alias("rationale"),
            pl.when(ok).then(pl.lit(None, dtype=pl.Float64)).otherwise(pl.col("confidence")).alias("confidence"),
        ]
    signals = t.with_columns(final)
    failed = t.filter(pl.col("m_ok").is_not_null() & ~ok).select("conversation_id", "source", "user_turn", "m_error")
    if detector == "llm":
        signals = signals.filter(ok)
    return signals.select(SIGNAL_COLUMNS), failed


def detector_stats(turns: pl.DataFrame, judged: pl.DataFrame | None, signals: pl.DataFrame) -> dict:
    """What the model saw and what it changed, for the metrics."""
    sent = turns.filter(pl.col("to_model"))
    hit = pl.col("sat") | pl.col("dsat")
    stats = {"sent_to_model": sent.height, "sent_rule_hits": sent.filter(hit).height,
             "sent_rule_negatives": sent.filter(~hit).height, "model_ok": 0, "model_failures": 0,
             "recall_sample_model_positive": 0, "rationale_copied_template": 0, "model_added": 0, "model_cleared": 0,
             "context_shortened": 0, "turn_shortened": 0}
    if judged is None or judged.height == 0:
        return stats
    negatives = sent.filter(~hit).select("conversation_id", "user_turn")
    before = turns.select("conversation_id", "user_turn", hit.alias("_before"))
    after = signals.select("conversation_id", "user_turn", hit.alias("_after")).join(
        before, on=["conversation_id", "user_turn"])
    stats.update(
        model_ok=int(judged["ok"].sum()), model_failures=int((~judged["ok"]).sum()),
        recall_sample_model_positive=judged.join(negatives, on=["conversation_id", "user_turn"]).filter(
            pl.col("ok") & (pl.col("sat") | pl.col("dsat"))).height,  # turns the rules missed that the model flags
        rationale_copied_template=int(judged["rationale_copied"].sum()),
        context_shortened=int((judged["context_left_out"] > 0).sum()),  # dialogue cut to fit max_model_len
        turn_shortened=int(judged["turn_shortened"].sum()),  # and the judged turn / reply too
        model_added=after.filter(pl.col("_after") & ~pl.col("_before")).height,
        model_cleared=after.filter(~pl.col("_after") & pl.col("_before")).height,
    )
    return stats


# --- the gate ---------------------------------------------------------------------------------------------


def detector_gate(params: Params, ckpt_root: Path | None = None) -> dict | None:
    """Run the detector on ``pipeline/probes/wildfeedback_detector.jsonl`` (clear SAT, DSAT, both and
    neither turns, equally many: two yes/no questions per turn, so a constant judge scores 0.5) through the
    same engine call and template as the real turns; ``check_gate`` acts on the result. None when the
    stage runs the rules alone. With ``ckpt_root`` the probe calls resume from ``<ckpt_root>/gate_detect``
    (keyed like the ``detect`` step)."""
    cfg = params.wildfeedback
    if cfg.detector == "rules":
        return None
    role = resolve_role(params.llm, cfg.roles.detector)
    probes = load_probes("wildfeedback_detector")
    table = pa.Table.from_pylist([
        {"conversation_id": p["id"], "user_turn": len(p["context"]) + 1, "text": p["user"], "prev": p["assistant"],
         "context": p["context"]} for p in probes])
    ck = step_checkpoint(ckpt_root, "gate_detect", cfg, role) if ckpt_root is not None else None
    out = map_batches(table, llm_detect, execution=params.execution, engine=role, checkpoint=ck,
                      desc="wildfeedback detector gate (detector)",
                      fn_kwargs={"sampling": role.sampling, "template_text": prompt("detect"),
                                 "max_chars": cfg.max_message_chars, "context_messages": cfg.context_messages})
    correct, wrong, rows = [], [], out.to_pylist()
    for p, r in zip(probes, rows, strict=True):
        right = [r["ok"] and r["sat"] == p["sat"], r["ok"] and r["dsat"] == p["dsat"]]
        correct += right
        if not all(right):
            wrong.append(p["id"])
    return check_gate("wildfeedback", "detector", role.model, correct, min_accuracy=cfg.gates.detector,
                      key="wildfeedback.gates.detector", on_failure=params.execution.on_gate_failure,
                      detail={"turns": len(probes), "questions_per_turn": 2, "failures": sum(not r["ok"] for r in rows),
                              "turns_wrong": wrong},
                      errors=[None if r["ok"] else r["error"] for r in rows], checkpoints=[ck],
                      contrasts={q: question_accuracy(probes, correct[i::2], q) for i, q in enumerate(("sat", "dsat"))})


def question_accuracy(probes: list[dict], right: list[bool], question: str) -> float:
    """Balanced accuracy of one of the detector's two questions on its probes (mean of the right share on the
    turns where the answer is yes and where it is no; chance 0.5). The gate reads the weaker question: a
    detector right on every SAT question and answering DSAT at random scored 0.75 of all answers, and DSAT
    signals are what the pairs come from.

    >>> question_accuracy([{"dsat": True}, {"dsat": False}], [True, True], "dsat")
    1.0
    """
    by = {True: [], False: []}
    for p, ok in zip(probes, right, strict=True):
        by[bool(p[question])].append(ok)
    shares = [sum(v) / len(v) for v in by.values() if v]
    return sum(shares) / len(shares) if shares else 0.0
