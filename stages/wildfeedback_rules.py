"""The `rules` feedback detector of WildFeedback: per-category patterns over user turns, in polars.

Every user turn after the first is judged against the assistant turn just before it. The text is
normalised once (lower case, straight quotes), quoted material is cut out (``>`` lines, code
fences, text in double quotes or backticks, sentences pasted back from the previous assistant turn),
negations are rewritten into tokens (``not bad`` -> ``neg_bad``, ``no problem`` -> ``neg_problem``)
so that the category patterns never see a negated cue as a plain one, and then one combined regex per
category runs over the whole column. Only flagged rows are re-scanned per pattern to name the
patterns that fired::

    >>> import polars as pl
    >>> turns = pl.DataFrame({"text": ["Thanks! That really helped.", "That's wrong, try again."],
    ...                       "prev": ["Paris is the capital.", "2 + 2 = 5."]})
    >>> out = detect(turns)
    >>> out.select("sat", "dsat", "sat_categories", "dsat_categories").rows()
    [(True, False, ['Gratitude', 'Praise'], []), (False, True, [], ['Revision', 'Factual_Error'])]
    >>> out["rationale"][1]
    'Revision:try_again; Factual_Error:that_is_wrong'

Three rules run after the patterns (all vectorised):
- a turn that opens with thanks/praise and carries no contrast word ("but", "however") is a thanked
  new task: request-shaped DSAT cues in it (Revision, Insufficient_Detail, Style) are cleared;
- sarcasm: an insult (Negative_Feedback) with thanks and no contrast word clears the SAT side;
- a signal needs the previous turn to be an assistant turn (the caller only passes those).
"""

from __future__ import annotations

import polars as pl

SAT_CATEGORIES = [
    "Gratitude", "Learning", "Compliance", "Praise", "Personal_Details",
    "Humor", "Acknowledgment", "Positive_Closure", "Getting_There",
]
DSAT_CATEGORIES = [
    "Negative_Feedback", "Revision", "Factual_Error", "Unrealistic_Expectation", "No_Engagement",
    "Ignored", "Lower_Quality", "Insufficient_Detail", "Style",
]

# Words that make a positive adjective refer to the answer ("that's great"), not to the world.
_REF = r"(?:that'?s|thats|this is|that is|it'?s|it is|that was|this was|it was|you'?re|you are|looks|sounds|seems)"
_INT = r"(?:really |very |so |pretty |quite |super |extremely |incredibly |truly )?"
_POS = r"(?:good|great|awesome|perfect|excellent|amazing|brilliant|fantastic|wonderful|nice|cool|helpful|useful|superb|neat)"
_FORMAT = r"(?:table|list|bullet points?|bullets|markdown|code blocks?|json|paragraphs?|numbered list)"

