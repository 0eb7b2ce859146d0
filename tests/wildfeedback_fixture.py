"""Load the hand-labelled real feedback turns (labels only in tests/fixtures/) with their texts from ../shared.

``tests/fixtures/wildchat_labels.jsonl`` (the headline set): every user turn after the first in all 582
multi-turn WildChat conversations of ``wildchat_sample/conversations.jsonl`` (no cherry-picking), 1,803 turns
labelled by hand against ``SIGNALS_RUBRIC.md`` before any detector ran on them: 1,001 turns of the first 340
conversations in sha1(id) order first, the other 802 turns (242 conversations) in a second round, after two
rounds of rule tuning on the first round's dev part. Rows are sorted by conversation id and turn. Each row: ``conversation_id``, ``user_turn`` (message index), ``split`` (dev | test, see
`wildchat_split`), sat/dsat, categories, ``ambiguous``, ``kind`` (how a DSAT shows: explicit_complaint,
resend, insist_after_refusal, imperative_edit, factual_challenge, more_detail, misread_correction, other)
and ``language``. Rules are tuned on ``dev`` only; ``test`` is read only to report.

``tests/fixtures/wildchat_labels_second.jsonl``: 421 of those ``test`` turns labelled a second time, blind to
the first labels and to the rules (see `load_wildchat_second`); bench/signals_agreement.py measures how far
the two labellings agree.

``tests/fixtures/wildfeedback_labels.jsonl`` (the older set, OpenAssistant / HH-RLHF turns the first
patterns were tuned on; not representative of chatbot logs). Texts are looked up by id:
- ``oasst_en100``: ``tree_id`` + ``message_id`` of a prompter message whose parent is an assistant message
  (``oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl``); ``prev`` is that parent's text.
- ``hh_rlhf_harmless_test``: ``transcript`` = 0-based record of ``hh_rlhf/harmless-base/test.jsonl.gz``
  (the ``chosen`` transcript), ``human_turn`` = 0-based index among its Human turns; ``prev`` is the
  Assistant turn just before it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import polars as pl

from stages.wildfeedback_rules import ROUTE_BELOW

FIXTURE = Path(__file__).parent / "fixtures" / "wildfeedback_labels.jsonl"
OASST = "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl"
HH = "hh_rlhf/harmless-base/test.jsonl.gz"
WILDCHAT_FIXTURE = Path(__file__).parent / "fixtures" / "wildchat_labels.jsonl"
WILDCHAT = "wildchat_sample/conversations.jsonl"
WILDCHAT_SECOND_FIXTURE = Path(__file__).parent / "fixtures" / "wildchat_labels_second.jsonl"
LABEL_SCHEMA = {"sat": pl.Boolean, "dsat": pl.Boolean, "sat_categories": pl.List(pl.String),
                "dsat_categories": pl.List(pl.String), "ambiguous": pl.Boolean}


def wildchat_split(conversation_id: str) -> str:
    """dev or test: one bit of sha256("wildchat-split:" + id), so a conversation's turns stay together."""
    return "test" if hashlib.sha256(f"wildchat-split:{conversation_id}".encode()).digest()[0] & 1 else "dev"


