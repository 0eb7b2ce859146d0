"""WildFeedback (Shi et al. 2024, METHODS.md section 1): preferences mined from real conversation logs.

    select -> feedback turns -> signals (rules | llm | rules+llm) -> preference summaries -> pairs -> checklist judge

Steps are small pure functions over polars frames / Arrow tables; the model steps take an ``engine``
and run through ``map_batches``. The input shard set is streamed batch by batch (select + rules drop
every conversation without a signal at once) and processed in partitions of
``partition_conversations``: every step works per conversation, so memory is bounded by one
partition, and the outputs stream into their shard sets::

    >>> import polars as pl
    >>> conv = pl.DataFrame({"conversation_id": ["c1"], "source": ["s"], "messages": [[
    ...     {"role": "user", "content": "Capital of Australia?"},
    ...     {"role": "assistant", "content": "Sydney."},
    ...     {"role": "user", "content": "That's wrong, it's Canberra."}]]})
    >>> feedback_turns(conv).select("user_turn", "target_turn", "text", "prev").rows()
    [(2, 1, "That's wrong, it's Canberra.", 'Sydney.')]

Outputs: ``data/wildfeedback/signals`` (signals contract, one row per judged user turn),
``data/wildfeedback/pairs`` (pairs, method "wildfeedback"), ``data/wildfeedback/rejects`` (turns and
rows a model step failed on, with the reason) and ``data/wildfeedback/metrics.json``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

import pipeline
from pipeline.config import Params, Sampling, Wildfeedback, fingerprint, resolve_role
from pipeline.execute import CHECKPOINT_ROOT, Checkpoint, map_batches
from pipeline.io import ShardWriter, iter_batches, write_json_atomic
from pipeline.llm.base import GenerationFailure
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import SCHEMAS, check_table
from stages.wildfeedback_rules import DSAT_CATEGORIES, SAT_CATEGORIES, detect

log = logging.getLogger(__name__)

IN = Path("data/ingest/conversations")
OUT = Path("data/wildfeedback")
CHECKPOINTS = CHECKPOINT_ROOT / "wildfeedback"
PROMPTS = Path(pipeline.__file__).parent / "prompts"


def output_fingerprint(params: Params) -> str:
    """The params the outputs depend on (in lineage and manifests), less the partition size: rule
    signals and natural revisions do not depend on it (tested), nor do model answers from an engine
    that answers each prompt on its own (greedy, or vLLM's per-request seeds). Checkpoints include it."""
    return fingerprint(params.wildfeedback.model_dump(mode="json", exclude={"partition_conversations"}), params.llm)


def template(name: str) -> str:
    return (PROMPTS / f"wildfeedback_{name}.txt").read_text(encoding="utf-8")


# --- step 0: select -------------------------------------------------------------------------------


def select_conversations(conv: pl.DataFrame, cfg: Wildfeedback) -> tuple[pl.DataFrame, Counter]:
    """Conversations of the configured sources that pass language / flag / user-turn filters.

    Returns the kept rows and a Counter: ``in`` (rows of the configured sources), ``selected`` and
    one key per drop reason (the first failing check names the reason).
    """
    conv = conv.filter(pl.col("source").is_in(cfg.sources))
    lang = pl.col("language").str.to_lowercase().str.strip_chars()
    # The contract guarantees user/assistant alternation after an optional system message.
    has_system = (pl.col("messages").list.first().struct.field("role") == "system").cast(pl.Int64)
    n_user = (pl.col("messages").list.len() - has_system + 1) // 2
    bad_lang = lang.is_in([x.lower() for x in cfg.languages]).not_()
    bad_lang = (lang.is_null() & (not cfg.keep_unknown_language)) | (lang.is_not_null() & bad_lang)
    flagged = pl.col("flags").list.eval(pl.element().is_in(cfg.drop_flags)).list.any().fill_null(False)
    reason = (
        pl.when(bad_lang).then(pl.lit("dropped_language"))
        .when(flagged).then(pl.lit("dropped_flagged"))
        .when(n_user < cfg.min_user_turns).then(pl.lit("dropped_min_user_turns"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    conv = conv.with_columns(reason.alias("_reason"))
    counts = Counter({"in": conv.height})
    for r, n in conv.group_by("_reason").len().iter_rows():
        counts[r or "selected"] += n
    return conv.filter(pl.col("_reason").is_null()).drop("_reason"), counts


# --- step 1: feedback turns and signals -----------------------------------------------------------


def feedback_turns(conv: pl.DataFrame) -> pl.DataFrame:
    """Every user turn that answers an assistant turn: conversation_id, source, user_turn, target_turn, text, prev."""
    ex = (
        conv.select("conversation_id", "source", "messages")
        .with_columns(pl.int_ranges(0, pl.col("messages").list.len(), dtype=pl.Int64).alias("user_turn"))
        .explode(["messages", "user_turn"])
        .select(
            "conversation_id", "source", "user_turn",
            pl.col("messages").struct.field("role").alias("role"),
            pl.col("messages").struct.field("content").alias("text"),
        )
        .with_columns(pl.col("role").shift(1).alias("prev_role"), pl.col("text").shift(1).alias("prev"))
    )
    # user_turn > 0 keeps shift() from reading across a conversation boundary.
    keep = (pl.col("role") == "user") & (pl.col("user_turn") > 0) & (pl.col("prev_role") == "assistant")
    return ex.filter(keep).select(
        "conversation_id", "source", "user_turn", (pl.col("user_turn") - 1).alias("target_turn"), "text", "prev"
    )


def rules_signals(turns: pl.DataFrame, cfg: Wildfeedback) -> pl.DataFrame:
    """Rule verdicts for every turn (sat, dsat, categories, rationale = the patterns that fired)."""
    return detect(turns, paste_min_chars=cfg.paste_min_chars, window_chars=cfg.window_chars).with_columns(
        detector=pl.lit("rules")
    )


def recall_sample(turns: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    """A seeded, batch-independent random choice of turns: a hash of (conversation_id, user_turn).

    polars' hash is stable for a given polars version, which pins the sample across reruns.
    """
    if fraction <= 0:
        return pl.Series([False] * turns.height, dtype=pl.Boolean)
    key = pl.concat_str(pl.col("conversation_id"), pl.col("user_turn").cast(pl.String), separator="\x1f")
    return turns.select((key.hash(seed=seed) % 1_000_003 < int(fraction * 1_000_003)).alias("s"))["s"]


def scan(conv: pl.DataFrame, cfg: Wildfeedback) -> tuple[pl.DataFrame, pl.DataFrame, Counter]:
    """Select + rule verdicts for one batch of conversations.

    Returns (turns with rule verdicts and a ``to_model`` flag, the selected conversations that have a
    turn flagged or sent to the model, counts).
    """
    selected, counts = select_conversations(conv, cfg)
    turns = rules_signals(feedback_turns(selected), cfg)
    if cfg.detector == "rules":
        to_model = pl.Series([False] * turns.height, dtype=pl.Boolean)
    elif cfg.detector == "llm":
        to_model = pl.Series([True] * turns.height, dtype=pl.Boolean)
    else:
        to_model = (turns["sat"] | turns["dsat"]) | recall_sample(turns, cfg.recall_sample, cfg.seed)
    # Texts are dropped here and read back from the kept conversations when needed, so what a batch
    # leaves in memory is one small row per judged turn plus the conversations worth keeping.
    turns = turns.with_columns(to_model.alias("to_model")).drop("text", "prev")
    counts["turns"] += turns.height
    keep_ids = turns.filter(pl.col("sat") | pl.col("dsat") | pl.col("to_model"))["conversation_id"].unique()
    return turns, selected.filter(pl.col("conversation_id").is_in(keep_ids.implode())), counts


# --- the `llm` detector -----------------------------------------------------------------------------

SatCategory = Literal[tuple(SAT_CATEGORIES)]  # type: ignore[valid-type]
DsatCategory = Literal[tuple(DSAT_CATEGORIES)]  # type: ignore[valid-type]


class FeedbackJudgment(BaseModel):
    """The paper's structured annotation of one user turn (validated against the category lists)."""

    model_config = ConfigDict(extra="forbid")
    sat: bool
    sat_categories: list[SatCategory] = Field(max_length=len(SAT_CATEGORIES))
    dsat: bool
    dsat_categories: list[DsatCategory] = Field(max_length=len(DSAT_CATEGORIES))
    refers_to_preceding: bool
    rationale: str = Field(max_length=400)


def render(messages: list[dict], max_chars: int) -> str:
    """A dialogue as ``ROLE: text`` blocks, each message cut to ``max_chars``."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content'][:max_chars]}" for m in messages)


def with_context(turns: pl.DataFrame, conv: pl.DataFrame, n_messages: int) -> pl.DataFrame:
    """Add ``text`` (the user turn), ``prev`` (the judged assistant turn) and ``context`` (up to
    ``n_messages`` messages before the judged turn) from the conversations."""
    start = pl.max_horizontal(pl.col("target_turn") - n_messages, pl.lit(0))
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
    ("refers_to_preceding", pa.bool_()), ("rationale", pa.string()), ("error", pa.string()),
])


def llm_detect(batch: pa.Table, engine, *, sampling: Sampling, prompt: str, max_chars: int) -> pa.Table:
    """Ask the model for a ``FeedbackJudgment`` per turn; failures come back as rows with ``ok`` false."""
    rows = batch.to_pylist()
    prompts = [
        [{"role": "user", "content": prompt.format(
            dialogue=render(r["context"], max_chars), assistant=r["prev"][:max_chars], user=r["text"][:max_chars])}]
        for r in rows
    ]
    out = []
    for r, (res,) in zip(rows, engine.generate(prompts, n=1, sampling=sampling, schema=FeedbackJudgment), strict=True):
        base = {"conversation_id": r["conversation_id"], "user_turn": r["user_turn"]}
        if isinstance(res, GenerationFailure):
            out.append({**base, "ok": False, "sat": False, "dsat": False, "sat_categories": [], "dsat_categories": [],
                        "refers_to_preceding": False, "rationale": None, "error": f"{res.error} (raw: {res.raw[:200]!r})"})
            continue
        refers = res.refers_to_preceding  # a signal is about the turn just before, by definition
        sat_c = list(dict.fromkeys(res.sat_categories)) if res.sat and refers else []
        dsat_c = list(dict.fromkeys(res.dsat_categories)) if res.dsat and refers else []
        out.append({**base, "ok": True, "sat": res.sat and refers, "dsat": res.dsat and refers,
                    "sat_categories": sat_c, "dsat_categories": dsat_c, "refers_to_preceding": refers,
                    "rationale": res.rationale, "error": None})
    return pa.Table.from_pylist(out, schema=_LLM_OUT)


def merge_verdicts(turns: pl.DataFrame, judged: pl.DataFrame | None, detector: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Final signals: the model's verdict where it answered, the rules' elsewhere (``rules+llm``).

    In ``llm`` mode a turn the model failed on has no verdict and goes to the failures frame only.
    Returns (signals in the contract's columns, failures: conversation_id, source, user_turn, error).
    """
    cols = ["conversation_id", "user_turn", "target_turn", "sat", "dsat", "sat_categories", "dsat_categories",
            "detector", "rationale"]
    if judged is None or judged.height == 0:
        judged = pl.DataFrame(schema=pl.from_arrow(_LLM_OUT.empty_table()).schema)
    j = judged.rename({c: f"m_{c}" for c in judged.columns if c not in ("conversation_id", "user_turn")})
    t = turns.join(j, on=["conversation_id", "user_turn"], how="left")
    ok = pl.col("m_ok").fill_null(False)

    def both(model_col: str, rules_col: str) -> pl.Expr:
        return pl.when(ok).then(pl.col(model_col)).otherwise(pl.col(rules_col))

    rules_note = pl.when(pl.col("rationale").is_not_null()).then(pl.lit(" [rules: ") + pl.col("rationale") + "]")
    signals = t.with_columns(
        both("m_sat", "sat").alias("sat"), both("m_dsat", "dsat").alias("dsat"),
        both("m_sat_categories", "sat_categories").alias("sat_categories"),
        both("m_dsat_categories", "dsat_categories").alias("dsat_categories"),
        pl.when(ok).then(pl.lit("llm")).otherwise(pl.col("detector")).alias("detector"),
        pl.when(ok).then(pl.col("m_rationale") + rules_note.fill_null("")).otherwise(pl.col("rationale")).alias("rationale"),
    )
    failed = t.filter(pl.col("m_ok").is_not_null() & ~ok).select("conversation_id", "source", "user_turn", "m_error")
    if detector == "llm":
        signals = signals.filter(ok)
    return signals.select(cols).with_columns(confidence=pl.lit(None, dtype=pl.Float64)), failed


def category_counts(signals: pl.DataFrame) -> dict[str, dict[str, int]]:
    out = {}
    for col, cats in (("sat_categories", SAT_CATEGORIES), ("dsat_categories", DSAT_CATEGORIES)):
        counts = dict(signals.select(pl.col(col).explode().drop_nulls().value_counts()).unnest(col).iter_rows())
        out[col] = {c: int(counts.get(c, 0)) for c in cats}
    return out


# --- driver ---------------------------------------------------------------------------------------


def scanned_partitions(path: Path, cfg: Wildfeedback, batch_rows: int,
                       size: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame, Counter]]:
    """Stream the conversations shard set, scanning batch by batch, in partitions of about ``size``
    conversations: (turns with rule verdicts, conversations worth keeping, counts) per partition.

    The shard set is sorted by conversation_id, so a partition is an id range and the same input
    always splits the same way; an empty input still gives one (empty) partition.
    """
    turns, convs, counts, n, done = [], [], Counter(), 0, False
    for batch in iter_batches(path, batch_size=min(batch_rows, size)):
        t, c, k = scan(pl.from_arrow(pa.Table.from_batches([batch])), cfg)
        turns.append(t)
        convs.append(c)
        counts.update(k)
        n += batch.num_rows
        if n >= size:
            yield pl.concat(turns), pl.concat(convs), counts
            turns, convs, counts, n, done = [], [], Counter(), 0, True
    if turns:
        yield pl.concat(turns), pl.concat(convs), counts
    elif not done:
        t, c, _ = scan(pl.from_arrow(SCHEMAS["conversations"].empty_table()), cfg)
        yield t, c, Counter()


def run_detector(turns: pl.DataFrame, convs: pl.DataFrame, params: Params,
                 ckpt_root: Path = CHECKPOINTS) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    cfg = params.wildfeedback
    role = resolve_role(params.llm, cfg.roles.detector)
    send = turns.filter(pl.col("to_model"))
    judged = None
    if send.height:
        table = with_context(send, convs, cfg.context_messages).select(
            "conversation_id", "user_turn", "text", "prev", "context").to_arrow()
        ck = Checkpoint(ckpt_root / "detect", fingerprint(cfg, role, {"step": "detect"}))
        out = map_batches(table, llm_detect, execution=params.execution, engine=role, checkpoint=ck, desc="detect",
                          fn_kwargs={"sampling": role.sampling, "prompt": template("detect"),
                                     "max_chars": cfg.max_message_chars})
        judged = pl.from_arrow(out)
        ck.clear()
    signals, failed = merge_verdicts(turns, judged, cfg.detector)
    sampled = send.filter(~(pl.col("sat") | pl.col("dsat")))
    model_found = 0
    if judged is not None and sampled.height:
        hits = judged.join(sampled.select("conversation_id", "user_turn"), on=["conversation_id", "user_turn"])
        model_found = hits.filter(pl.col("ok") & (pl.col("sat") | pl.col("dsat"))).height
    stats = {
        "sent_to_model": send.height,
        "sent_rule_flagged": send.height - sampled.height,
        "sent_recall_sample": sampled.height,
        "recall_sample_model_positive": model_found,  # turns the rules missed that the model flags
        "model_failures": failed.height,
        "model_ok": 0 if judged is None else int(judged["ok"].sum()),
    }
    return signals, failed, stats


def run_partition(turns: pl.DataFrame, convs: pl.DataFrame, counts: Counter, params: Params, ckpt_root: Path):
    """Every step after the scan on one partition of conversations: (signals, pairs, rejects, metrics)."""
    from stages.wildfeedback_pairs import build_pairs

    cfg = params.wildfeedback
    signals, failed, det_stats = run_detector(turns, convs, params, ckpt_root)
    rules_only = turns.filter(pl.col("sat") | pl.col("dsat"))
    pairs, rejects, pair_stats = build_pairs(signals, convs, params, failed, ckpt_root)
    positive = signals.filter(pl.col("sat") | pl.col("dsat"))
    metrics = {
        "detector": cfg.detector,
        "conversations": {k: counts.get(k, 0) for k in
                          ("in", "selected", "dropped_language", "dropped_flagged", "dropped_min_user_turns")},
        "turns_judged": counts.get("turns", 0),
        "signals": {
            "turns_sat": int(signals["sat"].sum()), "turns_dsat": int(signals["dsat"].sum()),
            "turns_with_signal": positive.height,
            "conversations_with_signal": positive["conversation_id"].n_unique(),
            "by_detector": {d: n for d, n in positive.group_by("detector").len().iter_rows()},
            **category_counts(signals),
        },
        "rules": {"turns_sat": int(rules_only["sat"].sum()), "turns_dsat": int(rules_only["dsat"].sum()),
                  **category_counts(rules_only)},
        "model_detector": det_stats,
        **pair_stats,
    }
    return check_table(signals.to_arrow(), "signals"), pairs, rejects, metrics


def add_metrics(a: dict, b: dict) -> dict:
    """Two partitions' metrics as one: counts add up, keys from either side are kept.

    >>> add_metrics({"n": 1, "by": {"x": 2}, "detector": "rules"}, {"n": 2, "by": {"y": 1}, "detector": "rules"})
    {'n': 3, 'by': {'x': 2, 'y': 1}, 'detector': 'rules'}
    """
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = add_metrics(out[key], value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = out[key] + value
    return out


def main(params: Params) -> None:
    """Partition by partition (``wildfeedback.partition_conversations``), streamed into the shard sets.

    Every step works per conversation, so a partition holds everything its pairs need; memory is
    bounded by one partition whatever the log's size.
    """
    cfg, ex = params.wildfeedback, params.execution
    fp = output_fingerprint(params)
    sizes = {"target_shard_bytes": ex.target_shard_bytes, "row_group_bytes": ex.row_group_bytes,
             "spill_bytes": ex.spill_bytes, "fingerprint": fp}
    metrics: dict = {}
    out = begin_outputs(OUT)  # signals, pairs, rejects and metrics change together (pipeline/outputs.py)
    with (ShardWriter(out / "signals", name="signals", **sizes) as signals_out,
          ShardWriter(out / "pairs", name="pairs", **sizes) as pairs_out,
          ShardWriter(out / "rejects", name="rejects", **sizes) as rejects_out):
        parts = scanned_partitions(IN, cfg, ex.batch_size, cfg.partition_conversations)
        for i, (turns, convs, counts) in enumerate(parts):
            signals, pairs, rejects, part = run_partition(turns, convs, counts, params, CHECKPOINTS / f"part-{i:05d}")
            signals_out.write(signals)
            pairs_out.write(pairs)
            rejects_out.write(rejects)
            metrics = add_metrics(metrics, part)
            log.info("wildfeedback: partition %d: %d conversations, %d pairs", i, part["conversations"]["in"],
                     pairs.num_rows)
    metrics["partitions"] = i + 1
    write_json_atomic(metrics, out / "metrics.json")
    commit_outputs(OUT)
    n_signals, n_pairs = metrics["signals"]["turns_with_signal"], metrics["pairs"]["out"]
    log.info("wildfeedback: %d signals, %d pairs", n_signals, n_pairs)
    print(json.dumps({"signals": n_signals, "pairs": n_pairs}))
