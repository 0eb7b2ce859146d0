"""Errors a user meets, each as one line naming what was wrong, where (file, key) and what to do; each case
printed a traceback, a multi-line message or a misleading one before its fix."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SourceError


def _thrift_broken(path: Path) -> Path:
    """A Parquet file whose footer thrift cannot decode: pyarrow's reason ends in a line break."""
    pq.write_table(pa.table({"prompt_id": ["a"], "x": [1]}), path)
    data = bytearray(path.read_bytes())
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[start + 10:start + 40] = b"\x0e" * 30
    path.write_bytes(bytes(data))
    return path


def test_a_shard_set_with_a_broken_footer_names_the_file_in_one_line(tmp_path):
    """Was 'curry.inputs[0].prompts: <folder>: not readable Parquet (OSError: Could not open Parquet input source
    '<file>': Couldn't deserialize thrift: don't know what type: \\x0e<line break>); run ...': the folder named,
    the file only inside pyarrow's text, and the raw control byte and line break in the message."""
    from pipeline.io import read_table

    (tmp_path / "set").mkdir()
    pq.write_table(pa.table({"prompt_id": ["b"], "x": [2]}), tmp_path / "set" / "part-0.parquet")
    bad = _thrift_broken(tmp_path / "set" / "part-1.parquet")
    with pytest.raises(SourceError) as err:
        read_table(tmp_path / "set", key="curry.inputs[0].prompts")
    line = str(err.value)
    assert line == (f"curry.inputs[0].prompts: {bad}: not a readable Parquet file (OSError: Couldn't deserialize "
                    f"thrift: don't know what type: \\x0e); run the stage that writes {tmp_path / 'set'} again "
                    "(`dvc repro`)")


