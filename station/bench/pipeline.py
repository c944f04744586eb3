"""Per-stage timings of the real pipeline on synthetic parts (what ``station bench`` reports).

Builds the synthetic line's recipe at the requested size (the demo's way), renders jittered parts
(good and defective), and runs them through the same Inspector as the live station, reporting the
median of each stage over the repeated runs.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
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

STAGES = ("align", "nsoartc", "cells", "overlay", "metric", "total")


def _ms(fn: Any, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return median(times)


def reference_timings(golden: np.ndarray, frame: np.ndarray, repeats: int) -> dict[str, float]:
    """The DESIGN §8 references, measured in the same run as the pipeline: OpenCV's
    full-resolution ECC (euclidean) of ``frame`` onto ``golden``, and five 7×7 float box
    filters over the frame (the cost of the windowed sums NSOARTC needs)."""
    g, f = golden.astype(np.float32), frame.astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)

    def ecc() -> None:
        warp = np.eye(2, 3, dtype=np.float32)
        with contextlib.suppress(cv2.error):  # not converging still costs its time
            cv2.findTransformECC(g, f, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 5)

    def boxes() -> None:
        for _ in range(5):
            cv2.boxFilter(f, cv2.CV_32F, (7, 7), normalize=False)

    return {"ref_ecc_ms": round(_ms(ecc, max(3, repeats // 3)), 3),
            "ref_box5_ms": round(_ms(boxes, repeats), 3)}


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
    out["metric_path_ms"] = round(out["nsoartc_ms"] + out["cells_ms"] + out["metric_ms"]
                                  + out["overlay_ms"], 3)
    grey = frames[3].image if frames[3].image.ndim == 2 else cv2.cvtColor(frames[3].image,
                                                                          cv2.COLOR_BGR2GRAY)
    out.update(reference_timings(recipe.golden, grey, repeats))
    out["align_vs_ecc"] = round(out["align_ms"] / out["ref_ecc_ms"], 3)
    out["metric_path_vs_box5"] = round(out["metric_path_ms"] / out["ref_box5_ms"], 3)
    out["frame"] = list(size)
    out["repeats"] = repeats
    out["threads"] = threads
    return out
