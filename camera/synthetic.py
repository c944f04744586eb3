"""Synthetic pin line: top views of a 9 × 3 pin array with known defects.

The demo, the tests and the benchmarks need parts whose truth is known.  This module renders
them the way the source documents show them: cylinders (pins) seen from above, i.e. bright metal
discs with a chamfered rim and a specular highlight, standing in a dark connector housing on a
textured board, with fiducials, mounting holes, traces and silkscreen around it so that alignment
has texture to hold on to.

Rendering is done once in *golden coordinates*: the scene is drawn on a 2× supersampled canvas
with a padding border, low-pass filtered (anti-aliasing plus a little lens blur) and resampled to
the frame through the part's pose.  The golden image is the same path with the identity pose and
no photometric drift or noise, so a good part with all nuisances switched off renders to exactly
the golden.

Nuisances of a good part: pose jitter (shift ±``jitter_px``, rotation ±``jitter_deg`` about the
frame centre), lighting drift (gain, offset and a mild illumination gradient), a little
pin-to-pin variation (sub-pixel position, brightness) and Gaussian sensor noise.

Defect modes (``DEFECT_MODES``), each drawn at one address ``X:<column>, Y:<row>``:

- ``missing``  — no pin: the empty plated hole is seen instead of a bright disc.
- ``bent``     — the pin top is shifted by ~0.5 radius and elongated; the tilted shaft shows.
- ``short``    — broken pin: a smaller, darker, rough fracture surface sits lower in its well.
- ``particle`` — an irregular foreign particle on the rim of the pin or next to it.
- ``scratch``  — a dark line across the pin top.

Everything is deterministic: the board is drawn from ``LineSpec.board_seed``, each part from the
``numpy.random.Generator`` given to :func:`render_part`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.base.addresses import make_address
from pipeline.base.addresses import parse_address as split_address
from pipeline.base.frames import Frame

__all__ = [
    "DEFECT_MODES",
    "LineSpec",
    "SyntheticCamera",
    "SyntheticPart",
    "grid_config",
    "make_part",
    "parse_address",
    "pin_centers",
    "render_golden",
    "render_part",
    "sample_defects",
    "write_line",
]

DEFECT_MODES: tuple[str, ...] = ("missing", "bent", "short", "particle", "scratch")

_SS = 2  # supersampling factor of the drawing canvas
_REF_W, _REF_H = 640, 480  # all feature sizes are given for this frame size and scaled

# Materials, BGR in [0, 1].
_BOARD = np.array([0.20, 0.33, 0.17], np.float32)  # solder-mask green
_HOUSING = np.array([0.17, 0.17, 0.18], np.float32)  # black-ish PBT plastic
_METAL = np.array([0.74, 0.78, 0.82], np.float32)  # tin-plated pin
_COPPER = np.array([0.30, 0.55, 0.80], np.float32)
_SILK = np.array([0.86, 0.88, 0.88], np.float32)



@dataclass(frozen=True)
class LineSpec:
    """Geometry, nuisances and format of the synthetic line.

    Sizes left at ``None`` scale with the frame: at 640×480 the pitch is 60 px and the pin radius
    16 px; at 1280×1024 they are 120 px and 32 px.  ``severity`` scales every defect (1.0 = clearly
    visible to a person at the default size; < 1 makes harder cases).
    """

    size: tuple[int, int] = (640, 480)  # (width, height)
    columns: tuple[str, ...] = tuple(str(i) for i in range(1, 10))
    rows: tuple[str, ...] = ("U", "C", "D")
    pitch: tuple[int, int] | None = None  # (x, y) pin pitch in px
    pin_radius: float | None = None  # px
    color: bool = True  # BGR (H, W, 3) when True, grey (H, W) when False
    jitter_px: float = 10.0  # max shift in x and in y
    jitter_deg: float = 2.0  # max rotation about the frame centre
    gain_drift: float = 0.08  # gain in [1 - g, 1 + g]
    offset_drift: float = 8.0  # offset in [-o, o] grey levels
    gradient_drift: float = 0.04  # illumination slope across the frame, ± fraction
    noise_sigma: float = 2.0  # Gaussian sensor noise, grey levels
    pin_shift_sigma: float = 0.25  # per-pin position scatter of good parts, px
    pin_gain_sigma: float = 0.02  # per-pin brightness scatter of good parts
    severity: float = 1.0
    board_seed: int = 7  # the board's texture: the same for every part of the line

    def __post_init__(self) -> None:
        # lists from YAML/JSON would make the spec unhashable (it keys the board cache)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(str(r) for r in self.rows))
        if self.pitch is not None:
            object.__setattr__(self, "pitch", (int(self.pitch[0]), int(self.pitch[1])))
        w, h = self.size
        if w < 160 or h < 120:
            raise ValueError(f"LineSpec.size {self.size} too small (min 160×120)")
        if not self.columns or not self.rows:
            raise ValueError("LineSpec needs at least one column and one row")
        px, py = self.cell_pitch
        if px * len(self.columns) > w or py * len(self.rows) > h:
            raise ValueError(f"pin array {len(self.columns)}×{len(self.rows)} at pitch "
                             f"{(px, py)} does not fit in {self.size}")
        if self.radius >= 0.45 * min(px, py):
            raise ValueError(f"pin radius {self.radius} too large for pitch {(px, py)}")

    @property
    def scale(self) -> float:
        """Size factor against the 640×480 reference."""
        return min(self.size[0] / _REF_W, self.size[1] / _REF_H)

    @property
    def cell_pitch(self) -> tuple[int, int]:
        """Pin pitch (x, y) in px."""
        if self.pitch is not None:
            return int(self.pitch[0]), int(self.pitch[1])
        p = round(60 * self.scale)
        return p, p

    @property
    def radius(self) -> float:
        """Pin radius in px."""
        if self.pin_radius is not None:
            return float(self.pin_radius)
        return 16.0 * self.scale

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """The pin array's rectangle ``(x, y, w, h)`` in golden coordinates; one pin per cell."""
        px, py = self.cell_pitch
        w, h = len(self.columns) * px, len(self.rows) * py
        return (self.size[0] - w) // 2, (self.size[1] - h) // 2, w, h

    @property
    def addresses(self) -> list[str]:
        """All cell addresses, row by row."""
        return [make_address(c, r) for r in self.rows for c in self.columns]


