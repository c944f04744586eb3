"""``station bench``: per-stage timings of the real pipeline on 1280×1024 frames, one CPU core.

The measurement itself is :func:`station.bench.pipeline.bench_pipeline`: the synthetic line's
recipe at the requested size, jittered good and defective parts through the same Inspector as the
live station, the median of each stage.  ``--events`` adds the ZeroMQ publish → receive latency
and the trigger → result latency of a real station process on loopback.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from station.bench.machine import machine_info
from station.bench.pipeline import bench_pipeline
from station.machine_output import machine_stdout, print_json_line


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
    p.add_argument("--web", action="store_true",
                   help="also measure trigger→result with 5 operator pages connected vs none")
    p.add_argument("--json", action="store_true",
                   help="machine output: one JSON line on stdout, nothing else there")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the figures (``--json``: one JSON line, alone on stdout)."""
    with machine_stdout(args.json) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    w, _, h = args.size.lower().partition("x")
    result = bench_pipeline((int(w), int(h)), args.repeats, args.threads)
    result.update(machine_info())
    if args.events:
        from station.bench.events import bench_pubsub, bench_trigger

        result["publish_receive_ms"] = bench_pubsub()
        result["trigger_result_ms"] = bench_trigger()
    if args.web:
        from station.bench.web import bench_web

        result["web_ms"] = bench_web()
    if args.json:
        print_json_line(result, out)
    else:
        for key, value in flatten(result):
            print(f"{key:>32}: {value}", file=out)
    return 0


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested figures as ``(dotted.key, value)`` pairs for the human listing (lists of numbers
    joined with spaces)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        elif isinstance(v, list | tuple):
            out.append((key, " ".join(str(x) for x in v)))
        else:
            out.append((key, v))
    return out
