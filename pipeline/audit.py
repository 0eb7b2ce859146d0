"""``prefpipe audit <release folder>``: an independent check of a built release, read back from its files.

Export runs it on every release before publishing it (writing ``audit.json`` into the release and
failing the stage on any violation); anyone can run it again on a release folder::

    prefpipe audit data/release              # one line per check; exit 1 on any violation

Hard violations (each counted per config, with a few pair ids):

- ``identical``: chosen equals rejected after whitespace normalisation, case folding and dropping sentence
  punctuation (DOVE: both prompts and both answers).
- ``unprintable_text``: a message holds a control character (a NUL, an ESC code; tab and line breaks aside) or a bidi
  embedding, override or isolate, or shows nothing (white space, zero-width marks or U+FFFD only): export drops by
  ``pipeline.checks.unprintable_text``.
- ``control_token_text``: a message holds a chat-template control string (``<|im_end|>``, ``[INST]``, ``</s>``...)
  that a trainer's tokenizer would read as a special token: export drops by ``pipeline.checks.control_token_text``.
- ``empty_config``: an enabled method has pairs in ``data/<method>/pairs`` but none in its config (unless
  ``removed.jsonl`` shows every one left for a reason of its own: identical, contaminated, held out).
- ``pii``: a PII detector (``pipeline.pii``, the kinds in ``export.pii_kinds``) fires on any string:
  message contents, ``lineage`` values, ``source``, a ``pair_id`` that is not one of our 16-hex-digit
  ids; and on the text files (card, stats, removed.jsonl, plot data).
- ``prompt_in_both_splits``: a normalised prompt, or a dialogue's opening (its first user turn), appears in a
  train and a test split: a test prompt ``[u0]`` opening a train dialogue ``[u0, a1, u2]`` is in train too; so is
  any user turn of ``export.decontamination.min_words`` words or more (4 without params) of a test prompt held
  by a train prompt: ``[hi, a1, write a poem about cats]`` in train holds the test prompt ``[write a poem about cats]``;
  so is a train user turn quoting one inside a longer text ("my friend asked: write a poem about cats. Can you do
  better?"), found as export finds it (``pipeline.split_leaks``: ``decontamination``'s n-grams and containment).
- ``seed_in_test``: a pair trained first (Selfie/SPA's seed, ``pipeline.train_first``) in a test split of any config.
- ``held_out_in_train``: a prompt of an ``export.held_out`` set appears in a train split, or one that overlaps
  it as export measures it (``export.decontamination``'s n-grams: a prefixed or reworded copy).
- ``contaminated``: a prompt (DOVE: either prompt) overlaps a prompt of an evaluation set
  (``export.decontamination.sets``, redacted as the release is) as export's decontamination measures it, in
  any split: an MT-Bench question copied into a release passed every other check.
- ``cut_off_chosen``: lineage says the chosen answer hit the token limit (``chosen_finish_reason: length``),
  or its text stops mid-sentence (``pipeline.checks.ends_mid_sentence``; export drops by it).
- ``unprompted_acknowledgement``: chosen reacts to feedback ("You're right, I apologize...") that its
  prompt's last user turn does not give, or opens as a revision of a version the prompt neither holds nor
  asks for ("Of course, I've made it more formal:"); the check export drops by (``pipeline.checks``).
- ``looping_chosen``: chosen repeats itself in a loop (``pipeline.checks.repeats_itself``).
- ``chosen_scored_lower``: the pair's own scores rank its chosen below its rejected (``score_chosen <
  score_rejected``, or a negative ``margin``): by the method's own definition the labels are swapped.
- ``malformed_dialogue``: a prompt that is empty, holds an empty message, does not alternate user/assistant
  from a user turn (a system message only first) or does not end with a user turn; a chosen or rejected
  that is not one or more non-empty assistant messages (``pipeline.checks.malformed_dialogue``).

The checks needing the project (``empty_config``, ``held_out_in_train``, ``contaminated``) run when params are given
(``--params``, default ``params.yaml`` when present) and are reported as skipped otherwise.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.checks import (
    control_token_text,
    ends_mid_sentence,
    looping_chosen,
    malformed_dialogue,
    same_text,
    unprintable_text,
    unprompted_acknowledgement,
)
from pipeline.decontam import (
    contamination,
    eval_index,
    held_index,
    load_held_out,
    near_held_out,
    release_eval_prompts,
)
from pipeline.dedup import opening_key, prompt_keys, text_of, turn_texts
from pipeline.errors import SourceError, unreadable_parquet
from pipeline.ids import HEX_ID
from pipeline.pii import KINDS, PHONE_REGIONS, find
from pipeline.pii_structured import find_json
from pipeline.release_folder import release_files
from pipeline.split_leaks import quoting_rows, release_test_quotes
from pipeline.train_first import trained_first_rows

AUDIT_FILE = "audit.json"
TEXT_SUFFIXES = {".md", ".json", ".jsonl", ".csv", ".txt"}
# Our pair ids (``pipeline.ids.hex_id``, 16 hex digits) are hashes, not personal data, but one in ~20,000 is
# 16 decimal digits passing a card checksum (or starts with a valid phone number): a million-pair release
# failed its audit on ids alone. A pair_id of another shape is still scanned.
OWN_ID = f"^{HEX_ID}$"
OWN_ID_FIELD = f'"pair_id":"{HEX_ID}"'
SCAN_LINES = 16_384  # lines of a text file scanned for personal data at a time
NOT_SCANNED = {AUDIT_FILE, "_manifest.json"}  # the audit itself; hashes and file names
EXAMPLES = 5
MIN_TURN_WORDS = 4  # a user turn shorter than this ("hi", "continue") puts no two prompts in one split (no params)
NGRAM, THRESHOLD = 13, 0.5  # a train user turn overlapping a test one (no params: params.yaml's decontamination)
CHECKS = {
    "identical": "chosen equals rejected (whitespace normalised, case folded, sentence punctuation aside)",
    "unprintable_text": "a message holds a control character or a bidi override, or shows nothing",
    "control_token_text": "a message holds the text of a chat-template control token (pipeline.encodings.CONTROL_TOKEN)",
    "empty_config": "an enabled method has pairs in data/<method>/pairs but none in its release config",
    "pii": "personal data or a secret in a released string",
    "prompt_in_both_splits": "a prompt, a dialogue's first user turn, or a user turn of a test prompt (of at least "
                             "decontamination.min_words words; as a train user turn or quoted in one) is in both a "
                             "train and a test split",
    "seed_in_test": "a pair its method trains on first (Selfie/SPA's gold seed, source \"seed\") is in a test split",
    "held_out_in_train": "a held-out prompt (or one overlapping it) is in a train split",
    "contaminated": "a prompt overlaps an evaluation set's prompt (export.decontamination)",
    "cut_off_chosen": "the chosen answer was cut off (lineage chosen_finish_reason: length, or it stops mid-sentence)",
    "unprompted_acknowledgement": "chosen acknowledges feedback its prompt does not contain",
    "looping_chosen": "chosen repeats itself in a loop (most of its sentences repeat earlier ones)",
    "chosen_scored_lower": "the pair's own scores rank chosen below rejected (score_chosen < score_rejected or margin < 0)",
    "malformed_dialogue": "an empty prompt, one not ending with a user turn, roles out of order, or a chosen/rejected "
                          "that is not non-empty assistant messages",
}


class _Found:
    """Violations of one check: counts per config and the first few examples."""

    def __init__(self) -> None:
        self.by_config: dict[str, int] = {}
        self.examples: list[str] = []

    def add(self, config: str, ids: list[str]) -> None:
        if ids:
            self.by_config[config] = self.by_config.get(config, 0) + len(ids)
            new = [i for i in dict.fromkeys(ids) if i not in self.examples]  # a pair is in its config and in `all`
            self.examples += new[: EXAMPLES - len(self.examples)]

    def report(self, description: str) -> dict[str, Any]:
        return {"description": description, "violations": sum(self.by_config.values()),
                "by_config": dict(sorted(self.by_config.items())), "examples": self.examples}


def _string_columns(df: pl.DataFrame) -> list[tuple[str, pl.Series, bool]]:
    """(column, one string per row, is JSON) for every string-bearing column; message lists become their
    contents (one line per message)."""
    out = []
    for name, dtype in df.schema.items():
        if name == "pair_id":  # scanned unless it is one of our ids
            out.append((name, df[name].str.replace(OWN_ID, ""), False))
        elif dtype == pl.String:
            out.append((name, df[name], name == "lineage"))
        elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            out.append((name, df.select(text_of(name))[:, 0], False))
    return out


def _pii_rows(df: pl.DataFrame, kinds: list[str], regions: tuple[str, ...]) -> list[str]:
    hits = []
    for name, texts, is_json in _string_columns(df):
        flags = find_json(texts, kinds, regions) if is_json else find(texts, kinds, regions)[0]
        hits += [f"{pid}:{name}" for pid in df.filter(flags.fill_null(False))["pair_id"].to_list()]
    return hits


def _ids(df: pl.DataFrame, mask: pl.Expr) -> list[str]:
    return df.filter(mask.fill_null(False))["pair_id"].to_list()


def _prompt_cols(columns: list[str]) -> list[str]:
    return ["chosen_prompt", "rejected_prompt"] if "chosen_prompt" in columns else ["prompt"]


def audit_release(release: Path, *, root: Path | None = None, cfg: Any = None,
                  batch_rows: int = 65_536) -> dict[str, Any]:
    """Check every released file; ``cfg`` (the export params) and ``root`` (the project) enable the checks
    that compare with the stages' outputs and the held-out sets. Returns the audit report."""
    kinds = list(cfg.pii_kinds) if cfg is not None else KINDS
    regions = tuple(cfg.pii_phone_regions) if cfg is not None else PHONE_REGIONS
    found = {name: _Found() for name in CHECKS}
    keys, turns, near, quoted, rows_seen, files_seen = [], [], [], [], 0, 0
    dc = cfg.decontamination if cfg is not None else None
    min_words = dc.min_words if dc is not None else MIN_TURN_WORDS
    project = _Project(cfg, root, batch_rows, kinds, regions) if cfg is not None and root is not None else None
    files = release_files(release)
    quotes = release_test_quotes([(c, p) for c, splits in files.items() for p in splits.get("test", [])], _prompt_cols,
                                 batch_rows, dc.ngram if dc is not None else NGRAM,
                                 dc.threshold if dc is not None else THRESHOLD, min_words)
    for config, splits in files.items():
        for split, paths in splits.items():
            for path in paths:
                files_seen += 1
                row = 0  # of the file (seed_in_test names it)
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                    df = pl.from_arrow(batch)
                    rows_seen += df.height
                    cols = _prompt_cols(df.columns)
                    same = same_text(text_of("chosen"), text_of("rejected"))
                    if len(cols) == 2:
                        same = same & same_text(text_of(cols[0]), text_of(cols[1]))
                    found["identical"].add(config, _ids(df, same))
                    found["unprintable_text"].add(config, _ids(df, unprintable_text(
                        [*cols, "chosen", "rejected"])))
                    found["control_token_text"].add(config, _ids(df, control_token_text([*cols, "chosen", "rejected"])))
                    cut = ends_mid_sentence(text_of("chosen"))
                    if "lineage" in df.columns:
                        cut = cut | (pl.col("lineage").str.json_path_match("$.chosen_finish_reason") == "length")
                    found["cut_off_chosen"].add(config, _ids(df, cut))
                    found["unprompted_acknowledgement"].add(config, _ids(df, unprompted_acknowledgement("chosen", cols[0])))
                    found["looping_chosen"].add(config, _ids(df, looping_chosen("chosen")))
                    if {"score_chosen", "score_rejected", "margin"} <= set(df.columns):
                        lower = (pl.col("score_chosen") < pl.col("score_rejected")) | (pl.col("margin") < 0)
                        found["chosen_scored_lower"].add(config, _ids(df, lower))
                    found["malformed_dialogue"].add(config, _ids(df, malformed_dialogue(cols, ["chosen", "rejected"])))
                    found["pii"].add(config, [f"{config}/{h}" for h in _pii_rows(df, kinds, regions)])
                    if split == "test":
                        found["seed_in_test"].add(config, trained_first_rows(df, config, f"{config}/{path.name}", row))
                    row += df.height
                    tts = [turn_texts(df, c, min_words) for c in cols]  # each prompt column's user turns
                    for c, tt in zip(cols, tts, strict=True):
                        pk = prompt_keys(df, c)
                        keys.append(pk.select(
                            "_key", pl.lit(split).alias("split"), pl.lit(config).alias("config"),
                            df["pair_id"].alias("pair_id"), df.select(opening_key(c))[:, 0].alias("_open")))
                        turns.append(tt.select(pl.col("_turn").alias("_turns"), pl.lit(split).alias("split"),
                                               pl.lit(config).alias("config"), df["pair_id"].gather(tt["_r"])))
                        if project is not None:
                            near.append(project.overlaps(pk))
                    if split == "train":  # a user turn quoting a test prompt's (pipeline.split_leaks)
                        rows = quoting_rows(df["pair_id"], tts, quotes)
                        quoted.append(rows.to_frame().select(pl.lit(config).alias("config"), "pair_id"))
    key_df = pl.concat(keys) if keys else pl.DataFrame(
        schema={"_key": pl.UInt64, "split": pl.String, "config": pl.String, "pair_id": pl.String, "_open": pl.UInt64})
    both = key_df.group_by("_open").agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)
    turn_df = pl.concat(turns).drop_nulls("_turns") if turns else pl.DataFrame(
        schema={"_turns": pl.UInt64, "split": pl.String, "config": pl.String, "pair_id": pl.String})
    in_train = pl.concat([key_df.join(both, on="_open").filter(pl.col("split") == "train").select("config", "pair_id"),
                          turn_df.filter(pl.col("split") == "train").join(
                              turn_df.filter(pl.col("split") == "test"), on="_turns", how="semi").select("config", "pair_id"),
                          *quoted])
    for (config,), g in in_train.group_by("config", maintain_order=True):
        found["prompt_in_both_splits"].add(config, g["pair_id"].unique(maintain_order=True).to_list())

    skipped: dict[str, str] = {}
    if project is None:
        why = "no project params given (run from the project root, or pass --root or --params)"
        skipped = {"empty_config": why, "held_out_in_train": why, "contaminated": why}
    else:
        hits = pl.concat([project.held.select("_key", pl.lit("held_out").alias("kind")), *near])
        for kind, check, splits in (("held_out", "held_out_in_train", ["train"]), ("eval", "contaminated", None)):
            bad = key_df.filter(pl.col("split").is_in(splits) if splits else pl.lit(True)).join(
                hits.filter(pl.col("kind") == kind), on="_key", how="semi")
            for (config,), g in bad.group_by("config", maintain_order=True):
                found[check].add(config, g["pair_id"].unique(maintain_order=True).to_list())
        explained = _explained_removals(release)
        for m in cfg.methods:
            produced = stage_rows(root / "data" / m / "pairs")
            released = sum(pq.ParquetFile(f).metadata.num_rows for fs in files.get(m, {}).values() for f in fs)
            if produced and not released and explained.get(m, 0) < produced:
                found["empty_config"].add(m, [f"{m}: {produced} pairs in data/{m}/pairs, 0 in {m}/ "
                                                 f"({explained.get(m, 0)} removed for a reason of the pair itself)"])

    for f in sorted(release.rglob("*")):
        rel = f.relative_to(release).as_posix()
        if f.is_file() and f.suffix in TEXT_SUFFIXES and rel not in NOT_SCANNED:
            _scan_file(found["pii"], rel, f, kinds, regions)
            files_seen += 1
    checks = {name: found[name].report(desc) for name, desc in CHECKS.items() if name not in skipped}
    return {"passed": all(c["violations"] == 0 for c in checks.values()), "files": files_seen, "rows": rows_seen,
            "pii_kinds": kinds, "checks": checks, "skipped": skipped}