@dataclass
class SyntheticPart:
    """One rendered part with its ground truth.

    ``warp`` is the 2×3 affine matrix mapping golden coordinates to frame coordinates (rotation
    by ``angle_deg`` about the frame centre, then the shift ``(dx, dy)``).  ``defects`` holds
    ``(address, mode)`` pairs.
    """

    image: np.ndarray
    dx: float
    dy: float
    angle_deg: float
    gain: float
    offset: float
    warp: np.ndarray
    defects: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``"defect"`` when the part has a defect, else ``"pass"``."""
        return "defect" if self.defects else "pass"

    @property
    def addresses(self) -> list[str]:
        """The defect addresses, in the order given (no duplicates)."""
        return list(dict.fromkeys(a for a, _ in self.defects))


# ---------------------------------------------------------------------------------------------
# geometry


def parse_address(spec: LineSpec, address: str) -> tuple[str, str]:
    """Split ``"X:3, Y:C"`` into ``("3", "C")``; ValueError when it is not a cell of ``spec``."""
    col, row = split_address(address)
    if col not in spec.columns or row not in spec.rows:
        raise ValueError(f"address {address!r} is not a cell of the line "
                         f"(columns {list(spec.columns)}, rows {list(spec.rows)})")
    return col, row


def pin_centers(spec: LineSpec) -> dict[str, tuple[float, float]]:
    """Pin centre ``(x, y)`` in golden coordinates for every address."""
    x0, y0, _, _ = spec.roi
    px, py = spec.cell_pitch
    out = {}
    for j, row in enumerate(spec.rows):
        for i, col in enumerate(spec.columns):
            out[make_address(col, row)] = (x0 + (i + 0.5) * px, y0 + (j + 0.5) * py)
    return out


def grid_config(spec: LineSpec) -> dict[str, Any]:
    """The address grid in golden coordinates: ``{"roi": [x, y, w, h], "columns", "rows"}``.

    Equal cells, one pin centred in each (the config ``pipeline.grid.AddressGrid`` reads).
    """
    return {"roi": list(spec.roi), "columns": list(spec.columns), "rows": list(spec.rows)}


def _pad(spec: LineSpec) -> int:
    """Border drawn around the frame so a shifted/rotated part never shows an empty edge.

    It depends on the frame size only, so the board (and the golden) do not change with the
    jitter settings; jitter beyond what it covers (±10 % of the frame) is filled by reflection.
    """
    return math.ceil(0.1 * max(spec.size)) + 8


def _to_canvas(spec: LineSpec, pad: int, x: float, y: float) -> tuple[float, float]:
    # canvas pixel i covers golden [(i)/SS - pad - 0.5, (i+1)/SS - pad - 0.5): pixel centres align
    return _SS * (x + pad + 0.5) - 0.5, _SS * (y + pad + 0.5) - 0.5


# ---------------------------------------------------------------------------------------------
# board (cached per spec: it is the same for every part)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise: a coarse random field resized up with cubic interpolation, in ~[-1, 1]."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return big / (big.std() + 1e-6)


def _mask_to_layer(mask: np.ndarray) -> np.ndarray:
    return (mask.astype(np.float32) / 255.0)[..., None]


def _blend(img: np.ndarray, mask: np.ndarray, color: np.ndarray | float) -> None:
    """In place: ``img = img·(1−m) + color·m`` with m a float (H, W, 1) layer."""
    img *= 1.0 - mask
    img += mask * color


def _paint(img: np.ndarray, mask: np.ndarray, color: np.ndarray | float,
           alpha: float = 1.0) -> None:
    """:func:`_blend` with a uint8 mask, only over the mask's bounding box (the canvas is big)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    sub = (slice(y, y + h), slice(x, x + w))
    if isinstance(color, np.ndarray) and color.ndim == 3:
        color = color[sub]
    _blend(img[sub], alpha * _mask_to_layer(mask[sub]), color)


