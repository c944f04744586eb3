"""Fixtures shared by the station's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.recipe import Recipe


@pytest.fixture(scope="session")
def recipe(synthetic_recipe: Recipe) -> Path:
    """The folder of the synthetic line's recipe (what a station config's ``recipe:`` names)."""
    assert synthetic_recipe.folder is not None
    return synthetic_recipe.folder
