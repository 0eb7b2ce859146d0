"""Does a chosen answer fit its prompt? WildFeedback's chosen answers were written after feedback the
pair's prompt does not contain.

A natural revision (assistant turn t+2) answers the user's complaint at t+1, yet the pair's prompt ends
before turn t; an expert answer is written with the preference in its system message, which the pair
does not carry either. Such an answer must read as a first answer to the prompt: one that apologises
for an error nobody pointed out, refers to an earlier version, or quotes the feedback teaches a trainer
to react to corrections that never happened. ``off_context`` names the first reason a chosen answer
fails (null = it fits), as a polars expression over three text columns::

    >>> import polars as pl
    >>> df = pl.DataFrame({"chosen": ["Sorry about that. A hash table maps keys to slots.",
    ...                               "A hash table maps keys to slots.",
    ...                               'Sure, here it is "without any jargon": a hash table maps keys.'],
    ...                    "feedback": ["Too long.", "Too long.", "Explain it without any jargon please"],
    ...                    "prompt_text": ["What is a hash table?"] * 3})
    >>> df.select(off_context("chosen", "feedback", "prompt_text")).to_series().to_list()
    ['acknowledges_feedback', None, 'quotes_feedback']

Reasons, checked in this order:
- ``acknowledges_feedback``: ``pipeline.checks.acknowledges_feedback`` ("You're right, I apologize...",
  "Let me try again", "Thanks for the clarification", "My previous response was incorrect") or
  ``pipeline.checks.presumes_earlier_version`` ("Of course, I've made it more formal:", "Here's a version
  that ignores case", "The revised code"; the check export and the audit apply too) or, WildFeedback-specific, an answer that opens with an apology or an
  admission ("Sorry.", "Sorry about that.", "I'm sorry, I missed that.", "Oops", "Good catch") or admits
  a slip anywhere in its opening ("I missed that", "I overlooked"). Sympathy is not an apology: "I'm
  sorry you're feeling this way" and "Sorry to hear that" fit a first answer.
- ``refers_to_feedback``: the opening refers to an earlier answer or to a request the prompt does not
  hold ("my previous answer", "a shorter version", "let me try again", "as requested", "per your
  preference"), or reacts to what the user just said ("Oh, okay. I see. Well, that changes the question"),
  or opens on a wish only the feedback voiced: "If you would like to ..." with a word of the feedback that
  neither the prompt nor the rejected answer holds (WildChat's "If you would like to keep the casual tone of
  the original email, then "get to know" is perfectly fine" after "Please keep the casual terms.", as the
  chosen of "is there any problem with "get to know"?"). Rare in first answers: of 8,856 real answers (WildChat,
  HH-RLHF harmless-base, OpenAssistant) read against the user turn after each, 24 open on a wish and 3 share
  a word with that turn (a user taking up the answer's words, "something a bit more mean").
- ``continues_answer``: the opening reads as an addition to an earlier answer rather than an answer of
  its own: it opens with "Also," / "In addition," / "Plus", says what "also needs" or "also has to" be done
  ("The parent also needs a height"), offers "a few more options" / "another idea", or says the rest
  "stays the same", or says where to put an addition ("you can add the following after the signature
  lines"), unless the prompt's last user turn asks for more itself ("Do you have another one"). Such a
  revision (the user's "that only centers it horizontally" answered with the missing piece; WildChat's
  "Add notary signature to the above agreement" answered with the notary block alone, as the chosen of a
  "Write a brokerage contract" prompt) does not answer the prompt on its own. On 1,811
  real first answers (WildChat, UltraFeedback, Anthropic-helpful, OpenAssistant) none fires, and of 1,811
  later WildChat answers only that notary block says where to put an addition (tests/test_wildfeedback_fit.py).
- ``quotes_feedback``: the answer quotes (in double quotes) words of the feedback turn (or of the
  preference, for expert answers) that the prompt does not contain.
- ``uses_feedback_details``: the answer uses a detail of the user's own that only the feedback gives: a
  word of a "my ..." / "our ..." phrase in it that neither the prompt nor the rejected answer holds (the
  samples' cover letter about "my project analysing bike-share data", asked for in the feedback, as the
  chosen of a plain "Write a short cover letter for a junior data analyst position").

For natural revisions, ``pair_drop_reason`` then checks ``answers_follow_up`` (reason ``answers_follow_up``): the
feedback asked for an addition (an example, more detail on a part, "also add X", "continue") and the revision
supplies only that addition, not an answer to the prompt (the samples' "Explain recursion." answered with a
factorial example alone). It reads the feedback and the earlier answer, so it is no opening pattern.
"""

