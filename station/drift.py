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
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
from pipeline.nsoartc import NsoartcTransform, UnitSpace
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
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[Recipe, NsoartcTransform, Photometry]] | None = None
        if settings.adapt and versions is not None:
            if recipe.unit_space is None:
                raise ConfigError(
                    f"drift.adapt: the recipe {recipe.folder} has no NSOARTC unit space to adapt "
                    f"(its judges are {list(recipe.settings.judges)}; rebuild it with the metric "
                    "judge listed, or leave drift.adapt off)")
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
            self._learn(result, ratio, photo)
        new_version = self._collect()
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

    def _learn(self, result: InspectionResult, ratio: float, photo: Photometry | None) -> None:
        """Feed a part passed with margin to the adapter; a full batch → a new version,
        written by the worker (:meth:`_collect` swaps to it)."""
        adapter, versions = self._adapter, self.versions
        if adapter is None or versions is None or self._pending is not None:
            return  # while a version is written, parts are judged but do not teach
        verdicts = [j.verdict.value for j in result.judges.values()]
        if not passed_with_margin(result.verdict.value, verdicts, ratio, self.settings.margin):
            return
        aligned = result.images.get("aligned")
        if aligned is None:
            return
        per = self.inspector.transform.features(aligned)
        if len(per) == 1:
            y1, y2 = per[0]
        else:
            y1, y2 = np.stack([b for b, _ in per]), np.stack([s for _, s in per])
        adapter.add(y1, y2)
        if photo is not None:
            self._seen.append(photo)
        if not adapter.ready:
            return
        unit_space, moved = adapter.update()
        expected = next_photometry(Photometry(), self.monitor.expected, self._seen, self.settings)
        self._seen = []
        # writing a version (compressing the unit space, sealing, loading it back, the new
        # transform) takes seconds at full resolution: a worker does it, the inspection goes on
        # with the running recipe and the swap happens on this thread once it is done
        base = self.inspector.recipe
        self._pending = self._worker().submit(self._write_version, base, unit_space, {
            "parts": moved["parts"], "moved": moved, "photometry": expected.to_dict()}, expected)

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recipe-version")
        return self._pool

    def _write_version(self, base: Recipe, unit_space: UnitSpace, drift: dict[str, Any],
                       expected: Photometry) -> tuple[Recipe, NsoartcTransform, Photometry]:
        assert self.versions is not None
        recipe = self.versions.save_next(base, unit_space, drift)
        return recipe, recipe.make_transform(), expected

    def _collect(self) -> int | None:
        """Swap to the version the worker wrote, when it is done (inspection thread)."""
        pending = self._pending
        if pending is None or not pending.done():
            return None
        self._pending = None
        adapter, versions = self._adapter, self.versions
        assert adapter is not None and versions is not None
        try:
            recipe, transform, expected = pending.result()
        except Exception as exc:  # a full disk: the recipe stays as it is
            log.error("recipe drift update not written, recipe unchanged: %s", exc)
            adapter.current = self.inspector.recipe.unit_space
            return None
        self.inspector.use_recipe(recipe, transform)
        adapter.current = recipe.unit_space
        self.version = versions.version_of(recipe)
        self.updates += 1
        try:
            versions.set_current(self.version)
            versions.prune(self.settings.keep_versions, protect=self.version)
        except OSError as exc:
            log.error("recipe version %d runs, but current.json was not written: %s",
                      self.version, exc)
        self.monitor.expected = expected
        log.info("recipe drift update: version %d (%s), %s", self.version, recipe.short_hash,
                 recipe.settings.built["drift"]["moved"])
        return self.version

    def wait_pending(self, timeout: float | None = None) -> int | None:
        """Wait for a version being written and swap to it (tests, shutdown); its number."""
        if self._pending is not None:
            wait([self._pending], timeout=timeout)
        return self._collect()

    def close(self) -> None:
        """Let a version being written finish, then stop the worker."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
