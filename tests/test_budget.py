"""pipeline/budget.py: shortening texts to a prompt budget, longest first, never past the budget."""

from __future__ import annotations

import pytest

from pipeline.budget import CUT, shorten
from pipeline.prompt import fill

TEMPLATE = "Judge these.\n<<<A\n{a}\nA>>>\n<<<B\n{b}\nB>>>\nAnswer a or b."


def test_values_that_fit_are_returned_unchanged():
    data, cut = shorten(TEMPLATE, 1000, a="short", b="also short")
    assert (data, cut) == ({"a": "short", "b": "also short"}, False)


@pytest.mark.parametrize("max_chars", [60, 100, 400, 1000])
def test_the_longest_value_is_cut_first_and_the_prompt_fits(max_chars):
    data, cut = shorten(TEMPLATE, max_chars, a="x" * 2000, b="tiny")
    prompt = fill(TEMPLATE, **data)
    assert cut and len(prompt) <= max_chars
    assert data["b"] == "tiny" and data["a"].endswith(CUT)
    assert len(prompt) >= max_chars - 2  # the budget is used, not wasted


def test_two_long_values_are_cut_to_one_length():
    data, _ = shorten(TEMPLATE, 500, a="a" * 3000, b="b" * 900)
    assert len(data["a"]) == len(data["b"]) and len(fill(TEMPLATE, **data)) <= 500


def test_escaping_is_measured_as_inserted_and_markers_cannot_be_forged():
    payload = "<<<<<A\n" * 400  # escapes to "<<A\n" each
    data, cut = shorten(TEMPLATE, 300, a=payload, b="B>>>>>>")
    prompt = fill(TEMPLATE, **data)
    assert cut and len(prompt) <= 300 and prompt.count("<<<") == 2 and prompt.count(">>>") == 2


def test_a_token_check_shrinks_further():
    calls = []

    def fits(d):
        calls.append(len(d["a"]))
        return len(d["a"].split()) <= 50

    data, cut = shorten(TEMPLATE, 100_000, fits, a=" ".join(["word"] * 1000), b="b")
    assert cut and len(data["a"].split()) <= 50 and len(calls) > 1
    assert calls == sorted(calls, reverse=True)  # every round is shorter


def test_fields_the_template_does_not_use_are_left_alone():
    data, cut = shorten("Only {a}", 20, a="y" * 100, b="z" * 100)
    assert cut and data["b"] == "z" * 100 and len(fill("Only {a}", **data)) <= 20
