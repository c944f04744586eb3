"""Checks ``station golden build`` runs before it writes a recipe: grid inside the image, and good
frames that agree with each other.

Good frames that disagree: each frame is scored against a unit space fitted on the OTHER good
frames plus the recipe's frames synthesised from the golden (k folds: every frame is held out
once; folds keep the cost at k unit-space fits instead of one per frame).  A frame whose worst
cell scores ``ratio`` times that cell's median over all frames is an outlier: a defective part
in the "good" folder, a wrong part, a bad exposure, a frame the aligner locks onto the wrong pin.
Measured on the synthetic line (2026-12-01, seeds 5 and 7, 320×240 and 640×480, the default
and the demo's settings): good frames 1.0–2.7 (one at 4.8, which is then left out), defective
ones 3.7–4.5 at the lowest (320×240) and from 8.9 at 640×480, so the default ratio is 3.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.base.errors import ConfigError
from pipeline.grid import AddressGrid
from pipeline.nsoartc import NsoartcTransform, UnitSpace, rt_features, synth_good_frames
from pipeline.photometric import PhotometricNormalizer
from pipeline.recipe import RecipeSettings, make_aligner, to_channels

OUTLIER_RATIO = 3.5  # worst cell score / that cell's median over the good frames
MAX_OUTLIER_SHARE = 0.10  # more outliers than this (and more than one): the build stops
FOLDS = 5


def check_grid_inside(grid_config: dict, shape: tuple[int, ...], where: str | None) -> None:
    """ConfigError (``where``: the grid file) when the grid's ROI or a cell reaches outside an
    image of ``shape`` (H, W[, C]), or the grid itself is malformed."""
    try:
        grid = AddressGrid.from_config(grid_config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"malformed grid: {exc}", where) from None
    h, w = shape[:2]
    roi = grid_config.get("roi") if isinstance(grid_config, dict) else None
    if roi is not None:
        x, y, rw, rh = (float(v) for v in roi)
        if x < 0 or y < 0 or x + rw > w or y + rh > h:
            raise ConfigError(f"grid roi [{x:g}, {y:g}, {rw:g}, {rh:g}] reaches outside the "
                              f"{w}x{h} image", where)
    for address, (x, y, cw, ch) in grid.cells.items():
        if x < 0 or y < 0 or x + cw > w or y + ch > h or cw <= 0 or ch <= 0:
            raise ConfigError(f"grid cell {address!r} [{x}, {y}, {cw}, {ch}] lies outside the "
                              f"{w}x{h} image", where)


@dataclass
class Agreement:
    """How the good frames agree: each frame's worst cell ratio, the outliers among them."""

    ratios: list[float]
    outliers: list[int] = field(default_factory=list)  # indexes into the frames
    unaligned: list[int] = field(default_factory=list)
    ratio_limit: float = OUTLIER_RATIO

    def to_json(self, names: Sequence[str]) -> dict:
        """JSON-ready: the outliers by name with their ratio."""
        return {"ratio_limit": self.ratio_limit,
                "outliers": [{"frame": names[i], "ratio": round(self.ratios[i], 2)}
                             for i in self.outliers],
                "unaligned": [names[i] for i in self.unaligned]}


def frame_agreement(frames: Sequence[np.ndarray], golden: np.ndarray, settings: RecipeSettings,
                    *, ratio_limit: float = OUTLIER_RATIO,
                    step: Callable[[], None] | None = None) -> Agreement:
    """Score every good frame against a unit space of the others (``FOLDS`` folds); ``step`` is
    called once per frame aligned and once per frame scored (a progress bar)."""
    channels = settings.nsoartc.channels
    golden = to_channels(golden, channels)
    aligner = make_aligner(golden, settings.align)
    photometric = PhotometricNormalizer(golden, settings.align.photometric)
    k, stride = settings.nsoartc.window, settings.nsoartc.stride
    grid = AddressGrid.from_config(settings.grid)
    aligned: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    unaligned: list[int] = []
    for i, f in enumerate(frames):
        f = to_channels(f, channels)
        if settings.align.enabled:
            a = aligner.align(f)
            if a.ok and a.image is not None:
                aligned[i] = (photometric.apply(a.image, a.valid), a.valid)
            else:
                unaligned.append(i)
        else:
            aligned[i] = (photometric.apply(f), None)
        if step:
            step()
    idx = sorted(aligned)
    ratios = [0.0] * len(frames)
    if len(idx) < 3:  # nothing to compare against
        return Agreement(ratios, [], unaligned, ratio_limit)
    feats = {i: rt_features(golden, aligned[i][0], k, stride) for i in idx}
    # the frames synthesised from the golden that every recipe's unit space holds too: they
    # cover the windows a few real frames leave empty (image borders after alignment)
    us_cfg = settings.unit_space
    synth = [rt_features(golden, f, k, stride) for f in synth_good_frames(
        golden, n=us_cfg.synth, seed=us_cfg.seed, **us_cfg.synth_kwargs())]
    folds = [idx[j::min(FOLDS, len(idx))] for j in range(min(FOLDS, len(idx)))]
    scores: dict[int, np.ndarray] = {}
    cells = list(grid.cells)
    for fold in folds:
        held = set(fold)
        us = UnitSpace.fit([*(feats[i] for i in idx if i not in held), *synth],
                           shrink=us_cfg.shrink)
        transform = NsoartcTransform(golden, us, k=k, stride=stride, channels=channels)
        for i in fold:
            img, valid = aligned[i]
            cs = grid.cell_scores(transform.distance(img, valid), valid)
            scores[i] = np.array([cs[c] for c in cells], dtype=np.float64)
            if step:
                step()
    table = np.stack([scores[i] for i in idx])
    median = np.maximum(np.median(table, axis=0), 1e-6)
    for row, i in zip(table, idx, strict=True):
        ratios[i] = float((row / median).max())
    outliers = [i for i in idx if ratios[i] > ratio_limit]
    return Agreement(ratios, outliers, unaligned, ratio_limit)