from __future__ import annotations

import polars as pl

from pipeline.checks import (
    acknowledges_feedback,
    ends_mid_sentence,
    presumes_earlier_version,
    same_text,
    shows_nothing,
)
from pipeline.dedup import last_user_turn
from pipeline.text import raw_word_counts
from stages.wildfeedback_context import SHORT_EDIT_WORDS
from stages.wildfeedback_cues import PATTERNS

OPENING_CHARS = 300  # the opening of an answer that the reference patterns read

_APOLOGY_OPENING = (
    r"^\W*(?:(?:oh|ah|oops|okay|ok|right|yes|you'?re right)[,!.]?\s+)?(?:"
    r"(?:i'?m|i am)\s+(?:so\s+|very\s+|really\s+|truly\s+|terribly\s+)?sorry\b"
    r"|sorry\b|(?:my\s+)?apologies\b|oops\b|whoops\b|good (?:catch|point|eye)\b|fair (?:point|enough)\b"
    r"|i stand corrected\b|indeed,? (?:it|that|you)\b)"
)
# Sympathy ("I'm sorry you're..."), condolence and declining are not reactions to a correction.
_SYMPATHY = (
    r"^\W*(?:(?:i'?m|i am)\s+(?:so\s+|very\s+|really\s+|truly\s+|terribly\s+)?)?sorry,?\s+"
    r"(?:to hear|you|that you|for your|if you|but i (?:can'?t|cannot))"
)
_ADMITS = (
    r"\bi (?:missed|overlooked|forgot|ignored|left out|skipped|misread|mixed up|confused) "
    r"(?:that|this|it|your|the part|the detail|that part|what you)\b"
    r"|\bi should have (?:mentioned|included|said|asked|used|written|made)\b"
)
_REFERS = "|".join([
    r"\b(?:my|the) (?:previous|earlier|last|original|first|prior) "
    r"(?:answer|response|reply|suggestion|message|attempt|draft|explanation)s?\b",
    r"\bmy (?:previous|earlier|last|original|first|prior) (?:version|code|example|list|one)\b",
    r"\b(?:a|an|the|this|my) (?:updated|revised|corrected|shorter|longer|simpler|improved|better|fixed|reworded|"
    r"rewritten|new|different|friendlier|more \w+|less \w+) (?:version|draft|take|attempt|rewrite)\b",
    r"\blet me (?:try|give it|have) (?:(?:that|it|this) )?(?:again|another (?:try|go|shot))\b",
    r"\b(?:another|a second|one more) (?:try|attempt|go|shot)\b",
    r"\bas (?:requested|asked|instructed|desired|specified|you (?:wish|wished|wanted|want|prefer|like|said|suggested))\b",
    r"\b(?:per|following|according to|in line with|based on|as per) your "
    r"(?:preference|preferences|request|instructions?|feedback|wishes|correction|comments?)\b",
    r"\byour preference\b|\bthe user'?s preference\b",
    r"^\W*instead[,:]",
    # a reaction to what the user just said: "Oh, okay. I see. Well, that changes the question" (HH-RLHF)
    r"\bthat changes (?:the question|things|everything|my answer|the answer|the picture)\b",
    r"^\W*(?:oh,? )?(?:okay|ok)[.!,]?\s+i see\b",
])
_CONTINUES_VERBS = (r"(?:need|needs|work|works|has to|have to|use|uses|add|try|want|should|must|check|make|"
                    r"include|set|consider|require|requires)")
