"""A stage's outputs through the command line: a stage does not start on half-swapped outputs, OS errors (EROFS,
EACCES, ENOSPC, a real EFBIG) are one line before any model work, kill -9 during a spill leaves the old tables."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline import outputs as po
from pipeline.outputs import recover, stage_outputs
from tests.conftest import run_tree
from tests.output_sets import Killed, _read_only, snapshot, write_set


@pytest.fixture
def project(root, tmp_path, monkeypatch) -> Path:
    """A working folder whose params read the samples from the checkout."""
    data = yaml.safe_load((root / "params.yaml").read_text())
    for src in data["ingest"]["sources"]:
        src["path"] = str(root / src["path"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_stage_does_not_start_on_outputs_another_stage_left_half_swapped(project, monkeypatch, capsys):
    # PUGC killed mid-swap: data/pugc holds new pairs and old metrics until PUGC runs again. Curry-DPO (or
    # export) started by hand read that mix, and export skipped a method whose pairs were moved away.
    import stages.curry

    pugc = project / "data" / "pugc"
    with stage_outputs(pugc) as staged:
        write_set(staged, "old")
    real = os.rename
    monkeypatch.setattr(po.os, "rename", lambda s, d: (_ for _ in ()).throw(Killed) if "rejects" in str(s) else real(s, d))
    with pytest.raises(Killed):
        with stage_outputs(pugc) as staged:
            write_set(staged, "new")
    monkeypatch.setattr(po.os, "rename", real)
    monkeypatch.setattr(stages.curry, "main", lambda params: pytest.fail("curry read half-swapped inputs"))
    assert cli.main(["run", "curry"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prefpipe: data/pugc: a killed run left these outputs half "
                                                   "swapped in; run that stage again first (`prefpipe run pugc`")
    recover(pugc)  # what `prefpipe run pugc` does first
    assert snapshot(pugc)["pairs/part-0.parquet"] == b"pairs new" and cli.prepare_outputs("curry", stages.curry)


@pytest.mark.parametrize(("code", "advice"), [
    (errno.EROFS, "Read-only file system (EROFS); the file system is read-only"),
    (errno.EACCES, "Permission denied (EACCES); no permission to write there"),
    (errno.ENOSPC, "No space left on device (ENOSPC); the disk is full"),
])
def test_an_unwritable_output_fails_in_one_line_before_any_model_work(project, monkeypatch, capsys, code, advice):
    import stages.pugc

    def fails(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(po.os, "fsync", fails)
    monkeypatch.setattr(stages.pugc, "main", lambda params: pytest.fail("model work started"))
    assert cli.main(["run", "pugc"]) == 1
    err = capsys.readouterr().err
    assert err == f"prefpipe: cannot write data/pugc: {advice}: {po.ADVICE[code].split(': ', 1)[1]}\n"


def test_a_full_disk_during_ingest_is_one_line_and_keeps_the_old_tables(project, monkeypatch, capsys):
    from pipeline import io as pio

    assert cli.main(["run", "ingest"]) == 0
    before = snapshot(project / "data" / "ingest")
    calls = []
    real = pio._write_shard

    def full_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(pio, "_write_shard", full_on_third)
    assert cli.main(["run", "ingest"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["prefpipe: cannot write data/ingest: No space left on device (ENOSPC); the disk is full: "
                                "free some space (or move data/ to a larger disk) and run the stage again"]
    assert snapshot(project / "data" / "ingest") == before  # not documents new and conversations old


def _run_cli(project: Path, root: Path, *prefix: str) -> subprocess.CompletedProcess:
    code = "; ".join(["import sys", *prefix, "from pipeline import cli", "sys.exit(cli.main(['run', 'ingest']))"])
    return run_tree([sys.executable, "-c", code], cwd=project, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)


def test_a_real_file_size_limit_is_one_line(project, root):
    """A real fault, not a mock: RLIMIT_FSIZE makes writes past 100 kB fail with EFBIG."""
    big = project / "big.jsonl"
    with big.open("w") as f:
        for i in range(400):
            f.write(json.dumps({"id": f"d{i}", "text": " ".join(f"w{(i * 7919 + j * 104729) % 99991}" for j in range(300))}) + "\n")
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["ingest"]["sources"][1]["path"] = str(big)  # sample_posts: documents
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _run_cli(project, root, "import resource, signal", "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)",
                    "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))")
    err = proc.stderr
    assert proc.returncode == 1, err
    assert err.splitlines() == ["prefpipe: cannot write data/ingest: File too large (EFBIG); a file grew past the file "
                                "system's or the process's size limit (`ulimit -f`)"], err
    assert not (project / "data" / "ingest" / po.STAGING).exists()


def test_kill_9_during_a_spill_leaves_the_old_tables_and_the_next_run_cleans_up(project, root):
    convs = project / "convs.jsonl"
    with convs.open("w") as f:
        for i in range(4_500):  # rows reach the writer 2,048 at a time: two spills
            f.write(json.dumps({"conversation_id": f"c{i}", "conversation": [
                {"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 20}]}) + "\n")
    assert cli.main(["run", "ingest"]) == 0  # the samples: the "old" tables
    before = snapshot(project / "data" / "ingest")
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["ingest"]["sources"][0]["path"] = str(convs)
    data["execution"]["spill_bytes"] = 20_000
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    # the process kills itself (SIGKILL: no handler, no cleanup) right after its second spilled run
    proc = _run_cli(project, root, "import os, signal", "from pipeline import io", "real = io.ShardWriter._spill",
                    "spill = lambda w: (real(w), len(w._runs) == 2 and os.kill(os.getpid(), signal.SIGKILL))",
                    "io.ShardWriter._spill = spill")
    assert proc.returncode == -signal.SIGKILL
    left = snapshot(project / "data" / "ingest")
    assert {k: v for k, v in left.items() if not k.startswith(".staging/")} == before  # the old tables, untouched
    assert list((project / "data" / "ingest" / po.STAGING).glob(".conversations.tmp-*/_runs/run-00001.parquet"))
    assert cli.main(["run", "ingest"]) == 0
    assert sorted(p.name for p in (project / "data" / "ingest").iterdir()) == [
        "conversations", "details.json", "documents", "metrics.json", "pairs", "prompts", "rejects", "responses"]
    metrics = json.loads((project / "data" / "ingest" / "details.json").read_text())
    assert metrics["totals"]["conversations"] == 4_500


def test_a_read_only_output_folder_fails_the_stage_before_any_work(project, monkeypatch, capsys):
    import stages.ingest

    assert cli.main(["run", "ingest"]) == 0
    _read_only(monkeypatch, Path("data/ingest/prompts"))
    monkeypatch.setattr(stages.ingest, "main", lambda params: pytest.fail("the stage started"))
    assert cli.main(["run", "ingest"]) == 1
    assert capsys.readouterr().err == (f"prefpipe: cannot write data/ingest/prompts: Permission denied (EACCES); "
                                       f"{po.ADVICE[errno.EACCES]}\n")
