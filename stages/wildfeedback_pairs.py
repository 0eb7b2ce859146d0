"""WildFeedback steps 2-4: preference summaries, pairs, checklist judge (METHODS.md section 1).

For a DSAT signal on assistant turn t: prompt = the dialogue before t, rejected = turn t, and the
model summarises what the user wanted from the feedback turn into a preference ("be concise").
Summaries the model marks unreasonable or unsafe, or that copy the template's example, are dropped with
the reason counted. The chosen answer is generated for the same prompt with the preference and a safety
instruction in the system message (by the ``expert`` role, or the ``policy`` role on-policy). Natural
revision pairs need no model: a DSAT turn t whose revision t+2 earns SAT gives (t+2 chosen, t rejected).
Optional SAT pairs: the liked turn as chosen against a policy sample. Generated pairs go through the
checklist judge: the preference split into checklist items, chosen vs rejected judged in both orders
with ``engine.choose(prompts, ["A", "B"])``; a pair survives only if chosen wins both.

    >>> checklist("Be concise. Keep the code in Python; no classes")
    ['Be concise', 'Keep the code in Python', 'no classes']

Every pair's chosen must fit its prompt (``stages/wildfeedback_fit.py``): a revision or an expert answer
that acknowledges, refers to or quotes feedback the prompt does not contain is dropped, and so are
generated answers cut off at ``max_new_tokens`` and pairs whose two sides are the same text. Each drop is
counted by reason in the metrics, and the dropped summaries and pairs are kept, with their texts, in
``data/wildfeedback/rejects`` (``raw`` holds the JSON).

With the built-in random ``tiny`` model the judge's A/B probabilities are noise, so a generated pair
survives both orders about a quarter of the time and summaries pass the reasonable/safe flags by
chance; ``dvc repro`` on the samples then yields mostly natural revision pairs.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import LLM, Params, Sampling, fingerprint, resolve_role
from pipeline.execute import Checkpoint, map_batches
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import GenerationFailure
from pipeline.prompt import copies_template, fill, template_phrases
from pipeline.records import empty_table, to_table
from stages.wildfeedback_common import (
    CHECKPOINTS,
    output_fingerprint,
    per_prompt,
    prompt,
    reject,
    render,
    window,
)
from stages.wildfeedback_fit import pair_drop_reason, prompt_text
from stages.wildfeedback_output import pair_frame, pairs_table


class PreferenceSummary(BaseModel):
    """What the user wanted, and whether following it is reasonable and safe."""

    model_config = ConfigDict(extra="forbid")
    preference: str = Field(max_length=400)
    reasonable: bool
    safe: bool


def checklist(preference: str) -> list[str]:
    """Checklist items: the preference split on sentences, semicolons, newlines and bullets (ours)."""
    parts = re.split(r"(?:[.!?;]\s+|\n+|^\s*[-*•]\s*)", preference.strip())
    return [p.strip(" .;-*•") for p in parts if p and p.strip(" .;-*•")]


def feedback_ends(signals: pl.DataFrame) -> pl.DataFrame:
    """``(conversation_id, target_turn, last_feedback_turn)`` per DSAT signal: the user's feedback on an answer
    goes on while each next attempt (the assistant turn after a DSAT feedback turn) draws DSAT again, so the
    last feedback turn of that chain (METHODS.md §1 step 2: the preference comes from "the feedback turn(s)
    that follow"). One vectorised join per link of the longest chain.

    >>> s = pl.DataFrame({"conversation_id": ["c"] * 3, "target_turn": [1, 3, 5], "user_turn": [2, 4, 6],
    ...                   "dsat": [True, True, False]})
    >>> feedback_ends(s).sort("target_turn").rows()
    [('c', 1, 4), ('c', 3, 4)]
    """
    dsat = signals.filter(pl.col("dsat")).select("conversation_id", "target_turn", "user_turn")
    nxt = dsat.select("conversation_id", (pl.col("target_turn") - 1).alias("_end"), pl.col("user_turn").alias("_next"))
    chain = dsat.select("conversation_id", "target_turn", _end=pl.col("user_turn"))
    while True:  # the feedback turn ``_end`` is followed by an attempt at _end + 1 whose feedback is DSAT too
        step = chain.join(nxt, on=["conversation_id", "_end"], how="left")
        if step.get_column("_next").is_null().all():
            return chain.rename({"_end": "last_feedback_turn"})
        chain = step.select("conversation_id", "target_turn", _end=pl.coalesce("_next", "_end"))


def summary_candidates(signals: pl.DataFrame, convs: pl.DataFrame, polarities: list[str]) -> pl.DataFrame:
    """Signals to summarise, with prompt (messages before the judged turn), answer, the feedback turn's text
    (``feedback``) and ``feedback_turns``: the messages the summariser reads as the user's feedback. For a DSAT
    signal that is the feedback turn up to the last turn of its chain (``feedback_ends``: "still too long"
    after a revision is the same user's preference for the same request), with the attempts in between;
    for a SAT signal the feedback turn alone."""
    want = pl.lit(False)
    if "dsat" in polarities:
        want = want | pl.col("dsat")
    if "sat" in polarities:
        want = want | (pl.col("sat") & ~pl.col("dsat"))
    rows = signals.filter(want).join(convs.select("conversation_id", "source", "messages"), on="conversation_id")
    rows = rows.join(feedback_ends(signals), on=["conversation_id", "target_turn"], how="left")
    last = pl.when(pl.col("dsat")).then(pl.col("last_feedback_turn")).otherwise(pl.col("user_turn"))
    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn",
        pl.when(pl.col("dsat")).then(pl.lit("dsat")).otherwise(pl.lit("sat")).alias("polarity"),
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        pl.col("messages").list.get(pl.col("target_turn")).struct.field("content").alias("answer"),
        pl.col("messages").list.get(pl.col("user_turn")).struct.field("content").alias("feedback"),
        pl.col("messages").list.slice(pl.col("user_turn"), last - pl.col("user_turn") + 1).alias("feedback_turns"),
    ).sort("conversation_id", "target_turn")


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
            if msgs and msgs[0]["role"] == "system":  # keep the conversation's own system message after ours
                sys_text += "\n\n" + msgs.pop(0)["content"]
            msgs = [{"role": "system", "content": sys_text}, *msgs]
        prompts.append(msgs)
    outs = per_prompt(lambda ps: engine.generate(ps, n=1, sampling=sampling), prompts, lambda e: [None])
    texts = [None if o[0] is None or isinstance(o[0], GenerationFailure) else o[0].text for o in outs]
    reasons = ["prompt_too_long" if o[0] is None else "failed" if isinstance(o[0], GenerationFailure)
               else o[0].finish_reason for o in outs]
    return batch.append_column("generated", pa.array(texts, pa.string())).append_column(
        "finish_reason", pa.array(reasons, pa.string()))


def judge(batch: pa.Table, engine, *, template_text: str, context_messages: int | None, max_chars: int) -> pa.Table:
    """Add p_chosen_first / p_chosen_second: P(chosen) with chosen shown as A, then as B (NaN: the prompt
    does not fit the judge; null: the engine could not score it, e.g. a request the server refused)."""
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
    return batch.append_column("p_chosen_first", pa.array(first, pa.float64())).append_column(
        "p_chosen_second", pa.array(second, pa.float64()))


def judge_drop_reason() -> pl.Expr:
    """Why the checklist judge drops a pair (null = keep): it could not score it (``judge_failed``), the
    prompt does not fit it (``judge_prompt_too_long``), or chosen does not win both orders (``lost_in_judge``)."""
    p1, p2 = pl.col("p_chosen_first"), pl.col("p_chosen_second")
    return (pl.when(p1.is_null() | p2.is_null()).then(pl.lit("judge_failed"))
            .when(p1.is_nan()).then(pl.lit("judge_prompt_too_long"))
            .when((p1 <= 0.5) | (p2 <= 0.5)).then(pl.lit("lost_in_judge")))


def _refused(probs: list[float]) -> bool:
    return any(isinstance(getattr(p, "error", None), str) for p in probs)


def natural_revisions(signals: pl.DataFrame, convs: pl.DataFrame) -> pl.DataFrame:
    """DSAT on turn t, revision t+2 judged SAT by the next user turn: rows with prompt, chosen, rejected, preference.

    ``feedback_sat`` says the feedback turn is SAT as well as DSAT ("lol. Another one?"): the user liked the
    answer they asked to redo, so it is no rejected answer; `pair_drop_reason` drops such a candidate
    (``mixed_feedback``), counted, as a SAT turn that is also DSAT never vouches for the revision."""
    dsat = signals.filter(pl.col("dsat")).select("conversation_id", "target_turn", "user_turn",
                                                 pl.col("sat").alias("feedback_sat"))
    sat = signals.filter(pl.col("sat") & ~pl.col("dsat")).select(
        "conversation_id", (pl.col("target_turn") - 2).alias("target_turn"), pl.col("user_turn").alias("sat_turn"))
    rows = dsat.join(sat, on=["conversation_id", "target_turn"]).join(
        convs.select("conversation_id", "source", "messages"), on="conversation_id")

    def content(i: pl.Expr) -> pl.Expr:
        return pl.col("messages").list.get(i).struct.field("content")

    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn", "sat_turn", "feedback_sat",
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        content(pl.col("target_turn") + 2).alias("chosen"),
        content(pl.col("target_turn")).alias("rejected"),
        content(pl.col("user_turn")).alias("preference"),  # the user's correction is the preference
    ).sort("conversation_id", "target_turn")


def judge_gate(params: Params) -> dict | None:
    """Run the checklist judge on ``pipeline/probes/wildfeedback_judge.jsonl`` (a preference, an answer that
    follows it and one that does not; each shown in both orders, so a constant or position-biased judge
    scores 0.5) through the same call and template as the real pairs. None when the judge is not used."""
    cfg = params.wildfeedback
    if not cfg.checklist_judge or not (cfg.summarize or (cfg.natural_revisions and cfg.judge_natural_revisions)):
        return None
    role = resolve_role(params.llm, cfg.roles.judge)
    probes = load_probes("wildfeedback_judge")
    table = pa.Table.from_pylist([{"prompt": p["prompt"], "chosen": p["follows"], "rejected": p["violates"],
                                   "preference": p["preference"]} for p in probes])
    out = map_batches(table, judge, execution=params.execution, engine=role, desc="wildfeedback judge gate (judge)",
                      fn_kwargs={"template_text": prompt("judge"), "context_messages": cfg.context_messages,
                                 "max_chars": cfg.max_message_chars})
    first, second = out["p_chosen_first"].to_pylist(), out["p_chosen_second"].to_pylist()
    correct = [x for a, b in zip(first, second, strict=True) for x in (a > 0.5, b > 0.5)]
    return check_gate("wildfeedback", "judge", role.model, correct, min_accuracy=cfg.gates.judge,
                      key="wildfeedback.gates.judge", on_failure=params.execution.on_gate_failure,
                      detail={"pairs": len(probes), "orders": 2, "right_as_a": sum(a > 0.5 for a in first),
                              "right_as_b": sum(b > 0.5 for b in second)})


# --- driver ---------------------------------------------------------------------------------------


class _Book:
    """Drops by reason (metrics) and the rejects rows that keep each dropped row's texts."""

    def __init__(self):
        self.drops, self.counts, self.rejects = Counter(), Counter(), []

    def drop(self, df: pl.DataFrame, prefix: str, reason: str, texts: list[str]) -> None:
        """Count and keep every row of ``df``; the reason is ``prefix`` + the row's ``reason`` column value."""
        for r in df.to_dicts():
            why = f"{prefix}{r[reason]}"
            self.drops[why] += 1
            self.rejects.append(reject(r["source"], r["user_turn"], r["conversation_id"], why,
                                       **{k: r.get(k) for k in texts}))


_PAIR_TEXTS = ["prompt", "chosen", "rejected", "preference", "chosen_finish_reason", "rejected_finish_reason"]


def _run(table: pa.Table, fn, params: Params, role: LLM, step: str, who: str, ckpt_root: Path, **kwargs) -> pl.DataFrame:
    """``fn`` over ``table`` with the engine of role ``who`` (``role``: its config), checkpointed per ``step``."""
    ck = Checkpoint(ckpt_root / step, fingerprint(params.wildfeedback, role, {"step": step}))
    out = map_batches(table, fn, execution=params.execution, engine=role, checkpoint=ck,
                      desc=f"wildfeedback {step} ({who})", fn_kwargs=kwargs)
    return pl.from_arrow(out)


def _screen(df: pl.DataFrame, kind: str, book: _Book) -> pl.DataFrame:
    """Drop (count, keep in rejects) the candidate pairs of ``kind`` that fail ``pair_drop_reason``."""
    for c in ("chosen_finish_reason", "rejected_finish_reason"):
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(c))
    df = df.with_columns(prompt_text().alias("_prompt_text")).with_columns(pair_drop_reason(kind).alias("_drop"))
    book.drop(df.filter(pl.col("_drop").is_not_null()), f"{kind}_", "_drop", _PAIR_TEXTS)
    return df.filter(pl.col("_drop").is_null()).drop("_drop", "_prompt_text")


def build_pairs(signals: pl.DataFrame, convs: pl.DataFrame, params: Params, failed_turns: pl.DataFrame,
                ckpt_root: Path = CHECKPOINTS, judge_usable: bool = True) -> tuple[pa.Table, pa.Table, dict]:
    """All pair kinds, validated; returns (pairs table, rejects table, metrics).

    ``judge_usable`` false (the judge failed its gate under ``on_gate_failure: withhold``): every pair that
    needs the judge is withheld, counted, and the summaries that would only feed it are not written.
    Model steps keep resumable checkpoints under ``ckpt_root`` (one folder per partition)."""
    cfg = params.wildfeedback
    roles = {k: resolve_role(params.llm, getattr(cfg.roles, k)) for k in ("summarizer", "expert", "policy", "judge")}
    fp = output_fingerprint(params)
    book = _Book()
    book.rejects += [reject(r["source"], r["user_turn"], r["conversation_id"], f"detect: {r['m_error']}")
                     for r in failed_turns.to_dicts()]
    frames: list[pl.DataFrame] = []

    if cfg.natural_revisions:
        nat = natural_revisions(signals, convs).with_columns(confidence=pl.lit(None, dtype=pl.Float64))
        book.counts["natural_revision"] = nat.height
        nat = _screen(nat, "natural_revision", book)
        if cfg.judge_natural_revisions and cfg.checklist_judge and nat.height:
            nat = _judged(nat, "natural_revision", params, roles["judge"], ckpt_root, book, judge_usable)
        frames.append(pair_frame(nat, "natural_revision", {}, fp))

    cands = summary_candidates(signals, convs, cfg.summarize)
    book.counts["summaries_attempted"] = cands.height
    if cands.height and cfg.checklist_judge and not judge_usable:
        book.counts["summaries_skipped_judge_withheld"] = cands.height
    elif cands.height:
        s = roles["summarizer"]
        summ = _run(cands.to_arrow(), summarize, params, s, "summarize", "summarizer", ckpt_root, sampling=s.sampling,
                    template_text=prompt("summarize"), context_messages=cfg.context_messages,
                    max_chars=cfg.max_message_chars)
        summ = summ.with_columns(summary_drop_reason(template_phrases(prompt("summarize"))).alias("_drop"))
        book.drop(summ.filter(pl.col("_drop").is_not_null()), "", "_drop",
                  ["feedback", "answer", "preference", "reasonable", "safe", "error"])
        kept = summ.filter(pl.col("_drop").is_null()).drop("_drop", "error", "reasonable", "safe")
        book.counts["summaries_kept"] = kept.height
        for kind, polarity in (("generated", "dsat"), ("sat", "sat")):
            if kind == "generated" or cfg.sat_pairs:
                frames += _generated(kept.filter(pl.col("polarity") == polarity), kind, params, roles, book, fp,
                                        ckpt_root, judge_usable)

    def invalid(row: dict, e: ValidationError) -> None:
        book.drops["invalid_pair"] += 1
        lin = json.loads(row["lineage"])
        book.rejects.append(reject(row["source"], lin["feedback_turn"], lin["conversation_id"],
                                   f"pair invalid: {e}", chosen=row["chosen"], rejected=row["rejected"]))

    pairs, kinds = pairs_table(frames, invalid)
    c = book.counts
    stats = {
        "summaries": {"attempted": c["summaries_attempted"], "kept": c["summaries_kept"],
                      "skipped_judge_withheld": c["summaries_skipped_judge_withheld"]},
        "pairs": {"natural_revision_found": c["natural_revision"], "generated_attempted": c["generated"],
                  "sat_attempted": c["sat"], "judged": c["judged"], "out": pairs.num_rows,
                  "out_by_kind": {k: kinds.get(k, 0) for k in ("natural_revision", "generated", "sat")}},
        "dropped": dict(sorted(book.drops.items())),
    }
    rejects = sorted(book.rejects, key=lambda r: (r["source"], r["row"], r["raw"]))
    return pairs, to_table(rejects, "rejects") if rejects else empty_table("rejects"), stats


def _judged(df: pl.DataFrame, kind: str, params: Params, role: LLM, ckpt_root: Path, book: _Book,
            usable: bool) -> pl.DataFrame:
    """Keep rows whose chosen wins the checklist judge in both orders; confidence = mean P(chosen)."""
    if not usable:
        book.drop(df.with_columns(pl.lit("judge_withheld").alias("_why")), f"{kind}_", "_why", _PAIR_TEXTS)
        return df.clear()
    cfg = params.wildfeedback
    book.counts["judged"] += df.height
    table = df.select("prompt", "chosen", "rejected", "preference").to_arrow()
    out = _run(table, judge, params, role, "judge", "judge", ckpt_root, template_text=prompt("judge"),
               context_messages=cfg.context_messages, max_chars=cfg.max_message_chars)
    df = df.with_columns(out["p_chosen_first"], out["p_chosen_second"]).with_columns(
        ((pl.col("p_chosen_first") + pl.col("p_chosen_second")) / 2).alias("confidence"),
        judge_drop_reason().alias("_why"))
    book.drop(df.filter(pl.col("_why").is_not_null()), f"{kind}_", "_why", [*_PAIR_TEXTS, "confidence"])
    return df.filter(pl.col("_why").is_null()).drop("p_chosen_first", "p_chosen_second", "_why")


def _generated(kept: pl.DataFrame, kind: str, params: Params, roles: dict[str, LLM], book: _Book, fp: str,
               ckpt_root: Path, judge_usable: bool) -> list[pl.DataFrame]:
    """DSAT: chosen generated with the preference. SAT: rejected sampled from the policy without it."""
    cfg = params.wildfeedback
    if kept.height == 0:
        return []
    book.counts[kind] += kept.height
    role_name, system = (cfg.chosen_by, prompt("chosen_system")) if kind == "generated" else ("policy", None)
    role = roles[role_name]
    gen = _run(kept.select("prompt", "preference").to_arrow(), respond, params, role, f"respond_{kind}", role_name,
               ckpt_root,
               sampling=role.sampling, system=system)
    df = kept.with_columns(gen["generated"], gen["finish_reason"])
    if kind == "generated":
        df = df.rename({"generated": "chosen", "answer": "rejected", "finish_reason": "chosen_finish_reason"})
    else:
        df = df.rename({"generated": "rejected", "answer": "chosen", "finish_reason": "rejected_finish_reason"})
    df = _screen(df.with_columns(confidence=pl.lit(None, dtype=pl.Float64)), kind, book)
    if cfg.checklist_judge and df.height:
        df = _judged(df, kind, params, roles["judge"], ckpt_root, book, judge_usable)
    models = {role_name: role.model, "summarizer": roles["summarizer"].model}
    if cfg.checklist_judge:
        models["judge"] = roles["judge"].model
    return [pair_frame(df, kind, models, fp)]
