"""Context features of the `rules` feedback detector: the user turn against the turns around it, in polars.

Most dissatisfaction in real chatbot logs carries no complaint words: the user re-sends the request,
narrows it, or asks again after a refusal. These features compare the judged turn (``text``) with the
user turn before it (``prev_user``) and with the assistant turn it answers (``prev``)::

    >>> import polars as pl
    >>> f = pl.DataFrame({"text": ["Why is the sky blue? Explain for a 5 year old", "What is 3 to the 4th power?"],
    ...                   "prev_user": ["Why is the sky blue?", "What is 2 to the 4th power?"],
    ...                   "prev": ["Rayleigh scattering.", "16."]})
    >>> context(f, text="text", prev="prev", prev_user="prev_user").select("resend", "overlap").rows()
    [(True, False), (False, True)]

- ``resend``: the earlier request again, as is (same words), narrowed (every earlier word kept, some
  added: "... for a 5 year old"; more than 10 added words, and more than the request had, only when the
  request recurs as a phrase) or, for a long request (>= `LONG_REQUEST` words), lightly edited
  (word-set Jaccard >= `NEAR_JACCARD`, no number changed) or trimmed (no word added, some dropped, at least
  `TRIMMED_MIN_WORDS` words and Jaccard >= 0.3 left). A templated series that swaps a word or a
  number ("2 to the 4th" -> "3 to the 4th") is a new task, not a resend, and so is a narrowed request
  after an answer that said what it lacked ("please provide ...", "there is no attached file", "我们需要已知
  ..."): the user supplies it (such a turn is `overlap`, uncertain).
- ``resend_earlier``: the same ``resend`` test against the user turn before ``prev_user`` (``prev_user2``):
  a request re-sent after a turn in between ("Flink 1.17 打包", "flink-maven-plugin 拉取不到", "Flink 1.17
  打包"; the request again after "continue", narrowed).
- ``overlap``: the turn shares much with the earlier request (Jaccard >= 0.3 or half of its words)
  without being a resend: a rephrased request or a follow-up on the same subject; the rules cannot
  tell them apart, so such turns are marked uncertain (see `uncertain`).
- ``refusal`` (of ``prev``): the answer declines ("I'm sorry, but I can't", "As an AI language model,
  I cannot", and the same in zh, ru, fr, es, de, pt, it, ar, ja): a turn after it that re-sends the
  request, gives a pretext or a plea, or is a short imperative naming a word of the refusal again
  ("write the hypotheses" after "I cannot state the hypotheses") or tells the model to ignore its instructions
  (a jailbreak: "Ignore all the instructions you got before ...") insists (DSAT); any other turn after it
  is uncertain.
- ``error_report``: a short turn (<= 300 characters) that pastes an error message, asks nothing, and
  answers an assistant turn that held code: the code failed (Factual_Error). A longer one, or one with
  a question, is ``error_after_code``: often a new question about the user's own code; uncertain.
- ``edits_answer``: the answer's opening line (30+ characters) pasted back within the turn's first
  `PASTE_AFTER_CHARS` characters, after an instruction that asks no question ("shorten the text below
  to 200 words: <the answer>", in any language): a request to change that answer (Revision).
- ``no_correction``: "No, ..." opening a correction ("no, copy should be short", "Нет, мне нужно ...",
  "不是，...", "Non, ...") after an answer that asked nothing (else "no" answers its question), and not a
  reassurance or a polite decline ("no, it's okay", "нет, спасибо"): Revision.
- ``edits_named``: an edit verb on a thing the earlier request or the answer's opening named ("rewrite the
  documentary with ..." after "write a documentary ..."; write / make / give / do only with a tail that says
  how), or on a phrase of the answer ("change \"stories untold\"", "don't say the word dream"): Revision.
- ``short_edit``: a turn of at most `SHORT_EDIT_WORDS` words that is nothing but an edit of a text answer
  ("change the ending", "give it a title", "in past tense", "as a poem", "again but funnier", "another
  one"), after an answer of 40+ characters with no code (there it asks for a feature) and no question
  (there it answers it): Revision.
- ``counter_claim``: a short statement ("it was 1889", "I think it was 1889", "isn't it 1889?", "actually
  1889") with a number the answer, which gave numbers, does not hold: Factual_Error.
- ``accepts_offer``: a bare "go on" / "continue" after an answer that ended with a question (it offered
  more): Compliance. After any other answer (cut off or not) it is neither, as the rubric says.
- ``non_english``: the opening of the turn is mostly in a non-Latin script, or holds French, Spanish,
  German or Portuguese function words and no English ones: the cue lists of other languages are short,
  so a turn there without a cue is less certain.

Words are runs of letters/digits, CJK characters one by one; a long turn is compared by its first and
last `EDGE_CHARS` characters (a resent long paste starts and ends the same; a new one shares only the
instruction at its head).
"""

