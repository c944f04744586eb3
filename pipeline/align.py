"""Alignment of a frame to the golden reference image.

Pipeline per frame (everything golden-side is precomputed in :class:`Aligner`'s constructor):

1. **Coarse pose** at a low resolution (``scale / 2``, at most ~400 px on the long side): rotation
   by Fourier–Mellin (phase correlation of the polar-resampled magnitude spectra, which do not
   move with translation), then translation by phase correlation of the derotated frame.  Both
   peak searches are limited to the allowed pose range (``max_rotation_deg``, ``max_shift_px``).
2. **ECC** (``cv2.findTransformECC``) at that resolution with the requested motion model,
   started from the coarse pose, then (fallback) from the nominal pose (identity).  A candidate
   is taken only when its pose, also after the polish, lies in the allowed range (shift,
   rotation, and a stretch of at most ``MAX_STRETCH``): a low-texture part (a few pads along one
   edge, long parallel bars) can give a wrong, stretched pose a high ECC score.  For ``affine`` and
   ``homography`` the rigid (``euclidean``) fit is the last resort.
3. **Polish** at ``scale`` (default 1/2): a few Gauss–Newton steps of the same criterion (least
   squares after the best gain/offset, i.e. ECC) on the golden's ~16 k strongest-gradient pixels,
   inverse-compositional so the golden's Jacobians are computed once; Huber-weighted so a defect
   on the part does not pull the pose.  OpenCV's ECC at this resolution (640×512) costs ~14 ms
   for its first iteration and ~4 ms for each further one on one core; the polish ~1 ms in all.
4. The original frame (grey or BGR) is warped once at full resolution; ``score`` is the ECC
   correlation coefficient (``cv2.computeECC``) between the golden and the warped frame at
   ``scale`` over the valid pixels.

Frame size: the golden's size is the target.  A frame whose width and height are each within
``MAX_SIZE_MISMATCH`` (25 %) of the golden's is aligned in place — its pixel ``(x, y)`` nominally
lies on the golden's ``(x, y)`` (a camera ROI a few rows or columns larger or smaller); the pose
limits apply to the deviation from that nominal pose, and at least ``MIN_COVERAGE`` of the golden
must be covered.  Other sizes are refused.  Failures never raise: they return
``Alignment(ok=False, reason="alignment_failed: …")``.

:class:`LocalAligner` re-aligns an aligned frame locally (a smooth deformation field of a few
pixels that one warp cannot absorb); the judges that compare pixels use it.

An :class:`Aligner` keeps no per-frame state and may be shared by threads (OpenCV and numpy
release the GIL), but each call is single-frame work: run one per worker for throughput.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

MOTIONS: dict[str, int] = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
MAX_SIZE_MISMATCH = 0.25  # relative, per dimension
MIN_COVERAGE = 0.5  # fraction of the golden the aligned frame must cover
MAX_STRETCH = 0.1  # largest scale change / shear of an accepted pose (singular values 1 ± this)
MASK_INSET_PX = 1.5  # keep only golden pixels whose bilinear source lies fully inside the frame
COARSE_MAX_SIDE = 400  # px; the coarse level is at most this long
POLISH_POINTS = 16384
POLISH_MAX_ITER = 6
POLISH_TOL_PX = 0.005  # stop when a step moves no point more than this (polish-level px)
ECC_COARSE_ITER = 15  # the polish takes it from there
ECC_COARSE_EPS = 1e-4
POLAR_ANGLES = 720  # angular samples over 360° in the Fourier–Mellin stage


# key → (golden array, the Aligner's golden-side state): the last two goldens (read-only arrays)
_GOLDEN_SIDE: dict[tuple, tuple[np.ndarray, dict]] = {}


@dataclass
class Alignment:
    """Result of :meth:`Aligner.align`.

    ``image`` has the golden's height and width and the frame's channels (grey or BGR; BGRA
    becomes BGR).  ``valid`` is 255 where the bilinear source of a pixel lies at least 1.5 px
    inside the frame.  ``warp`` maps frame pixel coordinates to golden pixel coordinates (2x3
    for translation, euclidean and affine, 3x3 for homography, float32):
    ``cv2.warpAffine(frame, warp, (w, h))`` reproduces ``image``.  ``score`` is the ECC
    correlation coefficient at the estimation scale (0 when none was measured).  ``shift``
    (where the golden's centre lies in the frame, minus the centre; px) and ``rotation_deg``
    (image coordinates, y down: positive turns clockwise on screen) describe the pose found,
    also when it was refused.
    """

    ok: bool
    image: np.ndarray | None
    valid: np.ndarray | None
    warp: np.ndarray | None
    score: float
    reason: str | None
    shift: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0


class _Failed(Exception):
    """Internal: this frame cannot be aligned; the message becomes the reason."""


def _fail(reason: str, score: float = 0.0, pose: tuple[float, float, float] | None = None
          ) -> Alignment:
    dx, dy, rot = pose if pose is not None else (0.0, 0.0, 0.0)
    return Alignment(ok=False, image=None, valid=None, warp=None, score=float(score),
                     reason=f"alignment_failed: {reason}", shift=(dx, dy), rotation_deg=rot)


def _level_matrix(full_wh: tuple[int, int], level_wh: tuple[int, int]) -> np.ndarray:
    """3x3 map from full-resolution pixel coordinates to a ``cv2.resize``d level's coordinates."""
    sx = level_wh[0] / full_wh[0]
    sy = level_wh[1] / full_wh[1]
    # cv2.resize aligns pixel centres: x_level = (x + 0.5) * s - 0.5
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _as_3x3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[: m.shape[0], :] = m
    return out


def _to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)


