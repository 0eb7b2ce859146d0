"""YAML read as DVC reads params.yaml (YAML 1.2 booleans and floats), with duplicate keys as errors.

PyYAML speaks YAML 1.1, where ``yes``, ``no``, ``on`` and ``off`` are booleans and ``1e-5`` is a
string; DVC (ruamel, YAML 1.2) reads them as strings and a float. ``load_yaml`` follows YAML 1.2 for
both, so strict validation sees what the user wrote, and a key repeated in one mapping raises
``DuplicateKey`` naming the key and both lines instead of the last one silently winning. ``load_yaml_file``
reads a file so, every way it can fail one line (``YamlFileError``): no permission, not UTF-8 (line and
byte), a syntax error (file:line:column), a duplicate key.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
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


class YamlFileError(ValueError):
    """A YAML file cannot be read or parsed; the message is one line naming the file (and line) and the fix."""


def yaml_error_line(path: Path, err: yaml.YAMLError) -> str:
    """One line: where the YAML breaks (file:line:column), what the parser found, what it was reading."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    started = f" ({context} started at line {cmark.line + 1})" if context and cmark is not None else ""
    return (f"{where}: not valid YAML: {problem}{started}; fix the syntax there (indent with spaces, close "
            "every bracket and quote)")


def load_yaml_file(path: Path) -> Any:
    """``load_yaml`` of the UTF-8 file ``path``; ``YamlFileError`` in one line when it cannot be."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as e:
        code = errno.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__
        raise YamlFileError(f"{path}: cannot be read ({e.strerror or e}, {code}); make it readable (its "
                            "permissions or owner) and run again") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise YamlFileError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    try:
        return load_yaml(text)
    except DuplicateKey as e:
        raise YamlFileError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise YamlFileError(yaml_error_line(path, e)) from None