def _oasst_turns(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        tree = json.loads(line)
        stack = [(tree["prompt"], None)]
        while stack:
            msg, parent = stack.pop()
            if msg["role"] == "prompter" and parent is not None and parent["role"] == "assistant":
                out[(tree["message_tree_id"], msg["message_id"])] = (msg["text"], parent["text"])
            stack.extend((r, msg) for r in msg.get("replies", []))
    return out


def _hh_turns(path: Path) -> dict[tuple[int, int], tuple[str, str]]:
    out = {}
    records = [json.loads(x) for x in gzip.decompress(path.read_bytes()).split(b"\n") if x.strip()]
    for ri, rec in enumerate(records):
        parts = re.split(r"\n\n(Human|Assistant): ", rec["chosen"])
        msgs = list(zip(parts[1::2], parts[2::2], strict=True))
        human = [i for i, (role, _) in enumerate(msgs) if role == "Human"]
        for k, i in enumerate(human):
            if k and msgs[i - 1][0] == "Assistant":
                out[(ri, k)] = (msgs[i][1], msgs[i - 1][1])
    return out


def load_labelled(real: Path) -> list[dict]:
    """Fixture rows with ``text`` and ``prev`` filled in from the real data (KeyError if an id is gone)."""
    oasst, hh = _oasst_turns(real / OASST), _hh_turns(real / HH)
    rows = []
    for line in FIXTURE.read_text().splitlines():
        row = json.loads(line)
        if row["source"] == "oasst_en100":
            row["text"], row["prev"] = oasst[(row["tree_id"], row["message_id"])]
        else:
            row["text"], row["prev"] = hh[(row["transcript"], row["human_turn"])]
        rows.append(row)
    return rows


def wildchat_conversations(real: Path, ids: set[str] | None = None) -> pl.DataFrame:
    """The shared WildChat sample as ``conversation_id`` + ``messages`` (list of {role, content})."""
    rows = []
    for line in (real / WILDCHAT).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if ids is None or rec["id"] in ids:
                msgs = [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]
                rows.append({"conversation_id": rec["id"], "messages": msgs})
    return pl.DataFrame(rows, schema={"conversation_id": pl.String, "messages": pl.List(
        pl.Struct({"role": pl.String, "content": pl.String}))})


def load_wildchat(real: Path) -> pl.DataFrame:
    """The WildChat fixture with the texts detect() reads, as the stage's ``feedback_turns`` gives them (so the
    scores are the stage's): ``text`` (the labelled user turn), ``prev`` (the assistant turn it answers),
    ``prev_user`` and ``prev_user2`` (the user turns two and four messages before, null for none)."""
    from stages.wildfeedback import feedback_turns

    labels = pl.read_ndjson(WILDCHAT_FIXTURE, schema={
        "source": pl.String, "conversation_id": pl.String, "user_turn": pl.Int64, "split": pl.String,
        **LABEL_SCHEMA, "kind": pl.String, "language": pl.String})
    conv = wildchat_conversations(real, set(labels["conversation_id"])).with_columns(source=pl.lit("wildchat"))
    turns = feedback_turns(conv).select("conversation_id", "user_turn", "text", "prev", "prev_user", "prev_user2")
    out = labels.join(turns, on=["conversation_id", "user_turn"], how="left")
    missing = out.filter(pl.col("text").is_null() | pl.col("prev").is_null())
    if missing.height:
        raise KeyError(f"{WILDCHAT_FIXTURE}: {missing.height} labelled turns not found in {real / WILDCHAT}, "
                       f"first {missing.row(0, named=True)['conversation_id']}; is ../shared up to date?")
    return out


def load_wildchat_second() -> pl.DataFrame:
    """``tests/fixtures/wildchat_labels_second.jsonl``: a second, blind labelling of 421 ``test`` turns (the
    128 test conversations with the smallest sha256(conversation_id) hex, taken in that order until >= 420
    turns), by another session reading the same rubric without seeing the first labels or the rules' verdicts.
    Ids and labels only, in the first fixture's order and columns (no split, kind or language)."""
    return pl.read_ndjson(WILDCHAT_SECOND_FIXTURE, schema={
        "source": pl.String, "conversation_id": pl.String, "user_turn": pl.Int64, **LABEL_SCHEMA})


def stage_conversations(real: Path, ids: set[str], params=None) -> pl.DataFrame:
    """The labelled WildChat conversations as ingest hands them to the WildFeedback stage: each record of the
    sample through the ingest adapter of params.yaml's first ``wildfeedback.sources`` source (``wildchat``:
    messages, ``language`` and ``toxic`` / ``redacted`` flags read from the record's top level, which the sample
    leaves empty) and ingest's own validation (``stages.ingest_read.validate_rows``: the conversations contract, whose
    turns alternate user / assistant); ``conversation_id`` stays the sample's id (the fixture's key). A record
    ingest rejects (``BadRecord``: an empty user message, turns out of order) is left out, as ingest leaves it out."""
    import pyarrow as pa

    from pipeline.adapters import BadRecord, Ctx, adapt
    from pipeline.records import SCHEMAS
    from stages.ingest_read import validate_rows

    params = params or stage_params()
    name = params.wildfeedback.sources[0]
    src = next(s for s in params.ingest.sources if s.name == name)
    rows = []
    for i, line in enumerate((real / WILDCHAT).read_text(encoding="utf-8").splitlines()):
        if line.strip() and (rec := json.loads(line))["id"] in ids:
            try:
                (row,) = validate_rows(adapt(rec, Ctx.for_source(src, WILDCHAT, i + 1)))["conversations"]
            except BadRecord:
                continue
            rows.append({**row, "conversation_id": rec["id"]})
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=SCHEMAS["conversations"]))


def stage_params():
    """The project's params.yaml, as ``prefpipe run`` resolves it."""
    from pipeline.config import load_params

    return load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def detect_wildchat(real: Path) -> pl.DataFrame:
    """The WildChat fixture with the rules' verdicts as the stage gives them (``rules_signals`` with params.yaml's
    ``wildfeedback`` settings): ``p_sat``, ``p_dsat``, ``p_sat_categories``, ``p_dsat_categories``, ``rationale``
    and ``confidence`` beside the hand labels; ``stage_judges``: whether the stage, run with params.yaml on these
    conversations as ingest gives them, judges the turn at all (its ``scan``: languages, ``min_user_turns``,
    ``drop_flags``; a turn it does not judge never gets a signal); ``ingested``: whether ingest accepts the
    turn's conversation."""
    from stages.wildfeedback import rules_signals, scan

    params = stage_params()
    rows = load_wildchat(real)
    out = rules_signals(rows.select("text", "prev", "prev_user", "prev_user2"), params.wildfeedback)
    conv = stage_conversations(real, set(rows["conversation_id"]), params)
    judged, _, _ = scan(conv, params.wildfeedback)
    judged = judged.select("conversation_id", "user_turn", stage_judges=pl.lit(True))
    rows = rows.join(judged, on=["conversation_id", "user_turn"], how="left", maintain_order="left").with_columns(
        ingested=pl.col("conversation_id").is_in(conv["conversation_id"].implode()))
    rows = rows.with_columns(pl.col("stage_judges").fill_null(False))
    return rows.hstack(out.select(
        p_sat="sat", p_dsat="dsat", p_sat_categories="sat_categories", p_dsat_categories="dsat_categories",
        rationale="rationale", confidence="confidence"))


