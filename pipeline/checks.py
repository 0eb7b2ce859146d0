"""Checks every pair must pass, as polars expressions: shared by the stages (which drop and count) and
by ``prefpipe audit`` (which verifies the release independently).

- ``same_text(a, b)``: chosen and rejected are the same answer once whitespace is normalised, case folded and
  sentence punctuation that joins no two word characters dropped (``answer_key``).
- ``acknowledges_feedback(text)``: an answer that reacts to a correction ("You're right, I apologize
  for the error...", "Let me try again", "Here's a more concise version", "Thanks for the clarification",
  "My previous response was incorrect"). As a chosen answer it is only right when its prompt ends with
  that feedback; otherwise a trainer learns to apologise for corrections nobody made. Declines ("很抱歉，
  作为AI…", "I'm sorry for any misunderstanding, but as an AI I can't") are not reactions.
- ``presumes_earlier_version(text, last_user, earlier_answer)``: an answer that opens as a revision ("Of
  course, I've made it more formal:", "Got it — here's ...", "Here's a version that ignores case", "The
  revised code") or as an apology for an earlier answer ("Apologies for the confusion.", "I stand corrected",
  "Good catch") while the prompt holds no earlier answer and its last user turn asks for no version.
- ``gives_feedback(text)``: a user turn that corrects or complains about the previous answer, the
  context in which an acknowledgement makes sense.
- ``unprompted_acknowledgement(chosen, prompt)``: the three above over message-list columns: a chosen that
  acknowledges feedback its prompt's last user turn does not give, or presumes an earlier version. The
  WildFeedback stage (``stages/wildfeedback_fit.py``), export and the audit all use it.
- ``repeats_itself(text)``: an answer stuck in a loop, most of its sentences repeating earlier ones (a
  sampling failure that ended before the token limit, so ``finish_reason`` does not catch it).
- ``shows_nothing(text)``: a text with no visible character (empty, white space, zero-width marks or U+FFFD
  only): an answer that says nothing. The model stages drop such a response before it is paired or judged,
  as ingest rejects such a message; ``unprintable_text`` uses it.
- ``unprintable_text(cols)``: a message holding a control character (a NUL, an ESC colour code) or a bidi override,
  or showing nothing (white space or zero-width marks only): what a model or a misbehaving server may answer.
- ``malformed_dialogue(prompts, completions)``: a prompt that is empty, holds an empty message, puts a
  system message anywhere but first, does not alternate user/assistant from a user turn or does not end
  with a user turn; a chosen/rejected that is not a non-empty list of non-empty assistant messages. The
  stages' records refuse such rows (``pipeline.records``); the audit checks the release files again.

The patterns are English plus the commonest forms in the languages of real chatbot logs; they are
precise rather than exhaustive (tests/test_checks.py pins what they catch and what they leave alone).
"""

from __future__ import annotations

import polars as pl

from pipeline.dedup import last_user_turn, text_of
from pipeline.encodings import CONTROL_TOKEN, UNPRINTABLE, VISIBLE
from pipeline.text import WORD, non_ascii


def squash(text: pl.Expr) -> pl.Expr:
    """Every run of whitespace as one space, trimmed."""
    return text.str.replace_all(r"\s+", " ").str.strip_chars()


# Sentence punctuation and quotes, where they do not join two word characters ("3.5", "1,000", "it's" keep theirs).
_PUNCT = "[.,!?;:…\"'`“”‘’«»„¡¿。，、！？；：]"
_LOOSE_PUNCT = rf"(?:{_PUNCT}+(?:\s|$)|(?:^|\s){_PUNCT}+|{_PUNCT}+$)"
# ``answer_key`` of a lower-cased text in one pass: a run of whitespace and loose punctuation becomes one space.
_LOOSE_RUN = rf"(?:{_LOOSE_PUNCT}|\s)+"
_NEEDS_KEY = rf"[^\S ]|  |^ | $|{_PUNCT}"  # irregular whitespace or a punctuation mark


def answer_key(text: pl.Expr) -> pl.Expr:
    """The text with whitespace normalised, case folded and sentence punctuation and quotes that join no two
    word characters dropped: the form in which two answers are the same answer."""
    return squash(text.str.to_lowercase().str.replace_all(_LOOSE_PUNCT, " "))


