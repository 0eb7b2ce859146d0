"""De-duplication of preference pairs on light frames (ids, prompt keys, text hashes; never the texts).

Rows carry ``_config`` (the group they belong to, e.g. the method that made them), ``_key`` (the
hash of the normalised prompt) and ``_ch``/``_rh`` (hashes of the chosen/rejected texts). Three
rules, each returning (kept rows, removal records):

- ``dedup_within``: inside one group, identical pairs keep one (the most confident, then the smallest
  id), and near-duplicate prompts (MinHash) keep one prompt with all its pairs (confidences *within*
  a group mean the same thing, so they may be compared there).
- ``dedup_across``: a prompt that several groups share (exactly or nearly) is kept for the group that
  comes first in a given priority order; nothing is compared across groups but that order. It only
  *marks* rows (``_primary``), so the caller decides what the mark removes them from.
- ``dedup_joint``: joint rows repeating all four texts keep one.

Removal records have the columns of ``REMOVED``: pair_id, method, reason, detail (JSON), configs (the
configs the pair left).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.ids import stable_hash64
from pipeline.text import cjk_words, minhash, near_duplicate_groups, ngram_hashes, normalise, word_counts

REMOVED = {"pair_id": pl.String, "method": pl.String, "reason": pl.String, "detail": pl.String,
           "configs": pl.List(pl.String)}

# Every reason a removal record can carry, with the sentence the dataset card shows for it. ``removals`` refuses
# any other, so a new drop rule cannot reach removed.jsonl without an explanation for the card.
REASONS = {
    "unprintable_text": "a message holds a control character (a NUL, an ESC code) or a bidi override, or shows "
                        "nothing (white space, zero-width marks or U+FFFD only)",
    # No control string itself (nor a "|"): the sentence goes into the card's Markdown table.
    "control_token_text": "a message holds the text of a chat-template control token (ChatML, Llama, Mistral, Gemma: "
                          "pipeline.encodings.CONTROL_TOKEN), which a trainer's tokenizer would read as that token",
    "identical": "chosen equals rejected (whitespace normalised, case folded, sentence punctuation aside; DOVE: both prompts too)",
    "unprompted_acknowledgement": "chosen reacts to feedback its prompt's last user turn does not give, or opens "
                                  "as a revision of a version the prompt neither holds nor asks for",
    "looping_chosen": "chosen repeats its own sentences in a loop",
    "cut_off_chosen": "chosen stops mid-sentence (truncated upstream)",
    "duplicate_pair": "the same pair again within its method (one kept: the most confident)",
    "duplicate_prompt_near": "its prompt nearly repeats (MinHash) a prompt kept within its method, or, leaving "
                             "`all` only, one kept there for a method earlier in the priority order",
    "duplicate_prompt_exact": "leaving `all` only: its prompt is kept there for a method earlier in the priority order",
    "contaminated": "its prompt overlaps an evaluation prompt (word n-grams; detail names the set and prompt)",
    "split_straddle": "a DOVE row whose two prompts fall in different splits",
    "test_prompt_in_train": "a user turn of its prompt is, holds or lies inside a user turn of a test prompt (of at "
                            "least `decontamination.min_words` words; word n-grams as for `contaminated`), and it was in a "
                            "train split (detail names the test pair)",
    "held_out": "its prompt is in a held-out set and it was in a train split",
}


def text_of(col: str) -> pl.Expr:
    """All message contents of a message-list column, one per line."""
    return pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n")


def user_turns(col: str) -> pl.Expr:
    """The contents of the user messages of a message-list column, in order."""
    return pl.col(col).list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))


def last_user_turn(col: str) -> pl.Expr:
    """The content of the last user message of a message-list column (null when there is none)."""
    return user_turns(col).list.last()


def first_user_turn(col: str) -> pl.Expr:
    """The content of the first user message of a message-list column (null when there is none)."""
    return user_turns(col).list.first()


def opening_key(col: str) -> pl.Expr:
    """A uint64 per row standing for the normalised first user turn of a message-list column: the key the
    release splits by, so the prompts of one conversation (``[u0]`` and ``[u0, a1, u2]``: WildFeedback pairs on
    two turns of it) fall in one split. For a prompt of one user turn it is ``prompt_keys``' ``_key``."""
    return normalise(first_user_turn(col)).map_batches(lambda s: pl.Series(stable_hash64(s), dtype=pl.UInt64),
                                                       return_dtype=pl.UInt64)


def turn_texts(df: pl.DataFrame, col: str, min_words: int) -> pl.DataFrame:
    """One row per normalised user turn of the message-list column ``col`` with at least ``min_words`` words (a CJK
    character is one), in order: ``_r`` (the row of ``df``), ``_turn`` (its stable uint64 key) and ``_text``."""
    rows = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_r"))
    turns = rows.with_columns(df.select(user_turns(col))[:, 0].alias("_t")).explode("_t")
    turns = turns.with_columns(normalise(pl.col("_t")).fill_null(""))  # a prompt without user turns: no row or a null
    turns = turns.filter(word_counts(turns["_t"]) >= min_words)  # normalised; a CJK character is a word
    return turns.select("_r", pl.Series("_turn", stable_hash64(turns["_t"]), dtype=pl.UInt64), pl.col("_t").alias("_text"))