# category -> {pattern name: regex}. Patterns see normalised text (see `normalise`).
PATTERNS: dict[str, dict[str, str]] = {
    # --- SAT -------------------------------------------------------------------------------------
    "Gratitude": {
        "thanks": r"\b(?:thanks?|thank\s*(?:you|u|ya|youu+)|thx|tysm|ty)\b",
        "appreciate": r"\b(?:much appreciated|i (?:really )?appreciate (?:it|that|this|your|the))\b",
        "grateful": r"\bi(?:'m| am) (?:so |really |very )?grateful\b",
    },
    "Learning": {
        "makes_sense": r"\b(?:that|this) (?:now |finally |totally )?makes (?:a lot of |so much |more )?sense\b|\bmakes (?:so much |more )?sense now\b|^makes sense\b",
        "didnt_know": r"\bi (?:didn'?t|did not|never) know (?:that|this)\b|\btil\b|\bgood to know\b",
        "now_i_get": r"\bnow i (?:get|understand|see)\b|\bi (?:finally )?(?:get|understand) (?:it|now)\b(?: now)?",
        "interesting": r"^(?:oh,? |hmm+,? )?(?:interesting|fascinating)\b|\b(?:that'?s|thats|how|hmm+,?) (?:really |very )?(?:interesting|fascinating)\b",
        "oh_wow": r"^oh,? wow\b|^wow[,.!]+ (?:that|i|so|how)\b|^(?:oh,? )?(?:wow|really)\s*[?!]{2,}",
        "helps_understand": r"\b(?:that|this|it) helps? (?:me )?(?:understand|understanding)\b",
        "learned": r"\bi (?:learned|learnt) (?:a lot|something)\b",
    },
    "Compliance": {
        "will_try": r"\bi(?:'ll| will) (?:try|do|use|give) (?:that|this|it|them|those)\b|\bi(?:'ll| will) give (?:it|that|this) a (?:try|shot|go)\b",
        "go_with": r"\blet'?s go (?:with|for)\b|\bi(?:'ll| will) (?:go|take) with\b|\blet'?s do (?:it|that|this)\b",
        "did_it": r"\b(?:ok(?:ay)?,? )?i (?:did|tried) (?:that|it|this)\b|\b(?:that|it) (?:worked|works now|works perfectly)\b",
        "go_ahead": r"^(?:yes,? )?(?:please do|go ahead|go on|do it|proceed|continue)\b(?: with (?:it|that|the \w+))?[\s.!]*$",
        "sounds_like_plan": r"\bsounds like a plan\b",
        "all_for": r"\bi(?:'m| am) all for\b",
    },
    "Praise": {
        "opening_praise": r"^(?:\W*)(?:great|awesome|perfect|excellent|amazing|brilliant|fantastic|wonderful|nice|cool|superb|neat|sweet)\b",
        "that_is_great": rf"\b{_REF} (?:a |an )?{_INT}{_POS}\b",
        "very_good": r"\b(?:very|really|so|pretty|all) good (?:stuff|answer|job|work|idea|point|points|suggestion)\b|^(?:very|really|pretty) good\b|\bgood (?:job|answer|work|one|idea|point|points|suggestion|clarification)\b",
        "great_points": rf"\b{_POS} (?:job|work|answer|response|idea|ideas|point|points|suggestion|suggestions|explanation|list|question|advice)\b",
        "your_x_is_good": rf"\byour (?:idea|answer|suggestion|advice|explanation|response|list|plan)s? (?:is|was|are|were|sounds|seems|looks) {_INT}{_POS}\b|^(?:those|these) (?:are|were|look|sound) {_INT}{_POS}\b",
        "like_it": r"\bi (?:really |absolutely )?(?:like|love) (?:it|that|this|these|those|your|the (?:idea|answer|story|poem|list|way))\b|\bi (?:really )?(?:like|love) \"q\"|\blove it\b",
        "helped": r"\b(?:that|this|it|you) (?:really |truly )?(?:helped|helps|has helped)\b",
        "you_are_great": r"\byou(?:'re| are) (?:the best|a genius|a lifesaver|a star|awesome|amazing|great)\b",
        "not_bad": r"\bneg_bad\b",
        "spot_on": r"\b(?:spot on|nailed it|well done|exactly what i (?:needed|wanted)|just what i (?:needed|wanted))\b",
        "thumbs": r"👍|👌|🙏|❤️|😍",
        "know_so_much": r"\bhow do you know so much\b",
    },
    "Personal_Details": {
        "glad": r"\bi(?:'m| am) (?:so |really )?(?:glad|happy|excited|relieved)\b",
        "reminds_me": r"\b(?:that|this|it) reminds me\b|\bfun fact\b|\b(?:by the way|btw),? (?:i|my)\b",
    },
    "Humor": {
        "laugh": r"\b(?:ha(?:ha)+|he(?:he)+|lol+|lmao|rofl)\b|😂|🤣|😆|😄",
        "funny": r"\b(?:that|this|it)(?:'s| is| was| might be| would be) (?:so |really |very |pretty )?(?:funny|hilarious)\b|\b(?:nice|good|great) (?:joke|one)\b",
    },
    "Acknowledgment": {
        "ok": r"^(?:ok(?:ay)?|k|kk|alright|all right|got it|gotcha|understood|noted|fair enough|i see|roger|good)(?:[.!,]|$)|^(?:ok(?:ay)?|alright|all right)\b",
        "thats_ok": r"^(?:(?:yes|yeah|sure),? )?(?:that'?s|thats|it'?s) (?:ok(?:ay)?|fine|alright|all right)(?:[.!,]|$)",
        "no_problem": r"\bneg_problem\b|\bneg_worries\b",
        "agree": r"^(?:right|true|true that|i agree|i thought so|you'?re right|good point|exactly)\b|\byou(?:'re| are) right\b",
    },
    "Positive_Closure": {
        "bye": r"\b(?:bye|goodbye|bye bye|good night|see you|talk (?:to you )?later)(?:\s*[.!,]|$)|\bhave a (?:nice|good|great) (?:day|night|one|evening|weekend)\b",
        "all_set": r"\bthat'?s all (?:i need(?:ed)?|for (?:now|today))\b|\bi'?m all set\b",
    },
    "Getting_There": {
        "better": r"\b(?:that'?s|thats|this is|this one is|much|a bit|a little|slightly|way) better\b|\bbetter,? but\b|^(?:\W*)better\b",
        "closer": r"\b(?:getting|much|a bit|a little) (?:there|closer)\b|\balmost (?:there|perfect|right|done)\b|\bnearly (?:there|perfect)\b",
        "right_track": r"\b(?:on the right track|more like it|we'?re getting somewhere)\b",
    },
    # --- DSAT ------------------------------------------------------------------------------------
    "Negative_Feedback": {
        "insult_noun": r"\byou(?:'re| are| were)? (?:a |an )?(?:real |total |complete |fucking |stupid |such an? )?(?:dumb ?ass|idiot|moron|asshole|jerk|liar|joke)\b|\byou(?:'re| are) (?:not|neg_\w+) (?:very |that |even )?(?:intelligent|smart|listening)\b",
        "of_course_you": r"\bof course you (?:don'?t|can'?t|won'?t|wouldn'?t)\b|\byou can'?t even\b|\b\w+ my ass\b",
        "dont_listen": r"\byou (?:really |just )?(?:don'?t|do not|never) listen\b|\b(?:so |totally |very )?dismissive\b|\bthat'?s why i(?:'m| am) asking you\b",
        "insult_you": r"\byou(?:'re| are)? (?:so |really |very |just |such an? )?(?:suck|stupid|dumb|useless|an idiot|idiotic|pathetic|worthless|incompetent|terrible|awful|ugly)\b",
        "that_is_bad": r"\b(?:that'?s|thats|this is|that is|that was|it'?s|what an?) (?:so |really |just |pretty |a )?(?:bad|terrible|awful|horrible|dumb|stupid|useless|ridiculous|pathetic|garbage|trash|rubbish|disappointing|nonsense|lame)\b",
        "disappointed": r"^(?:\W*)(?:well,? )?(?:disappointing|ridiculous|useless|pathetic|terrible|awful|wtf)\b|\bi(?:'m| am) (?:so |really |very )?(?:disappointed|frustrated|annoyed)\b",
        "bad_bot": r"\b(?:dumb|stupid|useless|worthless|lousy) (?:bots?|ai|assistants?|machines?|answers?|responses?)\b",
        "negated_praise": r"\bneg_(?:good|great|helpful|useful|funny|entertaining|help)\b|\bnot a good (?:answer|response|idea)\b",
        "talking_about": r"\bwhat (?:the \w+ )?are you (?:even )?talking about\b|\bwhat the (?:fuck|hell|heck)\b",
        "swear_at": r"\b(?:fuck (?:you|off|that|this)|shut (?:the \w+ )?up|screw you)\b",
        "or_not": r"\bor not\s*\?",
        "you_always": r"\byou (?:constantly|always|keep) (?:make|making|say|saying|repeat|repeating|ignore|ignoring|give|giving|tell|telling|dodging|avoiding)\b",
        "stop_acting": r"\bstop (?:acting|pretending|being so|lecturing|preaching|moralizing)\b|\byou sound like an? \w+",
        "for_shame": r"\bfor shame\b|\bshame on you\b|\bcome on\b",
        "sad_face": r":\(|:-\(|☹|😞|😠|😡|🙄|😒",
        "makes_no_sense": r"\b(?:makes no sense|doesn'?t make (?:any )?sense|does not make (?:any )?sense)\b",
    },
    "Revision": {
        "try_again": r"\b(?:try again|try it again|one more time|start over|from scratch|redo|re-do)\b",
        "do_it_again": r"\b(?:do|write|make|say|give) (?:it|that|this|me that|one) (?:again|over)\b",
        "another": r"\b(?:another|a different) (?:way|one|version|option|suggestion|approach|attempt|try|answer|example)\b|\bsomething (?:else|different|stronger|better)\b",
        "change_it": r"\b(?:can|could|would|will) you (?:please )?(?:change|modify|adjust|fix|redo|reformulate|rework|revise|rewrite|rephrase|reword|correct|edit) (?:it|that|this|the|your|them|these)\b",
        "dont_like": r"\bi (?:don'?t|do not|didn'?t|did not) (?:really )?(?:like|want|love) (?:it|that|this|using|the|your|them|these|those)\b",
        "too_costly": r"\b(?:too expensive|too pricey|too costly|out of my budget|can'?t afford)\b",
        "no_just": r"^no,? (?:you just|just|please|i (?:said|meant|want|wanted|asked|need))\b",
        "yes_but": r"^(?:yeah|yes|ok(?:ay)?|sure|well|i know|i understand),? but\b|^but i (?:would like|want|need|wanted|asked)\b",
        "instead": r"\binstead of (?:a|an|the|that|this|your|what|giving|writing)\b",
        "rather": r"\bi(?:'d| would) (?:rather|prefer)\b",
        "but_i_want": r"\bbut i(?:'d| would)? (?:like|want|wanted|need|was hoping)\b",
        "do_i_have_to": r"^do i (?:have|need) to\b",
    },
    "Factual_Error": {
        "that_is_wrong": r"\b(?:that|this|it|you|your answer|the answer)(?:'s| is| are|'re| was| were)? (?:completely |totally |simply |just |actually |clearly |still )?(?:wrong|incorrect|inaccurate|mistaken|false|untrue)\b",
        "not_true": r"\bneg_(?:true|correct|right|accurate)\b",
        "mistake": r"\b(?:you made|there'?s|there is|that'?s) an? (?:mistake|error|typo)\b|\byou(?:'re| are) (?:confusing|mixing up)\b",
        "doesnt_work": r"\bneg_work\b|\b(?:it|that|this|the code) (?:doesn'?t|does not|didn'?t|did not|won'?t) (?:work|run|compile)\b",
        "dont_believe": r"\bi (?:don'?t|do not) (?:think|believe) (?:that|this|it|\"q\")(?:'s| is| was)? (?:is |was |are )?(?:correct|right|true|accurate)\b",
        "contradiction": r"\bhow can (?:it|that|this|they|he|she) be\b|\bcontradict\w*\b|\binconsistent\b|\bdoesn'?t add up\b",
        "actually": r"^(?:no,? )?actually,? (?:it|that|the|he|she|they|there|you)\b|^(?:that'?s )?(?:wrong|incorrect)\b",
        "got_wrong": r"\byou got (?:\w+ ){0,4}(?:wrong|mixed up|backwards)\b|\b(?:half|partly|partially|mostly) (?:wrong|incorrect)\b",
        "check_facts": r"\b(?:double[- ]check|fact[- ]check|check (?:your|the) facts)\b",
        "surely": r"\bsurely (?:it|that|they|he|she|you) (?:would|will|is|are|can|should)\b",
        "are_you_sure": r"\bare you sure\b|^(?:is|was) that (?:really )?(?:right|true|correct)\s*\?",
        "why_did_you": r"\bwhy (?:did|would) you (?:assume|say|think|suggest|recommend|claim|write|call)\b",
        "really_can": r"\bcan (?:it|that|the \w+|this) really\b",
        "cant_open": r"\bi can'?t (?:see|open|access|find|load) (?:it|that|this|the (?:link|page|file|site|image))\b|\b(?:link|url|page) (?:is broken|doesn'?t work|neg_work)\b",
    },
    "Unrealistic_Expectation": {
        "why_cant_you": r"\bwhy can'?t you\b|\byou should (?:be able to|know)\b|\byou must know\b",
        "promise": r"\bi (?:need|want) you to (?:promise|guarantee|remember)\b|\bpromise me\b",
        "you_are_ai": r"\byou(?:'re| are) (?:an? )?(?:ai|computer|machine),? (?:you|so)\b",
        "read_mind": r"\bread my mind\b|\bpredict the future\b",
    },
    "No_Engagement": {
        "never_mind": r"\b(?:never ?mind|nvm|forget (?:it|that|about it))\b|\b(?:whatever|doesn'?t matter)(?:\s*[.!,]|$)",
        "just_answer": r"\bjust (?:answer|tell me|give me|do it|do what i)\b|\bstop asking\b|\bi didn'?t ask (?:for|you)\b",
    },
    "Ignored": {
        "not_what_i": r"\b(?:that'?s|thats|this is|that is|it'?s)? ?not what i (?:asked|wanted|meant|said|was looking for|need(?:ed)?)\b",
        "you_forgot": r"\byou (?:forgot|ignored|missed|overlooked) (?:that|about|i|my|what|the)\b|\bi (?:specifically )?asked (?:for|you to)\b",
        "you_didnt": r"\byou (?:did not|didn'?t|have not|haven'?t|never|forgot to|failed to) (?:provide|answer|explain|include|mention|address|give|tell|respond|list|cite|show|read)\b",
        "i_said": r"\b(?:like|as) i (?:said|mentioned|asked|told you)\b|\bi (?:just|already) (?:asked|told|said|mentioned)\b|\bthat'?s (?:exactly )?what i(?:'m| am| was)? (?:just )?(?:said|asked|asking|saying)\b",
        "only_wanted": r"\bi (?:just|only) (?:wanted|asked|need(?:ed)?) (?:some|a|an|the|to|you to)\b",
        "misunderstand": r"\bmisunderst(?:and|ood)\b|\bi did(?:n'?t| not) mean\b|\bwhat i (?:mean|meant) (?:is|was)\b|\bi (?:actually|originally|really) (?:wanted|asked|meant)\b",
        "off_topic": r"\b(?:back on topic|off[- ]topic|irrelevant|not relevant|beside the point)\b",
        "not_an_x": r"\b(?:that|this|it)(?:'s| is) not an? \w+,? (?:that|this|it)(?:'s| is) an?\b",
        "what_about": r"^but what about\b|\byou (?:missed|ignored|skipped)\b",
    },
    "Lower_Quality": {
        "worse": r"\b(?:(?:this|that|it|the answer|your answer|the new one)(?:'s| is| was)? (?:even |much |a lot )?worse|worse than (?:before|the (?:first|last|previous|original|other))|not as good|got worse|previous (?:one|answer|version) was better|(?:first|earlier|original|last) (?:one|answer|version) was better)\b",
        "unchanged": r"\b(?:barely|hardly|not even|basically not) changed\b|\b(?:same|identical) as (?:before|the last one)\b",
        "nothing_new": r"\bnothing new\b|\b(?:too )?generic\b|\byou(?:'re| are) repeating\b|\byou already said\b|\bsame (?:answer|thing|response) (?:again|as before)\b",
    },
    "Insufficient_Detail": {
        "more_detail": r"\bmore (?:detail|details|detailed|depth|in-depth|thorough|specific|comprehensive|complete)(?:\s*[.!?]|$| (?:on|about|for|in|of|to) (?:it|that|this|the|your|those|these|each)\b| (?:please|example|examples|explanation|answer|response|information|info))|\bgo into (?:more )?detail\b",
        "too_short": r"\btoo (?:short|brief|vague|general|shallow|superficial|abstract)\b|\bnot (?:detailed|specific|complete) enough\b",
        "unfinished": r"\b(?:finish|complete|continue) (?:your|the|that) (?:last )?(?:sentence|answer|response|thought|list|code)\b|\b(?:you|it) (?:stopped|got cut off|cut off)\b",
        "dont_get_it": r"\bi (?:still )?(?:don'?t|do not) (?:get|understand) (?:it|this|that|what you mean|how|why|the)\b|\bnot (?:quite )?sure what you mean\b|\bwhat do you mean\b|\bi'?m (?:confused|lost)\b",
        "explain_it": r"\bexplain (?:it|that|this)(?: (?:again|better|properly|to me))?\s*[!?.:(]*$",
        "make_longer": r"\bmake (?:it |that |this |the \w+ )?(?:longer|larger|bigger|more detailed)\b",
        "is_that_all": r"^(?:is )?that(?:'s| is)? (?:it|all)\s*\?",
    },
    "Style": {
        "too_x": r"\b(?:too|way too|a bit|a little|bit|rather|overly) (?:long|wordy|verbose|formal|informal|casual|technical|complicated|complex|modern|simple|repetitive|redundant|offensive|artificial|dry|stiff|robotic|much text)\b",
        "more_x": r"\b(?:less|more) (?:formal|casual|wordy|verbose|redundant|technical|concise|friendly|professional|markdown|shakespearean|readable|natural|human)\b|\bmore (?:fun|playful|engaging|lively|creative|personal)\b|\bproperly (?:formal|casual|professional)\b|\btoo many (?:emojis|words|bullet points|bullets|hashtags|caveats|disclaimers|details|questions)\b|\bmore simply\b|\bsimpler (?:terms|words|language|explanation|version|way)\b|\bsimplistic\b|\blayman'?s\b|\bin (?:simple|plain) (?:terms|words|english|language)\b",
        "overdoing": r"\boverd(?:oing|id|one|o)\b|\b(?:a bit|way|far|little|bit) too much\b",
        "shorter": r"\b(?:shorter|more concise|summari[sz]e it|tl;?dr)\b",
        "format": rf"\b(?:put|write|format|present|rewrite|give|show|make) (?:it|that|this|them|these|those|the \w+|your \w+)(?: \w+)? (?:in|as|into) (?:an? )?(?:well[- ]?formatted |nice |proper |python |\w+ )?{_FORMAT}\b|\b(?:use|with|add) (?:more|less|some|no) (?:markdown|formatting|bullet|headings|emojis)\b",
        "no_bullets": r"\b(?:isn'?t|not|no|without|fewer|less) (?:a |the )?bullet",
        "dont_repeat": r"\b(?:don'?t|do not|no need to|stop) (?:repeat|use so many|include so much)\b",
        "sounds_technical": r"\b(?:sounds|is|seems|looks) (?:very |too |a bit |really |so )?(?:technical|complicated|confusing|wordy)\b",
        "tone": r"\b(?:change|fix|adjust) (?:the|your) (?:tone|style|format|formatting|wording)\b",
    },
}

