"""A train user turn quoting a test prompt's user turn inside a longer text leaves train (``test_prompt_in_train``),
and ``prefpipe audit`` finds one left there (``prompt_in_both_splits``)."""

from __future__ import annotations

import json

import polars as pl

from pipeline import split_leaks
from pipeline.audit import audit_release
from pipeline.dedup import opening_key, turn_keys, turn_texts
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


def is_test(texts: list[str], fraction: float = 0.5) -> list[bool]:
    """Whether a one-turn prompt of each text falls in test (the split keys on its opening)."""
    df = pl.DataFrame({"prompt": [pair("x", t, "p")["prompt"] for t in texts]})
    return list(in_test_split(df.select(opening_key("prompt"))[:, 0], fraction, export_cfg().split_salt))


def first(texts: list[str], want: bool) -> str:
    return next(t for t, test in zip(texts, is_test(texts), strict=True) if test == want)


def test_a_train_turn_quoting_a_test_prompt_leaves_train_and_its_neutral_twin_stays(tmp_path):
    """Test prompt "Write a poem about cats in the style of Emily Dickinson"; a train dialogue's later turn "Here is
    what my friend asked: write a poem about cats in the style of Emily Dickinson. Can you do better?" holds it (and
    an answer to it) under another key: main matched equal turns only and kept it in train. Its twin (Walt Whitman,
    dogs) quotes no test prompt and stays, and a test prompt under ``min_words`` words ("thanks a lot") quoted in a
    train turn joins nothing."""
    poem = first([f"{POEM}, please.", f"{POEM}.", f"{POEM} for my class.", f"{POEM} in four lines."], True)
    short = first(SHORT, True)
    opens = [f"Hello, I need help with homework number {i} today." for i in range(40)]
    train_opens = [o for o, t in zip(opens, is_test(opens), strict=True) if not t]
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
    both_train = [(a, b) for a, b in pairs if not any(is_test([a, b]))]
    a, b = both_train[0]
    row = joint("dq", a, b)
    row["rejected_prompt"] = [{"role": "user", "content": b + f" My teacher also asked: {poem} Thoughts?"}]
    assert not is_test([row["rejected_prompt"][0]["content"]])[0]  # the row stays in train
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


def test_quoted_test_turns_finds_a_chinese_quote_and_leaves_short_turns_alone():
    """``quoted_test_turns`` on turn texts: a Chinese test turn quoted in a longer train turn is found (a CJK
    character is a word), an equal turn is left to the key match, and turns under ``min_words`` words ("谢谢",
    "continue", "thanks a lot") quoted in long turns match nothing."""
    def frame(rows):
        df = pl.DataFrame({"prompt": [[{"role": "user", "content": t}] for _, _, t in rows],
                           "_split": [s for _, s, _ in rows], "pair_id": [p for p, _, _ in rows], "_config": "wf"})
        return df.with_columns(turn_keys(df, "prompt", 4))

    df = frame([("t1", "test", "请写一首关于猫的诗"), ("t2", "test", "谢谢"), ("t3", "test", "continue"),
                ("t4", "test", "thanks a lot"),
                ("a", "train", "我朋友问：请写一首关于猫的诗。你能写得更好吗？"), ("b", "train", "请写一首关于猫的诗"),
                ("c", "train", "谢谢你的帮助，我明白了"), ("d", "train", "Please continue, and thanks a lot for that story")])
    tests = split_leaks.test_turns([(df, ["_turns"])])
    texts = turn_texts(df.filter(pl.col("_split") == "test"), "prompt", 4)
    train = df.filter(pl.col("_split") == "train")
    quoted = split_leaks.quoted_test_turns([turn_texts(train, "prompt", 4)], tests, texts, 13, 0.5, 4)
    hit = train.explode("_turns").join(quoted, left_on="_turns", right_on="_turn")
    assert hit["pair_id"].to_list() == ["a"]
    assert json.loads(hit["test"][0]) == {"test_method": "wf", "test_pair_id": "t1"}
    kept, gone = split_leaks.drop_test_turns(df, ["_turns"], pl.concat([tests, quoted]), pl.lit(["wf"]))
    assert gone["pair_id"].to_list() == ["a", "b"]  # "b" by key, "a" quoting it
