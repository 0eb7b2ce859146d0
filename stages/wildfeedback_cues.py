"""Cue patterns of the `rules` feedback detector: category -> {pattern name: regex}.

Patterns see normalised user text (lower case, straight quotes, quoted material cut out, negations
tokenised: see `stages.wildfeedback_rules.normalise`). English patterns are here; the commonest forms
in the other top languages of real chatbot logs (zh, ru, fr, es, de, pt, ar, ja), named ``<lang>_<what>``,
are in `stages.wildfeedback_cues_intl` and follow the English ones in each category.

A pattern anchored at both ends (``^...$``) only fires on a short turn that is nothing but that cue:
bare edit requests ("make it shorter", "enhance it", "能再优化下不") are feedback on the answer before,
while the same verb opening a long turn usually starts a new task.

`CONFIDENCE` says how sure a verdict from each pattern is (docs/wildfeedback.md).
"""

from __future__ import annotations

from stages.wildfeedback_cues_intl import INTL_CONFIDENCE, INTL_PATTERNS

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
# ...and the positive adjective must end the clause or name the answer: "you are a useful assistant" is a role prompt.
_POS_END = r"(?:\s*[.!,;)]|\s*$| (?:job|answer|response|idea|one|work|help|point|suggestion|explanation|list|advice|thanks?)\b)"
_FORMAT = r"(?:table|list|bullet points?|bullets|markdown|code blocks?|json|paragraphs?|numbered list)"
# An edit request's object: the previous answer ("it", "the poem", "your answer").
_OBJ = (r"(?: (?:it|this|that|them|these|those|the (?:\w+ )?(?:text|answer|response|story|poem|code|email|letter|paragraph|essay|"
        r"script|list|message|version|sentence|title|one|article|summary|description|song|speech|post|caption)|your (?:\w+ )?\w+))")
_EDIT = (r"(?:rewrite|re-write|rephrase|reword|redo|revise|improve|enhance|refine|polish|simplify|shorten|paraphrase|regenerate|"
         r"fix|correct|modify|adjust|change|update|edit|rework|reformulate|tweak|condense|combine|merge)")
# ...optionally saying how ("into French", "with this sentence", "as a poem").
_HOW = r"(?: (?:with|to|into|in|for|as|using|so that|by|without) [^.!?]{0,40})?"
# A bare request may open with "ok", "good but", "now please"...
_LEAD = (r"^(?:(?:ok(?:ay)?|good|nice|great|thanks?|fine|hmm+)[,.!]* (?:(?:good|nice|great)[,.!]* )?(?:but |and |now |just )?)?"
         r"(?:now,? |so,? |pls |please |can you |could you |would you |can u |just |i (?:want|need|would like|'d like) you to )*")
