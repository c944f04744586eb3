"""The station's drift component: watches every result for drift and wrong frame sizes, and (when
``drift.adapt``) follows slow drift with new recipe versions.  The daemon calls
:meth:`RecipeWatch.observe` with each result after publishing it; replays and tests drive the
same object with the same Inspector (one code path).

* ``drift`` figure (heartbeats, status replies): the rolling median of max(cell score /
  threshold) over the last ``drift.window`` judged parts, its 90th percentile, the gain/offset
  drift against the photometry the running recipe expects, the running recipe version and hash
  (:class:`pipeline.drift.DriftMonitor`).
* ``reason`` (the station turns ``degraded`` with it): ``frame_size`` while frames come in
  another size than the recipe's (one status, every such part an ``error`` ``frame_size: WxH
  (recipe WxH)``), else ``recipe_drift`` while the figure says the line has left what the recipe
  knows — before parts are rejected.
* adaptation (off by default): parts passed with margin feed
  :class:`pipeline.drift.UnitSpaceAdapter`; each full batch is one bounded update, written as a
  new sealed recipe version (:class:`station.recipe_versions.RecipeVersions`) that the
  Inspector uses from the next part on (the ``recipe`` hash of events changes with it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.base.errors import ConfigError
from pipeline.drift import (
    DriftMonitor,
    DriftSettings,
    Photometry,
    UnitSpaceAdapter,
    cell_window_mask,
    golden_quantiles,
    max_ratio,
    next_photometry,
    passed_with_margin,
    photometry,
)
from pipeline.inspector import InspectionResult, Inspector
from pipeline.recipe import Recipe
from station.recipe_versions import RecipeVersions

log = logging.getLogger(__name__)

FRAME_SIZE = "frame_size"
RECIPE_DRIFT = "recipe_drift"


@dataclass
class WatchChange:
    """What :meth:`RecipeWatch.observe` changed: the degraded ``reason`` (None: fine again) and/or
    the recipe (a new version); ``detail`` says why in words."""

    reason_changed: bool
    reason: str | None
    detail: str | None
    new_version: int | None = None


def _photometry_of(recipe: Recipe) -> Photometry:
    p = recipe.settings.built.get("drift", {}).get("photometry") or {}
    return Photometry(float(p.get("gain", 1.0)), float(p.get("offset", 0.0)))


class RecipeWatch:
    """Drift monitor, frame-size watch and (optionally) adaptation for one Inspector."""

    def __init__(self, settings: DriftSettings, inspector: Inspector,
                 versions: RecipeVersions | None = None) -> None:
        if settings.adapt and versions is None:
            raise ValueError("drift adaptation needs a place for recipe versions")
        self.settings = settings
        self.inspector = inspector
        self.versions = versions
        recipe = inspector.recipe
        self._golden_q = golden_quantiles(recipe.golden)
        self.monitor = DriftMonitor(settings, _photometry_of(recipe))
        self.version = versions.version_of(recipe) if versions is not None else 0
        self.frame_size: str | None = None
        self.updates = 0
        self._seen: list[Photometry] = []
        self._adapter: UnitSpaceAdapter | None = None
        if settings.adapt and versions is not None:
            n = recipe.settings.nsoartc
            mask = cell_window_mask(recipe.grid.cells.values(), recipe.golden.shape[:2],
                                    n.stride)
            self._adapter = UnitSpaceAdapter(versions.original.unit_space, recipe.unit_space,
                                             mask, settings)

    @classmethod
    def for_station(cls, settings: DriftSettings, inspector: Inspector,
                    state_dir: str | Path) -> RecipeWatch:
        """The station's watch: its Inspector switched to the recipe version the config's
        ``drift.version`` names, or the current one (``station recipe rollback``)."""
        if "drift" in inspector.recipe.settings.built:
            raise ValueError("RecipeWatch.for_station takes an Inspector of the configured recipe, "
                             "not of one of its drift versions")
        versions = RecipeVersions(state_dir, inspector.recipe)
        version = versions.current() if settings.version is None else settings.version
        if version:
            recipe = versions.load(version)
            inspector.use_recipe(recipe)
            log.info("recipe version %d (%s) of %s", version, recipe.short_hash,
                     versions.original.short_hash)
        return cls(settings, inspector, versions)

    @property
    def reason(self) -> str | None:
        """``frame_size``, ``recipe_drift`` or None."""
        if self.frame_size:
            return FRAME_SIZE
        return RECIPE_DRIFT if self.monitor.drifting else None

    @property
    def recipe_hash(self) -> str:
        """Short hash of the recipe the Inspector runs now."""
        return self.inspector.recipe.short_hash

    def figure(self) -> dict[str, Any]:
        """The heartbeat's ``drift`` field."""
        fig = self.monitor.figure()
        fig.update({"warn_ratio": self.settings.warn_ratio, "adapt": self.settings.adapt,
                    "version": self.version, "recipe": self.recipe_hash,
                    "updates": self.updates, "frame_size": self.frame_size,
                    "expected": self.monitor.expected.to_dict()})
        return fig

    def observe(self, result: InspectionResult) -> WatchChange | None:
        """Take one result into account; what changed, or None."""
        before = self.reason
        new_version = None
        reason = result.reason or ""
        if result.verdict.value == "error":
            if reason.startswith(FRAME_SIZE):
                self.frame_size = reason.split(":", 1)[1].strip() if ":" in reason else reason
        elif result.cell_scores:
            self.frame_size = None
            ratio = max_ratio(result.cell_scores, self.inspector.thresholds)
            frame = result.images.get("frame")
            photo = photometry(frame, self._golden_q) if frame is not None else None
            self.monitor.add(ratio, photo)
            new_version = self._learn(result, ratio, photo)
        after = self.reason
        if after == before and new_version is None:
            return None
        detail = None
        if after == FRAME_SIZE:
            detail = f"frame_size: {self.frame_size}"
        elif after == RECIPE_DRIFT:
            fig = self.monitor.figure()
            detail = (f"recipe_drift: median max score/threshold {fig['ratio_median']:.2f} "
                      f"(warn {self.settings.warn_ratio}), gain {fig['gain_drift']}, offset "
                      f"{fig['offset_drift']} ({self.monitor.why})")
        return WatchChange(after != before, after, detail, new_version)

    def _learn(self, result: InspectionResult, ratio: float,
               photo: Photometry | None) -> int | None:
        """Feed a part passed with margin to the adapter; a full batch → a new version."""
        adapter, versions = self._adapter, self.versions
        if adapter is None or versions is None:
            return None
        verdicts = [j.verdict.value for j in result.judges.values()]
        if not passed_with_margin(result.verdict.value, verdicts, ratio, self.settings.margin):
            return None
        aligned = result.images.get("aligned")
        if aligned is None:
            return None
        per = self.inspector.transform.features(aligned)
        if len(per) == 1:
            y1, y2 = per[0]
        else:
            y1, y2 = np.stack([b for b, _ in per]), np.stack([s for _, s in per])
        adapter.add(y1, y2)
        if photo is not None:
            self._seen.append(photo)
        if not adapter.ready:
            return None
        unit_space, moved = adapter.update()
        expected = next_photometry(Photometry(), self.monitor.expected, self._seen, self.settings)
        self._seen = []
        try:
            recipe = versions.save_next(self.inspector.recipe, unit_space, {
                "parts": moved["parts"], "moved": moved, "photometry": expected.to_dict()})
        except (OSError, ConfigError) as exc:  # a full disk: the recipe stays as it is
            log.error("recipe drift update not written, recipe unchanged: %s", exc)
            adapter.current = self.inspector.recipe.unit_space
            return None
        self.inspector.use_recipe(recipe)
        adapter.current = recipe.unit_space
        self.version = versions.version_of(recipe)
        self.updates += 1
        versions.set_current(self.version)
        versions.prune(self.settings.keep_versions, protect=self.version)
        self.monitor.expected = expected
        log.info("recipe drift update: version %d (%s), %s", self.version, recipe.short_hash,
                 moved)
        return self.version