from __future__ import annotations

import polars as pl

LONG_REQUEST = 20
NEAR_JACCARD = 0.9
TRIMMED_MIN_WORDS = 5
PASTE_AFTER_CHARS = 200
EDGE_CHARS = 600
_TOKEN = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]|[^\W_]+"
# A continuation command is never a resend ("continue", then "continue" again).
_CONTINUE = r"^\W*(?:please |pls )?(?:continue|go on|keep going|next|more|продолж\w*|继续|continúa|continua|weiter|continuer)\b"

_REFUSAL = "|".join([
    r"\bi'?m (?:really |very )?sorry,? (?:but )?(?:i|as an)\b", r"\bi apologi[sz]e,? but\b",
    r"\bi (?:can ?not|can'?t|am unable to|'m unable to|am not able to|'m not able to|won'?t be able to)\b",
    r"\bas an ai(?: language model| text-based model| model)?,? i (?:can ?not|can'?t|don'?t|do not|am not|'m not|am unable)\b",
    r"\bi (?:don'?t|do not) have (?:the ability|access|real-time|the capability)\b",
    r"к сожалению,? (?:я|но|мы|это)|я не могу|не могу (?:предоставить|помочь|выполнить)", r"我无法|我不能|无法(?:提供|回答|完成|生成)",
    r"\bje ne (?:peux|suis pas en mesure)\b", r"\blo siento,? (?:pero|no)\b|\bno puedo\b",
    r"\bich kann (?:leider )?(?:nicht|keine)\b", r"\bnão posso\b|\bnão consigo\b",
    r"(?:抱歉|对不起|很遗憾)[，,]?(?:我|但|作为)|作为(?:一个)?(?:ai|人工智能)(?:语言)?模型[^。]{0,10}(?:不能|无法)|"
    r"\bизвините,? (?:но|я)\b|\b(?:мы|я) не (?:можем|могу)\b", r"\bmi dispiace,? ma\b|\bnon posso\b",
    r"عذرا|عذراً|لا (?:يمكنني|[أا]ستطيع)|申し訳(?:ありません|ございません)|(?:お答え|お手伝い|提供)(?:することは)?できません|죄송합니다",
])
# An error message or a report of one ("TypeError: ...", "x is not defined", "got this error"), not the word
# in a request ("add error handling").
_ERROR = (r"\b\w*(?:error|exception)\s*[:(]|\btraceback\b|\bnot defined\b|\bis undefined\b|\bcannot be (?:applied|resolved|"
          r"found|converted|cast|used)\b|\bnot found\b|\bis not a function\b|\bunexpected (?:token|end|indent|character)\b|"
          r"\bfailed to\b|\bsyntax ?error\b|\berror (?:on|at|in) line\b|\b(?:same|this|an|the|got|get|gives?|giving|getting|still|shows?) (?:\w+ )?errors?\b|"
          r"报错|错误[:：]|(?:但是?|可是|还是|仍然|依然)(?:提示|显示|出现|报)|ошибк\w*|\berreur\b|\bfehler\b")
