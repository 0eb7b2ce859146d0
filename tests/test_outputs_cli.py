"""A stage's outputs through the command line: a stage does not start on half-swapped outputs, OS errors (EROFS,
EACCES, ENOSPC, a real EFBIG) are one line before any model work, kill -9 during a spill leaves the old tables, a
second run of a stage fails in one line, SIGTERM is one line and exit 143, and a swap waits for its readers."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline import outputs as po
from pipeline.outputs import recover, stage_outputs
from tests.conftest import popen_tree, run_tree
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
                                "system's or the process's size limit (`ulimit -f`): raise it (`ulimit -f unlimited`) "
                                "or move data/ to a file system that allows larger files, and run the stage again"], err
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


# --- two runs at once, SIGTERM ---------------------------------------------------------------------------------
# The child runs ingest and, at HOOK, touches `ready` and waits for `go`: the parent acts at that moment.
HELD_RUN = """
import os, sys, time
from pathlib import Path
from pipeline import cli, outputs

def hold():
    Path("ready").touch()
    while not Path("go").exists():
        time.sleep(0.01)

real_commit, real_rename = outputs.commit_outputs, os.rename
if sys.argv[1] == "commit":  # before the commit: the tables are staged, nothing swapped in
    outputs.commit_outputs = lambda out: (hold(), real_commit(out))[1]
else:  # between the renames of the swap: the journal written, one table swapped in
    def rename(src, dst):  # os.rename everywhere: hold as the old documents table moves aside
        if Path(dst).parent.name == ".backup" and Path(dst).name == "documents":
            hold()
        real_rename(src, dst)
    outputs.os.rename = rename
sys.exit(cli.main(["run", "ingest"]))
"""


def _held_run(project: Path, root: Path, where: str):
    """The child ingest, started and waiting at ``where`` (``commit`` or ``swap``) once this returns."""
    (project / "held_run.py").write_text(HELD_RUN)
    proc = subprocess.Popen([sys.executable, "held_run.py", where], cwd=project, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    while not (project / "ready").exists():  # a file handshake: the child is at `where`
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    return proc


def _finish(project: Path, proc: subprocess.Popen) -> tuple[int, str]:
    (project / "go").touch()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_a_second_run_of_a_stage_fails_in_one_line_and_the_first_one_commits_whole(project, root, capsys):
    # A second terminal (or `dvc repro` beside a direct `prefpipe run`): the second run took the first one's
    # staging folder for an interrupted run's and removed it; the first then failed with a traceback (and had
    # the second not finished first, both wrote into one staging folder and the first commit swapped in a mix).
    assert cli.main(["run", "ingest"]) == 0
    clean = snapshot(project / "data" / "ingest")
    first = _held_run(project, root, "commit")
    try:
        assert cli.main(["run", "ingest"]) == 1
        assert capsys.readouterr().err == ("prefpipe: data/ingest: another run of ingest is writing it (it holds "
                                           ".prefpipe/locks/ingest.lock); wait for that run to finish, or stop it, "
                                           "then run ingest again\n")
    finally:
        code, err = _finish(project, first)
    assert code == 0, err
    assert snapshot(project / "data" / "ingest") == clean  # one whole run's tables, no staging left
    assert cli.main(["run", "ingest"]) == 0  # the lock went with the run


@pytest.mark.parametrize("where", ["commit", "swap"])
def test_sigterm_is_one_line_and_exit_143_and_leaves_one_whole_version(project, root, where):
    # SLURM and Kubernetes send SIGTERM, then SIGKILL after a grace period: the process died at once (exit -15),
    # with no message, its staging folder left, a model step's finished batches not checkpointed, and mid-swap a
    # journal and mixed tables until the next start. Before the commit: the old tables; during the swap (held
    # until it is done, as Ctrl-C is): the new ones.
    data = yaml.safe_load((project / "params.yaml").read_text())
    shipped = data["execution"]["target_shard_bytes"]
    data["execution"]["target_shard_bytes"] = 300  # the old version: other files, one shard per few rows
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["run", "ingest"]) == 0
    old = snapshot(project / "data" / "ingest")
    data["execution"]["target_shard_bytes"] = shipped
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _held_run(project, root, where)
    proc.send_signal(signal.SIGTERM)
    code, err = _finish(project, proc)
    assert code == 143, err
    assert err.splitlines() == ["prefpipe: terminated (SIGTERM); a stage's outputs change only when it finishes, "
                                "and the finished batches of its model steps are checkpointed: run it again to resume"]
    left = snapshot(project / "data" / "ingest")
    assert not any(k.startswith(".") for k in left)  # no staging folder, backup or journal
    assert cli.main(["run", "ingest"]) == 0
    assert (left == old) if where == "commit" else (left == snapshot(project / "data" / "ingest") != old)


READER_RUN = """
import sys, time
from pathlib import Path
import stages.wildfeedback
from pipeline import cli

