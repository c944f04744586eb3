"""Slow line drift (lighting, film, focus): how far the line is from what the recipe knows, and a
guarded, bounded update of the recipe's unit space and expected photometry.  Pure computation:
versions on disk, rollback and the daemon wiring live in :mod:`station.drift`.

* :class:`DriftMonitor` keeps the last ``window`` judged parts: per part the largest cell score
  over its threshold (``ratio``; 1.0 is a reject) and the part's gain/offset against the golden
  (:func:`photometry`).  Its :meth:`~DriftMonitor.figure` is the rolling median of the ratio
  (over the parts the cells passed, so a run of defects is not read as drift) and the median
  gain/offset drift against the photometry the recipe expects; ``drifting`` turns on
  when the median ratio reaches ``warn_ratio`` (or the photometry leaves its limits) — well
  before parts are rejected — and off again below ``clear_ratio`` (hysteresis).
* :class:`UnitSpaceAdapter` learns only from parts passed with margin (every judge passed, every
  cell score below ``margin`` × its threshold): it accumulates their NSOARTC features in the
  windows the cells score, and every ``batch`` such parts gives one update, per window
  ``μ ← μ + α·(m − μ)``, ``Σ ← (1 − α)·Σ + α·C`` (batch mean ``m``, covariance ``C``), then
  bounded: the mean moves at most ``max_step`` per update and ``max_total`` in all from the
  original recipe (both in D units of the original covariance, so a step of 1 is what one good
  part's spread is), the covariance stays between the original and ``max_var_ratio`` × it (the
  recipe never gets blinder than that, nor tighter than it was calibrated).  The expected
  gain/offset follow the accepted parts' median the same way, bounded by ``max_gain_total`` /
  ``max_offset_total``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.nsoartc import UnitSpace, window_centres

__all__ = ["DriftMonitor", "DriftSettings", "Photometry", "UnitSpaceAdapter", "cell_window_mask",
           "max_ratio", "passed_with_margin", "photometry"]


@dataclass(frozen=True)
class DriftSettings:
    """The station config's ``drift:`` section (off by default: ``adapt: false`` only reports)."""

    adapt: bool = False  # follow slow drift from parts passed with margin (new recipe versions)
    window: int = 50  # parts in the rolling drift figure
    min_parts: int = 10  # parts before the figure may say recipe_drift
    warn_ratio: float = 0.75  # rolling median of max(cell score / threshold) → recipe_drift
    clear_ratio: float = 0.65  # … back below this → ready again
    warn_gain: float = 0.2  # |median gain / expected − 1| above this → recipe_drift
    warn_offset: float = 25.0  # |median offset − expected| (grey levels) above this → recipe_drift
    margin: float = 0.6  # a part teaches only when every cell score < margin × threshold
    batch: int = 20  # parts passed with margin per update (one recipe version each)
    alpha: float = 0.3  # weight of each update's batch statistics
    max_step: float = 0.5  # per update, per window: mean moves ≤ this (D units, original Σ)
    max_total: float = 2.5  # in total against the original recipe
    max_var_ratio: float = 2.0  # covariance between the original and this × the original
    max_gain_total: float = 0.3  # expected gain within original ± this
    max_offset_total: float = 40.0  # expected offset within original ± this (grey levels)
    keep_versions: int = 200  # recipe versions kept on disk (the oldest are removed)
    version: int | None = None  # run this recipe version (0: the configured recipe; None: the
    # current one, which `station recipe rollback` sets)

    def validate(self) -> None:
        if self.window < 3 or self.min_parts < 1 or self.min_parts > self.window:
            raise ValueError("window must be >= 3 and min_parts in [1, window]")
        if not 0 < self.clear_ratio <= self.warn_ratio:
            raise ValueError("need 0 < clear_ratio <= warn_ratio")
        if not 0 < self.margin < 1:
            raise ValueError("margin must be in (0, 1): only parts passed with margin teach")
        if self.batch < 2 or not 0 < self.alpha <= 1:
            raise ValueError("batch must be >= 2 and alpha in (0, 1]")
        if self.max_step <= 0 or self.max_total < self.max_step:
            raise ValueError("need 0 < max_step <= max_total")
        if self.max_var_ratio < 1:
            raise ValueError("max_var_ratio must be >= 1")
        if self.warn_gain <= 0 or self.warn_offset <= 0:
            raise ValueError("warn_gain and warn_offset must be > 0")
        if self.max_gain_total < 0 or self.max_offset_total < 0 or self.keep_versions < 1:
            raise ValueError("max_gain_total, max_offset_total must be >= 0, keep_versions >= 1")
        if self.version is not None and self.version < 0:
            raise ValueError("version must be >= 0 (0: the configured recipe)")


