"""The `rules` detector: every category pinned by hand-written positives and hard negatives, plus quoting,
negation and thanked-new-task handling, and the hand-labelled real-data fixture (precision/recall)."""

from __future__ import annotations

import re

import polars as pl
import pytest

from stages.wildfeedback_rules import DSAT_CATEGORIES, PATTERNS, SAT_CATEGORIES, detect, normalise
from tests.wildfeedback_fixture import load_labelled

PREV = "Here is a short overview of the topic you asked about, with three options to choose from."

# category -> (turns that must fire it, hard negatives that must NOT fire it)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "Gratitude": (
        ["Thanks!", "thank you so much, that's it", "Much appreciated.", "thx", "I really appreciate your help."],
        ["Thanks to the rain the match was cancelled. What sports can I play indoors?",
         "Write a thank-you note for my aunt", "How do I say thanks in Japanese?"],
    ),
    "Learning": (
        ["Oh wow, I didn't know that.", "That makes sense now.", "Interesting! So the moon causes tides?",
         "Now I understand how it works.", "Hmm, that's fascinating."],
        ["Write an interesting story about a cat.", "It makes sense to buy a car?", "Wow me with a poem about tea."],
    ),
    "Compliance": (
        ["I'll try that tonight.", "Let's go with the second option.", "I did that and it worked.", "Go ahead.",
         "Please do."],
        ["Go ahead and write me a poem about rain, please make it rhyme.", "I will try to run a marathon, tips?",
         "Let's talk about dinosaurs."],
    ),
    "Praise": (
        ["Perfect, that's exactly what I needed.", "That's a great idea.", "Not bad at all!", "You're a genius.",
         "Great points! Which one matters most?", "I love it.",
         'I like "Flour Power" best.', "Your advice was really helpful.", "those are great", "That's good advice."],
        ["Is it good to drink coffee at night?", "Write a great opening line for my novel.",
         "Could you adjust it so I can see if I like it?", "The neighbours were very helpful, what should I get them?",
         "That's not great."],
    ),
    "Personal_Details": (
        ["I'm so glad, my daughter will love this.", "That reminds me of my grandmother's recipe!",
         "By the way, I'm a nurse, so this is useful at work."],
        ["Are you glad to help people?", "Remind me to buy milk.", "My wife asked me about taxes."],
    ),
    "Humor": (
        ["Haha, nice one!", "lol that's hilarious", "That's funny, tell me another.", "😂"],
        ["Tell me a funny joke about cats.", "Why is this funny to some people?", "Explain the joke in that sentence."],
    ),
    "Acknowledgment": (
        ["Ok.", "Okay, got it.", "ok got it", "Okay so what next?", "Yes, that's fine.", "Exactly.", "Got it, next question: what is a monad?", "No problem.", "That's fine."],
        ["Oklahoma or Texas, which is bigger?", "That's fine print nobody reads, what does it say?",
         "Is it okay to eat raw eggs?"],
    ),
    "Positive_Closure": (
        ["Thanks, have a nice day!", "That's all I needed, bye!", "Great, talk to you later."],
        ["Write a goodbye letter to my team.", "How do I say good night in French?", "What day is it?"],
    ),
    "Getting_There": (
        ["That's better, but still a bit long.", "Better!", "Almost there, just fix the last line.", "We're getting closer."],
        ["Which is better, tea or coffee?", "It's better to ask a doctor, right?", "Almost 6 million people live there?"],
    ),
    "Negative_Feedback": (
        ["This is useless.", "You're so stupid.", "You're a total idiot.", "Of course you don't know.",
         "You really don't listen.", "You're not very smart.", "Helpful my ass.", "That's not helpful at all.", "What are you even talking about?",
         "Are you going to help me or not?", "Well that's disappointing :("],
        ["Not bad!", "My neighbour is stupid, how do I deal with him?", "Is this a bad time to buy a house?",
         "Write a horror story where the villain is useless."],
    ),
    "Revision": (
        ["Try again.", "Can you do it again, but shorter?", "I don't like it, give me another one.",
         "That's too expensive for me.", "No, just the code please.", "I know, but I still want it in Java.", "Instead of a poem, write a limerick."],
        ["Try to explain photosynthesis.", "Can you write another poem about the sea?",
         "Thanks! Can you change the topic to history now?"],
    ),
    "Factual_Error": (
        ["That's wrong, Paris is the capital.", "This is not true.", "The code doesn't work.",
         "How can it be both free and paid?", "Are you sure about that?", "Actually, the war ended in 1945.",
         "Wrong. It fell in 1989.", "You got the DNS part half wrong.", "Please double-check your facts.",
         "I can't open the link."],
        ["What's wrong with my code?", "What went wrong in the French revolution?", "Is it true that cats sleep a lot?", "That's not wrong.",
         "Nothing wrong with that."],
    ),
    "Unrealistic_Expectation": (
        ["Why can't you just look it up?", "I need you to promise you'll remember this.",
         "You should know what I mean."],
        ["Why can't birds swim?", "Promise to write in English.", "Should I know the answer already?"],
    ),
    "No_Engagement": (
        ["Never mind.", "Whatever, just give me the code.", "Stop asking questions and answer."],
        ["Don't mind me asking, what's a good laptop?", "I asked my boss and he said yes.", "Whatever happened to Pluto?"],
    ),
    "Ignored": (
        ["That's not what I asked.", "You didn't answer my question.", "Like I said, I need it in Python.",
         "No, you misunderstood me.", "I just wanted a short list.",
         "You forgot that I'm vegetarian.", "I asked for both columns."],
        ["What did I ask yesterday?", "I forgot my password, what now?", "Answer my question about tides.", "I wanted to visit Rome, any tips?"],
    ),
    "Lower_Quality": (
        ["This is even worse than before.", "That's barely changed.", "The first version was better.", "Nothing new here, you're repeating yourself."],
        ["Is smoking worse than vaping?", "Which version of Python is better?", "I feel worse today, any advice?"],
    ),
    "Insufficient_Detail": (
        ["Can you go into more detail?", "That's too vague.", "Could you finish your last sentence?",
         "I still don't get it.", "Is that all?"],
        ["Give me more details on hiking in Peru.", "Keep it vague on purpose: write a riddle.", "Finish the race report."],
    ),
    "Style": (
        ["Too long, make it shorter.", "Please make it less formal.", "Put it in a table.",
         "Explain it in simpler terms.", "Way too wordy.",
         "Too many emojis, and make it more fun."],
        ["Write a long story about dragons.", "What is a formal language?", "How do I make a table in Excel?"],
    ),
}


