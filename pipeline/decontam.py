"""Keep evaluation and held-out prompts out of a release, on prompt keys (hashes of normalised prompts).

- ``contamination`` / ``decontaminate``: prompts whose word n-grams overlap an evaluation prompt
  (overlap = shared n-grams / n-grams of the shorter text; a CJK character is a word) go, naming the eval set and prompt id.
  An eval prompt is compared without ShareGPT's regenerate counter ("3 / 3Write a funny ... poem for Women's Day.",
  ``pipeline.regenerate``), as ingest writes the release's prompts: glued on, it hid a short prompt's clean text.
- ``load_held_out`` / ``drop_held_out``: prompts some stage held out for testing (Selfie's
  ``data/selfie/test``) never reach a train split; the key is the same normalised-prompt hash the
  de-duplication uses, so a DOVE or Curry pair built from the same prompt is caught. The release keys
  its prompts after redacting them, so the held-out prompts are redacted the same way (``pii_kinds``)
  before theirs are taken: a held-out prompt holding an email address still matches.

The release's own test prompts are kept out of its train split by ``pipeline.split_leaks``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup import no_removals, prompt_keys, removals
from pipeline.errors import unreadable_parquet
from pipeline.io import SourceError, StageError, iter_batches, iter_records, shard_files
from pipeline.pii import PHONE_REGIONS, redact
from pipeline.pii_structured import redact_messages, without_local_paths
from pipeline.regenerate import without_counter
from pipeline.text import cjk_words, ngram_hashes, normalise, word_counts

log = logging.getLogger(__name__)

class ReleaseInputError(StageError):
    """An evaluation or held-out set the release depends on cannot be read; the message says what to do."""


# --- evaluation sets -------------------------------------------------------------------------------


def _field_texts(value: Any, field: str) -> tuple[list[str], str | None]:
    """Eval prompt text(s) from a field: a string, a list of strings (turns) or a list of {content} messages (content
    a string or text parts); and why part of it cannot be read, or None. Each turn is a prompt the release must not
    hold, so a turn that cannot be read (a null, a number, white space) makes its record count as unread; it was
    left out without a word."""
    items = value if isinstance(value, list) and value else [value]
    texts, why = [], None
    for i, v in enumerate(items):
        if isinstance(v, dict):
            v = v.get("content")
            if isinstance(v, list) and v and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in v):
                v = "\n".join(p["text"] for p in v)  # text parts, joined as ingest joins them
        if isinstance(v, str) and v.strip():
            texts.append(v)
        elif why is None:
            where = f"{field}[{i}]" if isinstance(value, list) and value else field
            why = f"no text in field {where!r}" + (f" (it is {type(v).__name__})" if not isinstance(v, str) else "")
    return texts, why


def _eval_id(value: Any, row: int) -> str:
    """An eval prompt's id as removed.jsonl names it: ``row<N>`` when it has none (a null was "None"), a whole float
    as its integer (``81.0``, as pandas writes an id column with a gap, is 81)."""
    if value is None or value == "":
        return f"row{row}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def prompts_sha256(ids: list[str], texts: list[str]) -> str:
    """sha256 of a set's (id, prompt) list as read: what the release was checked against, whatever the file's
    encoding or location (``dvc repro`` does not track the sets' files, which may lie outside the repository).

    >>> prompts_sha256(["q1"], ["Hello"])[:12]
    'd70b21c048a3'
    """
    return hashlib.sha256(json.dumps([ids, texts], ensure_ascii=False).encode()).hexdigest()


def load_eval_sets(sets: list) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """(eval_set, eval_id, text) of every evaluation prompt, and a status per set for stats and card."""
    rows: dict[str, list[str]] = {"eval_set": [], "eval_id": [], "text": []}
    status: dict[str, dict[str, Any]] = {}
    for s in sets:
        before, unread, first = len(rows["text"]), 0, ""
        try:
            for raw in iter_records(s.path):
                value = raw.value if raw.error is None and isinstance(raw.value, dict) else None
                texts, why_not = _field_texts(value.get(s.text_field), s.text_field) if value is not None else ([], None)
                if why_not or not texts:  # a prompt that cannot be read cannot be kept out of the release: counted
                    unread += 1
                    first = first or f"{Path(raw.file).name}:{raw.row}: " + (raw.error or why_not or
                                                                             f"record is {type(raw.value).__name__}, "
                                                                             "expected a JSON object")
                if not texts:
                    continue
                base = _eval_id(raw.value.get(s.id_field), raw.row)
                for i, t in enumerate(texts):
                    rows["eval_set"].append(s.name)
                    rows["eval_id"].append(base if len(texts) == 1 else f"{base}#turn{i + 1}")
                    rows["text"].append(t)
        except (SourceError, OSError) as e:
            del rows["eval_set"][before:], rows["eval_id"][before:], rows["text"][before:]
            if not s.optional:
                raise ReleaseInputError(
                    f"decontamination set {s.name!r} ({s.path}) cannot be read: {e}. Fix the path, or set "
                    f"`optional: true` under export.decontamination.sets to build without it."
                ) from e
            # the status is published (card, details.json): the log below keeps the full path, the status its name
            status[s.name] = {"prompts": 0, "status": f"unavailable: {without_local_paths(str(e))}"}
            log.warning("export: decontamination set %s unavailable: %s", s.name, e)
            continue
        n = len(rows["text"]) - before
        why = (f"{unread} record(s) without a prompt (first: {first})" if unread
               else "" if n else f"no text in field {s.text_field!r}")
        if why and not s.optional:
            raise ReleaseInputError(
                f"decontamination set {s.name!r} ({s.path}): {why}; the release cannot be checked against a prompt "
                "it cannot read. Fix the set (or its text_field), or set `optional: true` under "
                "export.decontamination.sets to build without those prompts.")
        if why:
            log.warning("export: decontamination set %s: %s", s.name, why)
        status[s.name] = {"prompts": n, "prompts_sha256": prompts_sha256(rows["eval_id"][before:], rows["text"][before:]),
                          "status": f"ok; {why}" if n and why else why or "ok"}
    return pl.DataFrame(rows, schema={"eval_set": pl.String, "eval_id": pl.String, "text": pl.String}), status


def release_eval_prompts(sets: list, pii_kinds: list[str], phone_regions: tuple[str, ...] = PHONE_REGIONS,
                         root: Path | None = None) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """``load_eval_sets`` with each prompt as the release's own are: without ShareGPT's regenerate counter (ingest
    takes it off user turns; 13 of Koala's prompts hold one) and redacted (``pii_kinds``), since the two are
    compared so: what export decontaminates against and the audit checks the release against. The sets' sha256
    stays that of the prompts as read.
    ``root``: the project folder a relative local path is read from (None: the current folder)."""
    if root is not None:
        sets = [s if "://" in s.path or Path(s.path).is_absolute() else s.model_copy(update={"path": str(root / s.path)})
                for s in sets]
    evals, status = load_eval_sets(sets)
    evals = evals.with_columns(without_counter(pl.col("text")))
    if pii_kinds and evals.height:
        evals = evals.with_columns(redact(evals["text"], list(pii_kinds), tuple(phone_regions))[0].alias("text"))
    return evals, status


class Quotes(NamedTuple):
    """The texts with ``min_words`` to ``n - 1`` words of one side, as whole-word patterns for ``_quoted``:
    (``row``, ``p``: the text between spaces) and the distinct patterns."""

    rows: pl.DataFrame
    patterns: list[str]


class EvalIndex(NamedTuple):
    """The evaluation prompts as ``contamination`` compares them, computed once for every batch: their
    normalised texts, words per text, word n-gram hashes (``row``, ``h``), distinct n-grams per row
    (``row``, ``e_n``), the short ones as patterns (``Quotes``), the texts between spaces (where a short
    prompt is looked for), and the ``n`` and ``min_words`` it was built for."""

    text: pl.Series
    words: np.ndarray
    grams: pl.DataFrame
    sizes: pl.DataFrame
    quotes: Quotes
    padded: pl.Series
    n: int
    min_words: int


def eval_index(evals: pl.DataFrame, n: int, min_words: int = 4) -> EvalIndex:
    """``evals``' ``EvalIndex`` for ``n``-grams and quotations of at least ``min_words`` words."""
    text = evals.select(cjk_words(normalise(pl.col("text"))))[:, 0]
    grams, words = ngram_hashes(text, n), word_counts(text).to_numpy()
    return EvalIndex(text, words, grams, grams.group_by("row").len().rename({"len": "e_n"}),
                     _quotes(text, words, n, min_words), _padded(text), n, min_words)


def _padded(texts: pl.Series) -> pl.Series:
    """Normalised texts between spaces: words are joined by single spaces, so " text " matches whole words only."""
    return " " + texts.fill_null("") + " "


def _quotes(short: pl.Series, short_words: np.ndarray, n: int, min_words: int) -> Quotes:
    """The texts of ``short`` with ``min_words`` to ``n - 1`` words as ``_quoted``'s patterns."""
    rows = np.flatnonzero((short_words >= min_words) & (short_words < n)).astype(np.uint32)
    if len(rows) == 0:  # most batches of prompts
        return Quotes(pl.DataFrame(schema={"row": pl.UInt32, "p": pl.String}), [])
    pats = pl.DataFrame({"row": rows, "p": _padded(short.gather(rows))})
    return Quotes(pats, pats["p"].unique().to_list())


def _quoted(quotes: Quotes, padded: pl.Series) -> pl.DataFrame:
    """(``row`` of the quotes' texts, ``row_o`` of ``padded``) where a text of ``quotes`` (``_quotes``) appears
    whole, as consecutive words, in a text of ``padded`` (``_padded``). Such a text is one n-gram of all its
    words, which an n-gram of a longer text never equals: without this, a short eval prompt inside a longer
    prompt ("Please prove the Pythagorean theorem") matched nothing. One Aho-Corasick pass over ``padded``."""
    schema = {"row": pl.UInt32, "row_o": pl.UInt32}
    if not quotes.patterns or padded.len() == 0:
        return pl.DataFrame(schema=schema)
    found = padded.str.extract_many(quotes.patterns, overlapping=True)
    hits = pl.DataFrame({"row_o": pl.int_range(padded.len(), dtype=pl.UInt32, eager=True), "p": found})
    hits = hits.explode("p").drop_nulls("p")
    if hits.height == 0:  # most batches: the join below costs more than the search
        return pl.DataFrame(schema=schema)
    return hits.join(quotes.rows, on="p").select("row", "row_o").unique().cast(schema)


def contamination(prompts: pl.DataFrame, evals: pl.DataFrame, n: int, threshold: float,
                  eg: EvalIndex | None = None, min_words: int = 4) -> pl.DataFrame:
    """Prompts (``_key``, ``_text``) that overlap an eval prompt: ``_key, eval_set, eval_id, overlap``.

    overlap = distinct shared n-grams / distinct n-grams of the shorter of the two texts; the best
    match per prompt is reported. A text shorter than ``n`` words is one n-gram: its overlap is 1.0 when it
    appears whole in the other text and has at least ``min_words`` words (a shorter one matches only an equal
    text). ``eg``: ``eval_index(evals, n, min_words)``, when already computed (built once for every batch).
    """
    schema = {"_key": pl.UInt64, "eval_set": pl.String, "eval_id": pl.String, "overlap": pl.Float64}
    if prompts.height == 0 or evals.height == 0:
        return pl.DataFrame(schema=schema)
    eg = eval_index(evals, n, min_words) if eg is None else eg
    if (eg.n, eg.min_words) != (n, min_words):
        raise ValueError(f"contamination: the eval index was built for {eg.n}-grams and min_words {eg.min_words}, "
                         f"called with {n} and {min_words}; build it with eval_index(evals, {n}, {min_words})")
    text = cjk_words(prompts["_text"])  # a CJK character is a word; keys and MinHash keep ``_text`` as it is
    tg = ngram_hashes(text, n)
    t_n = tg.group_by("row").len().rename({"len": "t_n"})
    shared = (
        tg.join(eg.grams, on="h", suffix="_e")
        .group_by("row", "row_e").len()
        .join(t_n, on="row").join(eg.sizes.rename({"row": "row_e"}), on="row_e")
        .select("row", "row_e", (pl.col("len") / pl.min_horizontal("t_n", "e_n")).alias("overlap"))
    )
    inside = pl.concat([
        _quoted(eg.quotes, _padded(text)).rename({"row": "row_e", "row_o": "row"}),
        _quoted(_quotes(text, word_counts(text).to_numpy(), n, min_words), eg.padded)
        .rename({"row_o": "row_e"}),
    ], how="diagonal").select("row", "row_e", pl.lit(1.0).alias("overlap"))
    best = (
        pl.concat([shared, inside])
        .filter(pl.col("overlap") >= threshold)
        .sort(["row", "overlap", "row_e"], descending=[False, True, False])
        .group_by("row", maintain_order=True).first()
    )
    ev = evals.with_row_index("row_e").with_columns(pl.col("row_e").cast(pl.UInt32))
    pk = prompts.select("_key").with_row_index("row").with_columns(pl.col("row").cast(pl.UInt32))
    return best.join(pk, on="row").join(ev, on="row_e").select(list(schema)).sort("_key")


def _tag(df: pl.DataFrame, key_cols: list[str], info: pl.DataFrame) -> pl.DataFrame:
    """``df`` with ``_hit``: the ``_hit`` of ``info`` for the first of ``key_cols`` found there."""
    tagged = df
    for i, k in enumerate(key_cols):
        tagged = tagged.join(info.rename({"_key": k, "_hit": f"_hit{i}"}), on=k, how="left", maintain_order="left")
    hit = pl.coalesce([pl.col(f"_hit{i}") for i in range(len(key_cols))])
    return tagged.with_columns(hit.alias("_hit")).drop([f"_hit{i}" for i in range(len(key_cols))])


def decontaminate(df: pl.DataFrame, key_cols: list[str], hits: pl.DataFrame,
                  configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop rows whose prompt key(s) appear in ``hits``; the record names the eval set and prompt id."""
    if df.height == 0 or hits.height == 0:
        return df, no_removals()
    hit = pl.struct("eval_set", "eval_id", pl.col("overlap").round(3)).struct.json_encode()
    tagged = _tag(df, key_cols, hits.select("_key", hit.alias("_hit")))
    bad = tagged.filter(pl.col("_hit").is_not_null())
    return tagged.filter(pl.col("_hit").is_null()).drop("_hit"), removals(bad, "contaminated", configs, pl.col("_hit"))


# --- held-out prompts ------------------------------------------------------------------------------


def _is_messages(typ: pa.DataType) -> bool:
    """Whether ``typ`` is a list of {role, content} string structs (``pipeline.records.MESSAGES_TYPE``, or large)."""
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not pa.types.is_struct(typ.value_type):
        return False
    fields = {f.name: f.type for f in typ.value_type}
    return all(name in fields and (pa.types.is_string(fields[name]) or pa.types.is_large_string(fields[name]))
               for name in ("role", "content"))


def _prompt_columns(names: list[str]) -> list[str]:
    for cols in (["prompt"], ["chosen_prompt", "rejected_prompt"], ["messages"]):
        if all(c in names for c in cols):
            return cols
    return []


def load_held_out(paths: list[str], root: Path, batch_rows: int = 65_536, pii_kinds: list[str] | None = None,
                  phone_regions: tuple[str, ...] = PHONE_REGIONS) -> tuple[pl.DataFrame, dict[str, dict]]:
    """``_key`` -> ``held_out`` (the first set holding it), with ``_text`` (the normalised prompt), for every
    prompt of the held-out shard sets (pairs: ``prompt``; joint pairs: both prompts; prompts: ``messages``),
    and a status per set.
    ``pii_kinds``: the kinds the release redacts (``export.pii_kinds``); the prompts are redacted the same
    way before their keys are taken, so they match the release's redacted prompts."""
    parts, status = [], {}
    for rel in paths:
        path = root / rel
        files = shard_files(path) if path.exists() else []
        if not files:
            raise ReleaseInputError(
                f"export.held_out lists {rel}, which holds no Parquet shards; run the stage that writes it "
                f"(`dvc repro`), or remove it from export.held_out if that stage is not part of this release")
        try:
            n = _held_out_keys(rel, path, files[0], batch_rows, pii_kinds, phone_regions, parts)
        except (pa.ArrowException, OSError) as e:  # a held-out set that cannot be read cannot be kept out
            raise ReleaseInputError("export.held_out: " + unreadable_parquet(
                rel, e, "point export.held_out at a pairs, joint pairs or prompts shard set a stage wrote, or run "
                        "that stage again (`dvc repro`)")) from None
        status[rel] = {"rows": n}
    if not parts:
        return pl.DataFrame(schema={"_key": pl.UInt64, "held_out": pl.String, "_text": pl.String}), status
    keys = pl.concat(parts).unique("_key", keep="first", maintain_order=True).sort("_key")
    for rel in status:
        status[rel]["prompts"] = int(keys.filter(pl.col("held_out") == rel).height)
    return keys, status


def _held_out_keys(rel: str, path: Path, first: Path, batch_rows: int, pii_kinds: list[str] | None,
                   phone_regions: tuple[str, ...], parts: list[pl.DataFrame]) -> int:
    """Append the prompt keys of held-out set ``rel`` to ``parts``; returns its rows."""
    cols = _prompt_columns(pq.read_schema(first).names)
    if not cols:
        raise ReleaseInputError(f"{rel}: no prompt column (prompt, chosen_prompt/rejected_prompt or messages); "
                                "export.held_out takes pairs, joint pairs or prompts shard sets")
    n = 0
    for batch in iter_batches(path, batch_rows, columns=cols):
        for c in cols:  # a prompt as the tables hold it; another type was a polars traceback
            if not _is_messages(typ := batch.schema.field(c).type):
                raise ReleaseInputError(f"{rel}: column {c!r} is {typ}, expected a list of {{role, content}} messages; "
                                        "export.held_out takes pairs, joint pairs or prompts shard sets")
        df = pl.from_arrow(batch)
        if pii_kinds:
            df, _ = redact_messages(df, cols, list(pii_kinds), phone_regions)
        for c in cols:
            parts.append(prompt_keys(df, c).select("_key", pl.lit(rel).alias("held_out"), "_text"))
        n += df.height
    return n


def _held_as_evals(held: pl.DataFrame) -> pl.DataFrame:
    """The held-out prompts (``load_held_out``) as ``contamination``'s eval sets: the set, the key, the text."""
    return held.select(pl.col("held_out").alias("eval_set"), pl.col("_key").cast(pl.String).alias("eval_id"),
                       pl.col("_text").alias("text"))


def held_index(held: pl.DataFrame, n: int, min_words: int = 4) -> EvalIndex:
    """``eval_index`` of the held-out prompts, computed once for every batch ``near_held_out`` is given."""
    return eval_index(_held_as_evals(held), n, min_words)


def near_held_out(prompts: pl.DataFrame, held: pl.DataFrame, n: int, threshold: float, min_words: int,
                  hg: EvalIndex | None = None) -> pl.DataFrame:
    """``_key``, ``held_out`` of the release prompts (``_key``, ``_text``) that overlap a held-out prompt as
    ``contamination`` measures it: a paraphrase or a prefixed copy of a held-out prompt ("Quick question: what's
    a healthy breakfast I can make in five minutes") has another key, so the exact match let it into train.
    ``hg``: ``held_index(held, n, min_words)``, when already computed."""
    if held.height == 0:
        return pl.DataFrame(schema={"_key": pl.UInt64, "held_out": pl.String})
    return contamination(prompts, _held_as_evals(held), n, threshold, hg, min_words).select(
        "_key", pl.col("eval_set").alias("held_out"))


def drop_held_out(df: pl.DataFrame, key_cols: list[str], held: pl.DataFrame,
                  configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop ``train`` rows (``_split``) whose prompt key(s) are held out; the record names the set."""
    if df.height == 0 or held.height == 0:
        return df, no_removals()
    detail = pl.struct(pl.col("held_out").alias("set")).struct.json_encode()
    tagged = _tag(df, key_cols, held.select("_key", detail.alias("_hit")))
    bad = pl.col("_hit").is_not_null() & (pl.col("_split") == "train")
    return tagged.filter(~bad).drop("_hit"), removals(tagged.filter(bad), "held_out", configs, pl.col("_hit"))
