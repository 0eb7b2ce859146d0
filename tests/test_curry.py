"""Curry-DPO (stages/curry.py): pairing, tie dropping, both level schemes, output order, and counts on
real OpenAssistant and Stack Exchange data."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from pipeline.config import Curry, Execution
from pipeline.io import read_table, verify_shards, write_shards
from pipeline.records import check_table, to_table
from stages.curry import build_pairs, curriculum_files, run

OASST = Path("oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl")
POSTS = Path("stackexchange_coffee/Posts.xml")


def cfg(**kw) -> Curry:
    base = dict(inputs=[{"prompts": "p", "responses": "r", "scores": "rated"}], pairing="best_vs_rest", min_gap=0.0,
                relative_min_gap=0.05, levels="per_prompt", n_levels=3, seed=0, histogram_bins=4)
    return Curry(**{**base, **kw})


def execution() -> Execution:
    return Execution(backend="local", batch_size=4096, checkpoint_rows=2048, max_reject_fraction=0.5,
                     ray_address=None, num_cpus_per_task=1, target_shard_bytes=1 << 28, row_group_bytes=1 << 26, spill_bytes=1 << 25,
                     on_gate_failure="error")


def prompt(pid: str, text: str | None = None, source: str = "hand") -> dict:
    return {"prompt_id": pid, "messages": [{"role": "user", "content": text or f"question {pid}"}],
            "source": source, "origin_id": pid}


def resp(pid: str, rid: str, score: float | None, text: str | None = None, scorer: str = "hand") -> dict:
    return {"prompt_id": pid, "response_id": rid, "text": text if text is not None else f"answer {rid}",
            "generator": "human", "score": score, "scorer": scorer, "detail": None}


def frames(prompts: list[dict], responses: list[dict], input_set: int = 0) -> tuple[pa.Table, pa.Table]:
    """Contract tables as ``load_inputs`` gives them (``input`` = the input set's position)."""
    p = to_table(prompts, "prompts").select(["prompt_id", "messages", "source"])
    r = check_table(pl.DataFrame(responses, schema_overrides={"score": pl.Float64, "detail": pl.String}).to_arrow(),
                    "responses")
    return (p.append_column("input", pa.array([input_set] * p.num_rows, pa.int32())),
            r.append_column("input", pa.array([input_set] * r.num_rows, pa.int32())))


def build(prompts: list[dict], responses: list[dict], **kw):
    table, metrics = build_pairs(*frames(prompts, responses), cfg(**kw))
    return table.to_pylist(), metrics


def xxh3_key(*values: str, seed: int = 0) -> int:
    """pipeline.ids.hash64 of ``values``, by hand: xxh3-64 of "<UTF-8 length>:<value>" per value."""
    return xxhash.xxh3_64_intdigest("".join(f"{len(v.encode())}:{v}" for v in values).encode(), seed=seed)


def pair_hash(prompt_id: str, scorer: str, chosen: str, rejected: str) -> int:
    """The documented pair hash (docs/curry.md): xxh3-64 of the three 8-byte big-endian hashes."""
    parts = (xxh3_key(prompt_id, scorer), xxh3_key(chosen), xxh3_key(rejected))
    return xxhash.xxh3_64_intdigest(b"".join(h.to_bytes(8, "big") for h in parts))


def xxh3_hex(prompt_id: str, scorer: str, chosen: str, rejected: str) -> str:
    return f"{pair_hash(prompt_id, scorer, chosen, rejected):016x}"


def ids(rows: list[dict]) -> list[tuple[str, str, int]]:
    """(chosen response, rejected response, level) per pair, from the lineage."""
    out = []
    for r in rows:
        lin = json.loads(r["lineage"])
        out.append((lin["chosen_id"], lin["rejected_id"], r["level"]))
    return out


# --- hand-written cases ------------------------------------------------------------------------------

PAPER = [resp("p1", "a", 9), resp("p1", "b", 7), resp("p1", "c", 4), resp("p1", "d", 1)]


def test_best_vs_rest_paper_levels_and_row_contents():
    rows, m = build([prompt("p1")], PAPER)
    # The paper: (R1,R4) easy, (R1,R3) medium, (R1,R2) hard, written in that order.
    assert ids(rows) == [("a", "d", 0), ("a", "c", 1), ("a", "b", 2)]
    first = rows[0]
    assert first["prompt"] == [{"role": "user", "content": "question p1"}]
    assert first["chosen"] == [{"role": "assistant", "content": "answer a"}]
    assert first["rejected"] == [{"role": "assistant", "content": "answer d"}]
    assert (first["score_chosen"], first["score_rejected"], first["margin"]) == (9.0, 1.0, 8.0)
    assert (first["method"], first["source"], first["noisy"], first["label_smoothing"]) == ("curry", "hand", False, 0.0)
    lin = json.loads(first["lineage"])
    assert lin == {"stage": "curry", "prompt_id": "p1", "scorer": "hand", "chosen_id": "a", "rejected_id": "d",
                   "fingerprint": lin["fingerprint"]} and len(lin["fingerprint"]) == 16
    # Pinned: pair_id = the documented xxh3 pair hash (docs/curry.md), recomputed here with the Python
    # xxhash package, independently of polars.
    assert [r["pair_id"] for r in rows] == ["b644fa090aca68bd", "a7ecf65aca68a57c", "9bc3e0e83f7b72b2"]
    assert [r["pair_id"] for r in rows] == [xxh3_hex("p1", "hand", "a", x) for x in "dcb"]
    assert m["pairs"]["per_level"] == {"0": 1, "1": 1, "2": 1}
    assert m["gap"]["min"] == 2.0 and m["gap"]["max"] == 8.0 and sum(m["gap"]["histogram"]["counts"]) == 3


def test_all_pairing_uses_every_positive_gap():
    rows, m = build([prompt("p1")], PAPER, pairing="all")
    got = sorted(ids(rows))
    # Gaps: a-d 8, b-d 6, a-c 5, b-c 3, c-d 3, a-b 2 -> 5 distinct gaps over 3 levels: r * 3 // 5.
    assert got == sorted([("a", "d", 0), ("b", "d", 0), ("a", "c", 1), ("b", "c", 1), ("c", "d", 1), ("a", "b", 2)])
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    assert [r["level"] for r in rows] == sorted(r["level"] for r in rows)
    assert m["pairs"]["candidates"] == 6 and m["pairs"]["written"] == 6


def test_ties_are_dropped_never_paired():
    responses = [resp("p1", "b", 5), resp("p1", "a", 5), resp("p1", "c", 3), resp("p1", "d", 3)]
    rows, m = build([prompt("p1")], responses)
    # Equal best scores: the smaller response_id is R1; (R1, R2) has gap 0 and is dropped. (R1,R3) and
    # (R1,R4) have the same gap: one distinct gap, so both are level 0.
    assert ids(rows) == [("a", "c", 0), ("a", "d", 0)] or ids(rows) == [("a", "d", 0), ("a", "c", 0)]
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 1}
    rows, m = build([prompt("p1")], responses, pairing="all")
    assert sorted(ids(rows)) == [("a", "c", 0), ("a", "d", 0), ("b", "c", 0), ("b", "d", 0)]
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 2}
    rows, m = build([prompt("p1")], responses, min_gap=2.0)
    assert rows == [] and m["prompts"]["dropped"]["all_pairs_tied"] == 1 and m["pairs"]["dropped"] == {"gap_le_min_gap": 3}