_REQUEST_DSAT = ["Revision", "Insufficient_Detail", "Style"]
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
    (r"\b(?:doesn'?t|didn'?t|does not|did not|won'?t|will not|not)\s+(?:really\s+|even\s+)?(help|work)(?:ed|s)?\b", "neg_${1}"),
    (r"\bnothing (wrong|bad)\b", "neg_${1}"),
    (r"\bthanks to\b", "owing to"),  # "thanks to the rain" is not gratitude
    (r"\bthank[- ]?you (?:note|card|letter|e-?mail|message|gift|speech)s?\b", "thankyou_note"),
    (r"\b(?:say|saying|write|writing|send|sending|express|expressing) (?:a )?(?:thanks|thank you)\b", "say_thankyou"),
    (r"\b(?:if|whether) i (?:like|love)\b", "if_i_like"),  # "see if I like it" is not praise
]


_QUOTED = r"(?s:'''.*?''')|(?m:^[ \t]*>[^\n]*$)|\"[^\"\n]{0,400}\""


def _clean(text: pl.Expr) -> pl.Expr:
    """Lower case, straight quotes, quoted material cut out, whitespace collapsed."""
    t = text.str.to_lowercase().str.replace_many(["’", "‘", "`", "´", "“", "”", "„"], ["'", "'", "'", "'", '"', '"', '"'])
    # Code fences (backticks are now '), e-mail style "> " lines and double-quoted spans: not the user's voice.
    t = t.str.replace_all(_QUOTED, ' "q" ')
    return t.str.replace_all(r"\s+", " ").str.strip_chars()


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


