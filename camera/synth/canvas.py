"""Drawing primitives of the synthetic line: the 2× supersampled canvas, its padding, the
materials and alpha blending."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from camera.synth.spec import LineSpec

SS = 2  # supersampling factor of the drawing canvas
REF_W, REF_H = 640, 480  # all feature sizes are given for this frame size and scaled

# Materials, BGR in [0, 1].
BOARD = np.array([0.20, 0.33, 0.17], np.float32)  # solder-mask green
HOUSING = np.array([0.17, 0.17, 0.18], np.float32)  # black-ish PBT plastic
METAL = np.array([0.74, 0.78, 0.82], np.float32)  # tin-plated pin
COPPER = np.array([0.30, 0.55, 0.80], np.float32)
SILK = np.array([0.86, 0.88, 0.88], np.float32)


def canvas_pad(spec: LineSpec) -> int:
    """Border drawn around the frame so a shifted/rotated part never shows an empty edge.

    It depends on the frame size only, so the board (and the golden) do not change with the
    jitter settings; jitter beyond what it covers (±10 % of the frame) is filled by reflection.
    """
    return math.ceil(0.1 * max(spec.size)) + 8


def to_canvas(spec: LineSpec, pad: int, x: float, y: float) -> tuple[float, float]:
    # canvas pixel i covers golden [(i)/SS - pad - 0.5, (i+1)/SS - pad - 0.5): pixel centres align
    return SS * (x + pad + 0.5) - 0.5, SS * (y + pad + 0.5) - 0.5



def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise: a coarse random field resized up with cubic interpolation, in ~[-1, 1]."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return big / (big.std() + 1e-6)


def mask_to_layer(mask: np.ndarray) -> np.ndarray:
    return (mask.astype(np.float32) / 255.0)[..., None]


def blend(img: np.ndarray, mask: np.ndarray, color: np.ndarray | float) -> None:
    """In place: ``img = img·(1−m) + color·m`` with m a float (H, W, 1) layer."""
    img *= 1.0 - mask
    img += mask * color


def paint(img: np.ndarray, mask: np.ndarray, color: np.ndarray | float,
           alpha: float = 1.0) -> None:
    """:func:`blend` with a uint8 mask, only over the mask's bounding box (the canvas is big)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    sub = (slice(y, y + h), slice(x, x + w))
    if isinstance(color, np.ndarray) and color.ndim == 3:
        color = color[sub]
    blend(img[sub], alpha * mask_to_layer(mask[sub]), color)
