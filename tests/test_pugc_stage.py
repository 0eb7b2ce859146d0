"""PUGC stage end to end: accounting, the paper's defaults, real posts and the real tiny engine. Its judge gates:
test_pugc_gates.py."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest
import yaml

from pipeline.config import Source, resolve_params, resolve_role
from pipeline.execute import map_batches
from pipeline.io import StageError, read_table, verify_shards
from stages import pugc
from stages.ingest import ingest_source
from stages.pugc import sample_responses
from stages.pugc_prefilter import minhash_step
from tests.adapter_sources import MAX_BYTES
from tests.pugc_fakes import (
    CFG,
    ENGLISH,
    POSTS,
    ROOT,
    SAMPLING,
    SPANISH,
    FakeEngine,
    check_accounting,
    make_params,
    use_engine,
    write_documents,
)

# --- the stage -----------------------------------------------------------------------------------


@pytest.fixture
def fake_engine(monkeypatch):
    return use_engine(monkeypatch, FakeEngine())


def test_stage_runs_end_to_end_and_accounts_for_every_row(tmp_path, monkeypatch, fake_engine):
    monkeypatch.chdir(tmp_path)
    rows = [
        {"doc_id": f"d{i}", "text": text, "title": f"Post {i}", "source": "posts"}
        for i, text in enumerate(POSTS)
    ]
    rows[1]["text"] += " FAIL"
    rows[2]["text"] += " LEAK"
    rows[3]["text"] += " UNANSWERABLE"
    rows[4]["text"] += " EMPTYREPLY"
    rows[5]["text"] += " CUTOFF"
    rows[6]["text"] += " COPY"
    rows += [
        {"doc_id": "x1", "text": "tiny", "source": "posts"},
        {"doc_id": "x2", "text": SPANISH, "source": "posts"},
        {"doc_id": "z9", "text": ENGLISH, "source": "other_source"},
    ]
    write_documents(tmp_path / "docs", rows)
    params = make_params()
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")

    check_accounting(m, params.pugc)
    assert m["input"] == {"rows": 10, "selected": 9, "sources": ["posts"], "missing_sources": []}
    assert m["prefilter"]["dropped"] == {"other_language": 1, "too_short": 1}
    assert m["prefilter"]["languages"]["es"] == 1 and sum(m["prefilter"]["languages"].values()) == 9
    assert m["queries"]["dropped"] == {"copies_template": 1, "generation_failed": 1, "leaks_source": 1}
    assert m["queries"]["top_errors"] == [["schema: missing 'query'", 1]]
    assert m["query_filter"]["dropped"] == {"not_answerable": 1}
    assert m["sampling"]["dropped"] == {"cut_off": 1, "empty_response": 1}
    assert m["pairs"] == {**m["pairs"], "in": 3, "kept": 3, "dropped": {}}
    # the tiny model's settings are applied, said and recorded; its judge's gates are lowered
    assert m["tiny_overrides"] == {
        "query_filter_threshold": 0.4,
        "min_margin": 0.0001,
        "gates.query_filter": 0.0,
        "gates.scorer": 0.0,
    }
    assert {g["labels"] for g in m["gates"].values()} == {"used, gate lowered"}

    queries = read_table(tmp_path / "out" / "queries", "prompts").to_pylist()
    assert sorted(q["origin_id"] for q in queries) == ["d0", "d4", "d5"]
    texts = {r["doc_id"]: r["text"] for r in rows}
    assert all(
        q["reference"] == f"Post {q['origin_id'][1]}\n\n{texts[q['origin_id']]}" for q in queries
    )  # title + text is the reference
    responses = read_table(tmp_path / "out" / "responses", "responses")
    assert responses.num_rows == 13 and responses["score"].null_count == 0
    assert not any(r["text"].startswith("answer 3:") and "CUTOFF" in r["text"] for r in responses.to_pylist())
    pairs = read_table(tmp_path / "out" / "pairs", "pairs").to_pylist()
    for p in pairs:
        assert p["chosen"][0]["content"].startswith("answer 4:") and p["rejected"][0]["content"].startswith(
            "answer 0:"
        )
        assert p["margin"] == pytest.approx(0.75 * 4) and p["method"] == "pugc" and p["source"] == "posts"
        lineage = json.loads(p["lineage"])
        assert lineage["doc_id"] in ("d0", "d4", "d5")
        assert lineage["chosen_finish_reason"] == lineage["rejected_finish_reason"] == "stop"
    for sub in ("queries", "responses", "pairs"):
        assert verify_shards(tmp_path / "out" / sub) == []
    # K samples per query, one request each: no policy prompt is ever sent twice.
    policy = [
        (c, n)
        for kind, contents, n in fake_engine.calls
        if kind == "generate"
        for c in contents
        if "<<<" not in c
    ]
    assert len(policy) == len({c for c, _ in policy}) == 3 and {n for _, n in policy} == {5}
    assert not (tmp_path / ".prefpipe" / "checkpoints" / "pugc" / "scoring").exists()

    # Identical inputs and params give byte-identical shards.
    first = {p.name: p.read_bytes() for p in (tmp_path / "out" / "pairs").glob("*.parquet")}
    pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "pairs").glob("*.parquet")} == first


def test_a_one_word_query_is_counted_as_short_query_with_the_gates_lowered(tmp_path, monkeypatch, fake_engine):
    """The generator writes "What?" for one document; the samples' gates are lowered (tiny overrides), and main
    kept the query, sampled answers to it and paired them. It is dropped at step 2 and counted by reason."""
    monkeypatch.chdir(tmp_path)
    rows = [{"doc_id": f"d{i}", "text": text, "title": f"Post {i}", "source": "posts"} for i, text in enumerate(POSTS)]
    rows[1]["text"] += " SHORTQ"
    write_documents(tmp_path / "docs", rows)
    params = make_params()
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    check_accounting(m, params.pugc)
    assert m["queries"]["dropped"] == {"short_query": 1}
    queries = read_table(tmp_path / "out" / "queries", "prompts").to_pylist()
    assert sorted(q["origin_id"] for q in queries) == [f"d{i}" for i in range(len(POSTS)) if i != 1]


def test_unknown_sources_are_an_error_that_names_them(tmp_path):
    write_documents(tmp_path / "docs", [{"doc_id": "d", "text": ENGLISH, "source": "reddit"}])
    with pytest.raises(
        StageError, match=r"no documents from pugc.sources \['posts'\]; sources present: \['reddit'\]"
    ):
        pugc.main(make_params(), documents=tmp_path / "docs", out=tmp_path / "out")


def test_a_source_that_wrote_no_documents_is_not_blamed_on_ingest_sources(tmp_path):
    """A new user's walk-through: with `sample_posts` pointing at an empty file, the stage said "Fix pugc.sources
    in params.yaml or add the source to ingest.sources", though params validation had checked both (a name that
    is no ingest source, or one of another kind, is a params error)."""
    write_documents(tmp_path / "docs", [{"doc_id": "d", "text": ENGLISH, "source": "reddit"}])
    with pytest.raises(StageError) as e:
        pugc.main(make_params(), documents=tmp_path / "docs", out=tmp_path / "out")
    assert str(e.value).endswith(f"sources present: ['reddit']: ingest wrote no documents of them (see "
                                 f"{tmp_path / 'details.json'}: an empty file?), or has not run since they were "
                                 "added to ingest.sources: run `dvc repro`")


# --- defaults: the paper's, the tiny model's only through tiny_overrides ----------------------------


def test_real_model_defaults_follow_the_paper_and_tiny_gets_its_overrides():
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    real = resolve_params({**data, "llm": {**data["llm"], "model": "HuggingFaceTB/SmolLM2-135M-Instruct"}})
    cfg = real.pugc
    assert real.applied_overrides("pugc") == {}
    assert (cfg.query_filter_threshold, cfg.min_margin) == (0.5, 0.5)  # p(True) >= 0.5; half a point of 1-5
    assert (cfg.gates.query_filter, cfg.gates.scorer) == (0.75, 0.75)
    # answers get the full budget; a query (one JSON sentence) a short one
    assert (
        resolve_role(real.llm, cfg.roles.policy).sampling.max_new_tokens == real.llm.sampling.max_new_tokens
    )
    assert real.llm.sampling.max_new_tokens >= 1024
    assert resolve_role(real.llm, cfg.roles.generator).sampling.max_new_tokens == 128
    tiny = resolve_params(data).pugc
    assert (tiny.query_filter_threshold, tiny.min_margin, tiny.gates.query_filter, tiny.gates.scorer) == (
        0.4,
        0.0001,
        0.0,
        0.0,
    )


def test_cut_off_and_empty_answers_are_dropped_before_scoring():
    samples = pl.DataFrame(
        {
            "prompt_id": ["p"] * 3,
            "sample_index": [0, 1, 2],
            "text": ["The burr grinder, because", "ok", " "],
            "finish_reason": ["length", "stop", "stop"],
        }
    )
    assert pugc.response_filter(samples)["drop"].to_list() == ["cut_off", None, "empty_response"]


def test_an_answer_that_shows_nothing_is_empty_too():
    """U+FFFD alone (bytes the tokenizer could not decode) or zero-width marks alone say nothing: dropped here,
    not paired and then removed from the release as unprintable_text (the tiny model's "\\ufffd" answers did)."""
    samples = pl.DataFrame({"prompt_id": ["p"] * 4, "sample_index": [0, 1, 2, 3],
                            "text": ["\ufffd", "\u200b\u200b", "\ufffd fine, then.", "ok"],
                            "finish_reason": ["stop"] * 4})
    assert pugc.response_filter(samples)["drop"].to_list() == ["empty_response", "empty_response", None, None]
    batch = pa.table({"prompt_id": ["p"], "query": ["Which grinder? CUTOFF"]})
    out = sample_responses(batch, FakeEngine(), k=4, sampling=SAMPLING)
    assert out["finish_reason"].to_pylist() == ["stop", "stop", "stop", "length"]


# --- real posts ----------------------------------------------------------------------------------


def real_documents(real, n_tldr: int, n_se_rows: int) -> list[dict]:
    """Reddit TL;DR posts and Stack Exchange questions through the ingest adapters (the first N records)."""
    sources = [
        Source(
            name="tldr",
            kind="documents",
            path=str(real / "dove" / "data" / "tldr" / "test.json"),
            format="documents",
            mapping={"text": "instruction", "id": "instruction_id"},
            limit=n_tldr,
        ),
        Source(
            name="coffee",
            kind="documents",
            path=str(real / "stackexchange_coffee" / "Posts.xml"),
            format="stackexchange",
            mapping={},
            limit=n_se_rows,
        ),
    ]
    return [row for src in sources for row in ingest_source(src, MAX_BYTES).rows["documents"]]


def test_real_posts_flow_through_every_step(tmp_path, monkeypatch, real, fake_engine):
    monkeypatch.chdir(tmp_path)
    docs = real_documents(real, 40, 80)  # 40 posts + the questions among the first 80 Posts.xml rows
    docs.append({**docs[0], "doc_id": "zz-repost"})  # a verbatim repost
    write_documents(tmp_path / "docs", docs)
    params = make_params(sources=["tldr", "coffee"])
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    check_accounting(m, params.pugc)
    assert m["prefilter"]["dropped"]["exact_duplicate"] == 1
    assert m["prefilter"]["dropped"]["too_short"] >= 1  # some coffee questions are one-liners
    assert "other_language" not in m["prefilter"]["dropped"]  # both sources are English
    assert m["pairs"]["kept"] == m["query_filter"]["kept"] > 30


@pytest.mark.ray
def test_minhash_signatures_are_identical_on_ray_workers(ray_cluster, real):
    # Word hashes must not depend on the process (a per-process hash seed would break dedup on a cluster).
    docs = pl.DataFrame(real_documents(real, 24, 1)).to_arrow()  # 24 posts + question 1
    local = make_params().execution.model_copy(update={"batch_size": 8})
    kwargs = {"shingle_words": CFG.shingle_words, "num_perm": CFG.minhash_perms}
    here = map_batches(docs, minhash_step, execution=local, fn_kwargs=kwargs)
    there = map_batches(
        docs, minhash_step, execution=local.model_copy(update={"backend": "ray"}), fn_kwargs=kwargs
    )
    assert here["signature"].equals(there["signature"]) and here.num_rows == 25


# --- the real engine -----------------------------------------------------------------------------


# Shorter generations keep these tests fast on a CPU; prompts are the real ones.
SHORT_OUTPUTS = {
    "generator": {"sampling": {"max_new_tokens": 24}},
    "policy": {"sampling": {"max_new_tokens": 16}},
    "judge": {"sampling": {"max_new_tokens": 12}},
}


def test_real_posts_with_the_tiny_model(tmp_path, monkeypatch, real):
    """Reddit and Stack Exchange posts through every step with the real (random-weights) engine."""
    monkeypatch.chdir(tmp_path)
    docs = real_documents(real, 1, 6)  # 1 TL;DR post + the questions among the first 6 Posts.xml rows
    docs.append({**docs[0], "doc_id": "zz-repost"})  # a verbatim repost
    write_documents(tmp_path / "docs", docs)
    params = make_params(sources=["tldr", "coffee"], responses_per_query=2, roles=SHORT_OUTPUTS)
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")

    check_accounting(m, params.pugc)
    assert m["input"]["selected"] == len(docs) and m["prefilter"]["dropped"]["exact_duplicate"] == 1
    assert m["query_filter"]["kept"] > 0 and 0 < m["query_filter"]["p_true_mean"] < 1
    # a diagnostic to 6 decimals: CPU thread counts move p_true in its last float bits (docs/reliability.md)
    assert m["query_filter"]["p_true_mean"] == round(m["query_filter"]["p_true_mean"], 6)
    responses = read_table(tmp_path / "out" / "responses", "responses").to_pylist()
    assert len(responses) == m["scoring"]["kept"] > 0
    for r in responses:
        dist = json.loads(r["detail"])["distribution"]
        assert sum(dist.values()) == pytest.approx(1, abs=1e-5) and 1 <= r["score"] <= 5
        assert r["score"] == pytest.approx(sum(int(k) * p for k, p in dist.items()), abs=1e-4)
    pairs = read_table(tmp_path / "out" / "pairs", "pairs").to_pylist()
    assert len(pairs) == m["pairs"]["kept"]
    assert all(p["score_chosen"] - p["score_rejected"] >= params.pugc.min_margin for p in pairs)


def test_sampled_scoring_with_the_tiny_model(tmp_path, monkeypatch, real):
    monkeypatch.chdir(tmp_path)
    write_documents(tmp_path / "docs", real_documents(real, 1, 1))
    params = make_params(
        sources=["tldr", "coffee"],
        responses_per_query=2,
        scoring="sampled",
        n_judgments=2,
        roles=SHORT_OUTPUTS,
    )
    m = pugc.main(params, documents=tmp_path / "docs", out=tmp_path / "out")
    check_accounting(m, params.pugc)
    details = [
        json.loads(r["detail"]) for r in read_table(tmp_path / "out" / "responses", "responses").to_pylist()
    ]
    assert details and all(len(d["votes"]) + d["failures"] == 2 and d["votes"] for d in details)
