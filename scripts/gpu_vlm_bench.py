#!/usr/bin/env python3
"""GPU benchmark of the VLM judge: Qwen2-VL-2B- and 7B-shaped models with random weights, 4 bit.

For each shape the model is written from a config in code (real Qwen2-VL-2B/7B-Instruct layer
sizes, random bf16 weights, the project's own small tokenizer; nothing is downloaded), then loaded
through each backend (``unsloth``: ``FastVisionModel``, 4 bit; ``transformers``: bitsandbytes NF4)
in a fresh process, and timed per part through the production path (``VlmJudge.judge``, worker
thread included) on two pipeline-like 448×448 composed images (metric images with the address
overlay):

* ``scored_pass``   — scored mode, threshold just under 1: the pass path (one forward pass);
* ``scored_defect`` — scored mode, threshold just over 0: the defect path (mode ≤ 6 greedy tokens,
  then the constrained column and row, on the KV cache);
* ``generate``      — greedy generate, ≤ 48 new tokens (random weights seldom stop early, so this is
  close to the worst case);
* ``generate_compiled`` — the same with ``compile_generate: true`` (transformers backend: static
  KV cache, decode step compiled with CUDA graphs).

Prints one JSON line (also written to ``--out``) with p50/p95/mean per mode, load time, 4-bit layer
counts and peak GPU memory.  Random weights say nothing about accuracy, only about cost.

    PYTHONPATH=/tmp/site:. python3 scripts/gpu_vlm_bench.py --shapes 2b,7b --out bench.json

``--shapes tiny --device cpu --backends transformers`` runs the same flow on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = [str(i) for i in range(1, 10)]
ROWS = ["U", "C", "D"]
MODES = ["bent", "missing", "foreign matter", "broken"]


def pipeline_like_images(side: int = 448) -> list[Any]:
    """Golden and test metric images (DST) with the address overlay, composed like the pipeline's.

    Dark image, a 9×3 array of faint pin rings (what the metric shows of edges), one solid white
    blob on the test image at X:3, Y:C, black margins above and left with yellow labels.
    """
    from PIL import Image, ImageDraw

    margin = 32
    out = []
    for defect in (False, True):
        img = Image.new("RGB", (side, side), (0, 0, 0))
        d = ImageDraw.Draw(img)
        w, h = side - margin, side - margin
        cw, ch = w / 9, h / 3
        for i in range(9):
            d.text((margin + (i + 0.45) * cw, 8), COLUMNS[i], fill=(255, 255, 0))
            for j in range(3):
                if i == 0:
                    d.text((10, margin + (j + 0.4) * ch), ROWS[j], fill=(255, 255, 0))
                cx, cy = margin + (i + 0.5) * cw, margin + (j + 0.5) * ch
                r = min(cw, ch) * 0.3
                d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(40, 40, 40), width=2)
                d.rectangle(
                    (
                        margin + i * cw,
                        margin + j * ch,
                        margin + (i + 1) * cw,
                        margin + (j + 1) * ch,
                    ),
                    outline=(70, 70, 0),
                )
        if defect:
            cx, cy = margin + 2.5 * cw, margin + 1.5 * ch
            r = min(cw, ch) * 0.3
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255))
        out.append(img)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: load one folder with one backend and time the three modes."""
    from pipeline.vlm.backends import prepare_environment

    prepare_environment(args.workdir / "cache")
    if args.backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as Unsloth asks)
    import torch

    from pipeline.vlm.backends import load_model
    from pipeline.vlm.judge import VlmJudge
    from pipeline.vlm.settings import VlmSettings

    cuda = args.device.startswith("cuda")
    base = {
        "model_dir": str(args.model_dir),
        "backend": args.backend,
        "device": args.device,
        "max_image_side": args.image_side,
        "warmup": False,
        "timeout_ms": 600_000,
        "max_new_tokens": args.max_new_tokens,
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loaded = load_model(VlmSettings.from_mapping(base), cache_dir=args.workdir / "cache")
    load_s = time.perf_counter() - t0
    mem_load = torch.cuda.max_memory_allocated() if cuda else 0
    images = pipeline_like_images(args.image_side)
    result: dict[str, Any] = {
        "shape": args.shape,
        "backend": args.backend,
        "load_s": round(load_s, 1),
        "linear_4bit": loaded.n_4bit,
        "linear_total": loaded.n_linear,
        "compute_dtype": loaded.compute_dtype,
        "peak_gib_after_load": round(mem_load / 2**30, 2),
        "modes": {},
    }
    modes = {
        "scored_pass": {"mode": "scored", "threshold": 1 - 1e-9},
        "scored_defect": {"mode": "scored", "threshold": 1e-9},
        "scored_defect_modes": {"mode": "scored", "threshold": 1e-9, "defect_modes": MODES},
        "generate": {"mode": "generate"},
        "generate_compiled": {"mode": "generate", "compile_generate": True},
    }
    if args.backend != "transformers":
        del modes["generate_compiled"]  # transformers backend only (see VlmSettings)
    for name, extra in modes.items():
        judge = VlmJudge(VlmSettings.from_mapping({**base, **extra}), loaded=loaded)
        t0 = time.perf_counter()
        first = judge.judge(images, columns=COLUMNS, rows=ROWS)
        first_ms = (time.perf_counter() - t0) * 1000
        if first.verdict.value == "error":
            judge.close()
            result["modes"][name] = {"error": first.reason}
            continue
        for _ in range(args.warm - 1):
            judge.judge(images, columns=COLUMNS, rows=ROWS)
        times, last = [], first
        for _ in range(args.parts):
            t0 = time.perf_counter()
            last = judge.judge(images, columns=COLUMNS, rows=ROWS)
            times.append((time.perf_counter() - t0) * 1000)
        judge.close()
        d = last.details
        entry = {
            "n": len(times),
            "p50_ms": round(_pct(times, 0.5), 1),
            "p95_ms": round(_pct(times, 0.95), 1),
            "mean_ms": round(statistics.fmean(times), 1),
            "first_ms": round(first_ms, 1),
            "verdict": last.verdict.value,
            "tokens_in": d.get("tokens_in"),
        }
        if name.startswith("scored"):
            entry.update(forwards=d.get("forwards"), kv_cache=d.get("kv_cache"))
            entry["address"] = d.get("address")
        else:
            entry["tokens_out"] = d.get("tokens_out")
        result["modes"][name] = entry
    if args.experiments:
        result["experiments"] = experiments(args, loaded, images)
    if cuda:
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return result


class _CompileableQuantizer:
    """A bitsandbytes quantizer that lets generate compile (transformers says it may not)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    is_compileable = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def experiments(args: argparse.Namespace, loaded: Any, images: list[Any]) -> dict[str, Any]:
    """Raw ``model.generate`` variants on the same inputs: where does generate time go?

    ``plain``: exactly ``max_new_tokens`` greedy tokens, dynamic cache (what generate mode does);
    ``prefill``: one new token (the prompt's forward alone);
    ``static_compiled``: static cache and ``torch.compile`` (CUDA graphs) for the decode steps.
    """
    import torch
    from transformers import CompileConfig

    from pipeline.vlm.judge import VlmJudge
    from pipeline.vlm.prompts import build_prompt
    from pipeline.vlm.settings import VlmSettings

    settings = VlmSettings(
        model_dir=str(args.model_dir), mode="generate", max_image_side=args.image_side, warmup=False
    )
    engine = VlmJudge(settings, loaded=loaded)._engine
    prompt = build_prompt(settings, images, columns=COLUMNS, rows=ROWS)
    inputs = engine.encode(prompt)
    model = loaded.model
    n = args.max_new_tokens
    end = engine.end_ids[0] if engine.end_ids else None
    base = {"do_sample": False, "pad_token_id": end}
    variants: dict[str, dict[str, Any]] = {
        "prefill": {"max_new_tokens": 1, "min_new_tokens": 1},
        "plain": {"max_new_tokens": n, "min_new_tokens": n},
        "static_compiled": {
            "max_new_tokens": n,
            "min_new_tokens": n,
            "cache_implementation": "static",
            "compile_config": CompileConfig(fullgraph=False, dynamic=False),
        },
    }
    out: dict[str, Any] = {}
    for name, kw in variants.items():
        try:
            if name == "static_compiled" and getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer = _CompileableQuantizer(model.hf_quantizer)
            times: list[float] = []
            t0 = time.perf_counter()
            with torch.inference_mode():
                for i in range(args.warm + 10):
                    t1 = time.perf_counter()
                    gen = model.generate(**inputs, **base, **kw)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    if i == 0:
                        first = (time.perf_counter() - t1) * 1000
                    if i >= args.warm:
                        times.append((time.perf_counter() - t1) * 1000)
            out[name] = {
                "p50_ms": round(_pct(times, 0.5), 1),
                "p95_ms": round(_pct(times, 0.95), 1),
                "first_ms": round(first, 1),
                "tokens_out": int(gen.shape[1] - inputs["input_ids"].shape[1]),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    if "p50_ms" in out.get("plain", {}) and "p50_ms" in out.get("prefill", {}):
        per_token = (out["plain"]["p50_ms"] - out["prefill"]["p50_ms"]) / max(1, n - 1)
        out["decode_ms_per_token"] = round(per_token, 2)
    return out


def write_one(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: write the random model of one shape."""
    from station.modeltools.tiny import write_tiny_model

    t0 = time.perf_counter()
    write_tiny_model(args.model_dir, "qwen2_vl", shape=args.shape, device=args.device)
    info = json.loads((args.model_dir / "station_tiny.json").read_text())
    return {"write_s": round(time.perf_counter() - t0, 1), "parameters": info["parameters"]}


def _child(argv: list[str], timeout: float, log: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"error": f"timeout after {timeout:.0f} s", "stderr_tail": tail}
    if log is not None:
        with log.open("a") as f:
            f.write(f"===== {' '.join(argv[:6])} (exit {p.returncode})\n")
            f.write(p.stdout[-20000:] + "\n----- stderr\n" + p.stderr[-20000:] + "\n")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT ") :])
    return {"error": f"exit {p.returncode}", "stderr_tail": p.stderr[-3000:]}


def _versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {}
    for name in ("torch", "transformers", "bitsandbytes", "unsloth", "unsloth_zoo", "peft"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main() -> int:
    """Parent: write each shape, run each backend in its own process, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="2b,7b")
    ap.add_argument("--backends", default="unsloth,transformers")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--parts", type=int, default=20, help="timed parts per mode")
    ap.add_argument("--warm", type=int, default=3, help="untimed parts per mode (first reported)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--image-side", type=int, default=448)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vlm-bench"))
    ap.add_argument("--budget-s", type=float, default=540, help="skip runs that would not fit")
    ap.add_argument("--keep", action="store_true", help="keep the written models")
    ap.add_argument(
        "--experiments", action="store_true", help="also time raw generate variants (see code)"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--log", type=Path, help="append the child processes' output here")
    ap.add_argument("--_child", choices=("write", "run"), help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:
        res = write_one(args) if args._child == "write" else run_one(args)
        print("@@RESULT " + json.dumps(res), flush=True)
        return 0

    t_start = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "bench": "vlm_gpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "gpu": None,
        "versions": _versions(),
        "settings": {
            "images": f"2 x {args.image_side}x{args.image_side} (pair, separate, DST)",
            "parts": args.parts,
            "warm": args.warm,
            "max_new_tokens": args.max_new_tokens,
        },
        "results": [],
    }
    if args.device.startswith("cuda"):
        import torch

        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

    def left() -> float:
        return args.budget_s - (time.monotonic() - t_start)

    def flush() -> None:
        if args.out:
            args.out.write_text(json.dumps(report) + "\n")

    common = [
        "--device", args.device, "--workdir", str(args.workdir), "--parts", str(args.parts),
        "--warm", str(args.warm), "--max-new-tokens", str(args.max_new_tokens),
        "--image-side", str(args.image_side),
        *(["--experiments"] if args.experiments else []),
    ]  # fmt: skip
    for shape in [s for s in args.shapes.split(",") if s]:
        folder = args.workdir / f"qwen2_vl-{shape}"
        shutil.rmtree(folder, ignore_errors=True)
        if left() < 60:
            report["results"].append({"shape": shape, "skipped": "time budget"})
            continue
        w = _child(
            ["--_child", "write", "--shape", shape, "--model-dir", str(folder), *common],
            timeout=max(30.0, left()),
            log=args.log,
        )
        if "error" in w:
            report["results"].append({"shape": shape, "write": w})
            flush()
            continue
        for backend in [b for b in args.backends.split(",") if b]:
            if left() < 45:
                report["results"].append(
                    {"shape": shape, "backend": backend, "skipped": "time budget"}
                )
                continue
            r = _child(
                [
                    "--_child",
                    "run",
                    "--shape",
                    shape,
                    "--backend",
                    backend,
                    "--model-dir",
                    str(folder),
                    *common,
                ],
                timeout=max(30.0, left()),
                log=args.log,
            )
            r.setdefault("shape", shape)
            r.setdefault("backend", backend)
            r.update(w)
            report["results"].append(r)
            flush()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    flush()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
