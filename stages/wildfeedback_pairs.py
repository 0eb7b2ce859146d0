"""WildFeedback steps 2-4: preference summaries, pairs, checklist judge (METHODS.md section 1), in order.

For a DSAT signal on assistant turn t: prompt = the dialogue before t, rejected = turn t, and the
model summarises what the user wanted from the feedback turn into a preference ("be concise").
Summaries the model marks unreasonable or unsafe, or that copy the template's example, are dropped with
the reason counted. The chosen answer is generated for the same prompt with the preference and a safety
instruction in the system message (by the ``expert`` role, or the ``policy`` role on-policy). Natural
revision pairs need no model: a DSAT turn t whose revision t+2 earns SAT gives (t+2 chosen, t rejected).
Optional SAT pairs: the liked turn as chosen against a policy sample. Generated pairs go through the
checklist judge; a pair survives only if chosen wins both orders. The model steps themselves (summarize,
respond, judge and its gate) are ``stages/wildfeedback_models.py``; ``build_pairs`` runs them in order.

Every pair's chosen must fit its prompt (``stages/wildfeedback_fit.py``): a revision or an expert answer
that acknowledges, refers to or quotes feedback the prompt does not contain is dropped, so is a revision that
answers only an additive follow-up ("Can you give an example?") instead of the prompt, and so are
generated answers cut off at ``max_new_tokens`` and pairs whose two sides are the same text. Each drop is
counted by reason in the metrics, and the dropped summaries and pairs are kept, with their texts, in
``data/wildfeedback/rejects`` (``raw`` holds the JSON).

With the built-in random ``tiny`` model the judge's A/B probabilities are noise, so a generated pair
survives both orders about a quarter of the time and summaries pass the reasonable/safe flags by
chance; ``dvc repro`` on the samples then yields mostly natural revision pairs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import ValidationError

from pipeline.config import LLM, Params, resolve_role
from pipeline.execute import map_batches, step_checkpoint
from pipeline.prompt import template_phrases
from pipeline.records import empty_table, to_table
from stages.wildfeedback_common import CHECKPOINTS, output_fingerprint, prompt, reject, reject_order
from stages.wildfeedback_fit import pair_drop_reason, prompt_text
from stages.wildfeedback_models import judge, judge_drop_reason, respond, summarize, summary_drop_reason
from stages.wildfeedback_output import CONVERSATION_MODEL, pair_frame, pairs_table


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
    rows = signals.filter(want).join(convs.select("conversation_id", "source", "messages", "model"), on="conversation_id")
    rows = rows.join(feedback_ends(signals), on=["conversation_id", "target_turn"], how="left")
    last = pl.when(pl.col("dsat")).then(pl.col("last_feedback_turn")).otherwise(pl.col("user_turn"))
    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn", pl.col("model").alias(CONVERSATION_MODEL),
        pl.when(pl.col("dsat")).then(pl.lit("dsat")).otherwise(pl.lit("sat")).alias("polarity"),
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        pl.col("messages").list.get(pl.col("target_turn")).struct.field("content").alias("answer"),
        pl.col("messages").list.get(pl.col("user_turn")).struct.field("content").alias("feedback"),
        pl.col("messages").list.slice(pl.col("user_turn"), last - pl.col("user_turn") + 1).alias("feedback_turns"),
    ).sort("conversation_id", "target_turn")


def natural_revisions(signals: pl.DataFrame, convs: pl.DataFrame) -> pl.DataFrame:
    """DSAT on turn t, revision t+2 judged SAT by the next user turn: rows with prompt, chosen, rejected, preference.

    ``feedback_sat`` says the feedback turn is SAT as well as DSAT ("lol. Another one?"): the user liked the
    answer they asked to redo, so it is no rejected answer; `pair_drop_reason` drops such a candidate
    (``mixed_feedback``), counted, as a SAT turn that is also DSAT never vouches for the revision.
    ``sat_categories`` and ``sat_text`` (the SAT turn's) let `pair_drop_reason` drop a revision that only an
    "ok" opening a longer message vouches for (``ack_opens_request``)."""
    dsat = signals.filter(pl.col("dsat")).select("conversation_id", "target_turn", "user_turn",
                                                 pl.col("sat").alias("feedback_sat"))
    sat = signals.filter(pl.col("sat") & ~pl.col("dsat")).select(
        "conversation_id", (pl.col("target_turn") - 2).alias("target_turn"), pl.col("user_turn").alias("sat_turn"),
        "sat_categories")
    rows = dsat.join(sat, on=["conversation_id", "target_turn"]).join(
        convs.select("conversation_id", "source", "messages", "model"), on="conversation_id")

    def content(i: pl.Expr) -> pl.Expr:
        return pl.col("messages").list.get(i).struct.field("content")

    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn", "sat_turn", "feedback_sat",
        "sat_categories", content(pl.col("sat_turn")).alias("sat_text"), pl.col("model").alias(CONVERSATION_MODEL),
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        content(pl.col("target_turn") + 2).alias("chosen"),
        content(pl.col("target_turn")).alias("rejected"),
        content(pl.col("user_turn")).alias("preference"),  # the user's correction is the preference
    ).sort("conversation_id", "target_turn")


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
    ck = step_checkpoint(ckpt_root, step, params.wildfeedback, role)
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
    """All pair kinds, validated; returns (pairs table, rejects table, metrics). In order: natural revision
    pairs (``_natural_revision_rows``), preference summaries and the pairs generated from them
    (``_summary_rows``), each kind's rows as ``pairs`` columns (``wildfeedback_output.pair_frame``), then the
    table checked against the ``pairs`` contract (``_valid_pairs``).

    ``judge_usable`` false (the judge failed its gate under ``on_gate_failure: withhold``): every pair that
    needs the judge is withheld, counted, and the summaries that would only feed it are not written.
    Model steps keep resumable checkpoints under ``ckpt_root`` (one folder per partition)."""
    cfg = params.wildfeedback
    roles = {k: resolve_role(params.llm, getattr(cfg.roles, k)) for k in ("summarizer", "expert", "policy", "judge")}
    fp = output_fingerprint(params)
    book = _Book()
    book.rejects += [reject(r["source"], r["user_turn"], r["conversation_id"], f"detect: {r['m_error']}")
                     for r in failed_turns.to_dicts()]
    frames = (_natural_revision_rows(signals, convs, params, roles["judge"], book, fp, ckpt_root, judge_usable)
              if cfg.natural_revisions else [])
    frames += _summary_rows(signals, convs, params, roles, book, fp, ckpt_root, judge_usable)
    pairs, kinds = _valid_pairs(frames, book)
    c = book.counts
    stats = {
        "summaries": {"attempted": c["summaries_attempted"], "kept": c["summaries_kept"],
                      "skipped_judge_withheld": c["summaries_skipped_judge_withheld"]},
        "pairs": {"natural_revision_found": c["natural_revision"], "generated_attempted": c["generated"],
                  "sat_attempted": c["sat"], "judged": c["judged"], "out": pairs.num_rows,
                  "out_by_kind": {k: kinds.get(k, 0) for k in ("natural_revision", "generated", "sat")}},
        "dropped": dict(sorted(book.drops.items())),
    }
    rejects = sorted(book.rejects, key=reject_order)
    return pairs, to_table(rejects, "rejects") if rejects else empty_table("rejects"), stats


def _natural_revision_rows(signals: pl.DataFrame, convs: pl.DataFrame, params: Params, judge_role: LLM, book: _Book,
                           fp: str, ckpt_root: Path, judge_usable: bool) -> list[pl.DataFrame]:
    """Natural revision pairs (no model writes them): screened, then judged when
    ``judge_natural_revisions``."""
    cfg = params.wildfeedback
    nat = natural_revisions(signals, convs).with_columns(confidence=pl.lit(None, dtype=pl.Float64))
    book.counts["natural_revision"] = nat.height
    nat = _screen(nat, "natural_revision", book)
    if cfg.judge_natural_revisions and cfg.checklist_judge and nat.height:
        nat = _judged(nat, "natural_revision", params, judge_role, ckpt_root, book, judge_usable)
    return [pair_frame(nat, "natural_revision", {}, fp)]


def _summary_rows(signals: pl.DataFrame, convs: pl.DataFrame, params: Params, roles: dict[str, LLM], book: _Book,
                  fp: str, ckpt_root: Path, judge_usable: bool) -> list[pl.DataFrame]:
    """The preference summaries (none when the judge that would check their pairs is withheld), then the
    pairs generated from them: DSAT (``generated``) and, with ``sat_pairs``, SAT."""
    cfg = params.wildfeedback
    cands = summary_candidates(signals, convs, cfg.summarize)
    book.counts["summaries_attempted"] = cands.height
    if cands.height and cfg.checklist_judge and not judge_usable:
        book.counts["summaries_skipped_judge_withheld"] = cands.height
        return []
    if not cands.height:
        return []
    s = roles["summarizer"]
    summ = _run(cands.to_arrow(), summarize, params, s, "summarize", "summarizer", ckpt_root, sampling=s.sampling,
                template_text=prompt("summarize"), context_messages=cfg.context_messages,
                max_chars=cfg.max_message_chars)
    summ = summ.with_columns(summary_drop_reason(template_phrases(prompt("summarize"))).alias("_drop"))
    book.drop(summ.filter(pl.col("_drop").is_not_null()), "", "_drop",
              ["feedback", "answer", "preference", "reasonable", "safe", "error"])
    kept = summ.filter(pl.col("_drop").is_null()).drop("_drop", "error", "reasonable", "safe")
    book.counts["summaries_kept"] = kept.height
    frames = []
    for kind, polarity in (("generated", "dsat"), ("sat", "sat")):
        if kind == "generated" or cfg.sat_pairs:
            frames += _generated(kept.filter(pl.col("polarity") == polarity), kind, params, roles, book, fp,
                                 ckpt_root, judge_usable)
    return frames


def _valid_pairs(frames: list[pl.DataFrame], book: _Book) -> tuple[pa.Table, Counter]:
    """The ``pairs`` table of the rows that meet the ``pairs`` contract (``records.Pair``; rows a columnar
    test cannot vouch for are validated one by one, ``wildfeedback_output.pairs_table``) and its rows by kind;
    the others counted (``invalid_pair``) and kept in the rejects with the validation error."""

    def invalid(row: dict, e: ValidationError) -> None:
        book.drops["invalid_pair"] += 1
        lin = json.loads(row["lineage"])
        book.rejects.append(reject(row["source"], lin["feedback_turn"], lin["conversation_id"],
                                   f"pair invalid: {e}", chosen=row["chosen"], rejected=row["rejected"]))

    return pairs_table(frames, invalid)


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