def test_unusable_responses_are_counted_by_reason():
    responses = [
        resp("p1", "a", 9), resp("p1", "b", None), resp("p1", "c", math.nan), resp("p1", "d", math.inf),
        resp("p1", "e", 3, text="   "), resp("p1", "a", 1), resp("p1", "f", 2),
        resp("p2", "g", 5), resp("p2", "h", None),  # one scored response: no pair
        resp("p9", "i", 5), resp("p9", "j", 1),  # no prompt row
    ]
    rows, m = build([prompt("p1"), prompt("p2")], responses)
    assert ids(rows) == [("a", "f", 0)]
    assert m["responses"]["dropped"] == {"blank_text": 1, "duplicate": 1, "missing_score": 3,
                                         "nonfinite_score": 1, "orphan": 2}
    assert m["responses"]["read"] == 11 and m["responses"]["ranked"] == 3
    assert m["prompts"]["dropped"]["fewer_than_2_scored"] == 1 and m["prompts"]["paired"] == 1


def test_quantile_levels_bin_the_gap_across_the_dataset():
    responses = [
        resp("p1", "a", 10), resp("p1", "b", 9),  # gap 1
        resp("p2", "c", 10), resp("p2", "d", 6),  # gap 4
        resp("p3", "e", 10), resp("p3", "f", 2), resp("p3", "g", 8),  # gaps 8, 2
        resp("p4", "h", 10), resp("p4", "i", 0),  # gap 10
        resp("p5", "j", 3), resp("p5", "k", 1),  # gap 2 (ties the p3 gap: same level)
    ]
    prompts = [prompt(f"p{i}") for i in range(1, 6)]
    rows, m = build(prompts, responses, levels="quantile")
    gap_level = sorted((r["margin"], r["level"]) for r in rows)
    # 6 gaps, descending 10 8 4 2 2 1 -> ranks 0 1 2 3 3 5 -> r * 3 // 6 = 0 0 1 1 1 2.
    assert gap_level == [(1.0, 2), (2.0, 1), (2.0, 1), (4.0, 1), (8.0, 0), (10.0, 0)]
    assert m["pairs"]["per_level"] == {"0": 2, "1": 3, "2": 1}
    assert m["levels"]["gap_range"] == {"0": [8.0, 10.0], "1": [2.0, 4.0], "2": [1.0, 1.0]}
    # per_prompt on the same data: p3 has two gaps (levels 0, 1); every other prompt one (level 0).
    rows, _ = build(prompts, responses)
    assert sorted((r["margin"], r["level"]) for r in rows) == [(1.0, 0), (2.0, 0), (2.0, 1), (4.0, 0), (8.0, 0), (10.0, 0)]


