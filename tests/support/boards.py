"""A binarised PCB-like golden for the variation-judge tests (one copy)."""

from __future__ import annotations

import cv2
import numpy as np

S = 320
GRID = {"roi": [0, 0, S, S], "columns": ["1", "2", "3", "4", "5"],
        "rows": ["A", "B", "C", "D", "E"]}


def board() -> np.ndarray:
    """A binarised PCB-like golden: white board, black traces, pads and a bus."""
    g = np.full((S, S), 255, np.uint8)
    for i, y in enumerate(range(30, S - 20, 40)):
        cv2.line(g, (20, y), (S - 20 - 20 * (i % 3), y), 0, 9)
    for x in (60, 150, 250):
        cv2.circle(g, (x, 270), 14, 0, -1)
        cv2.circle(g, (x, 270), 5, 255, -1)
    cv2.rectangle(g, (290, 20), (302, 300), 0, -1)
    return g
