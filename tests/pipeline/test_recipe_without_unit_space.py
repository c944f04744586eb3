"""A recipe whose judges use no NSOARTC distance (the variation judge alone) is built without a
unit space and without threshold calibration, says so, saves, loads and verifies; the Inspector
then skips D and gives the variation judge's cell scores and deviation image as its figures.
A recipe whose judges include ``metric`` still has, and still requires, its unit space.

Real parts: a synthetic binarised board, the real build_recipe / Recipe.save / Recipe.load /
Inspector, a real thin open cut into the board.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.base.errors import ConfigError
from pipeline.base.frames import Frame
from pipeline.inspector import Inspector
from pipeline.judges.base import build_judges
from pipeline.recipe import Recipe, RecipeSettings, build_recipe, needs_unit_space
from pipeline.variation import VariationSettings
from pipeline.verdicts import Verdict

from support.boards import GRID, board


def _settings(judges: list[str]) -> RecipeSettings:
    return RecipeSettings(name="pcb", grid=GRID, judges=judges,
                          variation=VariationSettings(k=6.0))


def _bad(golden: np.ndarray) -> np.ndarray:
    bad = golden.copy()
    bad[105:116, 100:102] = 255  # a 2-px open in the trace of row B
    return bad


def test_which_judges_need_a_unit_space() -> None:
    assert not needs_unit_space(["variation"])
    assert needs_unit_space(["metric"]) and needs_unit_space(["variation", "metric"])
    assert needs_unit_space(["variation", "vlm"])  # the VLM is shown the golden metric image
    assert needs_unit_space([])


def test_variation_only_recipe_has_no_unit_space_and_says_so(tmp_path: Path) -> None:
    golden = board()
    recipe = build_recipe([], GRID, golden=golden, settings=_settings(["variation"]))
    assert recipe.unit_space is None and not recipe.has_metric
    assert "do not use the NSOARTC distance" in recipe.settings.built["unit_space"]
    assert recipe.settings.built["calibration_frames"] == 0
    assert set(recipe.settings.thresholds) == set(recipe.grid.cells)
    assert set(recipe.settings.thresholds.values()) == {6.0}  # the variation judge's k
    with pytest.raises(ValueError, match="no unit space"):
        recipe.make_transform()

    folder = recipe.save(tmp_path / "r")
    assert not (folder / "unitspace.npz").exists()
    loaded = Recipe.load(folder)
    assert loaded.unit_space is None and loaded.hash == recipe.hash
    assert loaded.settings.built["unit_space"] == recipe.settings.built["unit_space"]
    # the seal still covers the recipe: an edited threshold is refused
    text = (folder / "recipe.yaml").read_text().replace(": 6.0", ": 7.0", 1)
    (folder / "recipe.yaml").write_text(text)
    with pytest.raises(ConfigError, match="content hash mismatch"):
        Recipe.load(folder)

    res = Inspector(loaded).inspect(Frame(image=_bad(golden), seq=0, source_id="t", meta={}))
    assert res.verdict is Verdict.DEFECT and "X:2, Y:B" in res.addresses
    assert "nsoartc" not in res.timings_ms and "cells" not in res.timings_ms
    v = res.judges["variation"]
    assert res.cell_scores == {a: float(s) for a, s in v.details["cells"].items()}
    metric = res.images["metric"]
    assert metric.dtype == np.uint8 and metric.shape == golden.shape
    assert metric[105:116, 100:102].max() == 255 and metric[:, :60].max() < 128
    with pytest.raises(RuntimeError, match="no golden metric"):
        Inspector(loaded).golden_metric()
    with pytest.raises(ValueError, match="need one"):
        Inspector(loaded, build_judges(["metric"], loaded), policy="any")


def test_metric_recipe_keeps_and_requires_its_unit_space(tmp_path: Path) -> None:
    golden = board()
    recipe = build_recipe([], GRID, golden=golden, settings=_settings(["variation", "metric"]))
    assert recipe.has_metric and "unit_space" not in recipe.settings.built
    assert recipe.settings.built["calibration_frames"] > 0
    folder = recipe.save(tmp_path / "r")
    assert Recipe.load(folder).unit_space is not None
    (folder / "unitspace.npz").unlink()
    with pytest.raises(ConfigError):
        Recipe.load(folder)
    res = Inspector(recipe).inspect(Frame(image=_bad(golden), seq=0, source_id="t", meta={}))
    assert "nsoartc" in res.timings_ms and res.images["metric"].shape == golden.shape
    assert res.judges["metric"].details["cells"].keys() == res.cell_scores.keys()