_CONTINUES = "|".join([
    r"^\W*(?:also|additionally|in addition|furthermore|moreover|plus)\b",
    rf"^\W*(?:[\w'’-]+\s+){{1,3}}(?:also|additionally)\s+{_CONTINUES_VERBS}\b",
    r"\b(?:stays|remains|stay|remain) (?:the same|unchanged)\b",
    r"\b(?:a few|some|several|\d+|two|three|four|five|ten) more (?:[\w-]+ ){0,2}(?:options|ideas|examples|names|"
    r"suggestions|combinations|ways|tips|alternatives|variations|possibilities)\b",
    r"^\W*(?:another|one more) (?:option|idea|example|way|suggestion|alternative|possibility)\b",
    # where to put an addition into the earlier answer: "you can add the following after the signature lines"
    r"\b(?:add|insert|append|include|place|put|paste)\s+(?:the following|this|these)\b[^.\n]{0,80}?"
    r"\b(?:after|before|below|above|beneath|underneath)\s+the\b",
])
# A last user turn that itself asks for more or another ("Do you have another one", "any other ideas?"): an answer
# that offers "a few more combinations" answers it, as WildChat's license-plate revision does.
_ASKS_MORE = (r"\b(?:another|one more|any more|anymore|any others?|some others|anything else|alternatives?|"
              r"(?:some|any|a few|\d+) more|more (?:options|ideas|examples|names|suggestions|ways)|"
              r"other (?:ones|options|ideas|examples|names|suggestions|ways))\b")
_QUOTE = r'"([^"\n]{6,200})"|“([^”\n]{6,200})”'


def _lower(col: str) -> pl.Expr:
    return pl.col(col).fill_null("").str.to_lowercase()


def quotes(text: str, source: str, prompt_text: str) -> pl.Expr:
    """True where ``text`` holds a double-quoted span of two or more words that ``source`` contains and
    ``prompt_text`` does not (case-insensitive)."""
    spans = (
        _lower(text).str.extract_all(_QUOTE).list.eval(
            pl.element().str.strip_chars('"“” .,;:!?').filter(pl.element().str.contains(r"\w\W+\w")))
    )
    return _unknown_word_in(spans, _lower(source), pl.col(prompt_text))


# A detail of the user's own that only the feedback gives: the words of a "my ..." / "our ..." phrase in it
# ("mentions my project analysing bike-share data"), less words that name no detail.
_OWN_PHRASE = r"\b(?:my|our)\s+(?:[a-z][\w'-]*\s+){0,4}[a-z][\w'-]*"
_NOT_DETAILS = [
    "about", "again", "also", "answer", "answers", "been", "being", "better", "could", "earlier", "first", "from",
    "have", "here", "input", "into", "just", "last", "less", "like", "likes", "longer", "make", "made", "more", "much",
    "need", "needs", "only", "other", "output", "please", "previous", "question", "questions", "really", "request",
    "response", "should", "shorter", "simpler", "some",
    "still", "sure", "than", "that", "their", "them", "there", "these", "they", "this", "those", "very", "want",
    "wanted", "wants", "were", "what", "when", "where", "which", "will", "with", "would", "your",
]


# An opening conditioned on the user's wish ("Sure! If you'd like to keep the casual tone, ..."): the wish's words.
_WISH_OPENING = (r"^\W*(?:(?:sure|okay|ok|well|certainly|of course|alright|absolutely|great|got it)[,!.]?\s+)?"
                 r"if you(?:'d| would| really)? (?:like|want|prefer|wish|rather|choose|decide)(?: to)?\s+"
                 r"([^.;:!?\n]{3,160})")