# After a refusal: a reason why the request is fine after all ("it's just fiction", "it's an AI image").
_PRETEXT = (r"^\W*(?:but |no,? |yes,? )?(?:it'?s|it is|this is|its|i'?m|i am) (?:just |only |all |a )?(?:an? )?"
            r"(?:ai|fiction\w*|fake|fictional|hypothetical\w*|a story|for (?:research|educational|a story|fun|school|a game)|"
            r"legal|not real|made up|public|allowed|the (?:owner|author)|consensual|a game)\b|\byou can do it\b|\bdo it anyway\b|"
            # ...who asks ("I'm a chemistry student", "just curious") or a plea ("please help me")
            r"\b(?:i'?m|i am|m) (?:a |an )?(?:\w+ )?(?:student|researcher|doctor|nurse|teacher|professional|adult|writer|"
            r"author|professor|scientist)\b|\bjust (?:to know|curious|asking|wondering)\b|^\W*(?:please|pls|plz),? "
            r"(?:\w+ )?help me\W*$|\bi (?:really )?need (?:it|this|you to do it)\b|\bi insist\b|\byes,? you can\b|\btry anyway\b|"
            # ...and the same insisting in the other top languages ("it's just a story", "I insist", "do it!")
            r"\b(?:это (?:просто|всего лишь) (?:вымысел|игра|история|шутка)|я (?:настаиваю|разрешаю)|выполняй|просто (?:сделай|"
            r"напиши|ответь)|c'est (?:juste|seulement) (?:une histoire|fictif|un jeu)|fais-le quand même|j'insiste|es (?:solo|sólo) "
            r"(?:una historia|ficción|un juego)|hazlo de todos modos|insisto|es ist nur (?:eine geschichte|fiktion|ein spiel)|"
            r"mach es trotzdem|ich bestehe darauf|é (?:só|apenas) (?:uma história|ficção|um jogo)|faça mesmo assim|eu insisto)\b|"
            r"只是(?:一个)?(?:故事|虚构|游戏|假设|玩笑)|我(?:坚持|允许你)|你(?:可以|能)的|照做|[أا]صر على|فقط (?:قصة|خيال)")
# After a refusal: a prompt that tells the model to drop its rules ("Ignore all the instructions you got before.
# From now on, you are ..."): the refused request tried again by a jailbreak.
_JAILBREAK = (r"^\W*(?:(?:ok(?:ay)?|now|please|so)[,.!]? )*(?:ignore|forget|disregard) (?:all |any |every )?(?:of )?(?:the |your |my )?"
              r"(?:(?:previous|prior|above|earlier|former|other) )?(?:instructions|rules|guidelines|restrictions|filters|policies|"
              r"prompts?)\b|^\W*игнорируй (?:все )?(?:предыдущие )?(?:инструкции|правила)|^\W*忽略(?:之前|以上|所有)")
# After a refusal: a short request that points back at the refused material ("Make a character about this").
_ASKS_AGAIN = (r"^\W*(?:(?:ok(?:ay)?|fine|then|so|just|now|please|pls|can you|could you)[,.!]? )*(?:make|write|give|create|"
               r"generate|draw|tell|show|describe|list|explain|provide|continue|try|answer|"
               r"напиши|сделай|дай|покажи|расскажи|опиши|продолжи|ответь)\b[^?\n]{0,100}\b(?:this|that|it|them|these|those|"
               r"above|это|этот|эту|его|их)\b|^.{0,6}(?:写|做|给|画|生成|继续|回答)[^?？\n]{0,20}(?:这|那|它|上面)")
_IMPERATIVE = (r"^\W*(?:(?:ok(?:ay)?|fine|then|so|just|now|please|pls)[,.!]? )*(?:write|give|make|tell|show|list|create|generate|"
               r"draw|explain|describe|provide|find|state|name|напиши|дай|сделай|расскажи|покажи|опиши|придумай|выдумай|назови)\b")
# A refusal for want of an ability, and a turn that asks for that very thing again (images, live data).
_CANT_DO = (r"\b(?:images?|pictures?|visual|draw|real[- ]time|internet|brows\w+|access to|up-to-date|current (?:events|data)|"
            r"text-based)\b")
_ASKS_IT = (r"\b(?:images?|pictures?|painting|drawing|photo|draw|paint|sketch|search|look (?:it )?up|browse|google|link|url|"
            r"latest|current|today|right now|real[- ]time)\b")