def _board(spec: LineSpec) -> np.ndarray:
    """The part without pins: board, housing, wells, fiducials; float32 BGR on the canvas.

    Read-only and shared: it is cached on the fields that shape it, not on the nuisances.
    """
    return _board_cached(LineSpec(size=spec.size, columns=spec.columns, rows=spec.rows,
                                  pitch=spec.pitch, pin_radius=spec.pin_radius,
                                  board_seed=spec.board_seed))


@lru_cache(maxsize=4)
def _board_cached(spec: LineSpec) -> np.ndarray:
    rng = np.random.default_rng(spec.board_seed)
    pad = _pad(spec)
    w, h = spec.size
    cw, ch = _SS * (w + 2 * pad), _SS * (h + 2 * pad)
    s = spec.scale * _SS  # canvas px per reference px

    def c(x: float, y: float) -> tuple[int, int]:
        cx, cy = _to_canvas(spec, pad, x, y)
        return round(cx), round(cy)

    # Solder mask: low-frequency mottling plus fine glass-fibre weave.
    tex = 1.0 + 0.06 * _smooth_noise(rng, ch, cw, 40 * s) + 0.03 * _smooth_noise(rng, ch, cw, 3 * s)
    xx = np.arange(cw, dtype=np.float32)[None, :]
    yy = np.arange(ch, dtype=np.float32)[:, None]
    weave = 0.025 * np.sin(xx * (2 * np.pi / (7 * s))) * np.sin(yy * (2 * np.pi / (7 * s)))
    img = _BOARD[None, None, :] * (tex + weave)[..., None]
    img = img.astype(np.float32)

    # Copper traces under the mask: slightly brighter lines from the board edges.
    layer = np.zeros((ch, cw), np.uint8)
    x0, y0, rw, rh = spec.roi
    px, py = spec.cell_pitch
    for i in range(len(spec.columns)):
        xa = x0 + (i + 0.5) * px
        top, bot = c(xa, y0 - 0.9 * py), c(xa + 0.3 * px, -pad)
        cv2.line(layer, top, bot, 255, max(1, int(4 * s)), cv2.LINE_AA)
        top, bot = c(xa, y0 + rh + 0.9 * py), c(xa - 0.25 * px, h + pad)
        cv2.line(layer, top, bot, 255, max(1, int(4 * s)), cv2.LINE_AA)
    _paint(img, layer, _BOARD * 1.6, 0.35)

    # Fiducials: copper rings with a centre dot, a cross, a square pad.
    layer[:] = 0
    for fx, fy in ((0.06 * w, 0.10 * h), (0.94 * w, 0.90 * h)):
        cv2.circle(layer, c(fx, fy), int(11 * s), 255, max(1, int(3 * s)), cv2.LINE_AA)
        cv2.circle(layer, c(fx, fy), int(4 * s), 255, -1, cv2.LINE_AA)
    fx, fy = c(0.94 * w, 0.10 * h)
    arm = int(10 * s)
    cv2.line(layer, (fx - arm, fy), (fx + arm, fy), 255, max(1, int(3 * s)), cv2.LINE_AA)
    cv2.line(layer, (fx, fy - arm), (fx, fy + arm), 255, max(1, int(3 * s)), cv2.LINE_AA)
    fx, fy = c(0.06 * w, 0.90 * h)
    cv2.rectangle(layer, (fx - arm, fy - arm), (fx + arm, fy + arm), 255, -1, cv2.LINE_AA)
    _paint(img, layer, _COPPER)

    # Mounting holes: dark drill with a plated annulus.
    for fx, fy in ((0.25 * w, 0.13 * h), (0.75 * w, 0.87 * h)):
        layer[:] = 0
        cv2.circle(layer, c(fx, fy), int(13 * s), 255, -1, cv2.LINE_AA)
        _paint(img, layer, _COPPER * 0.9)
        layer[:] = 0
        cv2.circle(layer, c(fx, fy), int(8 * s), 255, -1, cv2.LINE_AA)
        _paint(img, layer, 0.04)

    # Silkscreen: reference designator, part number, pin-1 marker, outline of the housing.
    layer[:] = 0
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(layer, "J7", c(0.36 * w, 0.14 * h), font, 0.9 * s, 255, max(1, int(2 * s)),
                cv2.LINE_AA)
    cv2.putText(layer, "HDR-27P  REV C", c(0.50 * w, 0.14 * h), font, 0.45 * s, 255,
                max(1, int(1.2 * s)), cv2.LINE_AA)
    cv2.putText(layer, "LOT 24-09 Q", c(0.12 * w, 0.86 * h), font, 0.45 * s, 255,
                max(1, int(1.2 * s)), cv2.LINE_AA)
    tri = np.array([c(x0 - 0.15 * px, y0 - 0.55 * py), c(x0 + 0.2 * px, y0 - 0.55 * py),
                    c(x0 + 0.025 * px, y0 - 0.3 * py)], np.int32)
    cv2.fillPoly(layer, [tri], 255, cv2.LINE_AA)
    m = 0.45 * px
    cv2.rectangle(layer, c(x0 - m, y0 - 0.7 * py), c(x0 + rw + m, y0 + rh + 0.7 * py), 255,
                  max(1, int(2 * s)), cv2.LINE_AA)
    _paint(img, layer, _SILK, 0.9)

    # Housing: dark plastic block with a lighter bevelled edge and polarisation notches.
    hm = 0.3 * min(px, py)
    hx0, hy0 = c(x0 - hm, y0 - hm)
    hx1, hy1 = c(x0 + rw + hm, y0 + rh + hm)
    layer[:] = 0
    cv2.rectangle(layer, (hx0, hy0), (hx1, hy1), 255, -1, cv2.LINE_AA)
    for k in (0.2, 0.5, 0.8):  # notches on the top edge only: asymmetric on purpose
        nx = int(hx0 + k * (hx1 - hx0))
        cv2.rectangle(layer, (nx - int(6 * s), hy0), (nx + int(6 * s), hy0 + int(6 * s)), 0, -1)
    hl = _mask_to_layer(layer)
    edge = np.clip(cv2.GaussianBlur(hl, (0, 0), 2.5 * s) - 0.5, 0, 1)[..., None]  # inside edge
    plastic = _HOUSING * (1.0 + 0.05 * _smooth_noise(rng, ch, cw, 5 * s))[..., None]
    _blend(img, hl, plastic)
    img += 0.12 * (hl - edge * 2).clip(0, 1)  # bright bevel along the inner rim

    # Wells: each pin stands in a round, darker recess of the housing.
    r = spec.radius
    layer[:] = 0
    for cx, cy in pin_centers(spec).values():
        cv2.circle(layer, c(cx, cy), round(1.32 * r * _SS), 255, -1, cv2.LINE_AA)
    img *= 1.0 - 0.5 * _mask_to_layer(layer)
    img.setflags(write=False)
    return img