def test_per_prompt_spreads_many_gaps_over_the_levels():
    responses = [resp("p1", f"r{i}", float(10 - i)) for i in range(7)]  # 6 gaps 1..6
    rows, _ = build([prompt("p1")], responses)
    assert sorted((r["margin"], r["level"]) for r in rows) == [
        (1.0, 2), (2.0, 2), (3.0, 1), (4.0, 1), (5.0, 0), (6.0, 0)]


def test_order_is_by_level_then_a_seeded_shuffle_independent_of_input_order():
    prompts = [prompt(f"p{i:03d}") for i in range(60)]
    responses = [resp(f"p{i:03d}", f"p{i:03d}-{k}", float(s)) for i in range(60) for k, s in enumerate([4, 3, 2, 1])]
    rows, _ = build(prompts, responses)
    levels = [r["level"] for r in rows]
    assert levels == [0] * 60 + [1] * 60 + [2] * 60
    again, _ = build(prompts[::-1], responses[::-1])
    assert [r["pair_id"] for r in again] == [r["pair_id"] for r in rows]
    other, _ = build(prompts, responses, seed=1)
    assert [r["level"] for r in other] == levels
    assert [r["pair_id"] for r in other] != [r["pair_id"] for r in rows]
    for lv in range(3):
        assert sorted(r["pair_id"] for r in other if r["level"] == lv) == sorted(r["pair_id"] for r in rows if r["level"] == lv)
    # Shuffled, not left in prompt order.
    first = [json.loads(r["lineage"])["prompt_id"] for r in rows[:60]]
    assert first != sorted(first)


