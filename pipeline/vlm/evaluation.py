"""How good is the VLM judge on labelled parts: its own confusion, agreement, scores, threshold.

:class:`VlmEvaluation` collects, part by part, the label (``pass`` / ``defect``, and the defect's
cells where known) and the judges' results, and reports for the ``vlm`` judge alone:

* its confusion against the labels (an ``error`` or ``uncertain`` VLM verdict is counted apart and,
  being never a pass, as a rejection);
* its agreement with the metric judge (same pass/defect call);
* the distribution of ``p_defect`` (scored mode) for labelled-pass and labelled-defect parts;
* address accuracy: of the labelled defects it called defective with one address, the share whose
  address is one of the labelled cells;
* the best threshold on ``p_defect``: the one that maximises balanced accuracy on these parts
  (with the balanced accuracy at the recipe's current threshold beside it).  A threshold chosen on
  the same parts it is scored on flatters itself: check it on parts it was not chosen on.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _quantiles(xs: Sequence[float]) -> dict[str, float] | None:
    if not xs:
        return None
    s = sorted(xs)
    out = {}
    for q in QUANTILES:
        k = (len(s) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(s) - 1)
        out[f"p{round(q * 100)}"] = round(s[lo] + (s[hi] - s[lo]) * (k - lo), 4)
    return out


def _verdict(result: Any) -> str:
    v = getattr(result, "verdict", None)
    return str(getattr(v, "value", v))


class VlmEvaluation:
    """Per-part collector and report (see the module docstring)."""

    def __init__(self, threshold: float | None = None) -> None:
        """``threshold``: the recipe's ``vlm.threshold`` (reported beside the best one)."""
        self.threshold = threshold
        self.rows: list[dict[str, Any]] = []

    def add(self, *, truth: str | None, truth_addresses: Sequence[str],
            judges: Mapping[str, Any]) -> None:
        """One part: its label (None: unlabelled, skipped) and the judges' results by name."""
        vlm = judges.get("vlm")
        if truth not in ("pass", "defect") or vlm is None:
            return
        metric = judges.get("metric")
        d = getattr(vlm, "details", {}) or {}
        self.rows.append({
            "truth": truth,
            "cells": set(truth_addresses),
            "vlm": _verdict(vlm),
            "metric": _verdict(metric) if metric is not None else None,
            "p": d.get("p_defect"),
            "address": d.get("address"),
        })

    def report(self) -> dict[str, Any]:
        """The figures (JSON-ready)."""
        rows = self.rows
        confusion = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
        unjudged = {"error": 0, "uncertain": 0}
        for r in rows:
            if r["vlm"] in unjudged:
                unjudged[r["vlm"]] += 1
            said_defect = r["vlm"] != "pass"  # error / uncertain are never a pass
            key = ("tp" if said_defect else "fn") if r["truth"] == "defect" else (
                "fp" if said_defect else "tn")
            confusion[key] += 1
        both = [r for r in rows if r["metric"] in ("pass", "defect") and r["vlm"] in ("pass",
                                                                                     "defect")]
        agree = sum(r["metric"] == r["vlm"] for r in both)
        scored = [r for r in rows if r["p"] is not None]
        addr = [r for r in rows if r["truth"] == "defect" and r["vlm"] == "defect" and r["cells"]
                and r["address"]]
        out: dict[str, Any] = {
            "parts": len(rows),
            "confusion": confusion,
            "unjudged": unjudged,
            "recall": _ratio(confusion["tp"], confusion["tp"] + confusion["fn"]),
            "false_reject_rate": _ratio(confusion["fp"], confusion["fp"] + confusion["tn"]),
            "agreement_with_metric": {"parts": len(both), "agree": agree,
                                      "rate": _ratio(agree, len(both))},
            "p_defect": {
                "pass": _quantiles([r["p"] for r in scored if r["truth"] == "pass"]),
                "defect": _quantiles([r["p"] for r in scored if r["truth"] == "defect"]),
            },
            "address_accuracy": {"parts": len(addr),
                                 "correct": sum(r["address"] in r["cells"] for r in addr),
                                 "rate": _ratio(sum(r["address"] in r["cells"] for r in addr),
                                                len(addr))},
        }
        out["threshold"] = best_threshold([(r["p"], r["truth"] == "defect") for r in scored],
                                          self.threshold)
        return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def balanced_accuracy(pairs: Sequence[tuple[float, bool]], threshold: float) -> float | None:
    """Mean of recall and specificity when ``p >= threshold`` is a defect (None: one class only)."""
    pos = [p for p, d in pairs if d]
    neg = [p for p, d in pairs if not d]
    if not pos or not neg:
        return None
    tpr = sum(p >= threshold for p in pos) / len(pos)
    tnr = sum(p < threshold for p in neg) / len(neg)
    return (tpr + tnr) / 2


def best_threshold(pairs: Sequence[tuple[float, bool]],
                   current: float | None = None) -> dict[str, Any] | None:
    """The ``p_defect`` threshold with the highest balanced accuracy on ``pairs`` (midpoints
    between sorted scores; ties: the one nearest 0.5), and the figure at ``current``."""
    if not pairs:
        return None
    xs = sorted({p for p, _ in pairs})
    cands = [xs[0] / 2] + [(a + b) / 2 for a, b in itertools.pairwise(xs)] + [
        (xs[-1] + 1) / 2]
    scored = [(balanced_accuracy(pairs, t), t) for t in cands]
    scored = [(b, t) for b, t in scored if b is not None]
    if not scored:
        return {"best": None, "note": "labels of one class only"}
    best_b = max(b for b, _ in scored)
    t = min((t for b, t in scored if b == best_b), key=lambda t: abs(t - 0.5))
    out: dict[str, Any] = {"best": round(t, 6), "balanced_accuracy": round(best_b, 4)}
    if current is not None:
        cur = balanced_accuracy(pairs, current)
        out.update(current=current,
                   balanced_accuracy_at_current=None if cur is None else round(cur, 4))
    return out


__all__ = ["VlmEvaluation", "balanced_accuracy", "best_threshold"]
