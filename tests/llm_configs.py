"""Engine configs for tests and benches: params.yaml's ``llm`` section with the built-in tiny model on the
transformers backend (pinned: a params.yaml pointed at another model or backend, e.g. for
``dvc exp run -S llm.model=smollm2``, must not move the suite onto it) and the keys a test is about
replaced, so each call names only those.

    >>> llm_config(batch_size=4).batch_size, llm_config(batch_size=4).model  # doctest: +SKIP
    (4, 'tiny')
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pipeline.config import LLM, load_params

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _defaults() -> dict[str, Any]:
    return {**load_params(ROOT / "params.yaml").llm.model_dump(), "model": "tiny", "backend": "transformers"}


def llm_config(**overrides: Any) -> LLM:
    """params.yaml's ``llm`` with ``overrides`` in place of its keys (``sampling`` replaced whole), validated."""
    return LLM.model_validate({**_defaults(), **overrides})
