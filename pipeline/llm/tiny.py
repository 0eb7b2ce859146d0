"""The built-in offline model ``tiny``: random weights, a real tokenizer and chat template.

It produces meaningless text but exercises every engine code path (chat templating, batching,
sampling, grammar-constrained decoding, teacher-forced scoring) without a download::

    >>> from pipeline.llm.tiny import resolve_model
    >>> path = resolve_model("tiny")        # built on first use, ~1-2 s  # doctest: +SKIP
    >>> resolve_model("Qwen/Qwen2.5-0.5B-Instruct", hub=False)  # a Hub id as is (hub=True: cached or reachable)
    'Qwen/Qwen2.5-0.5B-Instruct'

``tiny@N`` is the same model with weights drawn from seed ``N`` (``tiny`` is ``tiny@0``): a second,
different model with the same tokenizer, which the samples run uses as Selfie's "trained" policy so
that implicit rewards are not all zero.

What it is: a byte-level BPE tokenizer trained with ``tokenizers`` on ``tiny_corpus.txt`` (a fixed
text shipped in the package, so the tokenizer never changes when the sample data does), a
ChatML-style chat template, and a ``LlamaForCausalLM`` (hidden 128, 2 heads -> head dim 64, which
GPU attention kernels, vLLM's included, accept; 2 layers) initialised from a fixed seed. It is
written with ``save_pretrained`` into ``$PREFPIPE_CACHE/tiny-<hash>`` (default cache root
``~/.cache/prefpipe``), where the hash covers the corpus, the template and the build settings.
The folder is built in a temporary folder and renamed into place, so concurrent first uses (Ray
actors) are safe. Both engines, and any Hugging Face tool, load that folder.

Two build settings make its random output look like a real model's where the pipeline checks it, both
through one hidden dimension that carries a constant (``_steady_dimension``): its answers end (``eos_every``:
the end-of-turn token reads that dimension), and they hold no C0 control or DEL (``unprintable_logit``: the
tokens whose text matches ``pipeline.encodings.UNPRINTABLE``, the byte tokens of the C0 controls and DEL, read it
with a large negative weight). Random weights sample the 256 byte tokens about uniformly, so without the second
many answers held a NUL or an ESC, which a real model practically never writes, and export dropped their pairs
as ``unprintable_text`` (104 of the samples run's 163 release pairs). Under grammar-constrained decoding (JSON) it can still write such a character as an
escape (``\\b``, ``\\u0088``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipeline.encodings import UNPRINTABLE
from pipeline.errors import MODEL_KEY, ModelLoadError, StageError
from pipeline.files import built_dir

TINY_NAME = "tiny"
# Bump when the build below changes in a way the hash does not see (e.g. a new init scheme).
_BUILD_VERSION = 2
_CORPUS = Path(__file__).with_name("tiny_corpus.txt")

BOS, EOS, PAD = "<|bos|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, "<|im_start|>", "<|endoftext|>"]

# ChatML: every turn is "<|im_start|>{role}\n{content}<|im_end|>\n". The assistant's answer ends
# with <|im_end|> (the eos token), so generation stops there and scoring includes it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TOKENIZER = {"vocab_size": 2048, "min_frequency": 1}
_MODEL = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "seed": 0,
    # Answers end on their own: every token embedding carries a constant on one hidden dimension and
    # the end-of-turn token reads it, so with random weights an answer ends after ~`eos_every` tokens at
    # temperature 1 (~25 at 0.8, top_p 0.95): a real model's answers end, and a tiny model whose answers
    # never did would make every sample a cut-off one.
    "eos_every": 64,
    # Answers hold no C0 control or DEL: a real model practically never emits a NUL or an ESC, but random
    # weights sample the tokenizer's byte tokens (its alphabet holds all 256 bytes)
    # about uniformly, and export drops every pair whose text holds one (`pipeline.checks.unprintable_text`).
    # The output rows of the tokens whose text matches `pipeline.encodings.UNPRINTABLE` read the same constant
    # hidden dimension as `eos_every`, scaled so their logits sit about this much below the rest (e^-30: never).
    "unprintable_logit": -30.0,
}


def cache_root() -> Path:
    return env_folder("PREFPIPE_CACHE", Path.home() / ".cache" / "prefpipe")


def env_folder(var: str, default: Path) -> Path:
    """The folder environment variable ``var`` names, else ``default``. A file where it (or a folder above it)
    should be is a ``StageError`` naming ``var``: it was a FileExistsError traceback from the first mkdir in it."""
    folder = Path(os.environ.get(var) or default)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = f"{var}={os.environ[var]}" if os.environ.get(var) else f"{folder} (the default; {var} is unset)"
        raise StageError(f"the cache folder {where}: {blocker} is a file, not a folder; move it away, or set "
                         f"{var} to a folder")
    return folder


def tiny_hash(seed: int = 0) -> str:
    """Content hash of everything that determines the tiny model (with weight seed ``seed``)."""
    h = hashlib.sha256()
    h.update(_CORPUS.read_bytes())
    spec = {"v": _BUILD_VERSION, "template": CHAT_TEMPLATE, "specials": SPECIAL_TOKENS,
            "tokenizer": _TOKENIZER, "model": {**_MODEL, "seed": seed},
            "unprintable": UNPRINTABLE}
    h.update(json.dumps(spec, sort_keys=True).encode())
    return h.hexdigest()[:12]


def tiny_path(seed: int = 0) -> Path:
    return cache_root() / f"tiny-{tiny_hash(seed)}"


def tiny_seed(name: str) -> int | None:
    """The weight seed a tiny model name asks for (``tiny`` -> 0, ``tiny@3`` -> 3), or None if not tiny."""
    if name == TINY_NAME:
        return 0
    base, sep, seed = name.partition("@")
    if base == TINY_NAME and sep:
        if not seed.isdigit():
            raise ValueError(f"model {name!r}: expected tiny@<non-negative integer seed>, e.g. tiny@1")
        return int(seed)
    return None


# What a model setting may be, said by every error about one.
MODEL_CHOICES = ("tiny, smollm2, a Hugging Face model id (ORG/NAME; offline: one in the local cache) or a "
                 "local folder holding a model")


def resolve_model(name: str, hub: bool = True, revision: str | None = None) -> str:
    """``"tiny"``/``"tiny@N"`` -> the built folder (built on first use); ``"smollm2"`` -> the packaged real
    model converted to a folder (``pipeline.llm.smollm2``); anything else unchanged, except that a name
    written as a local path (``/``, ``./``, ``../``, ``~``) must exist, and (``hub``) a Hub id must be in the
    local cache at ``revision`` (None: the default branch) or reachable (``check_hub_model``): else
    ``ModelLoadError`` says so in one line, naming the folder it was not found in either (``models/sft``, a
    folder not yet downloaded, read as a Hub id), instead of a Hub id error from ``transformers`` (offline,
    after ~50 s of retry warnings)."""
    if name == "smollm2":
        from pipeline.llm.smollm2 import resolve_smollm2

        return resolve_smollm2(cache_root())
    seed = tiny_seed(name)
    if seed is None:
        local = Path(name).expanduser()
        if name.startswith(("/", "./", "../", "~")) and not local.exists():
            raise ModelLoadError(f"model {name!r}: no such file or folder; set {MODEL_KEY} to "
                                 f"{MODEL_CHOICES}")
        if hub and not local.exists():  # a relative folder that is not there, or a Hub id
            check_hub_model(name, revision, looked_in=Path.cwd())
        return str(local) if name.startswith("~") else name
    path = tiny_path(seed)
    if not (path / "config.json").exists():
        build_tiny(path, seed)
    return str(path)


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def model_path_problem(path: str) -> str | None:
    """What makes local model path ``path`` unloadable, found before ``transformers`` tries, whose errors mislead:
    a file is read as a config ("the config file at ... is not a valid JSON file"; the folder that holds it is
    named when that is a model folder), a Git LFS pointer as weights ("header too large"); else None."""
    p = Path(path)
    if p.is_file():
        held = (p.parent / "config.json").is_file()
        return f"a file, not a model folder{f': give the folder that holds it, {p.parent}' if held else ''}"
    pointers = [f.name for f in sorted(p.iterdir()) if _lfs_pointer(f)] if p.is_dir() else []
    if pointers:
        return (f"{', '.join(pointers)} in it {'is a Git LFS pointer' if len(pointers) == 1 else 'are Git LFS pointers'}"
                f", not the file's contents (cloned without git-lfs): run `git lfs pull` in {p}, or download the "
                "model again")
    return None


def _lfs_pointer(f: Path) -> bool:
    if not f.is_file() or f.stat().st_size > 1024:
        return False
    with open(f, "rb") as fh:
        return fh.read(len(_LFS_POINTER)) == _LFS_POINTER


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_model(name: str, revision: str | None = None, looked_in: Path | None = None) -> None:
    """``ModelLoadError`` in one line, at once, when Hub model ``name`` (at ``revision``, a branch, tag or commit;
    None: the default branch) is not in the local cache and cannot be fetched: one request with no retries
    (``transformers`` retries each file, ~50 s of warnings offline). ``looked_in``: the folder where no folder
    ``name`` was found, which the error names (the name may have meant one)."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            return
    except ValueError:  # not a valid repo id: model_info says so below
        pass
    fix = f"set {MODEL_KEY} to {MODEL_CHOICES}"
    head = f"model {name!r}: " + (f"no folder of that name in {looked_in}; " if looked_in is not None else "")
    if _offline():
        raise ModelLoadError(f"{head}HF_HUB_OFFLINE is set and it is not in the local cache; run once "
                             f"online to cache it, or {fix}")
    try:
        HfApi().model_info(name, revision=revision, timeout=10)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise ModelLoadError(f"{head}no such model on the Hugging Face Hub, or it is private or gated "
                             f"({type(e).__name__}); check the id (log in with `hf auth login` for gated models), or "
                             f"{fix}") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"model {name!r}: the Hugging Face Hub has no revision {revision!r} of it; set its "
                             "revision to one of its branches, tags or commits, or remove it (the default branch)") from None
    except Exception as e:  # no network, DNS, a proxy, an invalid id: one line instead of minutes of retries
        why = " ".join(str(e).split())[:200]
        raise ModelLoadError(f"{head}not in the local cache, and the Hugging Face Hub cannot be asked "
                             f"({type(e).__name__}: {why}); check the id and your network, or {fix}") from None


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER["vocab_size"],
        min_frequency=_TOKENIZER["min_frequency"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=_MODEL["max_position_embeddings"],
    )


