"""Leave-one-group-out selection (scripts/deeppcb_logo.py): a held-out group is scored with the
threshold chosen on the other groups only, never with its own best one; and the scored pass runs
the real station on real DeepPCB pairs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.grid import AddressGrid

from support.deeppcb import REPO, write_subset

spec = importlib.util.spec_from_file_location("deeppcb_logo", REPO / "scripts" / "deeppcb_logo.py")
assert spec is not None and spec.loader is not None
logo_mod = importlib.util.module_from_spec(spec)
sys.modules["deeppcb_logo"] = logo_mod
spec.loader.exec_module(logo_mod)

GRID = AddressGrid.from_config({"roi": [0, 0, 128, 64], "columns": ["1", "2"], "rows": ["1"]})
CELLS = list(GRID.cells)


def _row(group: str, i: int, defect_score: float, good_score: float) -> dict:
    """One pair: a defect box in cell 1 (scored ``defect_score``), cell 2 good (``good_score``)."""
    return {"id": f"{group}{i}", "group": group, "boxes": [[10, 10, 20, 20, 1]], "error": None,
            "variation": {CELLS[0]: defect_score, CELLS[1]: good_score}}


def test_held_out_group_gets_the_threshold_of_the_others() -> None:
    # groups a, b: defects score 10, good cells 5 (any k in [5, 10) is perfect, the grid picks the
    # first: 5); group c: defects 4, good 1 -- its own best k would be < 4, LOGO must not see that
    rows = [_row("a", i, 10, 5) for i in range(3)] + [_row("b", i, 10, 5) for i in range(3)]
    rows += [_row("c", i, 4, 1) for i in range(3)]
    table = logo_mod.Table(rows, CELLS, GRID)
    res = logo_mod.logo(table, ("variation",), 0.97)
    fold_c = next(f for f in res["folds"] if f["group"] == "c")
    assert 5.0 <= fold_c["k"] < 10.0
    assert fold_c["box_recall"] == 0.0 and fold_c["boxes"] == 3  # c's defects are missed
    fold_a = next(f for f in res["folds"] if f["group"] == "a")
    assert fold_a["k"] < 4.0  # chosen on b + c, where c's defects need k < 4 ...
    assert fold_a["fp_cells"] == 3  # ... so a's good cells (score 5) are flagged
    assert res["logo"]["boxes"] == 9 and res["logo"]["boxes_hit"] == 6
    # in sample, one k for all: the recall floor (0.97) forces k < 4 for c
    assert res["in_sample"]["k"] < 4.0 and res["in_sample"]["box_recall"] == 1.0
    assert res["logo"]["recall_by_class"]["open"] == pytest.approx(6 / 9)


def test_an_unjudged_pair_counts_its_boxes_as_missed() -> None:
    rows = [_row("a", 0, 10, 1), {"id": "x", "group": "a", "boxes": [[0, 0, 5, 5, 2]],
                                  "error": "golden_unusable"}]
    table = logo_mod.Table(rows, CELLS, GRID)
    c = table.counts("variation", 5.0, np.inf, np.ones(2, bool))
    assert c["boxes"] == 2 and c["boxes_hit"] == 1 and c["recall_by_class"]["short"] == 0.0


def test_scored_pass_runs_the_station_on_real_pairs(tmp_path: Path) -> None:
    data = write_subset(tmp_path / "sub", per_group=1)
    rows = logo_mod.score_pass(data, None, "none", 3, ("variation",), baselines=True)
    assert len(rows) == 3
    for r in rows:
        assert r["error"] is None
        assert set(r["variation"]) == set(r["plain_diff"]) == set(r["textbook_vm"])
        assert len(r["variation"]) == 100
    # every pair has defects: the variation judge's best cell clears its DeepPCB threshold
    assert all(max(r["variation"].values()) > 18.0 for r in rows)
