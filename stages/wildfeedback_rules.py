"""The `rules` feedback detector of WildFeedback: cues and context rules over user turns, in polars.

Every user turn after the first is judged against the assistant turn just before it (``prev``) and,
when given, the user turn before that (``prev_user``). Two kinds of evidence, both vectorised:

- context rules (`stages.wildfeedback_context`): the request re-sent, narrowed, trimmed or lightly edited
  (Revision), re-sent or excused after a refusal (insisting: Revision), the answer pasted back under an
  instruction (Revision), "No, ..." correcting an answer that asked nothing (Revision), a short error
  message or a log opening with the error after an answer with code (Factual_Error), "go on" after an
  answer that offered more (Compliance);
- text cues (`stages.wildfeedback_cues`), one regex per category over the opening of the turn: lower
  case, straight quotes, quoted material cut out (``>`` lines, code fences, text in double quotes or
  backticks, announced task material, sentences pasted back from ``prev``), negations rewritten into
  tokens (``not bad`` -> ``neg_bad``) so that no pattern sees a negated cue as a plain one. A few pattern
  unions pick the turns with some cue first (the DSAT ones per category, whose hits stand where the cleaning
  after it changes nothing); only those are cleaned further, scanned per category, and re-scanned per pattern
  to name the patterns that fired::

    >>> import polars as pl
    >>> turns = pl.DataFrame({"text": ["Thanks! That really helped.", "That's wrong, try again."],
    ...                       "prev": ["Paris is the capital.", "2 + 2 = 5."]})
    >>> out = detect(turns)
    >>> out.select("sat", "dsat", "sat_categories", "dsat_categories").rows()
    [(True, False, ['Gratitude', 'Praise'], []), (False, True, [], ['Revision', 'Factual_Error'])]
    >>> out["rationale"][1]
    'Revision:try_again; Factual_Error:that_is_wrong; Factual_Error:actually'
    >>> out["confidence"].to_list()
    [0.85, 0.85]

Rules on the cues: a prompt template ("I want you to act as...") carries none; a turn opening with a
task verb ("Write a story where...") carries no SAT cue; a turn that opens with thanks/praise and no
contrast word ("but", "however") is a thanked new task, so request-shaped DSAT cues in it (Revision,
Insufficient_Detail, Style) are cleared; an insult with thanks and no contrast word is sarcasm, so the
SAT side is cleared. ``confidence`` is the surest rule that fired (`CONFIDENCE`, `CONTEXT_RULES`), or
for a turn without a signal how sure that is (`UNCERTAIN`, `NO_SIGNAL_CONFIDENCE`); a rules+llm
detector sends the verdicts below `ROUTE_BELOW` to the model.
"""

from __future__ import annotations

import polars as pl

from stages.wildfeedback_context import context
from stages.wildfeedback_cues import CONFIDENCE, DEFAULT_CONFIDENCE, DSAT_CATEGORIES, PATTERNS, SAT_CATEGORIES

__all__ = ["DSAT_CATEGORIES", "PATTERNS", "ROUTE_BELOW", "SAT_CATEGORIES", "detect", "normalise"]

_REQUEST_DSAT = ["Revision", "Insufficient_Detail", "Style"]
# Where SAT cues count: the first sentence, after a short opening one ("Thanks! That really helped.").
_OPENING = r"^((?:[^.!?]{0,20}[.!?]+\s*)?[^.!?]*[.!?]*)"
# A turn that opens a prompt template ("I want you to act as...", "You are a...") is a new task: its
# words are instructions, not feedback (context rules still apply: a re-sent template is a resend).
_TASK_PROMPT = (r"^\W*(?:i want you to (?:act|be|pretend|play|take|roleplay|role-play)|you are (?:a|an|now|my|going to)\b|"
                r"you will (?:act|be|play)\b|act as\b|pretend (?:to be|you)|imagine (?:you|that)\b|from now on\b|"
                r"let'?s (?:play|roleplay|role-play)\b|(?:role-?play|roleplay) as\b|"
                r"你现在是|现在你是|你是一[个名位]|假如你是|假设你是|你的角色是|请你扮演|扮演|представь,? что ты|ты (?:—|-) )")
