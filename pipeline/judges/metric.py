"""The ``metric`` judge (DESIGN §5.1) and per-cell thresholds from good frames' cell scores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.grid import parse_address
from pipeline.judges.base import JudgeContext, register_judge
from pipeline.verdicts import Defect, JudgeResult, Verdict

if TYPE_CHECKING:
    from pipeline.recipe import Recipe


def fit_thresholds(
    good_scores: Sequence[Mapping[str, float]],
    *,
    margin: float = 1.25,
    floor: float = 3.0,
    target_frr: float | None = None,
    per_cell: bool = True,
) -> dict[str, float]:
    """Per-cell thresholds from the cell scores of good frames.

    ``base`` per cell is the largest good score (``target_frr=None``) or the ``1 − target_frr``
    quantile of the good scores (a target false-reject rate per cell); the threshold is
    ``max(base × margin, floor)``.  With ``per_cell=False`` one threshold (from all cells' scores
    pooled) is given to every cell — steadier when there are few good frames.
    """
    if not good_scores:
        raise ValueError("fit_thresholds needs the cell scores of at least one good frame")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if target_frr is not None and not 0.0 <= target_frr < 1.0:
        raise ValueError(f"target_frr must be in [0, 1), got {target_frr}")
    cells = list(good_scores[0])
    for i, sc in enumerate(good_scores):
        if set(sc) != set(cells):
            raise ValueError(f"good frame {i} scores other cells than frame 0")
    arr = np.array([[float(sc[a]) for a in cells] for sc in good_scores], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("good-frame cell scores contain NaN or infinity")

    def base(v: np.ndarray) -> float:
        if target_frr is None or target_frr == 0.0:
            return float(v.max())
        return float(np.quantile(v, 1.0 - target_frr))

    if per_cell:
        bases = [base(arr[:, i]) for i in range(len(cells))]
    else:
        bases = [base(arr.ravel())] * len(cells)
    return {a: max(b * margin, floor) for a, b in zip(cells, bases, strict=True)}


class MetricJudge:
    """Defect cells = cells whose score exceeds their threshold; ``defect`` if any, else ``pass``.

    Fail-safe: a non-finite score counts as a defect.  A scored cell without a threshold uses
    ``default`` (``ValueError`` at judging time when there is none: a recipe mismatch).
    ``judge(ctx)`` compares with the thresholds of the recipe the part is judged against
    (``ctx.thresholds``), so one MetricJudge serves every golden of an evaluation;
    ``judge_scores`` uses the thresholds given here unless told otherwise.
    """

    name = "metric"

    def __init__(self, thresholds: Mapping[str, float], *, default: float | None = None) -> None:
        """``thresholds``: address → threshold on the cell score (D units)."""
        self.thresholds: dict[str, float] = {}
        for a, t in thresholds.items():
            parse_address(a)
            t = float(t)
            if not math.isfinite(t) or t <= 0:
                raise ValueError(f"threshold for {a!r} must be a positive number, got {t}")
            self.thresholds[a] = t
        self.default = default

    def judge(self, ctx: JudgeContext) -> JudgeResult:
        """Verdict for the part of ``ctx`` from its cell scores; ``details`` adds the alignment
        score."""
        result = self.judge_scores(ctx.cell_scores, ctx.thresholds)
        result.details["align_score"] = round(float(ctx.align_score), 4)
        return result

    def judge_scores(self, cell_scores: Mapping[str, float],
                     thresholds: Mapping[str, float] | None = None) -> JudgeResult:
        """Verdict for one part from its cell scores (``judge="metric"``) against ``thresholds``
        (default: this judge's)."""
        thresholds = self.thresholds if thresholds is None else thresholds
        defects: list[Defect] = []
        for a, s in cell_scores.items():
            thr = thresholds.get(a, self.default)
            if thr is None:
                raise ValueError(f"no threshold for cell {a!r} (recipe and grid disagree)")
            s = float(s)
            if not math.isfinite(s) or s > thr:
                col, row = parse_address(a)
                defects.append(Defect(address=a, column=col, row=row, score=s, judge="metric"))
        defects.sort(
            key=lambda d: -(d.score if d.score is not None and math.isfinite(d.score) else math.inf)
        )
        finite = [float(s) for s in cell_scores.values() if math.isfinite(float(s))]
        details = {
            "max_score": max(finite) if finite else None,
            # 4 decimals: D is a distance in units of the unit space's spread; more digits only
            # bloat every event
            "cells": {a: round(float(s), 4) for a, s in cell_scores.items()},
        }
        verdict = Verdict.DEFECT if defects else Verdict.PASS
        return JudgeResult(judge="metric", verdict=verdict, defects=defects, details=details)


@register_judge("metric")
def metric_judge(recipe: Recipe, **_deps: Any) -> MetricJudge:
    """The metric judge with the recipe's per-cell thresholds."""
    return MetricJudge(recipe.settings.thresholds)