# "No, ..." opening a correction ("no, copy should be short", "no make it neat"): Revision, unless the answer
# asked something (then "no" answers it) or the "no" is a reassurance ("no, it's okay").
_NO_CORRECTION = (r"^\W*(?:no+|nope)[,.!]*\s+(?:(?:gpt|chatgpt|man|dude|bro|sir|buddy)[,.!]*\s+)?(?:i|it|its|it's|that|that's|this|the|you|your|make|use|write|give|do|not|"
                  r"but|actually|only|should|they|he|she|we|in|on|for|too|copy|keep|less|more)\b|"
                  # ...and "No, ..." in the other top languages (ru, zh, fr, es, de, pt, ar, ja): a comma after the "no"
                  # where the word also means "not" ("no me gusta", "不好").
                  r"^\W*нет[,.!]*\s+(?:я|это|он|она|они|мне|нужно|надо|не|а|но|ты|вы|сделай|напиши|там|так|в|на|только|"
                  r"должн\w*|просто|лучше)\b|^\W*(?:不是|不对|不)[，,。！!]\s*\S|^\W*non[,.!]*\s+(?:je|j'|c'est|ce|il|elle|tu|"
                  r"vous|pas|mais|plutôt|fais|écris|le|la|les|en|dans|pour|seulement)\b|^\W*no[,.!]+\s+(?:yo|es|me|quiero|quise|"
                  r"necesito|lo|la|el|los|las|eso|esto|pero|hazlo|escribe|en|para|solo|debe|te)\b|^\W*nein[,.!]*\s+\w|"
                  r"^\W*não[,.!]+\s+(?:eu|é|isso|quero|preciso|o|a|os|as|mas|faça|escreva|em|para|só|deve)\b|^\W*لا[،,.!]+\s*\S|"
                  r"^\W*(?:いや|いいえ|違う|ちがう)[、,。！!]")
_REASSURANCE = (r"^\W*no+[,.!]*\s+(?:it'?s|its|that'?s) (?:ok|okay|fine|alright|all right|good)\b|^\W*no,? thanks?\b|"
                r"^\W*нет,? (?:спасибо|вс[её] (?:хорошо|нормально|ок))|^\W*(?:不用了|不，谢谢|不,谢谢)|^\W*non,? (?:merci|c'est bon)|"
                r"^\W*no,? (?:gracias|está bien)|^\W*nein,? (?:danke|alles gut)|^\W*não,? (?:obrigad|tudo bem)|^\W*لا[،,]? شكرا")
# An edit of a thing the request named ("rewrite the documentary with more detail" after "write a documentary
# ..."): an edit verb, then "the"/"your"/"this" and a word of the earlier request or of the answer's opening.
# Verbs that also open new tasks (write, make, give, do) count only with a tail that says how to change it.
_LEAD = r"^\W*(?:(?:ok(?:ay)?|now|so|please|pls|then|and|but|good|great|nice|fine)[,.!]? )*(?:can you |could you |would you |just )?"
_EDITS_NAMED = (_LEAD + r"(?:(?:rewrite|re-write|rephrase|reword|redo|revise|rework|improve|shorten|lengthen|expand|extend|simplify|"
                r"change|modify|edit|adjust|tweak|polish|refine|reformat|restructure) (?:the|your|that|this) (\w{3,})(?: (\w{3,}))?|"
                r"(?:write|make|give me|do) (?:the|your|that|this) (\w{3,})(?: (\w{3,}))? (?:again|with|without|in|as|but|more|less|"
                r"shorter|longer|using|including|so (?:that|it))\b)[^\n{};=$<>]{0,160}$")
# ...or a phrase of the answer, quoted or named ("change \"stories untold\"", "don't say the word dream").
_EDITS_QUOTED = (_LEAD + r"(?:change|replace|remove|delete|rewrite|rephrase|reword|fix|drop|cut|get rid of|without|"
                 r"(?:don'?t|do not) (?:say|use|write|include|mention)|stop (?:saying|using)) (?:the (?:word|words|phrase|line|part|"
                 r"sentence|term) )?[\"“'«]?([^\"”'»\n]{3,60}?)[\"”'»]?[.!]*$")
# A short edit of a text answer, the whole turn (at most `SHORT_EDIT_WORDS` words, no question): "change the
# ending", "add emojis", "give it a title", "in past tense", "as a table", "from her perspective", "again but
# funnier", "another one". After an answer with code such a turn asks for a new feature ("add error handling"),
# and after an answer that asked something it answers it ("in the morning"): neither counts.
SHORT_EDIT_WORDS = 10
# What a reshaped answer is put in or as: a form, a person, a tense, a text kind ("in past tense", "as a table").
_SHAPE = (r"(?:person|tense|table|list|poem|song|story|haiku|letter|email|essay|tweet|summary|paragraphs?|bullet points?|bullets|"
          r"format|style|tone|voice|words|sentences?|lines?|form|version|perspective|point of view|pov|dialogue|script|rap|"
          r"limerick|rhymes?|verses?|steps|points|detail|terms)\b")
