"""Input boundaries, third pass (files and paths): a source that cannot be read as a whole fails the stage
before any work, or as soon as it is found, in one line naming it and what to do; before each fix below it
hung, failed with a message that named the wrong thing, or left data out without a word."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.io import SourceError
from stages.ingest import run
from tests.conftest import ROOT
from tests.test_ingest import with_ingest


@pytest.mark.parametrize("make", ["fifo", "device"])
def test_a_source_that_is_a_pipe_or_a_device_fails_before_any_work_in_one_line(params, tmp_path, make):
    """Was a hang: a named pipe blocked on open (and its first 256 bytes went to the encoding check), a link to
    /dev/zero was read for ever."""
    path = tmp_path / "p.jsonl"
    os.mkfifo(path) if make == "fifo" else os.symlink("/dev/zero", path)
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(path), "format": "prompts"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    assert str(err.value) == (f"ingest.sources[0].path: {path}: not a regular file (a pipe, socket or device); a "
                              "source is read more than once, so write the data to a file and point the path at it")
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_says_it_holds_no_data_files(params, tmp_path, monkeypatch, capsys):
    """Was 'no such file, folder or matching glob' for a folder that is there; then said nothing of what to do."""
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "_manifest.json").write_text("{}")
    (tmp_path / "params.yaml").write_text(_params_yaml(params, str(tmp_path / "set")))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest", "--params", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == (f"prefpipe: ingest.sources[0].path: {tmp_path / 'set'}: the folder holds no data files (names "
                   "starting with _ or ., and what is below such a folder, are left out); put the source's files in it, or point the path at them\n")


def _params_yaml(params, path: str, fmt: str = "prompts", kind: str = "prompts") -> str:
    import yaml

    # The samples after it, as the stages that select sources by name name them (a name must be a source of
    # the kind its stage reads): the stage fails on "s", sources[0], before reading them.
    samples = [{**src.model_dump(mode="json"), "path": str(ROOT / src.path)} for src in params.ingest.sources]
    data = with_ingest(params, [{"name": "s", "kind": kind, "path": path, "format": fmt}, *samples])
    return yaml.safe_dump(data.model_dump(mode="json"))


def test_a_gzipped_parquet_file_fails_before_any_work_saying_to_gunzip_it(params, tmp_path):
    """Was one reject, 'not a readable Parquet file (... magic bytes not found ...)', though .gz is accepted."""

    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p1"], "text": ["hi"]}), buf)
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress(buf.getvalue()))
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(tmp_path / "p.parquet.gz"), "format": "prompts"}])
    with pytest.raises(SourceError, match=r"^ingest\.sources\[0\]\.path: .*p\.parquet\.gz: a gzipped Parquet file cannot "
                                          r"be read by row group: gunzip it \(Parquet compresses its pages itself\)$"):
        run(p, tmp_path / "out")


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.csv", "p.parquet", "Posts.xml"])
def test_a_file_ingest_may_not_read_fails_the_stage_in_one_line_naming_it(params, tmp_path, monkeypatch, capsys, name):
    """Was, for JSON lines: 'prefpipe: cannot write p.jsonl: Permission denied ... no permission to write there'
    (an input named as an output); for Parquet and JSON: one reject, so the stage passed with the file unread.
    (Tests run as root, which chmod cannot stop, so the file system's refusal is simulated at open.)"""
    import builtins

    import pyarrow.parquet as pqm

    path = tmp_path / name
    pq.write_table(pa.table({"id": ["p1"], "text": ["hi"]}), path) if name.endswith(".parquet") else path.write_text("")
    real_open, real_file = builtins.open, pqm.ParquetFile

    def guarded(opener):
        def open_(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return opener(file, *args, **kwargs)
        return open_

    monkeypatch.setattr(builtins, "open", guarded(real_open))
    monkeypatch.setattr(pqm, "ParquetFile", guarded(real_file))
    fmt, kind = ("stackexchange", "documents") if name.endswith(".xml") else ("prompts", "prompts")
    (tmp_path / "params.yaml").write_text(_params_yaml(params, str(path), fmt, kind))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest", "--params", "params.yaml"]) == 1
    assert capsys.readouterr().err == (f"prefpipe: ingest.sources[0].path: {path}: cannot be read (Permission denied, "
                                       "EACCES); make it readable (its permissions, owner or disk) and run again\n")


@pytest.mark.parametrize("pattern", ["", "*.jsonl"])
def test_a_broken_link_in_a_source_folder_or_glob_fails_before_any_work(params, tmp_path, pattern):
    """Was left out without a word: the folder's other files were read and its data was simply missing."""
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jsonl").write_text('{"id": "p1", "text": "hi"}\n')
    os.symlink(tmp_path / "moved" / "b.jsonl", tmp_path / "set" / "b.jsonl")
    path = str(tmp_path / "set" / pattern) if pattern else str(tmp_path / "set")
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": path, "format": "prompts"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    assert str(err.value) == (f"ingest.sources[0].path: {tmp_path / 'set' / 'b.jsonl'}: a link to "
                              f"{tmp_path / 'moved' / 'b.jsonl'}, which does not exist (or links back to itself); "
                              "restore its target or remove the link")


@pytest.mark.parametrize(("make", "pattern"), [("fifo", ""), ("fifo", "*.jsonl"), ("device", ""), ("device", "*.jsonl")])
def test_a_pipe_or_a_device_in_a_source_folder_or_glob_fails_before_any_work(params, tmp_path, make, pattern):
    """Was left out without a word (only a path naming it alone failed): the folder's other files were read."""
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jsonl").write_text('{"id": "p1", "text": "hi"}\n')
    odd = tmp_path / "set" / "b.jsonl"
    os.mkfifo(odd) if make == "fifo" else os.symlink("/dev/zero", odd)
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(tmp_path / "set" / pattern), "format": "prompts"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    assert str(err.value) == (f"ingest.sources[0].path: {odd}: not a regular file (a pipe, socket or device); a "
                              "source is read more than once, so write the data to a file and point the path at it")


def test_a_link_to_a_folder_of_data_in_a_source_folder_fails_before_any_work(params, tmp_path):
    """Was left out without a word: a folder path does not follow links to folders (a glob's ** does), so the
    linked folder's rows were missing from the source, exit 0."""
    (tmp_path / "set" / "own").mkdir(parents=True)
    (tmp_path / "elsewhere" / "2024").mkdir(parents=True)
    for f in (tmp_path / "set" / "a.jsonl", tmp_path / "elsewhere" / "2024" / "b.jsonl"):
        f.write_text(f'{{"id": "{f.stem}", "text": "hi"}}\n')
    os.symlink("../elsewhere", tmp_path / "set" / "more")
    os.symlink("own", tmp_path / "set" / "same")  # within the folder: read there; and a loop up out of it
    os.symlink("..", tmp_path / "set" / "own" / "up")
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(tmp_path / "set"), "format": "prompts"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    assert str(err.value) == (
        f"ingest.sources[0].path: {tmp_path / 'set' / 'more'}: a link to the folder ../elsewhere, which a folder path "
        f"does not follow, so its files (2024/b.jsonl, ...) would be left out; point the path at a glob, which follows "
        f"it (e.g. {tmp_path / 'set' / '**' / '*.jsonl'}), or move the folder in")
    os.remove(tmp_path / "set" / "more")  # the links left lose nothing: the folder is read
    assert run(p, tmp_path / "out")["sources"]["s"]["rows_in"] == 1
    os.symlink("../elsewhere", tmp_path / "set" / "more")  # the glob it suggests reads both
    glob_p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(tmp_path / "set" / "**" / "*.jsonl"),
                                   "format": "prompts"}])
    assert run(glob_p, tmp_path / "out")["sources"]["s"]["rows_in"] == 2


