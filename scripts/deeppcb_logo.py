"""Leave-one-group-out (LOGO) evaluation of the station's judges on DeepPCB-layout data.

Honest figures: the settings that decide (which judge or policy, and its threshold) are chosen on
six board groups and the seventh is scored with them; every group is held out once and the held-out
counts are summed.  The in-sample figures (chosen on all seven) are printed for comparison only.

One pass runs every pair through the station exactly as ``station eval`` does (the DeepPCB recipe
settings, a recipe per golden, the real Inspector with the judges ``metric`` and ``variation``);
it keeps each judge's cell scores (and the metric recipe's per-cell thresholds).  The candidates
are then scored from those numbers without running the pipeline again:

* ``metric``: a cell is flagged when its score exceeds ``f`` × its recipe threshold;
* ``variation``: a cell is flagged when its score exceeds ``k``;
* ``any``: flagged by either (``f`` and ``k`` chosen together).

Selection on the six groups: the candidate with the highest F1 among those with box recall ≥
``--min-recall`` (0.97; the highest F1 overall if none reaches it).  Scoring as
``pipeline.boxscore``: cell precision, box recall, F1; recall per defect class.

``--stress thick|thin`` replays every test image thickened or thinned by one pixel (a 3×3 cross)
and bent by a smooth non-affine deformation (±2 px along x, ±1.5 px along y, one sine period
across the image): the nuisances of unseen boards (etched thicker, stretched unevenly) that the
development subset barely has.  Selection happens on stressed data too.

    .venv/bin/python scripts/deeppcb_logo.py --settings station/defaults/deeppcb-metric.yaml
                                                    # metric, variation, any: LOGO + in-sample
    .venv/bin/python scripts/deeppcb_logo.py --judges variation --stress thick
                                                    # the variation judge on thickened, bent boards
    .venv/bin/python scripts/deeppcb_logo.py --cache /tmp/s.json   # keep/reuse the scored pass
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camera.deeppcb import DEEPPCB_CLASSES, DeepPcbSource  # noqa: E402
from pipeline.boxscore import cells_overlapping_box  # noqa: E402
from pipeline.inspector import Inspector  # noqa: E402
from pipeline.recipe import build_recipe, read_image  # noqa: E402
from pipeline.variation import VariationModel, VariationSettings  # noqa: E402
from pipeline.verdicts import Verdict  # noqa: E402
from station.golden_switch import GoldenProblem, GoldenSwitch  # noqa: E402
from station.progress import progress_bar  # noqa: E402
from station.recipe_tools import DEFAULTS_DIR, load_settings_file  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "deeppcb"
JUDGES = ("metric", "variation")
# The two textbook methods the issue compares with, on the station's aligner and cell scoring:
# |X − G| > k·10 with a 3×3 opening, and the plain variation model (golden and ±0.5 px shifts,
# 3×3 opening, no edge moves, no local re-alignment); k chosen like the judges' thresholds.
BASELINES = {
    "plain_diff": VariationSettings(shift=0.0, width=0, opening=3, local=False),
    "textbook_vm": VariationSettings(shift=0.5, width=0, opening=3, local=False),
}
THRESHOLDED = ("variation", *BASELINES)  # flagged when the score exceeds k
K_GRID = np.round(np.arange(2.0, 25.01, 0.5), 2)  # variation: deviation in units of the spread
F_GRID = np.round(np.arange(0.4, 3.001, 0.05), 2)  # metric: factor on the recipe thresholds
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def stress_image(image: np.ndarray, kind: str) -> np.ndarray:
    """A test image thickened (``thick``: dark copper grows, i.e. the image eroded) or thinned
    (``thin``) by one pixel and bent by a smooth non-affine field (module docstring)."""
    if kind == "none":
        return image
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = cv2.erode(grey, _CROSS) if kind == "thick" else cv2.dilate(grey, _CROSS)
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = xx + 2.0 * np.sin(2 * np.pi * yy / h)
    my = yy + 1.5 * np.sin(2 * np.pi * xx / w)
    return cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def score_pass(data: Path, settings_path: str | None, stress: str, limit: int | None,
               judges: tuple[str, ...] = JUDGES, baselines: bool = False
               ) -> list[dict[str, Any]]:
    """Every pair through the station (the ``judges``): cell scores per judge; with
    ``baselines`` also the textbook methods' cell scores on the same alignment."""
    settings = load_settings_file(settings_path or DEFAULTS_DIR / "deeppcb.yaml")
    settings = dataclasses.replace(settings, judges=list(judges))
    source = DeepPcbSource(data, limit=limit)
    first = source.rows[0]
    golden = read_image(first["golden"], grey=settings.nsoartc.channels == "grey")
    recipe = build_recipe([], settings.grid, golden=golden, settings=settings, source=str(data))
    switch = GoldenSwitch(Inspector(recipe, policy="any"), cache_size=1)
    rows = []
    t0 = time.perf_counter()
    bar = progress_bar(len(source), "scoring", unit="pair")
    for frame in source:
        bar.update()
        if frame.image is not None:
            frame.image = stress_image(frame.image, stress)
        row: dict[str, Any] = {"id": frame.meta["part_id"], "group": frame.meta["group"],
                               "boxes": frame.meta["boxes"], "error": None}
        try:
            insp = switch.inspector_for(frame)
        except GoldenProblem as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        res = insp.inspect(frame)
        if res.verdict is Verdict.ERROR and not res.judges:
            row["error"] = res.reason
        else:
            for name in judges:
                j = res.judges[name]
                row[name] = j.details.get("cells") if j.verdict is not Verdict.ERROR else None
            row["thresholds"] = dict(insp.thresholds)
            if baselines:
                al = insp.aligner.align(frame.image)  # the Inspector's own (deterministic) pose
                if al.ok and al.image is not None:
                    for name, vs in BASELINES.items():
                        sc, _ = VariationModel(insp.recipe.golden, vs).score(
                            al.image, al.valid, insp.recipe.grid)
                        row[name] = sc
        rows.append(row)
    bar.close()
    print(f"scored {len(rows)} pairs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rows


class Table:
    """The scored pass as arrays: per pair and cell the judges' normalised scores."""

    def __init__(self, rows: list[dict[str, Any]], cells: list[str], grid: Any) -> None:
        n, c = len(rows), len(cells)
        self.rows = rows
        self.groups = np.array([r["group"] for r in rows])
        # judge → (pairs, cells) scores; metric: score / recipe threshold
        self.scores = {name: np.full((n, c), -np.inf) for name in ("metric", *THRESHOLDED)}
        self.pos = np.zeros((n, c), bool)
        self.box_pair: list[int] = []
        self.box_cells: list[list[int]] = []
        self.box_cls: list[int] = []
        index = {a: i for i, a in enumerate(cells)}
        for i, r in enumerate(rows):
            for name in THRESHOLDED:
                if r.get(name):
                    self.scores[name][i] = [r[name][a] for a in cells]
            if r.get("metric"):
                self.scores["metric"][i] = [r["metric"][a] / r["thresholds"][a] for a in cells]
            for b in r["boxes"]:
                over = [index[a] for a in cells_overlapping_box(grid, b)]
                self.pos[i, over] = True
                self.box_pair.append(i)
                self.box_cells.append(over)
                self.box_cls.append(int(b[4]))
        self.box_pair_a = np.array(self.box_pair)
        self.box_cls_a = np.array(self.box_cls)
        # per box, the largest score over its cells (a box is hit when that exceeds the threshold)
        self.box_scores = {
            name: np.array([sc[p, cs].max() if cs else -np.inf
                            for p, cs in zip(self.box_pair, self.box_cells, strict=True)])
            for name, sc in self.scores.items()}

    def counts(self, judge: str, k: float, f: float, mask: np.ndarray) -> dict[str, Any]:
        """Counts and ratios on the pairs selected by ``mask`` for one candidate."""
        flags = np.zeros(self.pos.shape, bool)
        hit = np.zeros(len(self.box_pair), bool)
        for name, thr in (("variation" if judge == "any" else judge, k), ("metric", f)):
            if name == judge or (judge == "any" and name in ("variation", "metric")):
                flags |= self.scores[name] > thr
                hit |= self.box_scores[name] > thr
        fl = flags[mask]
        bmask = mask[self.box_pair_a]
        flagged = int(fl.sum())
        tp = int((fl & self.pos[mask]).sum())
        boxes = int(bmask.sum())
        hits = int(hit[bmask].sum())
        p = tp / flagged if flagged else 1.0
        r = hits / boxes if boxes else 1.0
        per_class = {}
        for cls, name in DEEPPCB_CLASSES.items():
            sel = bmask & (self.box_cls_a == cls)
            per_class[name] = float(hit[sel].mean()) if sel.any() else None
        return {"flagged": flagged, "tp_cells": tp, "fp_cells": flagged - tp, "boxes": boxes,
                "boxes_hit": hits, "cell_precision": p, "box_recall": r,
                "f1": 2 * p * r / (p + r) if p + r else 0.0, "recall_by_class": per_class,
                "class_boxes": {name: int((bmask & (self.box_cls_a == cls)).sum())
                                for cls, name in DEEPPCB_CLASSES.items()},
                "class_hits": {name: int(hit[bmask & (self.box_cls_a == cls)].sum())
                               for cls, name in DEEPPCB_CLASSES.items()}}


def candidates(judges: tuple[str, ...]) -> list[tuple[str, float, float]]:
    """(judge, k, f) settings to choose from."""
    out: list[tuple[str, float, float]] = []
    for j in judges:
        if j in THRESHOLDED:
            out += [(j, float(k), np.inf) for k in K_GRID]
        elif j == "metric":
            out += [("metric", np.inf, float(f)) for f in F_GRID]
        else:
            out += [("any", float(k), float(f)) for k in K_GRID for f in F_GRID[::2]]
    return out


def choose(table: Table, cands: list[tuple[str, float, float]], mask: np.ndarray,
           min_recall: float) -> tuple[tuple[str, float, float], dict[str, Any]]:
    """The candidate with the best F1 on ``mask`` among those reaching ``min_recall``."""
    best = None
    for cand in cands:
        c = table.counts(*cand, mask)
        key = (c["box_recall"] >= min_recall, c["f1"], c["box_recall"])
        if best is None or key > best[0]:
            best = (key, cand, c)
    assert best is not None
    return best[1], best[2]


def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
    tot = {k: sum(p[k] for p in parts) for k in ("flagged", "tp_cells", "fp_cells", "boxes",
                                                 "boxes_hit")}
    p = tot["tp_cells"] / tot["flagged"] if tot["flagged"] else 1.0
    r = tot["boxes_hit"] / tot["boxes"] if tot["boxes"] else 1.0
    tot.update({"cell_precision": p, "box_recall": r, "f1": 2 * p * r / (p + r) if p + r else 0})
    cb = defaultdict(int)
    ch = defaultdict(int)
    for part in parts:
        for name, v in part["class_boxes"].items():
            cb[name] += v
            ch[name] += part["class_hits"][name]
    tot["recall_by_class"] = {n: (ch[n] / cb[n] if cb[n] else None) for n in cb}
    return tot


def logo(table: Table, judges: tuple[str, ...], min_recall: float) -> dict[str, Any]:
    """Leave-one-group-out: per held-out group the choice made on the others and its counts."""
    cands = candidates(judges)
    folds = []
    for g in sorted(set(table.groups)):
        held = table.groups == g
        cand, _ = choose(table, cands, ~held, min_recall)
        folds.append({"group": g, "judge": cand[0], "k": cand[1], "f": cand[2],
                      **table.counts(*cand, held)})
    cand, insample = choose(table, cands, np.ones(len(table.groups), bool), min_recall)
    return {"judges": list(judges), "folds": folds, "logo": _sum(folds),
            "in_sample": {"judge": cand[0], "k": cand[1], "f": cand[2], **insample}}


def _fmt(c: dict[str, Any]) -> str:
    return (f"P {c['cell_precision']:.3f}  R {c['box_recall']:.3f}  F1 {c['f1']:.3f}  "
            f"(fp {c['fp_cells']}, missed {c['boxes'] - c['boxes_hit']}/{c['boxes']})")


def _setting(judge: str, k: float, f: float) -> str:
    parts = []
    if judge in (*THRESHOLDED, "any"):
        parts.append(f"k={k:g}")
    if judge in ("metric", "any"):
        parts.append(f"f={f:g}")
    return f"{judge} {' '.join(parts)}"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--settings", help="recipe settings YAML (default: station/defaults/"
                                       "deeppcb.yaml)")
    ap.add_argument("--stress", choices=("none", "thick", "thin"), default="none")
    ap.add_argument("--min-recall", type=float, default=0.97)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--baselines", action="store_true",
                    help="also score the two textbook methods (plain difference, plain variation "
                         "model) on the same alignment")
    ap.add_argument("--judges", default="metric,variation",
                    help="judges of the scored pass (comma-separated; default metric,variation: "
                         "give --settings station/defaults/deeppcb-metric.yaml for a calibrated "
                         "metric judge)")
    ap.add_argument("--cache", type=Path, help="scored pass (JSON): read if present, else written")
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if args.cache and args.cache.is_file():
        rows = json.loads(args.cache.read_text())
    else:
        rows = score_pass(args.data, args.settings, args.stress, args.limit,
                          tuple(args.judges.split(",")), args.baselines)
        if args.cache:
            args.cache.write_text(json.dumps(rows))
    settings = load_settings_file(args.settings or DEFAULTS_DIR / "deeppcb.yaml")
    from pipeline.grid import AddressGrid

    grid = AddressGrid.from_config(settings.grid)
    table = Table(rows, list(grid.cells), grid)
    errors = [r["id"] for r in rows if r.get("error")]
    print(f"{len(rows)} pairs, {len(table.box_pair)} boxes, stress {args.stress}; "
          f"not judged (counted as misses): {len(errors)} {errors}")
    results = {}
    scored = [j for j in (*JUDGES, *BASELINES) if any(r.get(j) for r in rows)]
    choices = [(j,) for j in scored]
    if "metric" in scored and "variation" in scored:
        choices += [("any",), ("metric", "variation", "any")]
    for judges in choices:
        res = logo(table, judges, args.min_recall)
        results["+".join(judges)] = res
        print(f"\n== choosing among: {' / '.join(judges)}")
        for f in res["folds"]:
            print(f"  held out {f['group']}: {_setting(f['judge'], f['k'], f['f']):24s} {_fmt(f)}")
        lg = res["logo"]
        print(f"  LOGO      {_fmt(lg)}")
        print("  recall by class: " + ", ".join(
            f"{n} {v:.3f}" for n, v in lg["recall_by_class"].items() if v is not None))
        ins = res["in_sample"]
        print(f"  in-sample ({_setting(ins['judge'], ins['k'], ins['f'])}): {_fmt(ins)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