# A turn that opens with a task verb asks for something new: praise words in it describe the task ("write a
# story where he does a great job"), so SAT cues do not count.
_TASK_OPENING = (r"^\W*(?:please |pls |now |and )?(?:write|create|generate|make|give|tell|list|describe|translate|compose|"
                 r"draft|design|build|produce|suggest|provide|imagine|continue|rewrite|add|find|show|explain)\b")
# A question about the world ("How can I make pancakes from scratch?", "Do days get shorter in winter?") is a new
# task: request-shaped cue words in it ("from scratch", "shorter") do not ask to change the answer.
_WORLD_QUESTION = (r"^\W*(?:(?:and|so|ok(?:ay)?),? )?(?:how (?:do|can|should|would|does|did) (?:i|we|one|people|they|he|she|my|a|an|the)|"
                   r"how to|what (?:is|are|was|were|does|kind|type|general|can i|should i)|why (?:is|are|does|do (?:people|we|they|"
                   r"i))|who (?:is|was|are|were)|when (?:is|was|did|does|do|will)|where (?:is|are|can|do|does)|which|"
                   r"(?:do|does|did) (?:\w+ )?(?:people|days|we|they|cats|dogs|children|kids|men|women|animals|plants)|"
                   r"(?:is|are) there|is it (?:true|possible|safe|bad|good|normal|okay|ok))\b[^?]{0,200}\?")
_CONTRAST = r"\b(?:but|however|though|although|except|yet)\b"
_OPENS_POSITIVE = (
    r"^\W*(?:ok(?:ay)?,? |oh,? |wow,? )?(?:thanks?|thank you|thx|great|perfect|awesome|nice|cool|excellent|"
    r"wonderful|fantastic|that'?s (?:great|good|helpful|perfect|awesome|interesting)|thats (?:great|good|awesome))\b"
)

# Negated cues become single tokens, so "not bad" never reads as "bad" and "not helpful" never as "helpful".
_NEGATIONS: list[tuple[str, str]] = [
    (r"\b(?:not|isn'?t|wasn'?t|aren'?t|weren'?t|ain'?t|never|hardly|no longer|far from)\s+(?:(?:very|really|that|so|quite|too|"
     r"particularly|at all|exactly|even|entirely|completely|a|an|all)\s+){0,2}(good|great|helpful|useful|correct|right|accurate|true|"
     r"clear|funny|entertaining|perfect|bad|wrong|terrible|awful|problem|big deal|issue)\b", "neg_${1}"),
    (r"\bno (?:problem|problems|prob|worries|issue|issues)\b", "neg_problem"),
    (r"\b(?:doesn'?t|didn'?t|does not|did not|won'?t|will not|not)\s+(?:really\s+|even\s+|seems? to\s+)?(help|work)(?:ed|s)?\b", "neg_${1}"),
    (r"\bnothing (wrong|bad)\b", "neg_${1}"),
    (r"\bthanks to\b", "owing to"),  # "thanks to the rain" is not gratitude
    (r"\bthank[- ]?you (?:note|card|letter|e-?mail|message|gift|speech)s?\b", "thankyou_note"),
    (r"\b(?:say|saying|write|writing|send|sending|express|expressing) (?:a )?(?:thanks|thank you)\b", "say_thankyou"),
    (r"\b(?:if|whether) i (?:like|love)\b", "if_i_like"),  # "see if I like it" is not praise
]


_QUOTED = r"(?s:'''.*?''')|(?m:^[ \t]*>[^\n]*$)|\"[^\"\n]{0,400}\""
# Task material announced by the turn ("improve the following sentence: ...", "翻译以下内容：..."): not feedback.
_MATERIAL = (r"(?s)(?:\b(?:the )?(?:following|below|these|this) (?:\w+ ){0,3}?(?:text|sentences?|paragraphs?|passage|code|"
             r"e-?mail|essay|article|story|poem|words|list|questions?|content|message|abstract|letter|lines?|data|table)s?"
             r"|(?:以下|下面|下列|如下)[^：:\n]{0,12}|\bследующ\w+(?: \w+){0,2})\s*[:：].*")


