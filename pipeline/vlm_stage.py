"""The VLM stage of the Inspector: compose the addressed images the recipe asks for, ask the judge.

Images follow the recipe's ``vlm:`` settings: ``image_type`` DST (metric images: the golden's own,
dark, and the part's) or RAW (golden and aligned camera frame); ``images`` pair or single;
``composition`` separate or stacked.  Each image is cropped to the address grid (plus a border) so
the pins fill the VLM's capped image size, and the address overlay is drawn on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.grid import AddressGrid
from pipeline.overlay import compose_pair, draw_overlay
from pipeline.verdicts import JudgeResult
from pipeline.vlm.judge import VlmJudge
from pipeline.vlm.settings import VlmSettings

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


class VlmStage:
    """Wraps a VlmJudge with the image composition of the recipe's settings."""

    def __init__(self, judge: VlmJudge) -> None:
        self.judge = judge
        self.settings: VlmSettings = judge.settings
        info = judge.model_info
        self.model_name = f"{info.get('name')} ({info.get('backend')}, {info.get('mode')})"

    @classmethod
    def from_settings(cls, settings: dict[str, Any], cache_dir: Path | None = None) -> VlmStage:
        """Load the model named by the merged ``vlm:`` settings (ConfigError when it cannot)."""
        s = VlmSettings.from_dict({k: v for k, v in settings.items()})
        return cls(VlmJudge(s, cache_dir=cache_dir))

    def compose(self, *, golden: np.ndarray, aligned: np.ndarray, metric_image: np.ndarray,
                golden_metric: np.ndarray, grid: AddressGrid) -> list[np.ndarray]:
        """The images the judge sees for one part (BGR uint8 with the address overlay)."""
        s = self.settings
        if s.image_type == "DST":
            ref, test = golden_metric, metric_image
        else:
            ref, test = golden, aligned
        (ref, test), g = crop_to_grid([ref, test], grid)
        if s.images == "single":
            return [draw_overlay(test, g)]
        return compose_pair(ref, test, g, s.composition)

    def judge_part(self, *, golden: np.ndarray, aligned: np.ndarray, metric_image: np.ndarray,
                   golden_metric: np.ndarray, grid: AddressGrid) -> tuple[JudgeResult, str]:
        """Judge one aligned part → (result, prompt text for the recorder); problems come back
        as an ``error`` verdict, never raised.  The prompt stays out of the result (and so out
        of every event): it is the same for every part of a recipe."""
        images = self.compose(golden=golden, aligned=aligned, metric_image=metric_image,
                              golden_metric=golden_metric, grid=grid)
        result = self.judge.judge(images, columns=grid.columns, rows=grid.rows)
        return result, self.judge.prompt_text(columns=grid.columns, rows=grid.rows)

    def close(self) -> None:
        """Stop the judge's worker."""
        self.judge.close()
