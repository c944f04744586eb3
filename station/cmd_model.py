"""``station model``: ``check`` or ``bench`` a local VLM folder, or write a ``tiny`` random one.

``station model check DIR`` loads the folder exactly as the station does (offline, 4 bit, the
configured backend) and prints its family, size, quantisation (4-bit layers), processor, chat
template and the result and latency of a one-image smoke inference; a folder that cannot serve is
a one-line error with exit code 78.

``station model bench DIR`` times each backend available here (transformers, and Unsloth on an
NVIDIA GPU) on a composed image pair of the pipeline's size, each in its own process, and records
the fastest that keeps the model in 4 bit in the cache folder: ``backend: auto`` then loads with it
and says so at start-up.

``station model tiny DIR [--family mllama|qwen2_vl|qwen2_5_vl|llava]`` writes a randomly initialised
model of a supported family with a working tokenizer, processor and chat template, built in code
(nothing is downloaded): a stand-in for a real model in smoke tests and demos.  Its answers are
noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.base.errors import ConfigError
from station.machine_output import machine_stdout, print_json_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``model check`` and ``model tiny`` to the CLI."""
    p = sub.add_parser("model", help="check a local VLM folder, or write a tiny random one")
    msub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    c = msub.add_parser("check", help="load a local model folder in 4 bit and run one inference")
    c.add_argument("dir", help="model folder (or LoRA adapter folder)")
    c.add_argument("--backend", choices=("auto", "unsloth", "transformers"), default="auto")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    c.add_argument("--base", dest="base_model_dir", help="base model folder of a LoRA adapter")
    c.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the folder's own modelling code (Phi-3.5-vision)",
    )
    c.add_argument("--mode", choices=("scored", "generate"), default="scored")
    c.add_argument("--max-image-side", type=int, default=448)
    c.add_argument("--cache-dir", help="cache folder (Unsloth's compiled modules)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=run_check)

    b = msub.add_parser(
        "bench", help="time each available backend on this machine; backend: auto takes the fastest"
    )
    b.add_argument("dir", help="model folder (or LoRA adapter folder)")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    b.add_argument("--base", dest="base_model_dir", help="base model folder of a LoRA adapter")
    b.add_argument("--mode", choices=("scored", "generate"), default="scored")
    b.add_argument("--parts", type=int, default=20, help="timed parts per backend (default 20)")
    b.add_argument("--image-size", default="657x239",
                   help="WxH of each composed image of the pair (default 657x239)")
    b.add_argument("--max-image-side", type=int, default=448)
    b.add_argument("--defect-modes", default="", help="comma-separated vlm.defect_modes")
    b.add_argument("--cache-dir", help="cache folder (where the choice is recorded)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--only", choices=BACKENDS, help=argparse.SUPPRESS)  # one backend, in-process
    b.set_defaults(func=run_bench)

    t = msub.add_parser("tiny", help="write a tiny randomly initialised VLM (offline)")
    t.add_argument("dir", help="output folder (created; must be empty)")
    t.add_argument(
        "--family", choices=("mllama", "qwen2_vl", "qwen2_5_vl", "llava"), default="qwen2_vl"
    )
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_tiny)

    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Load the folder, run the smoke inference; the report as a dict (ConfigError on failure)."""
    try:
        from pipeline.vlm.backends import load_model
        from pipeline.vlm.judge import VlmJudge
        from pipeline.vlm.settings import VlmSettings
    except ImportError as exc:  # torch / transformers missing: the vlm extra is not installed
        raise ConfigError(f"model check needs the VLM extra (torch, transformers): {exc}") from exc
    settings = VlmSettings.from_mapping(
        {
            "model_dir": args.dir,
            "base_model_dir": args.base_model_dir,
            "backend": args.backend,
            "device": args.device,
            "trust_remote_code": args.trust_remote_code,
            "mode": args.mode,
            "images": "single",
            "max_image_side": args.max_image_side,
            "warmup": False,
            "require_4bit": False,  # reported below rather than refused
        }
    )
    loaded = load_model(settings, cache_dir=args.cache_dir)
    info = loaded.info()
    processor = loaded.processor
    template = getattr(processor, "chat_template", None) or getattr(
        loaded.tokenizer, "chat_template", None
    )
    footprint = None
    if hasattr(loaded.model, "get_memory_footprint"):
        footprint = int(loaded.model.get_memory_footprint())
    folder = loaded.folder
    report: dict[str, Any] = {
        "ok": True,
        **info,
        "disk_bytes": _disk_bytes(folder.weights_dir),
        "memory_bytes": footprint,
        "quantisation": {
            "linear_4bit": loaded.n_4bit,
            "linear_total": loaded.n_linear,
            "prequantized": folder.prequantized,
            "is_4bit": loaded.n_4bit > 0,
        },
        "processor": type(processor).__name__,
        "image_processor": type(getattr(processor, "image_processor", None)).__name__,
        "tokenizer_vocab": len(loaded.tokenizer),
        "chat_template": bool(template),
    }
    judge = VlmJudge(settings, loaded=loaded)
    try:
        from PIL import Image, ImageDraw

        side = args.max_image_side
        img = Image.new("RGB", (side, side), (0, 0, 0))
        ImageDraw.Draw(img).ellipse((side // 3, side // 3, side // 2, side // 2), fill=(255,) * 3)
        columns, rows = [str(i) for i in range(1, 10)], ["U", "C", "D"]
        t0 = time.perf_counter()
        first = judge.judge_now([img], columns=columns, rows=rows)
        first_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        res = judge.judge_now([img], columns=columns, rows=rows)
        ms = (time.perf_counter() - t0) * 1000
    finally:
        judge.close()
    report["smoke"] = {
        "verdict": res.verdict.value,
        "reason": res.reason,
        "p_defect": res.details.get("p_defect"),
        "address": res.details.get("address"),
        "raw": res.details.get("raw"),
        "first_ms": round(first_ms, 1),
        "ms": round(ms, 1),
    }
    if first.verdict.value == "error" or res.verdict.value == "error":
        report["ok"] = False
    return report


TORCH_HINT = ("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, "
              "then pip install -e '.[vlm]' (README, \"Try it\")")


def require_torch(command: str) -> None:
    """One line (ConfigError, exit 78) instead of a ModuleNotFoundError traceback when the VLM
    extra is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(f"{command} needs torch (the vlm extra), not installed here: "
                          f"{TORCH_HINT}") from None


