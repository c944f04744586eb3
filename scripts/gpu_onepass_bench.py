#!/usr/bin/env python3
"""The VLM judge per family on a GPU, inside the real pipeline: one-pass scored, generate, stages.

For each model (random weights in the family's real layer sizes, written from a config in code,
nothing downloaded; the project's small tokenizer, so embedding rows past it are never used) and
each backend, a child process loads the folder in 4 bit and runs synthetic line parts through the
station's own path (alignment → NSOARTC → composed, overlaid metric images → ``VlmPartJudge`` →
``VlmJudge``), timing ``timings_ms["vlm"]`` per part:

* ``scored_pass`` / ``scored_defect`` — scored mode, one pass (prefix cache, answer tree, CUDA
  graph), thresholds forcing each path, the recipe listing four defect modes;
* ``scored_stepwise`` — the step-by-step reference (``one_pass: false``), defect path, and the
  largest difference of ``p_defect`` and the address agreement against the one-pass run;
* ``generate`` — 48 new tokens (``compile_generate`` with the transformers backend).

The one-pass run also reports a per-stage breakdown (image preprocessing, vision tower, language
model prefill incl. the answer tree, graph replay, Python around it) and its start-up cost (prefix
and capture).  Writes ``--out`` (JSON) after every step.

    python3 scripts/gpu_onepass_bench.py --models qwen2_vl:2b --backends transformers --out b.json
    python3 scripts/gpu_onepass_bench.py --models qwen2_vl:tiny --device cpu --parts 2   # CPU
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

MODES = ["bent", "missing", "foreign matter", "broken"]

# Real layer sizes of the families the source documents tried (random weights).
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2_5_vl:7b": {  # Qwen2.5-VL-7B-Instruct
        "text": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                     rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                     rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=128000),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       out_hidden_size=3584, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
    },
    "mllama:11b": {  # Llama-3.2-11B-Vision-Instruct
        "text": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                     num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8,
                     cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192},
                     rope_theta=500000.0, max_position_embeddings=131072),
        "vision": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                       num_global_layers=8, attention_heads=16, image_size=560, patch_size=14,
                       max_num_tiles=4, intermediate_layers_indices=[3, 7, 15, 23, 30],
                       vision_output_dim=7680),
    },
    "llava:12b": {  # Pixtral-12B (mistral-community/pixtral-12b layout)
        "text": dict(model_type="mistral", vocab_size=131072, hidden_size=5120,
                     intermediate_size=14336, num_hidden_layers=40, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, max_position_embeddings=1024000,
                     rms_norm_eps=1e-5, rope_parameters={"rope_type": "default",
                                                         "rope_theta": 1000000000.0},
                     sliding_window=None, tie_word_embeddings=False),
        "vision": dict(model_type="pixtral", hidden_size=1024, intermediate_size=4096,
                       num_hidden_layers=24, num_attention_heads=16, image_size=1024,
                       patch_size=16, hidden_act="silu", rope_theta=10000.0),
    },
}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 2)


# --- writing models -------------------------------------------------------------------------------


def write_model(spec: str, out: Path, device: str) -> dict[str, Any]:
    """Write the random model ``family:shape`` (or ``lora:2b``: a LoRA adapter on Qwen2-VL-2B)."""
    import torch

    from station.modeltools import tiny

    family, shape = spec.split(":")
    t0 = time.perf_counter()
    if family == "lora":
        base = out.parent / f"{out.name}-base"
        tiny.write_tiny_model(base, "qwen2_vl", shape=shape, device=device)
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(str(base), dtype=torch.bfloat16,
                                                            device_map={"": device})
        cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj",
                                                               "o_proj"], lora_dropout=0.0)
        peft_model = get_peft_model(model, cfg)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:  # random, non-zero: the adapter changes the answer
                torch.nn.init.normal_(p, std=0.01)
        peft_model.save_pretrained(out)
        acfg = json.loads((out / "adapter_config.json").read_text())
        acfg["base_model_name_or_path"] = str(base)
        (out / "adapter_config.json").write_text(json.dumps(acfg))
        n_params = sum(p.numel() for p in model.parameters())
        del model, peft_model
    elif spec in REAL_SHAPES or shape == "tiny" or family == "qwen2_vl":
        if spec not in REAL_SHAPES:
            tiny.write_tiny_model(out, family, shape=shape, device=device)
        else:
            _write_real(family, REAL_SHAPES[spec], out, device)
        n_params = json.loads((out / "station_tiny.json").read_text())["parameters"]
    else:
        raise ValueError(f"unknown model {spec}")
    return {"write_s": round(time.perf_counter() - t0, 1), "parameters": n_params}


def _write_real(family: str, shape: dict[str, Any], out: Path, device: str) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    from station.modeltools import tiny

    tok = tiny.build_tokenizer(family)
    text, vision = dict(shape["text"]), dict(shape["vision"])
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        q = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>",
             "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        text.update(bos_token_id=q["<|endoftext|>"], eos_token_id=q["<|im_end|>"],
                    pad_token_id=q["<|endoftext|>"], tie_word_embeddings=False)
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                  image_token_id=q["<|image_pad|>"],
                                  video_token_id=q["<|video_pad|>"],
                                  vision_start_token_id=q["<|vision_start|>"],
                                  vision_end_token_id=q["<|vision_end|>"])
        processor = tiny.build_processor(family, tok)
    elif family == "mllama":
        from transformers import MllamaConfig
        from transformers.models.mllama import MllamaProcessor
        from transformers.models.mllama.image_processing_pil_mllama import (
            MllamaImageProcessorPil,
        )

        text.update(bos_token_id=tok.convert_tokens_to_ids("<|begin_of_text|>"),
                    eos_token_id=tok.convert_tokens_to_ids("<|eot_id|>"),
                    pad_token_id=tok.convert_tokens_to_ids("<|finetune_right_pad_id|>"))
        config = MllamaConfig(vision_config=vision, text_config=text,
                              image_token_index=tok.convert_tokens_to_ids("<|image|>"))
        ip = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
        processor = MllamaProcessor(image_processor=ip, tokenizer=tok,
                                    chat_template=tok.chat_template)
    else:
        from transformers import LlavaConfig

        text.update(bos_token_id=tok.convert_tokens_to_ids("<s>"),
                    eos_token_id=tok.convert_tokens_to_ids("</s>"),
                    pad_token_id=tok.convert_tokens_to_ids("<pad>"))
        config = LlavaConfig(vision_config=vision, text_config=text,
                             image_token_index=tok.convert_tokens_to_ids("[IMG]"),
                             projector_hidden_act="gelu", vision_feature_layer=-1,
                             vision_feature_select_strategy="full")
        processor = tiny.build_processor(family, tok)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    if family == "llava":
        (out / "processor_config.json").write_text(json.dumps(tiny.PIXTRAL_PROCESSOR_CONFIG))
    (out / "chat_template.jinja").write_text(tok.chat_template)
    info = {"family": family, "parameters": sum(p.numel() for p in model.parameters())}
    (out / "station_tiny.json").write_text(json.dumps(info))
    del model


# --- running one folder with one backend ----------------------------------------------------------


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Child: load ``--model-dir`` with ``--backend``; time each configuration in the pipeline."""
    from pipeline.vlm.backends import prepare_environment

    work = Path(args.workdir)
    prepare_environment(work / "cache")
    if args.backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers, as Unsloth asks)
    import numpy as np
    import torch

    from camera.synthetic import LineSpec, make_part, sample_defects
    from pipeline.base.frames import Frame
    from pipeline.inspector import Inspector
    from pipeline.judges.metric import MetricJudge
    from pipeline.judges.vlm import VlmPartJudge
    from pipeline.vlm.backends import load_model
    from pipeline.vlm.judge import VlmJudge
    from pipeline.vlm.settings import VlmSettings
    from station.demo.line import build_demo_recipe

    cuda = args.device.startswith("cuda")
    spec = LineSpec()
    recipe = build_demo_recipe(work / f"demo-{os.getpid()}", spec, seed=1, n_train=8)
    rng = np.random.default_rng(3)
    frames = []
    for i in range(args.parts + args.warm):
        defects = sample_defects(spec, rng, 1) if i % 2 else []
        frames.append(Frame(make_part(spec, rng, defects).image, seq=i, source_id="bench"))
    base = {"enabled": True, "model_dir": str(args.model_dir), "backend": args.backend,
            "device": args.device, "timeout_ms": 600_000, "defect_modes": MODES,
            "max_new_tokens": args.max_new_tokens, "warmup": True}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loaded = load_model(VlmSettings.from_mapping(base), cache_dir=work / "cache")
    res: dict[str, Any] = {"load_s": round(time.perf_counter() - t0, 1),
                           "linear_4bit": loaded.n_4bit, "linear_total": loaded.n_linear,
                           "family": loaded.family, "modes": {}}
    if cuda:
        res["gib_after_load"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    configs = {
        "scored_pass": {"mode": "scored", "threshold": 0.999999},
        "scored_defect": {"mode": "scored", "threshold": 1e-6},
        "scored_stepwise": {"mode": "scored", "threshold": 1e-6, "one_pass": False},
        "generate": {"mode": "generate",
                     "compile_generate": args.backend == "transformers" and cuda},
    }
    wanted = [c for c in args.configs.split(",") if c]
    onepass_p: list[float] = []
    onepass_addr: list[str] = []
    for name in [c for c in configs if c in wanted]:
        t_cfg = time.perf_counter()
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            judge = VlmJudge(VlmSettings.from_mapping({**base, **configs[name]}), loaded=loaded)
            startup_s = time.perf_counter() - t0
            stage = VlmPartJudge(judge)
            inspector = Inspector(recipe, [MetricJudge(recipe.settings.thresholds), stage])
            times: list[float] = []
            by: dict[str, list[float]] = {}
            ps: list[float] = []
            addrs: list[str] = []
            stages: dict[str, list[float]] = {}
            last: dict[str, Any] = {}
            for i, frame in enumerate(frames):
                r = inspector.inspect(frame)
                v = r.judges["vlm"]
                if v.verdict.value == "error":
                    raise RuntimeError(f"vlm error: {v.reason}")
                if i < args.warm:
                    continue
                ms = r.timings_ms["vlm"]
                times.append(ms)
                by.setdefault(v.verdict.value, []).append(ms)
                last = v.details
                if v.details.get("p_defect") is not None:
                    ps.append(float(v.details["p_defect"]))
                    addrs.append(str(v.details.get("address")))
                eng = judge._engine
                inner = eng.onepass or (eng.fastgen.op if eng.fastgen is not None else None)
                if inner is not None:
                    got = {**eng.timing, **inner.timing,
                           **(eng.fastgen.timing if eng.fastgen is not None else {})}
                    got = {k: x for k, x in got.items() if k.endswith("_ms") and k != "prefix_ms"}
                    judge_ms = float(v.details.get("ms", 0.0))
                    got["judge_ms"] = judge_ms
                    # the rest of the judge (tree walk, result, parsing) and, outside it, the
                    # composition of the images and the hand-over to the worker thread
                    got["judge_rest_ms"] = judge_ms - sum(
                        got.get(k, 0.0) for k in ("prompt_ms", "sig_ms", "preprocess_ms",
                                                  "pass_ms", "generate_ms"))
                    got["outside_judge_ms"] = ms - judge_ms
                    for k, x in got.items():
                        stages.setdefault(k, []).append(x)
            entry: dict[str, Any] = {
                "n": len(times), "p50_ms": _pct(times, 0.5), "p95_ms": _pct(times, 0.95),
                "mean_ms": round(statistics.fmean(times), 2),
                "by_verdict": {k: {"n": len(x), "p50_ms": _pct(x, 0.5), "p95_ms": _pct(x, 0.95)}
                               for k, x in by.items()},
                "startup_s": round(startup_s, 2),
                "tokens_in": last.get("tokens_in"), "forwards": last.get("forwards"),
                "tokens_out": last.get("tokens_out"), "address": last.get("address"),
            }
            op = judge._engine.onepass
            entry["one_pass_active"] = op is not None
            if op is not None and op.plan is not None:
                plan = op.plan
                entry["onepass"] = {
                    "cached_prefix_tokens": plan.split, "tokens_per_part": plan.n_lin,
                    "tree_tokens": len(plan.fed), "graph_scope": plan.scope,
                    "capture_s": plan.capture_s, "note": plan.note,
                    "prefix_ms": op.timing.get("prefix_ms"),
                }
                if name == "scored_defect" and plan.static:  # cached families only
                    entry["breakdown_ms"] = breakdown(judge, op)
            if stages:
                entry["stages_p50_ms"] = {k: _pct(x, 0.5) for k, x in stages.items()}
            gen_plan = judge.model_info.get("cached_generate")
            if gen_plan:
                entry["cached_generate"] = gen_plan
            if name == "scored_defect":
                onepass_p, onepass_addr = ps, addrs
            if name == "scored_stepwise" and onepass_p:
                pairs = list(zip(ps, onepass_p, strict=False))
                same = [a == b for a, b in zip(addrs, onepass_addr, strict=False)]
                entry["vs_onepass"] = {
                    "max_abs_dp_defect": round(max(abs(a - b) for a, b in pairs), 5),
                    "address_agreement": round(sum(same) / max(1, len(same)), 3),
                }
            if cuda:
                entry["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            judge.close()
            del inspector, stage, judge
        except Exception as exc:  # one configuration failing must not hide the others
            entry = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        entry["wall_s"] = round(time.perf_counter() - t_cfg, 1)
        res["modes"][name] = entry
        if cuda:
            torch.cuda.empty_cache()
    return res


def breakdown(judge: Any, op: Any, n: int = 10) -> dict[str, Any]:
    """Stage times of the one-pass judge, each synchronised and measured alone (median of n)."""
    import torch

    eng = judge._engine
    plan = op.plan
    st = plan.static
    cuda = str(eng.device).startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn: Any) -> float:
        xs = []
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            xs.append((time.perf_counter() - t0) * 1000)
        return round(statistics.median(xs), 2)

    prompt = eng._last_prompt
    out: dict[str, Any] = {}
    with torch.inference_mode():
        out["image_processor_test_image"] = timed(
            lambda: eng.processor.image_processor(images=[prompt.images[-1]],
                                                  return_tensors="pt"))
        out["vision_tower_eager"] = timed(lambda: op._vision(st))
        feats = op._vision(st)
        out["language_prefill_and_tree_eager"] = timed(lambda: op._language(plan, st, feats))
        if plan.graph is not None:
            out["graph_replay"] = timed(plan.graph.replay)
        ref = st["out"] if st.get("out") is not None else op._step(plan)
        out["unpack_logits_to_host"] = timed(lambda: op._unpack(plan, ref))
    return out


# --- parent ---------------------------------------------------------------------------------------


def _child(argv: list[str], timeout: float, log: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr or b""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"error": f"timeout after {timeout:.0f} s", "stderr_tail": tail[-1500:]}
    if log is not None:
        with log.open("a") as f:
            f.write(f"===== {' '.join(argv[:8])} (exit {p.returncode})\n")
            f.write(p.stdout[-8000:] + "\n----- stderr\n" + p.stderr[-12000:] + "\n")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT "):])
    return {"error": f"exit {p.returncode}", "stderr_tail": p.stderr[-2500:]}


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
    """Parent: write each model, run each backend in its own process, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2_vl:2b,qwen2_vl:7b")
    ap.add_argument("--backends", default="transformers,unsloth")
    ap.add_argument("--configs", default="scored_pass,scored_defect,scored_stepwise,generate")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/onepass-bench"))
    ap.add_argument("--budget-s", type=float, default=560)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        if args._child == "write":
            r = write_model(args.spec, Path(args.model_dir), args.device)
        else:
            r = run_one(args)
        print("@@RESULT " + json.dumps(r, default=str), flush=True)
        return 0

    t_start = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "bench": "vlm_onepass_gpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(), "device": args.device, "parts": args.parts, "warm": args.warm,
        "results": [],
    }
    if args.device.startswith("cuda"):
        import torch

        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

    def left() -> float:
        return args.budget_s - (time.monotonic() - t_start)

    def flush() -> None:
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n")

    common = ["--device", args.device, "--workdir", str(args.workdir), "--parts",
              str(args.parts), "--warm", str(args.warm), "--max-new-tokens",
              str(args.max_new_tokens), "--configs", args.configs]
    for spec in [m for m in args.models.split(",") if m]:
        folder = args.workdir / spec.replace(":", "-")
        for p in (folder, folder.parent / f"{folder.name}-base"):
            shutil.rmtree(p, ignore_errors=True)
        if left() < 60:
            report["results"].append({"model": spec, "skipped": "time budget"})
            flush()
            continue
        w = _child(["--_child", "write", "--spec", spec, "--model-dir", str(folder), *common],
                   timeout=max(30.0, left()), log=args.log)
        if "error" in w:
            report["results"].append({"model": spec, "write": w})
            flush()
            continue
        backends = [b for b in args.backends.split(",") if b]
        for backend in backends:
            if left() < 45:
                report["results"].append({"model": spec, "backend": backend,
                                          "skipped": "time budget"})
                continue
            r = _child(["--_child", "run", "--backend", backend, "--model-dir", str(folder),
                        *common], timeout=max(30.0, left()), log=args.log)
            report["results"].append({"model": spec, "backend": backend, **w, **r})
            flush()
        for p in (folder, folder.parent / f"{folder.name}-base"):
            shutil.rmtree(p, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    flush()
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
