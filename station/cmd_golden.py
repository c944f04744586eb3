"""``station golden build``: good frames (+ grid) → recipe folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from camera.replay import open_replay_source
from pipeline.base.errors import ConfigError, StationError
from pipeline.recipe import RecipeSettings, build_recipe, read_image
from station.recipe_tools import load_grid_file, load_settings_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``golden`` to the CLI."""
    p = sub.add_parser("golden", help="build a recipe (golden, unit space, thresholds, grid)")
    gsub = p.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="build a recipe folder from good frames")
    b.add_argument("frames", help="good frames: image folder, video, manifest CSV (pass rows) "
                                  "or recording")
    b.add_argument("-o", "--out", required=True, help="recipe folder to write")
    b.add_argument("--grid", help="grid YAML ({roi, columns, rows} or {cells})")
    b.add_argument("--settings", help="recipe settings YAML (align, nsoartc, cells, vlm, grid)")
    b.add_argument("--golden", help="golden image (default: median of the aligned good frames)")
    b.add_argument("--name", help="recipe name (default: the folder name)")
    b.add_argument("--max-frames", type=int, default=64, help="good frames to use (default 64)")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Build and save the recipe; print its summary as JSON."""
    grid = load_grid_file(args.grid) if args.grid else None
    if args.settings:
        settings = load_settings_file(args.settings, grid)
    elif grid is not None:
        settings = RecipeSettings(name=args.name or Path(args.out).name, grid=grid)
    else:
        raise ConfigError("give --grid or --settings with a grid")
    frames = []
    skipped = 0
    source = open_replay_source(args.frames)
    try:
        for frame in source:
            label = str(frame.meta.get("label", "pass")).lower()
            if not frame.ok or label not in ("pass", "ok", "good", "passed"):
                skipped += 1
                continue
            frames.append(frame.image)
            if len(frames) >= args.max_frames:
                break
    finally:
        source.close()
    golden = read_image(args.golden) if args.golden else None
    if not frames and golden is None:
        raise StationError(f"no good frames in {args.frames}")
    name = args.name or settings.name or Path(args.out).name
    recipe = build_recipe(frames, settings.grid, name=name, golden=golden, settings=settings,
                          source=str(args.frames))
    recipe.save(args.out)
    print(json.dumps({"recipe": str(Path(args.out).resolve()), "hash": recipe.short_hash,
                      "good_frames": len(frames), "skipped": skipped,
                      "cells": len(recipe.grid.cells), **recipe.settings.built}))
    return 0
