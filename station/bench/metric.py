"""Benchmark of the metric path (DESIGN §8): NSOARTC + cell scores + overlay on one CPU core.

    .venv/bin/python -m station.bench.metric [--repeats 20] [--stride 2] [--k 9]

Target: ≤ 10 ms per 1280×1024 grey frame for the three stages together.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import cv2
import numpy as np

from camera.synth.chart import pin_chart, pin_chart_grid
from pipeline.grid import AddressGrid
from pipeline.nsoartc import NsoartcTransform, UnitSpace
from pipeline.overlay import draw_overlay

DEFAULT_STRIDE = 1  # DESIGN default; stride 2 keeps ~30 % headroom on a loaded CPU


def bench_metric(
    repeats: int = 20,
    size: tuple[int, int] = (1280, 1024),
    k: int = 9,
    stride: int = DEFAULT_STRIDE,
    *,
    support: int = 3,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Median milliseconds of the metric stages on one frame of ``size = (W, H)``.

    Returns ``nsoartc_ms`` (distance map incl. valid mask), ``cells_ms`` (cell scores, support
    erosion), ``overlay_ms`` (metric image + address overlay), ``total_ms`` (their sum) and the
    settings.  OpenCV runs on ``threads`` threads (1 = the DESIGN §8 condition).
    """
    prev = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        golden = pin_chart(size, seed)
        us = UnitSpace.synthesize(golden, k, stride, n=8, seed=seed)
        tr = NsoartcTransform(golden, us, k=k, stride=stride)
        grid = AddressGrid.from_config(pin_chart_grid(size))
        rng = np.random.default_rng(seed + 1)
        frame = np.clip(golden + rng.normal(0, 2, golden.shape), 0, 255).astype(np.uint8)
        cv2.circle(frame, (size[0] // 3, size[1] // 2), 12, 30, -1)
        valid = np.full(golden.shape, 255, np.uint8)
        valid[:, :3] = 0
        t_n, t_c, t_o = [], [], []
        for _ in range(repeats + 2):  # two warm-up rounds
            t0 = time.perf_counter()
            d = tr.distance(frame, valid)
            t1 = time.perf_counter()
            scores = grid.cell_scores(d, valid, support=support)
            t2 = time.perf_counter()
            metric = tr.metric_image(d)
            marked = [a for a, s in scores.items() if s > 10.0]
            draw_overlay(metric, grid, marked=marked)
            t3 = time.perf_counter()
            t_n.append((t1 - t0) * 1e3)
            t_c.append((t2 - t1) * 1e3)
            t_o.append((t3 - t2) * 1e3)
        t_n, t_c, t_o = t_n[2:], t_c[2:], t_o[2:]
        med = statistics.median
        tot = [a + b + c for a, b, c in zip(t_n, t_c, t_o, strict=True)]
        return {
            "size": list(size),
            "k": k,
            "stride": stride,
            "support": support,
            "threads": threads,
            "repeats": repeats,
            "nsoartc_ms": round(med(t_n), 3),
            "cells_ms": round(med(t_c), 3),
            "overlay_ms": round(med(t_o), 3),
            "total_ms": round(med(tot), 3),
        }
    finally:
        cv2.setNumThreads(prev)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the benchmark as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--stride", type=int, default=DEFAULT_STRIDE)
    ap.add_argument("--support", type=int, default=3)
    args = ap.parse_args(argv)
    r = bench_metric(
        args.repeats, (args.width, args.height), args.k, args.stride, support=args.support
    )
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
