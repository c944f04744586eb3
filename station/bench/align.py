"""Alignment benchmark (DESIGN section 8: ≤ 20 ms per 1280×1024 grey frame on one CPU core)."""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from camera.synth.chart import pin_chart
from pipeline.align import Aligner


def _jittered_frames(golden: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Frames of the golden part with line-typical jitter: ±10 px, ±2°, gain/offset, noise."""
    rng = np.random.default_rng(seed)
    h, w = golden.shape
    frames = []
    for _ in range(n):
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-2, 2), 1.0)
        m[:, 2] += rng.uniform(-10, 10, 2)
        frame = cv2.warpAffine(golden, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        frame = frame * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        frame += rng.normal(0, 4, frame.shape).astype(np.float32)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def bench_align(repeats: int = 20, size: tuple[int, int] = (1280, 1024)) -> float:
    """Median milliseconds per :meth:`Aligner.align` call on one thread.

    ``size`` is (width, height) of the grey golden (the 9 × 3 pin chart); each of the
    ``repeats`` frames has its own random pose, lighting and noise.  OpenCV is held to one
    thread while timing (numpy's BLAS is only used on tiny matrices).  Raises ``RuntimeError``
    if a frame fails to align.
    """
    golden = pin_chart(size)
    aligner = Aligner(golden)
    frames = _jittered_frames(golden, max(1, repeats), seed=1)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        aligner.align(frames[0])  # warm-up (allocations, lazy OpenCV init)
        times = []
        for frame in frames:
            t0 = time.perf_counter()
            result = aligner.align(frame)
            times.append((time.perf_counter() - t0) * 1e3)
            if not result.ok:
                raise RuntimeError(f"benchmark frame did not align: {result.reason}")
    finally:
        cv2.setNumThreads(threads)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """``python -m station.bench.align [--repeats N] [--size WxH]``: print the median ms."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", default="1280x1024", help="WxH of the pin chart")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    ms = bench_align(args.repeats, (w, h))
    print(f"align: {ms:.2f} ms per {w}x{h} grey frame (median of {args.repeats}, 1 thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