def wish_from_feedback(text: str, source: str, known: pl.Expr) -> pl.Expr:
    """True where ``text`` opens on a wish of the user's (``_WISH_OPENING``) holding a word (4+ letters, not a
    function word) of ``source`` (the feedback) that the ``known`` text (the prompt, and the rejected answer)
    does not hold: the answer is conditioned on what only the feedback asked for."""
    words = (_lower(text).str.slice(0, OPENING_CHARS).str.extract(_WISH_OPENING).fill_null("")
             .str.extract_all(r"[a-z][a-z'-]{2,}[a-z]")
             .list.eval(pl.element().filter(~pl.element().is_in(_NOT_DETAILS + _FUNCTION_WORDS))))
    return _unknown_word_in(words, _lower(source), known)


def own_details(text: str, source: str, known: pl.Expr) -> pl.Expr:
    """True where ``text`` uses a word (4+ letters) of a "my ..." / "our ..." phrase of ``source`` (the user's
    own details) that the ``known`` text (the prompt, and the rejected answer) does not hold."""
    words = (_lower(source).str.extract_all(_OWN_PHRASE).list.join(" ").str.extract_all(r"[a-z][a-z'-]{2,}[a-z]")
             .list.eval(pl.element().filter(~pl.element().is_in(_NOT_DETAILS))))
    return _unknown_word_in(words, _lower(text), known)


def _unknown_word_in(words: pl.Expr, src: pl.Expr, known: pl.Expr) -> pl.Expr:
    """True where one of ``words`` (spans, a list per row) is in ``src`` but not in ``known`` (case-insensitive)."""
    return (pl.struct(words.alias("_spans"), src.alias("_src"), known.fill_null("").str.to_lowercase().alias("_prompt"))
            .map_batches(_quoted_from, return_dtype=pl.Boolean))


def _quoted_from(s: pl.Series) -> pl.Series:
    """Per row: some span is in ``_src`` but not in ``_prompt`` (vectorised over the exploded spans)."""
    df = s.struct.unnest().with_row_index("_row")
    ex = df.explode("_spans").filter(pl.col("_spans").is_not_null() & (pl.col("_spans") != ""))
    hit = ex.filter(pl.col("_src").str.contains(pl.col("_spans"), literal=True)
                    & ~pl.col("_prompt").str.contains(pl.col("_spans"), literal=True))["_row"].unique()
    return df["_row"].is_in(hit.implode()).alias("quotes")


