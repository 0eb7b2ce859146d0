"""PUGC and DOVE end to end (`dvc repro` on a copy of the project) with their judges behind an
OpenAI-compatible server on loopback (tests/openai_server.py), against the same run in-process.

The judges' steps are deterministic (``choose``: the query filter, the reference-guided scores, DOVE's
verdicts), so with the judges on the server and the sampled steps (queries, responses) in-process, every
output must equal the all-in-process run up to float rounding; a forced rerun of DOVE sends no request
(served from the request cache); the API key appears in no output, metric, lock or cache file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from tests.conftest import copy_project, dvc
from tests.openai_server import LoopbackServer

pytestmark = [pytest.mark.openai, pytest.mark.e2e]

KEY_ENV, KEY = "PREFPIPE_TEST_OPENAI_KEY", "sk-e2e-8d1f3a90b2c7e5"
OUTPUTS = ["data/pugc/queries", "data/pugc/responses", "data/pugc/pairs", "data/dove/pairs", "data/dove/rejects"]
METRICS = ["data/pugc/metrics.json", "data/dove/metrics.json", "data/pugc/details.json", "data/dove/details.json"]


def _edit(repo: Path, edit) -> None:
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _small(data: dict) -> None:
    """A few documents, prompts and rated answers, so both runs take seconds per stage."""
    limits = {"sample_posts": 3, "sample_prompts": 2, "sample_seed_pairs": 3, "sample_rated": 2}
    for source in data["ingest"]["sources"]:
        source["limit"] = limits.get(source["name"], source["limit"])
    data["pugc"]["responses_per_query"] = 2


def _without_selfie(repo: Path) -> None:
    """DOVE without Selfie's responses (in this copy only): Selfie has no judge, and skipping it keeps
    the test short."""
    path = repo / "dvc.yaml"
    stages = yaml.safe_load(path.read_text())
    dove = stages["stages"]["dove"]
    dove["deps"] = [d for d in dove["deps"] if not str(d).startswith("data/selfie")]
    path.write_text(yaml.safe_dump(stages, sort_keys=False))
    _edit(repo, lambda d: d["dove"].update(inputs=[i for i in d["dove"]["inputs"] if "selfie" not in i["responses"]]))


def _judges_on(url: str):
    def edit(data: dict) -> None:
        role = {"backend": "openai", "base_url": url, "api_key_env": KEY_ENV}
        data["pugc"]["roles"]["judge"] = dict(role)
        data["dove"]["roles"]["judge"] = dict(role)

    return edit


def _plain(value: Any) -> Any:
    """JSON text parsed; the params fingerprint (it covers the roles' backend) and the models' weights identity
    (``openai:<name>`` against the in-process ``tiny:<hash>``, checked on its own) left out."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("fingerprint", "identity")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def snapshot(repo: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for folder in OUTPUTS:
        files = sorted((repo / folder).glob("*.parquet"))
        out[folder] = _plain(pl.concat([pl.read_parquet(f) for f in files]).to_dicts()) if files else []
    for path in METRICS:
        out[path] = _plain(json.loads((repo / path).read_text()))
    return out


def assert_close(a: Any, b: Any, where: str = "") -> None:
    """Equal, floats within 1e-6 (the server scores with one forward pass, in-process with a KV cache)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=2e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer(api_key=KEY).start()
    yield srv
    srv.stop()


def test_pugc_and_dove_judges_through_the_server_equal_the_in_process_run_and_rerun_from_cache(
    server, tmp_path, monkeypatch
):
    cache = tmp_path / "requests"
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(cache))
    monkeypatch.setenv(KEY_ENV, KEY)
    repo = copy_project(tmp_path / "prefpipe")
    _edit(repo, _small)
    _without_selfie(repo)
    dvc(repo, "repro", "dove")  # ingest, pugc, dove: all in-process
    local = snapshot(repo)
    assert local["data/pugc/responses"] and local["data/dove/details.json"]["judged"] > 0
    assert server.requests() == 0

    _edit(repo, _judges_on(server.url))
    ran = set(re.findall(r"Running stage '([\w-]+)'", dvc(repo, "repro", "dove").stdout))
    assert ran == {"pugc", "dove"}, ran
    remote = snapshot(repo)
    assert_close(remote, local)
    for stage in ("pugc", "dove"):  # the details name the server's model, not the in-process build
        models = json.loads((repo / f"data/{stage}/details.json").read_text())["models"]
        assert models["judge"]["identity"] == "openai:tiny", models
    n = server.requests()
    # Every judge call scored its options with prompt_logprobs (option_scoring: sequence).
    assert server.requests("completions") == n >= len(local["data/pugc/queries"]) + len(local["data/pugc/responses"])

    # A forced rerun is served from the request cache: nothing reaches the server.
    dvc(repo, "repro", "-f", "-s", "dove")
    assert server.requests() == n
    assert_close(snapshot(repo), local)

    # The key is only in the environment: no output, metric, checkpoint, lock, params or cache file holds it.
    files = [repo / "params.yaml", repo / "dvc.lock",
             *[p for d in (repo / "data", repo / ".prefpipe", cache) for p in d.rglob("*") if p.is_file()]]
    assert len(files) > 20 and not [p for p in files if KEY.encode() in p.read_bytes()]
    assert KEY_ENV in (repo / "dvc.lock").read_text()

    # Issue #19: a response the server refuses to score (a content filter: a rerun is refused again) fails
    # that row only: PUGC finishes, drops it as judge_failed and counts it; the other scores are unchanged.
    texts = sorted(r["text"].strip() for r in local["data/pugc/responses"] if len(r["text"].strip()) >= 24)
    marker = texts[0][:24]
    server.refuse[marker] = (400, "The response was filtered due to the prompt triggering content management policy")
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "requests-fresh"))  # send everything again
    dvc(repo, "repro", "-f", "-s", "pugc")
    refused = snapshot(repo)
    scoring = refused["data/pugc/details.json"]["scoring"]
    assert scoring["dropped"].get("judge_failed", 0) >= 1
    assert scoring["kept"] == local["data/pugc/details.json"]["scoring"]["kept"] - scoring["dropped"]["judge_failed"]
    kept = {r["response_id"]: r["score"] for r in refused["data/pugc/responses"]}
    assert kept and not any(marker in r["text"] for r in refused["data/pugc/responses"])
    for r in local["data/pugc/responses"]:
        if r["response_id"] in kept:
            assert math.isclose(kept[r["response_id"]], r["score"], rel_tol=1e-6, abs_tol=2e-6)
