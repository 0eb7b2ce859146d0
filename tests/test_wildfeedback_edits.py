"""The `rules` detector on the miss classes of real chatbot logs (issue #16): bare edits of the answer said of
"it" or of a thing the request named, "too <adj>", "that's not a <x>", the user's own material ignored, the full
answer asked for, "no, ..." corrections and insisting after a refusal in other languages; and the guards that
keep new tasks using the same words (a question about the world, an instruction over its own material) NEITHER."""

from __future__ import annotations

import pytest

from stages.wildfeedback_rules import ROUTE_BELOW
from tests.wildfeedback_fixture import assert_cue_family, detect_turns

STORY = "Once upon a time a dragon named Ember learned to fly over the mountains. The end."
ASK = "Write a short story about a dragon"


run = detect_turns


# pattern -> (category, turns after STORY that must fire it, new tasks with the same words that must fire no
# pattern of that category)
BARE_EDITS: dict[str, tuple[str, list[str], list[str]]] = {
    "redo_with": ("Revision", ["write it as a poem", "do it in python", "can you write it with more dialogue",
                               "i want you to write it in a report format, and more words"],
                  ["Write it down for me: milk, eggs, bread", "write this code in Html  $(\"#calendar\").datepicker();"]),
    "add_more": ("Revision", ["add more jokes", "add a twist at the end", "Now add it to the description"],
                 ["Add 2 and 2", "How do I add a new line in Python?"]),
    "want_it": ("Revision", ["I want it to be funnier", "no, I need the story in the past tense"],
                ["I want it to run on windows, which laptop should I buy?"]),
    "too_adj": ("Style", ["it's too cheesy", "still way too formal", "too much"],
                ["Is it too late to learn piano?", "its too cold outside, what should I wear"]),
    "not_a_x": ("Ignored", ["that's not a story", "this isn't a haiku"], ["Is that not a bird over there?"]),
    "my_material": ("Ignored", ["can you code the behaviors based on the previous code I provided",
                                "Why did you use a new class instead of working on the code I sent?"],
                    ["Here is the code I wrote yesterday, what does it do?"]),
    "the_full": ("Insufficient_Detail", ["give me the full code", "could you implement the complete changes to main.cpp"],
                 ["Write a complete guide to baking bread"]),
    "more_detail": ("Insufficient_Detail", ["describe in immense detail each part of his suit",
                                            "can you add details about the name of the website?"],
                    ["What skills do you have in more detail, and where should I trust you?"]),
    "try_again": ("Revision", ["try this again, with the dragon afraid of heights"], ["Try this recipe: 2 eggs, flour"]),
    "doesnt_work": ("Factual_Error", ["It doesn't seems to work. Other ideas ?"], ["Why doesn't it seem fair to tax food?"]),
}


@pytest.mark.parametrize("name", list(BARE_EDITS))
def test_bare_edits_of_the_answer_and_their_new_task_twins(name):
    category, positives, negatives = BARE_EDITS[name]
    rows = run([(t, STORY, ASK) for t in positives + negatives])
    assert_cue_family(name, category, positives, negatives, rows)


def test_an_edit_of_a_thing_the_request_or_the_answer_named():
    doc = "Title: The Dragon Files. Opening shot: mountains at dawn, a narrator speaks."
    named, other_request, quoted, said, not_said = run([
        ("Ok, rewrite the documentary with more detail about the daily routine.", doc, "Write a documentary about dragons"),
        ("Ok, rewrite the documentary with more detail about the daily routine.", doc, "Tell me about cats"),
        ('change "opening shot"', doc, "Write a documentary about dragons"),
        ("don't say the word narrator", doc, "Write a documentary about dragons"),
        ("don't say the word hello", doc, "Write a documentary about dragons"),
    ])
    for row in (named, quoted, said):
        assert row["dsat"] and "Revision:edits_named" in row["rationale"], row
    for row in (other_request, not_said):
        assert "edits_named" not in (row["rationale"] or ""), row


def test_a_question_about_the_world_or_an_instruction_over_its_own_material_is_a_new_task():
    material = "перепиши это без использования latex\n" + "Для решения задачи нужно использовать комбинаторику. " * 10
    rows = run([("How can I make pancakes from scratch?", STORY, ASK), ("Do days get shorter in winter?", STORY, ASK),
                (material, STORY, ASK)])
    for row in rows:
        assert not row["dsat"], row
    still = run([("Do I have to?", STORY, ASK), ("перепиши это без использования latex", STORY, ASK),
                 ("Can you make it shorter?", STORY, ASK)])
    for row in still:
        assert row["dsat"], row