# Cues added for the miss classes of real chatbot logs (issue #16) and for the top other languages of
# WildChat (zh, ru, fr, es, de, pt): category -> (must fire, must not fire).
MORE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "Gratitude": (["谢谢！", "非常感谢", "Спасибо, помогло", "Merci beaucoup", "Gracias!", "Danke schön", "Obrigado!"],
                  ["写一封感谢所有嘉宾的朋友圈文案", "Напиши благодарственное письмо", "Écris une lettre de remerciement"]),
    "Praise": (["太棒了，谢谢", "你真厉害", "Отлично, спасибо!", "Parfait !", "¡Perfecto!", "Perfekt, danke", "Ótimo!",
                "Great do you have the number too?"],
               ["你现在是很厉害的演讲者，请写一篇演讲稿", "You are a useful assistant that extracts tuples.",
                "Write a story where he does a great job at hiding it.", "Nice to meet you, can you help me?"]),
    "Acknowledgment": (["好的。", "Понятно.", "D'accord.", "Entendido."], ["好的作文怎么写", "Понятно ли это детям?"]),
    "Compliance": (["I tried it and it works now!", "That did the trick."],
                   ["continue", "Go on.", 'i tried this: "model.load()" and got this: Traceback (most recent call last)']),
    "Negative_Feedback": (["这回答没用", "Это не то.", "C'est nul.", "Ugh, seriously?", "That makes no sense."],
                          ["Write a scene where they question everything that makes no sense."]),
    "Revision": (
        ["rewrite it", "enhance it", "try again", "Make it more formal.", "make it shorter please", "be more terse",
         "Shorter.", "more simple ways?", "use metric units", "Please keep the casual terms.", "in English please",
         "okay good but make it little short", "Combine it with the second paragraph.", "No, I mean the other one.",
         "it should be the sum, not the product", "能再优化下不", "重新写一个", "答案换成第一人称口吻",
         "Перепиши короче", "сделай короче", "альтернативный рассказ", "Réécris-le", "otra vez", "nochmal bitte",
         "de novo"],
        ["Rewrite the following paragraph in a formal tone: Our team will ship on Monday and we hope it works.",
         "Translate in Nigerian ebo hello", "I mean, if you want to, I'd allow it.", "Make a shopping list for a party.",
         "铁甲雄兵顺网怎么改成飞火？", "Придумай ещё один доп. слайд"]),
    "Factual_Error": (
        ["you sure?", "r u sure about that", "still same error", "It still doesn't work.", "you just said the opposite",
         "You made that up.", "ok this works nice, however it has some bugs", "Why, then, does it not run?",
         "I calculated it but it didn't add the column", "不对", "你确定吗", "还是报错", "Неправильно.", "Всё равно не работает",
         "C'est faux.", "No funciona.", "Das ist falsch.", "Não funciona."],
        ["If, as you said some believe, it was Rome, what then?", "Isn't this a catch 22?",
         "A game that you can already tell doesn't work in your favor: what is the expected value?",
         "What does this error mean?", "Что означает ошибка TypeError?"]),
    "Ignored": (["I didn't tell you my rolls.", "我问的是价格", "Я же просил на русском", "Ce n'est pas ce que je voulais."],
                ["I never said goodbye to her, how do I write a letter?"]),
    "Insufficient_Detail": (["Explain more on why that works.", "Can you elaborate?", "Expand upon the most recent script.",
                             "Are these the only ones?", "详细一点", "Расскажи подробнее", "Plus de détails, s'il te plaît",
                             "más detalles"],
                            ["Write an elaborate plan for my wedding.", "Expand upon the following script: INT. DAY"]),
    "Style": (["短一点", "太长了", "короче", "Trop long.", "Demasiado largo.", "Zu lang.", "Muito longo."],
              ["短跑一百米的世界纪录是多少", "Est-ce que le trajet est trop long pour un enfant ?"]),
}


