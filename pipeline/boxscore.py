"""Scoring flagged cells against defect boxes (DeepPCB-style), as a production line would.

* A cell *overlaps* a box when their intersection has positive area; boxes are ``[x1, y1, x2, y2]``
  in pixels with ``x2``/``y2`` exclusive (half-open, like cells ``[x, x + w)``).
* cell precision = flagged cells overlapping ≥ 1 box / flagged cells (1.0 when nothing is flagged);
* box recall = boxes with ≥ 1 flagged cell overlapping them / boxes (1.0 when there are no boxes);
* F1 = harmonic mean of the two.

Per-image results carry raw counts, so :func:`accumulate` sums them over a data set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.grid import AddressGrid


def cells_overlapping_box(grid: AddressGrid, box: Sequence[float]) -> list[str]:
    """Addresses of the cells whose rectangle overlaps ``box = [x1, y1, x2, y2, ...]``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    out = []
    for a, (x, y, w, h) in grid.cells.items():
        if x < x2 and x1 < x + w and y < y2 and y1 < y + h:
            out.append(a)
    return out


def _ratios(d: dict[str, Any]) -> dict[str, Any]:
    flagged, tp = d["flagged"], d["tp_cells"]
    prec = tp / flagged if flagged else 1.0
    rec = d["boxes_hit"] / d["boxes"] if d["boxes"] else 1.0
    d["cell_precision"] = prec
    d["box_recall"] = rec
    d["f1"] = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    neg = d["negative_cells"]
    d["cell_false_alarm_rate"] = d["fp_cells"] / neg if neg else 0.0
    return d


def score_flags_against_boxes(
    flagged: Iterable[str], grid: AddressGrid, boxes: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """Counts and ratios for one image.

    Keys: ``flagged``, ``tp_cells`` (flagged cells overlapping a box), ``fp_cells``, ``boxes``,
    ``boxes_hit``, ``boxes_missed``, ``positive_cells``/``negative_cells`` (cells that do / do not
    overlap a box), ``cell_precision``, ``box_recall``, ``f1``, ``cell_false_alarm_rate``
    (fp / negative cells).  Flags for addresses not in the grid raise ``ValueError``.
    """
    flags = set(flagged)
    unknown = flags - set(grid.cells)
    if unknown:
        raise ValueError(f"flagged addresses not in the grid: {sorted(unknown)}")
    positive: set[str] = set()
    hit = 0
    for b in boxes:
        over = cells_overlapping_box(grid, b)
        positive.update(over)
        if flags.intersection(over):
            hit += 1
    tp = len(flags & positive)
    d: dict[str, Any] = {
        "flagged": len(flags),
        "tp_cells": tp,
        "fp_cells": len(flags) - tp,
        "boxes": len(boxes),
        "boxes_hit": hit,
        "boxes_missed": len(boxes) - hit,
        "positive_cells": len(positive),
        "negative_cells": len(grid.cells) - len(positive),
    }
    return _ratios(d)


_COUNTS = (
    "flagged",
    "tp_cells",
    "fp_cells",
    "boxes",
    "boxes_hit",
    "boxes_missed",
    "positive_cells",
    "negative_cells",
)


def accumulate(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counts of several :func:`score_flags_against_boxes` results and recompute ratios."""
    tot: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
    n = 0
    for r in results:
        n += 1
        for k in _COUNTS:
            tot[k] += int(r[k])
    tot["images"] = n
    return _ratios(tot)
