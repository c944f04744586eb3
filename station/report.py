"""Replay / evaluation reports: confusion counts, score distributions, latency, worst cases.

``report.json`` is for machines (CI, dashboards); ``report.md`` with the overlay images of the worst
misses and false rejects is for the quality engineer who has to decide whether a recipe is fit for
the line.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.base.stats import percentiles
from pipeline.boxscore import cells_overlapping_box, score_flags_against_boxes
from pipeline.grid import AddressGrid
from pipeline.overlay import draw_overlay
from pipeline.verdicts import Verdict
from station.replay_runner import PartOutcome

# the Inspector's shared stages; each judge's time (timings_ms[<judge name>]) is added after them
STAGES = ("align", "nsoartc", "cells", "overlay")
RATIO_BINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, float("inf"))


def _confusion() -> dict[str, int]:
    return {"tp": 0, "fp": 0, "tn": 0, "fn": 0}


@dataclass(order=True)
class _Case:
    key: float
    n: int
    part_id: str = field(compare=False)
    image: np.ndarray = field(compare=False, repr=False)
    note: str = field(compare=False)


class ReportBuilder:
    """Accumulates replay outcomes; ``summary()`` and ``write(dir)`` produce the report."""

    def __init__(self, grid: AddressGrid, thresholds: dict[str, float], *, keep_worst: int = 6):
        self.grid = grid
        self.thresholds = thresholds
        self.keep_worst = keep_worst
        self.parts = 0
        self.errors: dict[str, int] = {}
        self.part_confusion = _confusion()
        self.cell_confusion = _confusion()
        self.latency: dict[str, list[float]] = {s: [] for s in STAGES}
        self.total_ms: list[float] = []
        self.ratios: dict[str, list[float]] = {"pass": [], "defect": []}
        self.address_checked = 0
        self.address_correct = 0
        self.box = {"flagged": 0, "tp_cells": 0, "boxes": 0, "boxes_hit": 0}
        self.has_boxes = False
        # per judge (in the order first seen): verdict counts, times and numeric details
        self.judges: dict[str, dict[str, Any]] = {}
        self._misses: list[_Case] = []
        self._false_rejects: list[_Case] = []
        self._n = 0

    # --- accumulation -------------------------------------------------------------------------
    def add(self, o: PartOutcome) -> None:
        """Add one replayed part."""
        r = o.result
        self.parts += 1
        self._n += 1
        for stage in STAGES:
            if stage in r.timings_ms:
                self.latency[stage].append(r.timings_ms[stage])
        for name, result in r.judges.items():
            self._add_judge(name, result.verdict, r.timings_ms.get(name), result.details)
        if "total" in r.timings_ms:
            self.total_ms.append(r.timings_ms["total"])
        if r.verdict is Verdict.ERROR:
            key = (r.reason or "error").split(":")[0]
            self.errors[key] = self.errors.get(key, 0) + 1
        outcome = o.outcome
        if outcome:
            self.part_confusion[outcome] += 1
        if r.verdict is Verdict.ERROR or not r.cell_scores:
            if "boxes" in o.frame.meta:  # an unjudged board finds none of its defects
                self._add_boxes(o, set())
            return
        ratio = max(v / max(self.thresholds.get(c, 1.0), 1e-9) for c, v in r.cell_scores.items())
        if o.truth_label:
            self.ratios[o.truth_label].append(ratio)
        flagged = set(r.addresses)
        if o.truth_label is not None and "boxes" not in o.frame.meta:
            truth = set(o.truth_addresses)
            for cell in self.grid.cells:
                pos, neg = cell in flagged, cell in truth
                self.cell_confusion[("t" if pos == neg else "f") + ("p" if pos else "n")] += 1
            if o.truth_label == "defect" and r.verdict is Verdict.DEFECT and truth:
                self.address_checked += 1
                self.address_correct += flagged == truth
        if "boxes" in o.frame.meta:
            self._add_boxes(o, flagged)
        if outcome == "fn":
            self._keep(self._misses, -ratio, o, f"max score/threshold {ratio:.2f}")
        elif outcome == "fp":
            self._keep(self._false_rejects, ratio, o, f"flagged {', '.join(sorted(flagged))}")

    def _add_judge(self, name: str, verdict: Verdict, ms: float | None,
                   details: dict[str, Any]) -> None:
        j = self.judges.setdefault(name, {"parts": 0, "verdicts": {}, "details": {}})
        j["parts"] += 1
        j["verdicts"][verdict.value] = j["verdicts"].get(verdict.value, 0) + 1
        if ms is not None:
            self.latency.setdefault(name, []).append(ms)
        for key, value in details.items():  # the judge's own scalar figures (p_defect, ms, …)
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                j["details"].setdefault(key, []).append(float(value))

    def _add_boxes(self, o: PartOutcome, flagged: set[str]) -> None:
        self.has_boxes = True
        boxes = o.frame.meta["boxes"]
        s = score_flags_against_boxes(flagged, self.grid, boxes)
        for k in self.box:
            self.box[k] += int(s[k])
        truth = {c for b in boxes for c in cells_overlapping_box(self.grid, b)}
        for cell in self.grid.cells:
            pos, neg = cell in flagged, cell in truth
            self.cell_confusion[("t" if pos == neg else "f") + ("p" if pos else "n")] += 1

    def _keep(self, heap: list[_Case], key: float, o: PartOutcome, note: str) -> None:
        overlay = o.result.images.get("overlay")
        aligned = o.result.images.get("aligned")
        if overlay is None or aligned is None:
            return
        truth = draw_overlay(aligned, self.grid, marked=o.truth_addresses)
        if truth.shape[0] != overlay.shape[0]:
            return
        pair = np.hstack([overlay, np.zeros((overlay.shape[0], 8, 3), np.uint8), truth])
        case = _Case(key, self._n, o.result.part_id, pair, note)
        if len(heap) < self.keep_worst:
            heapq.heappush(heap, case)
        else:
            heapq.heappushpop(heap, case)

    # --- results --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        pc = self.part_confusion
        good = pc["tn"] + pc["fp"]
        out: dict[str, Any] = {
            "parts": self.parts,
            "labelled": sum(pc.values()),
            "errors": sum(self.errors.values()),
            "error_reasons": dict(sorted(self.errors.items())),
            "part_confusion": dict(pc),
            "cell_confusion": dict(self.cell_confusion),
            "misses": pc["fn"],
            "false_rejects": pc["fp"],
            "false_reject_rate": round(pc["fp"] / good, 4) if good else None,
            "address_accuracy": (
                round(self.address_correct / self.address_checked, 4)
                if self.address_checked else None
            ),
            "latency_ms": {s: percentiles(v) for s, v in
                           [*self.latency.items(), ("total", self.total_ms)] if v},
            "judges": {
                name: {"parts": j["parts"], "verdicts": dict(sorted(j["verdicts"].items())),
                       "details": {k: _median(v) for k, v in j["details"].items()}}
                for name, j in self.judges.items()
            },
            "score_ratio": {k: _histogram(v) for k, v in self.ratios.items()},
        }
        if self.has_boxes:
            b = self.box
            precision = b["tp_cells"] / b["flagged"] if b["flagged"] else 0.0
            recall = b["boxes_hit"] / b["boxes"] if b["boxes"] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.update(cell_precision=round(precision, 4), box_recall=round(recall, 4),
                       f1=round(f1, 4), boxes=dict(b))
        return out

    def write(self, folder: str | Path, title: str = "Replay report") -> dict[str, Any]:
        """Write ``report.json``, ``report.md`` and the worst-case images into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        (folder / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        lines = [f"# {title}", "", *_md_summary(summary), ""]
        for name, heap, what in (
            ("misses", self._misses, "Worst misses (defective parts passed)"),
            ("false_rejects", self._false_rejects, "Worst false rejects (good parts rejected)"),
        ):
            cases = sorted(heap, reverse=True)
            lines += [f"## {what}", ""]
            if not cases:
                lines += ["None.", ""]
            for i, case in enumerate(cases):
                img = folder / f"{name}_{i:02d}.png"
                cv2.imwrite(str(img), case.image)
                lines += [f"**{case.part_id}** — {case.note} (left: flagged cells; right: truth)",
                          "", f"![{case.part_id}]({img.name})", ""]
        (folder / "report.md").write_text("\n".join(lines))
        return summary


def _median(values: list[float]) -> dict[str, float]:
    """Median (and n) of one judge's numeric detail over the parts that gave it."""
    return {"n": len(values), "median": round(float(np.median(values)), 4)}


def _histogram(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    counts, _ = np.histogram(values, bins=RATIO_BINS)
    labels = [f"{a:g}-{b:g}" for a, b in itertools.pairwise(RATIO_BINS)]
    return {
        "n": len(values),
        "min": round(float(min(values)), 3),
        "median": round(float(np.median(values)), 3),
        "max": round(float(max(values)), 3),
        "bins": dict(zip(labels, (int(c) for c in counts), strict=True)),
    }


def _md_summary(s: dict[str, Any]) -> list[str]:
    pc, cc = s["part_confusion"], s["cell_confusion"]
    lines = [
        f"- parts: {s['parts']} (labelled {s['labelled']}, errors {s['errors']})",
        f"- misses: {s['misses']}, false rejects: {s['false_rejects']} "
        f"(rate {s['false_reject_rate']})",
        f"- address accuracy: {s['address_accuracy']}",
        f"- part confusion (reject = positive): tp {pc['tp']} fp {pc['fp']} tn {pc['tn']} "
        f"fn {pc['fn']}",
        f"- cell confusion: tp {cc['tp']} fp {cc['fp']} tn {cc['tn']} fn {cc['fn']}",
    ]
    if "f1" in s:
        lines.append(f"- cell precision {s['cell_precision']}, box recall {s['box_recall']}, "
                     f"F1 {s['f1']}")
    if s["error_reasons"]:
        lines.append("- error reasons: " + ", ".join(f"{k} {v}" for k, v in
                                                     s["error_reasons"].items()))
    if s["judges"]:
        lines += ["", "## Judges", "", "| judge | parts | verdicts |", "|---|---|---|"]
        for name, j in s["judges"].items():
            verdicts = ", ".join(f"{k} {v}" for k, v in j["verdicts"].items())
            lines.append(f"| {name} | {j['parts']} | {verdicts} |")
    lines += ["", "## Latency (ms)", "", "| stage | p50 | p95 | p99 |", "|---|---|---|---|"]
    for stage, p in s["latency_ms"].items():
        lines.append(f"| {stage} | {p['p50']} | {p['p95']} | {p['p99']} |")
    lines += ["", "## Score distribution", "",
              "Largest cell score / its threshold per part (> 1 means flagged).", ""]
    for label, h in s["score_ratio"].items():
        if not h.get("n"):
            continue
        lines.append(f"**{label} parts** (n={h['n']}, min {h['min']}, median {h['median']}, "
                     f"max {h['max']})")
        lines.append("")
        peak = max(h["bins"].values()) or 1
        lines.append("```")
        for rng, c in h["bins"].items():
            lines.append(f"{rng:>9} | {'#' * round(40 * c / peak):<40} {c}")
        lines.append("```")
        lines.append("")
    return lines
