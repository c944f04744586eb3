"""The VLM judge inside the real pipeline on a GPU: synthetic line parts → Inspector → vlm judge.

Unlike ``gpu_vlm_bench.py`` (which times the judge on drawn stand-in images), this runs the
station's own code path: frames of the synthetic pin line are aligned, turned into NSOARTC metric
images, cropped to the address grid, overlaid and composed exactly as in production, then judged
by a Qwen2-VL-shaped model with random weights (written from a config, nothing downloaded) loaded
in 4 bit.  Prints one JSON line: per-part VLM latency p50/p95 for pass and defect paths, the image
size sent, 4-bit layer count and peak GPU memory.

    python3 scripts/gpu_pipeline_vlm.py --shape 2b --backend unsloth --mode scored --parts 24
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camera.synth import LineSpec, make_part, sample_defects  # noqa: E402
from pipeline.base.frames import Frame  # noqa: E402
from pipeline.inspector import Inspector  # noqa: E402
from pipeline.judges.metric import MetricJudge  # noqa: E402
from pipeline.judges.vlm import VlmPartJudge  # noqa: E402
from station.demo.line import build_demo_recipe  # noqa: E402
from station.modeltools.tiny import write_tiny_model  # noqa: E402


def pct(values: list[float], q: float) -> float | None:
    """Percentile ``q`` of ``values`` (None when empty)."""
    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> int:
    """Run the benchmark and print its JSON line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="2b")
    ap.add_argument("--backend", default="unsloth")
    ap.add_argument("--modes", default="scored,generate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--parts", type=int, default=24)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="scored-mode p_defect threshold (0.999 times the pass path of a "
                         "random model, which leans to 'defective')")
    args = ap.parse_args()
    import torch

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-pipeline-"))
    spec = LineSpec()
    recipe = build_demo_recipe(work / "demo", spec, seed=1, n_train=16)
    model_dir = work / f"qwen2-vl-{args.shape}"
    if not (model_dir / "config.json").is_file():
        write_tiny_model(model_dir, "qwen2_vl", shape=args.shape)
    rng = np.random.default_rng(3)
    frames = []
    for i in range(args.parts + 2):
        defects = sample_defects(spec, rng, 1) if i % 2 else []
        frames.append(Frame(make_part(spec, rng, defects).image, seq=i, source_id="bench"))
    out: dict = {"shape": args.shape, "backend": args.backend, "parts": args.parts,
                 "date": time.strftime("%Y-%m-%d"), "modes": {}}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    for mode in args.modes.split(","):
        settings = {"enabled": True, "backend": args.backend, "device": args.device,
                    "model_dir": str(model_dir), "mode": mode, "timeout_ms": 60000,
                    "threshold": args.threshold}
        if args.backend == "transformers" and mode == "generate":
            settings["compile_generate"] = True
        t0 = time.perf_counter()
        stage = VlmPartJudge.from_settings(settings, cache_dir=work / "cache")
        load_s = time.perf_counter() - t0
        inspector = Inspector(recipe, [MetricJudge(recipe.settings.thresholds), stage])
        by_verdict: dict[str, list[float]] = {}
        sizes = set()
        for i, frame in enumerate(frames):
            r = inspector.inspect(frame)
            if i < 2:  # warm parts
                continue
            vlm = r.judges["vlm"]
            if vlm.verdict.value == "error":
                raise RuntimeError(f"vlm error: {vlm.reason}")
            by_verdict.setdefault(vlm.verdict.value, []).append(r.timings_ms["vlm"])
            imgs = stage.compose(golden=recipe.golden, aligned=r.images["aligned"],
                                 metric_image=r.images["metric"],
                                 golden_metric=inspector.golden_metric(), grid=recipe.grid)
            sizes.add(tuple(tuple(im.shape[:2]) for im in imgs))
        allv = [v for vs in by_verdict.values() for v in vs]
        out["modes"][mode] = {
            "load_s": round(load_s, 1), "model": stage.judge_model.model_info,
            "p50_ms": pct(allv, 50), "p95_ms": pct(allv, 95),
            "by_vlm_verdict": {k: {"n": len(v), "p50_ms": pct(v, 50), "p95_ms": pct(v, 95)}
                               for k, v in by_verdict.items()},
            "composed_images_hw": sorted(sizes),
            "counters": stage.judge_model.counters,
        }
        stage.close()
        del inspector, stage
        if torch.cuda.is_available():
            out["modes"][mode]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
