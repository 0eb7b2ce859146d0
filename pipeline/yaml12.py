"""YAML read as DVC reads params.yaml (YAML 1.2 booleans and floats), with duplicate keys as errors.

PyYAML speaks YAML 1.1, where ``yes``, ``no``, ``on`` and ``off`` are booleans and ``1e-5`` is a
string; DVC (ruamel, YAML 1.2) reads them as strings and a float. ``load_yaml`` follows YAML 1.2 for
both, so strict validation sees what the user wrote, and a key repeated in one mapping raises
``DuplicateKey`` naming the key and both lines instead of the last one silently winning.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first}); keep one of them")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and floats, and duplicate keys as errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:  # an unhashable key: the base constructor reports it
                pass
        return super().construct_mapping(node, deep=deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(  # after the int resolver, so "2048" stays an int
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 booleans and floats; raises ``DuplicateKey`` on a repeated key."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