_END = r"(?: (?:again|please|pls|a bit|a little|more|further|then|now|instead|for me))*\s*[.!?]*$"

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
        "did_it": r"\bi (?:did|tried) (?:that|it|this)[,.!]? (?:and )?(?:it |that )?(?:works?|worked|helped|fixed)\b|\b(?:that|it|this) (?:worked|works now|works perfectly|did the trick)\b",
        # "continue" / "go on" after an answer (cut off or not) is neither: the rubric's rule.
        "go_ahead": r"^(?:yes,? )?(?:please do|go ahead|do it|proceed)\b(?: with (?:it|that|the \w+))?[\s.!]*$",
        "sounds_like_plan": r"\bsounds like a plan\b",
        "all_for": r"\bi(?:'m| am) all for\b",
    },
    "Praise": {
        "opening_praise": r"^(?:\W*)(?:great|awesome|perfect|excellent|amazing|brilliant|fantastic|wonderful|nice|cool|superb|neat|sweet)\b(?:[.!,]|$| (?:job|work|answer|one|idea|thanks?|thank you|stuff|do|does|can|could|would|what|how|now|so|and|but|i|that|this)\b)",
        "that_is_great": rf"\b{_REF} (?:a |an )?{_INT}{_POS}{_POS_END}",
        "very_good": r"\b(?:very|really|so|pretty|all) good (?:stuff|answer|job|work|idea|point|points|suggestion)\b|^(?:very|really|pretty) good\b|\bgood (?:job|answer|work|idea|point|points|suggestion|clarification)\b",
        "great_points": rf"\b{_POS} (?:job|work|answer|response|ideas?|points?|suggestions?|explanation|advice)\b",
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
        "laugh": r"\b(?:ha(?:ha)+|he(?:he)+|lol+|lmao|rofl)\b|😂|🤣|😆|😄|哈哈",
        "funny": r"\b(?:that|this|it)(?:'s| is| was| might be| would be) (?:so |really |very |pretty )?(?:funny|hilarious)\b|\b(?:nice|good|great) (?:joke|one)\b",
    },
    "Acknowledgment": {
        "ok": r"^(?:ok(?:ay)?|k|kk|alright|all right|good|roger)[.!]*$|^(?:got it|gotcha|understood|noted|fair enough|i see)(?:[.!,]|$)",
        "ok_then": r"^(?:ok(?:ay)?|alright|all right|good)\b",  # "ok" opening a new request: less sure
        "thats_ok": r"^(?:(?:yes|yeah|sure),? )?(?:that'?s|thats|it'?s) (?:ok(?:ay)?|fine|alright|all right)(?:[.!,]|$)",
        "no_problem": r"^\W*(?:neg_problem|neg_worries)\b",
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
        "makes_no_sense": r"(?:^|[.!?,] )(?:(?:but|well|and|so|sorry|lol) )?(?:that|this|it|your \w+)(?:'s| is)? (?:just |still )?(?:makes no sense|doesn'?t make (?:any )?sense|does not make (?:any )?sense|nonsense)\b|^(?:makes no sense|nonsense)\b",
        "frustration": r"\b(?:ugh+|argh+|ffs|smh|bruh)\b|\bare you (?:kidding|serious|joking)\b|^(?:seriously|really)\s*\?+!*$|^(?:no+|nope|wrong)\s*[.!]+$",
    },
    "Revision": {
        "try_again": r"\b(?:try again|try (?:it|this|that) again|one more time|start over|from scratch|redo|re-do)\b",
        "do_it_again": r"\b(?:do|write|make|say|give) (?:it|that|this|me that|one|the \w+) (?:again|over)\b",
        "another": r"\b(?:another|a different) (?:way|one|version|option|suggestion|approach|attempt|try|answer|example)\b|\bsomething (?:else|different|stronger|better)\b",
        "other_ideas": r"^(?:any |some |got any |do you have (?:any )?)?(?:other|more|different|new) (?:ideas|options|suggestions|ways|alternatives|versions|names)\b[^.!?]{0,20}[.!?]*$",
        "change_it": r"\b(?:can|could|would|will) you (?:please )?(?:change|modify|adjust|fix|redo|reformulate|rework|revise|rewrite|rephrase|reword|correct|edit) (?:it|that|this|the|your|them|these)\b",
        "bare_edit": _LEAD + r"(?:" + _EDIT + _OBJ + r"?|translate" + _OBJ + r")" + _HOW + _END,
        "make_it": _LEAD + r"make (?:it|this|that|them|the (?:\w+ )?\w+) (?:\w+ ){0,3}\w+" + _END,
        "comparative": _LEAD + r"(?:be |sound |keep it |write it |make it |say it |do it |now )?(?:a bit |a little |much |even |way |slightly )?(?:shorter|longer|simpler|better|funnier|more \w+|less \w+)(?: (?:please|pls|ways?|options?|version|than (?:that|this|before)))?\s*[.!?]*$",
        # A short bare edit of the answer: "use metric units", "add a conclusion", "remove the intro".
        "edit_phrase": _LEAD + r"(?:use|remove|delete|drop|replace|omit|switch to|convert (?:it )?to|change (?:it )?to|put (?:it|them) in) [^.!?]{1,40}[.!?]*$",
        "include_phrase": _LEAD + r"(?:include|mention|cite) [^.!?]{1,40}[.!?]*$",
        "in_language": _LEAD + r"(?:answer |reply |respond |write (?:it )?|say (?:it )?|translate (?:it )?)?(?:in|into) (?:english|chinese|russian|french|spanish|german|portuguese|japanese|korean|arabic|italian|turkish|simple english|plain english)(?: please)?\s*[.!?]*$",
        "keep_avoid": _LEAD + r"(?:keep|don'?t change|do not change|don'?t use|do not use|don'?t add|do not add|avoid|no more|stop (?:using|adding|saying|writing)) [^.!?]{1,60}[.!?]*$",
        "instead": r"\binstead of (?:a|an|the|that|this|your|what|giving|writing)\b|\binstead\s*[.!?]*$",
        "dont_like": r"\bi (?:don'?t|do not|didn'?t|did not) (?:really )?(?:like|want|love) (?:it|that|this|using|the|your|them|these|those)\b",
        "too_costly": r"\b(?:too expensive|too pricey|too costly|out of my budget|can'?t afford)\b",
        "no_just": r"^no,? (?:you just|just|please|i (?:said|meant|want|wanted|asked|need))\b",
        "i_meant": r"^(?:no|nope|sorry)\W+i mean\b|^i mean \w|\bi meant\b|\bwhat i (?:mean|meant|want(?:ed)?|need(?:ed)?|asked for) (?:is|was)\b|\bi was (?:asking|talking) about\b",
        "should_be": r"^(?:no,? |but |wait,? )?(?:it|that|this|the \w+|they) (?:should|must|needs? to|is supposed to) (?:be|have|say|show|return|include|use|rhyme|sound|look|feel|mention|start|end|focus|contain|not)\b[^.!?]{0,80}[.!?]*$",
        "yes_but": r"^(?:yeah|yes|ok(?:ay)?|sure|well|i know|i understand),? but\b|^but i (?:would like|want|need|wanted|asked)\b",
        "rather": r"\bi(?:'d| would) (?:rather|prefer)\b",
        "but_i_want": r"\bbut i(?:'d| would)? (?:like|want|wanted|need|was hoping)\b",
        "do_i_have_to": r"^do i (?:have|need) to\b",
        "again_bare": r"^\W*(?:again|once again|once more)(?: please| pls)?\W*$",
        "change_to_be": _LEAD + r"(?:change|adjust|edit|rewrite|tweak|modify) (?:it|this|that|them|the \w+) (?:to be|to sound|so "
                        r"(?:it|that) (?:it )?(?:is|sounds)) (?:more|less|a bit|a little|much|\w+er)\b[^?]{0,60}$",
        "previous_one": r"^\W*(?:just |please |no,? )?(?:write|give|use|go back to|show|keep|send|bring back) (?:me )?(?:the |your )?"
                        r"(?:previous|first|earlier|original|last|old) (?:one|version|answer|response|text)\b",
        # Bare edits of the answer with a free tail ("make it more emotional and add a twist", "rewrite it but in
        # the past tense"): the object is the answer ("it", "this"), the tail says how; no question.
        "make_it_more": _LEAD + r"make (?:it|this|that|them)(?: \w+)? (?:more|less|sound|look|feel|a bit|a little|much|"
                        r"slightly|even|rhyme|funnier|simpler|shorter|longer|better|clearer|easier|harder|darker)\b[^?]{0,120}$",
        "redo_it": _LEAD + r"(?:rewrite|re-write|rephrase|reword|redo|revise|regenerate|rework|reformulate|shorten|simplify) "
                   r"(?:it|this|that|them)\b[^?]{0,80}$",
        # The answer redone another way, said of "it"/"this" ("write it as a poem", "do it in python", "say it with
        # more feeling"); translating it is a new use of the answer, not a complaint.
        "redo_with": _LEAD + r"(?:write|rewrite|do|redo|say|tell|present|put|turn|format|make|give|explain|try) (?:me )?(?:it|this|that|"
                     r"them|the same(?: thing)?|the above|that one|this one) (?:again|differently|in|"
                     r"as|from|with|without|like|but|using|into|more|less|shorter|longer|simpler)\b[^?\"(){};=$]{0,60}$",
        "add_more": _LEAD + r"(?:add|put|use|include|give (?:it|them)) (?:some |a (?:bit|few|little) |a lot |even |way |much )?"
                    r"(?:more|less|fewer) [a-z][^.!?]{0,40}[.!]*$|"
                    + _LEAD + r"(?:add|insert|put) (?:[a-z][^.!?]{0,40}) (?:to|in|at|into) (?:it|this|that|them|the (?:end|beginning|"
                    r"start|ending|story|poem|text|answer|list|email|letter|intro|introduction|conclusion|essay|song|speech|description|summary|"
                    r"paragraph|table|post|caption|lyrics|report|plan|title|article))\b[^?]{0,60}$",
        "want_it": r"^(?:no,? |but |ok(?:ay)?,? )?i (?:want|need|wanted|needed|would like|'d like) (?:it|this|that|them|the (?:story|poem|"
                   r"text|answer|email|letter|essay|list|response|title|song|names?|description)) (?:to be|to sound|to have|to rhyme|"
                   r"in|as|shorter|longer|more|less|without|with)\b[^?]{0,60}$",
        "without": _LEAD + r"(?:but |and )?without (?:the |any |a |an )?[^.!?]{1,40}[.!?]*$",
        "length_limit": _LEAD + r"(?:in|under|within|less than|fewer than|max|maximum|no more than|only|just) \d+ "
                        r"(?:words|characters|sentences|lines|paragraphs|points|bullet points)(?: please| only| max)?[.!]*$",
        # The same bare edits in the other top languages: a short turn that is nothing but the edit (or says
        # "it"/"this"); quoted material ("q") makes it a new task.
    },
    "Factual_Error": {
        "that_is_wrong": r"\b(?:that|this|it|you|your answer|the answer)(?:'s| is| are|'re| was| were)? (?:completely |totally |simply |just |actually |clearly |still )?(?:wrong|incorrect|inaccurate|mistaken|false|untrue)\b",
        "not_true": r"\bneg_(?:true|correct|right|accurate)\b",
        "mistake": r"\b(?:you made|there'?s|there is|that'?s) an? (?:mistake|error|typo)\b|\byou(?:'re| are) (?:confusing|mixing up)\b",
        "doesnt_work": r"(?:^|\b(?:it|that|this|the code|your code|the script|the command|the formula|the link|still|but|and|just|one|step \w+|number \w+|solution|answer|method|fix) )neg_work\b|\b(?:it|that|this|the code) (?:doesn'?t|does not|didn'?t|did not|won'?t) (?:run|compile)\b",
        "dont_believe": r"\bi (?:don'?t|do not) (?:think|believe) (?:that|this|it|\"q\")(?:'s| is| was)? (?:is |was |are )?(?:correct|right|true|accurate)\b",
        "contradiction": r"\bhow can (?:it|that|this|they|he|she) be\b|\bcontradict\w*\b|\binconsistent\b|\bdoesn'?t add up\b",
        "actually": r"^(?:no,? )?actually,? (?:it|that|the|he|she|they|there|you)\b|^(?:that'?s )?(?:wrong|incorrect)\b",
        "got_wrong": r"\byou got (?:\w+ ){0,4}(?:wrong|mixed up|backwards)\b|\b(?:half|partly|partially|mostly) (?:wrong|incorrect)\b",
        "check_facts": r"\b(?:double[- ]check|fact[- ]check|check (?:your|the) facts)\b",
        "surely": r"\bsurely (?:it|that|they|he|she|you) (?:would|will|is|are|can|should)\b",
        "are_you_sure": r"\b(?:are |r )?(?:you|u) (?:sure|certain)\s*(?:[?!.,]|$|about|that|this|it)|^(?:is|was) that (?:really )?(?:right|true|correct)\s*\?",
        "you_said": r"\byou (?:just|literally) said\b|(?:^|[.!?] |\bbut |\bno,? )you said\b|\bmade (?:that|it|this|those|them) up\b|\bhallucinat\w+\b",
        "still_failing": r"\b(?:still|again|same) (?:the )?(?:same )?(?:error|errors|problem|issue|exception|bug)\b|\bstill (?:not working|neg_work|getting|get|gives?|giving|shows?|showing|returns?|fails?|failing|broken|crash\w*|missing|empty|the same)\b",
        "it_fails": r"\b(?:it|this|the code|your code|the script|the program) (?:still )?(?:has|have) (?:some |a few |many |a |an |the same )?(?:bugs?|errors?|issues?|problems?|mistakes?)\b|\byou (?:couldn'?t|could not|failed to|didn'?t manage to) (?:fix|solve|do|get|make|answer|find)\b|\bbut (?:it|that|this|the code|nothing) (?:didn'?t|doesn'?t|did not|does not|won'?t|isn'?t|wasn'?t|neg_\w+)\b",
        "where_from": r"\bwhere did you (?:get|find|read|hear) (?:that|this|it|those|these)\b|\bwhat'?s your source\b|"
                      r"^\W*(?:source|sources|citation)\s*\?|\b(?:doesn'?t|does not|didn'?t) (?:sound|look|seem) (?:right|correct|true)\b",
        "then_why": r"^why,? then\b|\bthen why\b|^but why\b",
        "why_did_you": r"\bwhy (?:did|would) you (?:assume|say|think|suggest|recommend|claim|write|call)\b",
        "really_can": r"\bcan (?:it|that|the \w+|this) really\b",
        "cant_open": r"\bi can'?t (?:see|open|access|find|load) (?:it|that|this|the (?:link|page|file|site|image))\b|\b(?:link|url|page) (?:is broken|doesn'?t work|neg_work)\b",
        "nothing_happens": r"\bnothing (?:happens|happened|changed|changes|shows up|appears|is displayed|gets? printed)\b",
        "no_such": r"^\W*(?:but )?there(?:'s| is) no such\b|\bthere (?:is|are) no (?:\w+ )?(?:option|button|menu|setting|settings|"
                   r"field|tab|function|method|column|property|attribute|module|command)s? (?:called|named|like|in|on)\b|"
                   r"^\W*(?:но |а )?(?:нет|нету) (?:там |тут |здесь )?никак\w+",
        # A counter-claim: a short statement that contradicts the answer ("It is out though", "it has 56 floors, not
        # 60", "shouldn't it be 12?", "wasn't it Newton?").
        "though": r"^(?:but |well,? )?(?:it|that|this|they|he|she|there|you|the \w+)(?:'s|'re| is| are| was| were| does| "
                  r"did| has| have| can)\b[^.?!]{0,60} though[.!]*$",
        "not_number": r"\b\d[\d.,]*(?: \w+)?,? not \d[\d.,]*\b|\bnot \d[\d.,]*(?: \w+)?,? (?:but|it'?s|it is|it was)\b",
        "shouldnt_it": r"^(?:but |wait,? |hmm+,? |um+,? )?(?:shouldn'?t (?:it|that|this|the \w+|they) be|wasn'?t (?:it|that|he|"
                       r"she|they)|didn'?t (?:he|she|they)|isn'?t (?:it|that) (?:actually|supposed))\b[^?]{0,60}\?",
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
        # "based on the code I provided", "instead of using the text I sent": the user's own material was ignored.
        "my_material": r"\b(?:the|my) (?:previous |original |earlier |same )?(?:code|text|data|file|example|list|version|script|"
                       r"document|essay|information|info|details) (?:that )?i (?:provided|gave|sent|posted|shared|pasted|attached)\b",
        "you_forgot": r"\byou (?:forgot|ignored|missed|overlooked|omitted) (?:that|about|i|my|what|the)\b|\bi (?:specifically )?asked (?:for|you to)\b",
        "you_didnt": r"\byou (?:did not|didn'?t|have not|haven'?t|never|forgot to|failed to) (?:provide|answer|explain|include|mention|address|give|tell|respond|list|cite|show|read)\b",
        "i_didnt_say": r"\bi (?:didn'?t|did not|never) (?:tell|say|ask|mention|want|need) (?:you |that|for|to)\b",
        "i_said": r"\b(?:like|as) i (?:said|mentioned|asked|told you)\b|\bi (?:just|already) (?:asked|told|said|mentioned)\b|\bthat'?s (?:exactly )?what i(?:'m| am| was)? (?:just )?(?:said|asked|asking|saying)\b",
        "only_wanted": r"\bi (?:just|only) (?:wanted|asked|need(?:ed)?) (?:some|a|an|the|to|you to)\b",
        "misunderstand": r"\bmisunderst(?:and|ood)\b|\bi did(?:n'?t| not) mean\b|\bi (?:actually|originally|really) (?:wanted|asked|meant)\b",
        "off_topic": r"\b(?:back on topic|off[- ]topic|irrelevant|not relevant|beside the point)\b",
        # "that's not a haiku", "this isn't python": the answer is not the thing asked for (a short turn).
        "not_a_x": r"^(?:but |no,? |um+,? )?(?:that|this|it|these|those)(?:'s| is| are|s)? (?:not|isn'?t|aren'?t) (?:a|an|in) \w+(?: \w+)?\W*$",
        "not_an_x": r"\b(?:that|this|it)(?:'s| is) not an? \w+,? (?:that|this|it)(?:'s| is) an?\b",
        "what_about": r"^but what about\b|\byou (?:missed|ignored|skipped)\b",
        # "I told you to ...", "what I want is ...", "still not what I asked" in the other top languages.
    },
    "Lower_Quality": {
        "worse": r"\b(?:(?:this|that|it|the answer|your answer|the new one)(?:'s| is| was)? (?:even |much |a lot )?worse|worse than (?:before|the (?:first|last|previous|original|other))|not as good|got worse|previous (?:one|answer|version) was better|(?:first|earlier|original|last) (?:one|answer|version) was better)\b",
        "unchanged": r"\b(?:barely|hardly|not even|basically not) changed\b|\b(?:same|identical) as (?:before|the last one)\b",
        "nothing_new": r"\bnothing new\b|\b(?:too )?generic\b|\byou(?:'re| are) repeating\b|\byou already said\b|\bsame (?:answer|thing|response) (?:again|as before)\b",
    },
    "Insufficient_Detail": {
        "more_detail": r"\bmore (?:detail|details|detailed|depth|in-depth|thorough|specific|comprehensive|complete)(?:\s*[.!?]|$| (?:on|about|for|in|of|to) (?:it|that|this|the|your|those|these|each)\b| (?:please|example|examples|explanation|answer|response|information|info))|\bgo into (?:more )?detail\b|"
                       r"^\W*(?:(?:can|could) you |please )?(?:describe|explain|write|tell me|go over|talk about|elaborate on|break down)\b[^.]{0,60} "
                       r"in (?:more|greater|immense|extreme|much more|further|even more|more vivid) details?\b|"
                       r"^\W*(?:(?:can|could) you |please )?add (?:more |some |a few |a bit more )?details? (?:about|on|to|of|for)\b",
        "too_short": r"\btoo (?:short|brief|vague|general|shallow|superficial|abstract)\b|\bnot (?:detailed|specific|complete) enough\b",
        "unfinished": r"\b(?:finish|complete) (?:your|the|that) (?:last )?(?:sentence|answer|response|thought|list|code)\b|\b(?:you|it) (?:stopped|got cut off|cut off)\b",
        "dont_get_it": r"\bi (?:still )?(?:don'?t|do not) (?:get|understand) (?:it|this|that|what you mean|how|why|the)\b|\bnot (?:quite )?sure what you mean\b|\bwhat do you mean\b|\bi'?m (?:confused|lost)\b",
        "explain_it": r"\bexplain (?:it|that|this)(?: (?:again|better|properly|to me))?\s*[!?.:(]*$",
        "explain_more": r"\bexplain (?:it |this |that |them )?(?:more|better|further|in (?:more )?detail|more clearly|differently)\b|\belaborate\s*(?:more|further|on (?:it|this|that|them|these|those|the|your|each|point|number|\d))?\s*[.!?]*$|\b(?:can|could) you elaborate\b|\bplease elaborate\b",
        "go_deeper": r"\b(?:go|dig|dive) deeper\b|\bbe more (?:specific|detailed|precise|concrete)\b|\bexpand (?:on|upon) (?:it|this|that|them|these|those|each|your|the (?:most )?(?:recent|previous|last|above))\b",
        "make_longer": r"\bmake (?:it |that |this |the \w+ )?(?:longer|larger|bigger|more detailed)\b",
        # "give me the full code", "implement the complete changes": the answer was partial.
        "the_full": _LEAD + r"(?:give|show|write|send|provide|implement|print|post|share|make|do) (?:me |us )?(?:the|your) "
                    r"(?:full|whole|entire|complete|rest of the) (?:code|changes|script|program|answer|text|list|version|file|"
                    r"method|function|story|response|solution|implementation|thing)\b",
        "is_that_all": r"^(?:is )?that(?:'s| is)? (?:it|all)\s*\?|\bare (?:these|those|they) (?:the only|all)\b",
        "expand_it": r"\bexpand (?:it|this|that|them|the above(?: \w+)?|the previous(?: \w+)?|your (?:\w+ )?(?:answer|response|"
                     r"output|text))\b|\bexpand (?:further|more)\b",
    },
    "Style": {
        "too_x": r"\b(?:too|way too|a bit|a little|bit|rather|overly) (?:long|wordy|verbose|formal|informal|casual|technical|complicated|complex|modern|simple|repetitive|redundant|offensive|artificial|dry|stiff|robotic|much text)\b",
        "not_that": r"^\W*(?:not (?:that|so|this|too) (?:short|long|formal|casual|simple|complicated|much))\W*$|"
                    r"^\W*a (?:lil|tad|little bit) (?:more|less) \w+\W*$",
        "more_x": r"\b(?:less|more) (?:formal|casual|wordy|verbose|redundant|technical|concise|friendly|professional|markdown|shakespearean|readable|natural|human)\b|\bmore (?:fun|playful|engaging|lively|creative|personal)\b|\bproperly (?:formal|casual|professional)\b|\btoo many (?:emojis|words|bullet points|bullets|hashtags|caveats|disclaimers|details|questions)\b|\bmore simply\b|\bsimpler (?:terms|words|language|explanation|version|way)\b|\bsimplistic\b|\blayman'?s\b|\bin (?:simple|plain) (?:terms|words|english|language)\b",
        # "it's too cheesy", "way too much", "still too formal": a short verdict on the answer's manner.
        "too_adj": r"^(?:but |hmm+,? |well,? |no,? )?(?:(?:it|that|this|this one|the \w+|they|these|those)(?:'s| is| are|'re| was| seems| "
                   r"sounds| feels| looks)? )?(?:still |way |a bit |a little |kinda |kind of |far |much |just |really |so )*too "
                   r"(?:\w+|much|many \w+)(?: and \w+)?\W*$",
        "overdoing": r"\boverd(?:oing|id|one|o)\b|\b(?:a bit|way|far|little|bit) too much\b",
        "shorter": r"\b(?:shorter|more concise|summari[sz]e it|tl;?dr)\b",
        "format": rf"\b(?:put|write|format|present|rewrite|give|show|make) (?:it|that|this|them|these|those|the \w+|your \w+)(?: \w+)? (?:in|as|into) (?:an? )?(?:well[- ]?formatted |nice |proper |python |\w+ )?{_FORMAT}\b|\b(?:use|with|add) (?:more|less|some|no) (?:markdown|formatting|bullet|headings|emojis)\b",
        "no_bullets": r"\b(?:isn'?t|not|no|without|fewer|less) (?:a |the )?bullet",
        "dont_repeat": r"\b(?:don'?t|do not|no need to|stop) (?:repeat|use so many|include so much)\b",
        "sounds_technical": r"\b(?:sounds|is|seems|looks) (?:very |too |a bit |really |so )?(?:technical|complicated|confusing|wordy)\b",
        "tone": r"\b(?:change|fix|adjust) (?:the|your) (?:tone|style|format|formatting|wording)\b",
    },
}