def _clean(text: pl.Expr) -> pl.Expr:
    """Lower case, straight quotes, quoted material cut out, whitespace collapsed."""
    t = text.str.to_lowercase().str.replace_many(["’", "‘", "`", "´", "“", "”", "„"], ["'", "'", "'", "'", '"', '"', '"'])
    # Code fences (backticks are now '), e-mail style "> " lines and double-quoted spans: not the user's voice.
    t = t.str.replace_all(_QUOTED, ' "q" ').str.replace(_MATERIAL, ' "q"')
    # Whitespace runs become one space: only runs of two or more, or a tab or newline, need replacing.
    return t.str.replace_all(r"\s\s+|[^\S ]", " ").str.strip_chars()


def _negate(text: pl.Expr) -> pl.Expr:
    for pattern, repl in _NEGATIONS:
        text = text.str.replace_all(pattern, repl)
    return text


# Rows without any of these words need no negation rewrite (checked once instead of once per rewrite).
_NEGATION_CUE = r"\b(?:not|no|never|hardly|nothing|thanks|thank|if|whether|far|doesn'?t|didn'?t|won'?t|isn'?t|wasn'?t|aren'?t|weren'?t|ain'?t)\b"


def normalise(text: pl.Expr) -> pl.Expr:
    """Lower-cased user text with quoted material removed and negations tokenised.

    >>> df = pl.DataFrame({"t": ['> You said "great"\\nThat is not bad at all']})
    >>> df.select(normalise(pl.col("t"))).item()
    '"q" that is neg_bad at all'
    """
    return _negate(_clean(text))


def _drop_pasted(frame: pl.DataFrame, min_chars: int) -> pl.DataFrame:
    """Remove sentences the user pasted back from the previous assistant turn (literal containment).

    Sentences are split on end punctuation and newlines; only sentences of at least ``min_chars``
    characters are checked, so short common phrases ("thank you.") are never treated as pasted.
    Only turns long enough to hold such a sentence are exploded.
    """
    long = pl.col("_raw").str.len_chars() >= min_chars
    sentences = (
        frame.filter(long)
        .select("_row", pl.col("_raw").str.replace_all(r"([.!?])\s+", "${1}\n").str.split("\n").alias("_s"), "_prev")
        .explode("_s")
        .with_columns(pl.col("_s").str.strip_chars())
    )
    sentences = sentences.filter(
        (pl.col("_s").str.len_chars() < min_chars) | ~pl.col("_prev").str.contains(pl.col("_s"), literal=True)
    )
    kept = sentences.group_by("_row").agg(pl.col("_s").str.join(" ").alias("_joined"))
    return frame.join(kept, on="_row", how="left").with_columns(
        pl.when(long).then(pl.col("_joined").fill_null("")).otherwise(pl.col("_raw")).alias("_kept")
    ).drop("_joined")


# A union of many patterns outgrows the regex engine's fast automaton (it then runs many times slower), so
# patterns are scanned in unions of at most `UNION_SIZE` (bench/wildfeedback_signals.py shows when a union
# has outgrown the automaton): a few per group for the candidate pass, a few per category after it.
UNION_SIZE = 16


def _unions(patterns: list[str]) -> list[str]:
    return ["|".join(f"(?:{p})" for p in patterns[i:i + UNION_SIZE]) for i in range(0, len(patterns), UNION_SIZE)]


def _category_regexes(category: str) -> list[str]:
    return _unions(list(PATTERNS[category].values()))


def _union_hits(category: str) -> list[str]:
    """The columns (set by `_categorise`) saying which of the category's pattern unions match its scope."""
    return [f"_in_{category}_{j}" for j in range(len(_category_regexes(category)))]