class _Project:
    """The project's held-out prompts and evaluation prompts, loaded once, keyed and redacted as the release is."""

    def __init__(self, cfg: Any, root: Path, batch_rows: int, kinds: list[str], regions: tuple[str, ...]):
        self.dc = cfg.decontamination
        self.held, _ = load_held_out(list(cfg.held_out), root, batch_rows, kinds, regions)
        self.hg = held_index(self.held, self.dc.ngram, self.dc.min_words) if self.held.height else None
        self.evals, _ = release_eval_prompts(self.dc.sets, kinds, regions, root)
        self.eg = eval_index(self.evals, self.dc.ngram, self.dc.min_words) if self.evals.height else None

    def overlaps(self, prompts: pl.DataFrame) -> pl.DataFrame:
        """``_key``, ``kind`` ("held_out" / "eval") of the ``prompts`` (``_key``, ``_text``) that overlap a held-out
        or an evaluation prompt as export's decontamination measures it."""
        dc, p = self.dc, prompts.select("_key", "_text").unique("_key", keep="first").sort("_key")
        held = near_held_out(p, self.held, dc.ngram, dc.threshold, dc.min_words, self.hg)
        evals = contamination(p, self.evals, dc.ngram, dc.threshold, self.eg, dc.min_words)
        return pl.concat([held.select("_key", pl.lit("held_out").alias("kind")),
                          evals.select("_key", pl.lit("eval").alias("kind"))])


