"""Strict YAML for config files: `load_yaml` (a duplicated key is an error, like a syntax error it names the
file, line and column), `build_dataclass` (a mapping to a frozen dataclass: an unknown key or a value of the
wrong type is a `ValueError` naming `where.key`) and `flatten` (nested mappings to the dotted keys MLflow
params take). `camp.config` builds the study file's dataclasses with them, `camp.space` the knob sections.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def build_dataclass(cls: type, mapping: Any, where: str):
    """Build the frozen dataclass `cls` from a mapping, naming `where.key` in every error."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping of keys, got {type(mapping).__name__} {mapping!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields), key=str)  # YAML keys may be ints or bools
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        values[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a simple type hint (int, float, str, bool, Optional, dataclass)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return coerce(value, inner, where)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (plain YAML keeps the
    last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML itself refuses unhashable keys, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike, sections: tuple = ()) -> dict:
    """Read a YAML mapping (of `sections`, named in the error when the document is not a mapping); a syntax
    error names the file, line and column, and so does a key given twice in one mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such study file")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        kind = "YAML error" if isinstance(error, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ValueError(f"{path}: {kind} at {where}{problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping" + (f" with keys {', '.join(sections)}" if sections else ""))
    return document


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`, for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
