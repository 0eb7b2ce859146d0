"""Every params key the code names in its text (error and log messages, docstrings: ``set
pugc.roles.judge.timeout_s``, ``selfie.sampling.max_new_tokens``) is a key params.yaml's models have, so a
message never sends the user to a key that does not exist (one that did: ``pugc.gates.judge``, PUGC's gates
being ``query_filter`` and ``scorer``)."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from pydantic import BaseModel

from pipeline.config import MODEL_SECTIONS, Params

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = tuple(Params.model_fields)
# a dotted key opening with a section (``dove.gates.judge``, ``curry.inputs[0].prompts``), not a call or a path
DOTTED = re.compile(r"(?<![\w./-])((?:" + "|".join(SECTIONS) + r")(?:\.\w+(?:\[\d*\w*\])?)+)(?![\w(/])")


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None), None)


def resolves(key: str) -> bool:
    """Whether ``key`` names a setting (or a section of them) of params.yaml; a mapping's keys are free."""
    model: type[BaseModel] | None = Params
    for part in re.sub(r"\[[^\]]*\]", "", key).split("."):
        if model is None:  # below a leaf or a free mapping (tiny_overrides, mapping)
            return True
        if part not in model.model_fields:
            return False
        model = _model_in(model.model_fields[part].annotation)
    return True


def role_label(key: str) -> bool:
    """``<stage>.<role>`` (``pugc.judge``): how lineage and the card name a stage's model role, not a key."""
    stage, _, role = key.partition(".")
    return stage in MODEL_SECTIONS and role in _model_in(Params.model_fields[stage].annotation).model_fields[
        "roles"].annotation.model_fields


def named_keys(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, m[1]) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) for m in DOTTED.finditer(node.value)]


def test_every_params_key_the_code_names_exists():
    files = sorted((ROOT / "pipeline").rglob("*.py")) + sorted((ROOT / "stages").rglob("*.py"))
    named = [(f.relative_to(ROOT).as_posix(), line, key) for f in files for line, key in named_keys(f)]
    assert len(named) > 50  # the scan finds the keys messages name
    wrong = [n for n in named if not resolves(n[2]) and not role_label(n[2])]
    assert not wrong, f"keys that params.yaml does not have: {wrong}"


def test_the_check_tells_keys_from_non_keys(tmp_path):
    assert resolves("pugc.roles.judge.timeout_s") and resolves("curry.inputs[0].min_gap")
    assert resolves("tiny_overrides.pugc.min_margin") and resolves("ingest.sources[0].mapping.text")
    assert not resolves("pugc.gates.judge") and not resolves("llm.timeout") and not resolves("selfie.policy")
    assert role_label("pugc.judge") and not role_label("pugc.gates")
    code = tmp_path / "m.py"
    code.write_text('"""Set ``pugc.gates.judge``."""\nraise ValueError(f"{n} over llm.max_requests={n}; see '
                    'data/pugc/pairs or dove.filter(x) or curry.inputs[0].prompts")\n')
    assert named_keys(code) == [(1, "pugc.gates.judge"), (2, "llm.max_requests"), (2, "curry.inputs[0].prompts")]
