"""``station check-config``: validate a station YAML and its recipe (exit 78 when wrong).

Everything ``station run`` would refuse at start-up is refused here first, naming file:line:
wrong keys and values, duplicate keys, endpoint ports outside 1-65535, folders the station cannot
write, a recipe whose files do not match ``recipe.sha256`` or whose unit space / thresholds /
golden are unusable, an enabled VLM without a usable local model folder, a ``security:`` section
whose key files are missing, a camera that cannot be created (a missing image folder).  Then
the COMPLETE inspector is built as the daemon builds it
(:func:`station.build.build_inspector`: recipe, judges, policy, model) and the golden is run
through it (a dry run): an ``error`` verdict, an exception, or the metric judge calling the golden
itself a defect is a refusal too.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TextIO

from pipeline.base.errors import ConfigError
from pipeline.base.frames import Frame
from pipeline.inspector import Inspector
from pipeline.verdicts import Verdict
from station.build import build_camera, build_inspector
from station.config import load_config
from station.machine_output import machine_stdout
from station.security import load_curve


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``check-config`` to the CLI."""
    p = sub.add_parser("check-config", help="validate a station config and its recipe")
    p.add_argument("config", nargs="?", help="station YAML")
    p.add_argument("-c", "--config", dest="config_opt", help="station YAML (same as positional)")
    p.add_argument("--json", action="store_true",
                   help="accepted for symmetry: stdout is always one JSON line, nothing else")
    p.set_defaults(func=run)


def dry_run(inspector: Inspector) -> dict[str, str]:
    """Run the recipe's golden through ``inspector`` as a part; returns each judge's verdict.
    ConfigError when the inspector fails, says ``error``, or the metric judge finds defects on
    the golden itself (its thresholds cannot fit)."""
    recipe = inspector.recipe
    frame = Frame(image=recipe.golden.copy(), seq=0, ts=time.time(), source_id="check-config",
                  meta={"part_id": "check-config-golden"})
    where = str(recipe.folder) if recipe.folder else None
    try:
        result = inspector.inspect(frame, "check-config-golden")
    except Exception as exc:  # what would crash the daemon on its first part
        raise ConfigError(f"dry run: the inspector failed on the golden: "
                          f"{type(exc).__name__}: {exc}", where) from None
    if result.verdict == Verdict.ERROR:
        raise ConfigError(f"dry run: the golden through the inspector gives error "
                          f"({result.reason})", where)
    metric = result.judges.get("metric")
    if metric is not None and metric.verdict == Verdict.DEFECT:
        cells = ", ".join(d.address for d in metric.defects[:3])
        raise ConfigError(f"dry run: the metric judge calls the golden itself a defect (cells "
                          f"{cells}): the thresholds do not fit this golden", where)
    return {name: j.verdict.value for name, j in result.judges.items()}


def run(args: argparse.Namespace) -> int:
    """:func:`check` with stdout reserved for its one JSON line (what a model loader or a judge
    prints goes to stderr)."""
    with machine_stdout() as out:
        return check(args, out)


def check(args: argparse.Namespace, out: TextIO) -> int:
    """Load both files fully, build the inspector, dry-run the golden; print a one-line
    summary; ConfigError → exit 78."""
    path = args.config_opt or args.config
    if not path:
        raise ConfigError("give the station YAML to check")
    cfg = load_config(path, check_paths=True)
    curve = load_curve(cfg)
    build_camera(cfg).close()  # created as the daemon creates it (not started)
    inspector = build_inspector(cfg)
    try:
        judged = dry_run(inspector)
    finally:
        close = getattr(inspector, "close", None)
        if close is not None:
            close()
    recipe = inspector.recipe
    print(json.dumps({
        "ok": True,
        "config": cfg.path,
        "station": cfg.station.id,
        "mode": cfg.mode,
        "camera": cfg.camera.type,
        "recipe": str(recipe.folder),
        "recipe_hash": recipe.short_hash,
        "cells": len(recipe.grid.cells),
        "policy": cfg.policy,
        "judges": list(judged),
        "dry_run": judged,
        "vlm": "vlm" in judged,
        "curve": curve is not None,
        "web": cfg.web.listen,  # the operator page's HOST:PORT, null when off
    }), file=out, flush=True)
    return 0
