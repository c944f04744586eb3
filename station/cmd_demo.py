"""``station demo``: the embedded default — a synthetic line end to end, seconds on a CPU.

Generates a labelled synthetic line (27-pin parts with pose/lighting jitter and five defect modes)
in a temporary folder, builds a recipe from good parts, replays the line through the same pipeline
as the live station while printing the operators' feed, and ends with a summary.  ``--serve`` runs
the synthetic line as a live station instead (trigger mode on the default endpoints).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from camera.replay import ManifestSource
from camera.synth import LineSpec, write_line
from pipeline.base.frames import Frame
from pipeline.vlm.settings import effective_vlm_settings
from station.cmd_replay import run_replay
from station.demo.line import build_demo_recipe
from station.machine_output import machine_stdout, print_json_line
from station.recipe_tools import inspector_for, vlm_flags
from station.replay_runner import PartOutcome

GREEN, RED, YELLOW, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[0m"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser("demo", help="synthetic line end to end (the embedded default)")
    p.add_argument("--parts", type=int, default=100, help="parts on the line (default 100)")
    p.add_argument("--defect-share", type=float, default=0.3,
                   help="share of defective parts (default 0.3)")
    p.add_argument("--seed", type=int, default=1, help="seed of the line (default 1)")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--train", type=int, default=24, help="good parts for the recipe (default 24)")
    p.add_argument("--keep", metavar="DIR", help="write the line, recipe and report here")
    p.add_argument("--policy", default="any",
                   help="decision policy: any, all (alias both) or a judge's name (metric, vlm)")
    p.add_argument("--vlm", metavar="MODEL_DIR", help="add the VLM judge from this model folder")
    p.add_argument("--vlm-backend", default=None, help="transformers (default) or unsloth")
    p.add_argument("--json", action="store_true",
                   help="machine output: stdout is only the summary as one JSON line (the feed "
                        "and the human summary go to stderr)")
    p.add_argument("--quiet", action="store_true", help="no per-part feed")
    p.add_argument("--serve", action="store_true", help="run the synthetic line as a live station")
    p.add_argument("--state", metavar="DIR", help="--serve: journal/state folder")
    p.add_argument("--config", metavar="YAML",
                   help="--serve: station YAML overriding the demo defaults (endpoints, mode)")
    for name, port in (("pub", 5556), ("trigger", 5555), ("catchup", 5557)):
        p.add_argument(f"--{name}", metavar="ENDPOINT",
                       help=f"--serve: the {name} endpoint (default tcp://127.0.0.1:{port})")
    p.add_argument("--web-listen", metavar="HOST:PORT",
                   help="--serve: where the operator page listens (default 127.0.0.1:8080; "
                        "'off': no page)")
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def _without_row_golden(frames: Iterable[Frame]) -> Iterator[Frame]:
    for frame in frames:
        frame.meta.pop("golden", None)
        yield frame


def _feed_line(o: PartOutcome, color: bool) -> str:
    r = o.result
    verdict = r.verdict.value
    if color:
        c = {"pass": GREEN, "defect": RED}.get(verdict, YELLOW)
        verdict = f"{c}{verdict:<6}{RESET}"
    else:
        verdict = f"{verdict:<6}"
    truth = ""
    if o.truth_label:
        mark = {"tp": "ok", "tn": "ok", "fp": "FALSE REJECT", "fn": "MISS"}[o.outcome or "tn"]
        where = (' ' + ';'.join(o.truth_addresses)) if o.truth_addresses else ''
        truth = f"  truth={o.truth_label}{where} [{mark}]"
    addr = "; ".join(r.addresses) or "-"
    return (f"{time.strftime('%H:%M:%S')} {r.part_id:<14} {verdict} {addr:<28} "
            f"{r.timings_ms.get('total', 0):6.1f} ms{truth}")


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when the line ran (and, with --serve, when the station stopped).
    ``--json`` (without ``--serve``): stdout carries only the summary line."""
    with machine_stdout(args.json and not args.serve) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    spec = LineSpec(size=_size(args.size))
    with tempfile.TemporaryDirectory(prefix="station-demo-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        recipe = build_demo_recipe(workdir, spec, args.seed, args.train)
        t_recipe = time.perf_counter() - t0
        vlm = effective_vlm_settings(recipe.settings, cli=vlm_flags(args.vlm, args.vlm_backend))
        inspector = inspector_for(recipe, args.policy, vlm, workdir / "cache")
        if args.serve:
            from station.demo_serve import serve_demo

            return serve_demo(args, recipe, inspector, spec)
        n_defect = round(args.parts * args.defect_share)
        manifest = write_line(workdir / "line", args.parts - n_defect, n_defect, seed=args.seed,
                              spec=spec, n_train=0)
        human = sys.stderr if args.json else out  # stdout carries only JSON with --json
        color = human.isatty()
        feed = None if args.quiet else (
            lambda o: print(_feed_line(o, color), file=human, flush=True))
        source = ManifestSource(manifest)
        try:
            # the line's manifest names its perfect rendered golden per row; the demo judges
            # against the recipe built from good parts instead, as a station on a real line does
            summary = run_replay(_without_row_golden(source), inspector, out=None,
                                 report_dir=str(workdir / "report") if args.keep else None,
                                 title="Synthetic line demo", extra=feed, desc="demo")
        finally:
            source.close()
    summary["recipe_build_s"] = round(t_recipe, 2)
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    _print_summary(summary, human)
    if args.json:
        keys = ("parts", "misses", "false_rejects", "false_reject_rate", "address_accuracy",
                "errors", "latency_ms", "judges", "recipe_build_s", "wall_s")
        print_json_line({k: summary[k] for k in keys if k in summary}, out)
    return 0


def _print_summary(s: dict[str, Any], out: TextIO) -> None:
    total = s["latency_ms"].get("total", {})
    print(f"\n{s['parts']} parts: {s['misses']} misses, {s['false_rejects']} false rejects "
          f"(rate {s['false_reject_rate']}), address accuracy {s['address_accuracy']}, "
          f"{s['errors']} errors; latency p50 {total.get('p50')} ms, p99 {total.get('p99')} ms; "
          f"recipe built in {s['recipe_build_s']} s, demo {s['wall_s']} s", file=out)