def run(texts: list[str], prev: str = PREV) -> pl.DataFrame:
    return detect(pl.DataFrame({"text": texts, "prev": [prev] * len(texts)}))


def cats(row: dict) -> set[str]:
    return set(row["sat_categories"]) | set(row["dsat_categories"])


def check_cases(category: str, positives: list[str], negatives: list[str]) -> list[dict]:
    """Every positive fires ``category``, no negative does; the positives' rows."""
    out = run(positives + negatives).to_dicts()
    for text, row in zip(positives, out[: len(positives)], strict=True):
        assert category in cats(row), f"{category} missed: {text!r} -> {row['rationale']}"
    for text, row in zip(negatives, out[len(positives):], strict=True):
        assert category not in cats(row), f"{category} false alarm: {text!r} -> {row['rationale']}"
    return out[: len(positives)]


def test_every_pattern_compiles_with_python_re():
    """The naive baseline of bench/wildfeedback_signals.py runs the cues with Python's re: no \\p{...} classes."""
    for category, patterns in PATTERNS.items():
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                pytest.fail(f"{category}:{name} does not compile with Python's re: {e}")


def test_every_category_has_cases_and_patterns():
    assert set(CASES) == set(SAT_CATEGORIES) | set(DSAT_CATEGORIES) == set(PATTERNS)
    assert len(SAT_CATEGORIES) == len(DSAT_CATEGORIES) == 9


@pytest.mark.parametrize("category", list(CASES))
def test_category_positives_and_hard_negatives(category):
    polarity = "sat" if category in SAT_CATEGORIES else "dsat"
    for row in check_cases(category, *CASES[category]):
        assert row[polarity]
        assert any(r.startswith(f"{category}:") for r in row["rationale"].split("; ")), row["rationale"]


@pytest.mark.parametrize("category", list(MORE_CASES))
def test_cues_for_real_log_misses_and_other_languages(category):
    check_cases(category, *MORE_CASES[category])