def test_scorers_and_input_sets_are_ranked_separately():
    p, r = frames([prompt("p1")], [resp("p1", "a", 9, scorer="x"), resp("p1", "b", 1, scorer="x"),
                                   resp("p1", "c", 100, scorer="y"), resp("p1", "d", 50, scorer="y")])
    p2, r2 = frames([prompt("p1", source="other")], [resp("p1", "a", 1), resp("p1", "b", 2)], input_set=1)
    two = [{"prompts": "p", "responses": "r", "scores": "rated"}, {"prompts": "p2", "responses": "r2", "scores": "rated"}]
    table, m = build_pairs(pa.concat_tables([p, p2]), pa.concat_tables([r, r2]), cfg(inputs=two))
    got = sorted((x["source"], json.loads(x["lineage"])["scorer"], *ids([x])[0][:2], x["margin"]) for x in table.to_pylist())
    assert got == [("hand", "x", "a", "b", 8.0), ("hand", "y", "c", "d", 50.0), ("other", "hand", "b", "a", 1.0)]
    assert m["prompts"]["paired"] == 3


def test_equal_texts_never_pair_the_best_scored_copy_stays():
    """Curry matched duplicates by response_id only, so equal texts with different scores paired."""
    responses = [resp("p1", "a", 9, text="Same answer."), resp("p1", "b", 7, text="Same  answer.\n"),
                 resp("p1", "c", 4, text="Other answer."), resp("p1", "d", 1, text=" Same answer."),
                 resp("p1", "e", 2, text="Same answer.", scorer="other"), resp("p1", "f", 1, text="Third.", scorer="other")]
    for pairing in ("best_vs_rest", "all"):
        rows, m = build([prompt("p1")], responses, pairing=pairing)
        assert sorted(ids(rows)) == [("a", "c", 0), ("e", "f", 0)]  # scorer "other" is its own group
        assert m["responses"]["dropped"] == {"same_text": 2} and m["responses"]["ranked"] == 4
        for r in rows:
            assert " ".join(r["chosen"][0]["content"].split()) != " ".join(r["rejected"][0]["content"].split())


def model_input(n_sets: int, scores: str = "model") -> list[dict]:
    return [{"prompts": "p", "responses": "r", "scores": scores}] * n_sets


def test_model_scores_pair_only_beyond_their_noise_rated_scores_as_the_paper():
    """A gap of 0.005 between a model's scores on a 1-5 scale became a pair; ratings keep the paper's rule."""
    prompts = [prompt(f"p{i}") for i in range(10)]
    # A judge's expected scores spread over 1..5; prompt p0's two answers differ by 0.005 (noise).
    responses = [resp("p0", "a", 3.005), resp("p0", "b", 3.0)] + [
        r for i in range(1, 10) for r in (resp(f"p{i}", f"x{i}", 1.0 + 0.44 * i), resp(f"p{i}", f"y{i}", 1.0 + 0.22 * i))]
    p, r = frames(prompts, responses)
    model, m = build_pairs(p, r, cfg(inputs=model_input(1)))
    # spread = p95 - p5 of the 20 scores; tie gap = 0.05 x spread (~0.17): p0's gap of 0.005 is a tie.
    (gap,) = m["tie_gaps"]
    assert gap["scores"] == "model" and gap["responses"] == 20
    assert gap["tie_gap"] == pytest.approx(0.05 * (gap["p95"] - gap["p05"])) and 0.15 < gap["tie_gap"] < 0.2
    pairs = {json.loads(x["lineage"])["prompt_id"]: x["margin"] for x in model.to_pylist()}
    assert "p0" not in pairs and set(pairs) == {f"p{i}" for i in range(1, 10)}  # 0.22 * i > 0.17 for i >= 1
    assert m["pairs"]["dropped"] == {"gap_le_min_gap": 1} and m["prompts"]["dropped"]["all_pairs_tied"] == 1
    rated, m_rated = build_pairs(p, r, cfg(inputs=model_input(1, "rated")))
    assert rated.num_rows == 10 and m_rated["tie_gaps"][0]["tie_gap"] == 0.0  # the paper: any positive gap
    # min_gap still applies, as a floor: gaps 0.22 * i > 0.5 for i >= 3.
    assert build_pairs(p, r, cfg(inputs=model_input(1), min_gap=0.5))[0].num_rows == 7


