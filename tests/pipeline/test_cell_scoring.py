"""Cell scoring: no bleed across cell edges, each defect blob reported at its own address."""

from __future__ import annotations

import numpy as np

from pipeline.cell_scoring import CellScorer
from pipeline.grid import AddressGrid

GRID = AddressGrid.from_config({"roi": [0, 0, 300, 100], "columns": ["1", "2", "3"],
                                "rows": ["U"]})
THR = dict.fromkeys(GRID.cells, 3.0)


def scorer() -> CellScorer:
    return CellScorer(GRID, (100, 300), inset=4)


def test_windows_near_the_edge_do_not_score_the_neighbour() -> None:
    d = np.zeros((100, 300), np.float32)
    # D of windows centred within k//2 = 4 px of an edge is left out of both cells (those windows
    # see both cells' pixels); what they see is also seen by windows lying wholly in one cell
    d[40:60, 96:104] = 9.0
    d[40:60, 90:96] = 7.0
    s = scorer()(d)
    assert s["X:1, Y:U"] == 7.0
    assert s["X:2, Y:U"] == 0.0


def test_blob_straddling_an_edge_belongs_to_its_centroid_cell() -> None:
    d = np.zeros((100, 300), np.float32)
    d[30:70, 60:110] = 8.0  # mostly in cell 1, 10 px into cell 2
    d[45:55, 100:110] = 12.0  # its peak even lies in cell 2
    sc = scorer()
    raw = sc(d)
    assert raw["X:2, Y:U"] > THR["X:2, Y:U"]  # the bleed that attribute() must remove
    fixed = sc.attribute(d, raw, THR)
    assert fixed["X:1, Y:U"] > 3.0 and fixed["X:2, Y:U"] <= 3.0
    assert fixed["X:3, Y:U"] == 0.0


def test_separate_defects_in_adjacent_cells_are_both_kept() -> None:
    d = np.zeros((100, 300), np.float32)
    d[40:60, 40:60] = 8.0
    d[40:60, 140:160] = 5.0
    sc = scorer()
    fixed = sc.attribute(d, sc(d), THR)
    assert fixed["X:1, Y:U"] == 8.0 and fixed["X:2, Y:U"] == 5.0


def test_support_removes_edge_lines_but_keeps_thin_compact_defects() -> None:
    """support 3 (DeepPCB): the long thin lines a wandering edge draws in D vanish, while a 2-px
    open or short (a short, compact blob the 3×3 erosion alone would erase) still scores."""
    d = np.zeros((100, 300), np.float32)
    d[30:32, 10:90] = 9.0  # edge noise: 2 px wide, 80 px long, horizontal
    d[20:90, 50:52] = 9.0  # and a vertical one in the same cell
    for i in range(40):  # a diagonal edge line
        d[50 + i, 20 + i : 22 + i] = 9.0
    d[40:46, 140:142] = 8.0  # a 2-px-wide gap across a trace: 6 px long
    d[60:62, 240:246] = 7.0  # a 2-px bridge, the other way
    s = CellScorer(GRID, (100, 300), inset=4, support=3)(d)
    assert s["X:1, Y:U"] < 1.0
    assert s["X:2, Y:U"] == 8.0
    assert s["X:3, Y:U"] == 7.0
    # without support the edge lines would score like defects
    assert CellScorer(GRID, (100, 300), inset=4, support=1)(d)["X:1, Y:U"] == 9.0
