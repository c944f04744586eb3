"""The ``vlm`` judge: compose the addressed images the recipe asks for, ask the VLM.

Images follow the ``vlm:`` settings: ``image_type`` DST (metric images: the golden's own, dark,
and the part's) or RAW (golden and aligned camera frame); ``images`` pair or single;
``composition`` separate or stacked.  Each image is cropped to the address grid (plus a border) so
the pins fill the VLM's capped image size, and the address overlay is drawn on it.  The model
itself (loading, prompts, scored/generate inference, time budget) lives in :mod:`pipeline.vlm`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.grid import AddressGrid
from pipeline.judges.base import JudgeContext, register_judge
from pipeline.overlay import compose_pair, draw_overlay
from pipeline.verdicts import JudgeResult
from pipeline.vlm.judge import VlmJudge
from pipeline.vlm.settings import VlmSettings, effective_vlm_settings

if TYPE_CHECKING:
    from pipeline.recipe import Recipe

CROP_BORDER = 0.08  # share of the grid's size kept around it


def crop_to_grid(images: list[np.ndarray], grid: AddressGrid) -> tuple[list[np.ndarray],
                                                                        AddressGrid]:
    """Crop same-sized images to the grid's bounds plus a border; the grid moved to match."""
    h, w = images[0].shape[:2]
    x, y, gw, gh = grid.bounds()
    bx, by = round(gw * CROP_BORDER), round(gh * CROP_BORDER)
    x0, y0 = max(0, x - bx), max(0, y - by)
    x1, y1 = min(w, x + gw + bx), min(h, y + gh + by)
    cells = {a: (cx - x0, cy - y0, cw, ch) for a, (cx, cy, cw, ch) in grid.cells.items()}
    moved = AddressGrid(grid.columns, grid.rows, cells)
    return [im[y0:y1, x0:x1] for im in images], moved


class VlmPartJudge:
    """The judge named ``vlm``: a :class:`VlmJudge` with the image composition of its settings."""

    name = "vlm"

    def __init__(self, judge: VlmJudge) -> None:
        self.judge_model = judge
        self.settings: VlmSettings = judge.settings
        info = judge.model_info
        self.model_name = f"{info.get('name')} ({info.get('backend')}, {info.get('mode')})"

    @classmethod
    def from_settings(cls, settings: VlmSettings | Mapping[str, Any],
                      cache_dir: Path | None = None) -> VlmPartJudge:
        """Load the model named by the effective ``vlm:`` settings (typed, or a ``vlm:``-shaped
        mapping checked here); ConfigError when it cannot."""
        s = settings if isinstance(settings, VlmSettings) else VlmSettings.from_mapping(settings)
        return cls(VlmJudge(s, cache_dir=cache_dir))

    def compose(self, *, golden: np.ndarray, aligned: np.ndarray, metric_image: np.ndarray,
                golden_metric: np.ndarray, grid: AddressGrid) -> list[np.ndarray]:
        """The images the model sees for one part (BGR uint8 with the address overlay)."""
        s = self.settings
        if s.image_type == "DST":
            ref, test = golden_metric, metric_image
        else:
            ref, test = golden, aligned
        (ref, test), g = crop_to_grid([ref, test], grid)
        if s.images == "single":
            return [draw_overlay(test, g)]
        return compose_pair(ref, test, g, s.composition)

    def judge(self, ctx: JudgeContext) -> JudgeResult:
        """Judge one aligned part; problems come back as an ``error`` verdict, never raised.

        The prompt text goes to ``result.prompt`` and the answer to ``result.raw_answer`` (for the
        recorder only); the prompt stays out of every event: it is the same for every part of a
        recipe."""
        golden_metric = ctx.golden_metric if self.settings.image_type == "DST" else ctx.golden
        images = self.compose(golden=ctx.golden, aligned=ctx.aligned,
                              metric_image=ctx.metric_image, golden_metric=golden_metric,
                              grid=ctx.grid)
        grid = ctx.grid
        result = self.judge_model.judge(images, columns=grid.columns, rows=grid.rows)
        result.prompt = self.judge_model.prompt_text(columns=grid.columns, rows=grid.rows)
        result.raw_answer = result.details.get("raw")
        return result

    def warm_up_for(self, recipe: Recipe) -> None:
        """One warm-up inference on the recipe's real layout (the golden as the part), so the
        one-pass plan — cached prefix, CUDA graph — is built at start-up, not at the first part.
        ConfigError when it fails."""
        transform = recipe.make_transform()
        golden_metric = transform.metric_image(transform.distance(recipe.golden, None))
        images = self.compose(golden=recipe.golden, aligned=recipe.golden,
                              metric_image=golden_metric, golden_metric=golden_metric,
                              grid=recipe.grid)
        self.judge_model.warmup(images, columns=recipe.grid.columns, rows=recipe.grid.rows)

    def close(self) -> None:
        """Stop the model's worker."""
        self.judge_model.close()


@register_judge("vlm")
def vlm_judge(recipe: Recipe, *, vlm_settings: VlmSettings | Mapping[str, Any] | None = None,
              cache_dir: Path | None = None, **_deps: Any) -> VlmPartJudge:
    """The VLM judge from ``vlm_settings`` (the effective settings: recipe ``vlm:`` + station
    config + command line; default: the recipe's own), model files cached under ``cache_dir``."""
    settings = effective_vlm_settings(recipe.settings) if vlm_settings is None else vlm_settings
    if not isinstance(settings, VlmSettings):
        settings = VlmSettings.from_mapping(settings)
    # warm up on the recipe's own layout below, not on the model's synthetic part
    judge = VlmPartJudge.from_settings(dataclasses.replace(settings, warmup=False),
                                       cache_dir=cache_dir)
    if settings.warmup:
        judge.warm_up_for(recipe)
    return judge