# How sure a verdict is, per pattern name (default by polarity). Bare cues ("ok", a trailing "instead") and
# patterns that also occur in neutral turns are less sure; rules+llm sends verdicts below its threshold to the model.
DEFAULT_CONFIDENCE = {"sat": 0.85, "dsat": 0.85}
CONFIDENCE: dict[str, float] = {
    "ok_then": 0.55, "thats_ok": 0.7, "agree": 0.7,
    "interesting": 0.7, "helped": 0.75, "like_it": 0.75, "better": 0.7, "glad": 0.6, "reminds_me": 0.6,
    "opening_praise": 0.75, "go_ahead": 0.7, "funny": 0.7,
    "or_not": 0.7, "for_shame": 0.7, "sad_face": 0.7, "frustration": 0.75,
    "another": 0.75, "other_ideas": 0.7, "instead": 0.7, "rather": 0.7, "but_i_want": 0.7, "yes_but": 0.7,
    "do_i_have_to": 0.6, "too_costly": 0.7, "keep_avoid": 0.7, "comparative": 0.75, "make_it": 0.75,
    "contradiction": 0.7, "surely": 0.7, "really_can": 0.7, "why_did_you": 0.7, "you_said": 0.7,
    "cant_open": 0.7, "should_be": 0.7, "it_fails": 0.75, "then_why": 0.7, "i_didnt_say": 0.75, "dont_get_it": 0.7, "is_that_all": 0.65, "what_about": 0.7, "off_topic": 0.7,
    "never_mind": 0.7, "just_answer": 0.7, "why_cant_you": 0.7, "nothing_new": 0.7, "sounds_technical": 0.7,
    "make_it_more": 0.75, "redo_with": 0.8, "add_more": 0.75, "want_it": 0.75, "not_a_x": 0.75, "my_material": 0.75, "where_from": 0.75, "the_full": 0.75, "too_adj": 0.75, "redo_it": 0.8, "without": 0.7, "length_limit": 0.7,
    "though": 0.7, "not_number": 0.7, "shouldnt_it": 0.7,
    "again_bare": 0.8, "change_to_be": 0.8, "previous_one": 0.75,
    "expand_it": 0.8, "nothing_happens": 0.7, "no_such": 0.7, "not_that": 0.75,
    "edit_phrase": 0.7, "include_phrase": 0.6, "in_language": 0.75,
}
CONFIDENCE |= INTL_CONFIDENCE
for _category, _patterns in INTL_PATTERNS.items():
    PATTERNS[_category] |= _patterns
