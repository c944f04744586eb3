"""Shared helpers for the commands that load recipes, build inspectors and read grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import build_dataclass, load_yaml
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe, RecipeSettings
from station.config import StationConfig, load_config

DEFAULTS_DIR = Path(__file__).parent / "defaults"


def load_settings_file(path: str | Path, grid: dict[str, Any] | None = None) -> RecipeSettings:
    """Recipe settings from a YAML file (``align``, ``nsoartc``, ``cells``, ``vlm``, … and
    optionally ``grid``); ``grid`` given here wins.  Errors name file:line."""
    doc = load_yaml(path)
    data = dict(doc.data or {})
    data.setdefault("name", Path(path).stem)
    if grid is not None:
        data["grid"] = grid
    if "grid" not in data:
        raise ConfigError("no grid: give one in the settings file or with --grid", str(path))
    return build_dataclass(RecipeSettings, data, doc)


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid YAML: ``{roi, columns, rows}`` or ``{cells: {...}}`` (optionally under ``grid:``)."""
    doc = load_yaml(path)
    data = doc.data
    if isinstance(data, dict) and "grid" in data:
        data = data["grid"]
    if not isinstance(data, dict):
        raise ConfigError("a grid file must be a mapping", str(path))
    return data


def build_inspector(cfg: StationConfig, *, policy: str | None = None,
                    vlm_overrides: dict[str, Any] | None = None) -> Inspector:
    """The Inspector a station config describes: its recipe, the VLM stage (recipe ``vlm:`` +
    the config's overrides + ``vlm_overrides``) and its decision policy (or ``policy``)."""
    recipe = Recipe.load(cfg.resolve(cfg.recipe))
    return _inspector(recipe, policy or cfg.policy, {**cfg.vlm, **(vlm_overrides or {})},
                      cfg.resolve(cfg.station.cache_dir))


def _inspector(recipe: Recipe, policy: str, vlm_overrides: dict[str, Any],
               cache_dir: Path | None) -> Inspector:
    vlm = build_vlm(recipe, vlm_overrides, cache_dir=cache_dir)
    if vlm is None and policy in ("vlm", "both"):
        raise ConfigError(f"policy {policy!r} needs the VLM judge (vlm.enabled: true)")
    return Inspector(recipe, vlm=vlm, policy=policy)


def inspector_from_args(args: Any) -> tuple[Inspector, StationConfig | None]:
    """Build the Inspector for replay/eval from ``--config`` or ``--recipe`` (+ ``--policy``,
    ``--vlm MODEL_DIR``)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "vlm", None):
        overrides = {"model_dir": str(Path(args.vlm).resolve()), "enabled": True}
    policy = getattr(args, "policy", None)
    if getattr(args, "config", None):
        cfg = load_config(args.config)
        return build_inspector(cfg, policy=policy, vlm_overrides=overrides), cfg
    if getattr(args, "recipe", None):
        return _inspector(Recipe.load(args.recipe), policy or "any", overrides, None), None
    raise ConfigError("give --config STATION_YAML or --recipe RECIPE_DIR")


def build_vlm(recipe: Recipe, overrides: dict[str, Any], cache_dir: Path | None = None):
    """The VLM stage when the recipe (or the overrides) enable it, else None."""
    merged = {**recipe.settings.vlm, **overrides}
    if not merged.get("enabled"):
        return None
    from pipeline.vlm_stage import VlmStage  # torch only when the VLM is on

    return VlmStage.from_settings(merged, cache_dir=cache_dir)