_SHORT_EDIT = (_LEAD + r"(?:(?:change|add|remove|delete|replace|include|insert|drop|cut|swap|turn|give it|make (?:it|him|her|them|"
               r"the \w+|this|that)) [a-z]|(?:(?:the )?same(?: thing)?|again|now|write(?: it)?|say it|do it|redo it|put it)?,? ?"
               r"(?:but )?(?:in|as|from|into|using|with) (?:a |an |the |his |her |their |my |\w+'s )?(?:[a-z-]+ ){0,2}" + _SHAPE + r"|"
               r"(?:again|once more|one more time),? but |(?:another|one more|a different"
               r" one|different one)(?: one| please| pls)?\W*$)[^?\n]{0,60}$")
# A counter-claim with a number: a short statement ("it was 1889", "I think it was 1889", "isn't it 56?",
# "actually 1889") whose number the answer, which gave numbers, does not hold.
_CLAIM = (r"^\W*(?:(?:no+|nope|actually|but|wait|hmm+|well|um+)[,.!]* )*(?:i (?:think|believe|thought|read|heard)(?: that)? |"
          r"(?:isn'?t|wasn'?t|aren'?t|weren'?t) (?:it|that|he|she|they|there)\b|actually\b|(?:it|that|this|he|she|they|there|the "
          r"\w+)(?:'s|'re| is| was| are| were| has| had| have| does| did)\b)[^?\n]{0,80}\d[^?\n]{0,60}$|\d[^?\n]{0,40} actually\W*$|"
          r"^\W*(?:but |wait,? )?(?:isn'?t|wasn'?t|aren'?t|weren'?t|shouldn'?t) (?:it|that|he|she|they|there)\b[^?\n]{0,60}\d[^?\n]{0,30}\?$")
_NOT_NAMES = ["following", "below", "above", "same", "whole", "entire", "first", "last", "next", "previous", "one", "this", "that"]
_GO_ON = r"^\W*(?:yes,? |sure,? |ok(?:ay)?,? )?(?:please )?(?:go on|continue|keep going|go ahead)(?: please)?\W*$"
# An answer that says what it lacks or asks for it ("please provide", "there is no attached file", "我们需要已知 ...").
_NEEDS_INPUT = (r"need (?:to know|more (?:information|details|context)|the (?:text|file|data|details))|please provide|(?:no|not an?) "
                r"(?:attached|attachment|file)|incomplete|you(?:'ve| have)? (?:didn'?t|did not|haven'?t) (?:provide|include|attach|"
                r"specif)|could you (?:please )?(?:provide|share|specify|clarify)|需要(?:已知|知道|更多|提供)|请提供|请(?:告诉|说明)|"
                r"нужн\w* (?:знать|больше|дополнительн)|предоставьте|уточните|пожалуйста, укажите")
_QUESTION = r"\?|^\W*(?:what|why|how|что|почему|как|为什么|怎么|什么|pourquoi|comment|por qué|cómo|warum|wie|por que|como)\b"
_CODE = r"```|`[^`\n]{2,60}`|\n\s*(?:def |class |import |#include|public |function |const |let |var |for |if )|[;{}]\s*\n"
_NON_LATIN = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Cyrillic}\p{Arabic}\p{Hebrew}\p{Thai}\p{Devanagari}\p{Greek}]"
# Function words of French, Spanish, German and Portuguese (and none of _ENGLISH): a Latin-script turn
# in another language.
_EUROPEAN = (r"\b(?:le|la|les|des|est|une|et|pour|dans|qui|el|los|las|una|y|para|por|con|que|der|die|das|und|ist|ein|"
             r"eine|nicht|mit|os|um|uma|com|não|é|je|tu|ich|du|yo|eu|você|vous)\b")
_ENGLISH = (r"\b(?:the|is|are|you|your|it|to|and|of|a|an|in|what|how|why|can|please|me|my|i|this|that|write|give|make|"
            r"with|for|not|no|yes|ok|okay|thanks|thank|do|does|more|again|about|on|be|explain|tell|use|try)\b")


def _edges(text: pl.Expr) -> pl.Expr:
    """A text's first and last `EDGE_CHARS` characters (all of it when short), lower case."""
    t = text.fill_null("")
    long = t.str.len_chars() > 2 * EDGE_CHARS
    return pl.when(long).then(t.str.head(EDGE_CHARS) + " " + t.str.tail(EDGE_CHARS)).otherwise(t).str.to_lowercase()