def _dsat_hits(scope: str) -> list[pl.Expr]:
    """The DSAT categories' `_union_hits` columns over the text column ``scope``."""
    return [pl.col(scope).str.contains(union).alias(name)
            for c in DSAT_CATEGORIES for union, name in zip(_category_regexes(c), _union_hits(c), strict=True)]


# The candidate pass: the SAT patterns, the negations (whose rewrite makes cues such as "neg_bad") and each DSAT
# category's own unions, whose hits `_categorise` keeps for the turns the cleaning after it leaves unchanged (each
# call compiles every union again, ~5 ms each: polars keeps 32 compiled regexes a thread).
_CUE_GROUPS = _unions([p for c in SAT_CATEGORIES for p in PATTERNS[c].values()]) + _unions([p for p, _ in _NEGATIONS])
_CATEGORIES = SAT_CATEGORIES + DSAT_CATEGORIES
# Context rules: name -> (category, confidence). See stages/wildfeedback_context.py.
CONTEXT_RULES = {"resend": ("Revision", 0.9), "resend_earlier": ("Revision", 0.85),
                 "insist_after_refusal": ("Revision", 0.85),
                 "error_report": ("Factual_Error", 0.7), "accepts_offer": ("Compliance", 0.75),
                 "edits_answer": ("Revision", 0.8), "no_correction": ("Revision", 0.7),
                 "edits_named": ("Revision", 0.8), "short_edit": ("Revision", 0.75),
                 "counter_claim": ("Factual_Error", 0.75)}
# How sure "no signal" is where the context leaves the rules unsure (else NO_SIGNAL_CONFIDENCE).
# A turn in another language without a cue is routed to the model too: the other languages' cue lists
# are short, so their silence says less (bench/README.md's table by language shows the gap).
UNCERTAIN = {"overlap": 0.75, "refusal": 0.7, "error_after_code": 0.7, "non_english": 0.75}
NO_SIGNAL_CONFIDENCE = 0.9
# The verdicts a rules+llm detector should send to the model: confidence below this. Cue-less turns after
# a refusal, in another language, rephrasing the request or reporting an error after code fall below
# it, and so do the weak cues (a bare "ok" before a new request, "include ...").
ROUTE_BELOW = 0.8


def _names(columns: dict[str, pl.Expr], separator: str) -> pl.Expr:
    """The names whose boolean expression holds, joined by ``separator`` (null when none holds)."""
    parts = [pl.when(cond).then(pl.lit(name)) for name, cond in columns.items()]
    joined = pl.concat_str(parts, separator=separator, ignore_nulls=True)
    return pl.when(joined.str.len_chars() > 0).then(joined)


def _confidence(name: str, category: str) -> float:
    return CONFIDENCE.get(name, DEFAULT_CONFIDENCE["sat" if category in SAT_CATEGORIES else "dsat"])


def _named_hits(rows: pl.DataFrame, cat: int, part: int, hit: dict[str, tuple[pl.Expr, float]]) -> pl.DataFrame:
    """``_row``, the category and part order, the names in ``hit`` whose condition holds, the surest confidence."""
    rows = rows.with_columns([cond.alias(f"_h{k}") for k, (cond, _) in enumerate(hit.values())])
    hits = {name: pl.col(f"_h{k}") for k, name in enumerate(hit)}
    conf = pl.max_horizontal([pl.when(pl.col(f"_h{k}")).then(pl.lit(v)) for k, (_, v) in enumerate(hit.values())])
    return rows.select("_row", pl.lit(cat).alias("_cat"), pl.lit(part).alias("_part"),
                       _names(hits, "; ").alias("rationale"), conf.alias("_conf"))