# Reasons a pair leaves its own method's config because of the pair itself (not because another pair or
# method was preferred): a config emptied by these alone is explained, not a violation.
OWN_REASONS = ["unprintable_text", "control_token_text", "identical", "unprompted_acknowledgement", "looping_chosen", "cut_off_chosen", "contaminated", "held_out",
               "split_straddle", "test_prompt_in_train"]


def _explained_removals(release: Path) -> dict[str, int]:
    """method -> pairs that ``removed.jsonl`` says left that method's config for one of ``OWN_REASONS``."""
    path = release / "removed.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        return {}
    try:
        lazy = pl.scan_ndjson(path)
        if "configs" not in lazy.collect_schema().names():
            return {}
        df = lazy.select("method", "reason", "configs").collect()  # not the texts
        own = df.filter(pl.col("reason").is_in(OWN_REASONS) & pl.col("configs").list.contains(pl.col("method")))
        return dict(own.group_by("method").len().iter_rows())
    except pl.exceptions.PolarsError as e:  # a hand edit: it was a polars traceback
        where = _bad_removal(path) or f"unreadable ({type(e).__name__})"
        raise SourceError(f"{path}: {where}, not a removal export writes; it was edited or cut short: build the "
                          "release again (`dvc repro export`)") from None


class _Removal(BaseModel):
    """What the audit reads of a ``removed.jsonl`` line (export writes more keys)."""

    model_config = ConfigDict(strict=True)
    method: str
    reason: str
    configs: list[str]