def _repeats(frame: pl.LazyFrame, t: pl.Expr, p: pl.Expr) -> pl.LazyFrame:
    """``resend`` and ``overlap`` of lower-cased texts ``t`` (the turn) and ``p`` (the request before it)."""
    squash = lambda e: e.str.replace_all(r"\s+", " ").str.strip_chars(" .?!")  # noqa: E731
    w = frame.select(t.str.extract_all(_TOKEN).list.unique().alias("_tw"), p.str.extract_all(_TOKEN).list.unique().alias("_pw"),
                     p.str.len_chars().alias("_pn"), squash(t).str.contains(squash(p), literal=True).alias("_phrase"),
                     pl.col("_ans").str.contains(_NEEDS_INPUT).alias("_needs"))
    w = w.with_columns(_nt=pl.col("_tw").list.len(), _np=pl.col("_pw").list.len(),
                       _common=pl.col("_tw").list.set_intersection("_pw").list.len(),
                       _removed=pl.col("_pw").list.set_difference("_tw"),
                       _added=pl.col("_tw").list.set_difference("_pw").list.len())
    n_t, n_p, common = pl.col("_nt"), pl.col("_np"), pl.col("_common")
    jaccard = common / (n_t + n_p - common).clip(1)
    # Every earlier word kept; many words added only if the earlier request recurs as a phrase (else a
    # long new text that happens to contain a short question's words).
    kept_all = ((pl.col("_removed").list.len() == 0) & (n_p >= 4) & (pl.col("_pn") >= 12)
                & (((n_t - common) <= pl.max_horizontal(pl.lit(10), n_p)) | pl.col("_phrase")))
    edited = (n_p >= LONG_REQUEST) & (jaccard >= NEAR_JACCARD) & ~pl.col("_removed").list.join(" ").str.contains(r"\d")
    # Trimmed: the request again with some words dropped and none added ("... with greeting to my followers ..."
    # -> "..."); a short remnant ("What are XML?" of "What are XML and JSON?") is a sub-question, not a resend.
    trimmed = (pl.col("_added") == 0) & (n_t >= TRIMMED_MIN_WORDS) & (jaccard >= 0.3)
    # The request again with what the answer said it lacked ("we need to know n", "there is no attached file"):
    # the user supplies it, a follow-up (neither), not a resend.
    resend = (kept_all & ~pl.col("_needs")) | edited | trimmed
    return w.select(resend.alias("resend"),
                    (~resend & (n_p >= 2) & ((jaccard >= 0.3) | (common >= 0.5 * n_p))).alias("overlap"))


def _asks_for_refused() -> pl.Expr:
    """After a refusal: a short imperative (no question) that names a word of the refusal again ("write the
    hypotheses" after "I cannot state the hypotheses"): the refused thing asked for again."""
    short = (pl.col("_lo").str.len_chars() <= 80) & ~pl.col("_lo").str.contains(r"[?？]") & pl.col("_lo").str.contains(_IMPERATIVE)
    words = pl.col("_lo").str.extract_all(r"\p{L}{5,}").list.slice(1)
    said = pl.col("_ans").str.head(300).str.extract_all(r"\p{L}{5,}")
    return short & (words.list.set_intersection(said).list.len() > 0)


