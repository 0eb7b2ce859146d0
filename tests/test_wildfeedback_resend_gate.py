"""Which earlier requests the resend rule compares a turn with (the gate on the request's first words), and
the extended request that supplies what the answer said it lacked (a follow-up, not a resend)."""

from __future__ import annotations

from tests.wildfeedback_fixture import detect_turns

GEAR = ("the optimal amount of gear inches for track cycling that uses a gear ratio with a prime or odd number for the "
        "chainring and rear sprocket.")


run = detect_turns


def test_a_long_request_with_a_new_opening_verb_is_a_resend_but_a_swapped_number_is_not():
    resent, series = run([
        ("Assess " + GEAR, "To evaluate the optimal gear inches ...", "Evaluate " + GEAR),
        ("Assess " + GEAR.replace("a prime", "a 53 tooth"), "To evaluate ...", "Evaluate " + GEAR.replace("a prime", "a 47 tooth")),
    ])
    assert resent["dsat"] and "Revision:resend" in resent["rationale"], resent
    assert not series["dsat"], series


def test_a_chinese_request_narrowed_inside_its_first_phrase_is_a_resend_but_a_new_topic_is_not():
    request = "请写一首关于秋天落叶的短诗，要押韵"
    narrowed, new_topic = run([
        ("请写一首关于秋天的落叶的短诗，要押韵，只写四行", "秋风起，叶飘零……", request),
        ("请写一首关于春天花开的短诗，要押韵", "秋风起，叶飘零……", request),
    ])
    assert narrowed["dsat"] and "Revision:resend" in narrowed["rationale"], narrowed
    assert not new_topic["dsat"], new_topic


def test_a_request_completed_after_the_answer_said_what_it_lacked_is_not_a_resend():
    request = "Please find attached the unredeemed list. Kindly remind your patron the last day for redemption will"
    text = request + " be tomorrow, 27 Apr by 9pm\n\nRephrase the above sentence"
    supplied, resent = run([
        (text, "Unfortunately, there is no attached file for me to refer to. The sentence seems incomplete.", request),
        (text, "Dear patron, here is the unredeemed list; the last day for redemption is soon.", request),
    ])
    assert not supplied["dsat"], supplied
    assert resent["dsat"] and "Revision:resend" in resent["rationale"], resent