# Bare edits with a free tail, the same edits in other languages, and counter-claims (issue #16's miss classes):
# pattern -> (turns it must fire on, turns where no pattern of its category may fire).
EDIT_AND_CHALLENGE: dict[str, tuple[str, list[str], list[str]]] = {
    "make_it_more": ("Revision", ["Make it more emotional and add a twist at the end.", "now make it sound less robotic"],
                     ["How do I make it more likely that my cat eats?", "Make a list of more fruits."]),
    "redo_it": ("Revision", ["rewrite it but in the past tense", "Rephrase this so a child can follow it."],
                ["Who can rewrite it, a lawyer?", "How do I simplify this fraction: 4/8?"]),
    "without": ("Revision", ["without the introduction", "but without emojis please"],
                ["What is a life without friends like?"]),
    "length_limit": ("Revision", ["in 50 words", "under 100 words please"], ["In 1990 words were scarce."]),
    "zh_more": ("Revision", ["再长一点", "写得更生动一些"], ["更新系统的方法", "再见"]),
    "zh_it": ("Revision", ["把它改成第一人称", "不要用列表"], ["把门关上怎么说"]),
    "ru_bare_edit": ("Revision", ["Добавь вывод в конце", "сделай интереснее"],
                     ['перефразируй "Концепция развития общества согласно Максу Веберу"', "Добавь ли ты сахар?"]),
    "es_bare_edit": ("Revision", ["hazlo más corto y formal", "Quita la última frase"], ["¿Cambia el clima en mayo?"]),
    "fr_bare_edit": ("Revision", ["Réécris-le au passé", "ajoute une conclusion"], ["Ajoute-t-on du sel aux pâtes ?"]),
    "de_bare_edit": ("Revision", ["Mach es kürzer", "Füge ein Fazit hinzu"], ["Füge ich hier Salz hinzu?"]),
    "pt_bare_edit": ("Revision", ["Reescreva de forma mais simples", "Adicione uma conclusão"], ["Mude de assunto?"]),
    "though": ("Factual_Error", ["It is out though", "but they did win the cup though."],
               ["I like cats though, what pets suit me?"]),
    "not_number": ("Factual_Error", ["It has 56 floors, not 60.", "not 12 but 14"], ["Give me 5 tips, not long ones."]),
    "shouldnt_it": ("Factual_Error", ["Shouldn't it be 12?", "wait, wasn't it Newton?"],
                    ["Isn't this a catch 22?", "Shouldn't I sleep more?"]),
    "sure_other": ("Factual_Error", ["¿Seguro?", "Разве это не слишком жестоко?", "应该是1949年"],
                   ["Seguro de viaje barato", "Разделите текст на абзацы"]),
    "again_bare": ("Revision", ["Again", "once more please"], ["Again, what is a monad?"]),
    "change_to_be": ("Revision", ["Change the documentary to be more accusatory", "adjust the poem to sound happier"],
                     ["How do I change the oil to be safe?"]),
    "previous_one": ("Revision", ["just write the previous one", "Go back to the first version"],
                     ["What was the previous one called?"]),
    "other_in_language": ("Revision", ["En francais", "auf Deutsch bitte", "на русском"], ["En francais, comment dit-on chat ?"]),
    "de_should": ("Revision", ["Es soll sich reimen", "Achte auf logische Reime", "Schreibe den Text moderner und einfacher"],
                  ["Soll ich heute Sport machen?"]),
    "expand_it": ("Insufficient_Detail", ["i need you to expand the above output", "expand further please"],
                  ["How do gases expand when heated?"]),
    "nothing_happens": ("Factual_Error", ["i used the code but nothing happens when I click"],
                        ["What happens if nothing is returned?"]),
    "no_such": ("Factual_Error", ["There is no such option.", "Нет там никакого settings", "there is no button called Export"],
                ["Is there no limit to a function?"]),
    "not_that": ("Style", ["not that short", "a lil more long"], ["Is it not that hard to learn?"]),
    "other_told_you": ("Ignored", ["不是让你写诗，是写故事", "Я же сказал, без списков", "Te pedí una lista corta"],
                       ["我要你帮我写一封信，主题是感谢", "Я сказал ему правду, что теперь?"]),
    "other_not_enough": ("Insufficient_Detail", ["不够详细", "太简单了", "Слишком коротко", "Trop court."],
                         ["太简单的菜谱有哪些", "Сколько коротко стриженых?"]),
    "other_still": ("Factual_Error", ["怎么还是报这个", "Опять не то", "Sigue sin funcionar", "Immer noch nicht richtig"],
                    ["Опять же, что такое API?", "Toujours pareil pour le pain ?"]),
}


