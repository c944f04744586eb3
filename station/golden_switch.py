"""Evaluation only: judge each frame against the golden its data row names.

Manifest rows and DeepPCB pairs may carry their own golden (``frame.meta["golden"]``).  The live
Inspector has one recipe; replay and evaluation wrap it in a :class:`GoldenSwitch`, which builds
a recipe ONCE per golden (the base recipe's settings and grid, a unit space synthesised from that
golden when a judge needs one (not for the variation judge alone), the base recipe's hash), keeps
the Inspectors of the last ``cache_size`` goldens (LRU) and sends each frame to the right one.
The judges and the policy are the base Inspector's (the same objects: a VLM is loaded once).  A
golden that cannot be read or used makes that part an ``error`` (``golden_unreadable: …`` /
``golden_unusable: <path>: …``), never a pass.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path

from pipeline.base.frames import Frame
from pipeline.inspector import InspectionResult, Inspector
from pipeline.recipe import Recipe, build_recipe, read_image

log = logging.getLogger(__name__)


class GoldenProblem(Exception):
    """A per-frame golden that cannot be used (its message is the result's reason)."""


class GoldenSwitch:
    """An Inspector stand-in for replay/eval: frames naming another golden go to a per-golden
    Inspector; the others to ``inspector``."""

    def __init__(self, inspector: Inspector, *, cache_size: int = 8) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.base = inspector
        self.cache_size = cache_size
        self._derived: OrderedDict[str, Inspector] = OrderedDict()
        folder = inspector.recipe.folder
        self._base_golden = str((folder / "golden.png").resolve()) if folder else None

    @property
    def recipe(self) -> Recipe:
        """The base recipe (grid and thresholds of reports)."""
        return self.base.recipe

    @property
    def policy(self) -> str:
        """The decision policy (the base Inspector's)."""
        return self.base.policy

    @property
    def model_name(self) -> str | None:
        """The judges' model description (the base Inspector's)."""
        return self.base.model_name

    def inspector_for(self, frame: Frame) -> Inspector:
        """The Inspector for ``frame``'s golden; GoldenProblem when that golden is unusable."""
        golden_path = frame.meta.get("golden")
        if not golden_path:
            return self.base
        key = str(Path(golden_path).resolve())
        if key == self._base_golden:
            return self.base
        inspector = self._derived.get(key)
        if inspector is not None:
            self._derived.move_to_end(key)
            return inspector
        inspector = Inspector(self._recipe_for(key), self.base.judges, policy=self.base.policy)
        self._derived[key] = inspector
        while len(self._derived) > self.cache_size:
            self._derived.popitem(last=False)
        return inspector

    def _recipe_for(self, key: str) -> Recipe:
        base = self.base.recipe
        try:
            golden = read_image(key)
        except ValueError as exc:
            raise GoldenProblem(f"golden_unreadable: {exc}") from None
        try:
            recipe = build_recipe([], base.settings.grid, golden=golden, settings=base.settings,
                                  source=key)
        except ValueError as exc:  # e.g. a blank golden: nothing to align on
            raise GoldenProblem(f"golden_unusable: {key}: {exc}") from None
        recipe.hash = base.hash
        return recipe

    def inspect(self, frame: Frame, part_id: str | None = None) -> InspectionResult:
        """Judge ``frame`` against its own golden (or the base recipe's); never raises for bad
        input."""
        t0 = time.perf_counter()
        if self.base.frame_problem(frame):  # the frame's own problem comes first
            return self.base.inspect(frame, part_id)
        try:
            inspector = self.inspector_for(frame)
        except GoldenProblem as exc:
            return self.base.error_result(self.base.part_id_of(frame, part_id), str(exc), t0)
        except Exception as exc:  # a bug or an unexpected golden must not become a pass
            log.exception("golden of %s unusable", self.base.part_id_of(frame, part_id))
            return self.base.error_result(self.base.part_id_of(frame, part_id),
                                          f"internal_error: {type(exc).__name__}: {exc}", t0)
        return inspector.inspect(frame, part_id)

    def close(self) -> None:
        """Close the judges (shared by every per-golden Inspector)."""
        self.base.close()
