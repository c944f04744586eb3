"""Camera source types, chosen by ``type:`` in the station config's ``camera:`` section.

A source type is a name, a frozen dataclass of its options (validated by the YAML loader: typed,
unknown keys rejected, errors with file:line) and a function that opens it::

    @dataclass(frozen=True)
    class ToyOptions(SourceOptions):
        colour: int = 128

    @register_source("toy", options=ToyOptions)
    def open_toy(options: ToyOptions, base_dir: Path) -> LiveSource:
        return ToyCamera(options.colour)

``base_dir`` is the station config's folder (relative paths in options are relative to it).
The function must return a :class:`camera.source.LiveSource` without opening anything slow:
the daemon starts it.  Types in this package are registered when their module is first needed
(:data:`BUILTIN_MODULES`); adding one (GenICam) is one new file plus one line there.  A type
defined elsewhere (a plug-in, a test) registers itself when its module is imported.

Every ``camera:`` section shares :class:`SourceOptions` (``open_timeout_s``, ``read_timeout_s``),
which the daemon uses too.  Without ``type:`` a section has today's layout (the ``opencv`` keys):
``source: synthetic`` selects the synthetic camera (``fps`` and the timeouts are used, the other
keys are accepted and ignored), anything else the OpenCV camera.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from camera.source import LiveSource
from pipeline.base.errors import ConfigError, SourceError
from pipeline.base.yamlconf import KeyPath, YamlDoc, build_dataclass

#: source types of this package: imported (and so registered) on first use
BUILTIN_MODULES: dict[str, str] = {
    "opencv": "camera.live",
    "files": "camera.files",
    "synthetic": "camera.synthetic",
    "genicam": "camera.genicam",
}


@dataclass(frozen=True)
class SourceOptions:
    """Options every camera type has (the daemon reads them too)."""

    open_timeout_s: float = 5.0  # time allowed to open the camera / deliver a first frame
    read_timeout_s: float = 2.0  # no frame for this long → camera down; trigger grab limit

    def validate(self) -> None:
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")


@dataclass(frozen=True)
class Reconnect:
    """Reconnect back-off of cameras that re-open after a loss."""

    initial_s: float = 0.5
    max_s: float = 10.0

    def validate(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")


Opener = Callable[[Any, Path], LiveSource]
OpenerT = TypeVar("OpenerT", bound=Callable[..., LiveSource])


@dataclass(frozen=True)
class SourceType:
    """One registered camera type."""

    name: str
    options: type[SourceOptions]
    open: Opener


_TYPES: dict[str, SourceType] = {}
_LOCK = threading.Lock()


def register_source(name: str, *, options: type[SourceOptions]) -> Callable[[OpenerT], OpenerT]:
    """Decorator: register ``opener(options, base_dir) -> LiveSource`` as camera type ``name``.

    ``options`` is a frozen dataclass deriving from :class:`SourceOptions`.  Registering a name
    twice with a different opener is a programming error (``ValueError``).
    """
    if not issubclass(options, SourceOptions):
        raise TypeError(f"camera type {name!r}: options must derive from SourceOptions")

    def deco(opener: OpenerT) -> OpenerT:
        with _LOCK:
            old = _TYPES.get(name)
            if old is not None and old.open is not opener and (
                    old.open.__qualname__ != opener.__qualname__
                    or old.open.__module__ != opener.__module__):
                raise ValueError(f"camera type {name!r} is already registered by "
                                 f"{old.open.__module__}.{old.open.__qualname__}")
            _TYPES[name] = SourceType(name, options, opener)
        return opener

    return deco


def source_type(name: str) -> SourceType:
    """The registered type ``name`` (a built-in one is imported on demand); ``LookupError``
    naming the known types otherwise."""
    with _LOCK:
        found = _TYPES.get(name)
    if found is None and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
        with _LOCK:
            found = _TYPES.get(name)
    if found is None:
        raise LookupError(f"unknown camera type {name!r} (known: {', '.join(known_types())})")
    return found


def known_types() -> list[str]:
    """Names of the built-in types and of every type registered so far, sorted."""
    with _LOCK:
        return sorted(set(BUILTIN_MODULES) | set(_TYPES))


def parse_camera(data: Any, doc: YamlDoc, key_path: KeyPath = ("camera",)
                 ) -> tuple[str, SourceOptions]:
    """The ``camera:`` section of ``doc`` → ``(type name, typed options)``; ConfigError with
    file:line for an unknown type, an unknown key or a wrong value."""
    name = ".".join(map(str, key_path))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {data!r}", doc.where(key_path))
    if "type" not in data:
        return _parse_legacy(data, doc, key_path)
    kind = data["type"]
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{name}.type: expected a camera type name, got {kind!r}",
                          doc.where((*key_path, "type")))
    try:
        spec = source_type(kind)
    except LookupError as exc:
        raise ConfigError(f"{name}.type: {exc}", doc.where((*key_path, "type"))) from None
    rest = {k: v for k, v in data.items() if k != "type"}
    return kind, build_dataclass(spec.options, rest, doc, key_path)


def _parse_legacy(data: Mapping[str, Any], doc: YamlDoc, key_path: KeyPath
                  ) -> tuple[str, SourceOptions]:
    """A section without ``type:`` (configs written before the registry): the OpenCV layout;
    ``source: synthetic`` means the synthetic camera."""
    opencv = build_dataclass(source_type("opencv").options, data, doc, key_path)
    if str(getattr(opencv, "source", "")).strip().lower() != "synthetic":
        return "opencv", opencv
    synthetic = source_type("synthetic").options
    shared = {k: getattr(opencv, k) for k in ("fps", "open_timeout_s", "read_timeout_s")
              if k in synthetic.__dataclass_fields__}
    return "synthetic", synthetic(**shared)


def open_source(kind: str, options: SourceOptions, *, base_dir: str | Path = ".",
                where: str | None = None) -> LiveSource:
    """Create (not start) the live source of type ``kind``; a camera that cannot be created
    from these options (a missing folder, a bad value) is a ConfigError at ``where``."""
    try:
        spec = source_type(kind)
    except LookupError as exc:
        raise ConfigError(f"camera.type: {exc}", where) from None
    if not isinstance(options, spec.options):
        raise TypeError(f"camera type {kind!r} needs {spec.options.__name__}, "
                        f"got {type(options).__name__}")
    try:
        return spec.open(options, Path(base_dir))
    except (TypeError, ValueError, SourceError) as exc:
        raise ConfigError(f"camera ({kind}): {exc}", where) from None
