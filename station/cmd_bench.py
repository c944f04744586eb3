"""``station bench``: per-stage timings of the real pipeline on 1280×1024 frames, one CPU core.

Builds a recipe for the synthetic pin line at the requested size, renders jittered parts (good and
defective), and runs them through the same Inspector as the live station, reporting the median of
each stage over the repeated runs.  ``--events`` adds the ZeroMQ publish → receive latency and the
trigger → result latency of a real station process on loopback.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import cv2
import numpy as np

from camera.synth import LineSpec, make_part, sample_defects
from pipeline.inspector import Inspector
from station.demo.line import build_demo_recipe

STAGES = ("align", "nsoartc", "cells", "overlay", "total")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the CLI."""
    p = sub.add_parser("bench", help="per-stage timings on 1280x1024 frames, one CPU core")
    p.add_argument("--size", default="1280x1024", help="frame size WxH (default 1280x1024)")
    p.add_argument("--repeats", type=int, default=30, help="frames timed (default 30)")
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    p.add_argument("--grey", action="store_true", default=True,
                   help="grey camera frames (default; the target is for grey)")
    p.add_argument("--events", action="store_true",
                   help="also measure publish→receive and trigger→result on loopback")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=run)


def bench_pipeline(size: tuple[int, int], repeats: int, threads: int = 1) -> dict[str, Any]:
    """Median ms per stage over ``repeats`` synthetic parts of ``size`` (after 3 warm-up parts)."""
    cv2.setNumThreads(threads)
    spec = LineSpec(size=size, color=False)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        recipe = build_demo_recipe(Path(tmp), spec, seed=5, n_train=16)
    inspector = Inspector(recipe)
    rng = np.random.default_rng(11)
    from pipeline.base.frames import Frame

    frames = []
    for i in range(repeats + 3):
        defects = sample_defects(spec, rng, 1) if i % 3 == 0 else []
        frames.append(Frame(make_part(spec, rng, defects).image, seq=i, source_id="bench"))
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    for i, frame in enumerate(frames):
        r = inspector.inspect(frame)
        if r.verdict.value == "error":
            raise RuntimeError(f"bench frame {i} not judged: {r.reason}")
        if i < 3:
            continue
        for s in STAGES:
            times[s].append(r.timings_ms[s])
    out = {f"{s}_ms": round(median(v), 3) for s, v in times.items()}
    out["metric_path_ms"] = round(out["nsoartc_ms"] + out["cells_ms"] + out["overlay_ms"], 3)
    out["frame"] = list(size)
    out["repeats"] = repeats
    out["threads"] = threads
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the figures."""
    w, _, h = args.size.lower().partition("x")
    result = bench_pipeline((int(w), int(h)), args.repeats, args.threads)
    result["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    result["cpu"] = _cpu_name()
    result["date"] = time.strftime("%Y-%m-%d")
    if args.events:
        from station.bench_events import bench_pubsub, bench_trigger

        result["publish_receive_ms"] = bench_pubsub()
        result["trigger_result_ms"] = bench_trigger()
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