@pytest.mark.parametrize("pattern", ["", "**/*.jsonl", "*/*.jsonl"])
def test_a_folder_of_a_source_that_cannot_be_read_fails_it_in_one_line(params, tmp_path, monkeypatch, capsys, pattern):
    """Was silent loss: ``rglob`` and ``glob`` skip a folder they may not list, so a source folder whose
    sub-folder had no read permission gave its other files' rows and exit 0 (as the root of a glob: 'cannot
    write ...: no permission to write there', an input named as an output). (Tests run as root, which chmod
    cannot stop: the file system's refusal is simulated at ``os.scandir``, which both call.)"""
    data = tmp_path / "set"
    (data / "sub").mkdir(parents=True)
    (data / "a.jsonl").write_text('{"id": "p1", "text": "hi"}\n')
    (data / "sub" / "b.jsonl").write_text('{"id": "p2", "text": "hello"}\n')
    (data / "sub" / "c").mkdir()
    locked, real_scandir = data / "sub", os.scandir

    def scandir(path="."):
        if os.fspath(path) in (str(locked), str(locked) + os.sep):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    (tmp_path / "params.yaml").write_text(_params_yaml(params, str(data / pattern) if pattern else str(data)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest", "--params", "params.yaml"]) == 1
    assert capsys.readouterr().err == (f"prefpipe: ingest.sources[0].path: {locked}: cannot be read (Permission denied, "
                                       "EACCES), so its files would be left out of the source; make it readable (its "
                                       "permissions, owner or disk) and run again\n")
    assert not (tmp_path / "data" / "ingest" / "prompts").exists()


# --- shard sets a copy or a write left incomplete: one line naming the file, never a traceback ------------

def _shard_set(tmp_path):
    from pipeline.io import write_shards

    out = tmp_path / "set"
    write_shards(pa.table({"id": ["a", "b"], "text": ["x", "y"]}), out)
    return out


@pytest.mark.parametrize(("content", "why"), [
    ('{"files": [{"pa', "not valid JSON (Unterminated string starting at: line 1 column 13 (char 12))"),
    ("[]", "not a shard set manifest (no list of files)"),
    ('{"files": [3]}', "not a shard set manifest (no list of files)"),
])
def test_a_manifest_cut_short_or_edited_is_one_line_naming_it(tmp_path, monkeypatch, capsys, content, why):
    """Was a traceback (JSONDecodeError, TypeError) from every reader of the set: stages, inspect, publish."""
    from pipeline.io import read_table

    out = _shard_set(tmp_path)
    (out / "_manifest.json").write_text(content)
    line = f"{out / '_manifest.json'}: {why}; it was cut short or edited: run the stage that writes this folder again (`dvc repro`)"
    with pytest.raises(SourceError) as err:
        read_table(out)
    assert str(err.value) == line
    assert cli.main(["inspect", str(out)]) == 1
    assert cli.main(["publish", "--path", str(out), "--repo-id", "org/name", "--dry-run"]) == 1
    assert capsys.readouterr().err == f"prefpipe: {line}\n" * 2


def test_a_shard_missing_from_a_streamed_set_is_one_line_naming_it(tmp_path):
    """Was a traceback (pyarrow's FileNotFoundError, given the stage's output folder as its file name) from the
    stages that stream their input (wildfeedback, the decontamination sets)."""
    from pipeline.io import iter_batches, shard_files

    out = _shard_set(tmp_path)
    (gone := shard_files(out)[0]).unlink()
    with pytest.raises(SourceError, match=rf"^{gone}: not a readable Parquet file \(FileNotFoundError: .*\); run the stage "
                                          rf"that writes {out} again \(`dvc repro`\)$"):
        list(iter_batches(out))


@pytest.mark.parametrize("stage", ["curry", "export"])
def test_a_stage_run_before_its_inputs_exist_leaves_no_empty_output_folder(root, tmp_path, monkeypatch, capsys, stage):
    """The one-line error was right, but the write check's folder (data/curry, data/release) stayed behind, empty."""
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", stage]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "data" / ("release" if stage == "export" else stage)).exists()


@pytest.mark.parametrize("stage", ["curry", "export"])
def test_a_stage_run_from_the_wrong_folder_leaves_no_folder_behind(root, tmp_path, monkeypatch, capsys, stage):
    """A new user's walk-through: `cd data && prefpipe run curry --params ../params.yaml` said to run from the
    project root and failed in one line, but left an empty data/data/ behind (the write check made data/data/curry,
    and only that folder was removed)."""
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    assert cli.main(["run", stage, "--params", "../params.yaml"]) == 1
    assert list((tmp_path / "data").iterdir()) == []


# File names a user's file system allows: a byte that is not UTF-8 (Python names it with a surrogate, \udcff) and a
# line break. Each was read as a JSON lines file would be; where one was not, the stage failed or lost its one line.
BAD_NAME, NL_NAME = os.fsdecode(b"bad\xffname"), "new\nline"


def test_an_empty_file_named_with_a_non_utf8_byte_or_a_line_break_is_listed_escaped(params, tmp_path, capsys):
    """An empty `bad\\xffname.jsonl` failed the stage as it wrote details.json (the whole JSON printed as a path
    `cannot be opened`), and `new\\nline.jsonl` split its warning in two lines: both are listed as reasons name files."""
    data = tmp_path / "set"
    data.mkdir()
    (data / "a.jsonl").write_text('{"id": "a", "prompt": "hi?"}\n')
    for name in (BAD_NAME, NL_NAME):
        (data / f"{name}.jsonl").write_bytes(b"")
    metrics = run(with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(data), "format": "prompts"}]),
                  tmp_path / "out")
    listed = ["bad\\udcffname.jsonl", "new\\nline.jsonl"]
    assert metrics["sources"]["s"]["empty_files"] == listed
    assert json.loads((tmp_path / "out" / "details.json").read_text())["sources"]["s"]["empty_files"] == listed
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")] == [
        f"WARNING ingest: source 's': {name} holds no records (an empty file?)" for name in listed]


