"""Address grid geometry, cell scores, overlay drawing and pair composition."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.boxscore import accumulate, cells_overlapping_box, score_flags_against_boxes
from pipeline.grid import AddressGrid, parse_address
from pipeline.overlay import YELLOW, compose_pair, default_margin, draw_overlay

PINS = {"roi": [10, 20, 90, 30], "columns": [str(i) for i in range(1, 10)], "rows": ["U", "C", "D"]}


def test_equal_grid_geometry_and_addresses() -> None:
    g = AddressGrid.from_config(PINS)
    assert len(g.cells) == 27
    assert g.cells["X:1, Y:U"] == (10, 20, 10, 10)
    assert g.cells["X:9, Y:D"] == (90, 40, 10, 10)
    assert g.split("X:3, Y:C") == ("3", "C")
    assert g.address_at(35, 35) == "X:3, Y:C"
    assert g.address_at(5, 5) is None
    assert g.column_spans()["3"] == (30, 40)
    assert g.row_spans()["D"] == (40, 50)
    assert AddressGrid.from_config(g.to_config()).cells == g.cells


def test_uneven_roi_tiles_exactly() -> None:
    g = AddressGrid.from_config({"roi": [0, 0, 100, 50], "columns": ["a", "b", "c"], "rows": ["r"]})
    xs = sorted(r[0] for r in g.cells.values())
    ws = [g.cells[f"X:{c}, Y:r"][2] for c in "abc"]
    assert xs[0] == 0 and sum(ws) == 100 and max(ws) - min(ws) <= 1


def test_explicit_cells() -> None:
    cfg = {
        "cells": {"X:A, Y:1": [0, 0, 5, 5], "X:B, Y:1": [10, 0, 5, 5], "X:A, Y:2": [0, 10, 5, 5]}
    }
    g = AddressGrid.from_config(cfg)
    assert g.columns == ["A", "B"] and g.rows == ["1", "2"]
    assert g.column_spans()["B"] == (10, 15)
    assert AddressGrid.from_config(g.to_config()).cells == g.cells


@pytest.mark.parametrize(
    ("cfg", "msg"),
    [
        ({"roi": [0, 0, 10, 10], "columns": ["1"]}, "missing"),
        ({"roi": [0, 0, 10], "columns": ["1"], "rows": ["U"]}, r"\[x, y, w, h\]"),
        ({"roi": [0, 0, 0, 10], "columns": ["1"], "rows": ["U"]}, "positive"),
        ({"roi": [0, 0, 10, 10], "columns": ["1", "1"], "rows": ["U"]}, "unique"),
        ({"roi": [0, 0, 10, 10], "columns": [], "rows": ["U"]}, "non-empty"),
        ({"roi": [0, 0, 10, 10], "columns": ["a,b"], "rows": ["U"]}, "without"),
        ({"roi": [0, 0, 2, 10], "columns": ["1", "2", "3"], "rows": ["U"]}, "too small"),
        ({"cells": {"3C": [0, 0, 5, 5]}}, "not a cell address"),
        ({"cells": {"X:1, Y:U": [0, 0, -5, 5]}}, "positive"),
        ({"cells": {}}, "non-empty"),
        ({"cells": {"X:1, Y:U": [0, 0, 5, 5]}, "columns": ["2"]}, "not in columns"),
        ({"cells": {"X:1, Y:U": [0, 0, 5, 5]}, "roi": [0, 0, 5, 5]}, "not both"),
        ("roi", "mapping"),
    ],
)
def test_config_errors_are_clear(cfg, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        AddressGrid.from_config(cfg)


def test_parse_address_variants() -> None:
    assert parse_address("X:3, Y:C") == ("3", "C")
    assert parse_address(" X : 10 ,Y: D ") == ("10", "D")
    with pytest.raises(ValueError):
        parse_address("3C")
    g = AddressGrid.from_config(PINS)
    assert g.split("X:3,Y:C") == ("3", "C")
    with pytest.raises(ValueError, match="not a cell"):
        g.split("X:12, Y:C")


def test_cell_scores_max_quantile_valid_support() -> None:
    g = AddressGrid.from_config(PINS)
    d = np.zeros((60, 110), np.float32)
    d[25, 35] = 9.0  # one window in X:3, Y:U
    d[33:37, 53:57] = 4.0  # a 4×4 blob in X:5, Y:C
    s = g.cell_scores(d)
    assert s["X:3, Y:U"] == 9.0 and s["X:5, Y:C"] == 4.0 and s["X:1, Y:U"] == 0.0
    assert set(s) == set(g.cells)
    assert g.cell_scores(d, quantile=0.5)["X:3, Y:U"] == 0.0
    # support 3: the lone window is erased, the blob survives
    s3 = g.cell_scores(d, support=3)
    assert s3["X:3, Y:U"] == 0.0 and s3["X:5, Y:C"] == 4.0
    valid = np.full(d.shape, 255, np.uint8)
    valid[20:30, 30:40] = 0
    assert g.cell_scores(d, valid)["X:3, Y:U"] == 0.0
    with pytest.raises(ValueError):
        g.cell_scores(d, quantile=0.0)
    with pytest.raises(ValueError):
        g.cell_scores(d, support=0)


# ------------------------------------------------------------------------------ overlay


def _yellow(img: np.ndarray) -> np.ndarray:
    return np.all(img == np.array(YELLOW, np.uint8), axis=-1)


def test_overlay_margin_labels_and_lines() -> None:
    grid = AddressGrid.from_config(
        {
            "roi": [0, 0, 360, 120],
            "columns": [str(i) for i in range(1, 10)],
            "rows": ["U", "C", "D"],
        }
    )
    img = np.full((120, 360), 128, np.uint8)
    m = 40
    out = draw_overlay(img, grid, margin=m, marked=["X:3, Y:C"])
    assert out.shape == (160, 400, 3) and out.dtype == np.uint8
    yel = _yellow(out)
    # each column label lies in the top margin, centred over its column
    for i in range(9):
        x0, x1 = m + 40 * i, m + 40 * (i + 1)
        band = yel[:m, x0:x1]
        assert band.any(), f"no label over column {i + 1}"
        cols = np.nonzero(band.any(axis=0))[0]
        assert abs((cols.min() + cols.max()) / 2 - 20) <= 4
    # row labels in the left margin beside their rows
    for j in range(3):
        band = yel[m + 40 * j : m + 40 * (j + 1), :m]
        assert band.any(), f"no label beside row {j}"
    # the top-left corner square has no label; the margins are otherwise black
    assert not yel[:m, :m].any()
    margin_px = np.concatenate([out[:m].reshape(-1, 3), out[m:, :m].reshape(-1, 3)])
    assert np.all(margin_px[:, 0] == 0) and np.all(
        margin_px[:, 1] == margin_px[:, 2]
    )  # yellow/black
    # the image is copied unchanged inside the cells (away from lines)
    assert np.all(out[m + 60, m + 20] == 128)
    # grid line and the red outline of the marked cell
    assert tuple(out[m + 60, m + 40]) != (128, 128, 128)
    red = np.all(out == np.array([0, 0, 255], np.uint8), axis=-1)
    assert red[m + 40 : m + 80, m + 80].any() and red[m + 40, m + 80 : m + 120].any()
    assert not red[m + 82 :, :].any() and not red[:, m + 122 :].any()


def test_overlay_without_lines_keeps_image() -> None:
    grid = AddressGrid.from_config(PINS)
    img = np.dstack([np.full((60, 110), v, np.uint8) for v in (10, 20, 30)])
    out = draw_overlay(img, grid, lines=False, margin=24)
    np.testing.assert_array_equal(out[24:, 24:], img)
    assert default_margin((1024, 1280)) == 64


def test_compose_pair_shapes() -> None:
    grid = AddressGrid.from_config(PINS)
    g = np.zeros((60, 110), np.uint8)
    t = np.full((60, 110), 200, np.uint8)
    sep = compose_pair(g, t, grid, "separate", margin=30)
    assert [x.shape for x in sep] == [(90, 140, 3), (90, 140, 3)]
    (st,) = compose_pair(g, t, grid, "stacked", margin=30, marked=["X:1, Y:U"])
    assert st.shape == (180, 140, 3)
    # golden on top, test below, each with its own label band
    assert np.all(st[30 + 25, 30 + 15] == 0) and np.all(st[90 + 30 + 25, 30 + 15] == 200)
    assert _yellow(st[:30]).any() and _yellow(st[90:120]).any()
    red = np.all(st == np.array([0, 0, 255], np.uint8), axis=-1)
    assert not red[:90].any() and red[90:].any()
    with pytest.raises(ValueError):
        compose_pair(g, t, grid, "side")


# ------------------------------------------------------------------------------ box scoring


def test_box_scoring() -> None:
    grid = AddressGrid.from_config(
        {
            "roi": [0, 0, 640, 640],
            "columns": [str(i) for i in range(1, 11)],
            "rows": [str(i) for i in range(1, 11)],
        }
    )
    assert cells_overlapping_box(grid, [10, 10, 30, 30]) == ["X:1, Y:1"]
    assert sorted(cells_overlapping_box(grid, [60, 10, 70, 30, 2])) == ["X:1, Y:1", "X:2, Y:1"]
    assert cells_overlapping_box(grid, [54, 10, 64, 30]) == ["X:1, Y:1"]  # x2 exclusive
    boxes = [[10, 10, 30, 30, 1], [300, 300, 340, 340, 3]]
    r = score_flags_against_boxes({"X:1, Y:1", "X:10, Y:10"}, grid, boxes)
    assert (r["flagged"], r["tp_cells"], r["fp_cells"]) == (2, 1, 1)
    assert (r["boxes"], r["boxes_hit"], r["boxes_missed"]) == (2, 1, 1)
    assert r["cell_precision"] == 0.5 and r["box_recall"] == 0.5 and r["f1"] == 0.5
    r2 = score_flags_against_boxes({"X:5, Y:5", "X:6, Y:6"}, grid, boxes)
    assert r2["cell_precision"] == 1.0 and r2["box_recall"] == 0.5
    tot = accumulate([r, r2])
    assert tot["flagged"] == 4 and tot["tp_cells"] == 3 and tot["boxes"] == 4
    assert tot["cell_precision"] == 0.75 and tot["box_recall"] == 0.5 and tot["images"] == 2
    empty = score_flags_against_boxes(set(), grid, [])
    assert empty["cell_precision"] == 1.0 and empty["box_recall"] == 1.0
    with pytest.raises(ValueError):
        score_flags_against_boxes({"X:11, Y:1"}, grid, boxes)
