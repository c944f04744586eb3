"""Address overlay and VLM compositions (DESIGN §4, the seeds' composer).

The image is placed below and to the right of a black margin; the column labels are centred over
their columns in the top margin, the row labels beside their rows in the left margin, in yellow
(OpenCV Hershey font: no font files).  Thin grid lines mark the cells; marked (defect) cells are
outlined in red.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipeline.grid import AddressGrid

YELLOW = (0, 255, 255)  # BGR
RED = (0, 0, 255)
GRID = (0, 150, 150)  # dim yellow: visible on bright and dark images, not mistaken for a label
FONT = cv2.FONT_HERSHEY_SIMPLEX


def default_margin(shape: tuple[int, ...]) -> int:
    """Margin (px) for an image of ``shape``: 5 % of its longer side, at least 24 px."""
    return max(24, round(0.05 * max(int(shape[0]), int(shape[1]))))


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img)  # metric images etc.: saturate to 0..255
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected a grey (H, W) or BGR (H, W, 3) image, got shape {img.shape}")
    return img


def _font_scale(labels: list[str], margin: int, max_width: float) -> tuple[float, int]:
    """Largest scale so text is ≤ 55 % of the margin tall and fits ``max_width``."""
    (w1, h1), _ = cv2.getTextSize("0", FONT, 1.0, 1)
    widest = max(cv2.getTextSize(lab, FONT, 1.0, 1)[0][0] for lab in labels) if labels else w1
    scale = min(0.55 * margin / max(h1, 1), max_width / max(widest, 1))
    scale = max(scale, 0.25)
    thickness = max(1, round(scale * 2.0))
    return scale, thickness


def _put_centred(
    canvas: np.ndarray, text: str, cx: float, cy: float, scale: float, thick: int
) -> None:
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
    org = (round(cx - tw / 2), round(cy + th / 2))
    cv2.putText(canvas, text, org, FONT, scale, YELLOW, thick, cv2.LINE_AA)


def draw_overlay(
    image: np.ndarray,
    grid: AddressGrid,
    *,
    marked: Iterable[str] = (),
    lines: bool = True,
    margin: int | None = None,
) -> np.ndarray:
    """BGR copy of ``image`` with a black margin above and left, yellow labels, optional grid.

    Output shape ``(H + margin, W + margin, 3)``; the image sits at ``[margin:, margin:]``.
    ``marked`` addresses (e.g. the metric judge's defect cells) are outlined in red.
    """
    img = _to_bgr8(image)
    h, w = img.shape[:2]
    m = default_margin(img.shape) if margin is None else int(margin)
    if m < 8:
        raise ValueError(f"margin must be at least 8 px, got {m}")
    canvas = np.zeros((h + m, w + m, 3), np.uint8)
    view = canvas[m:, m:]
    if img.ndim == 2:
        cv2.cvtColor(img, cv2.COLOR_GRAY2BGR, dst=view)
    else:
        view[...] = img
    if lines:
        for x, y, cw, ch in grid.cells.values():
            cv2.rectangle(canvas, (x + m, y + m), (x + m + cw - 1, y + m + ch - 1), GRID, 1)
    for a in marked:
        if a not in grid.cells:
            grid.split(a)  # raises ValueError with a clear message
            continue
        x, y, cw, ch = grid.cells[a]
        cv2.rectangle(canvas, (x + m, y + m), (x + m + cw - 1, y + m + ch - 1), RED, 2)
    cols = grid.column_spans()
    rows = grid.row_spans()
    narrowest = min((x1 - x0 for x0, x1 in cols.values()), default=m)
    cscale, cthick = _font_scale(list(cols), m, 0.9 * narrowest)
    rscale, rthick = _font_scale(list(rows), m, 0.8 * m)
    scale, thick = min(cscale, rscale), min(cthick, rthick)
    for lab, (x0, x1) in cols.items():
        _put_centred(canvas, lab, m + (x0 + x1) / 2, m / 2, scale, thick)
    for lab, (y0, y1) in rows.items():
        _put_centred(canvas, lab, m / 2, m + (y0 + y1) / 2, scale, thick)
    return canvas


def compose_pair(
    golden: np.ndarray,
    test: np.ndarray,
    grid: AddressGrid,
    mode: str = "separate",
    *,
    marked: Iterable[str] = (),
    lines: bool = True,
    margin: int | None = None,
) -> list[np.ndarray]:
    """Images for the VLM: ``separate`` → ``[golden, test]`` (each with labels), ``stacked`` →
    ``[one image]``: golden on top, test below, each with its own margin and labels (the seeds'
    composer).  ``marked`` cells are outlined on the test image only."""
    if mode not in ("separate", "stacked"):
        raise ValueError(f"composition mode must be 'separate' or 'stacked', got {mode!r}")
    m = default_margin(np.asarray(golden).shape) if margin is None else margin
    g = draw_overlay(golden, grid, lines=lines, margin=m)
    t = draw_overlay(test, grid, marked=marked, lines=lines, margin=m)
    if mode == "separate":
        return [g, t]
    width = max(g.shape[1], t.shape[1])
    parts = []
    for p in (g, t):
        if p.shape[1] < width:
            p = cv2.copyMakeBorder(p, 0, 0, 0, width - p.shape[1], cv2.BORDER_CONSTANT, value=0)
        parts.append(p)
    return [np.vstack(parts)]
