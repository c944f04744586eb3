"""The ``variation`` judge: HALCON's classic variation model behind the judge interface.

A cell is a defect when at least ``min_pixels`` of its pixels deviate from the good parts' mean by
more than ``k`` times their spread (``pipeline.variation``).  Deterministic, needs no calibration
frames: the model is fitted from the golden of the part's recipe (synthesised shifts and edge
moves) the first time a part of that golden comes, and kept for the next parts (the live station
has one golden; an evaluation that switches goldens per pair builds each model once).

Settings: the recipe's ``variation:`` section (:class:`pipeline.variation.VariationSettings`).
List it in the recipe's ``judges:``, alone or with ``metric`` (policy ``any``: a part is rejected
when either judge finds a defect).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.grid import parse_address
from pipeline.judges.base import JudgeContext, register_judge
from pipeline.variation import VariationModel, VariationSettings
from pipeline.verdicts import Defect, JudgeResult, Verdict

if TYPE_CHECKING:
    from pipeline.recipe import Recipe

MODEL_CACHE = 4  # goldens whose models are kept (an evaluation visits one golden after another)


class VariationJudge:
    """Defect cells = cells whose variation-model score exceeds ``settings.k``."""

    name = "variation"

    def __init__(self, settings: VariationSettings | None = None) -> None:
        self.settings = settings or VariationSettings()
        self.settings.validate()
        # golden array id → (golden, model); the golden is held so its id is not reused
        self._models: OrderedDict[int, tuple[np.ndarray, VariationModel]] = OrderedDict()
        self._lock = threading.Lock()

    def model_for(self, golden: np.ndarray) -> VariationModel:
        """The model of ``golden``, fitted on first use and cached."""
        key = id(golden)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None and hit[0] is golden:
                self._models.move_to_end(key)
                return hit[1]
        model = VariationModel(golden, self.settings)
        with self._lock:
            self._models[key] = (golden, model)
            while len(self._models) > MODEL_CACHE:
                self._models.popitem(last=False)
        return model

    def judge(self, ctx: JudgeContext) -> JudgeResult:
        """Verdict on the part of ``ctx`` (its aligned frame against its recipe's golden)."""
        try:
            model = self.model_for(ctx.golden)
        except ValueError as exc:
            return JudgeResult(self.name, Verdict.ERROR, reason=f"variation_model: {exc}")
        scores, zf = model.score(ctx.aligned, ctx.valid, ctx.grid)
        ctx.maps[self.name] = zf
        return self.judge_scores(scores)

    def judge_scores(self, scores: dict[str, float]) -> JudgeResult:
        """Verdict from cell scores (fail-safe: a non-finite score is a defect)."""
        k = self.settings.k
        defects = []
        for a, s in scores.items():
            if not math.isfinite(s) or s > k:
                col, row = parse_address(a)
                defects.append(Defect(address=a, column=col, row=row, score=float(s),
                                      judge=self.name))
        defects.sort(key=lambda d: -(d.score if d.score is not None and math.isfinite(d.score)
                                     else math.inf))
        finite = [s for s in scores.values() if math.isfinite(s)]
        details: dict[str, Any] = {
            "max_score": round(max(finite), 4) if finite else None,
            "k": k,
            "cells": {a: round(float(s), 4) for a, s in scores.items()},
        }
        return JudgeResult(self.name, Verdict.DEFECT if defects else Verdict.PASS,
                           defects=defects, details=details)


@register_judge("variation")
def variation_judge(recipe: Recipe, **_deps: Any) -> VariationJudge:
    """The variation judge with the recipe's ``variation:`` settings (defaults when absent)."""
    return VariationJudge(getattr(recipe.settings, "variation", None))
