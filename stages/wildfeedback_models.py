"""WildFeedback's model steps for pairs (METHODS.md section 1, steps 2-4; run in order by
``stages/wildfeedback_pairs.build_pairs``): the preference summary, the answer generated with it, the
checklist judge, and the judge's gate on built-in probes.

The checklist judge splits the preference into checklist items and judges chosen vs rejected in both
orders with ``engine.choose(prompts, ["A", "B"])``:

    >>> checklist("Be concise. Keep the code in Python; no classes")
    ['Be concise', 'Keep the code in Python', 'no classes']
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Params, Sampling, resolve_role
from pipeline.execute import map_batches, step_checkpoint
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import GenerationFailure, first_error
from pipeline.llm.chat import per_prompt
from pipeline.llm.structured import PrintableStr
from pipeline.prompt import copies_template, escape, fill
from stages.wildfeedback_common import prompt, render, window


class PreferenceSummary(BaseModel):
    """What the user wanted, and whether following it is reasonable and safe."""

    model_config = ConfigDict(extra="forbid")
    preference: PrintableStr = Field(max_length=400)
    reasonable: bool
    safe: bool


def checklist(preference: str) -> list[str]:
    """Checklist items: the preference split on sentences, semicolons, newlines and bullets (ours)."""
    parts = re.split(r"(?:[.!?;]\s+|\n+|^\s*[-*•]\s*)", preference.strip())
    return [p.strip(" .;-*•") for p in parts if p and p.strip(" .;-*•")]


def feedback_text(turns: list[dict], max_chars: int) -> str:
    """The summariser's FEEDBACK block: the feedback turn's text, or, for a chain of feedback and further
    attempts, the dialogue from the feedback turn on (``ROLE: text`` blocks)."""
    return turns[0]["content"][:max_chars] if len(turns) == 1 else render(turns, max_chars)


_SUMMARY_OUT = pa.schema([("preference", pa.string()), ("reasonable", pa.bool_()), ("safe", pa.bool_()),
                          ("error", pa.string())])


def summarize(batch: pa.Table, engine, *, sampling: Sampling, template_text: str, context_messages: int | None,
              max_chars: int) -> pa.Table:
    """Add preference / reasonable / safe (or error) to each candidate row."""
    rows = batch.to_pylist()
    prompts = [[{"role": "user", "content": fill(
        template_text, dialogue=render(window(r["prompt"], context_messages), max_chars),
        answer=r["answer"][:max_chars], feedback=feedback_text(r["feedback_turns"], max_chars))}]
               for r in rows]
    results = per_prompt(lambda ps: engine.generate(ps, n=1, sampling=sampling, schema=PreferenceSummary), prompts,
                         lambda e: [GenerationFailure(error=f"prompt too long: {e}", raw="", attempts=0)])
    out = []
    for (res,) in results:
        if isinstance(res, GenerationFailure):
            out.append({"preference": None, "reasonable": None, "safe": None, "error": res.error})
        else:
            out.append({"preference": res.preference.strip(), "reasonable": res.reasonable, "safe": res.safe,
                        "error": None})
    extra = pa.Table.from_pylist(out, schema=_SUMMARY_OUT)
    for name in extra.column_names:
        batch = batch.append_column(name, extra.column(name))
    return batch


def summary_drop_reason(phrases: list[str]) -> pl.Expr:
    """Why a summary is not used (null = keep); ``phrases``: the template's placeholder and examples."""
    return (
        pl.when(pl.col("error").is_not_null()).then(pl.lit("summary_failed"))
        .when(~pl.col("safe")).then(pl.lit("summary_unsafe"))
        .when(~pl.col("reasonable")).then(pl.lit("summary_unreasonable"))
        .when(pl.col("preference").str.strip_chars().str.len_chars() == 0).then(pl.lit("summary_empty"))
        .when(copies_template(pl.col("preference"), phrases)).then(pl.lit("summary_copies_template"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def respond(batch: pa.Table, engine, *, sampling: Sampling, system: str | None) -> pa.Table:
    """Add ``generated`` and its ``finish_reason``: one answer to ``prompt``; with ``system``, the preference
    goes (fenced) in the system message. A prompt the model cannot hold gets finish_reason ``prompt_too_long``;
    a sample the engine could not produce (a request the server refused) ``failed``."""
    prompts = []
    for r in batch.to_pylist():
        msgs = [dict(m) for m in r["prompt"]]
        if system is not None:
            sys_text = fill(system, preference=r["preference"])
            if msgs and msgs[0]["role"] == "system":  # keep the conversation's own system message after ours,
                # escaped: it comes with the log and must not forge a preference fence of its own
                sys_text += "\n\n" + escape(msgs.pop(0)["content"])
            msgs = [{"role": "system", "content": sys_text}, *msgs]
        prompts.append(msgs)
    outs = per_prompt(lambda ps: engine.generate(ps, n=1, sampling=sampling), prompts, lambda e: [None])
    texts = [None if o[0] is None or isinstance(o[0], GenerationFailure) else o[0].text for o in outs]
    reasons = ["prompt_too_long" if o[0] is None else "failed" if isinstance(o[0], GenerationFailure)
               else o[0].finish_reason for o in outs]
    return batch.append_column("generated", pa.array(texts, pa.string())).append_column(
        "finish_reason", pa.array(reasons, pa.string()))


def judge(batch: pa.Table, engine, *, template_text: str, context_messages: int | None, max_chars: int,
          errors: bool = False) -> pa.Table:
    """Add p_chosen_first / p_chosen_second: P(chosen) with chosen shown as A, then as B (NaN: the prompt
    does not fit the judge; null: the engine could not score it, e.g. a request the server refused); with
    ``errors`` (the gate's probes), ``error`` too: why the engine could not score either order, else null."""
    rows = batch.to_pylist()
    prompts = []
    for r in rows:
        items = "\n".join(f"- {c}" for c in checklist(r["preference"])) or "- (no explicit items)"
        dialogue = render(window(r["prompt"], context_messages), max_chars)
        for a, b in ((r["chosen"], r["rejected"]), (r["rejected"], r["chosen"])):
            prompts.append([{"role": "user", "content": fill(
                template_text, dialogue=dialogue, checklist=items, answer_a=a[:max_chars], answer_b=b[:max_chars])}])
    probs = per_prompt(lambda ps: engine.choose(ps, ["A", "B"]), prompts, lambda e: [math.nan, math.nan])
    # A row the engine could not score (FailedValue: a request the server refused) is null, not NaN (too long).
    first = [None if _refused(probs[2 * i]) else probs[2 * i][0] for i in range(len(rows))]
    second = [None if _refused(probs[2 * i + 1]) else probs[2 * i + 1][1] for i in range(len(rows))]
    out = batch.append_column("p_chosen_first", pa.array(first, pa.float64())).append_column(
        "p_chosen_second", pa.array(second, pa.float64()))
    if errors:
        why = [first_error(probs[2 * i] + probs[2 * i + 1]) for i in range(len(rows))]
        out = out.append_column("error", pa.array(why, pa.string()))
    return out


def judge_drop_reason() -> pl.Expr:
    """Why the checklist judge drops a pair (null = keep): it could not score it (``judge_failed``), the
    prompt does not fit it (``judge_prompt_too_long``), or chosen does not win both orders (``lost_in_judge``)."""
    p1, p2 = pl.col("p_chosen_first"), pl.col("p_chosen_second")
    return (pl.when(p1.is_null() | p2.is_null()).then(pl.lit("judge_failed"))
            .when(p1.is_nan() | p2.is_nan()).then(pl.lit("judge_prompt_too_long"))
            .when((p1 <= 0.5) | (p2 <= 0.5)).then(pl.lit("lost_in_judge")))


def _refused(probs: list[float]) -> bool:
    return first_error(probs) is not None


def judge_gate(params: Params, ckpt_root: Path | None = None) -> dict | None:
    """Run the checklist judge on ``pipeline/probes/wildfeedback_judge.jsonl`` (a preference, an answer that
    follows it and one that does not; each shown in both orders, so a constant or position-biased judge
    scores 0.5) through the same call and template as the real pairs. None when the judge is not used.
    An order the judge could not score (null: a refused request; NaN: the probe does not fit it) is wrong.
    With ``ckpt_root`` the probe calls resume from ``<ckpt_root>/gate_judge`` (keyed like the ``judge`` step)."""
    cfg = params.wildfeedback
    if not cfg.checklist_judge or not (cfg.summarize or (cfg.natural_revisions and cfg.judge_natural_revisions)):
        return None
    role = resolve_role(params.llm, cfg.roles.judge)
    probes = load_probes("wildfeedback_judge")
    table = pa.Table.from_pylist([{"prompt": p["prompt"], "chosen": p["follows"], "rejected": p["violates"],
                                   "preference": p["preference"]} for p in probes])
    ck = step_checkpoint(ckpt_root, "gate_judge", cfg, role) if ckpt_root is not None else None
    out = map_batches(table, judge, execution=params.execution, engine=role, checkpoint=ck,
                      desc="wildfeedback judge gate (judge)",
                      fn_kwargs={"template_text": prompt("judge"), "context_messages": cfg.context_messages,
                                 "max_chars": cfg.max_message_chars, "errors": True})
    first, second = ([p is not None and p > 0.5 for p in out[c].to_pylist()]  # NaN > 0.5 is False
                     for c in ("p_chosen_first", "p_chosen_second"))
    correct = [x for a, b in zip(first, second, strict=True) for x in (a, b)]
    return check_gate("wildfeedback", "judge", role.model, correct, min_accuracy=cfg.gates.judge,
                      key="wildfeedback.gates.judge", on_failure=params.execution.on_gate_failure,
                      detail={"pairs": len(probes), "orders": 2, "right_as_a": sum(first), "right_as_b": sum(second)},
                      errors=out["error"].to_pylist(), checkpoints=[ck])
