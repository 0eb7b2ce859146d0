"""Shared by the PUGC tests: params, hand-written documents, the scripted ``FakeEngine`` (a deterministic test
double of the Engine protocol: it reads which template a prompt came from and answers as scripted, recording every
call) and the stage helpers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from pipeline.config import LLM, Params, Pugc, resolve_params
from pipeline.gates import load_probes
from pipeline.io import write_shards
from pipeline.llm.base import Completion, GenerationFailure
from pipeline.records import to_table
from stages.pugc import Query
from stages.pugc_judge import Vote

ROOT = Path(__file__).resolve().parents[1]
SAMPLING = LLM.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text())["llm"]).sampling


def make_params(on_gate_failure: str = "error", **pugc_overrides) -> Params:
    """The project's params (every test here runs the tiny model or a fake, so ``tiny_overrides`` apply,
    through ``resolve_params``), with ``pugc_overrides`` winning over them; documents come from source
    "posts"."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["execution"].update(checkpoint_rows=8, on_gate_failure=on_gate_failure)
    data["pugc"].update({"sources": ["posts"], **pugc_overrides})
    tiny = data["tiny_overrides"]["pugc"]
    data["tiny_overrides"]["pugc"] = {k: v for k, v in tiny.items() if k not in pugc_overrides}
    return resolve_params(data)


CFG = make_params().pugc

ENGLISH = (
    "I bought a cheap burr grinder last month and it has been great for my pour over coffee in the morning, "
    "but when I try to grind fine enough for espresso the motor gets hot and the grounds come out uneven. "
    "Is it worth upgrading to a better grinder if I only make espresso on the weekends with my old machine?"
)
SPANISH = (
    "Compré un molinillo barato el mes pasado y funciona muy bien para el café de filtro por la mañana, "
    "pero cuando intento moler fino para espresso el motor se calienta y la molienda sale muy desigual. "
    "Vale la pena comprar un molinillo mejor si solo hago espresso los fines de semana con mi vieja máquina?"
)
RUSSIAN = "Я купил дешёвую кофемолку в прошлом месяце, и она отлично подходит для фильтра по утрам, " * 3


def docs_frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "title": [None] * len(rows),
            "source": ["posts"] * len(rows),
            "score": [None] * len(rows),
        },
        schema={
            "doc_id": pl.String,
            "text": pl.String,
            "title": pl.String,
            "source": pl.String,
            "score": pl.Float64,
        },
    )


def reasons(frame: pl.DataFrame) -> dict[str, str | None]:
    return dict(frame.select("doc_id", "drop").iter_rows())


PROBE_QUERIES = {r["query"]: r["answerable"] for r in load_probes("pugc_query_filter")}
PROBE_ANSWERS = {
    text: kind for r in load_probes("pugc_scorer") for kind, text in [("good", r["good"]), *r["bad"].items()]
}


