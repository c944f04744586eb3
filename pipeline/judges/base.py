"""The judge protocol: how a judge plugs into the Inspector.

A judge looks at one part and says ``pass``, ``defect`` (with addressed defects), ``uncertain`` or
``error``.  It implements :class:`Judge`: a ``name`` (unique, used in configuration, in the
decision policy, in ``timings_ms`` and in ``judges.<name>`` of events and reports) and
``judge(ctx) -> JudgeResult``.  The Inspector computes the shared stages once per part (validate,
align, photometric normalisation, NSOARTC distance ``D``, cell scores, metric image) and hands
them to every judge in a :class:`JudgeContext` (a recipe without a unit space, whose judges need
no ``D``, has ``distance``/``cell_scores``/``metric_image`` None); judges run in the configured
order.  A judge must
not raise for a bad part: it returns an ``error`` (or ``uncertain``) result with a reason (should
one raise anyway, the Inspector turns the part into an ``error``; never a pass).
Per-part recipe data (golden, grid, thresholds) comes from the context, not from the recipe the
judge was built with: evaluation judges frames against goldens of their own with the same judges.
Judge-specific figures go into ``JudgeResult.details`` (they reach events and reports);
``JudgeResult.prompt`` / ``raw_answer`` reach only the recorder.

Adding a judge = one new file + configuration: decorate a factory (a class or a function called as
``factory(recipe, **deps)``, ignoring the deps it does not need) with ``@register_judge("name")``
and list the name in the recipe's ``judges:`` (or the station config's ``judges:``).  A name not
registered yet is looked up as the module ``pipeline.judges.<name>``; a judge defined elsewhere
(a test module, a plug-in package) registers itself when its module is imported.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from pipeline.base.frames import Frame
from pipeline.verdicts import JudgeResult

if TYPE_CHECKING:
    from pipeline.grid import AddressGrid
    from pipeline.recipe import Recipe

__all__ = [
    "RESERVED_NAMES",
    "Judge",
    "JudgeContext",
    "JudgeFactory",
    "build_judges",
    "judge_factory",
    "register_judge",
    "registered_judges",
]

# Policy words of pipeline.decision; a judge cannot be called by one of them.
RESERVED_NAMES: frozenset[str] = frozenset({"any", "all", "both", "total"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class JudgeContext:
    """Everything a judge may use for one part (computed once by the Inspector, shared)."""

    part_id: str
    recipe: Recipe
    frame: Frame
    aligned: np.ndarray  # aligned + photometrically normalised, in the recipe's channels
    valid: np.ndarray | None  # pixels the alignment covered (None: all)
    # The NSOARTC stages: None for a recipe without a unit space (``recipe.has_metric`` False:
    # its judges, the variation judge only, do not use them, so the Inspector skips them)
    distance: np.ndarray | None  # NSOARTC distance map D (float32, aligned image's size)
    cell_scores: dict[str, float] | None  # address → cell score (D units, attribution applied)
    metric_image: np.ndarray | None  # D rendered as the metric (DST) image, uint8
    align_score: float
    grid: AddressGrid
    thresholds: Mapping[str, float]  # address → cell-score threshold of the recipe
    golden_metric_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _golden_metric: np.ndarray | None = field(default=None, init=False, repr=False)
    # images a judge leaves for the Inspector (the variation judge: its filtered deviation map
    # under "variation", the metric image of a recipe without a unit space)
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def golden(self) -> np.ndarray:
        """The recipe's golden image."""
        return self.recipe.golden

    @property
    def golden_metric(self) -> np.ndarray:
        """Metric image of the golden itself, computed on first use (and cached by the
        Inspector across parts)."""
        if self._golden_metric is None:
            if self.golden_metric_fn is None:
                raise RuntimeError("this context has no golden metric image")
            self._golden_metric = self.golden_metric_fn()
        return self._golden_metric


@runtime_checkable
class Judge(Protocol):
    """One judge: a unique ``name`` and ``judge(ctx)`` that never raises for a bad part."""

    name: str

    def judge(self, ctx: JudgeContext) -> JudgeResult:
        """The judge's result on the part described by ``ctx``."""
        ...


JudgeFactory = Callable[..., Judge]
_REGISTRY: dict[str, JudgeFactory] = {}


def register_judge(name: str) -> Callable[[JudgeFactory], JudgeFactory]:
    """Decorator: register ``factory`` (a class or function, called ``factory(recipe, **deps)``)
    under ``name``.  Registering a name twice with another factory is a ValueError."""
    if not _NAME.match(name) or name in RESERVED_NAMES:
        raise ValueError(f"invalid judge name {name!r} (lower-case identifier, not one of "
                         f"{', '.join(sorted(RESERVED_NAMES))})")

    def deco(factory: JudgeFactory) -> JudgeFactory:
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old) != _qualname(factory):
            raise ValueError(f"judge {name!r} is already registered by {_qualname(old)}")
        _REGISTRY[name] = factory
        return factory

    return deco


def _qualname(f: Any) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def judge_factory(name: str) -> JudgeFactory:
    """The factory registered as ``name``, importing ``pipeline.judges.<name>`` when needed;
    ValueError listing the known judges when there is none."""
    if name not in _REGISTRY and _NAME.match(name):
        try:
            importlib.import_module(f"pipeline.judges.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pipeline.judges.{name}":
                raise
    factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(sorted(set(registered_judges()) | set(_builtin_modules())))
        raise ValueError(f"unknown judge {name!r} (known: {known})")
    return factory


def _builtin_modules() -> list[str]:
    """Modules of this package that are judges (all but the protocol and the selection)."""
    import pkgutil

    import pipeline.judges as package

    return [m.name for m in pkgutil.iter_modules(package.__path__)
            if m.name not in ("base", "selection")]


def registered_judges() -> list[str]:
    """Names registered so far (built-in judges register when first used)."""
    return sorted(_REGISTRY)


def build_judges(specs: Sequence[str], recipe: Recipe, **deps: Any) -> list[Judge]:
    """One judge per name in ``specs``, in order: ``factory(recipe, **deps)``.

    ValueError for an unknown or repeated name, or a factory whose judge has another name.
    """
    judges: list[Judge] = []
    seen: set[str] = set()
    for name in specs:
        if not isinstance(name, str):
            raise ValueError(f"a judge is given by its name, got {name!r}")
        if name in seen:
            raise ValueError(f"judge {name!r} is listed twice")
        seen.add(name)
        judge = judge_factory(name)(recipe, **deps)
        if getattr(judge, "name", None) != name:
            raise ValueError(f"judge factory for {name!r} built a judge named "
                             f"{getattr(judge, 'name', None)!r}")
        judges.append(judge)
    return judges