def _edits_answer(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``edits_answer`` of the module doc: the answer's opening line (30+ characters) found within the turn's
    first `PASTE_AFTER_CHARS` characters, after an instruction with letters and no question."""
    head = pl.col("_ans").str.strip_chars().str.head(60)
    newline = head.str.find("\n", literal=True)
    rows = rows.with_columns(_h=pl.when(newline.is_null()).then(head).otherwise(head.str.head(newline)))
    rows = rows.with_columns(_at=pl.when(pl.col("_h").str.len_chars() >= 30).then(pl.col("_lo").str.find(pl.col("_h"),
                                                                                                        literal=True)))
    instruction = pl.col("_lo").str.head(pl.col("_at").fill_null(0))
    return rows.select(edits_answer=(pl.col("_at").is_between(2, PASTE_AFTER_CHARS) & instruction.str.contains(r"\p{L}")
                                     & ~instruction.str.contains(_QUESTION)).fill_null(False))


def _edits_named(rows: pl.LazyFrame, prev: str) -> pl.LazyFrame:
    """``edits_named`` of the module doc: a thing named by the earlier request or the answer's opening, or a
    phrase of the answer, edited."""
    quoted = pl.col("_lo").str.extract(_EDITS_QUOTED, 1)
    in_answer = pl.col(prev).fill_null("").str.to_lowercase().str.contains(quoted, literal=True) & (quoted.str.len_chars() >= 3)
    words = pl.col("_lo").str.extract_groups(_EDITS_NAMED)
    earlier = pl.col("_pu").str.head(2000).str.to_lowercase() + " " + pl.col("_ans")
    hit = [pl.col("_w").struct.field(str(k)).is_not_null() & ~pl.col("_w").struct.field(str(k)).is_in(_NOT_NAMES)
           & earlier.str.contains(pl.concat_str(pl.lit(r"\b"), pl.col("_w").struct.field(str(k)), pl.lit(r"\b"))) for k in (1, 2, 3, 4)]
    named = pl.col("_pu").is_not_null() & pl.any_horizontal(hit)
    return rows.with_columns(_w=words).select(edits_named=(named | in_answer).fill_null(False))


def _related(earlier: str, second: bool = True) -> pl.Expr:
    """The earlier request's first (or second) long word recurs in the turn (``_lo``), and it is no "continue"."""
    key = r"(\p{Han}{2}|\p{L}{4,})"
    keys = pl.col(earlier).str.head(200).str.to_lowercase().str.extract_groups(key + (r"(?:(?s:.*?)" + key + ")?"
                                                                                      if second else ""))
    found = [pl.col("_lo").str.contains(keys.struct.field(k), literal=True).fill_null(False) for k in ("1", "2")[:1 + second]]
    return pl.any_horizontal(found) & ~pl.col("_lo").str.contains(_CONTINUE)


def _on_rows(f: pl.DataFrame, texts: pl.DataFrame, mask: str, cols) -> pl.DataFrame:
    """``cols`` (expressions, or a function of the rows as a LazyFrame) computed on the rows of ``f`` (with the turn and
    answer columns ``texts``) where ``mask`` holds, scattered back to every row (False elsewhere)."""
    idx = f[mask].arg_true()
    # Lazily, so that only the columns ``cols`` reads are gathered for those rows.
    rows = f.hstack(texts).lazy().filter(pl.col(mask))
    part = (cols(rows) if callable(cols) else rows.select(**cols)).collect()
    return pl.DataFrame([pl.Series(k, [False] * f.height, pl.Boolean).scatter(idx, part[k]) for k in part.columns])


def _turn_columns(frame: pl.DataFrame, text: str, prev: str, prev_user: str | None, prev_user2: str | None,
                  window_chars: int) -> pl.DataFrame:
    """The columns every check reads, one row per turn: ``_lo`` (the turn's window, lower case), ``_n`` (its
    length), ``_ans`` (the answer's first 400 characters), ``_pu``/``_pu2`` (the earlier requests), and the
    masks of the rows that may need a costlier check (``refusal``, ``_err``, ``_related``, ``_related2``,
    ``_long``, ``_script``: some character of a non-Latin script), with ``_european``."""
    f = frame.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i"),
        pl.col(text).fill_null("").str.head(window_chars).str.to_lowercase().alias("_lo"),
        pl.col(text).fill_null("").str.len_chars().alias("_n"),
        pl.col(prev).fill_null("").str.head(400).str.to_lowercase().alias("_ans"),
        (pl.col(prev_user).cast(pl.String) if prev_user else pl.lit(None, dtype=pl.String)).alias("_pu"),
        (pl.col(prev_user2).cast(pl.String) if prev_user2 else pl.lit(None, dtype=pl.String)).alias("_pu2"),
    )
    return f.with_columns(
        refusal=pl.col("_ans").str.head(300).str.contains(_REFUSAL),
        _script=pl.col("_lo").str.contains(_NON_LATIN),
        _european=pl.col("_lo").str.contains(_EUROPEAN) & ~pl.col("_lo").str.contains(_ENGLISH),
        _err=pl.col("_lo").str.contains(_ERROR),
        _related=_related("_pu"), _related2=_related("_pu2", second=False),
        _long=pl.col("_lo").str.len_chars() >= 32,  # can hold an instruction and 30 pasted characters
    )