def _category_regex(category: str) -> str:
    return "|".join(f"(?:{p})" for p in PATTERNS[category].values())


_ANY_CUE = "|".join(f"(?:{_category_regex(c)})" for c in PATTERNS)


def _names(columns: dict[str, pl.Expr], separator: str) -> pl.Expr:
    """The names whose boolean expression holds, joined by ``separator`` (null when none holds)."""
    parts = [pl.when(cond).then(pl.lit(name)) for name, cond in columns.items()]
    joined = pl.concat_str(parts, separator=separator, ignore_nulls=True)
    return pl.when(joined.str.len_chars() > 0).then(joined)


def _fired(cand: pl.DataFrame, categories: list[str]) -> pl.DataFrame:
    """``_row`` + ``rationale``: "Category:pattern" names that fired, each category scanned only on its own rows."""
    parts = []
    for i, c in enumerate(categories):
        rows = cand.filter(pl.col(f"_c_{c}"))
        if rows.height:
            fired = _names({f"{c}:{n}": pl.col("_t").str.contains(p) for n, p in PATTERNS[c].items()}, "; ")
            parts.append(rows.select("_row", pl.lit(i).alias("_cat"), fired.alias("rationale")))
    if not parts:
        return pl.DataFrame(schema={"_row": pl.UInt32, "rationale": pl.String})
    return pl.concat(parts).sort("_row", "_cat").group_by("_row", maintain_order=True).agg(
        pl.col("rationale").drop_nulls().str.join("; "))