def _init_model(tokenizer, seed: int = 0):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = {k: v for k, v in _MODEL.items() if k not in ("seed", "eos_every", "unprintable_logit")}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    # Seeded in a forked RNG so building the model never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
        level = _steady_dimension(model)
        _end_answers(model, tokenizer.eos_token_id, _MODEL["eos_every"], level)
        _mute(model, unprintable_ids(tokenizer), _MODEL["unprintable_logit"], level)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def _steady_dimension(model) -> float:
    """Set hidden dimension 0 of every token embedding to a large constant, which survives the layers as a
    steady component of the final hidden state, read by no output row yet; return its level there
    (measured on a fixed token sequence), by which a row's weight on it sets a steady logit."""
    import torch

    with torch.no_grad():
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb[:, 0] = 30 * emb[:, 1:].std()
        head[:, 0] = 0.0
        probe = torch.arange(4, 4 + 64).unsqueeze(0) % emb.shape[0]
        return float(model.model(input_ids=probe).last_hidden_state[0, :, 0].mean())


def _end_answers(model, eos_id: int, every: int, level: float) -> None:
    """Give the end-of-turn token a steady probability of about 1/every per step: only its output row reads
    the steady dimension (``_steady_dimension``), scaled so its logit is about log(vocab / every)."""
    import math

    import torch

    with torch.no_grad():
        head = model.lm_head.weight
        head[eos_id, 0] = math.log(head.shape[0] / every) / level