def _fired(cand: pl.DataFrame) -> pl.DataFrame:
    """``_row``, ``rationale`` ("Category:pattern" names that fired) and ``_conf`` (the surest of them).

    Each category's rows are split by the pattern union (`_category_regexes`, `_union_hits`) they match, and each
    part is re-scanned only with its union's patterns; context rules name themselves.
    """
    parts = []
    for i, c in enumerate(_CATEGORIES):
        rows = cand.filter(pl.col(f"_c_{c}"))
        if not rows.height:
            continue
        scope = pl.col("_s" if c in SAT_CATEGORIES else "_t")
        named = list(PATTERNS[c].items())
        for j, union in enumerate(_union_hits(c)):
            sub = rows.filter(pl.col(union) & ~pl.col("_prompt"))
            if sub.height:
                group = named[j * UNION_SIZE:(j + 1) * UNION_SIZE]
                parts.append(_named_hits(sub, i, j, {f"{c}:{n}": (scope.str.contains(p), _confidence(n, c)) for n, p in group}))
        ctx = {f"{c}:{n}": (pl.col(f"_x_{n}"), conf) for n, (cat, conf) in CONTEXT_RULES.items() if cat == c}
        if ctx:
            parts.append(_named_hits(rows, i, len(named), ctx))
    if not parts:
        return pl.DataFrame(schema={"_row": pl.UInt32, "rationale": pl.String, "_conf": pl.Float64})
    return pl.concat(parts).sort("_row", "_cat", "_part").group_by("_row", maintain_order=True).agg(
        pl.col("rationale").drop_nulls().str.join("; "), pl.col("_conf").max())


def _context(turns: pl.DataFrame, text: str, prev: str, prev_user: str | None, window_chars: int,
             prev_user2: str | None = None) -> pl.DataFrame:
    """Context columns ``_x_*`` (rules that give a verdict) and ``_u_*`` (what makes a turn uncertain)."""
    c = context(turns, text=text, prev=prev, prev_user=prev_user, window_chars=window_chars, prev_user2=prev_user2)
    return c.select(
        _x_resend=pl.col("resend") & ~pl.col("refusal"),
        _x_resend_earlier=pl.col("resend_earlier") & ~pl.col("resend") & ~pl.col("refusal"),
        _x_insist_after_refusal=pl.col("refusal") & (pl.col("resend") | pl.col("overlap") | pl.col("insisting")),
        _x_error_report="error_report", _x_accepts_offer="accepts_offer", _x_edits_answer="edits_answer", _x_no_correction="no_correction", _x_edits_named="edits_named", _x_short_edit="short_edit", _x_counter_claim="counter_claim", _u_overlap="overlap", _u_refusal="refusal",
        _u_error_after_code="error_after_code", _u_non_english="non_english",
    )


EMPTY_LIST = pl.lit([], dtype=pl.List(pl.String))
CONTEXT_COLUMNS = [f"_x_{n}" for n in CONTEXT_RULES]  # one boolean column per context rule (``_context``)