def detect(
    turns: pl.DataFrame, *, text: str = "text", prev: str = "prev", paste_min_chars: int = 24, window_chars: int = 400
) -> pl.DataFrame:
    """Add sat, dsat, sat_categories, dsat_categories, rationale to a frame of user turns.

    ``text`` is the user turn, ``prev`` the assistant turn it answers. Patterns see the first
    ``window_chars`` characters of the turn: feedback opens a turn, while long turns are mostly pasted
    material whose words would otherwise fire cues. Pasted text is matched verbatim (case-sensitive).
    No Python loop per row: every step is a polars expression over the whole column.
    """
    empty_list = pl.lit([], dtype=pl.List(pl.String))
    if turns.height == 0:
        return turns.with_columns(  # same columns, same order as the non-empty path
            sat_categories=empty_list, dsat_categories=empty_list,
            sat=pl.lit(False), dsat=pl.lit(False), rationale=pl.lit(None, dtype=pl.String),
        )
    work = turns.with_row_index("_row").with_columns(
        pl.col(text).fill_null("").str.slice(0, window_chars).alias("_raw"), pl.col(prev).fill_null("").alias("_prev")
    )
    work = _drop_pasted(work, paste_min_chars)
    work = work.with_columns(_clean(pl.col("_kept")).alias("_t"))
    neg = pl.col("_t").str.contains(_NEGATION_CUE)
    work = pl.concat([work.filter(~neg), work.filter(neg).with_columns(_negate(pl.col("_t")))]).sort("_row")
    categories = SAT_CATEGORIES + DSAT_CATEGORIES
    # One pass of the union of all patterns (a single automaton) picks the rows with some cue; most
    # turns of a real log start a new task and carry none, so the per-category passes see few rows.
    cand = work.filter(pl.col("_t").str.contains(_ANY_CUE))
    cand = cand.with_columns([pl.col("_t").str.contains(_category_regex(c)).alias(f"_c_{c}") for c in categories])
    thanked_new_task = pl.col("_t").str.contains(_OPENS_POSITIVE) & ~pl.col("_t").str.contains(_CONTRAST)
    sarcastic = pl.col("_c_Negative_Feedback") & pl.col("_c_Gratitude") & ~pl.col("_t").str.contains(_CONTRAST)
    cand = cand.with_columns(
        [(pl.col(f"_c_{c}") & ~thanked_new_task).alias(f"_c_{c}") for c in _REQUEST_DSAT]
    ).with_columns([(pl.col(f"_c_{c}") & ~sarcastic).alias(f"_c_{c}") for c in SAT_CATEGORIES])
    cand = cand.with_columns(
        sat=pl.any_horizontal([f"_c_{c}" for c in SAT_CATEGORIES]),
        dsat=pl.any_horizontal([f"_c_{c}" for c in DSAT_CATEGORIES]),
    ).filter(pl.col("sat") | pl.col("dsat"))
    flagged = cand.select(
        "_row", "sat", "dsat",
        *[
            _names({c: pl.col(f"_c_{c}") for c in cats}, ",").str.split(",").fill_null(empty_list).alias(col)
            for col, cats in (("sat_categories", SAT_CATEGORIES), ("dsat_categories", DSAT_CATEGORIES))
        ],
    ).join(_fired(cand, categories), on="_row", how="left")
    work = work.select(*turns.columns, "_row").join(flagged, on="_row", how="left").sort("_row").with_columns(
        pl.col("sat").fill_null(False), pl.col("dsat").fill_null(False),
        pl.col("sat_categories").fill_null(empty_list), pl.col("dsat_categories").fill_null(empty_list),
    )
    out = work.select(*turns.columns, "sat_categories", "dsat_categories", "sat", "dsat", "rationale")
    return out