def test_a_parquet_file_named_with_a_non_utf8_byte_is_read(params, tmp_path):
    """Was `prefpipe: .../bad\\udcffname.parquet: cannot be opened; this Python's file system encoding (utf-8)
    cannot name it: run with PYTHONUTF8=1`, in UTF-8 mode already: pyarrow refuses a name that is not UTF-8, where
    the same rows as JSON lines were read."""
    data = tmp_path / "set"
    data.mkdir()
    pq.write_table(pa.table({"id": ["q1", "q2"], "prompt": ["hi?", None]}), data / "tmp.parquet")
    os.rename(data / "tmp.parquet", data / f"{BAD_NAME}.parquet")
    metrics = run(with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(data), "format": "prompts"}]),
                  tmp_path / "out")["sources"]["s"]
    assert (metrics["accepted"], metrics["rejected"]) == (1, 1)
    reasons = pq.read_table(tmp_path / "out" / "rejects").column("reason").to_pylist()
    assert reasons == ["bad\\udcffname.parquet:2: field 'prompt' is null: the record has no 'text' or 'prompt' or "
                       "'instruction' or 'question' or 'turns'"]


def test_a_source_error_naming_a_file_with_a_line_break_is_one_line(params, tmp_path, monkeypatch, capsys):
    """A named pipe (or a stray README) called `new\\nline` in a source folder printed its error on two lines."""
    data = tmp_path / "set"
    data.mkdir()
    (data / "a.jsonl").write_text('{"id": "a", "prompt": "hi?"}\n')
    os.mkfifo(data / f"{NL_NAME}.jsonl")
    (tmp_path / "params.yaml").write_text(_params_yaml(params, str(data)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest"]) == 1
    assert capsys.readouterr().err == (f"prefpipe: ingest.sources[0].path: {data}/new\\nline.jsonl: not a regular "
                                       "file (a pipe, socket or device); a source is read more than once, so write the "
                                       "data to a file and point the path at it\n")


@pytest.mark.parametrize("written", ["~/set/a.jsonl", "$HOME/set/a.jsonl", "~/set/*.jsonl"])
def test_a_path_a_shell_would_expand_says_to_write_it_out(params, tmp_path, monkeypatch, written):
    """`path: ~/data/a.jsonl` was 'no such file, folder or matching glob' with the file right there: a params file
    is no shell, and the line did not say so."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jsonl").write_text('{"id": "a", "prompt": "hi?"}\n')
    with pytest.raises(SourceError) as err:
        run(with_ingest(params, [{"name": "s", "kind": "prompts", "path": written, "format": "prompts"}]), tmp_path / "out")
    full = written.replace("~", str(tmp_path)).replace("$HOME", str(tmp_path))
    assert str(err.value) == (f"ingest.sources[0].path: {written}: no such file, folder or matching glob (paths are "
                              f"relative to the project root); ~ and $VARIABLES are not expanded in params.yaml: write "
                              f"the path out ({full})")


def test_a_folder_that_may_be_listed_but_not_searched_is_named_not_its_file(params, tmp_path, monkeypatch):
    """A sub-folder with r but no x (chmod 600; seen as a user with its capabilities dropped: root ignores it) said
    `sub/c.jsonl: cannot be read (Permission denied); make it readable`, and chmod on that file fails too."""
    data = tmp_path / "set"
    (data / "sub").mkdir(parents=True)
    (data / "a.jsonl").write_text('{"id": "a", "prompt": "hi?"}\n')
    (data / "sub" / "c.jsonl").write_text('{"id": "c", "prompt": "hi?"}\n')
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # what the kernel does for a caller that is not root: sub's names, no status
        if str(path).startswith(f"{data / 'sub'}{os.sep}"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(SourceError) as err:
        run(with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(data), "format": "prompts"}]), tmp_path / "out")
    assert str(err.value) == (f"ingest.sources[0].path: {data / 'sub' / 'c.jsonl'}: cannot be read (Permission denied, "
                              f"EACCES): the folder {data / 'sub'} may be listed but not searched (no x permission); make "
                              f"it searchable (chmod +x {data / 'sub'}) and run again")


@pytest.mark.parametrize("on_disk", ["données/a.jsonl", "set/café.jsonl"])
def test_a_name_on_disk_in_another_unicode_form_is_pointed_at(params, tmp_path, on_disk):
    """A folder copied from macOS names `données` with e and a combining accent (NFD); params.yaml typed on Linux holds
    é (NFC): 'no such file, folder or matching glob' printed the very name the user saw on disk."""
    nfd = tmp_path / unicodedata.normalize("NFD", on_disk)
    nfd.parent.mkdir(parents=True)
    nfd.write_text('{"id": "a", "prompt": "hi?"}\n')
    typed = tmp_path / unicodedata.normalize("NFC", on_disk)
    with pytest.raises(SourceError) as err:
        run(with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(typed), "format": "prompts"}]), tmp_path / "out")
    there = tmp_path / unicodedata.normalize("NFD", on_disk.split("/")[0] if on_disk.startswith("d") else on_disk)
    assert str(err.value) == (f"ingest.sources[0].path: {typed}: no such file, folder or matching glob (paths are "
                              f"relative to the project root); {there} is there, its name in another Unicode form "
                              "(accents as separate marks or not, as macOS and Linux write them): write both in one "
                              "form (`convmv -f utf8 -t utf8 --nfc --notest NAME` renames a file to the form typed on Linux)")


def test_a_file_below_a_hidden_or_underscore_folder_of_a_source_folder_is_left_out(params, tmp_path):
    """``huggingface-cli download --local-dir`` writes ``.cache/huggingface/download/<file>.lock`` and ``.metadata``
    beside the data: a folder source failed on them ("unknown file type '.lock'"), though ``pyarrow.dataset`` leaves
    out what is below a folder whose name starts with . or _ (files so named already were), and a glob's ``**`` does
    not look into a folder whose name starts with ".". A glob is the user's own choice: it still reads ``_tmp/``."""
    folder = tmp_path / "set"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": "ho"}\n')
    cache = folder / ".cache" / "huggingface" / "download" / "data"
    cache.mkdir(parents=True)
    (cache / "train.jsonl.lock").write_text("")
    (cache / "train.jsonl.metadata").write_text("abc\n")
    (folder / "_tmp").mkdir()
    (folder / "_tmp" / "partial.jsonl").write_text('{"id": "c", "text": "half"}\n')
    p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(folder), "format": "prompts"}])
    assert run(p, tmp_path / "out")["sources"]["s"]["rows_in"] == 2
    glob_p = with_ingest(params, [{"name": "s", "kind": "prompts", "path": str(folder / "**" / "*.jsonl"),
                                   "format": "prompts"}])
    assert run(glob_p, tmp_path / "out")["sources"]["s"]["rows_in"] == 3