@pytest.mark.parametrize("pattern", list(EDIT_AND_CHALLENGE))
def test_bare_edits_and_counter_claims(pattern):
    category, positives, negatives = EDIT_AND_CHALLENGE[pattern]
    out = run(positives + negatives).to_dicts()
    for text, row in zip(positives, out[: len(positives)], strict=True):
        assert f"{category}:{pattern}" in (row["rationale"] or ""), f"{pattern} missed: {text!r} -> {row['rationale']}"
    for text, row in zip(negatives, out[len(positives):], strict=True):
        assert category not in cats(row), f"{category} false alarm: {text!r} -> {row['rationale']}"


def test_rationale_names_each_pattern_that_fired():
    row = run(["Thanks, but that's wrong. Try again."]).row(0, named=True)
    assert row["rationale"].split("; ") == ["Gratitude:thanks", "Revision:try_again", "Factual_Error:that_is_wrong"]
    assert run(["What is the capital of Peru?"]).row(0, named=True)["rationale"] is None


def test_negation_per_category():
    rows = run(["not bad", "no problem", "not what I asked", "not helpful", "not a problem, thanks",
                "That didn't help.", "This is not wrong."]).to_dicts()
    assert rows[0]["sat_categories"] == ["Praise"] and not rows[0]["dsat"]
    assert rows[1]["sat_categories"] == ["Acknowledgment"] and not rows[1]["dsat"]
    assert rows[2]["dsat_categories"] == ["Ignored"] and not rows[2]["sat"]
    assert rows[3]["dsat_categories"] == ["Negative_Feedback"] and not rows[3]["sat"]
    assert set(rows[4]["sat_categories"]) == {"Gratitude", "Acknowledgment"} and not rows[4]["dsat"]
    assert rows[5]["dsat_categories"] == ["Negative_Feedback"] and not rows[5]["sat"]
    assert not rows[6]["sat"] and not rows[6]["dsat"]


def test_quoted_and_pasted_text_is_not_feedback():
    prev = "Sure. This is wrong in most textbooks, but the answer is 42. Let me know if you need more detail."
    rows = run([
        "> This is wrong in most textbooks\nWhy do textbooks say otherwise?",
        'My teacher wrote "this is useless, try again" on my essay. How do I reply?',
        "This is wrong in most textbooks, but the answer is 42. Where does 42 come from?",
        "```python\n# that's wrong, try again\nprint(1)\n```\nWhat does this code print?",
        "Thanks! That is wrong in my textbook too.",
    ], prev=prev).to_dicts()
    for row in rows[:4]:
        assert not row["sat"] and not row["dsat"], row
    assert rows[4]["sat"] and rows[4]["dsat"]  # own words, not pasted: both signals count


def test_thanks_then_new_task_is_gratitude_without_dsat():
    rows = run([
        "Thanks! Can you now rewrite my cover letter to be more formal?",
        "Thank you. Now give me more detail on the history of Rome, in a table.",
        "Thanks, but can you make it shorter?",
        "Can you make it shorter? Thanks!",
    ]).to_dicts()
    for row in rows[:2]:
        assert row["sat_categories"] == ["Gratitude"] and not row["dsat"], row
    assert rows[2]["sat"] and "Style" in rows[2]["dsat_categories"]  # contrast keeps the complaint
    assert "Style" in rows[3]["dsat_categories"]  # a complaint closed by thanks is still a complaint


def test_sarcastic_thanks_is_not_satisfaction():
    row = run(["You're useless. Thanks for nothing."]).row(0, named=True)
    assert not row["sat"] and row["dsat_categories"] == ["Negative_Feedback"]


def test_thanks_with_a_contrast_word_is_not_sarcasm():
    row = run(["Thanks, but this is useless."]).row(0, named=True)
    assert row["sat_categories"] == ["Gratitude"] and row["dsat_categories"] == ["Negative_Feedback"]


def test_short_sentences_are_never_taken_for_pasted_text():
    prev = "Thank you. Here is the summary you asked for, in five short paragraphs."
    row = run(["Thank you. Could you also add a short conclusion to it?"], prev=prev).row(0, named=True)
    assert row["sat_categories"] == ["Gratitude"]  # "Thank you." is in prev too, but too short to be a paste


def test_the_least_sure_uncertainty_sets_the_confidence():
    # no cue, after a refusal (0.7) and in another language (0.75): the verdict is as sure as the least sure
    row = run(["Сколько сейчас времени в Москве?"], prev="I'm sorry, but I can't help with that.").row(0, named=True)
    assert not row["sat"] and not row["dsat"] and row["confidence"] == 0.7


