"""Replay / evaluation reports that explain: what was decided, why, and on which images.

``report.json`` is for machines (CI, dashboards); ``report.md`` and the self-contained
``report.html`` (every image inlined as a ``data:`` URI) are for the quality engineer who has to
decide whether a recipe is fit for the line.  What a report holds:

- counts per verdict and reason, for any data; the cells flagged most often;
- confusion counts (part and cell) ONLY where ground truth exists (a manifest, DeepPCB, the
  synthetic line).  A recording's verdicts are what the station said, not the truth: a replay of
  a recording reports the agreement with them instead;
- a panel (frame, metric image, overlay; for misses and false rejects the truth too) for every
  defect, miss and false reject, with each flagged cell's score and threshold: the worst
  ``keep_worst`` of each kind as downscaled JPEGs, with the count of the rest;
- the parts that could not be judged, named with their reason;
- the recipe hash, and a warning when a recording was made under another recipe;
- score distributions against the thresholds as plots (:mod:`station.report_plots`).
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

from pipeline.base.atomic import write_bytes_atomic
from pipeline.base.stats import percentiles
from pipeline.boxscore import cells_overlapping_box, score_flags_against_boxes
from pipeline.grid import AddressGrid
from pipeline.overlay import draw_overlay
from pipeline.verdicts import Verdict
from station.replay_runner import PartOutcome

# the Inspector's shared stages; each judge's time (timings_ms[<judge name>]) is added after them
STAGES = ("align", "nsoartc", "cells", "overlay")
RATIO_BINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, float("inf"))
PANEL_KINDS = {  # kind → section title
    "miss": "Misses (defective parts passed)",
    "false_reject": "False rejects (good parts rejected)",
    "defect": "Defects",
}
THUMB_SIDE = 256  # longest side of a panel image, px (about 15-20 kB each as JPEG)
JPEG_QUALITY = 68
MAX_UNJUDGED = 500  # named parts that could not be judged (the count is always complete)
MAX_CELLS_PER_PANEL = 12


def _confusion() -> dict[str, int]:
    return {"tp": 0, "fp": 0, "tn": 0, "fn": 0}


@dataclass(order=True)
class Panel:
    """One explained part: thumbnails (JPEG bytes) and the cells that decided it."""

    key: float
    n: int
    kind: str = field(compare=False)
    part_id: str = field(compare=False)
    verdict: str = field(compare=False)
    frame: str = field(compare=False)
    note: str = field(compare=False)
    cells: list[dict[str, Any]] = field(compare=False, default_factory=list)
    images: dict[str, bytes] = field(compare=False, default_factory=dict, repr=False)


@dataclass
class _Kept:
    """The worst ``limit`` panels of one kind (a min-heap on ``key``) and how many there were."""

    limit: int
    heap: list[Panel] = field(default_factory=list)
    total: int = 0

    def wants(self, key: float) -> bool:
        return len(self.heap) < self.limit or key > self.heap[0].key

    def push(self, panel: Panel) -> None:
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, panel)
        else:
            heapq.heappushpop(self.heap, panel)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """``image`` downscaled to ``side`` px on its longest side, as JPEG bytes."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class ReportBuilder:
    """Accumulates replay outcomes; ``summary()`` and ``write(dir)`` produce the report."""

    def __init__(self, grid: AddressGrid, thresholds: dict[str, float], *,
                 keep_worst: int = 50, recipe_hash: str | None = None,
                 recipe_name: str | None = None):
        self.grid = grid
        self.thresholds = thresholds
        self.keep_worst = keep_worst
        self.recipe_hash = recipe_hash
        self.recipe_name = recipe_name
        self.parts = 0
        self.verdicts: dict[str, int] = {}
        self.reasons: dict[str, dict[str, int]] = {}
        self.defect_cells: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.unjudged: list[dict[str, Any]] = []
        self.part_confusion = _confusion()
        self.cell_confusion = _confusion()
        self.cell_labelled = False
        self.latency: dict[str, list[float]] = {s: [] for s in STAGES}
        self.total_ms: list[float] = []
        self.ratios: dict[str, list[float]] = {}
        self.cell_scores: dict[str, list[float]] = {c: [] for c in grid.cells}
        self.cell_thresholds: dict[str, list[float]] = {c: [] for c in grid.cells}
        self.address_checked = 0
        self.address_correct = 0
        self.box = {"flagged": 0, "tp_cells": 0, "boxes": 0, "boxes_hit": 0}
        self.has_boxes = False
        self.recorded = {"compared": 0, "agree": 0, "changed": {}, "recipes": {}}
        self.recipes_seen: dict[str, int] = {}
        # per judge (in the order first seen): verdict counts, times and numeric details
        self.judges: dict[str, dict[str, Any]] = {}
        self.kept = {kind: _Kept(keep_worst) for kind in PANEL_KINDS}
        self._n = 0

    # --- accumulation -------------------------------------------------------------------------
    def add(self, o: PartOutcome) -> None:
        """Add one replayed part."""
        r = o.result
        self.parts += 1
        self._n += 1
        verdict = r.verdict.value
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
        reason = self._reason(o)
        by = self.reasons.setdefault(verdict, {})
        by[reason] = by.get(reason, 0) + 1
        if r.recipe:
            self.recipes_seen[r.recipe] = self.recipes_seen.get(r.recipe, 0) + 1
        for stage in STAGES:
            if stage in r.timings_ms:
                self.latency[stage].append(r.timings_ms[stage])
        for name, result in r.judges.items():
            self._add_judge(name, result.verdict, r.timings_ms.get(name), result.details)
        if "total" in r.timings_ms:
            self.total_ms.append(r.timings_ms["total"])
        self._add_recorded(o)
        if r.verdict is Verdict.ERROR:
            self.errors[reason] = self.errors.get(reason, 0) + 1
            if len(self.unjudged) < MAX_UNJUDGED:
                self.unjudged.append({"part_id": r.part_id, "frame": _frame_name(o),
                                      "reason": r.reason or "error"})
        for a in r.addresses:
            self.defect_cells[a] = self.defect_cells.get(a, 0) + 1
        outcome = o.outcome
        if outcome:
            self.part_confusion[outcome] += 1
        if r.verdict is Verdict.ERROR or not r.cell_scores:
            if "boxes" in o.frame.meta:  # an unjudged board finds none of its defects
                self._add_boxes(o, set())
            return
        thresholds = o.thresholds if o.thresholds is not None else self.thresholds
        ratio = max(v / max(thresholds.get(c, 1.0), 1e-9) for c, v in r.cell_scores.items())
        group = o.truth_label or f"verdict {verdict}"
        self.ratios.setdefault(group, []).append(ratio)
        for c, v in r.cell_scores.items():
            if c in self.cell_scores and math.isfinite(v):
                self.cell_scores[c].append(float(v))
                self.cell_thresholds[c].append(float(thresholds.get(c, math.nan)))
        flagged = set(r.addresses)
        if o.truth_label is not None and "boxes" not in o.frame.meta:
            self.cell_labelled = True
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
            self._panel("miss", -ratio, o, thresholds, f"worst cell score/threshold {ratio:.2f}")
        elif outcome == "fp":
            self._panel("false_reject", ratio, o, thresholds,
                        f"flagged {'; '.join(sorted(flagged))}")
        elif r.verdict is Verdict.DEFECT:
            self._panel("defect", ratio, o, thresholds,
                        f"flagged {'; '.join(r.addresses) or '(no cell)'}")

    @staticmethod
    def _reason(o: PartOutcome) -> str:
        r = o.result
        if r.verdict is Verdict.ERROR:
            return (r.reason or "error").split(":")[0]
        if r.verdict is Verdict.DEFECT:
            said = [n for n, j in r.judges.items() if j.verdict is not Verdict.PASS]
            return r.reason.split(":")[0] if r.reason else "flagged by " + "+".join(said or ["?"])
        return "all judges pass"

    def _add_recorded(self, o: PartOutcome) -> None:
        rec = o.recorded
        if rec is None:
            return
        if rec.get("recipe"):
            recipes = self.recorded["recipes"]
            recipes[rec["recipe"]] = recipes.get(rec["recipe"], 0) + 1
        before, now = rec.get("verdict"), o.result.verdict.value
        if before not in ("pass", "defect", "error"):
            return
        self.recorded["compared"] += 1
        if before == now:
            self.recorded["agree"] += 1
        else:
            changed = self.recorded["changed"]
            key = f"{before}->{now}"
            changed[key] = changed.get(key, 0) + 1

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
        self.cell_labelled = True
        boxes = o.frame.meta["boxes"]
        s = score_flags_against_boxes(flagged, self.grid, boxes)
        for k in self.box:
            self.box[k] += int(s[k])
        truth = {c for b in boxes for c in cells_overlapping_box(self.grid, b)}
        for cell in self.grid.cells:
            pos, neg = cell in flagged, cell in truth
            self.cell_confusion[("t" if pos == neg else "f") + ("p" if pos else "n")] += 1

    def _panel(self, kind: str, key: float, o: PartOutcome, thresholds: Any, note: str) -> None:
        kept = self.kept[kind]
        kept.total += 1
        if not kept.wants(key):
            return
        r = o.result
        images: dict[str, bytes] = {}
        for name in ("frame", "metric", "overlay"):
            img = r.images.get(name)
            if img is not None:
                images[name] = thumbnail(img)
        aligned = r.images.get("aligned")
        truth = o.truth_addresses
        if kind != "defect" and aligned is not None and o.truth_label is not None:
            images["truth"] = thumbnail(draw_overlay(aligned, self.grid, marked=truth))
        judged_by: dict[str, list[str]] = {}
        for d in r.defects:
            judged_by.setdefault(d.address, []).append(d.judge)
        cells = []
        for a in dict.fromkeys([*r.addresses, *truth]):
            score = r.cell_scores.get(a)
            thr = thresholds.get(a)
            cells.append({
                "address": a,
                "score": None if score is None else round(float(score), 3),
                "threshold": None if thr is None else round(float(thr), 3),
                "ratio": (round(float(score) / thr, 2) if score is not None and thr
                          and math.isfinite(score) else None),
                "flagged_by": judged_by.get(a, []),
                "truth": a in truth,
            })
        cells.sort(key=lambda c: -(c["ratio"] if c["ratio"] is not None else math.inf))
        kept.push(Panel(key, self._n, kind, r.part_id, r.verdict.value, _frame_name(o), note,
                        cells[:MAX_CELLS_PER_PANEL], images))

    # --- results --------------------------------------------------------------------------------
    def panels(self) -> dict[str, list[Panel]]:
        """The kept panels of each kind, worst first."""
        return {kind: sorted(k.heap, reverse=True) for kind, k in self.kept.items()}

    def summary(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        pc = self.part_confusion
        labelled = sum(pc.values())
        out: dict[str, Any] = {
            "parts": self.parts,
            "verdicts": dict(sorted(self.verdicts.items())),
            "reasons": {v: dict(sorted(r.items())) for v, r in sorted(self.reasons.items())},
            "labelled": labelled,
            "errors": sum(self.errors.values()),
            "error_reasons": dict(sorted(self.errors.items())),
            "unjudged": self.unjudged,
            "unjudged_not_listed": max(0, sum(self.errors.values()) - len(self.unjudged)),
            "defect_cells": dict(sorted(self.defect_cells.items(), key=lambda kv: -kv[1])),
            "recipe": {"hash": self.recipe_hash, "name": self.recipe_name,
                       "seen": dict(self.recipes_seen)},
            "warnings": self._warnings(),
        }
        if labelled:
            good = pc["tn"] + pc["fp"]
            out.update({
                "part_confusion": dict(pc),
                "misses": pc["fn"],
                "false_rejects": pc["fp"],
                "false_reject_rate": round(pc["fp"] / good, 4) if good else None,
                "address_accuracy": (round(self.address_correct / self.address_checked, 4)
                                     if self.address_checked else None),
            })
        if self.cell_labelled:
            out["cell_confusion"] = dict(self.cell_confusion)
        if self.recorded["compared"] or self.recorded["recipes"]:
            rec = self.recorded
            out["recorded"] = {
                "compared": rec["compared"], "agree": rec["agree"],
                "agreement": (round(rec["agree"] / rec["compared"], 4) if rec["compared"]
                              else None),
                "changed": dict(sorted(rec["changed"].items())),
                "recipes": dict(rec["recipes"]),
            }
        out.update({
            "latency_ms": {s: percentiles(v) for s, v in
                           [*self.latency.items(), ("total", self.total_ms)] if v},
            "judges": {
                name: {"parts": j["parts"], "verdicts": dict(sorted(j["verdicts"].items())),
                       "details": {k: _median(v) for k, v in j["details"].items()}}
                for name, j in self.judges.items()
            },
            "score_ratio": {k: _histogram(v) for k, v in self.ratios.items()},
            "panels": {kind: {"shown": len(k.heap), "total": k.total}
                       for kind, k in self.kept.items()},
        })
        if self.has_boxes:
            b = self.box
            precision = b["tp_cells"] / b["flagged"] if b["flagged"] else 0.0
            recall = b["boxes_hit"] / b["boxes"] if b["boxes"] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.update(cell_precision=round(precision, 4), box_recall=round(recall, 4),
                       f1=round(f1, 4), boxes=dict(b))
        return out

    def _warnings(self) -> list[str]:
        out = []
        other = {h: n for h, n in self.recorded["recipes"].items()
                 if self.recipe_hash and not _same_hash(h, self.recipe_hash)}
        if other:
            listed = ", ".join(f"{h} ({n} parts)" for h, n in other.items())
            out.append(f"recorded under another recipe: {listed}; replayed with "
                       f"{self.recipe_hash}: differences in verdicts may come from the recipe")
        if self.parts and not sum(self.part_confusion.values()) and not self.recorded["compared"]:
            out.append("no ground truth: counts only (no misses, false rejects or confusion)")
        return out

    def plots(self) -> dict[str, bytes]:
        """The score-distribution plots as PNG bytes (name → bytes)."""
        from station.report_plots import cell_score_plot, ratio_plot

        out = {}
        png = ratio_plot(self.ratios)
        if png:
            out["score_ratio"] = png
        png = cell_score_plot(self.cell_scores, self.cell_thresholds)
        if png:
            out["cell_scores"] = png
        return out

    def write(self, folder: str | Path, title: str = "Replay report") -> dict[str, Any]:
        """Write ``report.json``, ``report.md`` (+ its images under ``images/``) and the
        self-contained ``report.html`` into ``folder``; returns the summary."""
        from station.report_html import render_html

        folder = Path(folder)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        panels = self.panels()
        plots = self.plots()
        write_bytes_atomic(folder / "report.json", (json.dumps(summary, indent=2) + "\n").encode())
        md = _markdown(title, summary, panels, plots, folder / "images")
        write_bytes_atomic(folder / "report.md", md.encode())
        write_bytes_atomic(folder / "report.html",
                           render_html(title, summary, panels, plots).encode())
        return summary


def _same_hash(a: str, b: str) -> bool:
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def _frame_name(o: PartOutcome) -> str:
    return str(o.frame.meta.get("path") or f"{o.frame.source_id}#{o.frame.seq}")


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


def rate_text(rate: float | None) -> str:
    """The false-reject rate for people: ``rate 0.01``, or why there is none."""
    return "no good parts: no false-reject rate" if rate is None else f"rate {rate}"


def counts_lines(s: dict[str, Any]) -> list[str]:
    """The headline figures as Markdown list items (shared by the Markdown and HTML reports)."""
    verdicts = ", ".join(f"{k} {v}" for k, v in s["verdicts"].items()) or "none"
    lines = [f"parts: {s['parts']} ({verdicts})"]
    for verdict, reasons in s["reasons"].items():
        lines.append(f"{verdict} by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    if s["defect_cells"]:
        top = list(s["defect_cells"].items())[:10]
        lines.append("cells flagged most: " + ", ".join(f"{a} ({n})" for a, n in top))
    if "part_confusion" in s:
        pc = s["part_confusion"]
        lines += [
            f"labelled: {s['labelled']}; misses {s['misses']}, false rejects "
            f"{s['false_rejects']} ({rate_text(s['false_reject_rate'])})",
            f"part confusion (reject = positive): tp {pc['tp']} fp {pc['fp']} tn {pc['tn']} "
            f"fn {pc['fn']}",
        ]
        if s.get("address_accuracy") is not None:
            lines.append(f"address accuracy: {s['address_accuracy']}")
    if "cell_confusion" in s:
        cc = s["cell_confusion"]
        lines.append(f"cell confusion: tp {cc['tp']} fp {cc['fp']} tn {cc['tn']} fn {cc['fn']}")
    if "f1" in s:
        lines.append(f"cell precision {s['cell_precision']}, box recall {s['box_recall']}, "
                     f"F1 {s['f1']}")
    if "recorded" in s:
        r = s["recorded"]
        changed = ", ".join(f"{k} {v}" for k, v in r["changed"].items()) or "none"
        lines.append(f"agreement with the recorded verdicts (not ground truth): {r['agree']} of "
                     f"{r['compared']} ({r['agreement']}); changed: {changed}")
    rec = s["recipe"]
    lines.append(f"recipe: {rec['name'] or '?'} {rec['hash'] or '?'}")
    return lines


def _markdown(title: str, s: dict[str, Any], panels: dict[str, list[Panel]],
              plots: dict[str, bytes], images: Path) -> str:
    lines = [f"# {title}", ""]
    lines += [f"> **Warning:** {w}" for w in s["warnings"]]
    if s["warnings"]:
        lines.append("")
    lines += [f"- {x}" for x in counts_lines(s)]
    if s["errors"]:
        lines += ["", f"## Could not be judged ({s['errors']})", "", "| part | frame | reason |",
                  "|---|---|---|"]
        lines += [f"| {u['part_id']} | {u['frame']} | {u['reason']} |" for u in s["unjudged"]]
        if s["unjudged_not_listed"]:
            lines.append(f"\n… and {s['unjudged_not_listed']} more.")
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
    for name, png in plots.items():
        (images / f"{name}.png").write_bytes(png)
        lines += [f"![{name}](images/{name}.png)", ""]
    for label, h in s["score_ratio"].items():
        if not h.get("n"):
            continue
        lines += [f"**{label}** (n={h['n']}, min {h['min']}, median {h['median']}, "
                  f"max {h['max']})", "", "```"]
        peak = max(h["bins"].values()) or 1
        for rng, c in h["bins"].items():
            lines.append(f"{rng:>9} | {'#' * round(40 * c / peak):<40} {c}")
        lines += ["```", ""]
    for kind, title_ in PANEL_KINDS.items():
        shown = panels[kind]
        total = s["panels"][kind]["total"]
        if not total and kind == "defect":
            continue
        lines += [f"## {title_} ({total})", ""]
        if not shown:
            lines += ["None.", ""]
        for i, p in enumerate(shown):
            lines += [f"### {p.part_id} — {p.verdict}: {p.note}", "", f"`{p.frame}`", ""]
            pics = []
            for name, data in p.images.items():
                f = images / f"{kind}_{i:03d}_{name}.jpg"
                f.write_bytes(data)
                pics.append(f"![{name}](images/{f.name})")
            lines += [" ".join(pics), "", "| cell | score | threshold | score/threshold | "
                      "flagged by | truth |", "|---|---|---|---|---|---|"]
            for c in p.cells:
                lines.append(f"| {c['address']} | {c['score']} | {c['threshold']} | "
                             f"{c['ratio']} | {', '.join(c['flagged_by']) or '-'} | "
                             f"{'yes' if c['truth'] else ''} |")
            lines.append("")
        if total > len(shown):
            lines += [f"… and {total - len(shown)} more (the worst {len(shown)} are shown).", ""]
    return "\n".join(lines)
