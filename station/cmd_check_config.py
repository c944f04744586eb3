"""``station check-config``: validate a station YAML and its recipe (exit 78 when wrong).

Everything ``station run`` would refuse at start-up is refused here first, naming file:line:
wrong keys and values, duplicate keys, endpoint ports outside 1-65535, folders the station cannot
write, an enabled VLM without a usable local model folder."""

from __future__ import annotations

import argparse
import json

from pipeline.recipe import Recipe
from pipeline.vlm.settings import effective_vlm_settings
from station.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``check-config`` to the CLI."""
    p = sub.add_parser("check-config", help="validate a station config and its recipe")
    p.add_argument("config", nargs="?", help="station YAML")
    p.add_argument("-c", "--config", dest="config_opt", help="station YAML (same as positional)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load both files fully; print a one-line summary; ConfigError → exit 78."""
    path = args.config_opt or args.config
    if not path:
        from pipeline.base.errors import ConfigError

        raise ConfigError("give the station YAML to check")
    cfg = load_config(path, check_paths=True)
    recipe = Recipe.load(cfg.resolve(cfg.recipe))
    vlm = effective_vlm_settings(recipe.settings, cfg)  # the model folder checked when enabled
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
        "vlm": vlm.enabled,
    }))
    return 0