def run_check(args: argparse.Namespace) -> int:
    """``station model check DIR``: 0 when the model serves, 78 (ConfigError) when it cannot."""
    require_torch("station model check")
    with machine_stdout(args.json) as out:  # --json: the report alone on stdout
        report = check(args)
        if args.json:
            print_json_line(report, out)
    if not args.json:
        q = report["quantisation"]
        s = report["smoke"]
        mb = report["memory_bytes"]
        lines = [
            f"model:        {report['name']} ({report['family']}) in {report['model_dir']}",
            f"adapter:      {report['adapter_dir'] or '-'}",
            f"backend:      {report['backend']} on {report['device']}, "
            f"compute {report['compute_dtype']}, loaded in {report['load_s']} s",
            f"size:         {report['disk_bytes'] / 1e6:.1f} MB on disk"
            + (f", {mb / 1e6:.1f} MB in memory" if mb else ""),
            f"quantisation: {q['linear_4bit']} of {q['linear_total']} linear layers in 4 bit"
            + (f" (pre-quantized: {q['prequantized']})" if q["prequantized"] else ""),
            f"processor:    {report['processor']} / {report['image_processor']}, "
            f"vocabulary {report['tokenizer_vocab']}",
            f"chat template: {'yes' if report['chat_template'] else 'NO'}",
            f"smoke:        {s['verdict']}"
            + (f" ({s['reason']})" if s["reason"] else "")
            + (f", p_defect {s['p_defect']:.3f}" if s["p_defect"] is not None else "")
            + (f", {s['address']}" if s["address"] else "")
            + f", {s['ms']:.0f} ms (first {s['first_ms']:.0f} ms)",
        ]
        print("\n".join(lines))
        if not q["is_4bit"]:
            print(
                "warning: no 4-bit layer: the station refuses this unless vlm.require_4bit: false",
                file=sys.stderr,
            )
    if not report["ok"]:
        raise ConfigError(f"model check: the smoke inference failed: {report['smoke']['reason']}")
    return 0