def test_an_inputs_own_min_gap_keeps_the_margins_its_stage_called_noise_out():
    """PUGC drops best-vs-worst margins under its min_margin (0.5: its judge's noise); with SmolLM2 every
    query's margin was 0.08-0.28, so PUGC made 0 pairs while Curry, reading the same scores with a tie gap
    of 0.05 x their spread (0.019), paired them. An input's own ``min_gap`` keeps Curry to that margin."""
    prompts = [prompt(f"p{i}") for i in range(10)]
    responses = [r for i in range(10) for r in (resp(f"p{i}", f"x{i}", 1.0 + 0.44 * i), resp(f"p{i}", f"y{i}", 1.0 + 0.22 * i))]
    p, r = frames(prompts, responses)
    own = [{"prompts": "p", "responses": "r", "scores": "model", "min_gap": 0.5}]
    pairs, m = build_pairs(p, r, cfg(inputs=own))
    margins = sorted(x["margin"] for x in pairs.to_pylist())
    assert len(margins) == 7 and margins[0] > 0.5 and m["tie_gaps"][0]["tie_gap"] == 0.5  # 0.22 * i > 0.5 for i >= 3
    assert build_pairs(p, r, cfg(inputs=model_input(1)))[0].num_rows == 9  # without it: 0.05 x spread only
    rated = [{**own[0], "scores": "rated"}]  # the floor applies to rated inputs too
    assert build_pairs(p, r, cfg(inputs=rated))[0].num_rows == 7


def test_pair_ids_and_curriculum_order_are_pinned():
    """Order = level, then xxh3-64 of the pair hash's 8 big-endian bytes seeded with curry.seed, then pair
    id; recomputed here from the rule alone (Python xxhash), and pinned, so an upgrade of polars cannot
    move a pair."""
    prompts = [prompt(f"q{i}") for i in range(4)]
    responses = [resp(f"q{i}", f"q{i}r{k}", float(s)) for i in range(4) for k, s in enumerate([8, 5, 3, 1])]
    for seed in (0, 7):
        rows, _ = build(prompts, responses, seed=seed)
        want = []
        for i in range(4):
            for k, level in ((3, 0), (2, 1), (1, 2)):
                h = pair_hash(f"q{i}", "hand", f"q{i}r0", f"q{i}r{k}")
                want.append((level, xxhash.xxh3_64_intdigest(h.to_bytes(8, "big"), seed=seed), f"{h:016x}"))
        assert [r["pair_id"] for r in rows] == [pid for _, _, pid in sorted(want)]
    rows, _ = build(prompts, responses, seed=0)
    assert [r["pair_id"] for r in rows] == [
        "3d5e18596b8633b1", "6071363ab63c202c", "0c61f0f2ecd2e389", "aecd2df1200084af",
        "947e944c6b2d8f9a", "2552a0257fb22618", "7cdc8b137a128c2f", "99f1ca7ee510934d",
        "25f7c0cc46693851", "2682f31b3f1fa88d", "43ace875bbf49d41", "7258534a9e63ca07",
    ]


def test_lineage_is_valid_json_when_ids_need_escaping():
    rows, _ = build([prompt('p"1')], [resp('p"1', "a\\b", 2), resp('p"1', "c\nd", 1)])
    lin = json.loads(rows[0]["lineage"])
    assert (lin["prompt_id"], lin["chosen_id"], lin["rejected_id"]) == ('p"1', "a\\b", "c\nd")


