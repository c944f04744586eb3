"""Variation model: per-pixel mean and spread of good parts, and the deviation of a frame from it.

HALCON's classic golden-template method, deterministic and cheap:

* **Model.** From the golden (and any real good frames) synthesise the good parts a line makes:
  every training image shifted by ``±shift`` px along x and y (bilinear: a sub-pixel registration
  error) and, with ``width > 0``, also eroded and dilated by ``width`` px (a 3×3 cross per pixel:
  traces etched or printed a pixel thicker or thinner).  Per pixel keep the mean ``μ`` and the
  standard deviation ``σ`` over that set: ``σ`` is large only on edges, where good parts really
  vary, and 0 on flat areas.
* **Deviation.** ``z = |x − μ| / max(σ, σ_min)`` per pixel of the aligned frame (0 where the
  alignment left no valid pixel).  ``σ_min`` (grey levels) is the noise a flat area may carry.
* **Noise removal.** A grey opening of ``z`` by an ``opening``×``opening`` square: thresholding an
  opened map equals opening the thresholded one, so one opened map serves every threshold.  A
  2×2 opening keeps a 2-px-wide gap or bridge (the thin opens and shorts) and removes single
  speckle pixels and 1-px lines; edges that wander are already tolerated by ``σ``.
* **Cell score.** The ``min_pixels``-th largest opened ``z`` in the cell: the cell has at least
  ``min_pixels`` flagged pixels exactly when its score exceeds the threshold ``k``.

Optionally the frame is first re-aligned locally (:class:`pipeline.align.LocalAligner`: a smooth
deformation field of a few pixels that one affine warp cannot absorb).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.align import LocalAligner
from pipeline.grid import AddressGrid


@dataclass(frozen=True)
class VariationSettings:
    """Settings of the variation model and its judge (recipe section ``variation:``)."""

    k: float = 6.0  # a pixel deviates when |x − μ| > k · max(σ, sigma_min)
    sigma_min: float = 10.0  # grey levels: the spread a flat area is allowed at least
    shift: float = 0.5  # ± px sub-pixel shifts synthesised into the model (0: none)
    width: int = 1  # ± px edge moves (erosion/dilation) synthesised into the model (0: none)
    opening: int = 2  # side of the square opening of the deviation map (1: none)
    min_pixels: int = 1  # deviating pixels a cell needs to be a defect
    local: bool = True  # local re-alignment (smooth deformation field) before comparing
    local_grid: int = 4  # control points per side of the deformation field
    local_max_px: float = 3.0  # largest local displacement

    def validate(self) -> None:
        """ValueError for settings out of range (yamlconf calls this when loading)."""
        if not self.k > 0:
            raise ValueError("k must be > 0")
        if self.sigma_min <= 0:
            raise ValueError("sigma_min must be > 0")
        if not 0 <= self.shift <= 2:
            raise ValueError("shift must be in [0, 2] px")
        if not 0 <= self.width <= 3:
            raise ValueError("width must be in [0, 3] px")
        if not 1 <= self.opening <= 7:
            raise ValueError("opening must be in [1, 7] px")
        if self.min_pixels < 1:
            raise ValueError("min_pixels must be >= 1")
        if not 2 <= self.local_grid <= 16:
            raise ValueError("local_grid must be in [2, 16]")
        if not 0 < self.local_max_px <= 16:
            raise ValueError("local_max_px must be in (0, 16]")


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _shifted(img: np.ndarray, d: float, axis: int) -> np.ndarray:
    """``img`` moved by ``d`` px along ``axis`` (1: x, 0: y), bilinear, edge replicated:
    ``out(p) = img(p − d)`` (what ``cv2.warpAffine`` with a translation gives, faster)."""
    n = int(np.floor(d))
    f = np.float32(d - n)
    pad = abs(n) + 1
    widths = ((pad, pad), (0, 0)) if axis == 0 else ((0, 0), (pad, pad))
    p = np.pad(img, widths, mode="edge")
    length = img.shape[axis]

    def take(off: int) -> np.ndarray:
        sl = slice(pad + off, pad + off + length)
        return p[sl] if axis == 0 else p[:, sl]

    a = take(-n)
    if f == 0:
        return np.ascontiguousarray(a)
    return cv2.addWeighted(a, float(1 - f), take(-n - 1), float(f), 0.0)


def training_images(golden: np.ndarray, settings: VariationSettings,
                    good_frames: Iterable[np.ndarray] = ()) -> Iterable[np.ndarray]:
    """The good parts the model is fitted on (float32 grey): golden and real good frames, each
    as is, eroded/dilated by ``width`` px, and every one of those shifted by ``±shift`` px."""
    bases = [_grey(golden).astype(np.float32)]
    bases += [_grey(f).astype(np.float32) for f in good_frames]
    if settings.width:
        for b in list(bases):
            bases.append(cv2.erode(b, _CROSS, iterations=settings.width))
            bases.append(cv2.dilate(b, _CROSS, iterations=settings.width))
    s = settings.shift
    for b in bases:
        yield b
        if s > 0:
            for d, axis in ((s, 1), (-s, 1), (s, 0), (-s, 0)):
                yield _shifted(b, d, axis)


class VariationModel:
    """Per-pixel ``μ`` and ``σ`` of good parts of one golden, and the deviation of frames.

    Keeps no per-frame state: one model may serve several threads.
    """

    def __init__(self, golden: np.ndarray, settings: VariationSettings | None = None,
                 good_frames: Iterable[np.ndarray] = ()) -> None:
        """Fit the model (see the module docstring); ``good_frames`` must be aligned to
        ``golden`` already."""
        self.settings = settings or VariationSettings()
        self.settings.validate()
        grey = _grey(np.asarray(golden))
        if grey.ndim != 2 or grey.size == 0:
            raise ValueError(f"golden must be a grey or BGR image, got shape {golden.shape}")
        self.shape = grey.shape
        # float32 sums (cv2.accumulate*): grey levels <= 255 keep the variance exact to far below
        # sigma_min
        acc = np.zeros(self.shape, np.float32)
        acc2 = np.zeros(self.shape, np.float32)
        n = 0
        for img in training_images(grey, self.settings, good_frames):
            if img.shape != self.shape:
                raise ValueError(f"good frame shape {img.shape} differs from golden {self.shape}")
            cv2.accumulate(img, acc)
            cv2.accumulateSquare(img, acc2)
            n += 1
        mean = acc * np.float32(1.0 / n)
        var = acc2 * np.float32(1.0 / n) - mean * mean
        self.mean = mean
        self.std = cv2.sqrt(np.maximum(var, np.float32(0.0)))
        self.images = n
        # 1 / max(σ, σ_min): the deviation is one subtract, one abs, one multiply per pixel
        self._inv = (1.0 / np.maximum(self.std, np.float32(self.settings.sigma_min))).astype(
            np.float32)
        self.local = (LocalAligner(grey, grid=self.settings.local_grid,
                                   max_px=self.settings.local_max_px)
                      if self.settings.local else None)
        o = self.settings.opening
        self._open = np.ones((o, o), np.uint8) if o > 1 else None

    def deviation(self, aligned: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``z = |x − μ| / max(σ, σ_min)`` (float32, 0 where ``valid`` is 0), after the local
        re-alignment when it is on."""
        x = _grey(np.asarray(aligned))
        if x.shape != self.shape:
            raise ValueError(f"frame shape {x.shape} differs from the model's {self.shape}")
        if self.local is not None:
            x, valid = self.local.realign(x, valid)
        z = cv2.absdiff(x.astype(np.float32), self.mean)
        cv2.multiply(z, self._inv, dst=z)
        if valid is not None:
            z[valid == 0] = 0.0
        return z

    def filtered(self, z: np.ndarray) -> np.ndarray:
        """The deviation map after the noise-removing opening."""
        return z if self._open is None else cv2.morphologyEx(z, cv2.MORPH_OPEN, self._open)

    def cell_scores(self, zf: np.ndarray, grid: AddressGrid) -> dict[str, float]:
        """Per cell, the ``min_pixels``-th largest value of the filtered deviation map."""
        n = self.settings.min_pixels
        out: dict[str, float] = {}
        h, w = zf.shape
        for a, (x, y, cw, ch) in grid.cells.items():
            patch = zf[max(y, 0) : min(y + ch, h), max(x, 0) : min(x + cw, w)]
            if patch.size == 0:
                out[a] = 0.0
            elif n == 1:
                out[a] = float(patch.max())
            elif patch.size < n:
                out[a] = 0.0
            else:
                flat = patch.ravel()
                out[a] = float(np.partition(flat, flat.size - n)[flat.size - n])
        return out

    def score(self, aligned: np.ndarray, valid: np.ndarray | None,
              grid: AddressGrid) -> tuple[dict[str, float], np.ndarray]:
        """Cell scores of an aligned frame and its filtered deviation map."""
        zf = self.filtered(self.deviation(aligned, valid))
        return self.cell_scores(zf, grid), zf