_NOT_A_REMOVAL = {"json_invalid": "not JSON", "model_type": "not a JSON object", "method": "'method' is not a string",
                  "reason": "'reason' is not a string", "configs": "'configs' is not a list of config names"}


def _bad_removal(path: Path) -> str | None:
    """The first line of ``removed.jsonl`` that is not a removal (``_Removal``), as "line N: why"; None when every
    line is one."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                _Removal.model_validate_json(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return f"line {n}: not UTF-8"
            except ValidationError as e:
                first = e.errors()[0]
                return f"line {n}: " + (_NOT_A_REMOVAL.get(first["type"]) or _NOT_A_REMOVAL[str(first["loc"][0])])
    return None


def stage_rows(path: Path) -> int:
    """Rows in a stage's pairs folder (shard sets in it and in its sub-folders); 0 when absent."""
    if not path.is_dir():
        return 0
    rows = 0
    for f in sorted(path.rglob("*.parquet")):
        if any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        try:
            rows += pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowException, OSError) as e:  # a `dvc pull` cut short: it was pyarrow's traceback
            raise SourceError(unreadable_parquet(f, e)) from None
    return rows


def _scan_lines(found: _Found, name: str, lines: list[str], first: int, kinds: list[str],
                regions: tuple[str, ...]) -> None:
    texts = pl.Series(lines, dtype=pl.String).str.replace_all(OWN_ID_FIELD, '"pair_id":""')
    flags = find(texts, kinds, regions)[0].to_numpy() if lines else []
    found.add(name, [f"{name}:line {first + i}" for i, hit in enumerate(flags) if hit])