def test_no_opening_a_correction_in_other_languages():
    plain = "Вот список: 1. яблоки 2. груши."
    rows = run([("Нет, мне нужно без списков", plain, "список фруктов"), ("不是，我要的是英文版", plain, "水果清单"),
                ("Non, je voulais une version courte", plain, "liste"), ("No, quiero algo más corto", plain, "lista"),
                ("Nein, bitte auf Deutsch", plain, "Liste"), ("Não, eu quero em português", plain, "lista"),
                ("لا، أريدها أقصر", plain, "قائمة"), ("No, gpt, not all at once.", plain, "plan")])
    for row in rows:
        assert row["dsat"] and "Revision:no_correction" in row["rationale"], row
    declined = run([("Нет, спасибо", plain, "список"), ("Нет, мне нужно без списков", "Хотите список?", "список"),
                    ("No, gracias", plain, "lista")])
    for row in declined:
        assert "no_correction" not in (row["rationale"] or ""), row


def test_insisting_after_a_refusal_in_other_languages_and_asking_for_the_refused_thing():
    rows = run([
        ("выдумай историю где путин президент", "Ответить на этот вопрос мы не можем.", "выдумай ситуацию где путин президент"),
        ("write the hypotheses", "Without the article, I cannot accurately state the hypotheses.", "summarise the study"),
        ("Это просто история, напиши", "Извините, но я не могу это написать.", "напиши рассказ"),
    ])
    for row in rows:
        assert row["dsat"] and "Revision:insist_after_refusal" in row["rationale"], row
    other = run([("write a poem about spring", "Without the article, I cannot accurately state the hypotheses.",
                  "summarise the study")])[0]
    assert not other["dsat"] and other["confidence"] < ROUTE_BELOW  # after a refusal, unsure: the model decides


def test_a_short_edit_of_a_text_answer_but_not_after_code_or_a_question():
    edits = ["change the ending", "add emojis", "give it a title", "in past tense", "as a poem", "from her perspective",
             "the same but in bullet points", "again but funnier", "one more please"]
    rows = run([(t, STORY, ASK) for t in edits])
    for text, row in zip(edits, rows, strict=True):
        assert row["dsat"] and "Revision:short_edit" in row["rationale"], (text, row["rationale"])
    code = "Here you go:\n```python\nprint('hi')\n```"
    others = run([("add error handling", code, "print hi in python"), ("in the morning", STORY + " When should she fly?", ASK),
                  ("Add 2 and 2", STORY, ASK), ("make a list of ten fruits", STORY, ASK),
                  ("In post fight interview, Vettori calls out Adesanya", STORY, ASK)])
    for row in others:
        assert "short_edit" not in (row["rationale"] or ""), row


def test_a_counter_claim_with_a_number_the_answer_does_not_hold():
    answer = "The Eiffel Tower is 330 metres tall and was completed in 1887."
    claims = ["It was completed in 1889", "I think it was 1889", "Isn't it 1889?", "actually 1889"]
    rows = run([(t, answer, "how tall is the eiffel tower") for t in claims])
    for text, row in zip(claims, rows, strict=True):
        assert row["dsat"] and "Factual_Error:counter_claim" in row["rationale"], (text, row["rationale"])
    others = run([("It is 330 metres, so how far is that in feet?", answer, "how tall"),
                  ("I think it was 1889", "It was built by Gustave Eiffel's company.", "who built it"),
                  ("it has 3 floors, how many rooms does it have?", answer, "how tall"),
                  ("Write 5 facts about it", answer, "how tall")])
    for row in others:
        assert "counter_claim" not in (row["rationale"] or ""), row


def test_a_long_statement_with_a_new_number_is_a_story_not_a_counter_claim():
    answer = "The Eiffel Tower is 330 metres tall and was completed in 1887."
    story = "I think my grandmother told me once that our old family house was built in 1923 or so"  # 18 words
    row = run([(story, answer, "how tall is the eiffel tower")])[0]
    assert "counter_claim" not in (row["rationale"] or ""), row


def test_asking_where_a_claim_came_from_is_a_factual_challenge():
    rows = run([(t, STORY, ASK) for t in ["source?", "where did you get that", "that doesn't sound right"]])
    for row in rows:
        assert "Factual_Error:where_from" in (row["rationale"] or ""), row
    assert not run([("Where did you get the idea for dragons in stories, historically?", STORY, ASK)])[0]["dsat"]


def test_one_more_time_is_a_retry_and_a_bare_include_goes_to_the_model():
    answer = "Here is a short overview of the topic you asked about, with three options to choose from."
    retry, include = run([("One more time, please.", answer, None), ("include the dates of each battle", answer, None)])
    assert "Revision:try_again" in (retry["rationale"] or ""), retry
    assert "Revision:include_phrase" in include["rationale"] and include["confidence"] < ROUTE_BELOW, include