def test_inspect_of_a_parquet_file_with_a_corrupt_data_page_fails_in_one_line(tmp_path, capsys):
    """Was pyarrow's traceback ('OSError: Corrupt snappy compressed data.') after the schema was printed: the
    footer reads, the rows do not."""
    from pipeline.cli import main as cli

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"a": ["x" * 1000] * 100}), path, compression="snappy")
    data = bytearray(path.read_bytes())
    data[20:200] = b"\xab" * 180  # inside the first data page
    path.write_bytes(bytes(data))
    assert cli(["inspect", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (f"prefpipe: {path}: not a readable Parquet file (OSError: Corrupt snappy compressed data.); "
                       "if a stage wrote it, rebuild it with `dvc repro`\n")


def test_the_reject_summary_keeps_the_digits_of_names(params, tmp_path):
    """The stage's failure line said 'the file is UTF-N text ..., not UTF-N; ... re-encode it as UTF-N (e.g.
    `iconv -f UTF-N -t UTF-N`)': every digit of a reason became N, those of encoding names too."""
    from pipeline.config import Params
    from stages.ingest import IngestError, run

    (tmp_path / "w.jsonl").write_bytes('{"id": "a", "text": "hi"}\n'.encode("utf-16"))
    data = params.model_dump()
    data["ingest"] = {**data["ingest"], "max_reject_fraction": 0.0, "sources": [
        {"name": "w", "kind": "documents", "path": str(tmp_path / "w.jsonl"), "format": "documents"}]}
    with pytest.raises(IngestError) as err:
        run(Params.model_validate(data), tmp_path / "out")
    assert ("    1 x the file is UTF-16 text (it starts with a byte order mark), not UTF-8; none of it is read: "
            "re-encode it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)\n") in str(err.value)


def test_a_model_path_that_is_a_file_says_so_and_names_the_folder_that_holds_it(tmp_path):
    """Was "model '<file>' could not be loaded (It looks like the config file at '<file>' is not a valid JSON
    file.)": transformers read the file as a config; a weights file picked inside a model folder got the same."""
    from pipeline.errors import ModelLoadError
    from pipeline.llm.hf import TransformersEngine
    from stages.dove_similarity import embed_texts
    from tests.llm_configs import llm_config

    choices = ("tiny, smollm2, a Hugging Face model id (ORG/NAME; offline: one in the local cache) or a local folder "
               "holding a model")
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(llm_config(model=str(tmp_path / "data.parquet")))
    assert str(err.value) == (f"model '{tmp_path / 'data.parquet'}': a file, not a model folder; set llm.model (or the "
                              f"role's model) to {choices}")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(llm_config(model=str(tmp_path / "model.safetensors")))
    assert str(err.value) == (f"model '{tmp_path / 'model.safetensors'}': a file, not a model folder: give the folder "
                              f"that holds it, {tmp_path}; set llm.model (or the role's model) to {choices}")
    with pytest.raises(ModelLoadError) as err:
        embed_texts(["a"], str(tmp_path / "model.safetensors"))
    assert str(err.value).startswith(f"dove.embedding_model '{tmp_path / 'model.safetensors'}' could not be loaded (a "
                                     f"file, not a model folder: give the folder that holds it, {tmp_path}); set it to ")


@pytest.mark.parametrize("name", ["posts.jsonl.gz", "posts.json.gz", "posts.csv.gz"])
def test_a_gz_file_that_is_not_gzip_says_to_rename_it(tmp_path, name):
    """Was 'the file cannot be read (BadGzipFile: Not a gzipped file (b...)); the rest of it is lost': what broke,
    not what to do (the file was never compressed)."""
    from pipeline.readers import iter_records

    (tmp_path / name).write_text('{"id": "a", "text": "hi"}\n' if "csv" not in name else "id,text\na,hi\n")
    [error] = [r.error for r in iter_records(str(tmp_path / name))]
    assert error.startswith("the file cannot be read (BadGzipFile: Not a gzipped file (b")
    assert error.endswith("); its name ends in .gz but it is not gzip data: rename it without .gz, or gzip it")


def test_a_hub_error_of_several_lines_is_one_line(monkeypatch):
    """An error of several lines (the Hub's HTTP errors: '500 Server Error ...\\n\\nInternal Error') cut the line
    that said the Hub cannot be reached, and what to do, in two."""
    import huggingface_hub

    from pipeline.hub_source import check_hub

    def fail(self, name, timeout):
        raise ConnectionError("500 Server Error: Internal Server Error for url: https://huggingface.co/api/datasets/o/n"
                             "\n\nInternal Error - We're working hard to fix this as soon as possible!")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", fail)
    with pytest.raises(SourceError) as err:
        check_hub("hf://o/n", "ingest.sources[0].path")
    assert str(err.value) == (
        "ingest.sources[0].path: hf://o/n: the Hugging Face Hub cannot be reached (ConnectionError: 500 Server Error: "
        "Internal Server Error for url: https://huggingface.co/api/datasets/o/n Internal Error - We're working hard "
        "to fix this as soon as possible!); check your network, or set HF_HUB_OFFLINE=1 to use a cached copy, or "
        "download the set and point the path at the local files")


@pytest.mark.parametrize("var", ["PREFPIPE_CACHE", "PREFPIPE_REQUEST_CACHE"])
def test_a_cache_folder_that_is_a_file_names_its_variable(tmp_path, monkeypatch, var):
    """Was a FileExistsError traceback from the first mkdir in it (building the tiny model, caching a request)."""
    from pipeline.errors import StageError
    from pipeline.llm.request_cache import cache_dir

    (tmp_path / "cache").write_text("")
    monkeypatch.delenv("PREFPIPE_REQUEST_CACHE", raising=False)
    monkeypatch.setenv(var, str(tmp_path / "cache" / "sub"))
    with pytest.raises(StageError) as err:
        cache_dir()
    assert str(err.value) == (f"the cache folder {var}={tmp_path / 'cache' / 'sub'}: {tmp_path / 'cache'} is a file, "
                              f"not a folder; move it away, or set {var} to a folder")
    monkeypatch.setenv(var, str(tmp_path / "ok"))
    assert cache_dir() in (tmp_path / "ok", tmp_path / "ok" / "requests")


@pytest.mark.parametrize(("column", "want"), [("chosen", "a list of {role, content} messages"),
                                              ("score_chosen", "a number"), ("pair_id", "a string")])
def test_audit_of_a_release_file_with_a_column_of_another_type_fails_in_one_line(tmp_path, capsys, column, want):
    """Was a polars traceback ('list.eval operation not supported for dtype `str`', or a comparison of a string
    with a number) from the check that reads the column."""
    import json

    from pipeline.cli import main as cli
    from pipeline.io import FORMAT

    messages = [{"role": "user", "content": "hi"}]
    row = {"pair_id": "0123456789abcdef", "prompt": messages, "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}], "score_chosen": 2.0}
    row[column] = 1 if column == "pair_id" else "x"
    (tmp_path / "rel" / "pugc").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "rel" / "pugc" / "train-00000-of-00001.parquet")
    (tmp_path / "rel" / "_manifest.json").write_text(json.dumps(
        {"table": "release", "format": FORMAT, "files": [{"path": "pugc/train-00000-of-00001.parquet", "rows": 1, "sha256": ""}]}))
    assert cli(["audit", str(tmp_path / "rel")]) == 2
    typ = "int64" if column == "pair_id" else "string"
    assert capsys.readouterr().err == (
        f"prefpipe audit: {tmp_path / 'rel' / 'pugc' / 'train-00000-of-00001.parquet'}: column {column!r} is {typ}, "
        f"expected {want}: not a release export wrote; rebuild the release with `dvc repro export`\n")


def _tiny_copy(tmp_path: Path) -> Path:
    import shutil

    from pipeline.llm.tiny import resolve_model

    return Path(shutil.copytree(resolve_model("tiny"), tmp_path / "model"))


def test_a_model_folder_whose_weights_are_git_lfs_pointers_says_to_pull_them(tmp_path):
    """A clone without git-lfs: was safetensors' traceback 'Error while deserializing header: header too large'."""
    from pipeline.errors import ModelLoadError
    from pipeline.llm.hf import TransformersEngine
    from tests.llm_configs import llm_config

    folder = _tiny_copy(tmp_path)
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(llm_config(model=str(folder)))
    assert str(err.value).startswith(f"model '{folder}': model.safetensors in it is a Git LFS pointer, not the file's "
                                     f"contents (cloned without git-lfs): run `git lfs pull` in {folder}, or download "
                                     "the model again; set llm.model")


def test_a_model_folder_whose_weights_are_cut_short_is_one_line(tmp_path):
    """Was safetensors' traceback ('SafetensorError: Error while deserializing header: invalid header length')."""
    from pipeline.errors import ModelLoadError
    from pipeline.llm.hf import TransformersEngine
    from tests.llm_configs import llm_config

    folder = _tiny_copy(tmp_path)
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(llm_config(model=str(folder)))
    assert str(err.value) == (
        f"model '{folder}': its weights could not be loaded (SafetensorError: Error while deserializing header: "
        "invalid header length); copy or download the model again, or set llm.model (or the role's model) to tiny, "
        "smollm2, a Hugging Face model id (ORG/NAME; offline: one in the local cache) or a local folder holding a model")


def test_an_encoder_model_as_a_chat_model_is_one_line(tmp_path):
    """An encoder (BERT) loads under a language-model head but keeps no KV cache: was 'KeyError: cache' from
    the engine's first measurement."""
    import json

    from pipeline.errors import ModelLoadError
    from pipeline.llm.hf import TransformersEngine
    from tests.llm_configs import llm_config

    folder = _tiny_copy(tmp_path)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": vocab, "hidden_size": 64,
                                                    "num_hidden_layers": 1, "num_attention_heads": 1,
                                                    "intermediate_size": 64}))
    with pytest.raises(ModelLoadError) as err:
        TransformersEngine(llm_config(model=str(folder), cpu_threads="auto"))
    assert str(err.value) == (f"model '{folder}': a BertLMHeadModel, which keeps no KV cache, so not a decoder (chat) "
                              "model; set llm.model (or the role's model) to an instruct/chat model")