# ---------------------------------------------------------------------------------------------
# pins


@dataclass
class _PinState:
    present: bool = True
    gain: float = 1.0
    jx: float = 0.0  # sub-pixel scatter of a good pin, golden px
    jy: float = 0.0
    top_dx: float = 0.0  # bent: top displacement, golden px
    top_dy: float = 0.0
    stretch: float = 1.0  # bent: elongation along the displacement
    radius_k: float = 1.0  # short: smaller top
    dull: float = 1.0  # short: darker top
    rough: bool = False  # short: fracture texture, no highlight
    overlays: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _clamp01(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0.0, 1.0)


def _draw_pin(img: np.ndarray, spec: LineSpec, pad: int, cx: float, cy: float, st: _PinState,
              rng: np.random.Generator) -> None:
    """Draw one pin (or its empty hole) into the canvas, in place."""
    r = spec.radius * _SS
    aa = 0.75 * _SS  # edge softness: about one output pixel
    half = math.ceil(2.2 * r)
    ccx, ccy = _to_canvas(spec, pad, cx + st.jx, cy + st.jy)
    ix, iy = round(ccx), round(ccy)
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    patch = img[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    X, Y = xx - ccx, yy - ccy
    d = np.sqrt(X * X + Y * Y)

    if not st.present:
        hole = _clamp01(0.5 - (d - 0.78 * r) / aa)[..., None]
        ring = (_clamp01(0.5 - (d - 0.98 * r) / aa) - _clamp01(0.5 - (d - 0.8 * r) / aa))[..., None]
        _blend(patch, ring, _COPPER * 0.75)
        inner = 0.03 + 0.05 * _clamp01(1 - d / (0.78 * r))  # faint light at the bottom
        _blend(patch, hole, inner[..., None] * np.ones(3, np.float32))
        return

    # Soft contact shadow toward the lower right (light from the upper left).
    sd = np.sqrt((X - 0.14 * r) ** 2 + (Y - 0.14 * r) ** 2)
    shadow = _clamp01(0.5 - (sd - 1.06 * r) / (0.25 * r))[..., None]
    patch *= 1.0 - 0.45 * shadow

    tdx, tdy = st.top_dx * _SS, st.top_dy * _SS
    if tdx or tdy:
        # Tilted shaft: a capsule from the base to the displaced top, darker (seen from the side).
        L2 = tdx * tdx + tdy * tdy
        t = _clamp01((X * tdx + Y * tdy) / L2)
        dist = np.sqrt((X - t * tdx) ** 2 + (Y - t * tdy) ** 2)
        shaft = _clamp01(0.5 - (dist - 0.92 * r) / aa)[..., None]
        side = (0.38 + 0.18 * t)[..., None] * _METAL
        _blend(patch, shaft, side)

    # Top: an ellipse (a disc unless bent), rim chamfer, dome shading, highlight.
    rr = r * st.radius_k
    L = math.hypot(tdx, tdy)
    ux, uy = (tdx / L, tdy / L) if L > 0 else (1.0, 0.0)
    PX, PY = X - tdx, Y - tdy
    a_ = rr * st.stretch
    u = (PX * ux + PY * uy) / a_
    v = (-PX * uy + PY * ux) / rr
    rho = np.sqrt(u * u + v * v)
    top = _clamp01(0.5 - (rho - 1.0) * rr / aa)[..., None]
    dome = np.sqrt(_clamp01(1.0 - rho * rho))
    rim = 1.0 - 0.4 * _clamp01((rho - 0.76) / 0.24)
    shade = (0.7 + 0.3 * dome) * rim * st.gain * st.dull
    if st.rough:
        grain = cv2.GaussianBlur(rng.standard_normal(shade.shape).astype(np.float32), (0, 0),
                                 0.6 * _SS)
        shade = shade * (1.0 + 0.35 * grain)
    col = shade[..., None] * _METAL
    if not st.rough:
        hx, hy = -0.32 * rr, -0.32 * rr
        hl = np.exp(-((PX - hx) ** 2 + (PY - hy) ** 2) / (2 * (0.22 * rr) ** 2))
        col = col + (0.22 * st.gain * hl)[..., None]
    _blend(patch, top, col)

    for kind, p in st.overlays:
        if kind == "scratch":
            _draw_scratch(patch, X - tdx, Y - tdy, rr, top, p)
        elif kind == "particle":
            _draw_particle(patch, ccx - x0, ccy - y0, r, p)


def _draw_scratch(patch: np.ndarray, X: np.ndarray, Y: np.ndarray, r: float, top: np.ndarray,
                  p: dict[str, Any]) -> None:
    """A dark groove across the pin top, with a faint bright burr on one side."""
    ang, off, width = p["angle"], p["offset"] * r, p["width"] * _SS
    nx, ny = -math.sin(ang), math.cos(ang)
    dist = X * nx + Y * ny - off  # signed distance from the scratch line
    groove = _clamp01(0.5 - (np.abs(dist) - 0.5 * width) / (0.6 * _SS))[..., None] * top
    burr = _clamp01(0.5 - (np.abs(dist - 0.9 * width) - 0.35 * width) / (0.6 * _SS))[..., None]
    patch += 0.12 * burr * top
    patch *= 1.0 - 0.65 * groove


def _draw_particle(patch: np.ndarray, pcx: float, pcy: float, r: float,
                   p: dict[str, Any]) -> None:
    """An irregular blob: dark grime on the metal, a bright chip on the dark housing."""
    ang, dist, size = p["angle"], p["dist"] * r, p["size"] * r
    bx, by = pcx + dist * math.cos(ang), pcy + dist * math.sin(ang)
    n = len(p["radii"])
    pts = []
    for k, rk in enumerate(p["radii"]):
        t = 2 * math.pi * k / n + p["twist"]
        pts.append((bx + size * rk * math.cos(t), by + size * rk * math.sin(t)))
    shift = 4  # fixed-point bits for sub-pixel polygon vertices
    poly = np.round(np.array(pts) * (1 << shift)).astype(np.int32)
    m = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(m, [poly], 255, cv2.LINE_AA, shift)
    layer = _mask_to_layer(m)
    color = np.array([0.09, 0.10, 0.12], np.float32) if p["dark"] else np.array(
        [0.80, 0.82, 0.80], np.float32)
    _blend(patch, layer, color)


def _defect_state(st: _PinState, mode: str, spec: LineSpec, rng: np.random.Generator) -> None:
    sev = spec.severity
    if mode == "missing":
        st.present = False
    elif mode == "bent":
        ang = rng.uniform(0, 2 * math.pi)
        shift = spec.radius * rng.uniform(0.4, 0.55) * sev
        st.top_dx, st.top_dy = shift * math.cos(ang), shift * math.sin(ang)
        st.stretch = 1.0 + 0.15 * sev
    elif mode == "short":
        st.radius_k = 1.0 - 0.32 * sev
        st.dull = 1.0 - 0.42 * sev
        st.rough = True
    elif mode == "scratch":
        st.overlays.append(("scratch", {
            "angle": rng.uniform(0, math.pi),
            "offset": rng.uniform(-0.3, 0.3),
            "width": max(1.2, 2.0 * spec.scale * sev),
        }))
    elif mode == "particle":
        on_pin = rng.random() < 0.5
        st.overlays.append(("particle", {
            "angle": rng.uniform(0, 2 * math.pi),
            "dist": rng.uniform(0.35, 0.7) if on_pin else rng.uniform(1.15, 1.3),
            "size": rng.uniform(0.36, 0.5) * sev,
            "radii": rng.uniform(0.55, 1.0, int(rng.integers(7, 12))).tolist(),
            "twist": rng.uniform(0, 2 * math.pi),
            "dark": on_pin,
        }))
    else:
        raise ValueError(f"unknown defect mode {mode!r} (known: {', '.join(DEFECT_MODES)})")


# ---------------------------------------------------------------------------------------------
# rendering


def _render_canvas(spec: LineSpec, states: dict[str, _PinState],
                   rng: np.random.Generator) -> np.ndarray:
    pad = _pad(spec)
    img = _board(spec).copy()
    for addr, (cx, cy) in pin_centers(spec).items():
        _draw_pin(img, spec, pad, cx, cy, states[addr], rng)
    # Anti-aliasing for the 2× → 1× resampling plus a touch of lens blur.
    return cv2.GaussianBlur(img, (0, 0), 0.5 * _SS)


def _resample(spec: LineSpec, canvas: np.ndarray, warp: np.ndarray | None) -> np.ndarray:
    """Sample the canvas at the frame's pixels; ``warp`` maps golden → frame (None: identity)."""
    pad = _pad(spec)
    w, h = spec.size
    if warp is None:
        inv = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    else:
        inv = cv2.invertAffineTransform(warp)  # frame → golden
    # golden → canvas: c = SS·(g + pad + 0.5) − 0.5
    to_canvas = np.array([[_SS, 0, _SS * (pad + 0.5) - 0.5], [0, _SS, _SS * (pad + 0.5) - 0.5]])
    m = np.hstack([to_canvas[:, :2] @ inv[:, :2], to_canvas[:, :2] @ inv[:, 2:] + to_canvas[:, 2:]])
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _finish(spec: LineSpec, img: np.ndarray) -> np.ndarray:
    """Float [0, 1] BGR → uint8 in the spec's format (grey or BGR)."""
    img = img * 255.0
    if not spec.color:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_golden(spec: LineSpec | None = None) -> np.ndarray:
    """The perfect part: no jitter, no drift, no noise, no pin scatter.  uint8 grey or BGR."""
    spec = spec or LineSpec()
    states = {a: _PinState() for a in spec.addresses}
    canvas = _render_canvas(spec, states, np.random.default_rng(0))
    return _finish(spec, _resample(spec, canvas, None))


def _pose_warp(spec: LineSpec, dx: float, dy: float, angle_deg: float) -> np.ndarray:
    w, h = spec.size
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, 1.0)
    m[:, 2] += (dx, dy)
    return m


