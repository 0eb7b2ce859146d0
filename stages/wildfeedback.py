"""WildFeedback (Shi et al. 2024, METHODS.md section 1): preferences mined from real conversation logs.

    gates -> select -> feedback turns -> signals (rules | llm | rules+llm) -> preference summaries -> pairs
          -> checklist judge

Modules: this driver; ``wildfeedback_rules`` (the rules detector), ``wildfeedback_detect`` (the model
detector and how its verdicts combine with the rules'), ``wildfeedback_pairs`` (summaries, pairs, judge, in order),
``wildfeedback_models`` (their model steps and the judge gate), ``wildfeedback_output`` (the pairs table, built
from columns), ``wildfeedback_fit`` (does a chosen answer fit its prompt), ``wildfeedback_report`` (metrics,
collapse warnings and the console line) and ``wildfeedback_common`` (what they share).
Before any real row is labelled, each model judge the run uses proves on built-in probes that it
discriminates (``gates``; ``pipeline/gates.py``).

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
``data/wildfeedback/pairs`` (pairs, method "wildfeedback"), ``data/wildfeedback/test`` (the paper's held-out
test set, taken out of the pairs: ``stages/wildfeedback_testset.py``), ``data/wildfeedback/rejects`` (turns a model
step failed on, and every dropped summary and pair with its texts in ``raw``, with the reason) and
``data/wildfeedback/metrics.json`` (headline numbers) and ``details.json`` (those, ``gates`` and every figure under
``details``).
When the model steps leave far less than the rules alone found (``collapse_fraction``), or no pair comes
out of DSAT signals, the stage says so on the console and in ``collapse_warnings``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.config import Params, Wildfeedback, resolve_role, section_roles
from pipeline.dedup import user_turns
from pipeline.errors import StageError
from pipeline.execute import clear_checkpoints, map_batches, step_checkpoint
from pipeline.io import ShardWriter, iter_batches, shard_sizes
from pipeline.langid import UNDETERMINED, detect_languages
from pipeline.llm.identity import model_identities
from pipeline.metrics import announce_overrides, counted, say, write_metrics
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import SCHEMAS, check_table
from stages.wildfeedback_common import CHECKPOINTS, IN, OUT, PAIRS_STREAM, output_fingerprint, prompt
from stages.wildfeedback_detect import combine, detector_gate, detector_stats, llm_detect, route, with_context
from stages.wildfeedback_models import judge_gate
from stages.wildfeedback_pairs import build_pairs, natural_revisions
from stages.wildfeedback_report import add_metrics, collapse_warnings, console_line, headline
from stages.wildfeedback_rules import DSAT_CATEGORIES, SAT_CATEGORIES, detect
from stages.wildfeedback_testset import split_test_set

log = logging.getLogger(__name__)


# --- step 0: select -------------------------------------------------------------------------------


def conversation_languages(conv: pl.DataFrame, detect: bool) -> pl.Series:
    """Each conversation's language: its source tag (lower-cased), else, with ``detect``, the language
    py3langid identifies in its user turns (``pipeline.langid``; ``und`` when nothing is identifiable)."""
    tagged = conv["language"].str.to_lowercase().str.strip_chars()
    if not detect or tagged.null_count() == 0:
        return tagged.alias("_lang")
    untagged = conv.filter(tagged.is_null())
    user_text = untagged.select(user_turns("messages").list.join("\n")).to_series()
    detected = pl.Series(untagged["conversation_id"]).to_frame().with_columns(_lang=detect_languages(user_text))
    found = conv.select("conversation_id").join(detected, on="conversation_id", how="left", maintain_order="left")
    return tagged.fill_null(found["_lang"]).alias("_lang")


def check_sources(path: Path, sources: list[str]) -> None:
    """Stop when ``path`` holds no conversation of ``wildfeedback.sources`` (sources ingest wrote no row for: params
    validation stops a name of another kind first), as PUGC does, instead of writing empty outputs as if the log held no feedback.
    Reads the ``source`` column only."""
    present: set[str] = set()
    for batch in iter_batches(path, columns=["source"]):
        present.update(batch.column(0).unique().to_pylist())
    if not present & set(sources):
        raise StageError(f"{path}: no conversations from wildfeedback.sources {sources}; sources present: "
                         f"{sorted(present)}: ingest wrote no conversations of them (see {path.parent / 'details.json'}"
                         ": an empty file?), or has not run since they were added to ingest.sources: run `dvc repro`")


def select_conversations(conv: pl.DataFrame, cfg: Wildfeedback) -> tuple[pl.DataFrame, Counter]:
    """Conversations of the configured sources that pass language / flag / user-turn filters.

    Returns the kept rows and a Counter: ``in`` (rows of the configured sources), ``selected``, one key
    per drop reason (the first failing check names the reason) and ``language:<code>`` per language.
    """
    conv = conv.filter(pl.col("source").is_in(cfg.sources))
    conv = conv.with_columns(conversation_languages(conv, cfg.detect_language))
    lang = pl.col("_lang")
    # The contract guarantees user/assistant alternation after an optional system message.
    has_system = (pl.col("messages").list.first().struct.field("role") == "system").cast(pl.Int64)
    n_user = (pl.col("messages").list.len() - has_system + 1) // 2
    unknown = lang.is_null() | (lang == UNDETERMINED)
    bad_lang = (unknown & (not cfg.keep_unknown_language)) | (~unknown & ~lang.is_in([x.lower() for x in cfg.languages]))
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
    for code, n in conv.group_by(lang.fill_null(UNDETERMINED)).len().iter_rows():
        counts[f"language:{code}"] += n
    return conv.filter(pl.col("_reason").is_null()).drop("_reason", "_lang"), counts


# --- step 1: feedback turns and signals -----------------------------------------------------------


def feedback_turns(conv: pl.DataFrame) -> pl.DataFrame:
    """Every user turn that answers an assistant turn: conversation_id, source, user_turn, target_turn, text,
    prev (the assistant turn it answers), and the rules' context: prev_user and prev_user2, the messages two
    and four before the turn when they are the user's (the earlier requests; null otherwise)."""
    ex = (
        conv.select("conversation_id", "source", "messages")
        .with_columns(pl.int_ranges(0, pl.col("messages").list.len(), dtype=pl.Int64).alias("user_turn"))
        .explode(["messages", "user_turn"])
        .select(
            "conversation_id", "source", "user_turn",
            pl.col("messages").struct.field("role").alias("role"),
            pl.col("messages").struct.field("content").alias("text"),
        )
    )

    def user_text_before(k: int) -> pl.Expr:
        # user_turn >= k keeps shift() from reading across a conversation boundary.
        return pl.when((pl.col("user_turn") >= k) & (pl.col("role").shift(k) == "user")).then(pl.col("text").shift(k))

    ex = ex.with_columns(prev_role=pl.when(pl.col("user_turn") >= 1).then(pl.col("role").shift(1)),
                         prev=pl.col("text").shift(1), prev_user=user_text_before(2), prev_user2=user_text_before(4))
    keep = (pl.col("role") == "user") & (pl.col("prev_role") == "assistant")
    return ex.filter(keep).select(
        "conversation_id", "source", "user_turn", (pl.col("user_turn") - 1).alias("target_turn"), "text", "prev",
        "prev_user", "prev_user2",
    )


