"""Address grid (DESIGN §4): cells in golden-image coordinates, addresses ``X:<col>, Y:<row>``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np

from pipeline.base.addresses import make_address, parse_address

Rect = tuple[int, int, int, int]


def _labels(value: Any, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"grid {what} must be a non-empty list of labels, got {value!r}")
    out = [str(v).strip() for v in value]
    for lab in out:
        if not lab or "," in lab or ":" in lab:
            raise ValueError(f"grid {what} label {lab!r} must be non-empty without ',' or ':'")
    if len(set(out)) != len(out):
        raise ValueError(f"grid {what} labels must be unique, got {out}")
    return out


def _rect(value: Any, what: str) -> Rect:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{what} must be [x, y, w, h], got {value!r}")
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be four numbers [x, y, w, h], got {value!r}") from None
    if any(v != int(v) for v in vals):
        raise ValueError(f"{what} must be whole pixels, got {value!r}")
    x, y, w, h = (int(v) for v in vals)
    if x < 0 or y < 0:
        raise ValueError(f"{what} must not start at negative coordinates, got {value!r}")
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} must have positive width and height, got {value!r}")
    return x, y, w, h


class AddressGrid:
    """Named cells in golden coordinates.

    Built from an equal grid ``{roi: [x, y, w, h], columns: [...], rows: [...]}`` (cell edges at
    ``x + round(i·w/ncols)``, so the cells tile the ROI exactly) or explicit cells
    ``{cells: {"X:3, Y:C": [x, y, w, h], ...}}`` (optionally with ``columns``/``rows`` to fix the
    label order; otherwise the order of first appearance).  ``cells`` maps address →
    ``(x, y, w, h)``.
    """

    def __init__(
        self,
        columns: list[str],
        rows: list[str],
        cells: Mapping[str, Rect],
        roi: Rect | None = None,
    ) -> None:
        """Low-level constructor; prefer :meth:`from_config` / :meth:`equal`."""
        self.columns = list(columns)
        self.rows = list(rows)
        self.cells: dict[str, Rect] = {a: tuple(int(v) for v in r) for a, r in cells.items()}  # type: ignore[misc]
        self.roi = roi
        self._split = {a: parse_address(a) for a in self.cells}

    # ---------------------------------------------------------------- construction
    @classmethod
    def equal(cls, roi: Rect, columns: Iterable[str], rows: Iterable[str]) -> AddressGrid:
        """Equal grid over ``roi`` (row-major cell order)."""
        cols = _labels(list(columns), "columns")
        rws = _labels(list(rows), "rows")
        x, y, w, h = _rect(roi, "grid roi")
        if w < len(cols) or h < len(rws):
            raise ValueError(
                f"grid roi {w}x{h} is too small for {len(cols)} columns x {len(rws)} rows"
            )
        xs = [x + round(i * w / len(cols)) for i in range(len(cols) + 1)]
        ys = [y + round(j * h / len(rws)) for j in range(len(rws) + 1)]
        cells: dict[str, Rect] = {}
        for j, r in enumerate(rws):
            for i, c in enumerate(cols):
                cells[make_address(c, r)] = (xs[i], ys[j], xs[i + 1] - xs[i], ys[j + 1] - ys[j])
        return cls(cols, rws, cells, roi=(x, y, w, h))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AddressGrid:
        """From ``{roi, columns, rows}`` or ``{cells: {...}}`` (``ValueError`` when malformed)."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f"grid config must be a mapping, got {type(cfg).__name__}")
        if "cells" in cfg and "roi" in cfg:
            raise ValueError("grid config: give either 'roi' (equal grid) or 'cells', not both")
        if "cells" in cfg:
            raw = cfg["cells"]
            if not isinstance(raw, Mapping) or not raw:
                raise ValueError(
                    "grid 'cells' must be a non-empty mapping of address -> [x, y, w, h]"
                )
            cells: dict[str, Rect] = {}
            cols_seen: list[str] = []
            rows_seen: list[str] = []
            for addr, rect in raw.items():
                col, row = parse_address(addr)
                norm = make_address(col, row)
                if norm in cells:
                    raise ValueError(f"grid cell {norm!r} is given twice")
                cells[norm] = _rect(rect, f"grid cell {addr!r}")
                if col not in cols_seen:
                    cols_seen.append(col)
                if row not in rows_seen:
                    rows_seen.append(row)
            cols = _labels(cfg["columns"], "columns") if "columns" in cfg else cols_seen
            rws = _labels(cfg["rows"], "rows") if "rows" in cfg else rows_seen
            extra_c = [c for c in cols_seen if c not in cols]
            extra_r = [r for r in rows_seen if r not in rws]
            if extra_c or extra_r:
                raise ValueError(
                    f"grid cells use labels not in columns/rows: columns {extra_c}, rows {extra_r}"
                )
            return cls(cols, rws, cells)
        missing = [k for k in ("roi", "columns", "rows") if k not in cfg]
        if missing:
            raise ValueError(
                f"grid config needs 'roi', 'columns' and 'rows' (or 'cells'); missing {missing}"
            )
        return cls.equal(cfg["roi"], cfg["columns"], cfg["rows"])

    def to_config(self) -> dict[str, Any]:
        """Config dict that :meth:`from_config` turns back into this grid."""
        if self.roi is not None:
            return {"roi": list(self.roi), "columns": list(self.columns), "rows": list(self.rows)}
        return {
            "columns": list(self.columns),
            "rows": list(self.rows),
            "cells": {a: list(r) for a, r in self.cells.items()},
        }

    # ---------------------------------------------------------------- geometry
    def split(self, address: str) -> tuple[str, str]:
        """``"X:3, Y:C"`` → ``("3", "C")``; ``ValueError`` for an address not in this grid."""
        try:
            return self._split[address]
        except KeyError:
            col, row = parse_address(address)
            norm = make_address(col, row)
            if norm in self._split:
                return self._split[norm]
            raise ValueError(f"address {address!r} is not a cell of this grid") from None

    def address_at(self, x: float, y: float) -> str | None:
        """Address of the first cell containing pixel ``(x, y)``, or ``None``."""
        for a, (cx, cy, cw, ch) in self.cells.items():
            if cx <= x < cx + cw and cy <= y < cy + ch:
                return a
        return None

    def column_spans(self) -> dict[str, tuple[int, int]]:
        """Column label → ``(x0, x1)``: the horizontal extent of its cells (for labels)."""
        return self._spans(0)

    def row_spans(self) -> dict[str, tuple[int, int]]:
        """Row label → ``(y0, y1)``: the vertical extent of its cells (for labels)."""
        return self._spans(1)

    def _spans(self, axis: int) -> dict[str, tuple[int, int]]:
        labels = self.columns if axis == 0 else self.rows
        spans: dict[str, tuple[int, int]] = {}
        for a, r in self.cells.items():
            lab = self._split[a][axis]
            lo, hi = r[axis], r[axis] + r[axis + 2]
            if lab in spans:
                lo, hi = min(lo, spans[lab][0]), max(hi, spans[lab][1])
            spans[lab] = (lo, hi)
        return {lab: spans[lab] for lab in labels if lab in spans}

    def bounds(self) -> Rect:
        """Bounding rectangle of all cells."""
        x0 = min(r[0] for r in self.cells.values())
        y0 = min(r[1] for r in self.cells.values())
        x1 = max(r[0] + r[2] for r in self.cells.values())
        y1 = max(r[1] + r[3] for r in self.cells.values())
        return x0, y0, x1 - x0, y1 - y0

    def check_fits(self, shape: tuple[int, ...]) -> None:
        """``ValueError`` if a cell lies (partly) outside an image of ``shape`` ``(H, W, ...)``."""
        h, w = int(shape[0]), int(shape[1])
        for a, (x, y, cw, ch) in self.cells.items():
            if x + cw > w or y + ch > h:
                raise ValueError(f"grid cell {a!r} {[x, y, cw, ch]} lies outside the {w}x{h} image")

    # ---------------------------------------------------------------- scores
    def cell_scores(
        self,
        d: np.ndarray,
        valid: np.ndarray | None = None,
        quantile: float = 1.0,
        *,
        support: int = 1,
    ) -> dict[str, float]:
        """Score per cell: the max (``quantile=1``) or a high quantile of ``D`` over the cell.

        ``d`` is the distance map at frame size (its pixel ``(y, x)`` is the window centred there,
        or that window's stride block).  ``support > 1`` first takes the minimum of ``D`` over
        every ``support × support`` patch (a grey erosion), so a cell scores the level that ``D``
        holds over a whole patch: a defect raises ``D`` over a blob at least ``k`` wide, while
        the thin lines of a wandering edge are removed.  Pixels where ``valid`` is 0 are left
        out; a cell with no pixel left (or outside the image) scores 0.
        """
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        if support < 1:
            raise ValueError(f"support must be >= 1, got {support}")
        d = np.asarray(d)
        if d.dtype != np.float32:
            d = d.astype(np.float32)
        h, w = d.shape[:2]
        if valid is not None and valid.shape[:2] != (h, w):
            raise ValueError(f"valid mask shape {valid.shape} differs from D shape {d.shape}")
        if support > 1:
            d = cv2.erode(d, np.ones((support, support), np.uint8))
        out: dict[str, float] = {}
        for a, (x, y, cw, ch) in self.cells.items():
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + cw, w), min(y + ch, h)
            if x1 <= x0 or y1 <= y0:
                out[a] = 0.0
                continue
            sub = d[y0:y1, x0:x1]
            if valid is not None and quantile >= 1.0:
                vsub = valid[y0:y1, x0:x1]
                if vsub.dtype != np.uint8:
                    vsub = (vsub > 0).astype(np.uint8)
                _, mx, _, loc = cv2.minMaxLoc(sub, mask=vsub)
                out[a] = float(mx) if loc[0] >= 0 else 0.0  # (-1, -1): nothing valid
            elif valid is not None:
                vals = sub[valid[y0:y1, x0:x1] > 0]
                out[a] = float(np.quantile(vals, quantile)) if vals.size else 0.0
            elif quantile >= 1.0:
                out[a] = float(cv2.minMaxLoc(sub)[1])
            else:
                out[a] = float(np.quantile(sub, quantile))
        return out

    def __repr__(self) -> str:
        n_c, n_r = len(self.columns), len(self.rows)
        return f"AddressGrid({n_c} columns x {n_r} rows, {len(self.cells)} cells)"