def test_long_pasted_documents_only_their_opening_counts():
    doc = "Please proofread this. " + "The weather was fine. " * 30 + "That's wrong, try again, you are useless."
    row = run([doc]).row(0, named=True)
    assert not row["dsat"]


def test_empty_input_keeps_columns():
    out = detect(pl.DataFrame({"text": [], "prev": []}, schema={"text": pl.String, "prev": pl.String}))
    assert out.height == 0 and {"sat", "dsat", "sat_categories", "dsat_categories", "rationale"} <= set(out.columns)


def _scores(rows: list[dict], out: pl.DataFrame, polarity: str) -> tuple[float, float, int, int, int]:
    gold = [r[polarity] for r in rows]
    pred = out[polarity].to_list()
    tp = sum(g and p for g, p in zip(gold, pred, strict=True))
    fp = sum(p and not g for g, p in zip(gold, pred, strict=True))
    fn = sum(g and not p for g, p in zip(gold, pred, strict=True))
    return tp / max(1, tp + fp), tp / max(1, tp + fn), tp, fp, fn


def test_rules_on_hand_labelled_real_turns(real):
    """OpenAssistant + HH-RLHF feedback turns labelled by hand against the rubric (ambiguous ones excluded).

    ``split: holdout`` rows (130 HH-RLHF turns) were labelled after the patterns were first tuned on the
    others. Both splits count here.
    """
    rows = [r for r in load_labelled(real) if not r["ambiguous"]]
    assert len(rows) >= 150
    assert sum(r["sat"] for r in rows) >= 30 and sum(r["dsat"] for r in rows) >= 30
    out = detect(pl.DataFrame({"text": [r["text"] for r in rows], "prev": [r["prev"] for r in rows]}))
    split = [r.get("split", "dev") for r in rows]
    for polarity in ("sat", "dsat"):
        for name in ("dev", "holdout"):
            idx = [i for i, s in enumerate(split) if s == name]
            p, r, tp, fp, fn = _scores([rows[i] for i in idx], out[idx], polarity)
            print(f"{polarity.upper()} {name}: precision {p:.3f} recall {r:.3f} (tp {tp}, fp {fp}, fn {fn}, n {len(idx)})")
        p, r, tp, fp, fn = _scores(rows, out, polarity)
        print(f"{polarity.upper()} all: precision {p:.3f} recall {r:.3f} (tp {tp}, fp {fp}, fn {fn}, n {len(rows)})")
        assert p >= 0.8 and r >= 0.6, (polarity, p, r)


@pytest.mark.parametrize("text", ["Way  too\tlong.", " way too long. ", "way\n\ntoo \u00a0long.", "way too\r\nlong.", "way\u2028too  \t long."])
def test_every_whitespace_run_reads_as_one_space(text):
    """Runs of spaces, tabs, newlines and other Unicode white space collapse to one space (and the ends are stripped),
    so a cue reads the same however the turn was spaced."""
    assert pl.DataFrame({"t": [text]}).select(normalise(pl.col("t"))).item() == "way too long."
    out = detect(pl.DataFrame({"text": [text], "prev": ["A long answer about the history of Rome."]}))
    assert out["dsat_categories"].to_list() == [["Style"]]


def test_verdicts_do_not_depend_on_which_turns_share_a_call():
    """A call reuses its first pass's DSAT hits for the turns the cleaning leaves unchanged and scans only the others
    again (pasted sentences cut, negations rewritten), so a cue that was only in a pasted sentence fires nothing, and
    every turn comes out as it does alone."""
    page = "This is useless without a login, the page says."
    texts = [t for pos, neg in CASES.values() for t in pos[:2] + neg[:1]] + [
        page + " Should I log in?", PREV.split(",")[0] + ". That's wrong, try again.", "Not bad, but shorter."]
    turns = pl.DataFrame({"text": texts, "prev": [PREV] * (len(texts) - 3) + [page, PREV, PREV]})
    whole = detect(turns)
    assert whole.select("sat", "dsat").rows()[-3:] == [(False, False), (False, True), (True, True)]
    for size in (1, 3):
        assert pl.concat([detect(turns.slice(i, size)) for i in range(0, turns.height, size)]).equals(whole)
