"""Shared by the Selfie tests: small tables in the contracts, the real UltraFeedback pairs, a scripted engine, a
tmp project the stage runs in and its outputs read back."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import yaml

from pipeline.config import Sampling, Selfie
from pipeline.llm.base import Completion, LogProb
from pipeline.records import stable_id, to_table

SAMPLING = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=8, stop=[], seed=0)


# --- helpers ----------------------------------------------------------------------------------------


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def make_pairs(rows: list[tuple[str, str, str]], source: str = "uf") -> pa.Table:
    return to_table(
        [
            {
                "pair_id": stable_id(source, i),
                "prompt": user(p),
                "chosen": assistant(c),
                "rejected": assistant(r),
                "score_chosen": 9.0,
                "score_rejected": 2.0,
                "margin": 7.0,
                "method": "ingest",
                "source": source,
                "lineage": "{}",
            }
            for i, (p, c, r) in enumerate(rows)
        ],
        "pairs",
    )


def make_prompts(texts: list[str], source: str = "extra") -> pa.Table:
    return to_table(
        [
            {"prompt_id": f"{source}-{i}", "messages": user(t), "source": source, "origin_id": str(i)}
            for i, t in enumerate(texts)
        ],
        "prompts",
    )


def real_pairs(real) -> pa.Table:
    """The 200 real UltraFeedback pairs in the pairs contract (what ingest makes of them)."""
    path = real / "ultrafeedback_binarized" / "data" / "processed" / "eval_clean.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return to_table(
        [
            {
                "pair_id": stable_id("uf", r["source_index"]),
                "prompt": user(r["prompt"]),
                "chosen": assistant(r["chosen"]),
                "rejected": assistant(r["rejected"]),
                "score_chosen": r["metadata"]["score_chosen"],
                "score_rejected": r["metadata"]["score_rejected"],
                "method": "ingest",
                "source": "ultrafeedback",
                "lineage": "{}",
            }
            for r in rows
        ],
        "pairs",
    )


class FakeEngine:
    """Scripted engine: sample j of a prompt is ``"<prompt> #j"`` + j "!" (or a fixed script; a scripted text
    ending in "..." comes back cut off at max_new_tokens), the log-prob of a response is
    ``-scale * len(text) + offset`` (+ ``bonus`` for a text in ``liked``), ``n_tokens`` = number of words."""

    def __init__(
        self,
        name: str,
        scale: float = 1.0,
        offset: float = 0.0,
        script: dict[str, list[str]] | None = None,
        liked: set[str] = frozenset(),
        bonus: float = 0.0,
    ):
        self.name, self.scale, self.offset, self.script = name, scale, offset, script or {}
        self.liked, self.bonus = liked, bonus
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts, n=1, sampling=None, schema=None):
        self.calls.append(("generate", len(prompts)))
        return [
            [
                Completion(t, "length" if t.endswith("...") else "stop")
                for t in self.script.get(
                    p[-1]["content"], [f"{p[-1]['content']} #{j}{'!' * j}" for j in range(n)]
                )[:n]
            ]
            for p in prompts
        ]

    def logprobs(self, prompts, responses):
        self.calls.append(("logprobs", len(prompts)))
        return [
            LogProb(
                -self.scale * len(r) + self.offset + (self.bonus if r in self.liked else 0.0), len(r.split())
            )
            for r in responses
        ]

    def choose(self, prompts, options):
        raise AssertionError("Selfie judges from logprobs, never with choose")


def selfie_params(**over) -> Selfie:
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "params.yaml").read_text())["selfie"]
    data.update(over)
    return Selfie.model_validate(data)


def _project(tmp_path, monkeypatch, engines: dict[str, FakeEngine], on_gate_failure="error", **selfie_over):
    """A tmp project with ingest-like inputs (10 labelled pairs, 30 prompts, plus an unselected source)
    and ``get_engine`` answering with the scripted engines by model name. The reward gate is lowered
    (0.0) unless ``gates`` is given: the scripted rewards are not meant to pass it."""
    import pipeline.llm
    from pipeline.config import Params
    from pipeline.io import write_shards
    from tests.conftest import ROOT

    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engines[cfg.model], raising=False)
    monkeypatch.chdir(tmp_path)
    pairs = pa.concat_tables(
        [
            make_pairs(
                [(f"seed question {i}", f"good {i}", f"bad {i}") for i in range(10)],
                source="sample_seed_pairs",
            ),
            make_pairs([("unselected", "a", "b")], source="elsewhere"),
        ]
    )
    write_shards(pairs, tmp_path / "data/ingest/pairs", name="pairs")
    write_shards(
        make_prompts([f"pool question {i}" for i in range(30)], source="sample_prompts"),
        tmp_path / "data/ingest/prompts",
        name="prompts",
    )
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["ingest"] = {"sources": [], "max_reject_fraction": 0.5, "max_record_bytes": 1 << 20}
    data["execution"]["on_gate_failure"] = on_gate_failure
    data["selfie"].update({"gates": {"reward": 0.0}, **selfie_over})
    data["selfie"]["sampling"]["max_new_tokens"] = 8
    return Params.model_validate(data)


def _out(tmp_path, name: str, contract: str):
    from pipeline.io import read_table

    return read_table(tmp_path / "data/selfie" / name, contract)


def _pairs(tmp_path) -> pl.DataFrame:
    """Every pair under data/selfie/pairs, read the way the release reads it."""
    from stages.export_read import read_pairs_tree

    return pl.from_arrow(read_pairs_tree(tmp_path / "data/selfie/pairs", "pairs"))


def _metrics(tmp_path) -> dict:
    return json.loads((tmp_path / "data/selfie/details.json").read_text())
