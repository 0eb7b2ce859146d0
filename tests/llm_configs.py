"""Engine and executor configs for tests and benches, from params.yaml so each call names only the keys a
test is about (the rest replaced whole, e.g. ``sampling``, and validated):

- ``llm_config``: the ``llm`` section with the built-in tiny model on the transformers backend (pinned: a
  params.yaml pointed at another model or backend, e.g. for ``dvc exp run -S llm.model=smollm2``, must not
  move the suite onto it);
- ``execution_config``: the ``execution`` section run locally, one CPU per task, no Ray address (pinned: a
  params.yaml pointed at a Ray cluster must not move the suite onto it; a test asks for ``backend="ray"``).

    >>> llm_config(batch_size=4).batch_size, llm_config(batch_size=4).model  # doctest: +SKIP
    (4, 'tiny')
    >>> execution_config(checkpoint_rows=8).backend  # doctest: +SKIP
    'local'
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pipeline.config import LLM, Execution, Params, load_params

ROOT = Path(__file__).resolve().parents[1]
PINNED_LLM = {"model": "tiny", "backend": "transformers"}
PINNED_EXECUTION = {"backend": "local", "ray_address": None, "num_cpus_per_task": 1}


@functools.cache
def _params() -> Params:
    return load_params(ROOT / "params.yaml")


def llm_config(**overrides: Any) -> LLM:
    """params.yaml's ``llm`` with ``overrides`` in place of its keys (``sampling`` replaced whole), validated."""
    return LLM.model_validate({**_params().llm.model_dump(), **PINNED_LLM, **overrides})


def execution_config(**overrides: Any) -> Execution:
    """params.yaml's ``execution`` with ``overrides`` in place of its keys, validated."""
    return Execution.model_validate({**_params().execution.model_dump(), **PINNED_EXECUTION, **overrides})
