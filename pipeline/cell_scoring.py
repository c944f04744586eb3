"""Cell scores: the largest distance ``D`` over the windows that lie inside each address cell.

A window centred near a cell's edge also sees the neighbour's pixels, so a defect close to the
edge would raise the neighbour's score too and the part would be reported at two addresses.
Scoring each cell only over windows lying entirely inside it (the cell shrunk by ``inset`` =
``k // 2`` pixels) removes that bleed without a blind spot: every pixel of the cell is still seen
by some window of the cell.

What a defect casts beyond its own cell (the shadow of a bent pin, a particle's halo) is handled by
``attribute``: the pixels over their cell's threshold form blobs; each blob is one defect and
belongs to the cell holding its D-weighted centroid; a cell's score then ignores the pixels of
blobs that belong to another cell.  So a defect is reported at its own address, while a second
defect next to it (its own blob) is still found.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.grid import AddressGrid


def _mask(grid: AddressGrid, shape: tuple[int, int], inset: int) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), np.float32)
    for x, y, cw, ch in grid.cells.values():
        i = min(max(inset, 0), (cw - 1) // 2, (ch - 1) // 2)
        mask[max(y + i, 0) : min(y + ch - i, h), max(x + i, 0) : min(x + cw - i, w)] = 1.0
    return mask


LINE_PX = 11  # length of the straight structures treated as edge-line noise


def _line_kernels(length: int) -> list[np.ndarray]:
    """Horizontal, vertical and both diagonal line structuring elements of ``length`` px."""
    eye = np.eye(length, dtype=np.uint8)
    return [np.ones((1, length), np.uint8), np.ones((length, 1), np.uint8), eye,
            np.ascontiguousarray(eye[::-1])]


def compact_blobs(d: np.ndarray, line_px: int = LINE_PX) -> np.ndarray:
    """The compact part of ``D``: ``D`` minus its largest opening by a straight line of
    ``line_px`` (horizontal, vertical, diagonal), opened 2×2.

    A wandering edge raises ``D`` along a line that follows the edge: some line opening keeps it
    whole and the difference is ~0.  A thin open or short raises ``D`` over a short blob across
    the trace or gap, shorter than ``line_px`` in every direction: no line fits, it stays (the 2×2
    opening removes single-pixel residues).
    """
    background = None
    for k in _line_kernels(line_px):
        o = cv2.morphologyEx(d, cv2.MORPH_OPEN, k)
        background = o if background is None else cv2.max(background, o)
    assert background is not None
    return cv2.morphologyEx(cv2.subtract(d, background), cv2.MORPH_OPEN,
                            np.ones((2, 2), np.uint8))


class CellScorer:
    """Scores ``D`` maps of one frame size on one grid; masks and maps are built once."""

    def __init__(self, grid: AddressGrid, shape: tuple[int, int], *, inset: int,
                 quantile: float = 1.0, support: int = 1) -> None:
        self.grid = grid
        self.quantile = quantile
        # D eroded over support×support patches first: a defect raises D over a blob at least
        # k wide, the thin lines of a wandering edge vanish (DeepPCB: support 3); the erosion
        # would also erase a 1-3 px open or short, so the compact blobs of raw D are kept
        # alongside (compact_blobs)
        self._support = np.ones((support, support), np.uint8) if support > 1 else None
        self.shape = shape
        self.interior = _mask(grid, shape, inset)
        h, w = shape
        self._cell_index = np.full((h, w), -1, np.int32)
        self.addresses = list(grid.cells)
        for i, (x, y, cw, ch) in enumerate(grid.cells.values()):
            self._cell_index[max(y, 0) : min(y + ch, h), max(x, 0) : min(x + cw, w)] = i
        self._thr_key: tuple[float, ...] | None = None
        self._thr_map = np.empty((h, w), np.float32)

    def prepare(self, d: np.ndarray) -> np.ndarray:
        """``D`` as the cells see it: with a support patch, the larger of ``D`` eroded over it and
        the compact blobs of ``D`` (:func:`compact_blobs`); else ``D`` itself."""
        if self._support is None:
            return d
        return cv2.max(cv2.erode(d, self._support), compact_blobs(d))

    def __call__(self, d: np.ndarray) -> dict[str, float]:
        """Score per cell (``D`` is 0 already where alignment left no valid pixels)."""
        return self.grid.cell_scores(self.prepare(d) * self.interior, quantile=self.quantile)

    def _threshold_map(self, thresholds: dict[str, float]) -> np.ndarray:
        key = tuple(thresholds[a] for a in self.addresses)
        if key != self._thr_key:
            lut = np.array([*key, np.inf], np.float32)  # index -1 (outside every cell) → ∞
            self._thr_map[:] = lut[self._cell_index]
            self._thr_key = key
        return self._thr_map

    def attribute(self, d: np.ndarray, scores: dict[str, float],
                  thresholds: dict[str, float]) -> dict[str, float]:
        """Scores with the pixels of defect blobs centred in another cell left out."""
        if not any(s > thresholds[a] for a, s in scores.items()):
            return scores
        d = self.prepare(d)
        over = (d > self._threshold_map(thresholds)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(over, connectivity=8)
        foreign = np.zeros(self.shape, np.float32)
        changed = False
        for k in range(1, n):
            x, y, w, h, _area = stats[k]
            sub_l = labels[y : y + h, x : x + w] == k
            sub_d = np.where(sub_l, d[y : y + h, x : x + w], 0.0)
            total = float(sub_d.sum())
            if total <= 0:
                continue
            ys, xs = np.indices(sub_d.shape)
            cx = x + float((sub_d * xs).sum()) / total
            cy = y + float((sub_d * ys).sum()) / total
            home = int(self._cell_index[min(round(cy), self.shape[0] - 1),
                                        min(round(cx), self.shape[1] - 1)])
            cells_hit = set(np.unique(self._cell_index[y : y + h, x : x + w][sub_l]).tolist())
            cells_hit.discard(-1)
            if home < 0 or cells_hit - {home}:
                # pixels of this blob outside its home cell must not flag their cells
                region = foreign[y : y + h, x : x + w]
                outside = sub_l & (self._cell_index[y : y + h, x : x + w] != home)
                region[outside] = 1.0
                changed = True
        if not changed:
            return scores
        cleaned = self.grid.cell_scores(d * self.interior * (1.0 - foreign), quantile=self.quantile)
        return {a: min(s, cleaned[a]) for a, s in scores.items()}