def detect(
    turns: pl.DataFrame, *, text: str = "text", prev: str = "prev", prev_user: str = "prev_user",
    paste_min_chars: int = 24, window_chars: int = 400, prev_user2: str = "prev_user2",
) -> pl.DataFrame:
    """Add sat, dsat, sat_categories, dsat_categories, rationale and confidence to a frame of user turns.

    ``text`` is the user turn, ``prev`` the assistant turn it answers, ``prev_user`` (optional column;
    null for none) the user turn before ``prev``: without it the re-sent-request rules are off; ``prev_user2``
    (optional, null for none) the user turn before ``prev_user``, for a request sent again after a
    turn in between (`resend_earlier`). Cue
    patterns see the first ``window_chars`` characters of the turn (feedback opens a turn, while long
    turns are mostly pasted material whose words would otherwise fire cues); SAT cues only count in
    the opening sentence (`_OPENING`: praise opens a turn, and "Can you write it? Thanks" thanks for what
    comes next).
    Sentences pasted from ``prev`` are matched verbatim (case-sensitive) and cut out of the turns that
    carry some cue. ``confidence`` (0-1) says how sure the verdict is: the surest rule that fired, else
    lower where the context leaves the rules unsure (`UNCERTAIN`).
    No Python loop per row: every step is a polars expression over the whole column. Steps: the context
    features (``_context``) and cue windows (``_windows``), the rows with a cue (``_cue_candidates``), their
    categories (``_categorise``), then the confidence of every row.
    """
    if turns.height == 0:
        return turns.with_columns(  # same columns, same order as the non-empty path
            sat_categories=EMPTY_LIST, dsat_categories=EMPTY_LIST,
            sat=pl.lit(False), dsat=pl.lit(False), rationale=pl.lit(None, dtype=pl.String),
            confidence=pl.lit(None, dtype=pl.Float64),
        )
    work = _context(turns, text, prev, prev_user if prev_user in turns.columns else None, window_chars,
                    prev_user2 if prev_user2 in turns.columns else None).with_columns(_windows(turns[text], window_chars))
    cand = _cue_candidates(work, turns[prev], paste_min_chars)
    flagged = _categorise(cand)
    unsure = pl.min_horizontal([pl.when(pl.col(f"_u_{n}")).then(pl.lit(v)) for n, v in UNCERTAIN.items()])
    out = work.select("_row", unsure.alias("_unsure")).join(flagged, on="_row", how="left", maintain_order="left")
    out = out.select(
        pl.col("sat_categories").fill_null(EMPTY_LIST), pl.col("dsat_categories").fill_null(EMPTY_LIST),
        pl.col("sat").fill_null(False), pl.col("dsat").fill_null(False), "rationale",
        pl.coalesce("_conf", "_unsure", pl.lit(NO_SIGNAL_CONFIDENCE)).alias("confidence"),
    )
    return turns.drop([c for c in out.columns if c in turns.columns]).hstack(out)


def _windows(text: pl.Series, window_chars: int) -> list[pl.Series]:
    """``_row`` (row number), ``_raw`` (what cue patterns see: the turn's first ``window_chars`` characters,
    or its first line over material of its own) and ``_material`` (a first line over 300 more characters)."""
    # A cut turn ends in "…", so patterns anchored at the end ("make it shorter$") never match a cut.
    full = text.fill_null("")
    n = full.str.len_chars()
    raw = pl.when(n > window_chars).then(full.str.slice(0, window_chars) + " …").otherwise(full)
    # The first line, read only where the turn is long enough to hold material.
    long = n > 300
    at = long.arg_true()
    first_line = pl.Series([None] * len(full), dtype=pl.String).scatter(
        at, full.gather(at).str.strip_chars_start().str.extract(r"^([^\n]*)\n"))
    material = long & first_line.is_not_null()
    raw = pl.when(material).then(first_line + " …").otherwise(raw)
    return [pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), raw.alias("_raw"), material.alias("_material")]


def _cue_candidates(work: pl.DataFrame, prev: pl.Series, paste_min_chars: int) -> pl.DataFrame:
    """The rows with some cue (or a context rule), their text ``_t`` with pasted sentences of ``prev`` cut out and
    negations applied, its opening sentence ``_s`` and whether it reads as a task prompt (``_prompt``)."""
    # One pass of a few pattern unions picks the rows with some cue (or a context rule); most turns of
    # a real log start a new task and carry none, so everything below runs on few rows.
    clean = work.select(_clean(pl.col("_raw")).alias("_c"))
    clean = clean.with_columns(_dsat_hits("_c"))
    dsat = [name for c in DSAT_CATEGORIES for name in _union_hits(c)]
    cue = clean.select(pl.any_horizontal([pl.col("_c").str.contains(g) for g in _CUE_GROUPS] + dsat)).to_series() | work.select(
        pl.any_horizontal(CONTEXT_COLUMNS)).to_series()
    cand = work.hstack(clean).filter(cue).with_columns(prev.fill_null("").filter(cue).alias("_prev"))
    # A turn that kept all its sentences is cleaned already (the order of the rows does not matter below).
    cand = _drop_pasted(cand, paste_min_chars)
    same = pl.col("_kept") == pl.col("_raw")
    cand = pl.concat([cand.filter(same).with_columns(pl.col("_c").alias("_t")),
                      cand.filter(~same).with_columns(_clean(pl.col("_kept")).alias("_t"))])
    neg = pl.col("_t").str.contains(_NEGATION_CUE)
    cand = pl.concat([cand.filter(~neg), cand.filter(neg).with_columns(_negate(pl.col("_t")))])
    return cand.with_columns(pl.col("_t").str.extract(_OPENING).alias("_s"),
                             pl.col("_t").str.contains(_TASK_PROMPT).alias("_prompt"))