def test_an_embedding_model_whose_weights_are_cut_short_names_its_key(tmp_path):
    """dove.embedding_model: was safetensors' traceback, where other load errors were one line naming the key."""
    from pipeline.errors import ModelLoadError
    from stages.dove_similarity import embed_texts

    folder = _tiny_copy(tmp_path)
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ModelLoadError) as err:
        embed_texts(["a"], str(folder))
    assert str(err.value).startswith(f"dove.embedding_model '{folder}' could not be loaded (Error while deserializing "
                                     "header: invalid header length); set it to ")


def test_a_shard_the_user_may_not_read_says_to_make_it_readable(tmp_path, monkeypatch):
    """Said 'run the stage that writes it again', which fails the same way (pyarrow raises PermissionError for
    EACCES; as root, the test fakes it)."""
    import errno

    from pipeline.io import read_table

    (tmp_path / "set").mkdir()
    pq.write_table(pa.table({"prompt_id": ["a"]}), tmp_path / "set" / "part-0.parquet")

    def refuse(path, **kw):
        raise PermissionError(errno.EACCES, f"Failed to open local file '{path}'. Detail: [errno 13] Permission denied")

    monkeypatch.setattr(pq, "read_table", refuse)
    with pytest.raises(SourceError) as err:
        read_table(tmp_path / "set")
    assert str(err.value).endswith("; make it readable (its permissions or owner) and run again")
    assert str(err.value).startswith(f"{tmp_path / 'set' / 'part-0.parquet'}: not a readable Parquet file "
                                     "(PermissionError: ")
