"""``station recipe verify DIR`` / ``station recipe seal DIR``: a recipe folder's integrity.

``verify`` loads the recipe as the station does (seal, unit space, thresholds, golden): exit 0,
or 78 naming the file and the cause.  ``seal`` writes ``recipe.sha256`` again after a deliberate
edit (thresholds tuned by hand), then verifies.

``station recipe versions --config STATION_YAML`` lists the drift versions of the station's recipe
(:mod:`station.recipe_versions`: version 0 is the configured folder), one JSON line each;
``station recipe rollback --config STATION_YAML VERSION`` makes VERSION the one the station runs
(from its next start; the config's ``drift.version`` pins one instead).
"""

from __future__ import annotations

import argparse
import json

from pipeline.recipe import Recipe, seal_recipe
from station.config import load_config
from station.recipe_versions import RecipeVersions


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``recipe`` to the CLI."""
    p = sub.add_parser("recipe", help="verify or re-seal a recipe folder (recipe.sha256)")
    rsub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    v = rsub.add_parser("verify", help="load the recipe as the station does (exit 78 if bad)")
    v.add_argument("dir", help="recipe folder")
    v.set_defaults(func=run_verify)
    s = rsub.add_parser("seal", help="write recipe.sha256 for the folder as it is now")
    s.add_argument("dir", help="recipe folder")
    s.set_defaults(func=run_seal)
    ls = rsub.add_parser("versions", help="list the drift versions of a station's recipe")
    ls.add_argument("-c", "--config", required=True, help="station YAML")
    ls.set_defaults(func=run_versions)
    rb = rsub.add_parser("rollback", help="run an earlier recipe version (0: the configured one)")
    rb.add_argument("-c", "--config", required=True, help="station YAML")
    rb.add_argument("version", type=int, help="version number (see `station recipe versions`)")
    rb.set_defaults(func=run_rollback)


def run_verify(args: argparse.Namespace) -> int:
    """Load the recipe; one JSON line; ConfigError → 78."""
    recipe = Recipe.load(args.dir)
    print(json.dumps({"ok": True, "recipe": str(recipe.folder), "hash": recipe.hash}))
    return 0


def run_seal(args: argparse.Namespace) -> int:
    """Seal, then load the recipe (a recipe that is wrong in itself stays refused)."""
    seal_recipe(args.dir)
    return run_verify(args)


def _versions(config_path: str) -> RecipeVersions:
    cfg = load_config(config_path)
    return RecipeVersions(cfg.resolve(cfg.station.state_dir), Recipe.load(cfg.resolve(cfg.recipe)))


def run_versions(args: argparse.Namespace) -> int:
    """One JSON line per version (version, hash, parent, date, parts, current)."""
    for entry in _versions(args.config).describe():
        print(json.dumps(entry))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Point ``current.json`` at the version (loaded first: a broken one is refused, 78)."""
    versions = _versions(args.config)
    recipe = versions.load(args.version)
    versions.set_current(args.version)
    print(json.dumps({"ok": True, "version": args.version, "hash": recipe.short_hash,
                      "folder": str(versions.folder(args.version))}))
    return 0
