"""The second, blind labelling of WildChat test turns (which turns it covers, its labels' shape) and
bench/signals_agreement.py (Cohen's kappa, the pairing with the first labels, README tables current)."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import polars as pl
import pytest

from stages.wildfeedback_cues import DSAT_CATEGORIES, SAT_CATEGORIES
from tests.wildfeedback_fixture import WILDCHAT_SECOND_FIXTURE, load_wildchat, load_wildchat_second

N_CONVERSATIONS, MIN_TURNS = 128, 420


@pytest.fixture(scope="module")
def agreement(root):
    spec = importlib.util.spec_from_file_location("signals_agreement", root / "bench" / "signals_agreement.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_second_labels_cover_whole_test_conversations_picked_by_hash(real):
    """Every row is a `test` turn of the first fixture, once; its conversations are the first 128 test
    conversations by sha256(conversation_id) hex, the fewest whose turns reach 420, with all their turns."""
    second, first = load_wildchat_second(), load_wildchat(real)
    keys = list(second.select("conversation_id", "user_turn").iter_rows())
    assert len(keys) == len(set(keys)), "a turn is labelled twice"
    assert keys == sorted(keys), "rows are not in (conversation_id, user_turn) order"
    assert set(second["source"]) == {"wildchat_sample"}
    test = first.filter(pl.col("split") == "test")
    by_hash = sorted(set(test["conversation_id"]), key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    turns = dict(test.group_by("conversation_id").len().iter_rows())
    chosen = by_hash[:N_CONVERSATIONS]
    assert sum(turns[c] for c in chosen[:-1]) < MIN_TURNS <= sum(turns[c] for c in chosen)
    assert set(second["conversation_id"]) == set(chosen)
    expected = test.filter(pl.col("conversation_id").is_in(chosen)).select("conversation_id", "user_turn")
    assert set(keys) == set(expected.iter_rows()), "not all (or not only) the chosen conversations' labelled turns"


def test_second_labels_are_ids_and_rubric_labels_only():
    rows = load_wildchat_second()
    assert (rows["dsat"] == (rows["dsat_categories"].list.len() > 0)).all()
    assert (rows["sat"] == (rows["sat_categories"].list.len() > 0)).all()
    assert set(rows["dsat_categories"].explode().drop_nulls()) <= set(DSAT_CATEGORIES)
    assert set(rows["sat_categories"].explode().drop_nulls()) <= set(SAT_CATEGORIES)
    first = json.loads(WILDCHAT_SECOND_FIXTURE.read_text().splitlines()[0])
    assert set(first) == {"source", "conversation_id", "user_turn", "sat", "dsat", "sat_categories",
                          "dsat_categories", "ambiguous"}


def test_kappa(agreement):
    s = pl.Series
    assert agreement.kappa(s([True, False, True, False]), s([True, False, True, False])) == 1.0
    # observed 0.75, chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5 -> (0.75 - 0.5) / 0.5
    assert agreement.kappa(s([True, True, False, False]), s([True, False, False, False])) == pytest.approx(0.5)
    assert agreement.kappa(s([True, False]), s([False, True])) == pytest.approx(-1.0)
    assert agreement.kappa(s([False, False]), s([False, False])) is None  # chance agreement is total


def test_pairing_fails_on_a_turn_the_first_labels_lack(agreement, real, monkeypatch):
    bogus = load_wildchat_second().head(2).with_columns(
        pl.Series("conversation_id", ["wildchat_not-a-conversation", "wildchat_not-a-conversation"]))
    monkeypatch.setattr(agreement, "load_wildchat_second", lambda: bogus)
    with pytest.raises(KeyError, match="wildchat_not-a-conversation"):
        agreement.paired(real)


def test_pairing_keeps_both_labellings(agreement, real):
    frame = agreement.paired(real)
    second = load_wildchat_second()
    assert frame.height == second.height
    assert frame["b_dsat"].to_list() == second["dsat"].to_list()
    assert frame.filter(pl.col("dsat") != pl.col("b_dsat")).height > 0  # two labellings, not one read twice


def test_readme_tables_are_current(agreement, root):
    """The tables between the signals-agreement markers are bench/signals_agreement.py's output."""
    s = agreement.scores()
    assert agreement.current(root / "docs" / "wildfeedback_signals.md") == agreement.docs_block(s), \
        "run bench/signals_agreement.py --write"
    assert agreement.current(root / "bench" / "README.md") == agreement.bench_block(s), \
        "run bench/signals_agreement.py --write"