BACKENDS = ("transformers", "unsloth")


def _bench_images(size: str) -> list[Any]:
    """Golden and test images like the pipeline's composed pair: dark, a 9×3 pin grid, labels."""
    from PIL import Image, ImageDraw

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"model bench: --image-size must be WxH, not {size!r}") from None
    out = []
    for defect in (False, True):
        img = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(img)
        for i in range(9):
            for j in range(3):
                cx, cy = (i + 0.5) * w / 9, (j + 0.5) * h / 3
                r = min(w / 9, h / 3) * 0.3
                d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(60, 60, 60), width=2,
                          fill=(255, 255, 255) if defect and (i, j) == (2, 1) else None)
        out.append(img)
    return out


def bench_one(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """Load the folder with ``backend`` and time the judge on the bench pair (this process)."""
    from pipeline.vlm.backends import prepare_environment
    from pipeline.vlm.judge import VlmJudge
    from pipeline.vlm.settings import VlmSettings

    prepare_environment(args.cache_dir)
    if backend == "unsloth":
        try:
            import unsloth  # noqa: F401  (before transformers, as Unsloth asks)
        except Exception as exc:
            return {"backend": backend, "error": f"not usable: {type(exc).__name__}: {exc}"[:300]}
    import torch

    modes = [m.strip() for m in args.defect_modes.split(",") if m.strip()]
    settings = VlmSettings.from_mapping({
        "enabled": True, "model_dir": args.dir, "base_model_dir": args.base_model_dir,
        "backend": backend, "device": args.device, "mode": args.mode, "warmup": False,
        "max_image_side": args.max_image_side, "defect_modes": modes, "timeout_ms": 600_000,
        "compile_generate": backend == "transformers" and args.mode == "generate",
    })
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    images = _bench_images(args.image_size)
    cols, rows = [str(i) for i in range(1, 10)], ["U", "C", "D"]
    t0 = time.perf_counter()
    try:
        judge = VlmJudge(settings, cache_dir=args.cache_dir)
    except ConfigError as exc:
        return {"backend": backend, "error": str(exc)}
    try:
        # warmed up on the bench's own layout, as the station warms up on its recipe's: the
        # one-pass plan (cached prefix, graph capture) is start-up, not the first timed part
        judge.warmup(images, columns=cols, rows=rows)
    except ConfigError as exc:
        judge.close()
        return {"backend": backend, "error": str(exc)}
    startup_s = time.perf_counter() - t0
    times = []
    try:
        for _ in range(args.parts):
            t0 = time.perf_counter()
            r = judge.judge_now(images, columns=cols, rows=rows)
            times.append((time.perf_counter() - t0) * 1000)
            if r.verdict.value == "error":
                return {"backend": backend, "error": r.reason}
    finally:
        judge.close()
    times.sort()
    eng = judge._engine
    op = eng.onepass
    return {
        "backend": backend,
        "p50_ms": round(times[len(times) // 2], 2),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
        "startup_s": round(startup_s, 1),
        "linear_4bit": judge.loaded.n_4bit,
        "linear_total": judge.loaded.n_linear,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "one_pass": None if op is None or op.plan is None else {
            "graph_scope": op.plan.scope, "capture_s": op.plan.capture_s,
            "cached_prefix_tokens": op.plan.split, "plans_made": op.plans_made},
    }


def fully_4bit(result: dict[str, Any]) -> bool:
    """Whether a backend kept every linear layer but the output head in 4 bit (Unsloth keeps
    vision towers in 16 bit: faster on an H200, but about 0.9 GiB more for a 2B model)."""
    n4, n = int(result.get("linear_4bit") or 0), int(result.get("linear_total") or 0)
    return n > 0 and n4 >= n - 1


def run_bench(args: argparse.Namespace) -> int:
    """``station model bench DIR``: time each backend in its own process (Unsloth patches
    transformers on import), record the fastest that keeps the model in 4 bit for ``auto``
    (every linear layer but the output head; see :func:`fully_4bit`)."""
    require_torch("station model bench")
    if args.only:
        with machine_stdout(True) as out:
            print_json_line(bench_one(args, args.only), out)
        return 0
    import subprocess

    from pipeline.vlm.backends import (
        _pick_device,
        inspect_folder,
        prepare_environment,
        record_backend_choice,
    )

    cache = prepare_environment(args.cache_dir)
    folder = inspect_folder(args.dir, args.base_model_dir)
    device = _pick_device(args.device)
    backends = ["transformers"]
    if device.startswith("cuda") and folder.family in ("mllama", "qwen2_vl", "qwen2_5_vl", "llava"):
        backends.append("unsloth")
    results = []
    for backend in backends:
        argv = [sys.executable, "-m", "station.cli", "model", "bench", args.dir, "--only",
                backend, "--device", device, "--mode", args.mode, "--parts", str(args.parts),
                "--image-size", args.image_size, "--max-image-side", str(args.max_image_side),
                "--defect-modes", args.defect_modes, "--cache-dir", str(cache)]
        if args.base_model_dir:
            argv += ["--base", args.base_model_dir]
        p = subprocess.run(argv, capture_output=True, text=True)
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        if p.returncode != 0 or not lines:
            tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"backend": backend, "error": f"exit {p.returncode}: {tail}"[:300]})
        else:
            results.append(json.loads(lines[-1]))
    ok = [r for r in results if "p50_ms" in r and fully_4bit(r)]
    if not ok:  # no backend quantises every layer: the fastest with any 4-bit layers
        ok = [r for r in results if "p50_ms" in r and r.get("linear_4bit", 0) > 0]
    report: dict[str, Any] = {"model_dir": str(folder.path), "device": device,
                              "mode": args.mode, "results": results}
    if ok:
        best = min(ok, key=lambda r: r["p50_ms"])
        summary = ", ".join(f"{r['backend']} {r['p50_ms']} ms p50" for r in ok)
        report["fastest"] = best["backend"]
        report["recorded"] = str(record_backend_choice(cache, folder, device, {
            "fastest": best["backend"], "summary": summary, "mode": args.mode,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}))
    with machine_stdout(args.json) as out:
        if args.json:
            print_json_line(report, out)
    if not args.json:
        for r in results:
            if "error" in r:
                print(f"{r['backend']:13s} failed: {r['error']}")
            else:
                print(f"{r['backend']:13s} p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  "
                      f"4-bit layers {r['linear_4bit']}/{r['linear_total']}  "
                      f"start-up {r['startup_s']} s"
                      + (f"  peak {r['peak_gib']} GiB" if r.get("peak_gib") else "")
                      + ("" if fully_4bit(r) else "  (part of the model in 16 bit: not for auto)"))
        if ok:
            print(f"fastest: {report['fastest']} (recorded for backend: auto in "
                  f"{report['recorded']})")
    if not ok:
        raise ConfigError("model bench: no backend could run the model in 4 bit here")
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    """``station model tiny DIR``: write the model; print where and what."""
    require_torch("station model tiny")
    try:
        from station.modeltools.tiny import write_tiny_model
    except ImportError as exc:
        raise ConfigError(f"model tiny needs the VLM extra (torch, transformers): {exc}") from exc
    try:
        out = write_tiny_model(args.dir, args.family, seed=args.seed)
    except FileExistsError as exc:
        raise ConfigError(f"model tiny: {exc}") from exc
    info = json.loads((out / "station_tiny.json").read_text())
    print(f"wrote a tiny random {args.family} model ({info['parameters']} parameters) to {out}")
    return 0