def folded_answer_key(folded: pl.Expr) -> pl.Expr:
    """``answer_key`` of texts already lower-cased, cheaper: texts with no punctuation mark and regular
    whitespace (one space between words, none at the ends) are their own key and skip the regex; the rest
    take one combined pass instead of three (tests/test_checks.py pins it equal to ``answer_key``)."""
    keyed = folded.str.replace_all(_LOOSE_RUN, " ").str.strip_chars()
    return pl.when(folded.str.contains(_NEEDS_KEY)).then(keyed).otherwise(folded)


def same_text(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """True where two texts are the same answer (``answer_key``): "Paris is the capital." and "paris is  the
    capital" or "You're welcome." and "You're welcome!" (3 of 2,312 HH-RLHF harmless-base pairs; "Input Mode" /
    "Input Mode." in UltraFeedback) teach nothing; "3.5" and "35", "2+2" and "2-2" stay different."""
    return answer_key(a) == answer_key(b)


_ACK = "|".join([
    r"\byou(?:'re| are) (?:absolutely |completely |totally |quite )?(?:right|correct)(?:[,.!;:]| about| that|$)",
    r"\b(?:i )?apologi[sz]e (?:for|if)\b",
    r"\bmy (?:apologies|mistake|bad|error)\b",
    r"\bsorry (?:for|about) (?:the|my|any|that) (?:confusion|error|mistake|oversight|misunderstanding|inconvenience)",
    r"\b(?:thank you|thanks) for (?:pointing|catching|noticing|the correction|correcting|clarifying|your feedback|letting me know)",
    r"\bas you (?:pointed out|correctly|rightly|noted|mentioned|requested|asked)\b",
    r"\bi (?:misunderstood|misread|made (?:a|an) (?:mistake|error))\b",
    r"\b(?:here is|here's|below is) (?:a |an |the |your )?(?:shorter|longer) ",
    r"\blet me (?:correct|fix|revise|rewrite|clarify) (?:that|this|my|it)\b",
    # a second try, a thanks for a clarification, a verdict on an earlier answer, a confirmed correction
    r"\blet me (?:try|give it|have (?:a|another) go at it) (?:(?:that|it|this) )?(?:again|one more time)\b",
    r"\b(?:here is|here's|below is) (?:another|a (?:second|new|different|fresh)) (?:attempt|try|take|go|shot)\b",
    r"\b(?:here is|here's|below is) (?:a |an |the |your )?(?:more [a-z-]+|less [a-z-]+|another|different|new|simpler|clearer|"
    r"condensed|trimmed|polished|edited|adjusted|reworded|refined|tightened|toned-down) version\b",
    r"\b(?:thank you|thanks) (?:so much |very much )?for (?:the|your|that) clarification\b",
    r"\bmy (?:previous|earlier|last|original|prior|initial) (?:response|answer|reply|message|explanation|statement|"
    r"calculation|version) (?:was|is|contained|had|did|missed|wasn'?t|may have|might have)\b",
    r"^\W*(?:correct|that'?s correct|that is correct)[,.!:]\s+[^.\n]{0,60}\bactually\b",
    # other languages seen in real logs: zh, ru, fr, es, de, pt
    r"抱歉|对不起|您说得对|你说得对|我的错误",
    r"^\W*(?:извините|прошу прощения)\b|\bвы правы\b|\bты прав\b",
    r"\b(?:vous avez raison|tu as raison|désolé pour|je m'excuse (?:pour|de|d'|si))",
    r"\b(?:tienes razón|tiene razón|disculpa(?:s)? (?:por|la)|perdón por|lo siento por)\b",
    r"\b(?:sie haben recht|du hast recht|entschuldigung für)\b",
    r"\b(?:você tem razão|desculpe pelo|desculpe pela)\b",
])

_FEEDBACK = "|".join([
    r"\b(?:wrong|incorrect|not (?:correct|right|true|what i (?:asked|wanted|meant))|mistake|error|doesn'?t work|does not work|didn'?t work)\b",
    r"\b(?:try again|rewrite|redo|again|shorter|longer|more (?:detail|concise|formal|casual)|i meant|i asked|you (?:forgot|missed|didn'?t))\b",
    r"\bno,|\b(?:nope|that'?s not|are you sure|you sure)\b",  # "no," outside the \b group: "No, Canberra"
    # as real OpenAssistant users put it ("i didnt mean LLM like that", "That is not an essay that is a poem.",
    # "You did not explain how this relates to ...", "I don't believe "bres-thh" is correct", "I still don't get it")
    r"\bi (?:didn'?t|did not|don'?t|do not) mean\b|\bnot what i meant\b|(?:^|[.!?]\s+)(?:that|this|it) is not\b",
    r"\byou (?:did not|have not|haven'?t|never) (?:answer|explain|mention|address|include|say|tell|give|use|do|read|follow)",
    r"\bi (?:don'?t|do not) (?:think|believe) (?:that'?s|that is|this is|it'?s|it is|you'?re|you are|\"[^\"\n]{1,40}\" is)\b",
    r"\bi (?:still )?(?:don'?t|do not) (?:get|understand) (?:it|that|this|what|how|why)\b",
    # the languages ``_ACK`` reads, as real WildChat users put it ("写的不对", "不是金庸小说里的", "你说的是真的吗 还是
    # 瞎猜的", "пишет ошибку KeyError", "Нет там никакого settings", "tu as omis tout le style ?", "Nochmal."):
    # without them a chosen "抱歉，我之前回答的信息有误" after "你说的是真的吗" read as unprompted
    r"不对|错了|有误|不正确|不准确|[写说算搞弄]错|重新(?:写|回答|生成|来|给)|再(?:写|来|试|给)一(?:次|遍|下)|换一个|你确定|"
    r"真的吗|瞎(?:说|编|猜)|不是我(?:要|想要|问)的|(?:还是|仍然|依然)(?:不行|报错|错)|报错|没有回答|^\W*不是",
    r"\b(?:неправильно|неверно|ошибк[аиуеой]|не то|не так|это не|переделай|перепиши|ещё раз|еще раз|ты ошиб\w*|"
    r"вы ошиб\w*|не работает|не получается|ты уверен|вы уверены)\b|^\W*нет\b",
    r"\b(?:faux|fausse|incorrecte?|erreur|ce n'est pas|c'est pas|pas (?:correct|juste|ce que)|tu as (?:oublié|omis)|"
    r"vous avez (?:oublié|omis)|refais|recommence|encore une fois|ne (?:marche|fonctionne) pas|tu es sûr|"
    r"vous êtes sûr)\b|^\W*non\b",
    r"\b(?:incorrect[oa]|equivocad[oa]|no es (?:correcto|cierto|lo que)|no funciona|otra vez|de nuevo|"
    r"te (?:olvidaste|equivocaste)|estás seguro)\b|^\W*no,",
    r"\b(?:falsch|fehler|nicht richtig|stimmt nicht|nochmal|noch einmal|funktioniert nicht|das ist nicht|"
    r"bist du sicher|sind sie sicher)\b|^\W*nein\b",
    r"\b(?:errad[oa]|incorret[oa]|erro|não (?:é|está) (?:certo|correto)|não funciona|de novo|outra vez|"
    r"você (?:esqueceu|errou)|tem certeza)\b|^\W*não,",
])


# An acknowledgement ("Of course", "Understood.", "Got it —", "Sure,") that goes on to a change it made; or an
# answer that offers "a version that/without ..." or "the revised ...": both presume an earlier version of the
# answer, so they fit only a prompt that holds one or asks for one (``presumes_earlier_version``).
_OPENER = (r"(?:of course|understood|got it|gotcha|sure(?: thing)?|certainly|absolutely|okay|ok|alright|all right|"
           r"no problem|noted|i see|i understand)")
_CHANGE = "|".join([
    r"i(?:'ve| have) (?:now )?(?:made|rewritten|revised|updated|adjusted|changed|removed|shortened|simplified|edited|"
    r"modified|reworded|toned|condensed|trimmed|expanded|tweaked|cut|dropped|taken out|added|rephrased|reworked) ",
    r"(?:here is|here's|below is|this is) (?:a|an|the|your) (?:[a-z-]+ ){0,2}(?:version|rewrite|revision|attempt)\b",
    r"let me (?:try|give it) (?:(?:that|it|this) )?(?:again|another|once more|one more)\b",
    r"let me (?:redo|rework|rewrite|revise|adjust|update|change) (?:it|that|this|my|the)\b",
])
_PRESUMES = "|".join([
    rf"^\W*{_OPENER}\b[^a-z0-9\n]{{0,4}}(?:[a-z',]+ ){{0,3}}(?:{_CHANGE})",
    # "understood" / "got it" / "noted" answer an instruction, and the prompt gave none: "Got it — here's ..."
    r"^\W*(?:understood|got it|gotcha|noted)\b[^a-z0-9\n]{0,4}(?:here(?:'s| is)|i(?:'ve| have)|let me|below is)\b",
    r"^\W*(?:(?:[a-z',!]+ ){0,3})?(?:here is|here's|below is) (?:a|an) (?:[a-z-]+ ){0,2}version "
    r"(?:that|which|without|with|where|in which)\b",
    r"^\W*(?:(?:[a-z',!]+ ){0,3})?(?:the|this|my) (?:revised|updated|corrected|rewritten|edited|improved|fixed|"
    r"modified|reworked|refined) ",
    # anywhere in the opening, as the older acknowledgement list had them: "I see the issue. Here is the corrected"
    r"\b(?:here is|here's|below is) (?:a |an |the |your |my )?(?:revised|corrected|updated|rewritten|improved|fixed|"
    r"modified) ",
    r"\bi(?: have|'ve) (?:revised|corrected|updated|rewritten|fixed|modified) ",
    # an apology for an earlier answer's confusion or error, or a thanks for a catch: GPT's commonest reaction
    # opener ("Apologies for the confusion.", 16 of 1,811 later WildChat answers, none caught by ``_ACK``), which
    # no first answer of the real data opens with; the apology ends its sentence, so a decline ("Apologies for
    # any confusion, but as an AI ...") is none
    r"^\W*(?:(?:oh|ah|oops|okay|ok)[,!.]?\s+)?(?:my )?apologies for (?:the|any|my|that) (?:[a-z]+ )?"
    r"(?:confusion|error|mistake|oversight|misunderstanding)(?: earlier| before| previously)?\s*[.!:;—–-]",
    r"^\W*(?:i stand corrected|(?:good|great|nice) catch|(?:oops,? |oh,? )?sorry about that)\b",
])
# Declining is not reacting to feedback: "很抱歉，作为AI…", "I'm sorry for any misunderstanding, but as an AI…".
_DECLINES = "|".join([
    r"^\W*(?:很|非常|十分)?(?:抱歉|对不起)[，,。!！]?\s*(?:作为|我无法|我不能|由于|我是|我没有|但|您没有|你没有)",
    r"^\W*(?:i'?m |i am )?(?:very |so |really )?sorry for (?:any|the) (?:confusion|misunderstanding|inconvenience)[,.]? "
    r"but (?:as an ai|i (?:can'?t|cannot|am (?:not|unable)|don'?t|do not))",
    r"^\W*(?:извините|прошу прощения)[,.!]?\s*(?:но )?(?:я не|мне нужно больше|мне не)",
])
# A last user turn that asks for a version, a rewrite or a change of something: "a version ..." fits it.
_ASKS_VERSION = (r"\b(?:versions?|re-?write|rephrase|revise|revision|reword|paraphrase|edit|proofread|polish|improve|"
                 r"shorten|simplify|modify|update|adapt|variant|variation|translate|convert|refactor|fix|correct|change|"
                 r"make (?:it|this|that|the|them|my)|(?:my|this|the following|the) (?:code|text|essay|letter|email|"
                 r"paragraph|resume|cv|story|poem|script|function|draft))\b")


def _opening(text: pl.Expr) -> pl.Expr:
    """An answer's first 300 characters, lower-cased, curly apostrophes straightened: what the patterns read."""
    return text.str.slice(0, 300).str.to_lowercase().str.replace_all("\u2019", "'", literal=True)


def acknowledges_feedback(text: pl.Expr) -> pl.Expr:
    """True where an answer reacts to a correction or complaint (in its first 300 characters)."""
    opening = _opening(text)
    return opening.str.contains(_ACK) & ~opening.str.contains(_DECLINES)


def presumes_earlier_version(text: pl.Expr, last_user: pl.Expr, earlier_answer: pl.Expr) -> pl.Expr:
    """True where an answer opens as a revision ("Of course, I've made it more formal:", "Understood. Here's
    a version without emojis:", "Here's a version that ignores case", "The revised code") while its prompt
    holds no ``earlier_answer`` (a boolean expression) and its ``last_user`` turn asks for no version or
    rewrite (opening 300 characters, anchored at the start of the answer)."""
    opening = _opening(text)
    asked = last_user.str.to_lowercase().str.contains(_ASKS_VERSION) | gives_feedback(last_user)
    return (opening.str.contains(_PRESUMES) & ~earlier_answer & ~asked).fill_null(False)


def gives_feedback(text: pl.Expr) -> pl.Expr:
    """True where a user turn corrects or complains about an answer."""
    return text.str.to_lowercase().str.contains(_FEEDBACK)


def unprompted_acknowledgement(chosen: str, prompt: str) -> pl.Expr:
    """True where the ``chosen`` message list reacts to a correction that the last user turn of the
    ``prompt`` message list does not give. Any method's model-written answers can (SmolLM2's PUGC answers
    "Here's a revised version of the answer..." reached Curry-DPO and DOVE pairs): export drops such pairs,
    the audit checks that none is left."""
    answer, last = text_of(chosen), last_user_turn(prompt).fill_null("")
    ack = acknowledges_feedback(answer) & ~gives_feedback(last)
    return ack.fill_null(False) | presumes_earlier_version(answer, last, holds_answer(prompt))


def holds_answer(prompt: str) -> pl.Expr:
    """True where the ``prompt`` message list holds an assistant message (an earlier answer)."""
    return pl.col(prompt).list.eval(pl.element().struct.field("role") == "assistant").list.any().fill_null(False)


# A loop: of an answer's sentences of >= 3 words (at least LOOP_MIN_SENTENCES of them), this share or more
# repeat an earlier one. Real answers repeat lines too (code, workout tables, a song's chorus): on 3,997 real
# answers (WildChat, UltraFeedback, OpenAssistant, DOVE gold) the largest share is 0.46, while the looping
# SmolLM2 answer of the real-model run ("I'm here to listen." over and over) reaches 0.79.
LOOP_MIN_SENTENCES = 5
LOOP_SHARE = 0.6


def repeats_itself(text: pl.Expr) -> pl.Expr:
    """True where an answer loops: at least ``LOOP_SHARE`` of its sentences (of three or more words,
    lowercased, whitespace normalised; at least ``LOOP_MIN_SENTENCES``) repeat an earlier one. A sentence
    ends at ".", "!", "?", their CJK forms "。！？" or a line break; a Han, Hiragana or Katakana character is a
    word (``pipeline.text.WORD``: Chinese and Japanese write no spaces, so no sentence of theirs had three words
    and "我在这里倾听你的心声。" over and over passed); one list pass per row does the counting."""
    return text.map_batches(_repeats, return_dtype=pl.Boolean, is_elementwise=True)


def _repeats(texts: pl.Series) -> pl.Series:
    """``repeats_itself`` on a column. In an ASCII answer a sentence's words are its spaces + 1 (its whitespace is
    single spaces, none at its ends), counted as a literal: the ``WORD`` regex on every sentence of every row made
    the check 1.4-1.55x slower (bench/README.md, "After the language changes"). polars' when/then would count
    both ways on every row, so the answers holding a non-ASCII character are counted apart."""
    wide = non_ascii(texts)
    looped = pl.repeat(False, len(texts), dtype=pl.Boolean, eager=True)
    for rows, three_words in ((~wide, pl.element().str.count_matches(" ", literal=True) >= 2),
                              (wide, pl.element().str.count_matches(WORD) >= 3)):
        if rows.any():
            looped = looped.scatter(rows.arg_true(), texts.filter(rows).to_frame("t").select(
                _loops(pl.col("t"), three_words)).to_series())
    return looped


def _loops(text: pl.Expr, three_words: pl.Expr) -> pl.Expr:
    sentences = text.str.to_lowercase().str.replace_all(r"[ \t\r\f\v]+", " ").str.extract_all(
        r"[^.!?。！？\n ](?:[^.!?。！？\n]*[^.!?。！？\n ])?[.!?。！？]?")
    worded = pl.element().filter(three_words)
    n = worded.len()
    return sentences.list.eval((n >= LOOP_MIN_SENTENCES) & (n - worded.n_unique() >= LOOP_SHARE * n)).list.first(
    ).fill_null(False)


def looping_chosen(chosen: str) -> pl.Expr:
    """True where the ``chosen`` message list's answer repeats itself in a loop (``repeats_itself``): a
    looping answer is a fine rejected answer, never a chosen one. Export drops such pairs, the audit checks
    that none is left."""
    return repeats_itself(text_of(chosen))


def _roles(col: str) -> pl.Expr:
    return pl.col(col).list.eval(pl.element().struct.field("role"))


def _blank_message(col: str) -> pl.Expr:
    return pl.col(col).list.eval(pl.element().struct.field("content").str.strip_chars() == "").list.any()


def malformed_dialogue(prompts: list[str], completions: list[str]) -> pl.Expr:
    """True where a ``prompts`` message list is not a dialogue a chosen answer can follow (empty, an empty
    message, a system message after the first, turns that do not alternate user/assistant from a user
    turn, or a last turn that is not the user's), or a ``completions`` list is not one or more non-empty
    assistant messages."""
    bad = []
    for c in prompts:
        body = _roles(c).list.eval(pl.element().filter((pl.int_range(pl.len()) > 0) | (pl.element() != "system")))
        alternates = body.list.eval((pl.element() == "user") == (pl.int_range(pl.len()) % 2 == 0)).list.all()
        roles_ok = body.list.eval(pl.element().is_in(["user", "assistant"])).list.all()
        bad.append(~((body.list.len() > 0) & alternates & roles_ok & (body.list.last() == "user")) | _blank_message(c))
    for c in completions:
        assistant = _roles(c).list.eval(pl.element() == "assistant").list.all()
        bad.append(~((pl.col(c).list.len() > 0) & assistant) | _blank_message(c))
    return pl.any_horizontal(bad).fill_null(True)



# An answer cut off mid-sentence, read from its end: a trailing comma, Chinese/Japanese "，" and "、" and Arabic
# "،" too (not a letter's sign-off line such as "Best regards," or "此致，"), a bracket left open as the last
# character (not an emoticon ":-("), an unfinished Ruby/JS interpolation "#{...", or a last word that cannot end
# a sentence ("and", "the", "of"; Russian "и", "на", "для"; "und", "et", "pero"). Other languages' words are
# taken only where no English sentence ends on them ("y", "e", "no", "die", "la", "com" stay out), and no Han
# character: they end words too ("参与", "方向", "总和"). A cut mid-word ("нарушением дв", "1. 高度波") is left: of
# 904 non-English WildChat answers, 18 read as cut, 9 are caught (1 by "，") and 9 end so (docs/export.md).
_CUT_WORDS = ("and", "or", "but", "the", "a", "an", "of", "to", "with", "for", "in", "on", "by", "from", "that",
              "which", "is", "are", "was", "were", "as", "at", "into", "than", "because", "if", "when", "while",
              "и", "или", "но", "в", "во", "на", "с", "со", "к", "по", "для", "из", "от", "до", "при", "чтобы",
              "und", "oder", "aber", "dass", "weil", "et", "avec", "dans", "pero", "porque", "para")
_COMMAS = ",，、،"
_CUT_END = rf"(?:[{_COMMAS}]|[(\[{{]|#\{{[^}}\n]*|\b(?:{'|'.join(_CUT_WORDS)}))\s*$"
# "Best regards," or "此致，" on a line of its own (a Chinese sign-off is a few characters: "顺祝商祺，"); ":-("
_NOT_CUT = r"(?:^|\n)(?:[^\n,，、،]{1,25}[,،]|[^\n,，、،]{1,6}，)\s*$|[:;=]-?\(\s*$"


# A code block left open: an odd number of ``` fence lines (a line that also closes its fence, "```x```", is
# none), and the answer does not end on a sentence (a letter, then . ! ? ...), so a stray fence inside code
# followed by "I hope that helps!" is no cut.
_FENCE = r"(?m)^[ \t]*```"
_FENCE_INLINE = r"(?m)^[ \t]*```[^\n]*```"
_SENTENCE_END = r"\p{L}[.!?…。！？؟।]+[\"'”’」』)\]*_]*\s*$"


# ``UNPRINTABLE`` (``pipeline.encodings``): the characters no released text holds.


def shows_nothing(text: pl.Expr) -> pl.Expr:
    """True where ``text`` holds no ``pipeline.encodings.VISIBLE`` character: empty, white space, NULs, zero-width
    marks or U+FFFD only (a model's answer of "\\ufffd" alone says nothing). A stage's blank check must be this one,
    not ``strip_chars() == ""``: a response that passes a weaker check is paired or judged, then export drops the
    pair as ``unprintable_text``, taking its prompt's other responses with it."""
    return ~text.str.contains(VISIBLE)


def unprintable_text(cols: list[str]) -> pl.Expr:
    """True where a message of a message-list column in ``cols`` holds an ``UNPRINTABLE`` character, or shows nothing
    (empty, white space, NULs, zero-width marks or U+FFFD only: no ``pipeline.encodings.VISIBLE`` character). A model or a server
    can answer so (ingest rejects such input messages, but not a NUL or an override inside a text); export drops such
    pairs, the audit checks that none is left."""
    content = pl.element().struct.field("content")
    return _any_message(cols, content.str.contains(UNPRINTABLE) | shows_nothing(content))


def control_token_text(cols: list[str]) -> pl.Expr:
    """True where a message of a message-list column in ``cols`` holds a chat-template control string
    (``CONTROL_TOKEN``). prefpipe's engines encode such text as plain characters (``pipeline.llm.chat``), but a
    trainer that renders the chat template to text and tokenizes it (TRL's DPO and SFT trainers do) turns it into
    the real special token: a forged turn or an early end of the chosen answer. Export drops such pairs; none of
    the 9,813 real records read here holds one."""
    return _any_message(cols, pl.element().struct.field("content").str.contains(CONTROL_TOKEN))


def _any_message(cols: list[str], held: pl.Expr) -> pl.Expr:
    """True where a message of a message-list column in ``cols`` satisfies ``held`` (an expression on
    ``pl.element()``, one message); a null list or message counts as none."""
    return pl.any_horizontal([pl.col(c).list.eval(held).list.any() for c in cols]).fill_null(False)


def open_code_block(text: pl.Expr) -> pl.Expr:
    """True where an answer stops inside a code block it opened (``_FENCE``): 10 of the 11 WildChat answers
    with an odd fence count end mid-code ("final Interaction2 interaction2;\n\n  Upgrade"), 8 of them past
    ``_CUT_END``, and 1 of 400 UltraFeedback answers ("5. If"); none of the 1,500 Arena-Hard, 560 Vicuna-80 and
    687 OpenAssistant answers (an inline "```cout << string```" is no fence)."""
    fences = text.str.count_matches(_FENCE) - text.str.count_matches(_FENCE_INLINE)
    return ((fences % 2 == 1) & ~text.str.contains(_SENTENCE_END)).fill_null(False)


def ends_mid_sentence(text: pl.Expr) -> pl.Expr:
    """True where an answer stops mid-sentence (``_CUT_END``) or inside a code block (``open_code_block``):
    cut off by a token limit that left no finish reason behind (external data: HH-RLHF, UltraFeedback and
    WildChat answers truncated upstream)."""
    return ((text.str.contains(_CUT_END) & ~text.str.contains(_NOT_CUT)) | open_code_block(text)).fill_null(False)