@dataclass(frozen=True)
class Photometry:
    """Gain and offset of a frame against the golden (``frame ≈ gain·golden + offset``)."""

    gain: float = 1.0
    offset: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """JSON-ready, rounded."""
        return {"gain": round(self.gain, 4), "offset": round(self.offset, 3)}


_QUANTILES = np.linspace(5, 95, 19)


def _grey_sample(image: np.ndarray, target: int = 40_000) -> np.ndarray:
    """About ``target`` pixels of the image on a regular grid, grey (quantiles need no more)."""
    h, w = image.shape[:2]
    step = max(1, int(math.sqrt(h * w / target)))
    img = image[::step, ::step]
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)
    return img


def golden_quantiles(golden: np.ndarray) -> np.ndarray:
    """The golden's grey-level quantiles that :func:`photometry` compares frames with."""
    return np.percentile(_grey_sample(golden), _QUANTILES).astype(np.float64)


def photometry(frame: np.ndarray, golden_q: np.ndarray) -> Photometry:
    """Gain/offset of ``frame`` against the golden from their grey-level quantiles (5 … 95 %):
    independent of the part's pose, and a local defect barely moves it."""
    fq = np.percentile(_grey_sample(frame), _QUANTILES).astype(np.float64)
    a = np.stack([golden_q, np.ones_like(golden_q)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(a, fq, rcond=None)
    return Photometry(float(gain), float(offset))


def max_ratio(cell_scores: Mapping[str, float], thresholds: Mapping[str, float]) -> float:
    """Largest ``score / threshold`` over the cells (1.0: a cell at its threshold); inf for a
    non-finite score."""
    best = 0.0
    for a, s in cell_scores.items():
        s = float(s)
        if not math.isfinite(s):
            return math.inf
        best = max(best, s / float(thresholds[a]))
    return best


def passed_with_margin(verdict: str, judge_verdicts: Iterable[str], ratio: float,
                       margin: float) -> bool:
    """A part may teach the recipe: passed, every judge passed, every cell below margin."""
    return verdict == "pass" and all(v == "pass" for v in judge_verdicts) and ratio < margin


class DriftMonitor:
    """Rolling drift figure over the last ``settings.window`` judged parts."""

    def __init__(self, settings: DriftSettings, expected: Photometry | None = None) -> None:
        self.settings = settings
        self.expected = expected or Photometry()
        self.ratios: deque[float] = deque(maxlen=settings.window)
        self.gains: deque[float] = deque(maxlen=settings.window)
        self.offsets: deque[float] = deque(maxlen=settings.window)
        self.drifting = False
        self.why: str | None = None

    def add(self, ratio: float, photo: Photometry | None) -> bool | None:
        """Record one judged part; returns the new ``drifting`` flag when it changes."""
        self.ratios.append(min(float(ratio), 1e6))
        if photo is not None:
            self.gains.append(photo.gain)
            self.offsets.append(photo.offset)
        s = self.settings
        if len(self.ratios) < s.min_parts:
            return None
        fig = self.figure()
        over = fig["ratio_median"] >= s.warn_ratio
        gain_off = abs(fig["gain_drift"] or 0.0) > s.warn_gain
        offset_off = abs(fig["offset_drift"] or 0.0) > s.warn_offset
        if not self.drifting and (over or gain_off or offset_off):
            self.drifting = True
            self.why = ("cell scores" if over else "photometry")
            return True
        clear = (fig["ratio_median"] < s.clear_ratio and abs(fig["gain_drift"] or 0.0)
                 <= s.warn_gain * 0.8 and abs(fig["offset_drift"] or 0.0) <= s.warn_offset * 0.8)
        if self.drifting and clear:
            self.drifting = False
            self.why = None
            return False
        return None

    def reset(self, expected: Photometry | None = None) -> None:
        """Forget the parts seen (after a recipe change they were judged by another recipe)."""
        if expected is not None:
            self.expected = expected
        self.ratios.clear()
        self.gains.clear()
        self.offsets.clear()

    def figure(self) -> dict[str, Any]:
        """``{parts, ratio_median, ratio_p90, gain_drift, offset_drift, drifting}``: the rolling
        median of max(cell score / threshold) over the parts the cells passed (over all parts
        when most were rejected), the 90th percentile over all parts, the median gain
        relative to the expected one minus 1 and the offset minus the expected one."""
        r = np.asarray(self.ratios, dtype=np.float64)
        # drift moves the good parts' scores; a run of defects is not drift: the median is
        # taken over the parts the cells passed while they are at least half of the window
        good = r[r < 1.0]
        central = good if 2 * good.size >= r.size else r
        gain = float(np.median(self.gains)) / self.expected.gain - 1.0 if self.gains else None
        off = float(np.median(self.offsets)) - self.expected.offset if self.offsets else None
        return {
            "parts": len(r),
            "ratio_median": round(float(np.median(central)), 4) if central.size else 0.0,
            "ratio_p90": round(float(np.percentile(r, 90)), 4) if r.size else 0.0,
            "gain_drift": None if gain is None else round(gain, 4),
            "offset_drift": None if off is None else round(off, 3),
            "drifting": self.drifting,
        }


def cell_window_mask(cells: Iterable[Sequence[int]], shape: tuple[int, int],
                     stride: int) -> np.ndarray:
    """Per-window bool mask: the windows centred inside a grid cell (the ones cells score)."""
    h, w = shape
    pix = np.zeros((h, w), bool)
    for x, y, cw, ch in cells:
        pix[max(y, 0) : min(y + ch, h), max(x, 0) : min(x + cw, w)] = True
    ry, rx = window_centres(h, stride), window_centres(w, stride)
    return pix[np.ix_(ry, rx)]


def _cov(us: UnitSpace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Σ = [[s11, s12], [s12, s22]]`` from the unit space's inverse covariance (float64)."""
    a, b, c = (x.astype(np.float64) for x in (us.inv_a, us.inv_b, us.inv_c))
    det = a * c - b * b
    return c / det, a / det, -b / det


def _inv(s11: np.ndarray, s22: np.ndarray, s12: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    det = np.maximum(s11 * s22 - s12 * s12, 1e-12 * s11 * s22 + 1e-30)
    return s22 / det, -s12 / det, s11 / det


def _mahal(d1: np.ndarray, d2: np.ndarray, inv: tuple[np.ndarray, ...]) -> np.ndarray:
    """``sqrt(dᵀ Σ⁻¹ d / 2)`` per window (the D of a mean shift ``d``)."""
    a, b, c = inv
    return np.sqrt(np.maximum(a * d1 * d1 + 2 * b * d1 * d2 + c * d2 * d2, 0.0) / 2.0)


class UnitSpaceAdapter:
    """Accumulates the features of parts passed with margin; :meth:`update` gives the next unit
    space (bounded against ``original``) once ``batch`` parts were added."""

    def __init__(self, original: UnitSpace, current: UnitSpace, mask: np.ndarray,
                 settings: DriftSettings) -> None:
        if original.shape != current.shape:
            raise ValueError(f"unit spaces differ in shape: {original.shape} vs {current.shape}")
        if mask.shape != original.shape[-2:]:
            raise ValueError(f"window mask {mask.shape} does not fit {original.shape}")
        self.settings = settings
        self.original = original
        self.current = current
        self.mask = np.broadcast_to(mask, original.shape)
        self._idx = np.nonzero(self.mask)
        self._inv0 = tuple(x.astype(np.float64)[self._idx]
                           for x in (original.inv_a, original.inv_b, original.inv_c))
        self._cov0 = tuple(s[self._idx] for s in _cov(original))
        self._reset()

    def _reset(self) -> None:
        k = len(self._idx[0])
        self.n = 0
        self._s = np.zeros((5, k), np.float64)  # Σy1, Σy2, Σy1², Σy2², Σy1y2

    def add(self, y1: np.ndarray, y2: np.ndarray) -> None:
        """One part's features (the unit space's shape)."""
        a = y1.astype(np.float64)[self._idx]
        b = y2.astype(np.float64)[self._idx]
        self._s += (a, b, a * a, b * b, a * b)
        self.n += 1

    @property
    def ready(self) -> bool:
        """``batch`` parts are in: :meth:`update` may run."""
        return self.n >= self.settings.batch

    def update(self) -> tuple[UnitSpace, dict[str, float]]:
        """The next unit space and what moved: ``{parts, step_max, total_max, var_ratio_max}``
        (mean moves in D units of the original covariance).  Resets the batch."""
        s, n, st = self._s, float(self.n), self.settings
        if n < 2:
            raise ValueError("an update needs at least 2 parts")
        m1, m2 = s[0] / n, s[1] / n
        c11 = np.maximum((s[2] - n * m1 * m1) / (n - 1), 0.0)
        c22 = np.maximum((s[3] - n * m2 * m2) / (n - 1), 0.0)
        c12 = (s[4] - n * m1 * m2) / (n - 1)
        cur, idx, alpha = self.current, self._idx, st.alpha
        mu1 = cur.mu1.astype(np.float64)[idx]
        mu2 = cur.mu2.astype(np.float64)[idx]
        d1, d2 = alpha * (m1 - mu1), alpha * (m2 - mu2)
        step = _mahal(d1, d2, self._inv0)
        scale = np.minimum(1.0, st.max_step / np.maximum(step, 1e-12))
        n1, n2 = mu1 + d1 * scale, mu2 + d2 * scale
        o1 = self.original.mu1.astype(np.float64)[idx]
        o2 = self.original.mu2.astype(np.float64)[idx]
        t1, t2 = n1 - o1, n2 - o2
        total = _mahal(t1, t2, self._inv0)
        scale = np.minimum(1.0, st.max_total / np.maximum(total, 1e-12))
        n1, n2 = o1 + t1 * scale, o2 + t2 * scale
        k11, k22, k12 = (x[idx] for x in _cov(cur))
        k11 = (1 - alpha) * k11 + alpha * c11
        k22 = (1 - alpha) * k22 + alpha * c22
        k12 = (1 - alpha) * k12 + alpha * c12
        z11, z22, _ = self._cov0
        r = st.max_var_ratio
        k11 = np.clip(k11, z11, r * z11)
        k22 = np.clip(k22, z22, r * z22)
        lim = 0.99 * np.sqrt(k11 * k22)
        k12 = np.clip(k12, -lim, lim)
        ia, ib, ic = _inv(k11, k22, k12)
        arrays = [x.copy() for x in (cur.mu1, cur.mu2, cur.inv_a, cur.inv_b, cur.inv_c)]
        for arr, val in zip(arrays, (n1, n2, ia, ib, ic), strict=True):
            arr[idx] = val
        meta = dict(cur.meta)
        meta["drift_updates"] = int(meta.get("drift_updates", 0)) + 1
        new = UnitSpace(*arrays, meta=meta)
        moved = {
            "parts": int(n),
            "step_max": round(float(_mahal(n1 - mu1, n2 - mu2, self._inv0).max(initial=0)), 4),
            "total_max": round(float(_mahal(n1 - o1, n2 - o2, self._inv0).max(initial=0)), 4),
            "var_ratio_max": round(float(max((k11 / z11).max(initial=1),
                                             (k22 / z22).max(initial=1))), 4),
        }
        self.current = new
        self._reset()
        return new, moved


def next_photometry(original: Photometry, current: Photometry, seen: Sequence[Photometry],
                    settings: DriftSettings) -> Photometry:
    """The expected photometry after an update: ``current`` moved by ``alpha`` toward the
    median of ``seen``, kept within the original ± ``max_gain_total`` / ``max_offset_total``."""
    if not seen:
        return current
    g = float(np.median([p.gain for p in seen]))
    o = float(np.median([p.offset for p in seen]))
    a = settings.alpha
    gain = current.gain + a * (g - current.gain)
    off = current.offset + a * (o - current.offset)
    gain = min(max(gain, original.gain - settings.max_gain_total),
               original.gain + settings.max_gain_total)
    off = min(max(off, original.offset - settings.max_offset_total),
              original.offset + settings.max_offset_total)
    return Photometry(gain, off)