def make_part(spec: LineSpec, rng: np.random.Generator,
              defects: Iterable[tuple[str, str]] = ()) -> SyntheticPart:
    """Render one part with its pose, drift and noise drawn from ``rng``; full ground truth.

    ``defects`` are ``(address, mode)`` pairs; the same address may carry several modes (e.g.
    ``bent`` and ``scratch``), except ``missing`` which leaves nothing to scratch.
    """
    defects = [(a, m) for a, m in defects]
    states = {}
    for addr in spec.addresses:
        st = _PinState()
        if spec.pin_shift_sigma > 0:
            st.jx, st.jy = (float(v) for v in rng.normal(0, spec.pin_shift_sigma, 2))
        if spec.pin_gain_sigma > 0:
            st.gain = float(1.0 + rng.normal(0, spec.pin_gain_sigma))
        states[addr] = st
    norm_defects = []
    for addr, mode in defects:
        col, row = parse_address(spec, addr)
        addr = make_address(col, row)
        _defect_state(states[addr], mode, spec, rng)
        norm_defects.append((addr, mode))

    canvas = _render_canvas(spec, states, rng)
    dx = float(rng.uniform(-spec.jitter_px, spec.jitter_px)) if spec.jitter_px > 0 else 0.0
    dy = float(rng.uniform(-spec.jitter_px, spec.jitter_px)) if spec.jitter_px > 0 else 0.0
    ang = float(rng.uniform(-spec.jitter_deg, spec.jitter_deg)) if spec.jitter_deg > 0 else 0.0
    warp = _pose_warp(spec, dx, dy, ang)
    identity = dx == 0.0 and dy == 0.0 and ang == 0.0
    img = _resample(spec, canvas, None if identity else warp)

    gain = float(rng.uniform(1 - spec.gain_drift, 1 + spec.gain_drift)) if spec.gain_drift else 1.0
    offset = float(rng.uniform(-spec.offset_drift, spec.offset_drift)) if spec.offset_drift else 0.0
    if gain != 1.0 or offset != 0.0 or spec.gradient_drift:
        w, h = spec.size
        field_ = np.float32(gain)
        if spec.gradient_drift:
            gx, gy = rng.uniform(-spec.gradient_drift, spec.gradient_drift, 2)
            xs = (np.arange(w, dtype=np.float32) / (w - 1) - 0.5) * np.float32(gx)
            ys = (np.arange(h, dtype=np.float32) / (h - 1) - 0.5) * np.float32(gy)
            field_ = np.float32(gain) * (1.0 + ys[:, None] + xs[None, :])
        img = img * (field_[..., None] if np.ndim(field_) else field_) + np.float32(offset / 255)
    out = img * 255.0
    if not spec.color:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    if spec.noise_sigma > 0:
        out = out + rng.normal(0, spec.noise_sigma, out.shape).astype(np.float32)
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return SyntheticPart(image=image, dx=dx, dy=dy, angle_deg=ang, gain=gain, offset=offset,
                         warp=warp, defects=norm_defects)