def _check_image(image: object) -> str | None:
    """Why ``image`` is not a usable uint8 grey/BGR(A) image, or None if it is."""
    if not isinstance(image, np.ndarray):
        return f"frame is {type(image).__name__}, not an image array"
    if image.size == 0:
        return f"empty frame (shape {image.shape})"
    if image.dtype != np.uint8:
        return f"frame dtype {image.dtype} is not uint8"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return f"frame shape {image.shape} is neither grey (H, W) nor BGR (H, W, 3)"
    return None


def _parabolic(cm: float, c0: float, cp: float) -> float:
    """Sub-sample offset of a peak from three samples around it."""
    den = cm - 2.0 * c0 + cp
    return 0.0 if den >= 0.0 else float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))


def _spectrum(image: np.ndarray) -> np.ndarray:
    """Complex DFT of a float32 image, as a complex64 array."""
    spec = cv2.dft(image, flags=cv2.DFT_COMPLEX_OUTPUT)
    return spec.view(np.complex64)[:, :, 0]


def _phase_peak(cross: np.ndarray, max_dx: float, max_dy: float) -> tuple[float, float, float]:
    """Phase-correlation peak ``(dx, dy, height)`` of a cross-power spectrum, searched only
    within ``|dx| <= max_dx, |dy| <= max_dy`` (circular shifts)."""
    cross = cross / (np.abs(cross) + 1e-12)
    surf = cv2.idft(np.ascontiguousarray(cross).view(np.float32).reshape(*cross.shape, 2),
                    flags=cv2.DFT_COMPLEX_OUTPUT | cv2.DFT_SCALE)[:, :, 0]
    h, w = surf.shape
    rx = min(math.ceil(max_dx), w // 2 - 1)
    ry = min(math.ceil(max_dy), h // 2 - 1)
    # Roll so zero shift sits at (ry, rx), then search the window.
    rolled = np.roll(surf, (ry, rx), axis=(0, 1))[: 2 * ry + 1, : 2 * rx + 1]
    iy, ix = np.unravel_index(int(np.argmax(rolled)), rolled.shape)
    y0, x0 = iy - ry, ix - rx
    ox = _parabolic(surf[y0 % h, (x0 - 1) % w], surf[y0 % h, x0 % w], surf[y0 % h, (x0 + 1) % w])
    oy = _parabolic(surf[(y0 - 1) % h, x0 % w], surf[y0 % h, x0 % w], surf[(y0 + 1) % h, x0 % w])
    return x0 + ox, y0 + oy, float(surf[y0 % h, x0 % w])


class Aligner:
    """Aligns frames to one golden image (see the module docstring for the method).

    ``motion``: ``translation``, ``euclidean`` (default), ``affine`` or ``homography``.
    ``min_score``: lowest acceptable ECC correlation coefficient.  ``max_shift_px`` /
    ``max_rotation_deg``: largest accepted displacement of the golden's centre and rotation
    (for a part that cannot rotate use ``motion="translation"``, not ``max_rotation_deg=0``).
    ``scale``: resolution of the fine (polish) level, relative to the golden (0 < scale ≤ 1);
    the coarse level runs at half of it.  Raises ``ValueError`` for an unusable golden or
    parameters (a recipe error, not a frame error).
    """

    def __init__(self, golden: np.ndarray, *, motion: str = "euclidean", min_score: float = 0.8,
                 max_shift_px: float = 40.0, max_rotation_deg: float = 5.0, scale: float = 0.5):
        why = _check_image(golden)
        if why is not None:
            raise ValueError(f"golden image: {why.replace('frame', 'image')}")
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {sorted(MOTIONS)}, not {motion!r}")
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], not {scale}")
        if not -1.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [-1, 1], not {min_score}")
        if max_shift_px < 0 or max_rotation_deg < 0:
            raise ValueError("max_shift_px and max_rotation_deg must be >= 0")
        # The golden-side work is shared by Aligners of the same golden array and settings (a
        # recipe build and the Inspector of that recipe each make one).
        key = (id(golden), motion, float(min_score), float(max_shift_px), float(max_rotation_deg),
               float(scale))
        hit = _GOLDEN_SIDE.get(key)
        if hit is not None and hit[0] is golden:
            self.__dict__.update(hit[1])
            return
        grey = np.ascontiguousarray(_to_grey(golden))
        h, w = grey.shape
        if min(h, w) < 32:
            raise ValueError(f"golden image {w}x{h} is too small to align against (min 32 px)")
        if float(grey.std()) < 2.0:
            raise ValueError("golden image has no texture to align on (flat image)")

        self.motion = motion
        self.min_score = float(min_score)
        self.max_shift_px = float(max_shift_px)
        self.max_rotation_deg = float(max_rotation_deg)
        self.scale = float(scale)
        self.golden_shape = golden.shape
        self._wh = (w, h)

        fine_s = scale
        coarse_s = min(scale / 2.0, COARSE_MAX_SIDE / max(w, h))
        coarse_s = max(coarse_s, min(1.0, 48.0 / min(w, h)))  # keep tiny goldens usable
        self._fine_wh = (max(1, round(w * fine_s)), max(1, round(h * fine_s)))
        self._coarse_wh = (max(1, round(w * coarse_s)), max(1, round(h * coarse_s)))
        self._p_fine = _level_matrix(self._wh, self._fine_wh)
        self._p_coarse = _level_matrix(self._wh, self._coarse_wh)

        gold_fine = cv2.resize(grey, self._fine_wh, interpolation=cv2.INTER_AREA)
        gold_coarse = cv2.resize(gold_fine, self._coarse_wh, interpolation=cv2.INTER_AREA)
        self._gold_fine_f = gold_fine.astype(np.float32)
        self._gold_coarse = gold_coarse
        self._init_coarse(gold_coarse.astype(np.float32))
        self._init_polish(self._gold_fine_f)
        _GOLDEN_SIDE[key] = (golden, dict(self.__dict__))
        while len(_GOLDEN_SIDE) > 2:
            _GOLDEN_SIDE.pop(next(iter(_GOLDEN_SIDE)))

    # ----------------------------------------------------------------------------- golden side

    def _init_coarse(self, gold: np.ndarray) -> None:
        cw, ch = self._coarse_wh
        self._hann = cv2.createHanningWindow((cw, ch), cv2.CV_32F)
        self._gold_spec_conj = np.conj(_spectrum((gold - gold.mean()) * self._hann))
        # Fourier–Mellin works on a centred square (a non-square DFT grid is not isotropic).
        side = min(cw, ch) - min(cw, ch) % 2
        self._sq = (side, (cw - side) // 2, (ch - side) // 2)
        self._hann_sq = cv2.createHanningWindow((side, side), cv2.CV_32F)
        # Radii: skip the lowest (window leakage) and highest (noise, aliasing) frequencies.
        self._polar_r = (max(2, side // 32), side * 3 // 8)
        self._gold_polar_conj = np.conj(np.fft.rfft(self._polar(gold), axis=0))

    def _polar(self, coarse: np.ndarray) -> np.ndarray:
        """Angle × radius samples of the centred log-magnitude spectrum (mean-free per radius)."""
        side, x0, y0 = self._sq
        crop = coarse[y0 : y0 + side, x0 : x0 + side]
        mag = np.abs(_spectrum((crop - crop.mean()) * self._hann_sq))
        mag = np.log1p(np.fft.fftshift(mag)).astype(np.float32)
        r0, r1 = self._polar_r
        polar = cv2.warpPolar(mag, (r1, POLAR_ANGLES), (side / 2.0, side / 2.0), float(r1),
                              cv2.INTER_LINEAR | cv2.WARP_POLAR_LINEAR)[:, r0:]
        return polar - polar.mean(axis=0, keepdims=True)

    def _init_polish(self, gold: np.ndarray) -> None:
        fw, fh = self._fine_wh
        gx = cv2.Sobel(gold, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        gy = cv2.Sobel(gold, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        mag = cv2.magnitude(gx, gy)
        border = 3
        mag[:border], mag[-border:], mag[:, :border], mag[:, -border:] = 0, 0, 0, 0
        # Strongest gradients per cell of a 16x16 grid, so every region of the part takes part.
        ys_all: list[np.ndarray] = []
        xs_all: list[np.ndarray] = []
        ny, nx = 16, 16
        quota = max(8, POLISH_POINTS // (ny * nx))
        floor = 0.05 * float(np.percentile(mag, 99.5))
        yb = np.linspace(0, fh, ny + 1).astype(int)
        xb = np.linspace(0, fw, nx + 1).astype(int)
        for i in range(ny):
            for j in range(nx):
                cell = mag[yb[i] : yb[i + 1], xb[j] : xb[j + 1]].ravel()
                k = min(quota, cell.size)
                if k == 0:
                    continue
                idx = np.argpartition(cell, -k)[-k:]
                idx = idx[cell[idx] > floor]
                cy, cx = np.divmod(idx, xb[j + 1] - xb[j])
                ys_all.append(cy + yb[i])
                xs_all.append(cx + xb[j])
        ys = np.concatenate(ys_all) if ys_all else np.zeros(0, int)
        xs = np.concatenate(xs_all) if xs_all else np.zeros(0, int)
        if ys.size < 64:
            raise ValueError("golden image has too few edges to align on")
        # Normalised coordinates (centre 0, half long side 1) keep the normal equations tame.
        self._norm_len = max(fw, fh) / 2.0
        cx0, cy0 = (fw - 1) / 2.0, (fh - 1) / 2.0
        self._norm = np.array([[1 / self._norm_len, 0, -cx0 / self._norm_len],
                               [0, 1 / self._norm_len, -cy0 / self._norm_len], [0, 0, 1.0]])
        self._norm_inv = np.linalg.inv(self._norm)
        u = (xs - cx0) / self._norm_len
        v = (ys - cy0) / self._norm_len
        tx = gx[ys, xs].astype(np.float64) * self._norm_len
        ty = gy[ys, xs].astype(np.float64) * self._norm_len
        tvals = gold[ys, xs].astype(np.float64)

        def design(motion: str) -> np.ndarray:
            if motion == "translation":
                cols = [tx, ty]
            elif motion == "euclidean":
                cols = [ty * u - tx * v, tx, ty]
            elif motion == "affine":
                cols = [tx * u, tx * v, tx, ty * u, ty * v, ty]
            else:
                radial = tx * u + ty * v
                cols = [tx * u, tx * v, tx, ty * u, ty * v, ty, -radial * u, -radial * v]
            # Columns: steepest-descent images, then the gain (golden value) and offset terms.
            return np.stack([*cols, tvals, np.ones_like(tvals)], axis=1)

        self._designs = {self.motion: design(self.motion)}
        if self.motion in ("affine", "homography"):  # the rigid fallback (see _align)
            self._designs["euclidean"] = design("euclidean")
        self._pts = np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)  # 3 x N, fine px
        self._corners = np.array([[0, fw - 1, fw - 1, 0], [0, 0, fh - 1, fh - 1], [1, 1, 1, 1.0]])

    # ------------------------------------------------------------------------------ frame side

    def _delta(self, dp: np.ndarray, motion: str) -> np.ndarray:
        """Incremental warp (3x3, fine-level px) for polish parameters ``dp``."""
        m = np.eye(3)
        if motion == "translation":
            m[:2, 2] = dp
        elif motion == "euclidean":
            c, s = math.cos(dp[0]), math.sin(dp[0])
            m[:2] = [[c, -s, dp[1]], [s, c, dp[2]]]
        elif motion == "affine":
            m[:2] += dp.reshape(2, 3)
        else:
            m += np.append(dp, 0.0).reshape(3, 3)
        return self._norm_inv @ m @ self._norm

    def _coarse_pose(self, coarse: np.ndarray, mask: np.ndarray | None
                     ) -> Iterator[np.ndarray]:
        """Initial golden→frame warps (3x3, coarse px) to try with ECC, best guess first
        (lazily: the fallback without rotation costs nothing when the first one converges)."""
        cw, ch = self._coarse_wh
        s = self._p_coarse[0, 0]
        frame_f = coarse.astype(np.float32)
        if mask is not None:  # pad with the mean so the canvas edge is not a strong feature
            frame_f[mask == 0] = float(frame_f[mask > 0].mean())
        centre = ((cw - 1) / 2.0, (ch - 1) / 2.0)
        angles = [0.0]
        if self.motion != "translation" and self.max_rotation_deg > 0:
            cross = np.sum(np.fft.rfft(self._polar(frame_f), axis=0) * self._gold_polar_conj,
                           axis=1)
            # Half whitening: full phase correlation drowns in the noisy high angular frequencies.
            corr = np.fft.irfft(cross / (np.sqrt(np.abs(cross)) + 1e-12), n=POLAR_ANGLES)
            step = 360.0 / POLAR_ANGLES
            reach = math.ceil((self.max_rotation_deg * 1.5 + 1.0) / step)
            lags = np.arange(-reach, reach + 1)
            k = int(lags[np.argmax(corr[lags % POLAR_ANGLES])])
            k_off = _parabolic(corr[(k - 1) % POLAR_ANGLES], corr[k % POLAR_ANGLES],
                               corr[(k + 1) % POLAR_ANGLES])
            angle = (k + k_off) * step
            if abs(angle) > 0.05:
                angles.insert(0, angle)
        max_t = (self.max_shift_px * 1.5 + 4.0) * s
        mean = float(frame_f.mean())
        for angle in angles:
            rot = _as_3x3(cv2.getRotationMatrix2D(centre, -angle, 1.0))  # golden→frame rotation
            derot = cv2.warpAffine(frame_f, rot[:2], (cw, ch),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=mean)
            cross = _spectrum((derot - derot.mean()) * self._hann) * self._gold_spec_conj
            dx, dy, _ = _phase_peak(cross, max_t, max_t)
            shift = np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])
            yield rot @ shift

    def _ecc_coarse(self, coarse: np.ndarray, mask: np.ndarray | None,
                    init: np.ndarray, motion_name: str) -> tuple[float, np.ndarray]:
        motion = MOTIONS[motion_name]
        warp = (init if motion == cv2.MOTION_HOMOGRAPHY else init[:2]).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_COARSE_ITER,
                    ECC_COARSE_EPS)
        cc, warp = cv2.findTransformECC(self._gold_coarse, coarse, warp, motion, criteria,
                                        mask, 5)
        return float(cc), _as_3x3(warp.astype(np.float64))

    def _polish(self, fine: np.ndarray, warp: np.ndarray, motion: str) -> np.ndarray:
        """Refine a golden→frame warp (3x3, fine px) on the golden's edge pixels."""
        fh, fw = fine.shape
        design = self._designs[motion]
        n_par = design.shape[1] - 2
        weights: np.ndarray | None = None
        for _ in range(POLISH_MAX_ITER):
            q = warp @ self._pts
            if motion == "homography":
                q = q[:2] / q[2]
            qx = q[0].astype(np.float32)
            qy = q[1].astype(np.float32)
            vals = cv2.remap(fine, qx[None, :], qy[None, :], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)[0].astype(np.float64)
            inside = (qx >= 0) & (qx <= fw - 1) & (qy >= 0) & (qy <= fh - 1)
            if int(inside.sum()) < max(64, design.shape[1] * 8):
                raise _Failed("too few golden edge pixels inside the frame")
            wts = inside.astype(np.float64)
            if weights is not None:
                wts *= weights
            dw = design * wts[:, None]
            sol = np.linalg.lstsq(dw.T @ design, dw.T @ vals, rcond=None)[0]
            gain = sol[n_par]
            if gain <= 1e-3:
                raise _Failed("frame does not correlate with the golden (polish gain <= 0)")
            dp = sol[:n_par] / gain
            # Huber weights from this step's residuals, for the next step (defects are outliers).
            resid = np.abs(vals - design @ sol)
            sigma = 1.4826 * float(np.median(resid[inside])) + 1e-6
            weights = np.minimum(1.0, 1.345 * sigma / np.maximum(resid, 1e-12))
            delta = self._delta(dp, motion)
            warp = warp @ np.linalg.inv(delta)
            moved = delta @ self._corners
            if float(np.abs(moved[:2] / moved[2] - self._corners[:2]).max()) < POLISH_TOL_PX:
                break
        return warp

    def _pose(self, g2f: np.ndarray) -> tuple[float, float, float]:
        """(dx, dy, rotation°) of a golden→frame warp (full px): the golden centre's move and
        the rotation of the linear part there."""
        w, h = self._wh
        c = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
        q = g2f @ c
        q = q[:2] / q[2]
        # Local Jacobian at the centre (exact for affine, first order for a homography).
        qx = g2f @ (c + np.array([1.0, 0.0, 0.0]))
        qx = qx[:2] / qx[2]
        rot = math.degrees(math.atan2(qx[1] - q[1], qx[0] - q[0]))
        return float(q[0] - c[0]), float(q[1] - c[1]), rot

    def align(self, frame: np.ndarray) -> Alignment:
        """Align ``frame`` (uint8 grey or BGR) to the golden.

        Never raises for bad image content: an unusable frame, a frame that does not look like
        the golden (ECC below ``min_score``, ECC not converging), or a pose beyond the limits
        gives ``Alignment(ok=False, reason="alignment_failed: …")``.
        """
        why = _check_image(frame)
        if why is not None:
            return _fail(why)
        grey = _to_grey(frame)
        fh_full, fw_full = grey.shape
        w, h = self._wh
        if abs(fw_full - w) > MAX_SIZE_MISMATCH * w or abs(fh_full - h) > MAX_SIZE_MISMATCH * h:
            return _fail(f"frame size {fw_full}x{fh_full} does not match the golden's {w}x{h}")
        try:
            return self._align(np.ascontiguousarray(frame), np.ascontiguousarray(grey))
        except _Failed as exc:
            return _fail(str(exc))
        except cv2.error as exc:
            # "…error: (-7:Iterations do not converge) The algorithm stopped…" → the short part
            found = re.search(r"error: \(-?\d+:([^)]*)\)", str(exc))
            return _fail(f"ecc did not converge ({found.group(1) if found else 'cv2.error'})")

    def _align(self, frame: np.ndarray, grey: np.ndarray) -> Alignment:
        w, h = self._wh
        fh_full, fw_full = grey.shape
        same_size = (fw_full, fh_full) == (w, h)
        # The frame's levels use the golden's factors; their own matrices absorb the rounding.
        fine_wh = self._fine_wh if same_size else (
            max(1, round(fw_full * self._fine_wh[0] / w)),
            max(1, round(fh_full * self._fine_wh[1] / h)))
        fine = cv2.resize(grey, fine_wh, interpolation=cv2.INTER_AREA)
        p_fine = _level_matrix((fw_full, fh_full), fine_wh)
        cw, ch = self._coarse_wh
        if same_size:
            coarse = cv2.resize(fine, (cw, ch), interpolation=cv2.INTER_AREA)
            p_coarse = self._p_coarse
            mask = None
        else:  # into a golden-sized canvas, top-left anchored (the nominal pose)
            own = (max(1, round(fw_full * cw / w)), max(1, round(fh_full * ch / h)))
            small = cv2.resize(fine, own, interpolation=cv2.INTER_AREA)
            p_coarse = _level_matrix((fw_full, fh_full), own)
            coarse = np.zeros((ch, cw), np.uint8)
            mask = np.zeros_like(coarse)
            cy, cx = min(own[1], ch), min(own[0], cw)
            coarse[:cy, :cx] = small[:cy, :cx]
            mask[:cy, :cx] = 255

        # ECC from each coarse pose, then from the nominal pose (identity): a low-texture part
        # (long parallel bars) can give phase correlation a wrong peak that ECC still fits well,
        # so a candidate whose pose lies outside the allowed range does not count, whatever its
        # score, and the identity start is the fallback.
        def to_fine(warp_c: np.ndarray) -> np.ndarray:
            # golden-coarse → frame-coarse  ⇒  golden-fine → frame-fine
            wf = (p_fine @ np.linalg.inv(p_coarse) @ warp_c @ self._p_coarse
                  @ np.linalg.inv(self._p_fine))
            if self.motion != "homography":
                wf[2] = (0, 0, 1)
            return wf

        nominal = p_coarse @ np.linalg.inv(self._p_coarse)
        fine_f = fine.astype(np.float32)
        best: tuple[float, np.ndarray] | None = None  # best coarse fit, in range or not
        error: cv2.error | None = None
        found: tuple[float, np.ndarray] | None = None  # (coarse cc, polished golden→frame)
        inits = list(itertools.chain(self._coarse_pose(coarse, mask), [nominal]))
        # an affine/projective fit may stretch a part with edges in one direction only (bars) far
        # beyond any real scale change; the rigid (euclidean) fit is the fallback
        for motion in self._designs:
            for init in inits:
                try:
                    cc, warp_c = self._ecc_coarse(coarse, mask, init, motion)
                except cv2.error as exc:
                    error = exc
                    continue
                if motion == self.motion and (best is None or cc > best[0]):
                    best = (cc, warp_c)
                warp_f = to_fine(warp_c)
                if cc < self.min_score or self._out_of_range(p_fine, warp_f):
                    continue
                try:
                    warp_f = self._polish(fine_f, warp_f, motion)
                except _Failed:
                    continue
                if not self._out_of_range(p_fine, warp_f):
                    found = (cc, warp_f)
                    break
            if found is not None:
                break
        if found is None:  # no candidate in range: report why with the best coarse fit
            if best is None:
                assert error is not None
                raise error
            coarse_cc = best[0]
            warp_f = to_fine(best[1])
            pose = self._pose(np.linalg.inv(p_fine) @ warp_f @ self._p_fine)
            if self._pose_out_of_range(pose, slack=2.0):
                return self._pose_failure(pose, coarse_cc)
            try:
                warp_f = self._polish(fine_f, warp_f, self.motion)
            except _Failed as exc:
                return _fail(f"{exc} (coarse ecc {coarse_cc:.2f})", coarse_cc, pose)
        else:
            coarse_cc, warp_f = found
        g2f = np.linalg.inv(p_fine) @ warp_f @ self._p_fine
        pose = self._pose(g2f)
        if self._pose_out_of_range(pose):
            return self._pose_failure(pose, coarse_cc)

        # Score at the fine level, over the pixels the frame really covers.
        fine_valid = self._valid_mask(warp_f, fine_wh, self._fine_wh, MASK_INSET_PX)
        coverage = cv2.countNonZero(fine_valid) / fine_valid.size
        if coverage < MIN_COVERAGE:
            return _fail(f"frame covers only {coverage:.0%} of the golden", pose=pose)
        fine_warped = self._warp(fine, warp_f, self._fine_wh)
        score = float(cv2.computeECC(self._gold_fine_f, fine_warped.astype(np.float32),
                                     fine_valid))
        if not score >= self.min_score:  # also catches NaN
            return _fail(f"ecc {score:.2f} < {self.min_score:.2f}", score, pose)

        image = self._warp(frame if frame.ndim == 2 or frame.shape[2] != 1 else grey, g2f,
                           (w, h))
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        valid = self._valid_mask(g2f, (fw_full, fh_full), (w, h), MASK_INSET_PX)
        f2g = np.linalg.inv(g2f)
        f2g /= f2g[2, 2]
        out = f2g if self.motion == "homography" else f2g[:2]
        return Alignment(ok=True, image=image, valid=valid, warp=out.astype(np.float32),
                         score=score, reason=None, shift=pose[:2], rotation_deg=pose[2])

    def _out_of_range(self, p_fine: np.ndarray, warp_f: np.ndarray) -> bool:
        """Whether a golden→frame warp (fine px) lies outside the allowed pose range or
        stretches the part by more than ``MAX_STRETCH``."""
        g2f = np.linalg.inv(p_fine) @ warp_f @ self._p_fine
        if self._pose_out_of_range(self._pose(g2f)):
            return True
        sv = np.linalg.svd(g2f[:2, :2] / (g2f[2, 2] if self.motion == "homography" else 1.0),
                           compute_uv=False)
        return bool(np.abs(sv - 1.0).max() > MAX_STRETCH)

    def _pose_out_of_range(self, pose: tuple[float, float, float], slack: float = 1.0) -> bool:
        return (math.hypot(pose[0], pose[1]) > self.max_shift_px * slack + 1e-6
                or abs(pose[2]) > self.max_rotation_deg * slack + 1e-6)

    def _pose_failure(self, pose: tuple[float, float, float], score: float) -> Alignment:
        dist = math.hypot(pose[0], pose[1])
        if dist > self.max_shift_px:
            why = f"shift {dist:.1f} px > {self.max_shift_px:g} px"
        else:
            why = f"rotation {abs(pose[2]):.2f} deg > {self.max_rotation_deg:g} deg"
        return _fail(f"{why} (coarse ecc {score:.2f})", score, pose)

    def _warp(self, image: np.ndarray, g2f: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if self.motion == "homography":
            return cv2.warpPerspective(image, g2f, out_wh, flags=flags,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.warpAffine(image, g2f[:2], out_wh, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    @staticmethod
    def _valid_mask(g2f: np.ndarray, src_wh: tuple[int, int], out_wh: tuple[int, int],
                    inset: float) -> np.ndarray:
        """255 where the golden pixel's bilinear source lies ``inset`` px inside the frame."""
        fw, fh = src_wh
        rect = np.array([[inset, inset, 1.0], [fw - 1 - inset, inset, 1.0],
                         [fw - 1 - inset, fh - 1 - inset, 1.0], [inset, fh - 1 - inset, 1.0]])
        q = np.linalg.inv(g2f) @ rect.T
        q = (q[:2] / q[2]).T
        mask = np.zeros((out_wh[1], out_wh[0]), np.uint8)
        shift = 4  # sub-pixel polygon vertices
        cv2.fillConvexPoly(mask, np.round(q * (1 << shift)).astype(np.int32), 255,
                           lineType=cv2.LINE_8, shift=shift)
        return mask


# ------------------------------------------------------------------------------ local re-alignment


def _hat_weights(n_blocks: int, n_ctrl: int) -> np.ndarray:
    """``(n_blocks, n_ctrl)`` linear-interpolation weights of control points spread evenly over
    the blocks' centres (the first and last control points on the outer blocks' centres)."""
    pos = (np.arange(n_blocks) + 0.5) / n_blocks * (n_ctrl - 1)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n_ctrl)[None, :]))


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 pixel coordinates ``(x, y)`` of an ``h×w`` image (shared, cached)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


class LocalAligner:
    """Local re-alignment of an already aligned frame: a smooth deformation field.

    One affine warp cannot absorb a board that stretches unevenly (a residual shift running from
    −2 px to +2.5 px across the image).  The field is a bilinear spline on ``grid``×``grid``
    control points, fitted by one linearised least-squares problem (Lucas–Kanade on the blocks of
    a half-resolution, slightly blurred copy, every block tied to its neighbours through the
    spline, so a block with edges in one direction only or none is carried by the others) and
    iterated ``iters`` times.  Displacements are clipped to ``max_px``.  A defect barely moves a
    field with so few degrees of freedom; the golden-side terms are computed once.
    """

    def __init__(self, golden: np.ndarray, *, grid: int = 4, max_px: float = 3.0,
                 block: int = 32, scale: float = 0.5, blur: float = 1.0, iters: int = 2,
                 reg: float = 1e-3) -> None:
        g = _to_grey(golden).astype(np.float32)
        self.h, self.w = g.shape
        self.scale = float(scale)
        self.max_px = float(max_px)
        self.iters = int(iters)
        self.blur = float(blur)
        self.lw, self.lh = max(1, round(self.w * scale)), max(1, round(self.h * scale))
        self.block = block
        self.nby, self.nbx = -(-self.lh // block), -(-self.lw // block)
        low = cv2.resize(g, (self.lw, self.lh), interpolation=cv2.INTER_AREA)
        self._gb = cv2.GaussianBlur(low, (0, 0), blur)
        self._gx = cv2.Sobel(self._gb, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
        self._gy = cv2.Sobel(self._gb, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
        sxx = self._block_sums(self._gx * self._gx)
        syy = self._block_sums(self._gy * self._gy)
        sxy = self._block_sums(self._gx * self._gy)
        wy, wx = _hat_weights(self.nby, grid), _hat_weights(self.nbx, grid)
        self._basis = np.einsum("ik,jl->ijkl", wy, wx).reshape(self.nby * self.nbx, grid * grid)
        b = self._basis
        nc = grid * grid
        a = np.zeros((2 * nc, 2 * nc))
        a[:nc, :nc] = b.T @ (sxx[:, None] * b)
        a[:nc, nc:] = b.T @ (sxy[:, None] * b)
        a[nc:, :nc] = a[:nc, nc:].T
        a[nc:, nc:] = b.T @ (syy[:, None] * b)
        trace = float(np.trace(a))
        # no edges at all (a blank golden): nothing to re-align on, the field stays 0
        self._solve = (np.linalg.inv(a + reg * trace / (2 * nc) * np.eye(2 * nc))
                       if trace > 1e-6 else None)
        self._nc = nc
        self._lx, self._ly = _pixel_grid(self.lh, self.lw)
        self._fx, self._fy = _pixel_grid(self.h, self.w)

    def _block_sums(self, a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (self.nbx, self.nby), interpolation=cv2.INTER_AREA).astype(
            np.float64).ravel()

    def _blocks(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = (self._basis @ c[: self._nc]).reshape(self.nby, self.nbx).astype(np.float32)
        v = (self._basis @ c[self._nc :]).reshape(self.nby, self.nbx).astype(np.float32)
        return u, v

    def field(self, frame: np.ndarray, valid: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Per-block displacements ``(u, v)`` in full-resolution px, shape ``(nby, nbx)``:
        ``frame(p + d) ≈ golden(p)``."""
        zero = np.zeros((self.nby, self.nbx), np.float32)
        if self._solve is None:
            return zero, zero.copy()
        low = cv2.resize(_to_grey(frame).astype(np.float32), (self.lw, self.lh),
                         interpolation=cv2.INTER_AREA)
        xb = cv2.GaussianBlur(low, (0, 0), self.blur)
        if valid is not None:  # pixels the alignment did not cover carry no information
            vl = cv2.resize(valid, (self.lw, self.lh), interpolation=cv2.INTER_NEAREST)
            xb = np.where(vl > 0, xb, self._gb)
        c = np.zeros(2 * self._nc)
        lim = self.max_px * self.scale
        for it in range(self.iters):
            if it == 0:
                xw = xb
            else:
                u, v = self._blocks(c)
                size = (self.lw, self.lh)
                xw = cv2.remap(xb, self._lx + cv2.resize(u, size), self._ly + cv2.resize(v, size),
                               cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            e = xw - self._gb
            rhs = np.concatenate([self._basis.T @ self._block_sums(self._gx * e),
                                  self._basis.T @ self._block_sums(self._gy * e)])
            c = np.clip(c - self._solve @ rhs, -lim, lim)
        u, v = self._blocks(c)
        return u / np.float32(self.scale), v / np.float32(self.scale)

    def warp(self, image: np.ndarray, u: np.ndarray, v: np.ndarray,
             interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """``image`` resampled through the field: ``out(p) = image(p + d(p))``."""
        size = (self.w, self.h)
        mx = self._fx + cv2.resize(u, size, interpolation=cv2.INTER_LINEAR)
        my = self._fy + cv2.resize(v, size, interpolation=cv2.INTER_LINEAR)
        return cv2.remap(image, mx, my, interpolation, borderMode=cv2.BORDER_REPLICATE)

    def realign(self, frame: np.ndarray, valid: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """``frame`` (and its valid mask) re-aligned locally to the golden."""
        u, v = self.field(frame, valid)
        if not (np.any(u) or np.any(v)):
            return frame, valid
        out = self.warp(frame, u, v)
        if valid is not None:
            valid = self.warp(valid, u, v, cv2.INTER_NEAREST)
        return out, valid
