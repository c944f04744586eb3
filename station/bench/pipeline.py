"""Per-stage timings of the real pipeline on synthetic parts (what ``station bench`` reports).

Builds the synthetic line's recipe at the requested size (the demo's way), renders jittered parts
(good and defective), and runs them through the same Inspector as the live station, reporting the
median of each stage over the repeated runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import cv2
import numpy as np

from camera.synth import LineSpec, make_part, sample_defects
from pipeline.base.frames import Frame
from pipeline.inspector import Inspector
from station.demo.line import build_demo_recipe
from station.progress import progress_bar

STAGES = ("align", "nsoartc", "cells", "overlay", "total")


def bench_pipeline(size: tuple[int, int], repeats: int, threads: int = 1) -> dict[str, Any]:
    """Median ms per stage over ``repeats`` synthetic parts of ``size`` (after 3 warm-up parts)."""
    cv2.setNumThreads(threads)
    spec = LineSpec(size=size, color=False)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        recipe = build_demo_recipe(Path(tmp), spec, seed=5, n_train=16)
    inspector = Inspector(recipe)
    rng = np.random.default_rng(11)

    frames = []
    for i in range(repeats + 3):
        defects = sample_defects(spec, rng, 1) if i % 3 == 0 else []
        frames.append(Frame(make_part(spec, rng, defects).image, seq=i, source_id="bench"))
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    bar = progress_bar(len(frames), "bench", unit="frame")
    for i, frame in enumerate(frames):
        r = inspector.inspect(frame)
        bar.update()
        if r.verdict.value == "error":
            raise RuntimeError(f"bench frame {i} not judged: {r.reason}")
        if i < 3:
            continue
        for s in STAGES:
            times[s].append(r.timings_ms[s])
    bar.close()
    out = {f"{s}_ms": round(median(v), 3) for s, v in times.items()}
    out["metric_path_ms"] = round(out["nsoartc_ms"] + out["cells_ms"] + out["overlay_ms"], 3)
    out["frame"] = list(size)
    out["repeats"] = repeats
    out["threads"] = threads
    return out
