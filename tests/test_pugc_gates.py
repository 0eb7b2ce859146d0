"""PUGC's judge gates: the query filter's and the scorer's probes, a judge at chance stopping the stage before
any query is written, withheld gates' labels. The stage end to end, defaults and real posts: test_pugc_stage.py."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.gates import JudgeGateError, check_gate
from pipeline.io import read_table
from stages import pugc, pugc_judge
from tests.pugc_fakes import (
    POSTS,
    FakeEngine,
    make_params,
    use_engine,
    write_documents,
)

# --- judge gates ---------------------------------------------------------------------------------


def test_query_filter_gate_grades_decisions_at_the_threshold():
    probes = pugc_judge.query_filter_probes()
    assert probes["answerable"].sum() * 2 == probes.height == 24  # balanced: chance is 0.5
    assert set(probes.filter(pl.col("kind") == "placeholder")["query"]) == {"<the query>"}
    # what the issue measured with a 135M model: p(True) 0.86-0.88 whatever the query
    flat = probes.with_columns(p_true=pl.lit(0.87))
    correct, detail, contrasts = pugc_judge.grade_query_filter(flat, 0.5)
    assert sum(correct) / len(correct) == 0.5 and detail["kept"] == {
        "placeholder": 6,
        "relevant": 12,
        "unrelated": 6,
    }
    assert contrasts == {"relevant_vs_placeholder": 0.5, "relevant_vs_unrelated": 0.5}
    sharp = probes.with_columns(p_true=pl.when(pl.col("answerable")).then(0.8).otherwise(0.3))
    assert all(pugc_judge.grade_query_filter(sharp, 0.5)[0])
    assert set(pugc_judge.grade_query_filter(sharp, 0.5)[2].values()) == {1.0}
    assert sum(pugc_judge.grade_query_filter(sharp, 0.9)[0]) == 12  # a threshold above every p(True)


def test_scorer_gate_counts_good_over_bad_by_the_margin_in_both_directions():
    probes = pugc_judge.scorer_probes()
    assert probes.height == 24 and set(probes["kind"]) == {"good", "partial", "contradicting", "off_topic"}
    # the issue's expected scores: good 2.95, partial 2.92, contradicting 2.92, off-topic 2.82
    issue = {"good": 2.95, "partial": 2.92, "contradicting": 2.92, "off_topic": 2.82}
    flat = probes.with_columns(score=pl.col("kind").replace_strict(issue))
    correct, detail, _ = pugc_judge.grade_scorer(flat, 0.5)
    assert len(correct) == 36 and sum(correct) == 18  # every pair within the margin: chance
    assert detail["good_wins"] == detail["bad_wins"] == 0
    assert sum(pugc_judge.grade_scorer(flat, 0.05)[0]) == 18 + 6  # off-topic is 0.13 lower
    inverted = probes.with_columns(score=pl.when(pl.col("kind") == "good").then(1.0).otherwise(5.0))
    assert sum(pugc_judge.grade_scorer(inverted, 0.5)[0]) == 0
    with pytest.raises(JudgeGateError, match=r"18 of 36 probes right.*pugc.gates.scorer=0.75"):
        check_gate("pugc", "scorer", "m", correct, min_accuracy=0.75, key="pugc.gates.scorer")


@pytest.mark.parametrize("measure", ["chars", "words"])
def test_a_scorer_that_scores_by_length_alone_is_at_chance_on_its_probes(measure):
    """Verbosity is not discrimination: with only the contradicting answers length-balanced, a judge that
    scored longer answers higher got 30 of 36 probes (0.83) and passed the 0.75 gate (the random-weights
    tiny model, whose expected scores drift with length, got 0.78)."""
    probes = pugc_judge.scorer_probes()
    size = pl.col("text").str.len_chars() if measure == "chars" else pl.col("text").str.split(" ").list.len()
    for direction in (1, -1):
        by_length = probes.with_columns(score=(size * direction).cast(pl.Float64))
        correct, detail, _ = pugc_judge.grade_scorer(by_length, 0.5)
        assert sum(correct) / len(correct) == 0.5, (measure, direction, detail)
        assert detail["good_wins"] == detail["bad_wins"] == 9


def test_a_query_filter_that_only_drops_the_placeholder_fails_its_gate():
    """Relevance is the filter's job: one that drops "<the query>" but keeps every unrelated query gets 18 of 24
    probes right (0.75), which passed the 0.75 gate; the gate reads the weaker distinction (0.5)."""
    probes = pugc_judge.query_filter_probes()
    blind = probes.with_columns(p_true=pl.when(pl.col("kind") == "placeholder").then(0.1).otherwise(0.9))
    correct, _, contrasts = pugc_judge.grade_query_filter(blind, 0.5)
    assert sum(correct) == 18 and contrasts == {"relevant_vs_placeholder": 1.0, "relevant_vs_unrelated": 0.5}
    with pytest.raises(JudgeGateError, match=r"18 of 24 probes right \(weakest distinction relevant_vs_unrelated: "
                                             r"accuracy 0.50.*pugc.gates.query_filter=0.75"):
        check_gate("pugc", "query_filter", "m", correct, contrasts=contrasts, min_accuracy=0.75,
                   key="pugc.gates.query_filter")
    report = check_gate("pugc", "query_filter", "m", correct, contrasts=contrasts, min_accuracy=0.75,
                        key="pugc.gates.query_filter", on_failure="withhold")
    assert (report["accuracy"], report["weakest"], report["passed"]) == (0.5, "relevant_vs_unrelated", False)


def test_a_scorer_blind_to_contradictions_fails_its_gate():
    """PUGC scores answers against the document: a scorer that gives a contradicting answer the good one's
    score while marking partial and off-topic answers down gets 30 of 36 (0.83) and passed the 0.75 gate."""
    probes = pugc_judge.scorer_probes()
    blind = probes.with_columns(score=pl.when(pl.col("kind").is_in(["good", "contradicting"])).then(4.0).otherwise(2.0))
    correct, _, contrasts = pugc_judge.grade_scorer(blind, 0.5)
    assert sum(correct) == 30
    assert contrasts == {"good_vs_contradicting": 0.5, "good_vs_off_topic": 1.0, "good_vs_partial": 1.0}
    report = check_gate("pugc", "scorer", "m", correct, contrasts=contrasts, min_accuracy=0.75,
                        key="pugc.gates.scorer", on_failure="withhold")
    assert (report["accuracy"], report["weakest"], report["passed"]) == (0.5, "good_vs_contradicting", False)


def test_query_filter_keeps_a_query_at_the_threshold_and_its_gate_grades_it_so():
    """p(True) >= query_filter_threshold keeps a query, in the stage and in the gate alike."""
    queries = pl.DataFrame({"prompt_id": ["at", "below"], "p_true": [0.5, 0.4999]})
    assert pugc_judge.query_filter(queries, 0.5)["drop"].to_list() == [None, "not_answerable"]
    probes = pugc_judge.query_filter_probes()
    at = probes.with_columns(p_true=pl.when(pl.col("answerable")).then(0.5).otherwise(0.4999))
    correct, detail, _ = pugc_judge.grade_query_filter(at, 0.5)
    assert all(correct) and sum(detail["kept"].values()) == 12


def test_scorer_gate_margin_is_inclusive_and_an_unscored_answer_is_wrong_both_ways():
    s = pl.DataFrame({"probe": ["a"] * 4, "kind": ["good", "partial", "contradicting", "off_topic"],
                      "score": [4.0, 3.5, None, 4.5]})
    correct, detail, _ = pugc_judge.grade_scorer(s, 0.5)
    # sorted by kind: contradicting (unscored), off_topic (bad wins by exactly the margin), partial (good wins so)
    assert correct == [False, False, False, False, True, True]
    assert (detail["good_wins"], detail["bad_wins"], detail["unscored"]) == (1, 1, 1)


def _gate_docs(tmp_path) -> None:
    rows = [{"doc_id": f"d{i}", "text": t, "title": None, "source": "posts"} for i, t in enumerate(POSTS[:3])]
    write_documents(tmp_path / "docs", rows)


def test_a_discriminating_judge_passes_its_gates_before_any_query_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gate_docs(tmp_path)
    engine = use_engine(monkeypatch, FakeEngine("sharp"))
    m = pugc.main(
        make_params(gates={"query_filter": 0.75, "scorer": 0.75}),
        documents=tmp_path / "docs",
        out=tmp_path / "out",
    )
    qf, sc = m["gates"]["query_filter"], m["gates"]["scorer"]
    assert (qf["accuracy"], qf["passed"], qf["lowered"], qf["labels"]) == (1.0, True, False, "used")
    assert (sc["accuracy"], sc["probes"], sc["labels"]) == (1.0, 36, "used")
    assert qf["detail"]["p_true_mean"] == {"placeholder": 0.1, "relevant": 0.9, "unrelated": 0.1}
    assert sc["detail"]["score_mean"]["good"] > sc["detail"]["score_mean"]["contradicting"]
    assert m["pairs"]["kept"] == 3
    kinds = [
        ("query" if "Write the one question" in c[0] else "other") if k == "generate" else k
        for k, c, _ in engine.calls
    ]
    assert kinds.index("query") > kinds.index("choose")  # the probes ran first


def test_the_query_filter_is_asked_of_the_model_that_wrote_the_queries(tmp_path, monkeypatch):
    """As the paper: its LLM writes each reader query and then filters it ("does the document answer it?"),
    and a reward model scores the answers. So the True/False filter and its gate go to the generator role,
    the 1-5 scores and theirs to the judge (on main's code the judge did both)."""
    import pipeline.llm

    monkeypatch.chdir(tmp_path)
    _gate_docs(tmp_path)
    engines = {m: FakeEngine("sharp") for m in ("org/writer", "org/policy", "org/judge")}
    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engines[cfg.model], raising=False)
    roles = {"generator": {"model": "org/writer"}, "policy": {"model": "org/policy"}, "judge": {"model": "org/judge"}}
    m = pugc.main(make_params(roles=roles), documents=tmp_path / "docs", out=tmp_path / "out")

    def asked(model: str, n_options: int) -> int:
        return sum(len(c) for k, c, n in engines[model].calls if k == "choose" and n == n_options)

    assert asked("org/writer", 2) == 24 + 3 and asked("org/judge", 2) == 0  # probes + the 3 queries
    assert asked("org/judge", 5) > 0 and asked("org/writer", 5) == 0
    assert (m["gates"]["query_filter"]["model"], m["gates"]["scorer"]["model"]) == ("org/writer", "org/judge")
    assert m["query_filter"]["kept"] == 3 and m["pairs"]["kept"] == 3