class FakeEngine:
    """Answers by template: query writing, the True/False filter, policy samples, 1-5 judgments.

    - documents containing FAIL get a GenerationFailure, LEAK a leaking query, COPY the template's
      placeholder ``<the query>``, SHORTQ the one-word query "What?",
      UNANSWERABLE p(True)=0.1;
    - policy sample i of a query is "answer i: <query>" ("" for i == 2 when the query holds EMPTYREPLY;
      cut off at max_new_tokens for i == 3 when it holds CUTOFF);
    - the judge's p("1".."5") peaks on score i+1 for sample i (choose), votes i+1 when sampling;
    - probes (pipeline/probes/pugc_*.jsonl): a ``sharp`` judge answers them right (p(True) 0.9 / 0.1, good
      answers 5, bad ones 1); a ``flat`` judge gives what the issue measured with a 135M model: p(True)
      0.87 for every query, expected score ~2.9 for every answer.
    """

    name = "fake"

    def __init__(self, judge: str = "sharp"):
        self.judge = judge
        self.calls: list[tuple[str, list[str], int]] = []

    @staticmethod
    def _fenced(content: str, tag: str) -> str:
        return re.search(rf"<<<{tag}\n(.*?)\n{tag}>>>", content, re.S).group(1)

    def _score(self, content: str) -> int:
        """The score (1-5) a sharp judge gives the fenced response."""
        response = self._fenced(content, "RESPONSE")
        if response in PROBE_ANSWERS:
            return 5 if PROBE_ANSWERS[response] == "good" else 1
        return int(response.split(":")[0].split()[-1]) + 1

    def generate(self, prompts, n=1, sampling=None, schema=None):
        contents = [p[-1]["content"] for p in prompts]
        self.calls.append(("generate", contents, n))
        out = []
        for c in contents:
            if schema is Query:
                doc = self._fenced(c, "DOCUMENT")
                if "FAIL" in doc:
                    out.append([GenerationFailure("schema: missing 'query'", "{", 3)] * n)
                else:
                    q = (
                        "According to the post, why?"
                        if "LEAK" in doc
                        else "<the query>"
                        if "COPY" in doc
                        else "What?"
                        if "SHORTQ" in doc
                        else f"What about {' '.join(doc.split()[:6])}?"
                    )
                    q += " EMPTYREPLY" if "EMPTYREPLY" in doc else ""
                    q += " CUTOFF" if "CUTOFF" in doc else ""
                    out.append([Query(query=q) for _ in range(n)])
            elif schema is Vote:
                score = self._score(c) if self.judge == "sharp" else 3
                out.append([Vote(score=score) for _ in range(n - 1)] + [GenerationFailure("bad", "x", 1)])
            else:
                out.append(
                    [
                        Completion(f"answer {i}: {c}"[:20], "length")
                        if i == 3 and "CUTOFF" in c
                        else Completion("" if i == 2 and "EMPTYREPLY" in c else f"answer {i}: {c}")
                        for i in range(n)
                    ]
                )
        return out

    def choose(self, prompts, options):
        contents = [p[-1]["content"] for p in prompts]
        self.calls.append(("choose", contents, len(options)))
        if options == ["True", "False"]:
            out = []
            for c in contents:
                query = self._fenced(c, "QUERY")
                if self.judge == "flat":
                    out.append([0.87, 0.13])
                elif query in PROBE_QUERIES:
                    out.append([0.9, 0.1] if PROBE_QUERIES[query] else [0.1, 0.9])
                else:
                    out.append([0.1, 0.9] if "UNANSWERABLE" in self._fenced(c, "DOCUMENT") else [0.9, 0.1])
            return out
        out = []
        for c in contents:
            p = np.full(5, 0.05)
            if self.judge == "flat":  # E = 2.9, whatever the answer
                p = np.array([0.15, 0.2, 0.3, 0.25, 0.1])
            else:
                p[self._score(c) - 1] = 0.8
            out.append(p.tolist())
        return out

    def logprobs(self, prompts, responses):
        raise AssertionError("PUGC does not use logprobs")


def use_engine(monkeypatch, engine: FakeEngine) -> FakeEngine:
    import pipeline.llm

    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engine, raising=False)
    return engine


POSTS = [
    ENGLISH,
    "My landlord says I have to pay for the broken dishwasher even though it was old when I moved in and the "
    "repair man told me the pump just wore out from age. I have photos from the day I moved in.",
    "We adopted a rescue dog two weeks ago and she barks at every person who walks past our window, all day "
    "long. We tried closing the curtains and giving her treats when she is quiet, but nothing worked.",
    "I am thirty and want to switch careers from accounting to software development. I have been learning "
    "Python at night for a year and built two small web apps, but I do not know how to get my first job.",
    "Our team lead keeps scheduling meetings at six in the evening because he works from another time zone. "
    "Most of us have kids and it is hard to say no to him when he decides on our yearly reviews and bonuses.",
    "My sourdough starter smells like nail polish remover after a few days in the fridge and the bread "
    "comes out flat and dense. I feed it with white flour once a week and keep it in a glass jar.",
    "The wifi in our flat drops every evening around eight when the neighbours get home, and the router "
    "shows dozens of other networks on the same channel. Would moving to the five gigahertz band fix it?",
]


def write_documents(path, rows: list[dict]) -> None:
    write_shards(to_table(rows, "documents"), path, name="documents")


def check_accounting(m: dict, cfg: Pugc) -> None:
    """Each step keeps or drops (with a reason) every row, and takes the previous step's output as input."""
    for step in ("prefilter", "queries", "query_filter", "sampling", "scoring", "pairs"):
        assert m[step]["in"] == m[step]["kept"] + sum(m[step]["dropped"].values()), step
    assert m["prefilter"]["in"] == m["input"]["selected"]
    assert m["queries"]["in"] == m["prefilter"]["kept"] * cfg.queries_per_document
    assert m["query_filter"]["in"] == m["queries"]["kept"]
    assert m["sampling"]["in"] == m["query_filter"]["kept"] * cfg.responses_per_query
    assert m["scoring"]["in"] == m["sampling"]["kept"]
    assert m["pairs"]["in"] == m["query_filter"]["kept"]
