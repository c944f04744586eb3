"""Photometric registration: undo the lighting drift of a frame against the golden.

The RT-method sensitivity ``β`` absorbs a pure gain, but an exposure or black-level offset, or an
illumination slope across the field, moves ``σ`` in every window and makes a whole good part look
defective.  After geometric alignment the frame is fitted to the golden as

    X ≈ G·(a + b·u + c·v) + (d + e·u + f·v)          (model ``plane``; u, v ∈ [−1, 1])
    X ≈ a·G + d                                      (model ``gain_offset``)

by least squares over a sparse set of valid pixels (a local defect barely moves a global fit), and
the frame is mapped back into the golden's photometry: ``X' = (X − offset) / gain``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Model = Literal["none", "gain_offset", "plane"]
MODELS: tuple[str, ...] = ("none", "gain_offset", "plane")


class PhotometricNormalizer:
    """Fits and removes gain/offset (and their slopes) of frames against one golden."""

    def __init__(self, golden: np.ndarray, model: Model = "gain_offset", step: int = 4) -> None:
        if model not in MODELS:
            raise ValueError(f"photometric model must be one of {MODELS}, got {model!r}")
        self.model = model
        self.golden = golden
        h, w = golden.shape[:2]
        self.step = max(1, int(step))
        ys, xs = np.mgrid[0 : h : self.step, 0 : w : self.step]
        self._sample = (ys.ravel(), xs.ravel())
        self._u = (xs.ravel().astype(np.float64) / max(w - 1, 1)) * 2 - 1
        self._v = (ys.ravel().astype(np.float64) / max(h - 1, 1)) * 2 - 1
        self._g = golden[self._sample].astype(np.float64)
        if self._g.ndim == 2:  # BGR: fit on the channel mean
            self._g = self._g.mean(axis=1)
        self._shape = (h, w)
        self._uu = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        self._vv = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]

    def fit(self, frame: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The model's coefficients ``[a, b, c, d, e, f]`` (b, c, e, f are 0 for gain_offset)."""
        x = frame[self._sample].astype(np.float64)
        if x.ndim == 2:
            x = x.mean(axis=1)
        keep = (x > 2) & (x < 253)  # clipped pixels carry no photometric information
        if valid is not None:
            keep &= valid[self._sample] > 0
        g, u, v, x = self._g[keep], self._u[keep], self._v[keep], x[keep]
        if g.size < 16 or float(g.std()) < 1e-6:
            return np.array([1.0, 0, 0, 0, 0, 0])
        if self.model == "plane":
            a = np.stack([g, g * u, g * v, np.ones_like(g), u, v], axis=1)
        else:
            a = np.stack([g, np.ones_like(g)], axis=1)
        coef, *_ = np.linalg.lstsq(a, x, rcond=None)
        if self.model == "plane":
            return coef
        return np.array([coef[0], 0, 0, coef[1], 0, 0])

    def apply(self, frame: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The frame in the golden's photometry, uint8 like the frame (the NSOARTC fast path)."""
        if self.model == "none":
            return frame
        a, b, c, d, e, f = (float(t) for t in self.fit(frame, valid))
        if a <= 0.05:  # no sensible gain (a blank frame): leave it alone, the judges will see it
            return frame
        if self.model == "gain_offset":
            # saturating X/a − d/a in one pass
            return cv2.addWeighted(frame, 1.0 / a, frame, 0.0, -d / a, dtype=cv2.CV_8U)
        x = frame.astype(np.float32)
        gain = a + b * self._uu + c * self._vv
        offset = d + e * self._uu + f * self._vv
        np.maximum(gain, 0.05, out=gain)
        if x.ndim == 3:
            gain, offset = gain[..., None], offset[..., None]
        x -= offset
        x /= gain
        return np.clip(x, 0, 255, out=x).round().astype(np.uint8)
