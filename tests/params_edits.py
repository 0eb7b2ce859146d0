"""An edited params.yaml (the ``good`` fixture of conftest.py, changed) written to a folder, and the error
loading it gives (tests/test_config.py, tests/test_config_sections.py); ``parent_of`` finds a dotted key to edit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def error_of(tmp_path: Path, data) -> str:
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, data))
    return str(err.value)


def parent_of(data: dict, dotted: str) -> tuple[dict, str]:
    """(the mapping that holds ``dotted``'s last key, that key): ``parent_of(params, "selfie.policy_model")``."""
    *path, last = dotted.split(".")
    for part in path:
        data = data[part]
    return data, last