def turn_keys(df: pl.DataFrame, col: str, min_words: int) -> pl.Series:
    """Per row, a list of uint64 keys: one per normalised user turn of the message-list column ``col`` with at
    least ``min_words`` words (a CJK character is one), in order (a shorter one, "hi", "continue", "thanks a lot",
    "谢谢", gets none). Keys of equal turns are equal, whatever conversation or turn position they come from; a
    prompt of one user turn of ``min_words`` words or more has its ``prompt_keys`` ``_key`` as its only key."""
    return turn_key_lists(turn_texts(df, col, min_words), df.height)


def turn_key_lists(turns: pl.DataFrame, height: int) -> pl.Series:
    """``turn_keys`` from the ``turn_texts`` frame ``turns`` of a frame of ``height`` rows (one list per row)."""
    rows = pl.select(pl.int_range(height, dtype=pl.UInt32).alias("_r"))
    keyed = turns.group_by("_r", maintain_order=True).agg(pl.col("_turn"))
    return rows.join(keyed, on="_r", how="left", maintain_order="left")["_turn"].fill_null([]).alias("_turns")


def prompt_keys(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """Per row: ``_text`` (the normalised prompt text of ``col``) and ``_key`` (its stable uint64 hash)."""
    text = df.select(normalise(text_of(col)))[:, 0] if df.height else pl.Series([], dtype=pl.String)
    return pl.DataFrame({"_key": stable_hash64(text), "_text": text}, schema={"_key": pl.UInt64, "_text": pl.String})


def text_hash(col: str) -> pl.Expr:
    """A uint64 per row standing for the text of a message-list column (for equality tests)."""
    return text_of(col).map_batches(lambda s: pl.Series(stable_hash64(s), dtype=pl.UInt64), return_dtype=pl.UInt64)


def removals(df: pl.DataFrame, reason: str, configs: pl.Expr, detail: pl.Expr | None = None) -> pl.DataFrame:
    """Removal records for the rows of ``df`` (``configs``: a list expression of the configs they left);
    ``reason`` is one of ``REASONS``."""
    if reason not in REASONS:
        raise ValueError(f"removal reason {reason!r} has no explanation; add it to pipeline.dedup.REASONS "
                         "(the dataset card shows it) and to docs/export.md's steps")
    return df.select(
        "pair_id", pl.col("_config").alias("method"), pl.lit(reason).alias("reason"),
        (detail if detail is not None else pl.lit("{}")).alias("detail"),
        configs.cast(pl.List(pl.String)).alias("configs"),
    )


def no_removals() -> pl.DataFrame:
    return pl.DataFrame(schema=REMOVED)


class Signatures:
    """MinHash signatures of distinct normalised prompts, computed once per prompt key while scanning. Shingles
    are word n-grams with a CJK character as a word (``pipeline.text.cjk_words``): "对你的感觉原唱" and "对你的感觉
    原唱" were one word and two: of the WildChat sample's 394 distinct CJK user turns 12 have a near-duplicate,
    9 of them unseen so.

    Memory is ``num_perm`` x 8 bytes per distinct prompt, not the prompt texts.
    """

    def __init__(self, shingle: int, num_perm: int) -> None:
        self.shingle, self.num_perm = shingle, num_perm
        self.index: dict[int, int] = {}
        self.sig = np.zeros((0, num_perm), dtype=np.uint64)  # grows by doubling; rows [0, len(index)) used

    def add(self, keys: pl.Series, texts: pl.Series) -> None:
        new = pl.DataFrame({"k": keys, "t": texts}).unique("k", keep="first", maintain_order=True)
        new = new.filter(pl.Series([k not in self.index for k in new["k"].to_list()], dtype=pl.Boolean))
        if new.height == 0:
            return
        start, end = len(self.index), len(self.index) + new.height
        if end > len(self.sig):
            grown = np.zeros((max(end, 2 * len(self.sig)), self.num_perm), dtype=np.uint64)
            grown[:start] = self.sig[:start]
            self.sig = grown
        self.sig[start:end] = minhash(ngram_hashes(cjk_words(new["t"]), self.shingle), new.height, self.num_perm)
        self.index.update((k, start + i) for i, k in enumerate(new["k"].to_list()))

    def matrix(self, keys: pl.Series) -> np.ndarray:
        return self.sig[[self.index[k] for k in keys.to_list()]]


def _confidence() -> pl.Expr:
    return pl.col("confidence").fill_nan(None).fill_null(float("-inf"))


def _clusters(keys: pl.Series, signatures: Signatures, bands: int, threshold: float) -> pl.DataFrame:
    """``_key`` -> ``_cluster`` (a member key) for distinct prompt ``keys``: exact keys are one node, MinHash +
    LSH join near-duplicates."""
    nodes = keys.unique().sort()
    labels = near_duplicate_groups(signatures.matrix(nodes), bands, threshold)
    return pl.DataFrame({"_key": nodes, "_cluster": nodes.to_numpy()[labels]})


def dedup_within(df: pl.DataFrame, signatures: Signatures, bands: int, threshold: float,
                 configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per ``_config``: identical pairs keep one; near-duplicate prompts keep the prompt with the most
    confident pair (then the most pairs, then the smallest key), with all its pairs."""
    if df.height == 0:
        return df.drop("_ch", "_rh"), no_removals()
    ranked = df.sort([_confidence(), pl.col("pair_id")], descending=[True, False])
    first = ranked.select(pl.struct("_config", "_key", "_ch", "_rh").is_first_distinct())[:, 0]
    kept, dropped = ranked.filter(first), [removals(ranked.filter(~first), "duplicate_pair", configs)]
    parts = []
    for config in sorted(set(kept["_config"])):
        rows = kept.filter(pl.col("_config") == config)
        cluster = _clusters(rows["_key"], signatures, bands, threshold)
        units = (rows.sort("_seq").group_by("_key", maintain_order=True)
                 .agg(_confidence().max().alias("_c"), pl.len().alias("_n"), pl.col("pair_id").first().alias("_win_pair"))
                 .join(cluster, on="_key").sort(["_c", "_n", "_key"], descending=[True, True, False]))
        winners = units.group_by("_cluster", maintain_order=True).first().select(
            "_cluster", pl.col("_key").alias("_win"), "_win_pair")
        rows = rows.join(cluster, on="_key").join(winners, on="_cluster")
        lost = rows.filter(pl.col("_key") != pl.col("_win"))
        detail = pl.struct(kept_pair_id=pl.col("_win_pair")).struct.json_encode()
        dropped.append(removals(lost, "duplicate_prompt_near", configs, detail))
        parts.append(rows.filter(pl.col("_key") == pl.col("_win")).drop("_cluster", "_win", "_win_pair"))
    kept = pl.concat(parts).sort("_seq") if parts else kept.clear()
    return kept.drop("_ch", "_rh"), pl.concat(dropped)


def dedup_across(df: pl.DataFrame, priority: list[str], signatures: Signatures, bands: int, threshold: float,
                 configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add ``_primary``: per exact/near-duplicate prompt cluster, only the rows of the group that comes first
    in ``priority`` (then its prompt with the most pairs, then the smallest key) are primary. Removal
    records for the others (leaving ``configs``) name the group and prompt that were kept."""
    if df.height == 0:
        return df.with_columns(pl.lit(True).alias("_primary")), no_removals()
    rank = pl.col("_config").replace_strict(priority, list(range(len(priority))), default=len(priority))
    cluster = _clusters(df["_key"], signatures, bands, threshold)
    units = (df.sort("_seq").group_by("_config", "_key", maintain_order=True)
             .agg(pl.len().alias("_n"), pl.col("pair_id").first().alias("_win_pair"))
             .with_columns(rank.alias("_rank")).join(cluster, on="_key")
             .sort(["_rank", "_n", "_key"], descending=[False, True, False]))
    winners = units.group_by("_cluster", maintain_order=True).first().select(
        "_cluster", pl.col("_config").alias("_win_config"), pl.col("_key").alias("_win_key"), "_win_pair")
    tagged = df.join(cluster, on="_key").join(winners, on="_cluster")
    primary = (pl.col("_config") == pl.col("_win_config")) & (pl.col("_key") == pl.col("_win_key"))
    tagged = tagged.with_columns(primary.alias("_primary"))
    lost = tagged.filter(~pl.col("_primary"))
    detail = pl.struct(kept_method=pl.col("_win_config"), kept_pair_id=pl.col("_win_pair")).struct.json_encode()
    exact = pl.col("_key") == pl.col("_win_key")
    drops = pl.concat([
        removals(lost.filter(exact), "duplicate_prompt_exact", configs, detail),
        removals(lost.filter(~exact), "duplicate_prompt_near", configs, detail),
    ])
    return tagged.drop("_cluster", "_win_config", "_win_key", "_win_pair").sort("_seq"), drops


def dedup_joint(df: pl.DataFrame, configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Joint rows repeating all four texts: keep the most confident (then the smallest pair_id)."""
    if df.height == 0:
        return df, no_removals()
    key = ["_config", "_key_c", "_ch", "_key_r", "_rh", "_cph", "_rph"]
    ranked = df.sort([_confidence(), pl.col("pair_id")], descending=[True, False])
    first = ranked.select(pl.struct(key).is_first_distinct())[:, 0]
    return ranked.filter(first).sort("_seq"), removals(ranked.filter(~first), "duplicate_pair", configs)
