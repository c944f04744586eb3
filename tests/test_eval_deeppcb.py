"""``station eval --layout deeppcb`` on the real DeepPCB development subset (DESIGN §9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DEEPPCB


def test_deeppcb_subset_meets_the_line_numbers(tmp_path: Path) -> None:
    """Acceptance (issue #2): F1 ≥ 0.90 with box recall ≥ 0.95 over all 299 pairs.

    An error (a blank template, a pair that does not align) counts its boxes as missed.
    """
    p = subprocess.run([sys.executable, "-m", "station.cli", "eval", str(DEEPPCB),
                        "--layout", "deeppcb", "--report", str(tmp_path / "rep")],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report == summary
    assert summary["parts"] == 299
    assert summary["errors"] <= 5, summary["error_reasons"]
    assert summary["box_recall"] >= 0.95, summary
    assert summary["f1"] >= 0.90, summary
    b = summary["boxes"]
    assert b["boxes"] == 2052  # every box of the index is scored, judged or not
    assert abs(summary["cell_precision"] - b["tp_cells"] / b["flagged"]) < 1e-3
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Evaluation of")