def main(params):  # a stage reading two ingest tables, the second after `go`
    tables = Path("data/ingest")
    Path("read").write_bytes((tables / "conversations/_manifest.json").read_bytes())
    Path("ready").touch()
    while not Path("go").exists():
        time.sleep(0.01)
    with Path("read").open("ab") as f:
        f.write((tables / "prompts/_manifest.json").read_bytes())

stages.wildfeedback.main = main
sys.exit(cli.main(["run", "wildfeedback"]))
"""


def test_an_upstream_stage_swaps_its_outputs_in_only_once_no_stage_reads_them(project, root):
    # A stage (or export, or audit) started by hand while its upstream stage committed read one table of the old
    # version and the next of the new one: ingest swapped its tables in under a reader in mid-run.
    data = yaml.safe_load((project / "params.yaml").read_text())
    shipped = data["execution"]["target_shard_bytes"]
    data["execution"]["target_shard_bytes"] = 300  # the old version: other manifests
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["run", "ingest"]) == 0
    old = snapshot(project / "data" / "ingest")
    data["execution"]["target_shard_bytes"] = shipped
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (project / "reader_run.py").write_text(READER_RUN)
    env = {**os.environ, "PYTHONPATH": str(root)}
    with popen_tree([sys.executable, "reader_run.py"], cwd=project, env=env, text=True, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE) as reader:
        while not (project / "ready").exists():  # the reader has read one table and waits for `go`
            assert reader.poll() is None, reader.communicate()
            time.sleep(0.01)
        with popen_tree([sys.executable, "-m", "pipeline.cli", "run", "ingest"], cwd=project, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE) as writer:
            first = writer.stderr.readline()  # the writer's first word: it waits, or (before) it had swapped in
            (project / "go").touch()
            _, rest = writer.communicate(timeout=60)
        _, reader_err = reader.communicate(timeout=60)
    assert first == "WARNING pipeline.outputs: data/ingest: waiting for the runs reading it to finish before " \
                    "swapping in the new outputs\n", first + rest
    assert reader.returncode == 0 and writer.returncode == 0, reader_err + rest
    assert (project / "read").read_bytes() == old["conversations/_manifest.json"] + old["prompts/_manifest.json"]
    new = snapshot(project / "data" / "ingest")
    assert new != old and not any(k.startswith(".") for k in new)


# --- who holds the swap locks ----------------------------------------------------------------------------------


def _held(folder: Path) -> bool:
    """Whether an open lock holds ``folder``'s swap lock: an exclusive try through a descriptor of its own fails
    (flock locks belong to open files, so this also sees the locks of this very process)."""
    po.LOCK_ROOT.mkdir(parents=True, exist_ok=True)
    fd = os.open(po.LOCK_ROOT / f"{folder.name}.swap.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_run_lets_go_of_what_it_read_before_it_swaps_its_own_outputs_in(tmp_path, monkeypatch):
    # Two runs each reading the other's folder (a stage and export, a stage and audit) would each wait for the
    # other to finish before swapping: neither would.
    monkeypatch.chdir(tmp_path)
    read, own = Path("data/ingest"), Path("data/pugc")
    with po.reading([read]):
        assert _held(read) and not _held(own)
        with po.publishing(own):
            assert _held(own) and not _held(read)
    assert not _held(read) and not _held(own)


def test_audit_holds_the_release_against_a_swap_while_it_reads_it(tmp_path, monkeypatch):
    from pipeline import cli_read

    monkeypatch.chdir(tmp_path)
    release = tmp_path / "data" / "release"
    release.mkdir(parents=True)
    seen = []
    monkeypatch.setattr(cli_read, "_audit", lambda args, folder: seen.append(_held(folder)) or 0)
    assert cli.main(["audit", str(release)]) == 0 and seen == [True]
    assert not _held(release)


def test_audit_of_a_release_outside_the_project_leaves_no_lock_folder_behind(tmp_path, monkeypatch):
    # `cd ~/Downloads && prefpipe audit some-release` left a .prefpipe/locks folder there, a lock no export takes.
    from pipeline import cli_read

    here, release = tmp_path / "here", tmp_path / "downloads" / "release"
    here.mkdir()
    release.mkdir(parents=True)
    monkeypatch.chdir(here)
    monkeypatch.setattr(cli_read, "_audit", lambda args, folder: 0)
    assert cli.main(["audit", str(release)]) == 0 and cli.main(["audit", "../downloads/release"]) == 0
    assert list(here.iterdir()) == [] and list(release.parent.iterdir()) == [release]


def test_export_swaps_the_release_in_holding_its_lock(tmp_path, monkeypatch):
    from stages import export
    from tests.export_fixtures import build, standard_methods

    standard_methods(tmp_path)
    monkeypatch.chdir(tmp_path)
    real, seen = export.replace_dir, []

    def swap(src, dst):
        seen.append((Path(dst).name, _held(Path(dst))))
        real(src, dst)

    monkeypatch.setattr(export, "replace_dir", swap)
    build(tmp_path)
    assert seen == [("release", True)] and not _held(tmp_path / "data" / "release")
