"""YAML loading that remembers line numbers, and typed dataclass building with file:line errors.

Configuration lives in YAML (station config, recipes).  A controls engineer who mistypes a key must
be told *where*: every error names ``file:line`` of the offending key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from pipeline.base.errors import ConfigError

T = TypeVar("T")
KeyPath = tuple[Any, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.lines: dict[KeyPath, int] = {}

    def record(self, node: yaml.Node, path: KeyPath) -> None:
        """Walk the composed node tree and record 1-based lines per key path."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self.record(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                self.record(item, (*path, i))


@dataclasses.dataclass
class YamlDoc:
    """A parsed YAML document with the line of every key path."""

    data: Any
    path: Path
    lines: dict[KeyPath, int]

    def where(self, key_path: KeyPath) -> str:
        """``file:line`` of the deepest known prefix of ``key_path``."""
        for n in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


def load_yaml(path: str | Path) -> YamlDoc:
    """Read a YAML file; syntax errors and missing files raise ConfigError with file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", str(path)) from None
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc({}, path, {})
        data = loader.construct_document(node)
        loader.record(node, ())
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"YAML syntax: {exc.problem}", f"{path}:{line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", str(path)) from None
    finally:
        loader.dispose()
    return YamlDoc(data, path, loader.lines)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, doc: YamlDoc, key_path: KeyPath) -> Any:
    """Check and convert one value to the annotated type; raise ConfigError at its line."""
    origin = get_origin(tp)
    where = doc.where(key_path)
    name = ".".join(str(k) for k in key_path) or "(top level)"
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, doc, key_path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}", where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}: must be one of {_type_name(tp)}, got {value!r}", where)
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, doc, key_path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}", where)
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, doc, (*key_path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}", where)
        args = get_args(tp)
        if not args:
            return dict(value)
        return {k: _convert(args[1], v, doc, (*key_path, k)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}", where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}", where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}", where)
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a string, got {value!r}", where)
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}", where)
    return value


def build_dataclass(cls: type[T], data: Any, doc: YamlDoc, key_path: KeyPath = ()) -> T:
    """Build dataclass ``cls`` from mapping ``data``: unknown keys, wrong types and missing
    required fields raise ConfigError naming the key and its ``file:line``."""
    name = ".".join(str(k) for k in key_path) or "(top level)"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {data!r}", doc.where(key_path))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown key {'.'.join(map(str, (*key_path, key)))!r} (known: {known})",
                doc.where((*key_path, key)),
            )
    kwargs = {}
    for fname, field in fields.items():
        if fname in data:
            kwargs[fname] = _convert(hints[fname], data[fname], doc, (*key_path, fname))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {fname!r} in {name}", doc.where(key_path))
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}", doc.where(key_path)) from None
    return obj