def _scan_text(found: _Found, name: str, text: str, kinds: list[str], regions: tuple[str, ...]) -> None:
    _scan_lines(found, name, text.split("\n"), 1, kinds, regions)


def _scan_file(found: _Found, name: str, path: Path, kinds: list[str], regions: tuple[str, ...],
               batch_lines: int = SCAN_LINES) -> None:
    """PII scan of a text file ``batch_lines`` lines at a time (removed.jsonl carries every removed pair's texts:
    read whole, it cost GBs at a million pairs); line numbers count ``\n`` as an editor does."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        first = 1
        while lines := [line.rstrip("\n") for line in itertools.islice(f, batch_lines)]:
            _scan_lines(found, name, lines, first, kinds, regions)
            first += len(lines)


def add_text_check(report: dict[str, Any], name: str, text: str, kinds: list[str],
                   regions: tuple[str, ...] = PHONE_REGIONS) -> dict[str, Any]:
    """``report`` with a PII scan of one more text (e.g. the card, written after the audit) added; it counts as
    one more file read, as ``prefpipe audit`` counts it on the written release."""
    extra = _Found()
    _scan_text(extra, name, text, kinds, regions)
    report = {**report, "files": report["files"] + 1}
    if not extra.by_config:
        return report
    pii = dict(report["checks"]["pii"])
    pii["by_config"] = dict(sorted({**pii["by_config"], **extra.by_config}.items()))
    pii["violations"] += sum(extra.by_config.values())
    pii["examples"] = (pii["examples"] + extra.examples)[:EXAMPLES]
    return {**report, "passed": False, "checks": {**report["checks"], "pii": pii}}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per check: ``ok`` or ``FAIL`` with counts per config and a few examples."""
    lines = []
    for name, c in report["checks"].items():
        if not c["violations"]:
            lines.append(f"ok    {name}")
            continue
        per = ", ".join(f"{k}: {n}" for k, n in c["by_config"].items())
        lines.append(f"FAIL  {name}: {c['violations']} ({per}); {c['description']}; e.g. {', '.join(c['examples'])}")
    lines += [f"skip  {name}: {why}" for name, why in report.get("skipped", {}).items()]
    return lines
