"""Shared helpers for the commands that load recipes, build inspectors and read grids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import build_dataclass, load_yaml
from pipeline.decision import validate_policy
from pipeline.inspector import Inspector
from pipeline.judges.selection import judge_names, judges_for
from pipeline.recipe import Recipe, RecipeSettings
from pipeline.vlm.settings import VlmSettings, effective_vlm_settings
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
                    vlm_overrides: Mapping[str, Any] | None = None) -> Inspector:
    """The Inspector a station config describes: its recipe, its judges (the config's
    ``judges:`` or the recipe's, + ``vlm`` when the VLM settings enable it) and its decision
    policy (or ``policy``).  VLM settings: recipe ``vlm:`` ← the config's ``vlm:`` ←
    ``vlm_overrides`` (command-line flags), merged by ``effective_vlm_settings``."""
    recipe = Recipe.load(cfg.resolve(cfg.recipe))
    vlm = effective_vlm_settings(recipe.settings, cfg, vlm_overrides)
    return inspector_for(recipe, policy or cfg.policy, vlm, cfg.resolve(cfg.station.cache_dir),
                         cfg.judges)


def inspector_for(recipe: Recipe, policy: str, vlm_settings: VlmSettings,
                  cache_dir: Path | None, judges: list[str] | None = None) -> Inspector:
    """An Inspector for ``recipe``: judges from the registry (the recipe's ``judges:`` or
    ``judges``, + ``vlm`` when ``vlm_settings`` (see ``effective_vlm_settings``) enable it,
    model files cached under ``cache_dir``); a policy or judge list that does not fit is a
    ConfigError."""
    try:
        names = judge_names(recipe.settings.judges, judges, vlm_settings=vlm_settings)
        validate_policy(policy, names)
        built = judges_for(recipe, names, vlm_settings=vlm_settings, cache_dir=cache_dir)
    except ValueError as exc:  # unknown judge, policy that does not fit (not a ConfigError)
        raise ConfigError(str(exc)) from None
    return Inspector(recipe, built, policy=policy)


def inspector_from_args(args: Any) -> tuple[Inspector, StationConfig | None]:
    """Build the Inspector for replay/eval from ``--config`` or ``--recipe`` (+ ``--policy``,
    ``--vlm MODEL_DIR``)."""
    overrides = vlm_flags(getattr(args, "vlm", None))
    policy = getattr(args, "policy", None)
    if getattr(args, "config", None):
        cfg = load_config(args.config)
        return build_inspector(cfg, policy=policy, vlm_overrides=overrides), cfg
    if getattr(args, "recipe", None):
        recipe = Recipe.load(args.recipe)
        vlm = effective_vlm_settings(recipe.settings, cli=overrides)
        return inspector_for(recipe, policy or "any", vlm, None), None
    raise ConfigError("give --config STATION_YAML or --recipe RECIPE_DIR")


def vlm_flags(model_dir: str | None, backend: str | None = None) -> dict[str, Any]:
    """The ``vlm:`` keys that ``--vlm MODEL_DIR`` (and ``--vlm-backend``) set: the top layer of
    ``effective_vlm_settings`` (checked there like any other layer)."""
    flags: dict[str, Any] = {}
    if model_dir:
        flags = {"enabled": True, "model_dir": str(Path(model_dir).resolve())}
        if backend:
            flags["backend"] = backend
    return flags