def render_part(spec: LineSpec, rng: np.random.Generator,
                defects: Iterable[tuple[str, str]] = ()) -> np.ndarray:
    """Render one part (uint8 grey or BGR); see :func:`make_part` for the ground truth."""
    return make_part(spec, rng, defects).image


def sample_defects(spec: LineSpec, rng: np.random.Generator, n: int = 1,
                   modes: Sequence[str] = DEFECT_MODES) -> list[tuple[str, str]]:
    """``n`` defects at ``n`` distinct random addresses with random modes."""
    addrs = spec.addresses
    idx = rng.choice(len(addrs), size=min(n, len(addrs)), replace=False)
    return [(addrs[int(i)], str(modes[int(rng.integers(len(modes)))])) for i in idx]


# ---------------------------------------------------------------------------------------------
# writing a labelled line


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def write_line(out_dir: str | Path, n_good: int, n_defect: int, seed: int = 0,
               spec: LineSpec | None = None, *, n_train: int = 8,
               modes: Sequence[str] = DEFECT_MODES) -> Path:
    """Write a labelled synthetic line to ``out_dir``; return the path of ``manifest.csv``.

    Layout::

        golden.png         the perfect part (render_golden)
        grid.json          grid_config(spec)
        frames/part_NNNN.png + manifest.csv   the line: n_good + n_defect parts, shuffled
        train/good_NNNN.png  + train.csv      n_train extra good parts (for building the recipe)
        line.json          spec, seed and per-frame truth (modes, pose, drift)

    Both CSVs have the header ``frame,label,defects,golden`` (paths relative to the CSV,
    ``defects`` = addresses separated by ``;``).  Defect parts cycle through ``modes`` so each
    mode is equally represented; about one in five carries a second defect elsewhere.
    """
    spec = spec or LineSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _write_png(out / "golden.png", render_golden(spec))
    (out / "grid.json").write_text(json.dumps(grid_config(spec), indent=2) + "\n")

    plan: list[list[tuple[str, str]]] = [[] for _ in range(n_good)]
    for k in range(n_defect):
        first = sample_defects(spec, rng, 1, [modes[k % len(modes)]])
        if rng.random() < 0.2:
            extra = sample_defects(spec, rng, 2, modes)
            first += [d for d in extra if d[0] != first[0][0]][:1]
        plan.append(first)
    order = rng.permutation(len(plan))
    truth: list[dict[str, Any]] = []

    def emit(csv_name: str, sub: str, stem: str, plans: list[list[tuple[str, str]]]) -> None:
        with open(out / csv_name, "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(["frame", "label", "defects", "golden"])
            for i, defects in enumerate(plans):
                part = make_part(spec, rng, defects)
                rel = f"{sub}/{stem}_{i:04d}.png"
                _write_png(out / rel, part.image)
                wr.writerow([rel, part.label, ";".join(part.addresses), "golden.png"])
                truth.append({"frame": rel, "label": part.label,
                              "defects": [{"address": a, "mode": m} for a, m in part.defects],
                              "dx": round(part.dx, 3), "dy": round(part.dy, 3),
                              "angle_deg": round(part.angle_deg, 4),
                              "gain": round(part.gain, 4), "offset": round(part.offset, 3)})

    emit("train.csv", "train", "good", [[] for _ in range(n_train)])
    emit("manifest.csv", "frames", "part", [plan[int(i)] for i in order])
    meta = {"seed": seed, "spec": asdict(spec), "grid": grid_config(spec), "frames": truth}
    (out / "line.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out / "manifest.csv"


# ---------------------------------------------------------------------------------------------
# live source


class SyntheticCamera:
    """A live source (camera.live's LiveSource protocol) that renders a fresh part per read.

    Each ``read_latest`` returns a new part: good with probability ``p_good``, otherwise one
    (sometimes two) random defects.  ``meta`` carries the truth: ``label``, ``defects``
    (addresses), ``modes`` (``[{address, mode}]``) and ``part_id``.  ``fps`` (optional) caps the
    rate like a real camera would; ``read_latest`` never waits longer than its timeout.
    :meth:`set_available` simulates a camera outage for tests of the daemon's health handling.
    """

    def __init__(self, spec: LineSpec | None = None, *, seed: int = 0, p_good: float = 0.8,
                 fps: float | None = None, source_id: str = "synthetic",
                 modes: Sequence[str] = DEFECT_MODES,
                 on_health: Callable[[bool, str], None] | None = None) -> None:
        if not 0.0 <= p_good <= 1.0:
            raise ValueError(f"p_good must be in [0, 1], got {p_good}")
        self.spec = spec or LineSpec()
        self.source_id = source_id
        self.p_good = p_good
        self.fps = fps
        self.modes = tuple(modes)
        self._on_health = on_health
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._seq = 0  # seq of the last returned frame; the first frame is 1, as in LiveCamera
        self._last_ts = 0.0
        self._started = False
        self._closed = False
        self._available = True
        self._down_reason = ""
        self._golden: np.ndarray | None = None

    def start(self) -> None:
        """Mark the camera started (rendering happens on demand); never raises."""
        with self._lock:
            self._started = True
            self._closed = False
        self._notify(True, "synthetic camera started")

    @property
    def healthy(self) -> bool:
        """True while started, not closed and not in a simulated outage."""
        return self._started and not self._closed and self._available

    @property
    def golden(self) -> np.ndarray:
        """The golden image of this line (rendered once)."""
        if self._golden is None:
            self._golden = render_golden(self.spec)
        return self._golden

    def set_available(self, up: bool, reason: str = "simulated outage") -> None:
        """Simulate the camera going down (``up=False``) or coming back; fires ``on_health``."""
        changed = up != self._available
        self._available = up
        self._down_reason = "" if up else reason
        if changed:
            self._notify(up, "synthetic camera back" if up else reason)

    def read_latest(self, timeout: float) -> Frame:
        """A freshly rendered part (seq 1, 2, …), or ``Frame(image=None, error="camera_down: …")``
        carrying the seq of the last returned frame (as camera.live.LiveCamera does)."""
        if not self._started or self._closed:
            return Frame(image=None, seq=self._seq, source_id=self.source_id,
                         error="camera_down: synthetic camera not started")
        if not self._available:
            time.sleep(max(0.0, min(timeout, 0.05)))
            return Frame(image=None, seq=self._seq, source_id=self.source_id,
                         error=f"camera_down: {self._down_reason}")
        with self._lock:
            if self.fps:
                wait = self._last_ts + 1.0 / self.fps - time.time()
                if wait > 0:
                    time.sleep(min(wait, max(timeout, 0.0)))
            if self._rng.random() < self.p_good:
                defects: list[tuple[str, str]] = []
            else:
                defects = sample_defects(self.spec, self._rng,
                                         2 if self._rng.random() < 0.15 else 1, self.modes)
            part = make_part(self.spec, self._rng, defects)
            self._seq += 1
            seq = self._seq
            self._last_ts = time.time()
        meta = {"label": part.label, "defects": part.addresses,
                "modes": [{"address": a, "mode": m} for a, m in part.defects],
                "part_id": f"syn-{seq:06d}"}
        return Frame(image=part.image, seq=seq, ts=self._last_ts, source_id=self.source_id,
                     meta=meta)

    def close(self) -> None:
        """Stop; later reads return ``camera_down`` frames."""
        with self._lock:
            was = self._started and not self._closed
            self._closed = True
        if was:
            self._notify(False, "synthetic camera closed")

    def _notify(self, up: bool, reason: str) -> None:
        if self._on_health is not None:
            with contextlib.suppress(Exception):  # a faulty callback must not kill the camera
                self._on_health(up, reason)
