"""params.yaml validation errors as lines a user can act on: file, key path, what was wrong, a close key name."""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the file and every bad key path."""


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys ``root`` (params.yaml's model) allows in the mapping at ``loc`` (a key path's parent), [] when unknown."""
    node: Any = root
    if loc[:1] == ("tiny_overrides",):  # tiny_overrides.<section>.<key>: the section's keys
        loc = loc[1:]
    for part in loc:
        while get_origin(node) in (Union, UnionType):  # Optional[X]: X
            args = [a for a in get_args(node) if a is not type(None)]
            node = args[0] if len(args) == 1 else None
        if isinstance(part, int) and get_origin(node) is list:
            node = get_args(node)[0]
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return []
    while get_origin(node) in (Union, UnionType):
        args = [a for a in get_args(node) if a is not type(None)]
        node = args[0] if len(args) == 1 else None
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


# Keys whose values may hold a secret (a pasted API key, user:password@ in a URL): errors never echo them.
SECRET_KEYS = ("api_key_env", "base_url")


def _is_tag(part: Any) -> bool:
    """A union member's tag in an error's location (``int``, ``constrained-str``, ``list[...]``), not a key."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "list", "dict") or "[" in part or "-" in part)


def _one_per_union(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a value fails every member of a union (``pools[0]: 'ten'`` is neither int nor float), one error at
    the key instead of one per member named by pydantic's tags: the errors inside the member the value took
    (``base_url: [URL, 2]``: the list's item ``[1]``, not also "should be a valid string"), else the member
    errors that are not about the value's type (a number below its minimum), else one 'Input should be X or Y'."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for e in errors:
        i = next((i for i, p in enumerate(e["loc"]) if _is_tag(p)), None)
        groups.setdefault(e["loc"][:i] if i is not None else (id(e),), []).append(e)
    out = []
    for key, group in groups.items():
        if len(group) == 1 or isinstance(key[0], int):  # (id,): an error outside any union
            out += group
            continue
        inside = [e for e in group if len(e["loc"]) > len(key) + 1]  # below the member's tag: a list's items
        typed = [e for e in group if e["type"].endswith(("_type", "_parsing"))]
        if inside:
            out += inside
        elif len(typed) < len(group):
            out += [e for e in group if e not in typed]
        else:
            wants = dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in group)
            out.append({**group[0], "loc": key, "msg": "Input should be " + " or ".join(wants)})
    return out


def format_validation_error(err: ValidationError, file: str | Path, root: type[BaseModel]) -> str:
    """One line per bad key: the file, the key path, what was wrong (and the value, unless it may be a secret)."""
    lines = []
    for e in _one_per_union(err.errors()):
        loc = tuple(p for p in e["loc"] if not _is_tag(p))
        path = _key_path(loc)
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _keys_at(root, loc[:-1]), n=1)
            msg = (f"unknown key; did you mean {close[0]!r}?" if close
                   else "unknown key (remove it or check its spelling)")
        elif e["type"] == "missing":
            msg = "missing required key"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], dict | list) and not set(SECRET_KEYS) & set(e["loc"]):
                msg += f" (got {e['input']!r})"
            if e["type"] == "int_type" and isinstance(e["input"], float) and e["input"].is_integer():
                msg += f"; write it as a whole number: {int(e['input'])}"  # YAML reads 2.5e8 as a float
        lines.append(f"{file}: {path}: {msg}" if path else f"{file}: {msg}")  # whole-params checks name their keys
    return "invalid parameters:\n  " + "\n  ".join(lines)