def _prf(gold: pl.Series, pred: pl.Series) -> dict:
    tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "tp": tp, "fp": fp, "fn": fn}


def wildchat_scores(frame: pl.DataFrame) -> dict:
    """Scores of the rules on labelled turns (a `detect_wildchat` frame, or a part of it).

    ``sat`` / ``dsat``: precision, recall, tp, fp, fn per polarity; ``categories``: the same per category
    (a turn counts for each category it carries); ``kinds``: gold DSAT turns per kind and how many the rules
    flag as DSAT; ``languages``: DSAT scores on English and on other turns; ``confidence``: per band of
    the rules' confidence, turns and the share whose verdict (sat, dsat) is right.
    """
    out: dict = {"turns": frame.height}
    for pol in ("sat", "dsat"):
        out[pol] = _prf(frame[pol], frame[f"p_{pol}"])
    cats = {}
    for pol in ("sat", "dsat"):
        gold, pred = frame[f"{pol}_categories"], frame[f"p_{pol}_categories"]
        for c in sorted({c for lst in gold.to_list() + pred.to_list() for c in lst}):
            cats[c] = _prf(gold.list.contains(c), pred.list.contains(c))
    out["categories"] = cats
    kinds = frame.filter(pl.col("dsat")).group_by(pl.col("kind").fill_null("unmarked")).agg(
        pl.len().alias("n"), pl.col("p_dsat").sum().alias("found")).sort("n", "kind", descending=[True, False])
    out["kinds"] = {k: {"n": n, "found": f, "recall": f / n} for k, n, f in kinds.iter_rows()}
    english = frame["language"] == "en"
    out["languages"] = {"en": _prf(frame.filter(english)["dsat"], frame.filter(english)["p_dsat"]),
                        "other": _prf(frame.filter(~english)["dsat"], frame.filter(~english)["p_dsat"])}
    right = (frame["sat"] == frame["p_sat"]) & (frame["dsat"] == frame["p_dsat"])
    labels = ["< 0.7", "0.7-0.8", "0.8-0.9", ">= 0.9"]
    bands = frame.select(pl.col("confidence").cut([0.7, 0.8, 0.9], labels=labels, left_closed=True).alias("band"),
                         right.alias("right"))
    counts = {b: (n, r) for b, n, r in bands.group_by("band").agg(pl.len(), pl.col("right").mean()).iter_rows()}
    out["confidence"] = {b: {"turns": counts[b][0], "right": counts[b][1]} for b in labels if b in counts}
    unsure = frame["confidence"] < ROUTE_BELOW
    missed, false = frame["dsat"] & ~frame["p_dsat"], ~frame["dsat"] & frame["p_dsat"]
    out["routing"] = {"below": ROUTE_BELOW, "turns": int(unsure.sum()), "dsat_missed": int(missed.sum()),
                      "dsat_missed_below": int((missed & unsure).sum()), "dsat_false": int(false.sum()),
                      "dsat_false_below": int((false & unsure).sum()),
                      # rules+llm (combine: add_recall) with a model that judged every routed turn as the labellers
                      # did: the ceiling of routing, whatever the model (the recall sample left out)
                      "dsat_if_routed_right": _prf(frame["dsat"], pl.select(
                          pl.when(unsure).then(frame["dsat"]).otherwise(frame["p_dsat"])).to_series())}
    return out


# --- hand-written turns ------------------------------------------------------------------------------


def detect_turns(rows: list[tuple]) -> list[dict]:
    """The rules' verdict per (text, prev, prev_user) or (text, prev, prev_user, prev_user2) row."""
    from stages.wildfeedback_rules import detect

    rows = [(*r, None)[:4] for r in rows]
    frame = pl.DataFrame(rows, schema={"text": pl.String, "prev": pl.String, "prev_user": pl.String,
                                       "prev_user2": pl.String}, orient="row")
    return detect(frame).to_dicts()


def assert_cue_family(name: str, category: str, positives: list[str], negatives: list[str], rows: list[dict]) -> None:
    """``rows`` = verdicts on ``positives + negatives``: every positive names ``category:name`` in its rationale,
    no negative (a new task that shares the cue's words) carries any ``category`` cue."""
    for text, row in zip(positives, rows[: len(positives)], strict=True):
        assert f"{category}:{name}" in (row["rationale"] or ""), f"{name} missed: {text!r} -> {row['rationale']}"
    for text, row in zip(negatives, rows[len(positives):], strict=True):
        fired = [r for r in (row["rationale"] or "").split("; ") if r.startswith(f"{category}:")]
        assert not fired, f"{name}: new task {text!r} -> {fired}"
