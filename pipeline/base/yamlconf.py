"""YAML loading that remembers line numbers, and typed dataclass building with file:line errors.

Configuration lives in YAML (station config, recipes).  A controls engineer who mistypes a key must
be told *where*: every error names ``file:line`` of the offending key.  A key given twice in one
mapping is an error (YAML would silently keep the second).  A section that only *overrides* another
file's (the station config's ``vlm:`` over the recipe's) is kept as :class:`Overrides` and merged
once, key by key, by :func:`merge_overrides`; each value is still checked at its own file:line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

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


class FieldError(ValueError):
    """Raised by a dataclass's ``validate()`` about particular fields: the ConfigError then names
    the file:line of the (last given) one of ``fields`` rather than that of the whole section."""

    def __init__(self, fields: str | Sequence[str], message: str) -> None:
        self.fields: tuple[str, ...] = (fields,) if isinstance(fields, str) else tuple(fields)
        super().__init__(message)


@dataclasses.dataclass
class YamlDoc:
    """A parsed YAML document with the line of every key path.

    ``path`` is the file; for settings given in code or on the command line (``in_memory``) it is
    the origin's name and there are no lines.
    """

    data: Any
    path: Path
    lines: dict[KeyPath, int]
    from_file: bool = True

    @classmethod
    def in_memory(cls, data: Any, origin: str) -> YamlDoc:
        """Settings not read from a file (command-line flags, code); errors name ``origin``."""
        return cls(data, Path(origin), {}, from_file=False)

    def where(self, key_path: KeyPath) -> str:
        """``file:line`` of the deepest known prefix of ``key_path``."""
        for n in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)

    def resolve(self, value: str) -> str:
        """A path given in this document, made absolute: relative to the file's folder (to the
        working directory for in-memory settings); ``~`` expanded."""
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = (self.path.parent if self.from_file else Path.cwd()) / p
        return str(p.resolve())


def _key(loader: _LineLoader, key_node: yaml.Node) -> Any:
    key = loader.construct_object(key_node, deep=True)
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def _check_duplicate_keys(loader: _LineLoader, node: yaml.Node, path: Path,
                          key_path: KeyPath = (), seen: set[int] | None = None) -> None:
    """A key given twice in one mapping raises ConfigError at the second one's line."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already walked (or a recursive anchor)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` merges, never clashes
                _check_duplicate_keys(loader, value_node, path, key_path, seen)
                continue
            key = _key(loader, key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                dotted = ".".join(str(k) for k in (*key_path, key))
                raise ConfigError(f"duplicate key {dotted!r} (first given at line {first[key]}; "
                                  "YAML would silently keep only this one)", f"{path}:{line}")
            first[key] = line
            _check_duplicate_keys(loader, value_node, path, (*key_path, key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(loader, item, path, (*key_path, i), seen)


def load_yaml(path: str | Path) -> YamlDoc:
    """Read a YAML file; syntax errors, duplicate keys and missing files raise ConfigError with
    file:line."""
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
        _check_duplicate_keys(loader, node, path)
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
    if origin is Overrides:
        (target,) = get_args(tp)
        return Overrides.from_doc(target, value, doc, key_path)
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
    _validate(obj, [Overrides(cls, data, doc, key_path)])
    return obj


def _validate(obj: Any, layers: Sequence[Overrides[Any]]) -> None:
    """Run ``obj.validate()``; a ValueError becomes a ConfigError at the line of the field it
    names (FieldError: in the last layer that gives one of them) or else of the section."""
    validate = getattr(obj, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except FieldError as exc:
        for layer in reversed(layers):
            given = [f for f in exc.fields if f in layer]
            if given:
                raise ConfigError(f"{layer.dotted(given[-1])}: {exc}",
                                  layer.where(given[-1])) from None
        top = layers[-1]
        raise ConfigError(f"{top.dotted(exc.fields[0])}: {exc}", top.where()) from None
    except ValueError as exc:
        top = layers[-1]
        raise ConfigError(f"{top.dotted()}: {exc}", top.where()) from None


class Overrides(Mapping[str, Any], Generic[T]):
    """A partial section for dataclass ``T``: only the keys one file (or the command line) sets,
    with where each was set.  Checked against ``T`` when loaded (unknown keys, types, ranges:
    file:line); :func:`merge_overrides` builds the ``T`` of several layers.  Read-only.

    As a field type (``vlm: Overrides[VlmSettings]``) :func:`build_dataclass` keeps the section
    like this instead of filling in defaults, so that a later layer overrides only what it sets.
    """

    def __init__(self, target: type[T], data: Mapping[str, Any] | None = None,
                 doc: YamlDoc | None = None, key_path: KeyPath = ()) -> None:
        self.target = target
        self._data: dict[str, Any] = dict(data or {})
        self.doc = doc if doc is not None else YamlDoc.in_memory(self._data, "(defaults)")
        self.key_path = tuple(key_path)

    @classmethod
    def from_doc(cls, target: type[T], data: Any, doc: YamlDoc,
                 key_path: KeyPath = ()) -> Overrides[T]:
        """The section at ``key_path`` of ``doc``, checked against ``target`` on its own."""
        build_dataclass(target, data, doc, key_path)  # raises ConfigError at file:line
        return cls(target, data, doc, key_path)

    @classmethod
    def from_mapping(cls, target: type[T], data: Mapping[str, Any] | None, origin: str,
                     key_path: KeyPath = ()) -> Overrides[T]:
        """Settings given in code or on the command line; errors name ``origin``."""
        data = dict(data or {})
        return cls.from_doc(target, data, YamlDoc.in_memory(data, origin), key_path)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Overrides[{self.target.__name__}]({self._data!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Overrides[T]:
        return Overrides(self.target, self.to_data(), self.doc, self.key_path)

    def dotted(self, key: str | None = None) -> str:
        """The key's dotted name, e.g. ``vlm.mode``."""
        parts = (*self.key_path, key) if key is not None else self.key_path
        return ".".join(str(k) for k in parts) or "(top level)"

    def where(self, key: str | None = None) -> str:
        """``file:line`` of ``key`` (of the section itself when None)."""
        return self.doc.where((*self.key_path, key) if key is not None else self.key_path)

    def to_data(self) -> dict[str, Any]:
        """A plain deep copy of the keys set (for saving the file again)."""
        import copy

        return copy.deepcopy(self._data)

    def with_resolved_paths(self, keys: Sequence[str]) -> Overrides[T]:
        """A copy whose path-valued ``keys`` are absolute (relative to this layer's file)."""
        data = dict(self._data)
        for k in keys:
            if isinstance(data.get(k), str) and data[k].strip():
                data[k] = self.doc.resolve(data[k])
        return Overrides(self.target, data, self.doc, self.key_path)


def last_given(layers: Sequence[Overrides[Any]], key: str) -> Overrides[Any] | None:
    """The last of ``layers`` that sets ``key`` (the one whose value wins), or None."""
    for layer in reversed(layers):
        if key in layer:
            return layer
    return None


def merge_overrides(target: type[T], layers: Sequence[Overrides[T]]) -> T:
    """Build ``target`` from its defaults overridden by each layer in turn, key by key: nested
    dataclass sections merge key by key, other values are replaced whole.  Each value is checked
    at its own file:line; ``validate()`` runs once on the result (its errors name the line of the
    layer that set the offending key)."""
    hints = typing.get_type_hints(target)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(target):  # type: ignore[arg-type]
        given = [layer for layer in layers if f.name in layer]
        if not given:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            subs = []
            for layer in given:
                value = layer[f.name]
                if value is not None and not isinstance(value, Mapping):
                    raise ConfigError(f"{layer.dotted(f.name)}: expected a mapping, got {value!r}",
                                      layer.where(f.name))
                subs.append(Overrides(tp, value, layer.doc, (*layer.key_path, f.name)))
            kwargs[f.name] = merge_overrides(tp, subs)
        else:
            top = given[-1]
            kwargs[f.name] = _convert(tp, top[f.name], top.doc, (*top.key_path, f.name))
    obj = target(**kwargs)
    _validate(obj, list(layers) or [Overrides(target)])
    return obj