def test_lineage_is_valid_json_when_only_a_backslash_or_only_the_last_id_needs_escaping():
    for ids in (["dir\\x1", "b"], ["a", 'b"'], ["a", "b\t"]):  # a backslash alone; a quote or tab in the last id
        rows, _ = build([prompt("p1")], [resp("p1", ids[0], 2), resp("p1", ids[1], 1)])
        lin = json.loads(rows[0]["lineage"])
        assert (lin["chosen_id"], lin["rejected_id"]) == tuple(ids), ids


def test_empty_input_gives_no_pairs():
    rows, m = build([prompt("p1")], [resp("p1", "a", None)])
    assert rows == [] and m["pairs"]["written"] == 0 and m["gap"]["histogram"] == {"edges": [], "counts": []}


def test_run_writes_one_shard_set_per_level_in_curriculum_order(tmp_path):
    prompts = [prompt(f"p{i}") for i in range(5)]
    responses = [resp(f"p{i}", f"p{i}-{k}", float(s)) for i in range(5) for k, s in enumerate([5, 3, 2, 2])]
    write_shards(to_table(prompts, "prompts"), tmp_path / "in" / "prompts", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 tmp_path / "in" / "responses", name="responses")
    c = cfg(inputs=[{"prompts": str(tmp_path / "in" / "prompts"), "responses": str(tmp_path / "in" / "responses"),
                    "scores": "rated"}])
    out = tmp_path / "curry"
    m = run(c, execution(), out)
    pairs = out / "pairs"
    assert sorted(p.name for p in pairs.iterdir()) == ["_levels.json", "level=0", "level=1"]
    index = json.loads((pairs / "_levels.json").read_text())
    assert index["rows"] == 15 and [lv["rows"] for lv in index["levels"]] == [10, 5]
    for sub in ("level=0", "level=1"):
        assert verify_shards(pairs / sub) == []
        assert set(read_table(pairs / sub, "pairs").column("level").to_pylist()) == {int(sub[-1])}
    files = curriculum_files(pairs)
    assert [f.parent.name for f in files] == ["level=0", "level=1"]
    whole = pa.concat_tables(pq.read_table(f) for f in files)
    assert whole.column("level").to_pylist() == [0] * 10 + [1] * 5
    # Readers that walk the level folders (export) see each pair once: no top-level shard set.
    assert read_table(pairs, "pairs").num_rows == 0
    assert json.loads((out / "details.json").read_text()) == m
    assert json.loads((out / "metrics.json").read_text()) == {"rows_in": m["responses"]["read"], "pairs": 15}
    assert m["pairs"]["per_source"] == {"hand": 15} and m["pairs"]["per_level"] == {"0": 10, "1": 5, "2": 0}
    before = {f: (pairs / f).read_bytes() for f in [x["path"] for x in index["files"]]}
    run(c, execution(), out)
    assert {f: (pairs / f).read_bytes() for f in before} == before  # byte-identical rerun


# --- real data -----------------------------------------------------------------------------------------
# The stage's input comes from the real ingest adapters (stages/ingest.py, pipeline/adapters.py). The
# expected counts come from small independent readers of the raw files that follow the adapters'
# documented conventions: OpenAssistant: a prompter message with >= 2 ranked assistant replies is a
# prompt (the path down to it); its ranked replies score 1 - position / (n - 1) (best 1.0, worst 0.0);
# deleted or failed-review messages are pruned with their replies. Stack Exchange: a question is a
# prompt, its answers are responses scored by their vote Score.


def ingested(path: Path, fmt: str) -> tuple[list[dict], list[dict]]:
    from pipeline.config import Source
    from stages.ingest import ingest_source

    result = ingest_source(Source(name=fmt, kind="rated", path=str(path), format=fmt), 4 << 20)
    return result.rows["prompts"], result.rows["responses"]


