"""Checks every pair must pass, as polars expressions: shared by the stages (which drop and count) and
by ``prefpipe audit`` (which verifies the release independently).

- ``same_text(a, b)``: chosen and rejected are the same answer once whitespace is normalised.
- ``acknowledges_feedback(text)``: an answer that reacts to a correction ("You're right, I apologize
  for the error...", "Here is the revised version"). As a chosen answer it is only right when its
  prompt ends with that feedback; otherwise a trainer learns to apologise for corrections nobody made.
- ``gives_feedback(text)``: a user turn that corrects or complains about the previous answer, the
  context in which an acknowledgement makes sense.
- ``unprompted_acknowledgement(chosen, prompt)``: the two above over message-list columns: a chosen that
  acknowledges feedback its prompt's last user turn does not give.
- ``repeats_itself(text)``: an answer stuck in a loop, most of its sentences repeating earlier ones (a
  sampling failure that ended before the token limit, so ``finish_reason`` does not catch it).

The patterns are English plus the commonest forms in the languages of real chatbot logs; they are
precise rather than exhaustive (tests/test_checks.py pins what they catch and what they leave alone).
"""

from __future__ import annotations

import polars as pl

from pipeline.dedup import last_user_turn, text_of


def squash(text: pl.Expr) -> pl.Expr:
    """Every run of whitespace as one space, trimmed."""
    return text.str.replace_all(r"\s+", " ").str.strip_chars()


def same_text(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """True where two texts are equal after whitespace normalisation."""
    return squash(a) == squash(b)


_ACK = "|".join([
    r"\byou(?:'re| are) (?:absolutely |completely |totally |quite )?(?:right|correct)(?:[,.!;:]| about| that|$)",
    r"\b(?:i )?apologi[sz]e (?:for|if)\b",
    r"\bmy (?:apologies|mistake|bad|error)\b",
    r"\bsorry (?:for|about) (?:the|my|any|that) (?:confusion|error|mistake|oversight|misunderstanding|inconvenience)",
    r"\b(?:thank you|thanks) for (?:pointing|catching|noticing|the correction|correcting|clarifying|your feedback|letting me know)",
    r"\bas you (?:pointed out|correctly|rightly|noted|mentioned|requested|asked)\b",
    r"\bi (?:misunderstood|misread|made (?:a|an) (?:mistake|error))\b",
    r"\b(?:here is|here's|below is) (?:a |an |the |your )?(?:revised|corrected|updated|rewritten|shorter|longer|improved|fixed|modified|new) ",
    r"\blet me (?:correct|fix|revise|rewrite|clarify) (?:that|this|my|it)\b",
    r"\bi (?:have|'ve) (?:revised|corrected|updated|rewritten|fixed|modified) ",
    # other languages seen in real logs: zh, ru, fr, es, de, pt
    r"抱歉|对不起|您说得对|你说得对|我的错误",
    r"\bизвините\b|\bпрошу прощения\b|\bвы правы\b|\bты прав\b",
    r"\b(?:vous avez raison|tu as raison|désolé pour|je m'excuse)\b",
    r"\b(?:tienes razón|tiene razón|disculpa(?:s)? (?:por|la)|perdón por|lo siento por)\b",
    r"\b(?:sie haben recht|du hast recht|entschuldigung für)\b",
    r"\b(?:você tem razão|desculpe pelo|desculpe pela)\b",
])

_FEEDBACK = "|".join([
    r"\b(?:wrong|incorrect|not (?:correct|right|true|what i (?:asked|wanted|meant))|mistake|error|doesn'?t work|does not work|didn'?t work)\b",
    r"\b(?:try again|rewrite|redo|again|shorter|longer|more (?:detail|concise|formal|casual)|i meant|i asked|you (?:forgot|missed|didn'?t))\b",
    r"\bno,|\b(?:nope|that'?s not|are you sure|you sure)\b",  # "no," outside the \b group: "No, Canberra"
])


def acknowledges_feedback(text: pl.Expr) -> pl.Expr:
    """True where an answer reacts to a correction or complaint (in its first 300 characters)."""
    return text.str.slice(0, 300).str.to_lowercase().str.contains(_ACK)


def gives_feedback(text: pl.Expr) -> pl.Expr:
    """True where a user turn corrects or complains about an answer."""
    return text.str.to_lowercase().str.contains(_FEEDBACK)


def unprompted_acknowledgement(chosen: str, prompt: str) -> pl.Expr:
    """True where the ``chosen`` message list reacts to a correction that the last user turn of the
    ``prompt`` message list does not give. Any method's model-written answers can (SmolLM2's PUGC answers
    "Here's a revised version of the answer..." reached Curry-DPO and DOVE pairs): export drops such pairs,
    the audit checks that none is left."""
    ack = acknowledges_feedback(text_of(chosen)) & ~gives_feedback(last_user_turn(prompt).fill_null(""))
    return ack.fill_null(False)


# A loop: of an answer's sentences of >= 3 words (at least LOOP_MIN_SENTENCES of them), this share or more
# repeat an earlier one. Real answers repeat lines too (code, workout tables, a song's chorus): on 3,997 real
# answers (WildChat, UltraFeedback, OpenAssistant, DOVE gold) the largest share is 0.46, while the looping
# SmolLM2 answer of the real-model run ("I'm here to listen." over and over) reaches 0.79.
LOOP_MIN_SENTENCES = 5
LOOP_SHARE = 0.6


def repeats_itself(text: pl.Expr) -> pl.Expr:
    """True where an answer loops: at least ``LOOP_SHARE`` of its sentences (of three or more words,
    lowercased, whitespace normalised; at least ``LOOP_MIN_SENTENCES``) repeat an earlier one. A sentence
    ends at ".", "!", "?" or a line break; one list pass per row does the counting."""
    sentences = text.str.to_lowercase().str.replace_all(r"[ \t\r\f\v]+", " ").str.extract_all(
        r"[^.!?\n ](?:[^.!?\n]*[^.!?\n ])?[.!?]?")
    worded = pl.element().filter(pl.element().str.count_matches(" ", literal=True) >= 2)
    n = worded.len()
    return sentences.list.eval((n >= LOOP_MIN_SENTENCES) & (n - worded.n_unique() >= LOOP_SHARE * n)).list.first(
    ).fill_null(False)


def looping_chosen(chosen: str) -> pl.Expr:
    """True where the ``chosen`` message list's answer repeats itself in a loop (``repeats_itself``): a
    looping answer is a fine rejected answer, never a chosen one. Export drops such pairs, the audit checks
    that none is left."""
    return repeats_itself(text_of(chosen))