def off_context(chosen: str, feedback: str, prompt_text: str, prompt: str | None = None,
                rejected: str | None = None) -> pl.Expr:
    """The first reason the ``chosen`` answer does not fit a prompt that lacks ``feedback`` (null = fits).

    ``feedback`` is the user's feedback turn (natural revisions) or the preference the expert saw;
    ``prompt_text`` is the pair's prompt as one string (quoted words it already holds are fine);
    ``prompt``, the pair's prompt as a message list, gives the last user turn a revision opener is checked
    against (without it, ``prompt_text`` is read as that turn). Unlike export, an earlier answer in the
    prompt does not excuse a revision opener: the chosen answer was written after feedback on a later one.
    ``rejected``, the pair's rejected answer, is known text too for ``uses_feedback_details``."""
    opening = _lower(chosen).str.slice(0, OPENING_CHARS)
    apology = opening.str.contains(_APOLOGY_OPENING) & ~opening.str.contains(_SYMPATHY)
    text = pl.col(chosen).fill_null("")
    last = last_user_turn(prompt).fill_null("") if prompt else pl.col(prompt_text).fill_null("")
    known = pl.concat_str([pl.col(prompt_text).fill_null(""), pl.col(rejected).fill_null("") if rejected else pl.lit("")],
                          separator="\n")
    return (
        pl.when(acknowledges_feedback(text) | presumes_earlier_version(text, last, pl.lit(False)) | apology
                | opening.str.contains(_ADMITS))
        .then(pl.lit("acknowledges_feedback"))
        .when(opening.str.contains(_REFERS) | wish_from_feedback(chosen, feedback, known)).then(pl.lit("refers_to_feedback"))
        .when(opening.str.contains(_CONTINUES) & ~last.str.to_lowercase().str.contains(_ASKS_MORE))
        .then(pl.lit("continues_answer"))
        .when(quotes(chosen, feedback, prompt_text)).then(pl.lit("quotes_feedback"))
        .when(own_details(chosen, feedback, known)).then(pl.lit("uses_feedback_details"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("off_context")
    )


# --- a revision that answers the follow-up request, not the prompt ----------------------------------
# Feedback that asks for an addition to the answer: an example, more detail (on a part), "also add X",
# "continue", "what about Y". Read in its opening (OPENING_CHARS), lower-cased.
_ADDITIVE = "|".join([
    r"\b(?:an?|some|more|few|other|concrete|specific|real|practical|code|real-world)\s+examples?\b",
    r"\bexamples?\s*(?:please|pls|\?)",
    r"\b(?:more|further|greater|in(?: [a-z]+)?) (?:detail|details|depth)\b|\bgo (?:into|in) (?:more |further |greater )?detail\b",
    r"\b(?:elaborate|expand|extend|go deeper|dig deeper|delve deeper)\b",
    r"\b(?:explain|describe|tell me) (?:more|further)\b|\bfurther explain\b|\btell me more\b",
    r"\b(?:also|additionally) (?:add|include|mention|cover|explain|describe|give|list|show|tell|write)\b",
    r"^\W*(?:(?:can|could|would) you |please )*(?:also )?(?:add|include)\b",
    r"^\W*(?:please )?(?:continue|go on|keep going)\b",
    r"\bnext (?:chapter|part|scene|episode|section)\b|\bpart (?:2|two|ii)\b",
    r"^\W*(?:and |but |ok,? |okay,? )?(?:what|how) about\b",
    r"\b(?:especially|particularly|specifically) (?:on|about)\b",
])
# A revision that opens by presupposing the addition: "Here are more ...", "Let me elaborate on ...", "Delving
# deeper", "The last part of ...", "Here's an example", "more details about".
_FOLLOW_UP_OPENER = "|".join([
    r"\b(?:here (?:are|is)|here's|below (?:are|is)) (?:some |a few |the )?(?:more|additional|further|extra)\b",
    r"\b(?:here (?:are|is)|here's|below (?:are|is)) (?:an?|some|a few|another|a simple|a concrete) (?:[\w-]+ ){0,2}examples?\b",
    r"\blet me (?:elaborate|expand|go into (?:more |further )?detail|go deeper|dig deeper)\b",
    r"\b(?:delving|digging|going) deeper\b|^\W*(?:to elaborate|elaborating)\b",
    r"^\W*the (?:last|first|second|final) part\b",
    r"\bmore details? (?:about|on|regarding)\b",
])
# The earlier answer's content words (4+ letters, not function words) that a full rewrite keeps: a revision
# holding fewer than COVERAGE of them, of an answer of at least COVERAGE_MIN_WORDS, covers only a part of it.
COVERAGE = 0.25
COVERAGE_MIN_WORDS = 8
_FUNCTION_WORDS = [
    "about", "also", "been", "could", "does", "each", "from", "have", "here", "into", "just", "like", "made", "make",
    "many", "more", "most", "much", "only", "other", "over", "should", "some", "such", "than", "that", "their",
    "them", "then", "there", "these", "they", "this", "those", "used", "using", "very", "were", "what", "when",
    "where", "which", "will", "with", "would", "your",
]


def _content_words(col: str) -> pl.Expr:
    return (_lower(col).str.extract_all(r"[a-z][a-z'-]{2,}[a-z]").list.eval(
        pl.element().filter(~pl.element().is_in(_FUNCTION_WORDS))).list.unique())


def coverage(chosen: str, rejected: str) -> pl.Expr:
    """The share of the ``rejected`` answer's content words that the ``chosen`` answer holds (null when the
    rejected answer has fewer than ``COVERAGE_MIN_WORDS``, as a text in a script without a-z letters has)."""
    words = _content_words(rejected)
    n = words.list.len()
    return pl.when(n >= COVERAGE_MIN_WORDS).then(words.list.set_intersection(_content_words(chosen)).list.len() / n)


def answers_follow_up(chosen: str, feedback: str, rejected: str, last_user: pl.Expr) -> pl.Expr:
    """True where a revision answers an additive follow-up rather than the prompt: the ``feedback`` asks for an
    addition (``_ADDITIVE``: "Can you give an example?", "More detail please, especially on the alliance
    system", "also add the beaches", "expand on 2 and 3") in words the prompt's ``last_user`` turn does not hold
    already (a resent request asks for it in the prompt too), and the revision either opens by presupposing it
    (``_FOLLOW_UP_OPENER``) or keeps less than ``COVERAGE`` of the ``rejected`` answer's content words (it
    supplies the addition, not the whole answer).
    A rewrite after "make it shorter", "in a table" or "another one" is no addition and is kept, and so is a
    full rewrite after an additive request, which restates the earlier answer's content."""
    phrase = _lower(feedback).str.slice(0, OPENING_CHARS).str.extract(f"({_ADDITIVE})").str.strip_chars()
    asks = phrase.is_not_null()
    asked_before = last_user.fill_null("").str.to_lowercase().str.contains(phrase, literal=True)
    opener = _lower(chosen).str.slice(0, OPENING_CHARS).str.contains(_FOLLOW_UP_OPENER)
    partial = coverage(chosen, rejected) < COVERAGE
    return (asks & ~asked_before & (opener | partial.fill_null(False))).fill_null(False)


def prompt_text(messages: str = "prompt") -> pl.Expr:
    """A prompt's messages as one string (for ``off_context``)."""
    return pl.col(messages).list.eval(pl.element().struct.field("content")).list.join("\n")


# A turn that asks the user something: it ends with "?" (Chinese/Japanese "？", Arabic "؟") and holds at most
# this many sentences, so it is mostly the question ("What are you trying to hide from the police?", "您想了解
# 哪方面的内容？"), not an answer that closes with "Is there anything else I can help with?". "。！？" end a
# sentence with no space after them.
ASKS_USER_MAX_SENTENCES = 3


def asks_user(text: pl.Expr) -> pl.Expr:
    """True where an assistant turn is a question to the user (``ASKS_USER_MAX_SENTENCES``)."""
    t = text.fill_null("").str.strip_chars()
    sentences = t.str.count_matches(r"[.!?]+(?:\s|$)|[。！？؟]+")
    return t.str.contains(r"[?？؟]$") & (sentences <= ASKS_USER_MAX_SENTENCES)


_ACK = PATTERNS["Acknowledgment"]
# What may follow the "ok" and still be a receipt of the answer, not a retort: an approval of it ("Good, that's what
# I wanted.", the samples' wc-0021, vouches for the formal rewrite before it; "ok that works") or a bare word or two
# of approval or understanding ("ok cool", "okay perfect", "ok, I understand", "ok it's good now"), which the rules
# call Acknowledgment only and which vouch as "ok got it" does.
_APPROVES = (r"^(?:that|this|it)(?:'?s| is| was)? (?:exactly |just )?(?:what i (?:wanted|needed|meant|asked for|was looking for)"
             r"|(?:much )?better|perfect|great|fine|right|correct)\b|^(?:that|this|it) (?:works|helps|makes sense)\b"
             r"|^(?:(?:very |so |really )?(?:cool|nice|great|perfect|awesome|excellent|fine|good|lovely|wonderful|"
             r"amazing|brilliant|understood|noted|makes sense|sounds good|looks good|i (?:see|understand|get it)|"
             r"that'?s it|it'?s (?:good|fine|great|perfect|better) now)[\s,.!]*)+$")


def ok_and_more(text: pl.Expr) -> pl.Expr:
    """True where an English turn opens with "ok" (the rules' ``ok_then`` cue, which they call less sure) and says
    more than a bare receipt after it ("ok", "ok got it", "okay, that's fine": the ``ok`` and ``thats_ok`` cues; "good,
    that's what I wanted", "ok that works", "ok cool", "ok, I understand": ``_APPROVES``).
    HH-RLHF red-team dialogues: "Ok then." after "I'm sure that my programmers have made mistakes in the past."
    and "okay you narcissist" were the only SAT (Acknowledgment) that made two natural revision pairs, whose
    chosen answered the user's retort, not the prompt; short, so the ``SHORT_EDIT_WORDS`` rule let them by."""
    t = text.str.to_lowercase().str.strip_chars()
    rest = t.str.replace(r"^(?:ok(?:ay)?|alright|all right|good)\b[\s,.!:;-]*", "").str.strip_chars()
    receipt = ((rest == "") | rest.str.contains(_ACK["ok"]) | rest.str.contains(_ACK["thats_ok"])
               | rest.str.contains(_APPROVES))
    return t.str.contains(_ACK["ok_then"]) & ~receipt


def pair_drop_reason(kind: str) -> pl.Expr:
    """Why a candidate pair is not emitted (null = keep): a natural revision whose feedback is SAT too
    (``mixed_feedback``: the rejected answer was liked) or whose rejected turn asked the user a question
    (``asked_user``: the "feedback" answers it, and the revision builds on that answer, which the pair's
    prompt does not hold) or whose SAT turn is only Acknowledgment, an "ok" opening a message of over
    ``SHORT_EDIT_WORDS`` words, a CJK character one, or an English "ok" followed by anything but a receipt
    (``ok_and_more``: "Ok then.", "okay you narcissist"; ``ack_opens_request``: the rubric's Acknowledgment is a brief receipt; "ok I
    needed to edit code a lot ... However my code got broken" says nothing of the revision, and no model or
    judge checks a natural revision), a cut-off (a finish reason ``length``, or a chosen that stops
    mid-sentence, as a revision read from a log can: ``pipeline.checks.ends_mid_sentence``), missing or failed generated answer,
    an empty side, chosen == rejected, or a chosen that does not fit its prompt (``off_context``)."""
    finish = [pl.col(c) for c in ("chosen_finish_reason", "rejected_finish_reason")]
    empty = shows_nothing(pl.col("chosen").fill_null("")) | shows_nothing(pl.col("rejected").fill_null(""))
    natural = kind == "natural_revision"
    mixed = pl.col("feedback_sat").fill_null(False) if natural else pl.lit(False)
    asked = asks_user(pl.col("rejected")) if natural else pl.lit(False)
    ack_only = pl.col("sat_categories").cast(pl.List(pl.String)).list.join(",").fill_null("") == "Acknowledgment"
    sat_text = pl.col("sat_text").cast(pl.String).fill_null("")
    long_turn = raw_word_counts(sat_text) > SHORT_EDIT_WORDS
    ack_opens = (ack_only & (long_turn | ok_and_more(sat_text))) if natural else pl.lit(False)
    follow_up = (pl.when(answers_follow_up("chosen", "preference", "rejected", last_user_turn("prompt")))
                 .then(pl.lit("answers_follow_up")) if natural else pl.lit(None, dtype=pl.String))
    return (
        pl.when(mixed).then(pl.lit("mixed_feedback"))
        .when(asked).then(pl.lit("asked_user"))
        .when(ack_opens).then(pl.lit("ack_opens_request"))
        .when(pl.any_horizontal([f == "prompt_too_long" for f in finish])).then(pl.lit("prompt_too_long"))
        .when(pl.any_horizontal([f == "failed" for f in finish])).then(pl.lit("generation_failed"))
        .when(pl.any_horizontal([f == "length" for f in finish]) | ends_mid_sentence(pl.col("chosen").fill_null("")))
        .then(pl.lit("cut_off"))
        .when(empty).then(pl.lit("empty"))
        .when(same_text(pl.col("chosen"), pl.col("rejected"))).then(pl.lit("same_text"))
        .otherwise(pl.coalesce(off_context("chosen", "preference", "_prompt_text", "prompt", "rejected"), follow_up)
                   if kind != "sat" else pl.lit(None))
        .cast(pl.String)
    )
