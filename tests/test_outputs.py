"""A stage's outputs change together or not at all; interrupted runs are finished or discarded at the next
start; OS errors are one line naming the path and what to do; outputs are checked writable first. The same
through the command line (a stage run by `prefpipe run`): test_outputs_cli.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import outputs as po
from pipeline.outputs import OutputError, check_writable, os_error_line, recover, stage_outputs
from tests.output_sets import Killed, _read_only, snapshot, write_set


def release_and_built(data: Path) -> tuple[Path, Path]:
    """An old release and the new one built beside it (``replace_dir``'s two folders) in ``data``."""
    release, built = data / "release", data / ".release.tmp"
    write_set(release, "old")
    write_set(built, "new")
    return release, built


@pytest.fixture
def old(tmp_path) -> Path:
    out = tmp_path / "stage"
    with stage_outputs(out) as staged:
        write_set(staged, "old")
    (out / ".gitignore").write_text("/pairs\n")  # DVC's: never touched
    return out


def test_outputs_are_swapped_in_together(old):
    assert snapshot(old) == {".gitignore": b"/pairs\n", "metrics.json": b'{"run": "old"}',
                             "pairs/part-0.parquet": b"pairs old", "rejects/part-0.parquet": b"rejects old"}
    with stage_outputs(old) as staged:
        write_set(staged, "new")
        assert snapshot(old)["metrics.json"] == b'{"run": "old"}'  # nothing visible before the block ends
    assert snapshot(old) == {".gitignore": b"/pairs\n", "metrics.json": b'{"run": "new"}',
                             "pairs/part-0.parquet": b"pairs new", "rejects/part-0.parquet": b"rejects new"}


def test_a_failing_block_changes_nothing(old):
    before = snapshot(old)
    with pytest.raises(RuntimeError, match="model died"):
        with stage_outputs(old) as staged:
            write_set(staged, "new")
            raise RuntimeError("model died")
    assert snapshot(old) == before and sorted(p.name for p in old.iterdir()) == [".gitignore", "metrics.json",
                                                                                    "pairs", "rejects"]


def swap_killed_after(old: Path, renames: int, monkeypatch) -> list[str]:
    """Stage a new set over ``old`` and kill the swap before its rename number ``renames + 1``; the renames done
    ("src->parent/dst")."""
    done: list[str] = []
    real = os.rename

    def dies(src, dst):
        if len(done) == renames:
            raise Killed
        done.append(f"{Path(src).name}->{Path(dst).parent.name}/{Path(dst).name}")
        real(src, dst)

    monkeypatch.setattr(po.os, "rename", dies)
    with pytest.raises(Killed):
        with stage_outputs(old) as staged:
            write_set(staged, "new")
    monkeypatch.setattr(po.os, "rename", real)
    return done


def test_a_crash_mid_swap_is_rolled_forward_at_the_next_start(old, monkeypatch):
    renames = swap_killed_after(old, 3, monkeypatch)
    # folders first, each: old one to the backup, new one into place; metrics would come last
    assert renames == ["pairs->.backup/pairs", "pairs->stage/pairs", "rejects->.backup/rejects"]
    assert (old / po.JOURNAL).exists() and not (old / "rejects").exists()  # mid-swap: mixed, journal says so
    recover(old)
    assert snapshot(old) == {".gitignore": b"/pairs\n", "metrics.json": b'{"run": "new"}',
                             "pairs/part-0.parquet": b"pairs new", "rejects/part-0.parquet": b"rejects new"}


def test_metrics_are_swapped_in_last_whatever_the_other_files_are_called(old, monkeypatch):
    # a reader that sees the new metrics sees every new table: files named after "metrics" go first too
    moved: list[str] = []
    real = os.rename
    monkeypatch.setattr(po.os, "rename", lambda src, dst: (moved.append(Path(dst).name), real(src, dst))[1])
    with stage_outputs(old) as staged:
        write_set(staged, "new")
        (staged / "samples.json").write_text("{}")
    tables = [i for i, name in enumerate(moved) if name in ("pairs", "rejects", "samples.json")]
    assert tables and max(tables) < moved.index("metrics.json")


def test_discarding_the_staged_outputs_keeps_a_swap_the_journal_has_started(old, monkeypatch):
    swap_killed_after(old, 2, monkeypatch)
    po.discard_staged(old)  # the journal is there: the staged rest is what recover rolls forward
    assert (old / po.STAGING).exists()
    recover(old)
    assert snapshot(old)["rejects/part-0.parquet"] == b"rejects new"


def test_a_folder_publish_whose_second_rename_fails_keeps_the_old_folder_for_recover(tmp_path, monkeypatch):
    from pipeline import files

    release, built = release_and_built(tmp_path)
    real = os.rename

    def second_fails(src, dst):
        if Path(src) == built:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(files.os, "rename", second_fails)
    with pytest.raises(OSError, match="I/O error"):
        files.replace_dir(built, release)
    monkeypatch.setattr(files.os, "rename", real)
    recover(release)
    assert snapshot(release)["metrics.json"] == b'{"run": "old"}'


def test_a_crash_before_the_journal_is_rolled_back_at_the_next_start(old, monkeypatch):
    before = snapshot(old)
    monkeypatch.setattr(po, "commit_outputs", lambda out: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):
        with stage_outputs(old) as staged:
            write_set(staged, "new")
    assert (old / po.STAGING).exists() and not (old / po.JOURNAL).exists()
    recover(old)
    assert snapshot(old) == before and not (old / po.STAGING).exists()


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from pipeline.files import replace_dir
real, calls = os.rename, []
def rename(src, dst):
    calls.append(src)
    if len(calls) == 2:  # the old folder is moved away, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.rename = rename
replace_dir(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_folder_published_by_rename_and_killed_between_the_renames_is_restored(root, tmp_path):
    # Export renames its finished release over data/release (replace_dir). Killed between the two renames it
    # left no data/release and the old one as data/.release.old-*, which nothing removed or put back.
    release, built = release_and_built(tmp_path / "data")
    before = snapshot(release)
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(built), str(release)], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -signal.SIGKILL and not release.exists()
    recover(release)  # what `prefpipe run export` does first
    assert snapshot(release) == before and sorted(p.name for p in release.parent.iterdir()) == ["release"]
    # Later leftovers beside a complete folder are removed; the folder itself is kept.
    for name in (".release.old-1a2b3c4d", ".release.tmp", ".release.tmp-deadbeef"):
        write_set(release.parent / name, name)
    (release.parent / ".release.rejected").mkdir()  # a candidate that failed its audit: kept for the user
    recover(release)
    assert snapshot(release) == before
    assert sorted(p.name for p in release.parent.iterdir()) == [".release.rejected", "release"]


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt during the test, as in a terminal: a suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and then a Ctrl-C rightly changes nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_between_the_renames_of_a_folder_publish_takes_effect_after_them(tmp_path, monkeypatch, ctrl_c_raises):
    from pipeline import files

    release, built = release_and_built(tmp_path)
    real = os.rename

    def ctrl_c_on_the_first(src, dst):
        if Path(src) == release:
            os.kill(os.getpid(), signal.SIGINT)
        real(src, dst)

    monkeypatch.setattr(files.os, "rename", ctrl_c_on_the_first)
    with pytest.raises(KeyboardInterrupt):
        files.replace_dir(built, release)
    assert snapshot(release)["metrics.json"] == b'{"run": "new"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]


def test_ctrl_c_during_the_swap_takes_effect_once_the_swap_is_done(old, monkeypatch, ctrl_c_raises):
    # Ctrl-C landing between two renames of the swap left the outputs half swapped (a journal, new pairs,
    # old metrics) while prefpipe said that they change only when the stage finishes.
    real, renames = os.rename, []

    def ctrl_c_on_the_second(src, dst):
        renames.append(src)
        if len(renames) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        real(src, dst)

    monkeypatch.setattr(po.os, "rename", ctrl_c_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        with stage_outputs(old) as staged:
            write_set(staged, "new")
    assert len(renames) == 6 and not (old / po.JOURNAL).exists()
    assert snapshot(old) == {".gitignore": b"/pairs\n", "metrics.json": b'{"run": "new"}',
                             "pairs/part-0.parquet": b"pairs new", "rejects/part-0.parquet": b"rejects new"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again


def test_stale_temporaries_are_removed_at_stage_start(old):
    litter = [".conversations.tmp-1a2b3c4d/_runs/run-00000.parquet", ".metrics.json.tmp-deadbeef",
              ".pairs.old-01234567/part-0.parquet", ".staging/pairs/part-0.parquet", ".backup/x"]
    for rel in litter:
        (old / rel).parent.mkdir(parents=True, exist_ok=True)
        (old / rel).write_bytes(b"x" * 1000)
    (old / "notes.tmp-1a2b3c4d").write_text("a user's file")  # not hidden: not ours
    with stage_outputs(old) as staged:
        write_set(staged, "new")
    assert sorted(p.name for p in old.iterdir()) == [".gitignore", "metrics.json", "notes.tmp-1a2b3c4d", "pairs",
                                                     "rejects"]


def test_an_os_error_in_the_block_names_the_output_folder(old):
    with pytest.raises(OSError) as err:
        with stage_outputs(old):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os_error_line(err.value) == (f"cannot write {old}: No space left on device (ENOSPC); the disk is full: "
                                        "free some space (or move data/ to a larger disk) and run the stage again")


def test_arrow_errors_carry_the_errno_in_their_message():
    e = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert os_error_line(e, "data/x").startswith("cannot write data/x: No space left on device (ENOSPC)")
    assert os_error_line(OSError(errno.ENOENT, "No such file or directory")) is None  # not ours to explain


def test_check_writable_creates_and_probes(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError) as err:  # was "[Errno 20] Not a directory" (and "[Errno 17] File exists")
        check_writable(tmp_path / "file" / "out")
    assert str(err.value) == (f"cannot write {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file, not a "
                              "folder; move it away (or remove it) and run the stage again")
    with pytest.raises(OutputError, match=r"cannot write .*/file: .*/file is a file, not a folder; move it away"):
        check_writable(tmp_path / "file")
    (tmp_path / "gone").symlink_to(tmp_path / "unmounted" / "out")  # was "[Errno 17] File exists: '.../gone'"
    for path in (tmp_path / "gone", tmp_path / "gone" / "ingest"):
        with pytest.raises(OutputError) as err:
            check_writable(path)
        assert str(err.value) == (f"cannot write {path}: {tmp_path / 'gone'} is a link to {tmp_path / 'unmounted' / 'out'}, "
                                  "which does not exist; create that folder or remove the link and run the stage again")


def test_a_full_disk_while_export_writes_its_card_keeps_the_old_release_and_leaves_no_candidate(tmp_path, monkeypatch):
    # The shards fit, the audit report does not: the old release stays whole, and the half-built folder beside
    # it is removed (it used to stay in data/.release.tmp, holding the space the user was told to free).
    import stages.export as export
    from tests.export_fixtures import export_cfg, standard_methods

    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    export.build_release(export_cfg(), tmp_path, release, "fp-old")
    before = snapshot(release)

    def full(obj, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "write_json_atomic", full)
    with pytest.raises(OSError) as err:
        export.build_release(export_cfg(), tmp_path, release, "fp-new")
    assert err.value.errno == errno.ENOSPC
    assert snapshot(release) == before
    assert sorted(p.name for p in release.parent.iterdir()) == ["curry", "dove", "pugc", "release", "selfie"]


def test_a_read_only_output_folder_fails_the_commit_before_any_swap(old, monkeypatch):
    """Was a swap stopped halfway: pairs new, rejects old, a journal, and every other stage refusing to start."""
    before = snapshot(old)
    _read_only(monkeypatch, old / "rejects")
    with pytest.raises(PermissionError) as err, stage_outputs(old) as staged:
        write_set(staged, "new")
    assert os_error_line(err.value) == (f"cannot write {old / 'rejects'}: Permission denied (EACCES); "
                                        f"{po.ADVICE[errno.EACCES]}")
    assert snapshot(old) == before  # no journal, no staging, the old tables



def test_a_file_system_turned_read_only_mid_run_names_the_table_not_its_temporary(old, monkeypatch):
    """A remount read-only while ingest streamed its tables (data/ on a tmpfs, `mount -o remount,ro` after the first
    source) said `cannot write data/ingest/.staging/.rejects.tmp-cc1c83b3`: the line names the table."""
    from pipeline.io import ShardWriter

    before, real_mkdir = snapshot(old), os.mkdir
    with pytest.raises(OSError) as err, stage_outputs(old) as staged:
        def read_only(path, *args, **kwargs):  # what the kernel says once the file system is read-only
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(os, "mkdir", read_only)
        with ShardWriter(staged / "rejects", spill_bytes=1) as w:
            w.write(pa.table({"id": ["a", "b"]}))
    monkeypatch.setattr(os, "mkdir", real_mkdir)
    assert os_error_line(err.value) == f"cannot write {old / 'rejects'}: Read-only file system (EROFS); {po.ADVICE[errno.EROFS]}"
    assert snapshot(old) == before


def test_an_output_folder_made_read_only_is_named_not_the_write_check_probe(tmp_path, monkeypatch):
    """`prefpipe run ingest` on a read-only data/ingest said `cannot write data/ingest/.write-check.tmp-d5b5f46d`."""
    out = tmp_path / "ingest"
    out.mkdir()

    def refuse(path, *args, **kwargs):  # open() of a new file in a folder without write permission (not as root)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(po, "open", refuse, raising=False)
    with pytest.raises(OutputError) as err:
        check_writable(out)
    assert str(err.value) == f"cannot write {out}: Permission denied (EACCES); {po.ADVICE[errno.EACCES]}"



def test_a_project_below_a_folder_named_like_the_staging_folder_keeps_its_path(tmp_path, monkeypatch):
    """Only what lies below the project root is read as staging or a temporary: a checkout in ~/.backup/ is named so."""
    project = tmp_path / po.BACKUP / "proj"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    for written, named in ((project / "data" / "ingest", project / "data" / "ingest"),
                           (project / "data" / "ingest" / po.STAGING / "metrics.json", project / "data" / "ingest" / "metrics.json")):
        assert os_error_line(OSError(errno.EROFS, os.strerror(errno.EROFS), str(written))) == (
            f"cannot write {named}: Read-only file system (EROFS); {po.ADVICE[errno.EROFS]}")


def test_a_stale_temporary_that_cannot_be_removed_is_named_whole(old, monkeypatch):
    """Was 'prefpipe: cannot write part-0.parquet: Permission denied': rmtree names a file without its folder,
    left where the export's old release had a read-only sub-folder."""
    stale = old / ".pairs.tmp-0123abcd"
    (stale / "sub").mkdir(parents=True)

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "part-0.parquet")

    monkeypatch.setattr(po.shutil, "rmtree", refuse)
    with pytest.raises(OutputError) as err:
        recover(old)
    assert str(err.value) == (f"{stale}: left by an interrupted run and cannot be removed (Permission denied, EACCES); "
                              f"make it writable (chmod -R u+w {stale}) or remove it by hand, then run the stage again")



def test_a_staging_folder_left_on_a_file_system_now_read_only_says_so_not_chmod(old, monkeypatch):
    """A run stopped by a remount read-only leaves its .staging/ (it cannot be removed); the next start said to
    `chmod -R u+w` it, which a read-only file system refuses as well."""
    (old / po.STAGING / "pairs").mkdir(parents=True)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(po.shutil, "rmtree", read_only)
    with pytest.raises(OutputError) as err:
        recover(old)
    assert str(err.value) == (f"{old / po.STAGING}: left by an interrupted run and cannot be removed (Read-only file "
                              f"system, EROFS); {po.ADVICE[errno.EROFS]}")


def test_a_full_disk_while_writing_the_journal_leaves_nothing_behind(old, monkeypatch):
    """Was a '.commit.json.tmp-*' left in the output folder (seen with data/ on a small tmpfs)."""
    before = snapshot(old)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(po.os, "fsync", full)
    with pytest.raises(OSError), stage_outputs(old) as staged:
        write_set(staged, "new")
    assert snapshot(old) == before



# A real fault, not a mock: writes past 50 kB fail with EFBIG (SIGXFSZ ignored, as Python does by default).
POLARS_PAST_LIMIT = """
import resource, signal, sys
import polars as pl
from pipeline.outputs import os_error_line, stage_outputs
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
try:
    with stage_outputs(sys.argv[1]) as out:
        pl.DataFrame({"text": ["x" * 100_000]}).write_ndjson(out / "removed.jsonl")
except OSError as e:
    print(os_error_line(e))
"""


def test_a_polars_write_past_a_real_file_size_limit_is_one_line(old):
    """Polars (Rust's I/O error) gives the errno only in its text, "(os error 27)": export's removed.jsonl on a full
    disk (the samples on a small tmpfs) was a 30-line traceback where Arrow's and Python's writes were one line."""
    before = snapshot(old)
    proc = subprocess.run([sys.executable, "-c", POLARS_PAST_LIMIT, str(old)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])
    assert proc.stdout.strip() == f"cannot write {old}: File too large (EFBIG); {po.ADVICE[errno.EFBIG]}", proc.stderr
    assert snapshot(old) == before
