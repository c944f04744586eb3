"""One pin seen from above (or its empty hole), and the state each defect mode gives it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from camera.synth.canvas import COPPER, METAL, SS, blend, mask_to_layer, to_canvas
from camera.synth.spec import DEFECT_MODES, LineSpec


@dataclass
class PinState:
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


def draw_pin(img: np.ndarray, spec: LineSpec, pad: int, cx: float, cy: float, st: PinState,
              rng: np.random.Generator) -> None:
    """Draw one pin (or its empty hole) into the canvas, in place."""
    r = spec.radius * SS
    aa = 0.75 * SS  # edge softness: about one output pixel
    half = math.ceil(2.2 * r)
    ccx, ccy = to_canvas(spec, pad, cx + st.jx, cy + st.jy)
    ix, iy = round(ccx), round(ccy)
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    patch = img[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    X, Y = xx - ccx, yy - ccy
    d = np.sqrt(X * X + Y * Y)

    if not st.present:
        hole = _clamp01(0.5 - (d - 0.78 * r) / aa)[..., None]
        ring = (_clamp01(0.5 - (d - 0.98 * r) / aa) - _clamp01(0.5 - (d - 0.8 * r) / aa))[..., None]
        blend(patch, ring, COPPER * 0.75)
        inner = 0.03 + 0.05 * _clamp01(1 - d / (0.78 * r))  # faint light at the bottom
        blend(patch, hole, inner[..., None] * np.ones(3, np.float32))
        return

    # Soft contact shadow toward the lower right (light from the upper left).
    sd = np.sqrt((X - 0.14 * r) ** 2 + (Y - 0.14 * r) ** 2)
    shadow = _clamp01(0.5 - (sd - 1.06 * r) / (0.25 * r))[..., None]
    patch *= 1.0 - 0.45 * shadow

    tdx, tdy = st.top_dx * SS, st.top_dy * SS
    if tdx or tdy:
        # Tilted shaft: a capsule from the base to the displaced top, darker (seen from the side).
        L2 = tdx * tdx + tdy * tdy
        t = _clamp01((X * tdx + Y * tdy) / L2)
        dist = np.sqrt((X - t * tdx) ** 2 + (Y - t * tdy) ** 2)
        shaft = _clamp01(0.5 - (dist - 0.92 * r) / aa)[..., None]
        side = (0.38 + 0.18 * t)[..., None] * METAL
        blend(patch, shaft, side)

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
                                 0.6 * SS)
        shade = shade * (1.0 + 0.35 * grain)
    col = shade[..., None] * METAL
    if not st.rough:
        hx, hy = -0.32 * rr, -0.32 * rr
        hl = np.exp(-((PX - hx) ** 2 + (PY - hy) ** 2) / (2 * (0.22 * rr) ** 2))
        col = col + (0.22 * st.gain * hl)[..., None]
    blend(patch, top, col)

    for kind, p in st.overlays:
        if kind == "scratch":
            _draw_scratch(patch, X - tdx, Y - tdy, rr, top, p)
        elif kind == "particle":
            _draw_particle(patch, ccx - x0, ccy - y0, r, p)


def _draw_scratch(patch: np.ndarray, X: np.ndarray, Y: np.ndarray, r: float, top: np.ndarray,
                  p: dict[str, Any]) -> None:
    """A dark groove across the pin top, with a faint bright burr on one side."""
    ang, off, width = p["angle"], p["offset"] * r, p["width"] * SS
    nx, ny = -math.sin(ang), math.cos(ang)
    dist = X * nx + Y * ny - off  # signed distance from the scratch line
    groove = _clamp01(0.5 - (np.abs(dist) - 0.5 * width) / (0.6 * SS))[..., None] * top
    burr = _clamp01(0.5 - (np.abs(dist - 0.9 * width) - 0.35 * width) / (0.6 * SS))[..., None]
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
    layer = mask_to_layer(m)
    color = np.array([0.09, 0.10, 0.12], np.float32) if p["dark"] else np.array(
        [0.80, 0.82, 0.80], np.float32)
    blend(patch, layer, color)


def apply_defect(st: PinState, mode: str, spec: LineSpec, rng: np.random.Generator) -> None:
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
