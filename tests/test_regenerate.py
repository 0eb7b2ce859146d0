"""ShareGPT's regenerate counter ("2 / 2" glued to the start of a user turn): the rule, ingest taking it off user
turns and counting them, and the real sets it finds it in (Koala's 13 prompts, nothing else)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.io import read_table
from pipeline.regenerate import without_counter
from stages.ingest import ingest_source, run
from tests.test_ingest import with_ingest


def _clean(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(without_counter(pl.col("t")))["t"].to_list()


@pytest.mark.parametrize(("text", "clean"), [
    ("2 / 2Create 10 marketing punch lines for the new year house hold sale",
     "Create 10 marketing punch lines for the new year house hold sale"),
    ("3 / 3Write a funny, interesting, inspiring poem for Women's Day.",
     "Write a funny, interesting, inspiring poem for Women's Day."),
    ("2 / 2can you list in bullet points", "can you list in bullet points"),  # lower case
    ("1 / 7Summarise this:\n2 / 2 is one", "Summarise this:\n2 / 2 is one"),  # only the one at the start
    ("12 / 12\"Quote\" me", "\"Quote\" me"),
    ("2 / 5```python\nprint(1)\n```", "```python\nprint(1)\n```"),
    ("3 / 3Überprüfe den Text", "Überprüfe den Text"),
])
def test_a_counter_glued_to_the_start_is_taken_off(text, clean):
    assert _clean([text]) == [clean]


@pytest.mark.parametrize("text", [
    "1 / 2 cup of sugar",            # a space after the second number
    "2 / 2 = 1",
    "2 / 2=1", "1 / 2+1/4", "3 / 4.5 metres", "1 / 2, please", "1 / 2) is half",  # arithmetic glued on
    "3 / 4th of the cake",           # an ordinal
    "3 / 2Write a poem",             # the first number larger: no counter
    "0 / 2Write a poem",             # a counter starts at 1
    "2 / 2\nWrite a poem",           # a line break is not glued text
    "Please 2 / 2Write a poem",      # not at the start
    " 2 / 2Write a poem",            # nor after a space
    "2/2Write a poem", "2 /2Write", "2 /  2Write",  # not the page's " / "
    "1 / 2100 words on trains",      # a 4-digit number: a fraction, not a counter
    "٢ / ٢Write",                    # digits of another script
    "", "2 / 2",
])
def test_a_near_miss_is_left_as_it_is(text):
    assert _clean([text]) == [text]


def test_a_null_stays_null():
    assert _clean([None, "2 / 2Hi there"]) == [None, "Hi there"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ingest_takes_the_counter_off_user_turns_of_every_source_and_counts_them(params, tmp_path):
    """A ShareGPT dump carries the counter in its user turns, and so does a set of prompts taken from one
    (Koala's): ingest kept "2 / 2Create ..." in the conversations and prompts it wrote, where a training prompt
    held the page's text. User turns lose it; system and assistant turns, and near-misses, are kept."""
    chats = _jsonl(tmp_path / "sharegpt.jsonl", [
        {"id": "c1", "conversations": [
            {"from": "system", "value": "2 / 2You are terse."},
            {"from": "human", "value": "2 / 2Create 10 marketing punch lines"},
            {"from": "gpt", "value": "1 / 2Sale now on!"},
            {"from": "human", "value": "3 / 3Make them shorter."}]},
        {"id": "c2", "conversations": [{"from": "human", "value": "1 / 2 cup of sugar in grams?"},
                                       {"from": "gpt", "value": "About 100 g."}]},
    ])
    prompts = _jsonl(tmp_path / "prompts.jsonl", [{"id": "k131", "prompt": "3 / 3Write a poem for Women's Day."},
                                                  {"id": "k1", "prompt": "Write a haiku."}])
    p = with_ingest(params, [
        {"name": "chats", "kind": "conversations", "path": str(chats), "format": "sharegpt"},
        {"name": "chat_prompts", "kind": "prompts", "path": str(chats), "format": "sharegpt"},
        {"name": "koala_like", "kind": "prompts", "path": str(prompts), "format": "prompts"},
    ])
    metrics = run(p, tmp_path / "ingest")
    convs = {c["conversation_id"]: c["messages"] for c in read_table(tmp_path / "ingest" / "conversations",
                                                                      "conversations").to_pylist()}
    assert sorted([m["content"] for m in msgs] for msgs in convs.values()) == [
        ["1 / 2 cup of sugar in grams?", "About 100 g."],
        ["2 / 2You are terse.", "Create 10 marketing punch lines", "1 / 2Sale now on!", "Make them shorter."]]
    written = {p["origin_id"]: p["messages"][-1]["content"]
               for p in read_table(tmp_path / "ingest" / "prompts", "prompts").to_pylist()}
    assert written == {"c1": "Create 10 marketing punch lines", "c2": "1 / 2 cup of sugar in grams?",
                       "k131": "Write a poem for Women's Day.", "k1": "Write a haiku."}
    assert {s: m["regenerate_counters"] for s, m in metrics["sources"].items()} == {
        "chats": 2, "chat_prompts": 1, "koala_like": 1}
    assert metrics["totals"]["regenerate_counters"] == 4
    assert json.loads((tmp_path / "ingest" / "details.json").read_text()) == metrics
    # the in-memory helper gives what the stage writes
    one = ingest_source(p.ingest.sources[2], p.ingest.max_record_bytes)
    assert [r["messages"][0]["content"] for r in one.rows["prompts"]] == ["Write a poem for Women's Day.",
                                                                         "Write a haiku."]
    assert one.metrics["regenerate_counters"] == 1


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for v in items for s in _strings(v)]


def test_among_the_real_sets_the_rule_finds_only_koalas_13_counters(real):
    """Every string of every JSON file of the shared real sets (prompts, turns, answers, reviews: 52k strings):
    the rule changes Koala's 13 counter prompts and nothing else (no false positive; the nearest other strings are
    a date "05/02/2023" in OpenAssistant's set and a user's "2/3" in WildChat's)."""
    texts, files = [], []
    for path in sorted(real.rglob("*.json*")):
        text = (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()).read()
        try:  # DOVE's tldr/test.json is JSON lines
            records = [json.loads(text)]
        except json.JSONDecodeError:
            records = [json.loads(line) for line in text.split("\n") if line.strip()]
        found = _strings(records)
        texts += found
        files += [path.relative_to(real).as_posix()] * len(found)
    assert len(texts) > 50_000
    df = pl.DataFrame({"t": texts, "file": files})
    changed = df.filter(without_counter(pl.col("t")) != pl.col("t"))
    koala = [json.loads(x)["prompt"] for x in (real / "koala/koala_test_set.jsonl").read_text().split("\n") if x]
    assert changed["file"].unique().to_list() == ["koala/koala_test_set.jsonl"]
    assert sorted(changed["t"]) == sorted(k for k in koala if k[0].isdigit() and " / " in k[:8])
    assert changed.height == 13
