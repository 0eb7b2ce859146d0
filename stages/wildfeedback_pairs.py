"""WildFeedback steps 2-4: preference summaries, pairs, checklist judge (METHODS.md section 1).

For a DSAT signal on assistant turn t: prompt = the dialogue before t, rejected = turn t, and the
model summarises what the user wanted from the feedback turn into a preference ("be concise").
Summaries the model marks unreasonable or unsafe are dropped with the reason counted. The chosen
answer is generated for the same prompt with the preference and a safety instruction in the system
message (by the ``expert`` role, or the ``policy`` role on-policy). Natural revision pairs need no
model: a DSAT turn t whose revision t+2 earns SAT gives (t+2 chosen, t rejected). Optional SAT pairs:
the liked turn as chosen against a policy sample. Generated pairs go through the checklist judge:
the preference split into checklist items, chosen vs rejected judged in both orders with
``engine.choose(prompts, ["A", "B"])``; a pair survives only if chosen wins both.

    >>> checklist("Be concise. Keep the code in Python; no classes")
    ['Be concise', 'Keep the code in Python', 'no classes']

With the built-in random ``tiny`` model the judge's A/B probabilities are noise, so a generated pair
survives both orders about a quarter of the time and summaries pass the reasonable/safe flags by
chance; ``dvc repro`` on the samples then yields mostly natural revision pairs. The metrics count
every step (attempted, failed, dropped by reason, lost in the judge), so an empty step shows as a
number, not as silence.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import LLM, Params, Sampling, fingerprint, resolve_role
from pipeline.execute import Checkpoint, map_batches
from pipeline.llm.base import GenerationFailure
from pipeline.records import Pair, empty_table, stable_id, to_table
from stages.wildfeedback import CHECKPOINTS, output_fingerprint, render, template

METHOD = "wildfeedback"


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


def summary_candidates(signals: pl.DataFrame, convs: pl.DataFrame, polarities: list[str]) -> pl.DataFrame:
    """Signals to summarise, with prompt (messages before the judged turn), answer and feedback text."""
    want = pl.lit(False)
    if "dsat" in polarities:
        want = want | pl.col("dsat")
    if "sat" in polarities:
        want = want | (pl.col("sat") & ~pl.col("dsat"))
    rows = signals.filter(want).join(convs.select("conversation_id", "source", "messages"), on="conversation_id")
    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn",
        pl.when(pl.col("dsat")).then(pl.lit("dsat")).otherwise(pl.lit("sat")).alias("polarity"),
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        pl.col("messages").list.get(pl.col("target_turn")).struct.field("content").alias("answer"),
        pl.col("messages").list.get(pl.col("user_turn")).struct.field("content").alias("feedback"),
    ).sort("conversation_id", "target_turn")


_SUMMARY_OUT = pa.schema([("preference", pa.string()), ("reasonable", pa.bool_()), ("safe", pa.bool_()),
                          ("error", pa.string())])


def summarize(batch: pa.Table, engine, *, sampling: Sampling, prompt: str, context_messages: int,
              max_chars: int) -> pa.Table:
    """Add preference / reasonable / safe (or error) to each candidate row."""
    rows = batch.to_pylist()
    prompts = [[{"role": "user", "content": prompt.format(
        dialogue=render(r["prompt"][-context_messages:], max_chars), answer=r["answer"][:max_chars],
        feedback=r["feedback"][:max_chars])}] for r in rows]
    out = []
    for (res,) in engine.generate(prompts, n=1, sampling=sampling, schema=PreferenceSummary):
        if isinstance(res, GenerationFailure):
            out.append({"preference": None, "reasonable": None, "safe": None, "error": res.error})
        else:
            out.append({"preference": res.preference.strip(), "reasonable": res.reasonable, "safe": res.safe,
                        "error": None})
    extra = pa.Table.from_pylist(out, schema=_SUMMARY_OUT)
    for name in extra.column_names:
        batch = batch.append_column(name, extra.column(name))
    return batch


def drop_reason() -> pl.Expr:
    """Why a summary is not used (null = keep)."""
    return (
        pl.when(pl.col("error").is_not_null()).then(pl.lit("summary_failed"))
        .when(~pl.col("safe")).then(pl.lit("summary_unsafe"))
        .when(~pl.col("reasonable")).then(pl.lit("summary_unreasonable"))
        .when(pl.col("preference").str.strip_chars().str.len_chars() == 0).then(pl.lit("summary_empty"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def respond(batch: pa.Table, engine, *, sampling: Sampling, system: str | None) -> pa.Table:
    """Add ``generated``: one answer to ``prompt``; with ``system``, the preference goes in the system message."""
    prompts = []
    for r in batch.to_pylist():
        msgs = [dict(m) for m in r["prompt"]]
        if system is not None:
            sys_text = system.format(preference=r["preference"])
            if msgs and msgs[0]["role"] == "system":  # keep the conversation's own system message after ours
                sys_text += "\n\n" + msgs.pop(0)["content"]
            msgs = [{"role": "system", "content": sys_text}, *msgs]
        prompts.append(msgs)
    texts = [outs[0].text for outs in engine.generate(prompts, n=1, sampling=sampling)]
    return batch.append_column("generated", pa.array(texts, pa.string()))


def judge(batch: pa.Table, engine, *, prompt: str, context_messages: int, max_chars: int) -> pa.Table:
    """Add p_chosen_first / p_chosen_second: P(chosen) with chosen shown as A, then as B."""
    rows = batch.to_pylist()
    prompts = []
    for r in rows:
        items = "\n".join(f"- {c}" for c in checklist(r["preference"])) or "- (no explicit items)"
        dialogue = render(r["prompt"][-context_messages:], max_chars)
        for a, b in ((r["chosen"], r["rejected"]), (r["rejected"], r["chosen"])):
            prompts.append([{"role": "user", "content": prompt.format(
                dialogue=dialogue, checklist=items, answer_a=a[:max_chars], answer_b=b[:max_chars])}])
    probs = engine.choose(prompts, ["A", "B"])
    first = [probs[2 * i][0] for i in range(len(rows))]
    second = [probs[2 * i + 1][1] for i in range(len(rows))]
    return batch.append_column("p_chosen_first", pa.array(first, pa.float64())).append_column(
        "p_chosen_second", pa.array(second, pa.float64()))


def natural_revisions(signals: pl.DataFrame, convs: pl.DataFrame) -> pl.DataFrame:
    """DSAT on turn t, revision t+2 judged SAT by the next user turn: rows with prompt, chosen, rejected, preference."""
    dsat = signals.filter(pl.col("dsat")).select("conversation_id", "target_turn", "user_turn")
    sat = signals.filter(pl.col("sat") & ~pl.col("dsat")).select(
        "conversation_id", (pl.col("target_turn") - 2).alias("target_turn"), pl.col("user_turn").alias("sat_turn"))
    rows = dsat.join(sat, on=["conversation_id", "target_turn"]).join(
        convs.select("conversation_id", "source", "messages"), on="conversation_id")

    def content(i: pl.Expr) -> pl.Expr:
        return pl.col("messages").list.get(i).struct.field("content")

    return rows.select(
        "conversation_id", "source", "target_turn", "user_turn", "sat_turn",
        pl.col("messages").list.slice(0, pl.col("target_turn")).alias("prompt"),
        content(pl.col("target_turn") + 2).alias("chosen"),
        content(pl.col("target_turn")).alias("rejected"),
        content(pl.col("user_turn")).alias("preference"),  # the user's correction is the preference
    ).sort("conversation_id", "target_turn")


# --- driver ---------------------------------------------------------------------------------------


def _run(table: pa.Table, fn, params: Params, role: LLM, step: str, ckpt_root: Path, **kwargs) -> pl.DataFrame:
    ck = Checkpoint(ckpt_root / step, fingerprint(params.wildfeedback, role, {"step": step}))
    out = map_batches(table, fn, execution=params.execution, engine=role, checkpoint=ck, desc=step, fn_kwargs=kwargs)
    ck.clear()
    return pl.from_arrow(out)


def _pair_rows(df: pl.DataFrame, kind: str, models: dict, fp: str) -> list[dict]:
    rows = []
    for r in df.to_dicts():
        lineage = {"stage": METHOD, "kind": kind, "conversation_id": r["conversation_id"],
                   "judged_turn": r["target_turn"], "feedback_turn": r["user_turn"],
                   "preference": r["preference"], "models": models, "fingerprint": fp}
        if r.get("sat_turn") is not None:
            lineage.update(revision_turn=r["target_turn"] + 2, sat_turn=r["sat_turn"])
        rows.append({
            "pair_id": stable_id(METHOD, kind, r["conversation_id"], r["target_turn"]),
            "prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "confidence": r.get("confidence"), "method": METHOD, "source": r["source"],
            "lineage": json.dumps(lineage, sort_keys=True, ensure_ascii=False),
        })
    return rows


def _reject(source: str, turn: int, conversation_id: str, reason: str) -> dict:
    return {"source": source, "row": int(turn), "reason": reason,
            "raw": json.dumps({"conversation_id": conversation_id, "user_turn": int(turn)})}


def build_pairs(signals: pl.DataFrame, convs: pl.DataFrame, params: Params,
                failed_turns: pl.DataFrame, ckpt_root: Path = CHECKPOINTS) -> tuple[pa.Table, pa.Table, dict]:
    """All pair kinds, validated; returns (pairs table, rejects table, metrics).

    Model steps keep resumable checkpoints under ``ckpt_root`` (one folder per partition)."""
    cfg = params.wildfeedback
    roles = {k: resolve_role(params.llm, getattr(cfg.roles, k)) for k in ("summarizer", "expert", "policy", "judge")}
    fp = output_fingerprint(params)
    drops, counts = Counter(), Counter()
    rejects = [_reject(r["source"], r["user_turn"], r["conversation_id"], f"detect: {r['m_error']}")
               for r in failed_turns.to_dicts()]
    pair_rows: list[dict] = []

    if cfg.natural_revisions:
        nat = natural_revisions(signals, convs).with_columns(confidence=pl.lit(None, dtype=pl.Float64))
        counts["natural_revision"] = nat.height
        if cfg.judge_natural_revisions and cfg.checklist_judge and nat.height:
            counts["judged"] += nat.height
            nat, lost = _judged(nat, params, roles["judge"], ckpt_root)
            drops["natural_revision_lost_in_judge"] += lost
        pair_rows += _pair_rows(nat, "natural_revision", {}, fp)

    cands = summary_candidates(signals, convs, cfg.summarize)
    counts["summaries_attempted"] = cands.height
    if cands.height:
        s = roles["summarizer"]
        summ = _run(cands.to_arrow(), summarize, params, s, "summarize", ckpt_root, sampling=s.sampling,
                    prompt=template("summarize"), context_messages=cfg.context_messages,
                    max_chars=cfg.max_message_chars)
        summ = summ.with_columns(drop_reason().alias("_drop"))
        for reason, n in summ.filter(pl.col("_drop").is_not_null()).group_by("_drop").len().iter_rows():
            drops[reason] += n
        rejects += [_reject(r["source"], r["user_turn"], r["conversation_id"], f"summarize: {r['error']}")
                    for r in summ.filter(pl.col("_drop") == "summary_failed").to_dicts()]
        kept = summ.filter(pl.col("_drop").is_null()).drop("_drop", "error", "reasonable", "safe")
        counts["summaries_kept"] = kept.height
        for kind, polarity in (("generated", "dsat"), ("sat", "sat")):
            if kind == "generated" or cfg.sat_pairs:
                pair_rows += _generated(kept.filter(pl.col("polarity") == polarity), kind, params, roles, drops,
                                        counts, fp, ckpt_root)

    valid = []
    for row in pair_rows:
        try:
            Pair.model_validate(row)
            valid.append(row)
        except ValidationError as e:
            drops["invalid_pair"] += 1
            lin = json.loads(row["lineage"])
            rejects.append(_reject(row["source"], lin["feedback_turn"], lin["conversation_id"], f"pair invalid: {e}"))
    pairs = to_table(valid, "pairs") if valid else empty_table("pairs")
    kinds = Counter(json.loads(r["lineage"])["kind"] for r in valid)
    stats = {
        "summaries": {"attempted": counts["summaries_attempted"], "kept": counts["summaries_kept"]},
        "pairs": {"natural_revision_found": counts["natural_revision"], "generated_attempted": counts["generated"],
                  "sat_attempted": counts["sat"], "judged": counts["judged"], "out": pairs.num_rows,
                  "out_by_kind": {k: kinds.get(k, 0) for k in ("natural_revision", "generated", "sat")}},
        "dropped": dict(sorted(drops.items())),
    }
    return pairs, to_table(rejects, "rejects") if rejects else empty_table("rejects"), stats


def _judged(df: pl.DataFrame, params: Params, role: LLM, ckpt_root: Path) -> tuple[pl.DataFrame, int]:
    """Keep rows whose chosen wins the checklist judge in both orders; confidence = mean P(chosen)."""
    cfg = params.wildfeedback
    table = df.select("prompt", "chosen", "rejected", "preference").to_arrow()
    out = _run(table, judge, params, role, "judge", ckpt_root, prompt=template("judge"),
               context_messages=cfg.context_messages, max_chars=cfg.max_message_chars)
    df = df.with_columns(out["p_chosen_first"], out["p_chosen_second"]).with_columns(
        ((pl.col("p_chosen_first") + pl.col("p_chosen_second")) / 2).alias("confidence"))
    kept = df.filter((pl.col("p_chosen_first") > 0.5) & (pl.col("p_chosen_second") > 0.5))
    return kept.drop("p_chosen_first", "p_chosen_second"), df.height - kept.height


def _generated(kept: pl.DataFrame, kind: str, params: Params, roles: dict[str, LLM], drops: Counter,
               counts: Counter, fp: str, ckpt_root: Path) -> list[dict]:
    """DSAT: chosen generated with the preference. SAT: rejected sampled from the policy without it."""
    cfg = params.wildfeedback
    if kept.height == 0:
        return []
    counts[kind] += kept.height
    role_name, system = (cfg.chosen_by, template("chosen_system")) if kind == "generated" else ("policy", None)
    role = roles[role_name]
    gen = _run(kept.select("prompt", "preference").to_arrow(), respond, params, role, f"respond_{kind}", ckpt_root,
               sampling=role.sampling, system=system)
    df = kept.with_columns(gen["generated"])
    if kind == "generated":
        df = df.rename({"generated": "chosen", "answer": "rejected"})
    else:
        df = df.rename({"generated": "rejected", "answer": "chosen"})
    empty = (pl.col("chosen").str.strip_chars() == "") | (pl.col("rejected").str.strip_chars() == "")
    drops[f"{kind}_empty_generation"] += df.filter(empty).height
    df = df.filter(~empty).with_columns(confidence=pl.lit(None, dtype=pl.Float64))
    if cfg.checklist_judge and df.height:
        counts["judged"] += df.height
        df, lost = _judged(df, params, roles["judge"], ckpt_root)
        drops[f"{kind}_lost_in_judge"] += lost
    models = {role_name: role.model, "summarizer": roles["summarizer"].model}
    if cfg.checklist_judge:
        models["judge"] = roles["judge"].model
    return _pair_rows(df, kind, models, fp)
