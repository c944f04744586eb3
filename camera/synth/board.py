"""The part without pins (board, housing, wells, fiducials, silkscreen), cached per line."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from camera.synth.canvas import (
    BOARD,
    COPPER,
    HOUSING,
    SILK,
    SS,
    blend,
    canvas_pad,
    mask_to_layer,
    paint,
    smooth_noise,
    to_canvas,
)
from camera.synth.spec import LineSpec, pin_centers


def board_canvas(spec: LineSpec) -> np.ndarray:
    """The part without pins: board, housing, wells, fiducials; float32 BGR on the canvas.

    Read-only and shared: it is cached on the fields that shape it, not on the nuisances.
    """
    return _board_cached(LineSpec(size=spec.size, columns=spec.columns, rows=spec.rows,
                                  pitch=spec.pitch, pin_radius=spec.pin_radius,
                                  board_seed=spec.board_seed))


@lru_cache(maxsize=4)
def _board_cached(spec: LineSpec) -> np.ndarray:
    rng = np.random.default_rng(spec.board_seed)
    pad = canvas_pad(spec)
    w, h = spec.size
    cw, ch = SS * (w + 2 * pad), SS * (h + 2 * pad)
    s = spec.scale * SS  # canvas px per reference px

    def c(x: float, y: float) -> tuple[int, int]:
        cx, cy = to_canvas(spec, pad, x, y)
        return round(cx), round(cy)

    # Solder mask: low-frequency mottling plus fine glass-fibre weave.
    tex = 1.0 + 0.06 * smooth_noise(rng, ch, cw, 40 * s) + 0.03 * smooth_noise(rng, ch, cw, 3 * s)
    xx = np.arange(cw, dtype=np.float32)[None, :]
    yy = np.arange(ch, dtype=np.float32)[:, None]
    weave = 0.025 * np.sin(xx * (2 * np.pi / (7 * s))) * np.sin(yy * (2 * np.pi / (7 * s)))
    img = BOARD[None, None, :] * (tex + weave)[..., None]
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
    paint(img, layer, BOARD * 1.6, 0.35)

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
    paint(img, layer, COPPER)

    # Mounting holes: dark drill with a plated annulus.
    for fx, fy in ((0.25 * w, 0.13 * h), (0.75 * w, 0.87 * h)):
        layer[:] = 0
        cv2.circle(layer, c(fx, fy), int(13 * s), 255, -1, cv2.LINE_AA)
        paint(img, layer, COPPER * 0.9)
        layer[:] = 0
        cv2.circle(layer, c(fx, fy), int(8 * s), 255, -1, cv2.LINE_AA)
        paint(img, layer, 0.04)

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
    paint(img, layer, SILK, 0.9)

    # Housing: dark plastic block with a lighter bevelled edge and polarisation notches.
    hm = 0.3 * min(px, py)
    hx0, hy0 = c(x0 - hm, y0 - hm)
    hx1, hy1 = c(x0 + rw + hm, y0 + rh + hm)
    layer[:] = 0
    cv2.rectangle(layer, (hx0, hy0), (hx1, hy1), 255, -1, cv2.LINE_AA)
    for k in (0.2, 0.5, 0.8):  # notches on the top edge only: asymmetric on purpose
        nx = int(hx0 + k * (hx1 - hx0))
        cv2.rectangle(layer, (nx - int(6 * s), hy0), (nx + int(6 * s), hy0 + int(6 * s)), 0, -1)
    hl = mask_to_layer(layer)
    edge = np.clip(cv2.GaussianBlur(hl, (0, 0), 2.5 * s) - 0.5, 0, 1)[..., None]  # inside edge
    plastic = HOUSING * (1.0 + 0.05 * smooth_noise(rng, ch, cw, 5 * s))[..., None]
    blend(img, hl, plastic)
    img += 0.12 * (hl - edge * 2).clip(0, 1)  # bright bevel along the inner rim

    # Wells: each pin stands in a round, darker recess of the housing.
    r = spec.radius
    layer[:] = 0
    for cx, cy in pin_centers(spec).values():
        cv2.circle(layer, c(cx, cy), round(1.32 * r * SS), 255, -1, cv2.LINE_AA)
    img *= 1.0 - 0.5 * mask_to_layer(layer)
    img.setflags(write=False)
    return img
