"""params.yaml's shared sections: ``execution``, ``llm`` (and the per-role overrides a stage's
``roles`` carry); ``ingest`` is in ``pipeline.config_ingest``. Re-exported by ``pipeline.config``, which documents
the validation rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    model_validator,
)


class Section(BaseModel):
    # Inputs stay out of str(ValidationError): a key pasted into api_key_env must not reach a log.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)


def _distinct(values: list) -> list:
    """A list in which a repeat means nothing (methods, source names, languages, PII kinds): one is an error
    naming it, not a silent second copy (``export.methods: [pugc, pugc]``).

    >>> _distinct(["pugc", "dove", "pugc"])
    Traceback (most recent call last):
    ValueError: 'pugc' is listed twice; list each value once
    """
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:
        raise ValueError(f"{twice[0]!r} is listed twice; list each value once")
    return values


Distinct = AfterValidator(_distinct)  # ``Annotated[list[...], Distinct]``: no value twice

# --- shared sections -----------------------------------------------------------------------------


class Execution(Section):
    backend: Literal["local", "ray"]
    batch_size: int = Field(gt=0)
    # Rows per resumable chunk: a killed stage restarts from its last finished chunk.
    checkpoint_rows: int = Field(gt=0)
    max_reject_fraction: float = Field(ge=0, le=1)
    ray_address: str | None  # None: honour RAY_ADDRESS, else start a local Ray instance
    num_cpus_per_task: float = Field(gt=0)
    target_shard_bytes: int = Field(gt=0)
    row_group_bytes: int = Field(gt=0)
    # Rows a streaming shard writer holds before it spills a sorted run to disk: bounds memory
    # and never changes a byte of output (tested), so ingest does not list it as a DVC parameter.
    spill_bytes: int = Field(gt=0)
    # A judge below its gate (pipeline/gates.py): fail the stage, or withhold that judge's labels.
    on_gate_failure: Literal["error", "withhold"]

    @model_validator(mode="after")
    def _address_needs_ray(self) -> Execution:
        if self.ray_address is not None and self.backend == "local":  # it ran locally without a word
            raise ValueError(f"ray_address is {self.ray_address!r} but backend is local, which "
                             "never uses it: set backend: ray to run on that cluster, or ray_address: null")
        return self


class Sampling(Section):
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: int = Field(gt=0)
    stop: list[str]
    seed: int


def _check_api_key_env(name: str | None) -> str | None:
    """The name of an environment variable, in upper case: many providers' keys are valid lower- or
    mixed-case names (Groq ``gsk_...``, Together ``tgp_v1_...``, Fireworks ``fw_...``, Mistral's 32
    letters and digits), and a pasted key would then be echoed as "not set". Errors never repeat the value."""
    if name is None:
        return None
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,99}", name) or name.lower().startswith(("sk_", "hf_", "key_")):
        raise ValueError(
            "expected the NAME of the environment variable that holds the key, in upper case (e.g. "
            "OPENAI_API_KEY), not the key itself; if you pasted a key here, remove it from params.yaml and rotate it"
        )
    return name


def _check_base_url(url: str) -> str:
    """An http(s) URL up to the API root, with no credentials in it: params.yaml is committed and its values
    reach dvc.lock, logs and error messages. Errors never repeat the value."""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ValueError("expected an http(s) URL up to the API root, e.g. http://localhost:8000/v1")
    if "@" in url.split("/")[2] or _SECRET_QUERY.search(url):
        raise ValueError(
            "holds credentials (user:password@host, or a key, token or signature in the query): params.yaml is "
            "committed and echoed in logs; put the key in the environment variable api_key_env names, remove it "
            "from params.yaml and rotate it"
        )
    return url


# a query parameter that carries a credential (?api-key=..., &token=..., ?sig=...); ?api-version= does not
_SECRET_QUERY = re.compile(r"[?&#][^=&#]*(?:key|token|secret|passw|auth|sig|credential)[^=&#]*=", re.IGNORECASE)


def _check_threads(value: object) -> str | int:
    """``auto`` or a positive integer (one message for both, not one per member of a union)."""
    if value == "auto" or (type(value) is int and value >= 1):
        return value
    raise ValueError("expected 'auto' or a positive integer")


Threads = Annotated[Literal["auto"] | int, PlainValidator(_check_threads)]


def _check_model(name: str) -> str:
    """``tiny@N`` is the built-in model with weights from seed N (``pipeline.llm.tiny.tiny_seed``, which
    reads it): N must be a non-negative integer, found here before any work instead of as a traceback."""
    if not name.strip() or name != name.strip():  # "" was the current folder, a "model" with no config.json
        raise ValueError("expected a model name without spaces around it: tiny, smollm2, a Hugging Face model id "
                         "(ORG/NAME) or a local folder")
    base, sep, seed = name.partition("@")
    if base == "tiny" and sep and not seed.isdigit():
        raise ValueError("expected tiny@<non-negative integer seed>, e.g. tiny@1")
    return name


def is_ref_name(rev: str) -> bool:
    """Whether ``rev`` is a branch, tag or commit name git allows (``git check-ref-format``), in the characters the
    Hub's names use: letters, digits, ``.``, ``_``, ``-`` and ``/``, starting with a letter or digit; no ``..`` or
    ``//``, no part starting with ``.`` or ending in ``.lock``, no trailing ``.`` or ``/``.

    >>> is_ref_name("release/v1.0"), is_ref_name("bad rev"), is_ref_name("a..b"), is_ref_name("x/.hidden")
    (True, False, False, False)
    """
    return (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}", rev) is not None and ".." not in rev
            and "//" not in rev and not rev.endswith((".", "/"))
            and not any(part.startswith(".") or part.endswith(".lock") for part in rev.split("/")))


def _check_revision(rev: str) -> str:
    """A Hub branch, tag or commit: a name git allows, not a URL or a path with spaces (errors never echo it)."""
    if not is_ref_name(rev):
        raise ValueError("expected a Hugging Face Hub branch, tag or 40-hex commit of the model (e.g. main, v1.0 "
                         "or the commit its model page lists)")
    return rev


def not_on_hub(backend: str, model: str) -> str | None:
    """Why ``model`` (on ``backend``) has no Hub revision (a served, built-in or local model), or None."""
    if backend == "openai":
        return "is served by its server under a name (backend openai), which chooses its weights"
    if model in ("tiny", "smollm2") or model.startswith("tiny@"):
        return "is built in (its identity is its build hash)"
    if model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists():
        return "is a local folder (its identity is its files' hash)"
    return None


# A key of the ``llm`` section in a message: ``llm.timeout_s``, ``llm.sampling.temperature``.
_LLM_KEY = re.compile(r"(?<![\w.])llm\.([a-z_]+(?:\.[a-z_]+)?)")

# A model setting: "tiny" / "tiny@N", "smollm2", a Hugging Face model id or a local folder.
ModelName = Annotated[str, AfterValidator(_check_model)]
Backend = Literal["transformers", "vllm", "openai"]
# An http(s) URL up to the API root, e.g. http://node1:8000/v1 (what `vllm serve` prints).
BaseUrl = Annotated[str, AfterValidator(_check_base_url)]
# The NAME of an environment variable (never the key itself).
EnvName = Annotated[str, AfterValidator(_check_api_key_env)]
OptionScoring = Literal["sequence", "first_token"]
PromptLogprobsVia = Literal["prompt_logprobs", "echo"]
# A Hub model's branch, tag or 40-hex commit (docs/real_models.md "Model weights"); None: the Hub's default branch.
Revision = Annotated[str, AfterValidator(_check_revision)]




class LLM(Section):
    backend: Backend
    model: ModelName  # "tiny", a Hugging Face model id, or a local folder; with openai: the served model name
    # A Hub id's branch, tag or commit, loaded exactly (pipeline/llm/identity.py); null: the default branch.
    revision: Revision | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    batch_size: int = Field(gt=0)
    replicas: int = Field(gt=0)
    gpus_per_replica: float = Field(ge=0)
    tensor_parallel_size: int = Field(gt=0)
    max_model_len: int = Field(gt=0)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    enable_prefix_caching: bool
    structured_retries: int = Field(ge=0)
    sampling: Sampling
    # transformers engine: padded tokens per forward pass (rows sorted by length; see pipeline/llm/hf.py).
    batch_tokens: int = Field(default=16384, gt=0)
    # transformers engine on CPU: intra-op threads, "auto" = measured when the engine starts (pipeline/llm/cpu.py).
    cpu_threads: Threads = "auto"
    # backend: openai (pipeline/llm/openai_engine.py; docs/openai.md). The defaults
    # are params.yaml's, so an in-process config built in code need not spell them out.
    base_url: BaseUrl | list[BaseUrl] | None = None  # one server, or a pool (one `vllm serve` per node)
    api_key_env: EnvName | None = None  # environment variable holding the key; null: no key
    concurrency: int = Field(default=64, gt=0)  # requests in flight, all servers together
    timeout_s: float = Field(default=600.0, gt=0)  # per request attempt
    max_retries: int = Field(default=6, ge=0)  # more attempts on 429/5xx/timeouts/dropped connections
    max_requests: int | None = Field(default=None, gt=0)  # cost guard: requests one engine may send
    option_scoring: OptionScoring = "sequence"  # how `choose` scores options (docs/openai.md)
    # How teacher-forced scores are asked for: vLLM's prompt_logprobs, or the legacy completions API's
    # echo + logprobs (opt-in, never a fallback; docs/openai.md).
    prompt_logprobs_via: PromptLogprobsVia = "prompt_logprobs"
    # The params keys a role set (``timeout_s`` -> ``pugc.roles.judge.timeout_s``, ``model`` ->
    # ``selfie.policy_model``); a field not in it came from ``llm``. Not a setting: no dump, identity or fingerprint
    # has it; ``shipped`` carries it to an engine built in another process.
    _keys: dict[str, str] = PrivateAttr(default_factory=dict)

    def key(self, field: str) -> str:
        """The params key that set ``field`` (``timeout_s``, ``sampling.temperature``): what a message about it
        tells the user to edit."""
        return self._keys.get(field, f"llm.{field}")

    @property
    def model_key(self) -> str:
        return self.key("model")

    def naming(self, text: str) -> str:
        """``text`` (an engine's message, which names its settings ``llm.<field>``) with each such key replaced by
        the one that set the field here, e.g. ``llm.timeout_s=30`` -> ``pugc.roles.judge.timeout_s=30``."""
        return _LLM_KEY.sub(lambda m: self.key(m[1]) if m[1].split(".")[0] in LLM.model_fields else m[0], text)

    def shipped(self) -> dict:
        """The settings and the keys that set them, for an engine built in another process (``unshipped``)."""
        return {"settings": self.model_dump(), "keys": dict(self._keys)}

    @classmethod
    def unshipped(cls, shipped: dict) -> LLM:
        cfg = cls.model_validate(shipped["settings"])
        cfg._keys = dict(shipped["keys"])
        return cfg

    def __eq__(self, other: object) -> bool:  # the same settings, whichever keys set them
        return self.model_dump() == other.model_dump() if isinstance(other, LLM) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    @model_validator(mode="after")
    def _openai(self) -> LLM:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                f"backend openai needs base_url (e.g. http://localhost:8000/v1) for model {self.model!r}"
            )
        # With backend openai a revision pins the tokenizer loaded locally from the Hub id (the served weights are
        # the server's): a Hub id takes one whatever the backend.
        why = not_on_hub("transformers", self.model) if self.revision is not None else None
        if why:
            raise ValueError(f"revision {self.revision!r} names a Hugging Face Hub revision, but model {self.model!r} "
                             f"{why}: remove revision (it applies to Hub model ids only)")
        return self


class SamplingOverride(Section):
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_new_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None


class LLMOverride(Section):
    """A model role (policy, reference, judge, expert): keys left out inherit from ``llm``."""

    _key: str = PrivateAttr(default="")  # where params holds it (``pugc.roles.judge``; set by ``Params``)

    backend: Backend | None = None
    model: ModelName | None = None
    revision: Revision | None = None  # a role with its own model does not inherit llm.revision
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    batch_size: int | None = Field(default=None, gt=0)
    replicas: int | None = Field(default=None, gt=0)
    gpus_per_replica: float | None = Field(default=None, ge=0)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_prefix_caching: bool | None = None
    structured_retries: int | None = Field(default=None, ge=0)
    sampling: SamplingOverride | None = None
    batch_tokens: int | None = Field(default=None, gt=0)
    cpu_threads: Threads | None = None
    base_url: BaseUrl | list[BaseUrl] | None = None
    api_key_env: EnvName | None = None
    concurrency: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    max_requests: int | None = Field(default=None, gt=0)
    option_scoring: OptionScoring | None = None
    prompt_logprobs_via: PromptLogprobsVia | None = None


def resolve_role(base: LLM, override: LLMOverride | None) -> LLM:
    """The ``llm`` section with a role's overrides applied.

    >>> base = load_params("params.yaml").llm  # doctest: +SKIP
    >>> resolve_role(base, LLMOverride(model="gpt2")).model  # doctest: +SKIP
    'gpt2'
    """
    if override is None:
        return base
    data = base.model_dump()
    role = f"{override._key}." if override._key else "the role's "  # an override built in code has no key
    keys = dict(base._keys)
    if override.model not in (None, base.model):  # a revision names a commit of llm.model, not of another model
        data["revision"] = None
        keys["revision"] = f"{role}revision"
    for key, value in override.model_dump(exclude_none=True).items():
        if key == "sampling":
            data["sampling"] = {**data["sampling"], **value}
            keys.update({f"sampling.{field}": f"{role}sampling.{field}" for field in value})
        else:
            data[key] = value
            keys[key] = f"{role}{key}"
    resolved = LLM.model_validate(data)
    resolved._keys = keys
    return resolved
