"""A train user turn quoting a test prompt's user turn inside a longer text leaves train (``test_prompt_in_train``),
and ``prefpipe audit`` finds one left there (``prompt_in_both_splits``)."""

from __future__ import annotations

import json

import polars as pl

from pipeline.audit import audit_release
from pipeline.dedup import opening_key
from pipeline.io import write_parquet
from pipeline.records import to_table
from stages.export_split import in_test_split
from tests.export_fixtures import TOPICS, build, export_cfg, joint, pair, removed, write_method

POEM = "Write a poem about cats in the style of Emily Dickinson"
SHORT = ["thanks a lot", "continue", "go on then", "more please", "ok next", "and then"]


def talk(pid: str, opening: str, later: str, method: str = "wildfeedback") -> dict:
    p = pair(pid, later, method)
    p["prompt"] = [{"role": "user", "content": opening}, {"role": "assistant", "content": "Sure, ask away."},
                   {"role": "user", "content": later}]
    return p


def test_split(texts: list[str], fraction: float = 0.5) -> list[bool]:
    """Whether a one-turn prompt of each text falls in test (the split keys on its opening)."""
    df = pl.DataFrame({"prompt": [pair("x", t, "p")["prompt"] for t in texts]})
    return list(in_test_split(df.select(opening_key("prompt"))[:, 0], fraction, export_cfg().split_salt))


test_split.__test__ = False  # a helper, not a test


def first(texts: list[str], want: bool) -> str:
    return next(t for t, is_test in zip(texts, test_split(texts), strict=True) if is_test == want)


def test_a_train_turn_quoting_a_test_prompt_leaves_train_and_its_neutral_twin_stays(tmp_path):
    """Test prompt "Write a poem about cats in the style of Emily Dickinson"; a train dialogue's later turn "Here is
    what my friend asked: write a poem about cats in the style of Emily Dickinson. Can you do better?" holds it (and
    an answer to it) under another key: main matched equal turns only and kept it in train. Its twin (Walt Whitman,
    dogs) quotes no test prompt and stays, and a test prompt under ``min_words`` words ("thanks a lot") quoted in a
    train turn joins nothing."""
    poem = first([f"{POEM}, please.", f"{POEM}.", f"{POEM} for my class.", f"{POEM} in four lines."], True)
    short = first(SHORT, True)
    opens = [f"Hello, I need help with homework number {i} today." for i in range(40)]
    train_opens = [o for o, t in zip(opens, test_split(opens), strict=True) if not t]
    quote = f"Here is what my friend asked: {poem} Can you do better?"
    twin = "Here is what my friend asked: write a poem about dogs in the style of Walt Whitman. Can you do better?"
    rows = [pair("poem", poem, "wildfeedback"), pair("short", short, "wildfeedback"),
            talk("quotes", train_opens[0], quote), talk("twin", train_opens[1], twin),
            talk("short_quoted", train_opens[2], f"{short} for fixing my essay yesterday, it was great")]
    rows += [pair(f"t{i}", t, "wildfeedback") for i, t in enumerate(TOPICS)]
    write_method(tmp_path, "wildfeedback", rows)
    release, stats = build(tmp_path, methods=["wildfeedback"], test_fraction=0.5)
    gone = removed(release).filter(pl.col("reason") == "test_prompt_in_train")
    assert gone["pair_id"].to_list() == ["quotes"] and stats["drops"]["test_prompt_in_train"] == 1
    assert json.loads(gone["detail"][0]) == {"test_method": "wildfeedback", "test_pair_id": "poem"}
    train = set(pl.read_parquet(release / "wildfeedback" / "train-*.parquet")["pair_id"])
    test = set(pl.read_parquet(release / "wildfeedback" / "test-*.parquet")["pair_id"])
    assert {"twin", "short_quoted"} <= train and {"poem", "short"} <= test and "quotes" not in train
    assert json.loads((release / "audit.json").read_text())["passed"]


def test_a_dove_row_whose_prompt_quotes_a_test_prompt_leaves_train(tmp_path):
    """DOVE: either prompt quoting a test prompt's user turn takes the row out of train."""
    poem = first([f"{POEM}, please.", f"{POEM}.", f"{POEM} for my class."], True)
    pairs = [(a, b) for a in TOPICS for b in TOPICS if a < b]
    both_train = [(a, b) for a, b in pairs if not any(test_split([a, b]))]
    a, b = both_train[0]
    row = joint("dq", a, b)
    row["rejected_prompt"] = [{"role": "user", "content": b + f" My teacher also asked: {poem} Thoughts?"}]
    row = row if not test_split([row["rejected_prompt"][0]["content"]])[0] else None
    assert row is not None
    write_method(tmp_path, "dove", [joint("dt", poem, first([f"{t}!" for t in TOPICS], True)), row,
                                    joint("dk", *both_train[1])])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.5)
    gone = removed(release).filter(pl.col("reason") == "test_prompt_in_train")
    assert gone["pair_id"].to_list() == ["dq"]
    assert json.loads(gone["detail"][0]) == {"test_method": "dove", "test_pair_id": "dt"}


def test_the_audit_finds_a_train_turn_quoting_a_test_prompt(tmp_path):
    """A release with a train user turn quoting a test prompt's user turn fails the audit (main passed it); its
    neutral twin and a quoted turn under ``min_words`` words ("thanks a lot") pass."""
    rel = tmp_path / "release"

    def put(config, split, rows):
        (rel / config).mkdir(parents=True, exist_ok=True)
        write_parquet(to_table(rows, "pairs"), rel / config / f"{split}-00000-of-00001.parquet")

    put("wildfeedback", "test", [pair("poem", POEM, "wildfeedback"), pair("thanks", "thanks a lot", "wildfeedback")])
    put("wildfeedback", "train", [
        talk("quotes", "hi", f"Here is what my friend asked: {POEM}. Can you do better?"),
        talk("twin", "hi", "Here is what my friend asked: write a poem about dogs in the style of Walt Whitman."),
        talk("thanks_long", "hey", "thanks a lot for fixing my essay yesterday, it was great")])
    put("pugc", "train", [pair("pugc_quotes", f"{POEM.upper()}!!! That is the task I was given.", "pugc")])
    report = audit_release(rel)
    check = report["checks"]["prompt_in_both_splits"]
    assert check["violations"] == 2 and check["by_config"] == {"pugc": 1, "wildfeedback": 1}
    assert sorted(check["examples"]) == ["pugc_quotes", "quotes"]
