"""A plain 9 × 3 pin chart: the grey test pattern of the alignment and metric benches and tests.

Simpler and faster than the rendered line (:mod:`camera.synth.render`): flat discs with a hole,
column and row labels, a trace, a frame and a little surface texture, drawn straight at the
requested size.  Deterministic for a given size and seed.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

COLUMNS: tuple[str, ...] = tuple(str(i) for i in range(1, 10))
ROWS: tuple[str, ...] = ("U", "C", "D")


def _pitch(w: int, h: int) -> tuple[float, float]:
    return w * 0.09, h * 0.24


def pin_chart(size: tuple[int, int] = (640, 512), seed: int = 0) -> np.ndarray:
    """The chart as a grey uint8 image of ``size = (W, H)``; ``seed`` draws the texture."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 55, np.uint8)
    pitch_x, pitch_y = _pitch(w, h)
    r = int(min(pitch_x, pitch_y) * 0.32)
    for row in range(len(ROWS)):
        for col in range(len(COLUMNS)):
            c = (int(w * 0.12 + col * pitch_x), int(h * 0.27 + row * pitch_y))
            cv2.circle(img, c, r, 200, -1, cv2.LINE_AA)
            cv2.circle(img, c, r // 3, 110, -1, cv2.LINE_AA)
    scale = w / 900
    for col, label in enumerate(COLUMNS):
        cv2.putText(img, label, (int(w * 0.11 + col * pitch_x), int(h * 0.1)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, 235, 2, cv2.LINE_AA)
    for row, label in enumerate(ROWS):
        cv2.putText(img, label, (int(w * 0.02), int(h * 0.29 + row * pitch_y)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, 235, 2, cv2.LINE_AA)
    cv2.line(img, (int(w * 0.05), int(h * 0.9)), (int(w * 0.95), int(h * 0.95)), 170, 3,
             cv2.LINE_AA)
    cv2.rectangle(img, (int(w * 0.6), int(h * 0.02)), (int(w * 0.97), int(h * 0.08)), 140, 2)
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 2.0)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.8) + texture, 0, 255).astype(np.uint8)


def pin_chart_grid(size: tuple[int, int] = (640, 512)) -> dict[str, Any]:
    """The chart's address grid (``pipeline.grid.AddressGrid`` config): one pin centred per cell."""
    w, h = size
    pitch_x, pitch_y = _pitch(w, h)
    x0, y0 = w * 0.12 - pitch_x / 2, h * 0.27 - pitch_y / 2
    return {"roi": [int(x0), int(y0), int(len(COLUMNS) * pitch_x), int(len(ROWS) * pitch_y)],
            "columns": list(COLUMNS), "rows": list(ROWS)}
