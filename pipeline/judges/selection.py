"""Which judges an Inspector runs: the recipe's ``judges:`` (or the station config's override),
plus ``vlm`` when the VLM is enabled.  The one place the daemon, replay, eval and demo get their
judge list from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.judges.base import Judge, build_judges
from pipeline.vlm.settings import effective_vlm_settings

if TYPE_CHECKING:
    from pipeline.recipe import Recipe

VLM_JUDGE = "vlm"


def vlm_enabled(vlm_settings: Any) -> bool:
    """Whether merged ``vlm:`` settings (a mapping or typed settings) switch the VLM on."""
    if vlm_settings is None:
        return False
    if isinstance(vlm_settings, Mapping):
        return bool(vlm_settings.get("enabled"))
    return bool(getattr(vlm_settings, "enabled", False))


def judge_names(declared: Sequence[str], override: Sequence[str] | None = None, *,
                vlm_settings: Any = None) -> list[str]:
    """Judge names in run order: ``override`` (the station config's ``judges:``) or ``declared``
    (the recipe's ``judges:``); ``vlm`` appended when ``vlm_settings`` (the merged ``vlm:``
    settings) enable it.

    ValueError when ``vlm`` is listed but the VLM is not enabled (it would have no model)."""
    names = list(override if override is not None else declared)
    enabled = vlm_enabled(vlm_settings)
    if enabled and VLM_JUDGE not in names:
        names.append(VLM_JUDGE)
    elif not enabled and VLM_JUDGE in names:
        raise ValueError("judge 'vlm' is listed but the VLM is not enabled (vlm.enabled: true)")
    return names


def judges_for(recipe: Recipe, override: Sequence[str] | None = None, *, vlm_settings: Any = None,
               cache_dir: Path | None = None, **deps: Any) -> list[Judge]:
    """Build the judges :func:`judge_names` lists for ``recipe`` (``vlm_settings`` default: the
    recipe's ``vlm:``); every factory gets ``recipe``, ``vlm_settings``, ``cache_dir`` and
    ``deps``."""
    if vlm_settings is None:
        vlm_settings = effective_vlm_settings(recipe.settings)
    names = judge_names(recipe.settings.judges, override, vlm_settings=vlm_settings)
    return build_judges(names, recipe, vlm_settings=vlm_settings, cache_dir=cache_dir, **deps)
