"""Small real video files for the camera and replay tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_mjpeg_avi(path: Path, n: int = 8, fps: float = 10.0) -> Path:
    """An MJPEG AVI of ``n`` ≤ 10 colour frames, 64x48: frame ``i`` is grey level
    ``20 + 25 i`` with its number written in white (the top-left corner stays plain)."""
    if not 0 < n <= 10:
        raise ValueError(f"n must be 1..10 (grey levels stay within uint8), got {n}")
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert w.isOpened()
    for i in range(n):
        img = np.full((48, 64, 3), 20 + 25 * i, np.uint8)
        cv2.putText(img, str(i), (20, 35), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        w.write(img)
    w.release()
    return path
