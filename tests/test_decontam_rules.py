"""Rules of pipeline/decontam.py that hand mutants showed untested: which eval prompt a hit names, whole words
only, overlapping quotations, eval-set records that cannot be read, an optional set that breaks off."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.config import EvalSet
from pipeline.decontam import contamination, load_eval_sets
from pipeline.io import SourceError
from pipeline.text import normalise
from tests.input_cases import _jsonl


def _prompts(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"_key": list(range(1, len(texts) + 1)), "_text": list(texts)},
                        schema={"_key": pl.UInt64, "_text": pl.String}).with_columns(normalise(pl.col("_text")))


def _evals(**texts: str) -> pl.DataFrame:
    return pl.DataFrame({"eval_set": ["mt"] * len(texts), "eval_id": list(texts), "text": list(texts.values())})


def _hits(prompts: pl.DataFrame, evals: pl.DataFrame, n: int = 4, threshold: float = 0.4) -> list[tuple]:
    return [tuple(r) for r in contamination(prompts, evals, n, threshold, min_words=4)
            .select("_key", "eval_id", pl.col("overlap").round(3)).iter_rows()]


def test_a_hit_names_the_eval_prompt_it_overlaps_most_not_the_first_over_the_threshold():
    """Mutant D20 (the best match sorted last) named the half-overlapping eval prompt."""
    words = "one two three four five six seven eight nine ten"
    evals = _evals(half="one two three four five six eleven twelve thirteen fourteen", whole=words)
    assert _hits(_prompts(words), evals) == [(1, "whole", 1.0)]


def test_a_short_eval_prompt_matches_whole_words_only():
    """Mutant D16 (patterns without their spaces): "the cat sat here" was found inside "bathe cat sat heretic"."""
    evals = _evals(cat="The cat sat here.")
    prompts = _prompts("Why did the bathe cat sat heretic go?", "Look: the cat sat here, all day long today.")
    assert _hits(prompts, evals, n=8) == [(2, "cat", 1.0)]


def test_two_release_prompts_quoting_overlapping_parts_of_one_eval_prompt_both_go():
    """Mutant D17 (non-overlapping search): of two short prompts quoting overlapping words of an eval prompt, the
    second was not found and reached the release."""
    evals = _evals(q="alpha beta gamma delta epsilon zeta eta theta iota kappa")
    prompts = _prompts("beta gamma delta epsilon", "delta epsilon zeta eta")
    assert _hits(prompts, evals, n=13) == [(1, "q", 1.0), (2, "q", 1.0)]


def _set(tmp_path, records, optional=True) -> EvalSet:
    _jsonl(tmp_path / "q.jsonl", records)
    return EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns", id_field="question_id",
                   optional=optional)


def test_an_empty_list_of_turns_says_the_field_holds_no_text(tmp_path):
    """Mutant D1 (an empty list read as no turns) named the record 'dict, expected a JSON object'."""
    _, status = load_eval_sets([_set(tmp_path, [{"question_id": 1, "turns": ["Name a prime."]},
                                                {"question_id": 2, "turns": []}])])
    assert status["mt"]["status"] == "ok; 1 record(s) without a prompt (first: q.jsonl:2: no text in field 'turns' (it is list))"


def test_text_parts_with_a_part_that_is_not_text_count_the_record_as_unread(tmp_path):
    """Mutant D4 (any part with text instead of all) crashed on the part without one or read half a prompt."""
    evals, status = load_eval_sets([_set(tmp_path, [
        {"question_id": 1, "turns": [{"content": [{"type": "text", "text": "Define entropy."}, {"type": "image"}]}]},
        {"question_id": 2, "turns": ["Name a prime."]}])])
    assert evals["text"].to_list() == ["Name a prime."]
    assert status["mt"]["status"].startswith("ok; 1 record(s) without a prompt (first: q.jsonl:1: no text in field "
                                             "'turns[0]' (it is list))")


def test_an_empty_id_is_named_by_its_row(tmp_path):
    """Mutant D5 (only a null id is no id): an empty id was named '' in removed.jsonl."""
    evals, _ = load_eval_sets([_set(tmp_path, [{"question_id": "", "turns": ["Name a prime."]}], optional=False)])
    assert evals["eval_id"].to_list() == ["row1"]


def test_an_optional_set_whose_reading_breaks_off_keeps_none_of_its_prompts(tmp_path, monkeypatch):
    """Mutant D11 (the rows read before the break kept): the status said 0 prompts and unavailable, yet the first
    rows were checked against, under a sha256 of nothing. A hub set that breaks off raises SourceError mid-way."""
    from pipeline import decontam
    from pipeline.io import iter_records as real

    s = _set(tmp_path, [{"question_id": 1, "turns": ["Name a prime."]}, {"question_id": 2, "turns": ["Name a bird."]}])

    def breaks_off(path):
        it = real(path)
        yield next(it)
        raise SourceError(f"{path}: reading broke off after row 1")

    monkeypatch.setattr(decontam, "iter_records", breaks_off)
    evals, status = load_eval_sets([s])
    assert evals.height == 0 and status["mt"]["prompts"] == 0 and status["mt"]["status"].startswith("unavailable: ")
    with pytest.raises(decontam.ReleaseInputError, match="cannot be read"):
        load_eval_sets([s.model_copy(update={"optional": False})])


def _pairs() -> pl.DataFrame:
    """Three joint pairs: each has a chosen and a rejected prompt key; the third has only its second key listed."""
    return pl.DataFrame({"pair_id": ["a", "b", "c"], "_config": ["m"] * 3, "_split": ["train", "test", "train"],
                         "k1": [1, 2, 3], "k2": [11, 12, 13]}, schema_overrides={"k1": pl.UInt64, "k2": pl.UInt64})


def test_a_removal_names_the_overlap_to_three_places_and_matches_any_prompt_key():
    """Mutants D22 (overlap rounded to one place: 0.3 for a third) and D23 (only the first prompt key looked up:
    a pair whose second prompt was contaminated stayed)."""
    from pipeline.decontam import decontaminate

    hits = pl.DataFrame({"_key": [1, 13], "eval_set": ["mt", "mt"], "eval_id": ["q1", "q2"], "overlap": [1 / 3, 1.0]},
                        schema_overrides={"_key": pl.UInt64})
    kept, gone = decontaminate(_pairs(), ["k1", "k2"], hits, pl.lit(["m"]))
    assert kept["pair_id"].to_list() == ["b"]
    assert dict(zip(gone["pair_id"], gone["detail"], strict=True)) == {
        "a": '{"eval_set":"mt","eval_id":"q1","overlap":0.333}', "c": '{"eval_set":"mt","eval_id":"q2","overlap":1.0}'}


def test_a_held_out_prompt_leaves_train_only():
    """Mutants D28/D29 (any split but test, or every split): a held-out prompt is only kept out of train."""
    from pipeline.decontam import drop_held_out

    df = _pairs().with_columns(pl.Series("_split", ["train", "test", "validation"]))
    held = pl.DataFrame({"_key": [1, 12, 13], "held_out": ["s"] * 3}, schema_overrides={"_key": pl.UInt64})
    kept, gone = drop_held_out(df, ["k1", "k2"], held, pl.lit(["m"]))
    assert kept["pair_id"].to_list() == ["b", "c"] and gone["pair_id"].to_list() == ["a"]
    assert gone["detail"].to_list() == ['{"set":"s"}'] and gone["reason"].to_list() == ["held_out"]


def test_held_out_messages_without_a_role_are_one_line(tmp_path):
    """Mutant D24 (only content checked): messages without a role were taken for messages."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.decontam import ReleaseInputError, load_held_out

    (tmp_path / "set").mkdir()
    messages = pa.array([[{"content": "What is up?"}]], pa.list_(pa.struct([("content", pa.string())])))
    pq.write_table(pa.table({"prompt": messages}), tmp_path / "set" / "part-00000-of-00001.parquet")
    with pytest.raises(ReleaseInputError, match=r"^set: column 'prompt' is list<element: struct<content: string>>, "
                                                 r"expected a list of \{role, content\} messages"):
        load_held_out(["set"], tmp_path)


def test_a_prompt_in_two_held_out_sets_is_named_by_the_first_listed(tmp_path):
    """Mutant D26 (the last set kept): the removal named, and the status counted, the later set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.decontam import load_held_out

    def messages(*texts):
        return pa.array([[{"role": "user", "content": t}] for t in texts],
                        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))

    for name, texts in (("a", ["What is up?"]), ("b", ["What is up?", "Name a bird."])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"prompt": messages(*texts)}), tmp_path / name / "part-00000-of-00001.parquet")
    keys, status = load_held_out(["b", "a"], tmp_path)
    assert status == {"b": {"rows": 2, "prompts": 2}, "a": {"rows": 1, "prompts": 0}}
    assert sorted(keys["held_out"].to_list()) == ["b", "b"]