def unprintable_ids(tokenizer) -> list[int]:
    """The ids whose text, decoded alone, holds a ``pipeline.encodings.UNPRINTABLE`` character (the byte tokens of
    the C0 controls and DEL). A C1 control or a bidi override takes two or three byte tokens in a row, each
    decoding alone to U+FFFD: with ~1,700 tokens about uniform, a C1 control comes once in ~90,000 tokens."""
    import re

    pattern = re.compile(UNPRINTABLE)
    return [i for i in range(len(tokenizer)) if pattern.search(tokenizer.decode([i]))]


def _mute(model, ids: list[int], logit: float, level: float) -> None:
    """Set the logits of tokens ``ids`` steadily about ``logit`` below the rest: their output rows read the steady
    dimension (``_steady_dimension``) with a large negative weight."""
    import torch

    with torch.no_grad():
        model.lm_head.weight[ids, 0] = logit / level


def build_tiny(path: Path, seed: int = 0) -> Path:
    """Build the tiny model (weights from ``seed``) into ``path`` atomically (temp folder + rename)."""
    with built_dir(path) as tmp:
        tokenizer = _train_tokenizer()
        model = _init_model(tokenizer, seed)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / "prefpipe_tiny.json").write_text(json.dumps({"hash": tiny_hash(seed), "seed": seed, "version": _BUILD_VERSION}))
    return path