def rules_signals(turns: pl.DataFrame, cfg: Wildfeedback) -> pl.DataFrame:
    """Rule verdicts for every turn (sat, dsat, categories, rationale = the patterns that fired, and the
    rules' ``confidence`` when they give one: null counts as confident)."""
    out = detect(turns, paste_min_chars=cfg.paste_min_chars, window_chars=cfg.window_chars)
    if "confidence" not in out.columns:
        out = out.with_columns(confidence=pl.lit(None, dtype=pl.Float64))
    return out.with_columns(detector=pl.lit("rules"), confidence=pl.col("confidence").cast(pl.Float64))


def judge_selected(selected: pl.DataFrame, cfg: Wildfeedback) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Rule verdicts for the selected conversations' feedback turns.

    Returns (turns with rule verdicts and a ``to_model`` flag (``route``), the conversations that have a
    turn flagged or sent to the model, the number of turns judged)."""
    turns = rules_signals(feedback_turns(selected), cfg)
    # Texts are dropped here and read back from the kept conversations when needed, so what a batch
    # leaves in memory is one small row per judged turn plus the conversations worth keeping.
    turns = turns.with_columns(route(turns, cfg).alias("to_model")).drop("text", "prev", "prev_user", "prev_user2")
    keep_ids = turns.filter(pl.col("sat") | pl.col("dsat") | pl.col("to_model"))["conversation_id"].unique()
    return turns, selected.filter(pl.col("conversation_id").is_in(keep_ids.implode())), turns.height


def scan(conv: pl.DataFrame, cfg: Wildfeedback) -> tuple[pl.DataFrame, pl.DataFrame, Counter]:
    """Select + rule verdicts for one batch of conversations: (judged turns, kept conversations, counts)."""
    selected, counts = select_conversations(conv, cfg)
    turns, kept, counts["turns"] = judge_selected(selected, cfg)
    return turns, kept, counts


def category_counts(signals: pl.DataFrame) -> dict[str, dict[str, int]]:
    out = {}
    for col, cats in (("sat_categories", SAT_CATEGORIES), ("dsat_categories", DSAT_CATEGORIES)):
        counts = dict(signals.select(pl.col(col).explode().drop_nulls().value_counts()).unnest(col).iter_rows())
        out[col] = {c: int(counts.get(c, 0)) for c in cats}
    return out


# --- driver ---------------------------------------------------------------------------------------


def scanned_partitions(path: Path, cfg: Wildfeedback, batch_rows: int,
                       size: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame, Counter]]:
    """Stream the conversations shard set in batches of ``batch_rows``, selecting batch by batch and judging
    the selected conversations ``cfg.rules_batch_conversations`` at a time, in partitions of ``size``
    conversations (the last fewer): (turns with rule verdicts, conversations worth keeping, counts) per partition.

    The shard set is sorted by conversation_id, so a partition is an id range and the same rows always split
    the same way, whatever ``batch_rows`` and the shards (model steps batch within a partition, so its bounds
    reach a real model's scores); rule verdicts are per turn, so the rules batch changes nothing but speed.
    The last conversations of a partition, a quarter of a rules batch or fewer, join the call before rather than
    pay a call of their own (each call compiles the cue regexes again, ~0.3 s), so a call holds at most 1.25x
    ``rules_batch_conversations`` and a read batch; the input's last partition, which ends before ``size``
    conversations, still judges its tail on its own (the input is not counted first). An empty input still gives
    one (empty) partition."""
    turns, convs, counts, n = [], [], Counter(), 0
    waiting, n_waiting = [], 0  # selected conversations not judged yet

    def judge_waiting() -> None:
        nonlocal waiting, n_waiting
        if waiting:
            t, c, judged = judge_selected(pl.concat(waiting), cfg)
            counts["turns"] += judged
            turns.append(t)
            convs.append(c)
        waiting, n_waiting = [], 0

    def partition() -> tuple[pl.DataFrame, pl.DataFrame, Counter]:
        nonlocal turns, convs, counts, n
        judge_waiting()
        if not turns:  # an empty input: the empty frames of an empty batch
            t, c, _ = judge_selected(select_conversations(_empty(), cfg)[0], cfg)
            turns, convs = [t], [c]
        out = pl.concat(turns), pl.concat(convs), counts
        turns, convs, counts, n = [], [], Counter(), 0
        return out

    parts = 0
    for batch in iter_batches(path, batch_size=min(batch_rows, size)):
        while batch.num_rows:
            piece, batch = batch.slice(0, size - n), batch.slice(size - n)
            selected, k = select_conversations(pl.from_arrow(pa.Table.from_batches([piece])), cfg)
            counts.update(k)
            waiting.append(selected)
            n_waiting += selected.height
            n += piece.num_rows
            if n_waiting >= cfg.rules_batch_conversations and size - n > cfg.rules_batch_conversations // 4:
                judge_waiting()
            if n >= size:
                parts += 1
                yield partition()
    if n or not parts:
        yield partition()


def _empty() -> pl.DataFrame:
    return pl.from_arrow(SCHEMAS["conversations"].empty_table())


def run_detector(turns: pl.DataFrame, convs: pl.DataFrame, params: Params,
                 ckpt_root: Path = CHECKPOINTS) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The model's verdicts on the routed turns, combined with the rules' (``combine``)."""
    cfg = params.wildfeedback
    role = resolve_role(params.llm, cfg.roles.detector)
    send = turns.filter(pl.col("to_model"))
    judged = None
    if send.height:
        table = with_context(send, convs, cfg.context_messages).select(
            "conversation_id", "user_turn", "text", "prev", "context").to_arrow()
        ck = step_checkpoint(ckpt_root, "detect", cfg, role)
        out = map_batches(table, llm_detect, execution=params.execution, engine=role, checkpoint=ck, desc="wildfeedback detect (detector)",
                          fn_kwargs={"sampling": role.sampling, "template_text": prompt("detect"),
                                     "max_chars": cfg.max_message_chars, "context_messages": cfg.context_messages})
        judged = pl.from_arrow(out)
    signals, failed = combine(turns, judged, cfg.detector, cfg.combine)
    return signals, failed, detector_stats(turns, judged, signals)


def run_partition(turns: pl.DataFrame, convs: pl.DataFrame, counts: Counter, params: Params, ckpt_root: Path,
                  judge_usable: bool = True):
    """Every step after the scan on one partition of conversations: (signals, pairs, rejects, metrics)."""
    signals, failed, det_stats = run_detector(turns, convs, params, ckpt_root)
    rules_only = turns.filter(pl.col("sat") | pl.col("dsat"))
    pairs, rejects, pair_stats = build_pairs(signals, convs, params, failed, ckpt_root, judge_usable)
    positive = signals.filter(pl.col("sat") | pl.col("dsat"))
    metrics = {
        "conversations": {k: counts.get(k, 0) for k in
                          ("in", "selected", "dropped_language", "dropped_flagged", "dropped_min_user_turns")},
        "languages": {k.split(":", 1)[1]: n for k, n in sorted(counts.items()) if k.startswith("language:")},
        "turns_judged": counts.get("turns", 0),
        "signals": {
            "turns_sat": int(signals["sat"].sum()), "turns_dsat": int(signals["dsat"].sum()),
            "turns_with_signal": positive.height,
            "conversations_with_signal": positive["conversation_id"].n_unique(),
            "by_detector": {d: n for d, n in positive.group_by("detector").len().iter_rows()},
            **category_counts(signals),
        },
        "rules": {"turns_sat": int(rules_only["sat"].sum()), "turns_dsat": int(rules_only["dsat"].sum()),
                  "turns_with_signal": rules_only.height,
                  "natural_revisions": natural_revisions(rules_only, convs).height, **category_counts(rules_only)},
        "model_detector": det_stats,
        **pair_stats,
    }
    return check_table(signals.to_arrow(), "signals"), pairs, rejects, metrics


def run_gates(params: Params, ckpt_root: Path = CHECKPOINTS) -> tuple[dict, Params, bool]:
    """The judge gates, before any real row is labelled: (reports, params to run with, judge usable); their
    probe calls resume from checkpoints under ``ckpt_root``, as the model steps do.

    A detector withheld by its gate (``on_gate_failure: withhold``) leaves the rules alone in charge."""
    gates = {}
    report = detector_gate(params, ckpt_root)
    if report is not None:
        gates["detector"] = report
        if not report["passed"]:
            cfg = params.wildfeedback.model_copy(update={"detector": "rules"})
            params = params.model_copy(update={"wildfeedback": cfg})
    report = judge_gate(params, ckpt_root)
    if report is not None:
        gates["judge"] = report
    return gates, params, report is None or report["passed"]


def main(params: Params) -> None:
    """Partition by partition (``wildfeedback.partition_conversations``), streamed into the shard sets.

    Every step works per conversation, so a partition holds everything its pairs need; memory is
    bounded by one partition whatever the log's size.
    """
    configured = params.wildfeedback.detector
    overrides = announce_overrides(params, "wildfeedback")
    check_sources(IN, params.wildfeedback.sources)  # before the judge gates: with a real model, minutes
    gates, params, judge_usable = run_gates(params)
    cfg, ex = params.wildfeedback, params.execution
    models = model_identities(section_roles(params, "wildfeedback"))  # the weights each role runs (details.json, card)
    fp = output_fingerprint(params)
    sizes = shard_sizes(ex, spill_bytes=ex.spill_bytes, fingerprint=fp)
    metrics: dict = {}
    out = begin_outputs(OUT)  # signals, pairs, rejects and metrics change together (pipeline/outputs.py)
    with (ShardWriter(out / "signals", name="signals", **sizes) as signals_out,
          ShardWriter(out / PAIRS_STREAM, name="pairs", **sizes) as pairs_out,
          ShardWriter(out / "rejects", name="rejects", **sizes) as rejects_out):
        parts = scanned_partitions(IN, cfg, ex.batch_size, cfg.partition_conversations)
        for i, (turns, convs, counts) in enumerate(parts):
            signals, pairs, rejects, part = run_partition(turns, convs, counts, params, CHECKPOINTS / f"part-{i:05d}",
                                                          judge_usable)
            signals_out.write(signals)
            pairs_out.write(pairs)
            rejects_out.write(rejects)
            metrics = add_metrics(metrics, part)
            log.info("partition %d: %s, %s", i, counted(part["conversations"]["in"], "conversation"),
                     counted(pairs.num_rows, "pair"))
    # The paper's held-out test set is chosen over every pair: they leave pairs for data/wildfeedback/test.
    test_set = split_test_set(out / PAIRS_STREAM, out, cfg.test_set, sizes)
    metrics["pairs"]["out"] = test_set["pairs_kept"]
    for kind, n in test_set["held_out_by_kind"].items():
        metrics["pairs"]["out_by_kind"][kind] -= n
    metrics.update(partitions=i + 1, detector=configured, detector_used=cfg.detector, combine=cfg.combine,
                   tiny_overrides=overrides, test_set=test_set)
    warnings = collapse_warnings(metrics, cfg, cfg.detector)
    for w in warnings:
        say(f"wildfeedback: output collapsed: {w}")
    numbers, summary = headline(metrics, gates, warnings)
    summary["models"] = models
    write_metrics(out, numbers, summary)
    commit_outputs(OUT)
    clear_checkpoints("wildfeedback")
    log.info("%s, %s", counted(metrics["signals"]["turns_with_signal"], "signal"), counted(summary["pairs"], "pair"))
    print(console_line(summary))