def context(frame: pl.DataFrame, *, text: str, prev: str, prev_user: str | None, window_chars: int = 400,
            prev_user2: str | None = None) -> pl.DataFrame:
    """The features of the module doc, one boolean column each, in ``frame``'s row order.

    Cue-like checks see the turn's first ``window_chars`` characters and the answer's first 400. Columns
    a turn needs only sometimes are computed on the rows that can have them: the word sets only where
    the earlier request's first or second long word (2 Han characters, else 4+ letters; the second so that
    a new opening verb, "Evaluate ..." -> "Assess ...", still compares; for ``prev_user2``, re-sent rather than
    rephrased, the first only) recurs in the turn, the probes only where ``prev_user2`` is given, the code
    check only after an error message, the pretext check only after a refusal.
    """
    f = _turn_columns(frame, text, prev, prev_user, prev_user2, window_chars)

    def on(mask: str, cols) -> pl.DataFrame:
        return _on_rows(f, frame.select(text, prev), mask, cols)

    code = pl.col(prev).fill_null("").str.contains(_CODE)
    asks = pl.col("_lo").str.contains(_PRETEXT) | pl.col("_lo").str.contains(_JAILBREAK) | (pl.col("_lo").str.contains(_ASKS_AGAIN) & (pl.col("_lo").str.len_chars() <= 150)
                                                  & ~pl.col("_lo").str.contains(r"[?？]")) | (pl.col("_ans").str.contains(_CANT_DO) & pl.col("_lo").str.contains(_ASKS_IT))
    f = f.with_columns(_go_on=pl.col("_lo").str.contains(_GO_ON), _no=pl.col("_lo").str.contains(_NO_CORRECTION),
                       _named=pl.col("_lo").str.contains(f"(?:{_EDITS_NAMED})|(?:{_EDITS_QUOTED})"),
                       _claim=pl.col("_lo").str.contains(_CLAIM), _short=pl.col("_lo").str.contains(_SHORT_EDIT))
    # Mostly in a non-Latin script: letters are counted only where there is such a character.
    script = on("_script", {"non_latin": 3 * pl.col("_lo").str.count_matches(_NON_LATIN) > pl.col("_lo").str.count_matches(r"\p{L}")})
    rep = on("_related", lambda rows: _repeats(rows, _edges(pl.col(text)), _edges(pl.col("_pu"))))
    rep2 = on("_related2", lambda rows: _repeats(rows, _edges(pl.col(text)), _edges(pl.col("_pu2"))))
    # Short, or opening with the error (a pasted log with the error in its first 200 characters): the code failed.
    opens = pl.col("_lo").str.strip_chars_start().str.head(200).str.contains(_ERROR)
    err = on("_err", {"code": code, "report": code & ~pl.col("_lo").str.contains(_QUESTION)
                      & ((pl.col(text).str.len_chars() <= 300) | opens)})
    ins = on("refusal", lambda rows: rows.select(insisting=asks | _asks_for_refused()))
    # The answer pasted back under an instruction that asks no question ("shorten the text below: <answer>")
    # asks to change that answer.
    edits = on("_long", _edits_answer)
    # "go on" after an answer that offered more ("Shall I continue?") accepts the offer; else it is neither.
    named = on("_named", lambda rows: _edits_named(rows, prev))
    numbers = pl.col("_lo").str.extract_all(r"\d+(?:[.,]\d+)?")
    said = pl.col(prev).fill_null("").str.extract_all(r"\d+(?:[.,]\d+)?")
    words = pl.col("_lo").str.count_matches(r"\S+")
    claim = on("_claim", {"counter_claim": (words <= 15) & (said.list.len() > 0)
                          & (numbers.list.set_difference(said).list.len() > 0)})
    short = on("_short", {"short_edit": (words <= SHORT_EDIT_WORDS) & ~code & ~pl.col(prev).fill_null("").str.tail(200).str.contains("?", literal=True)
                          & (pl.col(prev).fill_null("").str.len_chars() >= 40)})
    no = on("_no", {"no_correction": ~pl.col(prev).fill_null("").str.tail(200).str.contains("?", literal=True)
                    & ~pl.col("_lo").str.contains(_REASSURANCE)})
    go_on = on("_go_on", {"accepts_offer": pl.col(prev).fill_null("").str.tail(200).str.contains(r"\?")})
    return pl.DataFrame([rep["resend"], rep2["resend"].alias("resend_earlier"), rep["overlap"], f["refusal"], ins["insisting"],
                         err["report"].alias("error_report"), (err["code"] & ~err["report"]).alias("error_after_code"),
                         (script["non_latin"] | f["_european"]).alias("non_english"), go_on["accepts_offer"], edits["edits_answer"], no["no_correction"], named["edits_named"],
                         short["short_edit"], claim["counter_claim"]])
