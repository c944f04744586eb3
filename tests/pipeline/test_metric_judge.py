"""Metric judge and threshold fitting."""

from __future__ import annotations

import math

import pytest

from pipeline.judges.metric import MetricJudge, fit_thresholds
from pipeline.verdicts import Verdict


def test_fit_thresholds_max_times_margin_with_floor() -> None:
    good = [{"X:1, Y:U": 2.0, "X:2, Y:U": 5.0}, {"X:1, Y:U": 2.5, "X:2, Y:U": 4.0}]
    t = fit_thresholds(good, margin=1.2, floor=3.0)
    assert t["X:1, Y:U"] == 3.0  # 2.5 × 1.2 = 3.0 (floor equal)
    assert t["X:2, Y:U"] == pytest.approx(6.0)
    t2 = fit_thresholds(good, margin=1.0, floor=0.5)
    assert t2 == {"X:1, Y:U": 2.5, "X:2, Y:U": 5.0}


def test_fit_thresholds_quantile_and_pooled() -> None:
    good = [{"X:1, Y:U": float(i), "X:2, Y:U": 0.0} for i in range(101)]
    t = fit_thresholds(good, margin=1.0, floor=0.0, target_frr=0.05)
    assert t["X:1, Y:U"] == pytest.approx(95.0)
    pooled = fit_thresholds(good, margin=2.0, floor=1.0, per_cell=False)
    assert pooled == {"X:1, Y:U": 200.0, "X:2, Y:U": 200.0}


def test_fit_thresholds_errors() -> None:
    with pytest.raises(ValueError):
        fit_thresholds([])
    with pytest.raises(ValueError):
        fit_thresholds([{"X:1, Y:U": 1.0}, {"X:2, Y:U": 1.0}])
    with pytest.raises(ValueError):
        fit_thresholds([{"X:1, Y:U": math.nan}])
    with pytest.raises(ValueError):
        fit_thresholds([{"X:1, Y:U": 1.0}], target_frr=1.0)


def test_judge_pass_and_defects_sorted() -> None:
    j = MetricJudge({"X:1, Y:U": 3.0, "X:2, Y:C": 3.0, "X:3, Y:D": 4.0})
    ok = j.judge_scores({"X:1, Y:U": 1.0, "X:2, Y:C": 3.0, "X:3, Y:D": 2.0})
    assert ok.verdict is Verdict.PASS and ok.judge == "metric" and not ok.defects
    assert ok.details["max_score"] == 3.0
    bad = j.judge_scores({"X:1, Y:U": 5.0, "X:2, Y:C": 9.0, "X:3, Y:D": 4.0})
    assert bad.verdict is Verdict.DEFECT
    assert [d.address for d in bad.defects] == ["X:2, Y:C", "X:1, Y:U"]
    d0 = bad.defects[0]
    assert (d0.column, d0.row, d0.score, d0.judge) == ("2", "C", 9.0, "metric")
    assert bad.to_dict()["defects"][0]["address"] == "X:2, Y:C"


def test_judge_fail_safe_and_missing_threshold() -> None:
    j = MetricJudge({"X:1, Y:U": 3.0})
    assert j.judge_scores({"X:1, Y:U": math.nan}).verdict is Verdict.DEFECT
    with pytest.raises(ValueError, match="no threshold"):
        j.judge_scores({"X:9, Y:U": 1.0})
    assert MetricJudge({}, default=2.0).judge_scores({"X:9, Y:U": 2.5}).verdict is Verdict.DEFECT
    with pytest.raises(ValueError):
        MetricJudge({"X:1, Y:U": -1.0})
    with pytest.raises(ValueError):
        MetricJudge({"1U": 1.0})
