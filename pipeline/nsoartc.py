"""NSOARTC metric transform: window-wise RT features, unit space and distance map (DESIGN §3).

Window positions (fixed rule used everywhere in this module)
-------------------------------------------------------------
* A window is the ``k×k`` square (``k`` odd) centred on a pixel.
* With stride ``s`` the window centres are, per axis of length ``L``::

      c_j = min(j·s + (s − 1) // 2, L − 1),   j = 0 … ceil(L / s) − 1

  i.e. stride 1 puts a window on every pixel; stride ``s`` puts one window in every ``s×s`` block of
  the frame (block ``[j·s, (j+1)·s)``), at the block's centre pixel (rounded down).
* Window pixels that fall outside the image are taken from the image mirrored about its edge pixel
  (OpenCV ``BORDER_REFLECT_101``, numpy ``np.pad(mode="reflect")``), for golden and frame alike, so
  border windows exist and compare like with like.
* The per-window maps (``Y1``, ``Y2``, ``D``) have shape ``(ceil(H/s), ceil(W/s))``.  ``D`` at frame
  size repeats each window's value over its ``s×s`` block (nearest, no interpolation), so the value
  at pixel ``(y, x)`` is the window ``(y // s, x // s)``.
* A ``valid`` mask (255 = real pixels after alignment) sets ``D = 0`` for every window that is not
  fully valid (mask eroded by ``k×k``; the image border itself is not invalid — it is handled by the
  mirror rule above), so warped-in borders never create defects.

Numerics: the sums are box filters (``cv2.boxFilter(normalize=False)``: O(pixels), independent of
``k``), exact integers for 8-bit images (float64 otherwise), and ``S_e`` is formed from the
difference ``X − G`` (an exact identity, see ``_GoldenSums``), so the cancellation in
``S_xx − S_gx²/S_gg`` never turns rounding into a fake residual (``X = G`` gives ``σ ≈ 0``).
Results (``β``, ``σ``, ``D``) are float32.  Golden-side sums are computed once per transform.

Speed (1280×1024 grey, one core): see ``station/bench_metric.py``; stride 2 computes the per-window
statistics on a quarter of the windows (the box filters stay at full resolution).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

_BORDER = cv2.BORDER_REFLECT_101
BAND_ROWS = 128  # image rows per processing band (cache-sized work arrays)
_FORMAT = "nsoartc-unit-space.v1"


# --------------------------------------------------------------------------------------------
# window geometry and sums
# --------------------------------------------------------------------------------------------


def window_centres(length: int, stride: int) -> np.ndarray:
    """Window-centre coordinates along an axis of ``length`` pixels for ``stride`` (module doc)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = -(-length // stride)
    return np.minimum(np.arange(n) * stride + (stride - 1) // 2, length - 1).astype(np.intp)


def windows_shape(shape: Sequence[int], stride: int) -> tuple[int, int]:
    """Shape ``(ceil(H/s), ceil(W/s))`` of the per-window maps for a frame of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    return -(-h // stride), -(-w // stride)


def _check_k(k: int) -> None:
    if k < 1 or k % 2 == 0:
        raise ValueError(f"window size k must be a positive odd integer, got {k}")


def _take(a: np.ndarray, axis: int, stride: int, n: int) -> np.ndarray:
    """Entries of ``a`` at the window centres along ``axis`` (see :func:`window_centres`)."""
    if stride == 1:
        return a
    length = a.shape[axis]
    off = (stride - 1) // 2
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(off, None, stride)
    part = a[tuple(sl)]
    if part.shape[axis] == n:
        return part
    # the last centre is clamped to the last pixel
    sl[axis] = slice(length - 1, length)
    return np.concatenate([part, a[tuple(sl)]], axis=axis)


def _window_sums(p: np.ndarray, k: int, stride: int, nh: int, nw: int, ddepth: int) -> np.ndarray:
    """Sum of ``p`` over the ``k×k`` window at every window centre: ``(nh, nw)`` of ``ddepth``.

    One full-resolution box filter, then the centres are picked (a strided view; OpenCV's box
    filter is cheapest on the whole frame with integer sums, cheaper than a separable pass on
    fewer rows).
    """
    full = cv2.boxFilter(p, ddepth, (k, k), normalize=False, borderType=_BORDER)
    if stride == 1:
        return full
    return _take(_take(full, 0, stride, nh), 1, stride, nw)


def _split_channels(img: np.ndarray, channels: str) -> list[np.ndarray]:
    img = np.asarray(img)
    if channels == "grey":
        if img.ndim == 3 and img.shape[2] == 3:
            if img.dtype == np.uint8 or img.dtype == np.float32:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            else:
                img = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2GRAY)
        elif img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim != 2:
            raise ValueError(
                f"expected a grey (H, W) or BGR (H, W, 3) image, got shape {img.shape}"
            )
        return [img]
    if channels == "bgr":
        if img.ndim == 2:
            return [img, img, img]
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"channels='bgr' needs a (H, W, 3) image, got shape {img.shape}")
        return [np.ascontiguousarray(img[:, :, c]) for c in range(3)]
    raise ValueError(f"channels must be 'grey' or 'bgr', got {channels!r}")


class _GoldenSums:
    """Golden-side quantities of one channel, computed once.

    Two numeric paths giving the same results up to float rounding:

    * 8-bit golden and frame: products in uint16, window sums and the difference sums below in
      int32 (all exact), the rest in float32;
    * anything else: float64 throughout.

    The residual is formed from the difference ``Δ = X − G``: ``S_dd = S_xx − 2·S_gx + S_gg``,
    ``S_gd = S_gx − S_gg``, ``Q = S_gg + ε``, ``t = S_gd / Q``::

        β   = S_gx / Q                      = S_gg/Q + t
        S_e = S_xx − S_gx² / Q              = S_dd − t·(S_gd − 2ε) + ε·S_gg/Q

    (an identity, not an approximation) which has no cancellation where the frame matches the
    golden, so rounding never shows up as a fake residual.
    """

    def __init__(self, golden: np.ndarray, k: int, stride: int, eps: float) -> None:
        _check_k(k)
        if golden.ndim != 2:
            raise ValueError(f"golden channel must be 2-D, got shape {golden.shape}")
        h, w = golden.shape
        if min(h, w) <= k // 2:
            raise ValueError(f"image {w}x{h} is too small for window k={k}")
        self.k, self.stride, self.eps = k, stride, float(eps)
        self.shape = (h, w)
        self.n = k * k
        self.nh, self.nw = windows_shape(self.shape, stride)
        self.u8 = golden.dtype == np.uint8
        self.g64 = np.asarray(golden, dtype=np.float64)
        sgg64 = np.ascontiguousarray(
            _window_sums(self.g64 * self.g64, k, stride, self.nh, self.nw, cv2.CV_64F)
        )
        q = sgg64 + eps
        self.sgg64 = sgg64
        self.inv_q64 = 1.0 / q
        self.gq64 = sgg64 / q
        self.e0_64 = eps * sgg64 / q
        if self.u8:
            self.g16 = golden.astype(np.uint16)
            self.sgg_i = np.rint(sgg64).astype(np.int32)
            self.inv_q = self.inv_q64.astype(np.float32)
            self.gq = self.gq64.astype(np.float32)
            self.e0 = self.e0_64.astype(np.float32)
        # row bands of windows processed together (≈ 128 image rows: the work arrays of a band stay
        # in the CPU caches, which is most of the speed at 1280×1024)
        self.band = max(1, BAND_ROWS // stride)
        self.ry = window_centres(h, stride)

    def bands(self) -> Iterator[tuple[int, int]]:
        """Window-row ranges ``[j0, j1)`` processed together."""
        for j0 in range(0, self.nh, self.band):
            yield j0, min(j0 + self.band, self.nh)

    def _band_sums(
        self, frame: np.ndarray, j0: int, j1: int, fast: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``S_xx`` and ``S_gx`` at the window centres of window rows ``[j0, j1)``.

        The box filter runs on the image rows these windows cover; mirroring at a band edge only
        touches rows closer than ``k/2`` to it, which are not centres (unless at the image edge,
        where the mirror is the rule anyway).
        """
        k, s, r = self.k, self.stride, self.k // 2
        h = self.shape[0]
        ys = self.ry[j0:j1]
        y0, y1 = max(int(ys[0]) - r, 0), min(int(ys[-1]) + r + 1, h)
        if fast:
            x = frame[y0:y1].astype(np.uint16)
            g = self.g16[y0:y1]
            ddepth = cv2.CV_32S
        else:
            x = np.asarray(frame[y0:y1], dtype=np.float64)
            g = self.g64[y0:y1]
            ddepth = cv2.CV_64F
        sxx = cv2.boxFilter(x * x, ddepth, (k, k), normalize=False, borderType=_BORDER)
        sgx = cv2.boxFilter(g * x, ddepth, (k, k), normalize=False, borderType=_BORDER)
        if s == 1:
            a0 = int(ys[0]) - y0
            return sxx[a0 : a0 + len(ys)], sgx[a0 : a0 + len(ys)]
        rows = ys - y0
        return (
            _take(sxx[rows], 1, s, self.nw),
            _take(sgx[rows], 1, s, self.nw),
        )

    def features_band(self, frame: np.ndarray, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(β, σ)`` float32 for window rows ``[j0, j1)`` (``frame`` already checked)."""
        fast = self.u8 and frame.dtype == np.uint8
        sxx, sgx = self._band_sums(frame, j0, j1, fast)
        if fast:
            sgg, inv_q, gq, e0, ft = (
                self.sgg_i[j0:j1],
                self.inv_q[j0:j1],
                self.gq[j0:j1],
                self.e0[j0:j1],
                np.float32,
            )
        else:
            sgg, inv_q, gq, e0, ft = (
                self.sgg64[j0:j1],
                self.inv_q64[j0:j1],
                self.gq64[j0:j1],
                self.e0_64[j0:j1],
                np.float64,
            )
        sdd = np.subtract(sxx, sgx)  # S_dd = S_xx − 2 S_gx + S_gg   (exact for 8-bit: int32)
        np.subtract(sdd, sgx, out=sdd)
        np.add(sdd, sgg, out=sdd)
        sgd = np.subtract(sgx, sgg)  # S_gd = S_gx − S_gg
        sdd = sdd.astype(ft, copy=False)
        sgd = sgd.astype(ft, copy=False)
        t = np.multiply(sgd, inv_q)  # t = S_gd / Q
        beta = np.add(gq, t, dtype=np.float32)  # β = S_gg/Q + t = S_gx / Q
        sgd -= ft(2.0 * self.eps)
        np.multiply(t, sgd, out=t)
        np.subtract(sdd, t, out=sdd)
        np.add(sdd, e0, out=sdd)  # S_e before the clamp at 0
        sigma = sdd.astype(np.float32, copy=False)
        np.maximum(sigma, np.float32(0.0), out=sigma)
        sigma *= np.float32(1.0 / max(self.n - 1, 1))
        np.sqrt(sigma, out=sigma)
        return beta, sigma

    def check(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as an array of the golden's shape (``ValueError`` otherwise)."""
        frame = np.asarray(frame)
        if frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape} differs from golden shape {self.shape}")
        return frame

    def features(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(β, σ)`` float32 per window for one channel of an aligned frame."""
        frame = self.check(frame)
        beta = np.empty((self.nh, self.nw), np.float32)
        sigma = np.empty((self.nh, self.nw), np.float32)
        for j0, j1 in self.bands():
            beta[j0:j1], sigma[j0:j1] = self.features_band(frame, j0, j1)
        return beta, sigma


def rt_features(
    golden: np.ndarray, frame: np.ndarray, k: int = 9, stride: int = 1, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """RT features per window: ``Y1 = β`` (sensitivity) and ``Y2 = σ`` (orthogonal residual).

    ``golden`` and ``frame`` are grey ``(H, W)`` (or ``(H, W, C)``: each channel, results shaped
    ``(C, nh, nw)``), uint8 or float, same shape.  Returns float32 maps of shape
    ``(ceil(H/stride), ceil(W/stride))`` with the window rule of the module docstring::

        S_gg = Σ G², S_xx = Σ X², S_gx = Σ G·X
        β = S_gx / (S_gg + ε);  S_e = max(S_xx − S_gx²/(S_gg + ε), 0);  σ = sqrt(S_e / (n − 1))
    """
    golden = np.asarray(golden)
    frame = np.asarray(frame)
    if golden.shape != frame.shape:
        raise ValueError(f"golden shape {golden.shape} differs from frame shape {frame.shape}")
    if golden.ndim == 2:
        return _GoldenSums(golden, k, stride, eps).features(frame)
    if golden.ndim == 3:
        out = [
            _GoldenSums(np.ascontiguousarray(golden[:, :, c]), k, stride, eps).features(
                np.ascontiguousarray(frame[:, :, c])
            )
            for c in range(golden.shape[2])
        ]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
    raise ValueError(f"expected a 2-D or 3-D image, got shape {golden.shape}")


def _per_channel(a: np.ndarray, fn: Any) -> np.ndarray:
    """Apply a 2-D image function to ``a`` (2-D) or to each ``a[c]`` (3-D)."""
    if a.ndim == 2:
        return fn(a)
    return np.stack([fn(np.ascontiguousarray(x)) for x in a])


# --------------------------------------------------------------------------------------------
# synthetic good frames
# --------------------------------------------------------------------------------------------


def synth_good_frames(
    golden: np.ndarray,
    *,
    n: int = 24,
    seed: int = 0,
    shift: float = 0.5,
    morph: int = 1,
    morph_shape: str = "cross",
    morph_amount: float = 1.0,
    gain: float = 0.03,
    noise: float = 2.0,
) -> Iterator[np.ndarray]:
    """Good frames synthesised from one golden with the nuisances of a real line (DESIGN §3).

    Frame ``i`` (seeded, deterministic) is the golden with

    * edge wander: eroded (``i % 3 == 0``), untouched (``== 1``) or dilated (``== 2``) by
      ``morph`` pixels (kernel ``morph_shape`` ``"cross"`` or ``"rect"``, size ``2·morph+1``), as a
      threshold or exposure change moves edges; ``morph_amount < 1`` blends that far toward the
      eroded/dilated image (a fractional edge move, as partial pixel coverage gives);
    * a sub-pixel shift uniform in ``±shift`` px on both axes (bilinear);
    * a gain uniform in ``1 ± gain``;
    * Gaussian sensor noise of ``noise`` grey levels (each frame a differently placed crop of one
      noise field drawn per call, slightly larger than the golden: one draw instead of ``n``).

    An 8-bit golden gives 8-bit frames (rounded, clipped: what a camera delivers); otherwise
    float64.  Grey or multi-channel goldens alike.
    """
    golden = np.asarray(golden)
    if morph_shape not in ("cross", "rect"):
        raise ValueError(f"morph_shape must be 'cross' or 'rect', got {morph_shape!r}")
    rng = np.random.default_rng(seed)
    h, w = golden.shape[:2]
    kern = None
    if morph > 0:
        shape = cv2.MORPH_CROSS if morph_shape == "cross" else cv2.MORPH_RECT
        kern = cv2.getStructuringElement(shape, (2 * morph + 1, 2 * morph + 1))
    base = golden.astype(np.float32)
    pad = 16
    bank = None
    if noise > 0:
        bank = rng.standard_normal(size=(h + 2 * pad, w + 2 * pad, *golden.shape[2:]),
                                   dtype=np.float32)
        bank *= np.float32(noise)
    for i in range(max(int(n), 1)):
        dx, dy = rng.uniform(-shift, shift, size=2) if shift > 0 else (0.0, 0.0)
        gn = rng.uniform(1.0 - gain, 1.0 + gain) if gain > 0 else 1.0
        img = base
        if kern is not None and i % 3 != 1:
            moved = cv2.erode(img, kern) if i % 3 == 0 else cv2.dilate(img, kern)
            if morph_amount >= 1.0:
                img = moved
            else:
                img = cv2.addWeighted(img, 1.0 - morph_amount, moved, morph_amount, 0.0)
        if dx or dy:
            warp = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float64)
            img = cv2.warpAffine(img, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=_BORDER)
        img = img * np.float32(gn)
        if bank is not None:
            oy, ox = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
            img += bank[oy : oy + h, ox : ox + w]
        if golden.dtype == np.uint8:
            np.clip(img, 0, 255, out=img)
            yield np.rint(img, out=img).astype(np.uint8)
        else:
            yield img.astype(np.float64)


# --------------------------------------------------------------------------------------------
# unit space
# --------------------------------------------------------------------------------------------


@dataclass
class UnitSpace:
    """Per-window mean ``μ`` of ``(Y1, Y2)`` and inverse covariance ``Σ⁻¹ = [[a, b], [b, c]]``.

    Arrays are float32 of the per-window shape ``(nh, nw)`` — or ``(C, nh, nw)`` for a per-channel
    (``bgr``) unit space.  ``meta`` records how it was made (``k``, ``stride``, ``frames``,
    ``shrink``, synthesis parameters) and is saved with it.
    """

    mu1: np.ndarray
    mu2: np.ndarray
    inv_a: np.ndarray
    inv_b: np.ndarray
    inv_c: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.mu1, self.mu2, self.inv_a, self.inv_b, self.inv_c)}
        if len(shapes) != 1:
            raise ValueError(f"unit-space arrays differ in shape: {sorted(shapes)}")
        self.mu1, self.mu2, self.inv_a, self.inv_b, self.inv_c = (
            np.ascontiguousarray(a, dtype=np.float32)
            for a in (self.mu1, self.mu2, self.inv_a, self.inv_b, self.inv_c)
        )
        # D² = (y−μ)ᵀ Σ⁻¹ (y−μ) / 2 = ha·d1² + d2·(hb2·d1 + hc·d2)
        self._ha = self.inv_a * np.float32(0.5)
        self._hb2 = self.inv_b.copy()
        self._hc = self.inv_c * np.float32(0.5)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-window shape, ``(nh, nw)`` or ``(C, nh, nw)``."""
        return tuple(self.mu1.shape)

    @property
    def channels(self) -> int:
        """Number of channels (1 for a grey unit space)."""
        return 1 if self.mu1.ndim == 2 else int(self.mu1.shape[0])

    def channel(self, c: int) -> UnitSpace:
        """The unit space of one channel (itself for a grey unit space and ``c == 0``)."""
        if self.mu1.ndim == 2:
            if c != 0:
                raise IndexError(f"grey unit space has no channel {c}")
            return self
        return UnitSpace(
            self.mu1[c], self.mu2[c], self.inv_a[c], self.inv_b[c], self.inv_c[c], dict(self.meta)
        )

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        features: Iterable[tuple[np.ndarray, np.ndarray]],
        shrink: float | None = None,
        *,
        spread: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> UnitSpace:
        """Fit from the ``(Y1, Y2)`` maps of ``M ≥ 1`` aligned good frames (any iterable, streamed).

        Per window: mean ``μ`` and sample covariance ``S`` (ddof 1; zero when ``M = 1``).  The
        covariance is shrunk toward the pooled covariance ``P`` (mean of ``S`` over all windows,
        plus a ridge of 1e-6·trace + 1e-9 so it is positive definite)::

            Σ = (1 − λ)·S + λ·P,   λ = shrink, default 2 / (M + 1)  (1 when M = 1)

        so ``Σ`` is never singular, even for windows whose features never move (flat black areas
        give ``β ≡ 0``).  ``spread > 0`` first replaces each window's variances by their maximum
        over the ``(2·spread+1)²`` neighbouring windows (tolerance for edges that wander further
        than in the good frames; off by default, not used in the DeepPCB setting).
        """
        n = 0
        s1 = s2 = s11 = s22 = s12 = None
        for y1, y2 in features:
            a = np.asarray(y1, dtype=np.float64)
            b = np.asarray(y2, dtype=np.float64)
            if a.shape != b.shape:
                raise ValueError(f"Y1 shape {a.shape} differs from Y2 shape {b.shape}")
            if s1 is None:
                s1, s2 = a.copy(), b.copy()
                s11, s22, s12 = a * a, b * b, a * b
                tmp = np.empty_like(s1)
            else:
                if a.shape != s1.shape:
                    raise ValueError(f"feature shape {a.shape} differs from first frame {s1.shape}")
                s1 += a
                s2 += b
                # in place: no temporaries per frame (a recipe build fits dozens of frames)
                s11 += np.multiply(a, a, out=tmp)
                s22 += np.multiply(b, b, out=tmp)
                s12 += np.multiply(a, b, out=tmp)
            n += 1
        if n == 0 or s1 is None:
            raise ValueError("UnitSpace.fit needs at least one frame's features")
        m1, m2 = s1 / n, s2 / n
        if n > 1:
            c11 = np.maximum((s11 - n * m1 * m1) / (n - 1), 0.0)
            c22 = np.maximum((s22 - n * m2 * m2) / (n - 1), 0.0)
            c12 = (s12 - n * m1 * m2) / (n - 1)
            c12 = np.clip(c12, -np.sqrt(c11 * c22), np.sqrt(c11 * c22))
        else:
            c11 = np.zeros_like(m1)
            c22 = np.zeros_like(m1)
            c12 = np.zeros_like(m1)
        # the cancellations are done (sums in float64); shrinkage and inversion in float32 are
        # well conditioned (the pooled term keeps |corr| < 1) and halve the cost of a build
        m1, m2, c11, c22, c12 = (a.astype(np.float32) for a in (m1, m2, c11, c22, c12))
        if spread > 0:
            # tolerance of a window ≥ that of its neighbours within ``spread`` windows: an edge
            # that wanders a little further on the line than in the good frames stays good
            ker = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * spread + 1, 2 * spread + 1))
            c11 = _per_channel(c11, lambda a: cv2.dilate(a, ker))
            c22 = _per_channel(c22, lambda a: cv2.dilate(a, ker))
            c12 = np.clip(c12, -np.sqrt(c11 * c22), np.sqrt(c11 * c22))
        lam = (1.0 if n == 1 else 2.0 / (n + 1)) if shrink is None else float(shrink)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"shrink must be in [0, 1], got {shrink}")
        # pooled covariance per channel (leading axis) or over the whole map
        axes = (-2, -1)
        p11 = c11.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        p22 = c22.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        p12 = c12.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        ridge = np.float32(1e-6) * (p11 + p22) + np.float32(1e-9)
        p11 = p11 + ridge
        p22 = p22 + ridge
        if lam == 0.0:
            # no shrinkage asked: still keep Σ invertible with the ridge alone
            s11_, s22_, s12_ = c11 + ridge, c22 + ridge, c12
        else:
            a_, b_ = np.float32(1 - lam), np.float32(lam)
            s11_ = a_ * c11 + b_ * p11
            s22_ = a_ * c22 + b_ * p22
            s12_ = a_ * c12 + b_ * p12
        det = s11_ * s22_ - s12_ * s12_
        det = np.maximum(det, np.float32(1e-12) * s11_ * s22_ + np.float32(1e-30))
        info = {"frames": n, "shrink": lam}
        info.update(meta or {})
        return cls(m1, m2, s22_ / det, -s12_ / det, s11_ / det, info)

    @classmethod
    def synthesize(
        cls,
        golden: np.ndarray,
        k: int = 9,
        stride: int = 1,
        *,
        n: int = 24,
        seed: int = 0,
        shift: float = 0.5,
        morph: int = 1,
        morph_shape: str = "cross",
        morph_amount: float = 1.0,
        gain: float = 0.03,
        noise: float = 2.0,
        channels: str = "grey",
        shrink: float | None = None,
        spread: int = 0,
        eps: float = 1e-6,
    ) -> UnitSpace:
        """Unit space from ONE golden image, fitted on :func:`synth_good_frames` (DESIGN §3)."""
        golden = np.asarray(golden)
        chans = _split_channels(golden, channels)
        gs = [_GoldenSums(c, k, stride, eps) for c in chans]

        def feats() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            for frame in synth_good_frames(
                golden,
                n=n,
                seed=seed,
                shift=shift,
                morph=morph,
                morph_shape=morph_shape,
                morph_amount=morph_amount,
                gain=gain,
                noise=noise,
            ):
                fr = _split_channels(frame, channels)
                f = [g.features(c) for g, c in zip(gs, fr, strict=True)]
                if len(f) == 1:
                    yield f[0]
                else:
                    yield np.stack([a for a, _ in f]), np.stack([b for _, b in f])

        meta = {
            "k": k,
            "stride": stride,
            "frame_shape": list(chans[0].shape),
            "channels": channels,
            "synth": {
                "n": n,
                "seed": seed,
                "shift": shift,
                "morph": morph,
                "morph_shape": morph_shape,
                "morph_amount": morph_amount,
                "gain": gain,
                "noise": noise,
            },
        }
        return cls.fit(feats(), shrink=shrink, spread=spread, meta=meta)

    # ---------------------------------------------------------------- scoring
    def score_squared(self, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
        """``D² = (y − μ)ᵀ Σ⁻¹ (y − μ) / 2`` per window, float32 (mean ≈ 1 on good frames)."""
        if y1.shape != self.mu1.shape or y2.shape != self.mu2.shape:
            raise ValueError(f"feature shape {y1.shape} differs from unit-space shape {self.shape}")
        return self._score_sq(y1, y2, slice(None))

    def _score_sq(self, y1: np.ndarray, y2: np.ndarray, rows: slice) -> np.ndarray:
        """``D²`` for the window rows ``rows`` of the unit space (new float32 array)."""
        d1 = np.subtract(y1, self.mu1[rows], dtype=np.float32)
        d2 = np.subtract(y2, self.mu2[rows], dtype=np.float32)
        t = np.multiply(self._hb2[rows], d1)
        t2 = np.multiply(self._hc[rows], d2)
        np.add(t, t2, out=t)
        np.multiply(t, d2, out=t)  # d2·(b·d1 + c/2·d2)
        np.multiply(d1, d1, out=d1)
        np.multiply(d1, self._ha[rows], out=d1)
        np.add(t, d1, out=t)
        np.maximum(t, np.float32(0.0), out=t)
        return t

    def score(self, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
        """``D = √D²`` per window, float32."""
        d2 = self.score_squared(y1, y2)
        cv2.sqrt(d2, dst=d2)
        return d2

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the unit space to an ``.npz`` file (arrays plus JSON metadata)."""
        import json

        np.savez_compressed(
            Path(path),
            mu1=self.mu1,
            mu2=self.mu2,
            inv_a=self.inv_a,
            inv_b=self.inv_b,
            inv_c=self.inv_c,
            meta=np.array(json.dumps({"format": _FORMAT, **self.meta})),
        )

    @classmethod
    def load(cls, path: str | Path) -> UnitSpace:
        """Read a unit space written by :meth:`save`; ``ValueError`` if the file is not one."""
        import json

        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("mu1", "mu2", "inv_a", "inv_b", "inv_c")}
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{p}: not a unit-space file ({exc})") from exc
        if meta.pop("format", _FORMAT) != _FORMAT:
            raise ValueError(f"{p}: unknown unit-space format")
        return cls(**arrays, meta=meta)


class _Fused:
    """Features and score of one channel in one pass per band (the transform's hot path).

    With ``u = sqrt(S_e) = σ·sqrt(n−1)``, ``d1 = β − μ1 = t + (S_gg/Q − μ1)`` and the Cholesky form
    of ``Σ⁻¹/2 = [[a, b], [b, c]]/2``::

        D² = (p·d1 + q·(u − m2))² + (r·(u − m2))²
        p = sqrt(a/2),  q = b / sqrt(2a) / sqrt(n−1),  r = sqrt((c − b²/a)/2) / sqrt(n−1),
        m2 = μ2·sqrt(n−1)

    so ``D`` is one ``cv2.magnitude`` (no separate β, σ, no clamp of D² needed).
    """

    def __init__(self, gs: _GoldenSums, us: UnitSpace) -> None:
        self.gs = gs
        a = us.inv_a.astype(np.float64)
        b = us.inv_b.astype(np.float64)
        c = us.inv_c.astype(np.float64)
        a = np.maximum(a, 1e-30)
        rn = np.sqrt(max(gs.n - 1, 1))
        self.p = np.sqrt(a / 2).astype(np.float32)
        self.q = (b / np.sqrt(2 * a) / rn).astype(np.float32)
        self.r = (np.sqrt(np.maximum(c - b * b / a, 0.0) / 2) / rn).astype(np.float32)
        self.m2 = (us.mu2.astype(np.float64) * rn).astype(np.float32)
        gq = gs.gq64
        self.c1 = (gq - us.mu1.astype(np.float64)).astype(np.float32)
        self.c1_64 = gq - us.mu1.astype(np.float64)

    def band(self, frame: np.ndarray, j0: int, j1: int, out: np.ndarray, *, squared: bool) -> None:
        """Write ``D`` (or ``D²``) of window rows ``[j0, j1)`` into ``out`` (float32)."""
        gs = self.gs
        fast = gs.u8 and frame.dtype == np.uint8
        sxx, sgx = gs._band_sums(frame, j0, j1, fast)
        rows = slice(j0, j1)
        if fast:
            sgg, inv_q, e0, c1 = gs.sgg_i[rows], gs.inv_q[rows], gs.e0[rows], self.c1[rows]
        else:
            sgg, inv_q, e0, c1 = gs.sgg64[rows], gs.inv_q64[rows], gs.e0_64[rows], self.c1_64[rows]
        f32 = np.float32
        sdd = np.subtract(sxx, sgx)  # S_dd = S_xx − 2 S_gx + S_gg (int32 for 8-bit: exact)
        np.subtract(sdd, sgx, out=sdd)
        np.add(sdd, sgg, out=sdd)
        se = np.add(sdd, e0, dtype=f32, casting="unsafe")  # (+ ε·S_gg/Q)
        sgd = np.subtract(sgx, sgg, dtype=f32, casting="unsafe")  # S_gd
        t = np.multiply(sgd, inv_q, dtype=f32, casting="unsafe")  # S_gd / Q
        d1 = np.add(t, c1, dtype=f32, casting="unsafe")  # β − μ1
        sgd -= f32(2.0 * gs.eps)
        np.multiply(sgd, t, out=sgd)
        np.subtract(se, sgd, out=se)  # S_e
        cv2.max(se, 0.0, dst=se)
        cv2.sqrt(se, dst=se)  # u
        se -= self.m2[rows]
        np.multiply(d1, self.p[rows], out=d1)
        np.multiply(se, self.q[rows], out=t)
        np.add(d1, t, out=d1)  # e1
        np.multiply(se, self.r[rows], out=se)  # e2
        if squared:
            np.multiply(d1, d1, out=d1)
            np.multiply(se, se, out=se)
            np.add(d1, se, out=out)
        else:
            cv2.magnitude(d1, se, out)


# --------------------------------------------------------------------------------------------
# transform
# --------------------------------------------------------------------------------------------


class NsoartcTransform:
    """Golden + unit space → distance map ``D`` and the 8-bit metric ("DST") image."""

    def __init__(
        self,
        golden: np.ndarray,
        unit_space: UnitSpace,
        k: int = 9,
        stride: int = 1,
        channels: str = "grey",
        d_vis: float = 8.0,
        eps: float = 1e-6,
    ) -> None:
        """Precompute the golden-side sums; ``unit_space`` must match ``k``/``stride``/shape."""
        if d_vis <= 0:
            raise ValueError(f"d_vis must be > 0, got {d_vis}")
        self.k, self.stride, self.channels, self.d_vis = k, stride, channels, float(d_vis)
        chans = _split_channels(np.asarray(golden), channels)
        self._gs = [_GoldenSums(c, k, stride, eps) for c in chans]
        self.shape = chans[0].shape
        self.windows_shape = windows_shape(self.shape, stride)
        want = self.windows_shape if len(chans) == 1 else (len(chans), *self.windows_shape)
        if unit_space.shape != want:
            raise ValueError(
                f"unit space shape {unit_space.shape} does not match golden {self.shape} with "
                f"k={k}, stride={stride}, channels={channels} (expected {want})"
            )
        for key, val in (("k", k), ("stride", stride)):
            if key in unit_space.meta and int(unit_space.meta[key]) != val:
                raise ValueError(
                    f"unit space was built with {key}={unit_space.meta[key]}, not {val}"
                )
        self.unit_space = unit_space
        self._us = [unit_space.channel(c) for c in range(len(chans))]
        self._alpha = 255.0 / self.d_vis
        self._fused = [_Fused(g, u) for g, u in zip(self._gs, self._us, strict=True)]

    def features(self, aligned: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(β, σ)`` per window for each channel of an aligned frame."""
        chans = _split_channels(np.asarray(aligned), self.channels)
        return [g.features(c) for g, c in zip(self._gs, chans, strict=True)]

    def distance_windows(self, aligned: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``D`` per window, float32 ``(ceil(H/s), ceil(W/s))``; 0 where the window is not valid.

        Computed band by band of window rows, features and score fused (cache-sized work
        arrays); equal to ``unit_space.score(*rt_features(golden, aligned))`` up to float
        rounding.  Keeps no per-frame state: a transform may be shared by threads.
        """
        chans = [g.check(c) for g, c in zip(self._gs, self._split(aligned), strict=True)]
        g0 = self._gs[0]
        d = np.empty((g0.nh, g0.nw), np.float32)
        inv_c = np.float32(1.0 / len(chans))
        for j0, j1 in g0.bands():
            if len(chans) == 1:
                self._fused[0].band(chans[0], j0, j1, d[j0:j1], squared=False)
                continue
            acc = np.zeros((j1 - j0, g0.nw), np.float32)
            tmp = np.empty_like(acc)
            for fu, c in zip(self._fused, chans, strict=True):
                fu.band(c, j0, j1, tmp, squared=True)
                acc += tmp
            acc *= inv_c
            cv2.sqrt(acc, dst=d[j0:j1])
        if valid is not None:
            d = cv2.copyTo(d, self.window_valid(valid))  # 0 where the mask is 0
        return d

    def _split(self, aligned: np.ndarray) -> list[np.ndarray]:
        chans = _split_channels(np.asarray(aligned), self.channels)
        if len(chans) != len(self._gs):
            raise ValueError(f"frame has {len(chans)} channels, golden {len(self._gs)}")
        return chans

    def window_valid(self, valid: np.ndarray) -> np.ndarray:
        """uint8 per-window mask: 255 where the whole ``k×k`` window lies on valid pixels."""
        valid = np.asarray(valid)
        if valid.shape[:2] != self.shape:
            raise ValueError(f"valid mask shape {valid.shape} differs from frame {self.shape}")
        v = (valid > 0).astype(np.uint8) * np.uint8(255) if valid.dtype != np.uint8 else valid
        v = cv2.erode(v, np.ones((self.k, self.k), np.uint8))  # outside the image counts as valid
        g = self._gs[0]
        return np.ascontiguousarray(_take(_take(v, 0, self.stride, g.nh), 1, self.stride, g.nw))

    def to_frame(self, d_windows: np.ndarray) -> np.ndarray:
        """Per-window map → frame size by repeating each window's value over its ``s×s`` block."""
        if self.stride == 1:
            return d_windows
        h, w = self.shape
        nh, nw = d_windows.shape
        s = self.stride
        big = cv2.resize(d_windows, (nw * s, nh * s), interpolation=cv2.INTER_NEAREST_EXACT)
        return big[:h, :w]

    def distance(self, aligned: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Distance map ``D`` at frame size, float32 (0 where the window is not fully valid)."""
        return self.to_frame(self.distance_windows(aligned, valid))

    def metric_image(self, d: np.ndarray) -> np.ndarray:
        """8-bit metric image ``255 · clip(D / D_vis, 0, 1)`` (rounded)."""
        return cv2.convertScaleAbs(d, alpha=self._alpha)