def oasst_scores(path: Path) -> list[dict]:
    responses = []

    def usable(m):
        return m.get("deleted") is not True and m.get("review_result") is not False

    def walk(m):
        kept = [r for r in m.get("replies") or [] if usable(r)]
        ranked = sorted((r for r in kept if isinstance(r.get("rank"), int)), key=lambda r: r["rank"])
        if m["role"] == "prompter" and len(ranked) >= 2:
            responses.extend({"prompt_id": m["message_id"], "response_id": r["message_id"],
                              "score": 1 - pos / (len(ranked) - 1)} for pos, r in enumerate(ranked))
        for r in kept:
            walk(r)

    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            root = json.loads(line)["prompt"]
            if usable(root):
                walk(root)
    return responses


def stackexchange_scores(path: Path) -> list[dict]:
    return [{"prompt_id": el.get("ParentId"), "response_id": el.get("Id"), "score": float(el.get("Score"))}
            for _, el in ET.iterparse(path) if el.tag == "row" and el.get("PostTypeId") == "2"]


def expected(responses: list[dict], pairing: str, n_levels: int = 3) -> dict[str, int]:
    """Pairs per level by a plain per-prompt loop (an independent implementation of the rules)."""
    groups = defaultdict(list)
    for r in responses:
        if r["score"] is not None:
            groups[r["prompt_id"]].append(r["score"])
    counts: dict[str, int] = defaultdict(int)
    for scores in groups.values():
        scores.sort(reverse=True)
        idx = [(0, k) for k in range(1, len(scores))] if pairing == "best_vs_rest" else \
            [(i, k) for i in range(len(scores)) for k in range(i + 1, len(scores))]
        gaps = [scores[i] - scores[k] for i, k in idx if scores[i] - scores[k] > 0]
        distinct = sorted(set(gaps), reverse=True)
        for g in gaps:
            counts[str(distinct.index(g) * n_levels // max(len(distinct), n_levels))] += 1
    return dict(counts)


def test_real_openassistant_ranked_replies(real):
    prompts, responses = ingested(real / OASST, "oasst")
    raw = oasst_scores(real / OASST)
    assert (len(prompts), len(responses), len(raw)) == (212, 641, 641)  # SOURCES.md: 641 ranked sibling replies
    rows, m = build(prompts, responses)
    want = expected(raw, "best_vs_rest")
    assert {k: v for k, v in m["pairs"]["per_level"].items() if v} == want
    # 641 ranked - 212 prompts = 429 pairs; prompts with 6+ ranked replies put two gaps in a level.
    assert want == {"0": 225, "1": 164, "2": 40}
    assert m["responses"]["dropped"] == {} and m["pairs"]["dropped"] == {"gap_le_min_gap": 0}
    # Each prompt's best-vs-worst pair has gap 1.0 on the 0..1 rank scale and is in level 0.
    assert sorted(r["level"] for r in rows if r["margin"] == 1.0) == [0] * 212
    assert [r["level"] for r in rows] == sorted(r["level"] for r in rows)
    assert all(r["prompt"][-1]["role"] == "user" and r["source"] == "oasst" for r in rows)
    rows_all, m_all = build(prompts, responses, pairing="all")
    assert m_all["pairs"]["per_level"] == {**{"0": 0, "1": 0, "2": 0}, **expected(raw, "all")}
    assert m_all["pairs"]["written"] == len(rows_all) == 754


def test_real_stackexchange_answers_by_score(real):
    prompts, responses = ingested(real / POSTS, "stackexchange")
    raw = stackexchange_scores(real / POSTS)
    assert (len(prompts), len(responses), len(raw)) == (225, 327, 327)
    rows, m = build(prompts, responses)
    want = expected(raw, "best_vs_rest")
    assert {k: v for k, v in m["pairs"]["per_level"].items() if v} == want
    assert want == {"0": 87, "1": 16, "2": 5} and len(rows) == 108
    # 82 questions have >= 2 answers: 327 answers - 212 answered questions = 115 candidate (R1, Rk)
    # pairs, 7 of them ties on Score.
    assert m["pairs"]["candidates"] == 115 and m["pairs"]["dropped"] == {"gap_le_min_gap": 7}
    assert m["prompts"]["dropped"]["fewer_than_2_scored"] == 130
    quantile = build(prompts, responses, levels="quantile")[0]
    gaps = sorted((r["margin"] for r in rows), reverse=True)
    want_q = defaultdict(int)
    for g in gaps:  # rank = how many gaps are strictly larger
        want_q[sum(x > g for x in gaps) * 3 // len(gaps)] += 1
    got_q = defaultdict(int)
    for r in quantile:
        got_q[r["level"]] += 1
    assert got_q == want_q == {0: 44, 1: 37, 2: 27}


# --- a trainer reads the curriculum in order ---------------------------------------------------------


@pytest.mark.e2e
def test_trl_dpo_trainer_gets_batches_level_by_level(tmp_path):
    """The release order, loaded with ``datasets`` and trained with TRL's DPOTrainer and sequential
    sampling on the tiny model: every batch holds one level, and levels arrive 0, 1, 2."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pipeline.llm.tiny import resolve_model

    prompts = [prompt(f"p{i}", f"How do I brew coffee method {i}?") for i in range(8)]
    responses = [resp(f"p{i}", f"p{i}-{k}", float(s), f"Answer {k} for method {i}.")
                 for i in range(8) for k, s in enumerate([9, 6, 4, 1])]
    write_shards(to_table(prompts, "prompts"), tmp_path / "in" / "prompts", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 tmp_path / "in" / "responses", name="responses")
    c = cfg(inputs=[{"prompts": str(tmp_path / "in" / "prompts"), "responses": str(tmp_path / "in" / "responses"),
                    "scores": "rated"}])
    run(c, execution(), tmp_path / "curry")
    pairs = tmp_path / "curry" / "pairs"
    files = [str(f) for f in curriculum_files(pairs)]
    assert [Path(f).parent.name for f in files] == ["level=0", "level=1", "level=2"]
    ds = Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    assert ds["level"] == [0] * 8 + [1] * 8 + [2] * 8

    class LevelProbe(DPOTrainer):
        """Keeps ``level`` through TRL's column pruning so the collator can record it."""

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "level" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "level"]

    path = resolve_model("tiny")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=4, max_steps=6,
                     train_sampling_strategy="sequential", learning_rate=1e-4, max_length=128,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                     dataloader_num_workers=0)
    trainer = LevelProbe(model=AutoModelForCausalLM.from_pretrained(path), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(path))
    seen: list[list[int]] = []
    collate = trainer.data_collator

    def recording(examples):
        seen.append([e.pop("level") for e in examples])
        return collate(examples)

    trainer.data_collator = recording
    trainer.train()
    assert trainer.state.global_step == 6
    assert seen[:6] == [[0] * 4, [0] * 4, [1] * 4, [1] * 4, [2] * 4, [2] * 4]
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_a_misspelt_input_path_names_its_params_key(tmp_path):
    """`curry.inputs[1].prompts: data/selfie/prompt` (a typo) said only "data/selfie/prompt: not found; run
    the stage that writes it first": the key tells where to fix it when no stage writes that folder."""
    from pipeline.io import SourceError
    from stages.curry import load_inputs

    empty = [{"prompts": str(tmp_path / "p"), "responses": str(tmp_path / "r")}]
    for name in ("p", "r"):
        write_shards(to_table([], "prompts" if name == "p" else "responses"), tmp_path / name,
                     name="prompts" if name == "p" else "responses")
    with pytest.raises(SourceError) as err:
        load_inputs([*empty, {"prompts": str(tmp_path / "prompt"), "responses": str(tmp_path / "r")}])
    assert str(err.value) == (f"curry.inputs[1].prompts: {tmp_path / 'prompt'}: not found; run the stage that writes "
                              "it first (`dvc repro`), or correct curry.inputs[1].prompts in params.yaml")
