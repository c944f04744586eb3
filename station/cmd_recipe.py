"""``station recipe verify DIR`` / ``station recipe seal DIR``: a recipe folder's integrity.

``verify`` loads the recipe as the station does (seal, unit space, thresholds, golden): exit 0,
or 78 naming the file and the cause.  ``seal`` writes ``recipe.sha256`` again after a deliberate
edit (thresholds tuned by hand), then verifies.
"""

from __future__ import annotations

import argparse
import json

from pipeline.recipe import Recipe, seal_recipe


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


def run_verify(args: argparse.Namespace) -> int:
    """Load the recipe; one JSON line; ConfigError → 78."""
    recipe = Recipe.load(args.dir)
    print(json.dumps({"ok": True, "recipe": str(recipe.folder), "hash": recipe.hash}))
    return 0


def run_seal(args: argparse.Namespace) -> int:
    """Seal, then load the recipe (a recipe that is wrong in itself stays refused)."""
    seal_recipe(args.dir)
    return run_verify(args)