def test_a_judge_at_chance_stops_the_stage_before_any_query_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gate_docs(tmp_path)
    engine = use_engine(monkeypatch, FakeEngine("flat"))
    params = make_params(gates={"query_filter": 0.75, "scorer": 0.75})
    with pytest.raises(
        JudgeGateError, match=r"query_filter judge .* 12 of 24 probes right.*pugc.gates.query_filter"
    ):
        pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert not any(k == "generate" for k, _, _ in engine.calls)
    assert not (tmp_path / "out" / "pairs").exists()


def test_withheld_gates_emit_none_of_that_judges_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _gate_docs(tmp_path)
    engine = use_engine(monkeypatch, FakeEngine("flat"))
    params = make_params("withhold", gates={"query_filter": 0.75, "scorer": 0.75})
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert {g["labels"] for g in m["gates"].values()} == {"withheld"}
    # no query would be kept on a withheld filter's word: none is generated
    assert m["queries"]["documents_skipped_gate_withheld"] == 3 and m["query_filter"]["in"] == 0
    assert not any(k == "generate" for k, _, _ in engine.calls) and m["pairs"]["kept"] == 0
    assert read_table(tmp_path / "out" / "queries", "prompts").num_rows == 0

    # the filter discriminates, the scorer does not: queries are kept, nothing is sampled or scored
    class FlatScorer(FakeEngine):
        def choose(self, prompts, options):
            return FakeEngine.choose(
                self if options == ["True", "False"] else FakeEngine("flat"), prompts, options
            )

    engine = use_engine(monkeypatch, FlatScorer("sharp"))
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert (m["gates"]["query_filter"]["passed"], m["gates"]["scorer"]["passed"]) == (True, False)
    assert m["query_filter"]["kept"] == 3 and m["sampling"]["in"] == 0
    assert m["queries"]["documents_skipped_gate_withheld"] == 0
    assert m["pairs"] == {**m["pairs"], "in": 3, "kept": 0, "dropped": {"gate_withheld": 3}}
    assert read_table(tmp_path / "out" / "responses", "responses").num_rows == 0
    assert not any(k == "generate" and "<<<" not in c[0] for k, c, _ in engine.calls)  # no policy call