def _categorise(cand: pl.DataFrame) -> pl.DataFrame:
    """Per candidate row that keeps a signal: ``_row``, sat, dsat, the categories, ``rationale`` and ``_conf``.
    A category fires on its cues (SAT ones in the opening sentence, and not over a new task) or its context
    rules; a thanked new task or a question about the world keeps no request-like DSAT, sarcasm no SAT."""
    cand = cand.with_columns([pl.col("_s").str.contains(union).alias(name)
                              for c in SAT_CATEGORIES for union, name in zip(_category_regexes(c), _union_hits(c), strict=True)]
                             + [pl.col("_t").str.contains(_TASK_OPENING).alias("_task")])
    # The DSAT union hits of the candidate pass (on ``_c``) hold where the text is unchanged; the others are scanned again.
    changed = pl.col("_t") != pl.col("_c")
    if (redo := cand.filter(changed)).height:
        cand = pl.concat([cand.filter(~changed), redo.with_columns(_dsat_hits("_t"))])
    cand = cand.with_columns([
        (pl.any_horizontal(_union_hits(c)) & ~pl.col("_prompt") & (~pl.col("_task") if c in SAT_CATEGORIES else True)).alias(f"_c_{c}")
        for c in _CATEGORIES
    ])
    by_context = {c: [f"_x_{n}" for n, (cat, _) in CONTEXT_RULES.items() if cat == c] for c, _ in CONTEXT_RULES.values()}
    cand = cand.with_columns([(pl.col(f"_c_{c}") | pl.any_horizontal(cols)).alias(f"_c_{c}") for c, cols in by_context.items()])
    # A thanked new task, a question about the world, or an instruction over material of its own (a first line
    # over 300 more characters: "перепиши это без latex\n<text>") asks for something new, not for a change.
    # Each is computed once (polars evaluates an expression repeated in a list once per use).
    cand = cand.with_columns(_contrast=pl.col("_t").str.contains(_CONTRAST))
    thanked_new_task = (pl.col("_t").str.contains(_OPENS_POSITIVE) & ~pl.col("_contrast")) | pl.col(
        "_t").str.contains(_WORLD_QUESTION) | pl.col("_material")
    cand = cand.with_columns(_new_task=thanked_new_task & ~pl.any_horizontal(CONTEXT_COLUMNS),
                             _sarcastic=pl.col("_c_Negative_Feedback") & pl.col("_c_Gratitude") & ~pl.col("_contrast"))
    cand = cand.with_columns([(pl.col(f"_c_{c}") & ~pl.col("_new_task")).alias(f"_c_{c}") for c in _REQUEST_DSAT]
                             + [(pl.col(f"_c_{c}") & ~pl.col("_sarcastic")).alias(f"_c_{c}") for c in SAT_CATEGORIES])
    cand = cand.with_columns(
        sat=pl.any_horizontal([f"_c_{c}" for c in SAT_CATEGORIES]),
        dsat=pl.any_horizontal([f"_c_{c}" for c in DSAT_CATEGORIES]),
    ).filter(pl.col("sat") | pl.col("dsat"))
    return cand.select(
        "_row", "sat", "dsat",
        *[
            _names({c: pl.col(f"_c_{c}") for c in cats}, ",").str.split(",").fill_null(EMPTY_LIST).alias(col)
            for col, cats in (("sat_categories", SAT_CATEGORIES), ("dsat_categories", DSAT_CATEGORIES))
        ],
    ).join(_fired(cand), on="_row", how="left")
