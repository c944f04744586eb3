"""``station golden build``: good frames (+ grid) → recipe folder.

The build refuses what would make a bad recipe: an existing recipe folder (without ``--force``),
a malformed grid file or a grid / ROI outside the image (ConfigError naming file:line, exit 78),
and good frames that disagree with each other (:mod:`station.golden_check`: outliers are
reported and left out; above ``--max-outlier-share`` of them, and more than one, the build
stops).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from camera.replay import open_replay_source
from pipeline.base.errors import ConfigError, StationError
from pipeline.base.yamlconf import load_yaml
from pipeline.grid import AddressGrid
from pipeline.recipe import RecipeSettings, build_recipe, read_image
from station.golden_check import (
    MAX_OUTLIER_SHARE,
    OUTLIER_RATIO,
    check_grid_inside,
    frame_agreement,
)
from station.machine_output import machine_stdout, print_json_line
from station.progress import progress_bar
from station.recipe_tools import load_settings_file

GRID_KEYS = ("roi", "columns", "rows", "cells")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``golden`` to the CLI."""
    p = sub.add_parser("golden", help="build a recipe (golden, unit space, thresholds, grid)")
    gsub = p.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="build a recipe folder from good frames")
    b.add_argument("frames", help="good frames: image folder, video, manifest CSV (pass rows) "
                                  "or recording")
    b.add_argument("-o", "--out", required=True, help="recipe folder to write")
    b.add_argument("--force", action="store_true", help="replace an existing recipe folder")
    b.add_argument("--grid", help="grid YAML ({roi, columns, rows} or {cells})")
    b.add_argument("--settings", help="recipe settings YAML (align, nsoartc, cells, vlm, grid)")
    b.add_argument("--golden", help="golden image (default: median of the aligned good frames)")
    b.add_argument("--name", help="recipe name (default: the folder name)")
    b.add_argument("--max-frames", type=int, default=64, help="good frames to use (default 64)")
    b.add_argument("--outlier-ratio", type=float, default=OUTLIER_RATIO,
                   help="a good frame whose worst cell scores more than this times the cell's "
                        f"median over the good frames is an outlier (default {OUTLIER_RATIO:g})")
    b.add_argument("--max-outlier-share", type=float, default=MAX_OUTLIER_SHARE,
                   help="stop when more than this share of the good frames (and more than "
                        f"one) are outliers (default {MAX_OUTLIER_SHARE:g})")
    b.add_argument("--json", action="store_true",
                   help="accepted for symmetry: the summary is always one JSON line on stdout")
    b.set_defaults(func=run_build)


def load_grid(path: str) -> tuple[dict[str, Any], Any, tuple[str, ...]]:
    """The grid mapping of a grid YAML (optionally under ``grid:``), checked; ConfigError with
    file:line when malformed."""
    doc = load_yaml(path)
    data, prefix = doc.data, ()
    if isinstance(data, dict) and "grid" in data:
        data, prefix = data["grid"], ("grid",)
    if not isinstance(data, dict):
        raise ConfigError("a grid file must be a mapping ({roi, columns, rows} or {cells})",
                          doc.where(prefix))
    try:
        AddressGrid.from_config(data)
    except (ValueError, TypeError, KeyError) as exc:
        # point at the key the message names (a missing key: at the grid itself)
        key = None if "missing" in str(exc) else next(
            (k for k in GRID_KEYS if k in str(exc) and k in data), None)
        raise ConfigError(f"malformed grid: {exc}",
                          doc.where((*prefix, key) if key else prefix)) from None
    return data, doc, prefix


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise StationError(f"{out} exists: give --force to replace it (the old recipe is "
                               "kept otherwise)")


def _read_good_frames(path: str, limit: int) -> tuple[list, list[str], int]:
    frames, names, skipped = [], [], 0
    source = open_replay_source(path)
    total = len(source) if hasattr(source, "__len__") else None
    try:
        with progress_bar(total, "reading frames", unit="frame") as bar:
            for frame in source:
                bar.update()
                label = str(frame.meta.get("label", "pass")).lower()
                if not frame.ok or label not in ("pass", "ok", "good", "passed"):
                    skipped += 1
                    continue
                frames.append(frame.image)
                names.append(str(frame.meta.get("path") or f"#{frame.seq}"))
                if len(frames) >= limit:
                    break
    finally:
        source.close()
    return frames, names, skipped


def run_build(args: argparse.Namespace) -> int:
    """Check, build and save the recipe; print its summary as one JSON line on stdout."""
    with machine_stdout() as out:
        return _build(args, out)


def _build(args: argparse.Namespace, out_stream: TextIO) -> int:
    out = Path(args.out)
    _refuse_existing(out, args.force)
    grid, grid_doc, grid_prefix = load_grid(args.grid) if args.grid else (None, None, ())
    if args.settings:
        settings = load_settings_file(args.settings, grid)
    elif grid is not None:
        settings = RecipeSettings(name=args.name or out.name, grid=grid)
    else:
        raise ConfigError("give --grid or --settings with a grid")
    grid_where = (grid_doc.where((*grid_prefix, "roi")) if grid_doc is not None
                  else args.settings)
    frames, names, skipped = _read_good_frames(args.frames, args.max_frames)
    golden = read_image(args.golden) if args.golden else None
    if not frames and golden is None:
        raise StationError(f"no good frames in {args.frames}")
    check_grid_inside(settings.grid, (golden if golden is not None else frames[0]).shape,
                      grid_where)
    name = args.name or settings.name or out.name
    recipe = build_recipe(frames, settings.grid, name=name, golden=golden, settings=settings,
                          source=str(args.frames))
    agreement = None
    if len(frames) >= 3:
        with progress_bar(2 * len(frames), "checking good frames", unit="frame") as bar:
            agreement = frame_agreement(frames, recipe.golden, settings,
                                        ratio_limit=args.outlier_ratio, step=bar.update)
        bad = sorted(set(agreement.outliers) | set(agreement.unaligned))
        if len(bad) > max(1.0, args.max_outlier_share * len(frames)):  # one is left out
            listed = ", ".join(f"{Path(names[i]).name} ({agreement.ratios[i]:.1f}x)"
                               if i in agreement.outliers else f"{Path(names[i]).name} "
                               "(does not align)" for i in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise StationError(
                f"{len(bad)} of {len(frames)} good frames disagree with the others (worst cell "
                f"above {args.outlier_ratio:g}x its median, or not aligned), more than "
                f"{args.max_outlier_share:.0%}: {listed}{more}. Are there defective or wrong "
                "parts among the good frames? Nothing was written.")
        if bad:
            for i in bad:
                print(f"golden build: left out {names[i]}: "
                      + (f"worst cell {agreement.ratios[i]:.1f}x its median"
                         if i in agreement.outliers else "does not align"), file=sys.stderr)
            left_out = set(bad)
            keep = [f for i, f in enumerate(frames) if i not in left_out]
            recipe = build_recipe(keep, settings.grid, name=name, golden=golden,
                                  settings=settings, source=str(args.frames))
    if out.exists() and args.force:
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    recipe.save(out)
    built = dict(recipe.settings.built)
    summary = {"recipe": str(out.resolve()), "hash": recipe.short_hash,
               "good_frames": len(frames), "used_frames": built.pop("good_frames", len(frames)),
               "skipped": skipped, "cells": len(recipe.grid.cells), **built}
    if agreement is not None:
        summary["agreement"] = agreement.to_json(names)
    print_json_line(summary, out_stream)
    return 0
