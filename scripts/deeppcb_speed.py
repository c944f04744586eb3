"""How long ``station eval --layout deeppcb`` takes per pair, and where the time goes.

The same objects as ``station eval`` (:func:`station.cmd_eval.deeppcb_inspector`: the DeepPCB
recipe settings, a recipe built once per golden, the real Inspector), timed pair by pair on one
core: the recipe build of the pair's golden, the inspection itself (alignment, judges; NSOARTC and
its cells only when the recipe has a unit space, i.e. a judge needs it), and their sum; medians.
A reference measured in the same run (five 7×7 float box filters on a 640×640 frame, interleaved
with the pairs) shows how loaded the machine was: compare ratios, not milliseconds, across
machines.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/deeppcb_speed.py [--every 3] [--settings YAML]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camera.deeppcb import DeepPcbSource  # noqa: E402
from station.cmd_eval import deeppcb_inspector  # noqa: E402
from station.progress import progress_bar  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "deeppcb"


def _reference(img: np.ndarray) -> float:
    """ms for five 7×7 float32 box filters on ``img`` (the load gauge)."""
    t = time.perf_counter()
    for _ in range(5):
        cv2.boxFilter(img, cv2.CV_32F, (7, 7))
    return (time.perf_counter() - t) * 1000


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--settings", help="recipe settings YAML (default: the built-in DeepPCB ones)")
    ap.add_argument("--every", type=int, default=1, help="time every N-th pair")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    switch = deeppcb_inspector(args.data, args.settings)
    source = DeepPcbSource(args.data)
    source.rows = source.rows[:: max(args.every, 1)]
    ref_img = np.random.default_rng(0).random((640, 640), dtype=np.float32) * 255
    build, inspect, total, ref = [], [], [], []
    bar = progress_bar(len(source), "timing", unit="pair")
    t_all = time.perf_counter()
    for frame in source:
        bar.update()
        ref.append(_reference(ref_img))
        t0 = time.perf_counter()
        try:
            insp = switch.inspector_for(frame)
        except Exception:  # an unusable golden: timed as the error result eval gives
            switch.inspect(frame)
            continue
        t1 = time.perf_counter()
        insp.inspect(frame)
        t2 = time.perf_counter()
        build.append((t1 - t0) * 1000)
        inspect.append((t2 - t1) * 1000)
        total.append((t2 - t0) * 1000)
    bar.close()
    wall = time.perf_counter() - t_all
    med = statistics.median
    out = {
        "pairs": len(source), "wall_s": round(wall, 1),
        "ms_per_pair_wall": round(wall * 1000 / max(len(source), 1), 1),
        "median_ms": {"recipe_build": round(med(build), 1), "inspect": round(med(inspect), 1),
                      "total": round(med(total), 1)},
        "reference_ms": round(med(ref), 2),
        "total_over_reference": round(med(total) / med(ref), 1),
        "unit_space": switch.recipe.has_metric,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
