"""Near-duplicate prompts are near-duplicates in their last user turn too: multi-turn prompts that share an
opening request and a long answer but end on different requests are different prompts (pipeline.dedup.Signatures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.export_fixtures import build, pair, removed, write_method

OASST = Path(__file__).resolve().parents[1].parent / "shared/data/real/oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl"

ARTICLE = " ".join(
    f"Paragraph {i}: quantum gravity seeks a theory that joins general relativity and quantum mechanics, "
    f"and candidate number {i} approaches the problem through its own mathematical framework." for i in range(8))


def _multi(pid: str, opening: str, answer: str, last: str) -> dict:
    row = pair(pid, opening, "curry", chosen=f"Answer to: {last}", rejected=f"idk ({pid})", level=0)
    row["prompt"] = [{"role": "user", "content": opening}, {"role": "assistant", "content": answer},
                     {"role": "user", "content": last}]
    return row


def test_prompts_sharing_an_opening_but_asking_different_last_requests_are_both_kept(tmp_path):
    write_method(tmp_path, "curry", [
        _multi("summary", "Write an article on Quantum Gravity", ARTICLE, "Can you summarize that article?"),
        _multi("evidence", "Write an article on Quantum Gravity", ARTICLE,
               "I find string theory interesting. Is there any experimental evidence for it yet?"),
    ], sub="level=0")
    release, stats = build(tmp_path, methods=["curry"], test_fraction=0.0)
    assert stats["drops"] == {}
    assert removed(release).height == 0


def test_prompts_near_duplicate_in_whole_and_in_last_request_are_still_one(tmp_path):
    """The rule it keeps: the same last request after a nearly identical dialogue is one prompt."""
    write_method(tmp_path, "curry", [
        _multi("a", "Write an article on Quantum Gravity", ARTICLE, "Can you summarize that article?"),
        _multi("b", "Write an article on Quantum Gravity", ARTICLE.replace("number 3", "number three"),
               "Can you summarize that article?"),
    ], sub="level=0")
    release, stats = build(tmp_path, methods=["curry"], test_fraction=0.0)
    assert removed(release).select("reason").to_series().to_list() == ["duplicate_prompt_near"]


def _oasst_paths(first_turn: str) -> list[list[dict]]:
    """Every prompter message two levels below the root whose tree opens with ``first_turn``: the dialogue to it."""
    for line in OASST.read_text(encoding="utf-8").split("\n"):
        tree = json.loads(line) if line else None
        if not tree or tree["prompt"]["text"] != first_turn:
            continue
        root = tree["prompt"]
        return [[{"role": "user", "content": root["text"]}, {"role": "assistant", "content": a["text"]},
                 {"role": "user", "content": u["text"]}]
                for a in root["replies"] for u in a.get("replies") or [] if not u.get("deleted")]
    return []


@pytest.mark.skipif(not OASST.exists(), reason="needs ../shared/data/real/oasst_en100")
def test_real_oasst_follow_ups_to_one_article_are_different_prompts(tmp_path):
    """OpenAssistant en_100: the article answering "Write an article on Quantum Gravity" has two follow-ups, "Can you
    summarize that article?" and a question on string theory's evidence; export kept one of them (removed the other
    as duplicate_prompt_near, the 2 near-duplicate removals of the real release being both such pairs)."""
    paths = _oasst_paths("Write an article on Quantum Gravity")
    by_answer: dict[str, list[list[dict]]] = {}
    for p in paths:
        by_answer.setdefault(p[1]["content"], []).append(p)
    shared = [ps for ps in by_answer.values() if len({p[2]["content"] for p in ps}) >= 2]
    assert shared, "the en_100 tree no longer has one answer with two follow-ups"
    rows = []
    for i, p in enumerate(shared[0][:2]):
        row = pair(f"q{i}", p[0]["content"], "curry", chosen=f"answer {i}", rejected=f"idk {i}", level=0)
        row["prompt"] = p
        rows.append(row)
    write_method(tmp_path, "curry", rows, sub="level=0")
    release, stats = build(tmp_path, methods=["curry"], test_fraction=0.0)
    assert removed(release).height == 0, removed(release).to_dicts()
