"""``station eval``: score labelled data (a manifest, or a DeepPCB-layout folder)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TextIO

from camera.deeppcb import DeepPcbSource
from camera.replay import open_replay_source
from pipeline.base.errors import ConfigError
from pipeline.inspector import Inspector
from pipeline.recipe import build_recipe, read_image
from pipeline.vlm.evaluation import VlmEvaluation
from station.cmd_replay import add_inspector_args, print_human_summary, run_replay
from station.golden_switch import GoldenSwitch
from station.machine_output import machine_stdout, print_json_line
from station.recipe_tools import DEFAULTS_DIR, inspector_from_args, load_settings_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the CLI."""
    p = sub.add_parser("eval", help="score labelled data: a manifest or a DeepPCB-layout folder")
    p.add_argument("data", help="manifest CSV, or a folder with index.csv (DeepPCB layout)")
    p.add_argument("--layout", choices=("manifest", "deeppcb"), default=None,
                   help="data layout (default: deeppcb for a folder with index.csv)")
    add_inspector_args(p)
    p.add_argument("--settings", help="recipe settings YAML for --layout deeppcb "
                                      "(default: the built-in DeepPCB settings)")
    p.add_argument("--report", metavar="DIR",
                   help="write report.json, report.md and report.html into DIR")
    p.add_argument("--out", metavar="FILE", help="per-part JSON lines to FILE")
    p.add_argument("--json", action="store_true",
                   help="accepted for symmetry: stdout is always the summary as one JSON line")
    p.set_defaults(func=run)


def deeppcb_inspector(data: Path, settings_path: str | None) -> GoldenSwitch:
    """Inspectors whose recipe settings are the DeepPCB ones; every pair brings its golden (a
    recipe is built once per golden, the last two kept)."""
    settings = load_settings_file(settings_path or DEFAULTS_DIR / "deeppcb.yaml")
    source = DeepPcbSource(data)
    try:
        first = next(iter(source), None)
    finally:
        source.close()
    if first is None:
        raise ConfigError(f"{data}: index.csv lists no pairs")
    golden = read_image(first.meta["golden"], grey=settings.nsoartc.channels == "grey")
    recipe = build_recipe([], settings.grid, golden=golden, settings=settings, source=str(data))
    recipe.hash = "deeppcb-" + settings.name
    return GoldenSwitch(Inspector(recipe), cache_size=2)


def _vlm_evaluation(inspector: object) -> VlmEvaluation | None:
    """A collector of the VLM judge's figures when the inspector has a ``vlm`` judge."""
    vlm = next((j for j in getattr(inspector, "judges", []) if getattr(j, "name", "") == "vlm"),
               None)
    if vlm is None:
        return None
    return VlmEvaluation(threshold=getattr(getattr(vlm, "settings", None), "threshold", None))


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the summary as one JSON line (alone on stdout)."""
    with machine_stdout() as stdout:
        return _run(args, stdout)


def _run(args: argparse.Namespace, stdout: TextIO) -> int:
    data = Path(args.data)
    layout = args.layout or ("deeppcb" if (data / "index.csv").is_file() else "manifest")
    if layout == "deeppcb":
        if args.config or args.recipe or args.vlm:
            raise ConfigError("--layout deeppcb builds its recipe per pair; use --settings")
        inspector = deeppcb_inspector(data, args.settings)
        source = DeepPcbSource(data)
    else:
        inspector, _ = inspector_from_args(args)
        source = open_replay_source(data)
    vlm_eval = _vlm_evaluation(inspector)
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        out = stack.enter_context(Path(args.out).open("w")) if args.out else None
        total = len(source) if hasattr(source, "__len__") else None
        summary = run_replay(source, inspector, out=out, report_dir=args.report,
                             title=f"Evaluation of {data} ({layout})", limit=args.limit,
                             total=total, desc="eval",
                             extra=vlm_eval and (lambda o: vlm_eval.add(
                                 truth=o.truth_label, truth_addresses=o.truth_addresses,
                                 judges=o.result.judges)))
        if vlm_eval is not None:  # the VLM judge's own figures (pipeline/vlm/evaluation.py)
            summary["vlm_judge"] = vlm_eval.report()
        print_human_summary(summary, args.report)
        print_json_line(summary, stdout)
    return 0
