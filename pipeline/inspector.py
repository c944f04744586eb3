"""Frame → addressed verdict.  The one code path for live inspection, replay and evaluation.

Stages: validate the frame → align to the golden → NSOARTC distance → cell scores → metric judge →
overlay and metric image → (VLM judge) → decision policy.  Anything that goes wrong in a stage gives
an ``error`` result with a reason; nothing that could not be judged is ever reported ``pass``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.base.frames import Frame
from pipeline.decision import POLICIES, decide
from pipeline.metric_judge import MetricJudge
from pipeline.overlay import draw_overlay
from pipeline.recipe import Recipe, build_recipe, read_image, to_channels
from pipeline.verdicts import Defect, JudgeResult, Verdict

if TYPE_CHECKING:
    from pipeline.vlm_stage import VlmStage

log = logging.getLogger(__name__)


@dataclass
class InspectionResult:
    """The verdict on one part, with everything an event, a report or the recorder needs."""

    part_id: str
    verdict: Verdict
    reason: str | None = None
    defects: list[Defect] = field(default_factory=list)
    judges: dict[str, JudgeResult] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    recipe: str = ""
    model: str | None = None
    cell_scores: dict[str, float] = field(default_factory=dict)
    # for the recorder and reports (not part of the event): frame, aligned, metric, overlay
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    prompt: str | None = None
    raw_answer: str | None = None

    @property
    def addresses(self) -> list[str]:
        """Distinct defect addresses in report order."""
        return list(dict.fromkeys(d.address for d in self.defects))

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready part of the result event (the daemon adds station, boot, seq, ts, frame)."""
        return {
            "part_id": self.part_id,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "defects": [d.to_dict() for d in self.defects],
            "judges": {name: j.to_dict() for name, j in self.judges.items()},
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "recipe": self.recipe,
            "model": self.model,
        }


class _GoldenProblem(Exception):
    """A per-frame golden that cannot be used (its reason is the result's reason)."""


class _Stages:
    """The recipe-bound objects of one golden: aligner, transform, judge."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.aligner = recipe.make_aligner()
        self.photometric = recipe.make_photometric()
        self.transform = recipe.make_transform()
        self.judge = MetricJudge(recipe.settings.thresholds)
        self.cell_scorer = recipe.make_cell_scorer()
        self._golden_metric: np.ndarray | None = None

    def golden_metric(self) -> np.ndarray:
        """Metric image of the golden itself (the "passed" DST image shown to the VLM)."""
        if self._golden_metric is None:
            d = self.transform.distance(self.recipe.golden, None)
            self._golden_metric = self.transform.metric_image(d)
        return self._golden_metric


class Inspector:
    """Inspects frames against one recipe; optional VLM judge; decision ``policy``.

    A frame whose ``meta["golden"]`` names another golden image (a manifest row or a DeepPCB pair)
    is judged against that golden with the recipe's settings and a unit space synthesised from it;
    those derived recipes are cached (``golden_cache`` entries).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        vlm: VlmStage | None = None,
        policy: str = "any",
        golden_cache: int = 8,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        if policy in ("vlm", "both") and vlm is None:
            raise ValueError(f"policy {policy!r} needs a VLM judge")
        self.recipe = recipe
        self.vlm = vlm
        self.policy = policy
        self._base = _Stages(recipe)
        self._derived: OrderedDict[str, _Stages] = OrderedDict()
        self._cache_size = golden_cache
        self.model_name: str | None = getattr(vlm, "model_name", None) if vlm else None

    def _stages_for(self, frame: Frame) -> _Stages:
        golden_path = frame.meta.get("golden")
        if not golden_path:
            return self._base
        key = str(Path(golden_path).resolve())
        if self.recipe.folder and key == str((self.recipe.folder / "golden.png").resolve()):
            return self._base
        stages = self._derived.get(key)
        if stages is None:
            try:
                golden = read_image(key)
            except ValueError as exc:
                raise _GoldenProblem(f"golden_unreadable: {exc}") from None
            try:
                recipe = build_recipe([], self.recipe.settings.grid, golden=golden,
                                      settings=self.recipe.settings, source=key)
            except ValueError as exc:  # e.g. a blank golden: nothing to align on
                raise _GoldenProblem(f"golden_unusable: {key}: {exc}") from None
            recipe.hash = self.recipe.hash
            stages = _Stages(recipe)
            self._derived[key] = stages
            while len(self._derived) > self._cache_size:
                self._derived.popitem(last=False)
        else:
            self._derived.move_to_end(key)
        return stages

    def _error(self, part_id: str, reason: str, t0: float, timings: dict[str, float],
               images: dict[str, np.ndarray] | None = None) -> InspectionResult:
        timings["total"] = (time.perf_counter() - t0) * 1000
        return InspectionResult(
            part_id=part_id,
            verdict=Verdict.ERROR,
            reason=reason,
            timings_ms=timings,
            recipe=self.recipe.short_hash,
            model=self.model_name,
            images=images or {},
        )

    def inspect(self, frame: Frame, part_id: str | None = None) -> InspectionResult:
        """Judge one frame.  Never raises for bad input: problems become ``error`` results."""
        t0 = time.perf_counter()
        part_id = part_id or str(frame.meta.get("part_id") or f"{frame.source_id}#{frame.seq}")
        timings: dict[str, float] = {}
        if not frame.ok:
            return self._error(part_id, frame.error or "no_frame", t0, timings)
        image = frame.image
        assert image is not None
        problem = _frame_problem(image)
        if problem:
            return self._error(part_id, problem, t0, timings)
        try:
            return self._inspect(frame, image, part_id, t0, timings)
        except Exception as exc:  # a bug or an unexpected input must not become a pass
            log.exception("inspection of %s failed", part_id)
            return self._error(part_id, f"internal_error: {type(exc).__name__}: {exc}", t0, timings)

    def _inspect(self, frame: Frame, image: np.ndarray, part_id: str, t0: float,
                 timings: dict[str, float]) -> InspectionResult:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        try:
            st = self._stages_for(frame)
        except _GoldenProblem as exc:
            return self._error(part_id, str(exc), t0, timings)
        settings = st.recipe.settings
        channels = settings.nsoartc.channels
        image = to_channels(image, channels)
        images: dict[str, np.ndarray] = {"frame": frame.image}  # type: ignore[dict-item]

        t = time.perf_counter()
        if settings.align.enabled:
            al = st.aligner.align(image)
            if not al.ok or al.image is None:
                timings["align"] = (time.perf_counter() - t) * 1000
                return self._error(part_id, al.reason or "alignment_failed", t0, timings, images)
            aligned = st.photometric.apply(al.image, al.valid)
            valid, align_score = al.valid, al.score
            timings["align"] = (time.perf_counter() - t) * 1000
        else:
            if image.shape[:2] != st.recipe.golden.shape[:2]:
                h, w = st.recipe.golden.shape[:2]
                return self._error(part_id, f"wrong_size: {image.shape[1]}x{image.shape[0]} "
                                   f"(golden {w}x{h}, alignment disabled)", t0, timings, images)
            t = time.perf_counter()
            aligned, valid, align_score = st.photometric.apply(image), None, 1.0
            timings["align"] = (time.perf_counter() - t) * 1000
        images["aligned"] = aligned

        t = time.perf_counter()
        d = st.transform.distance(aligned, valid)
        timings["nsoartc"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        scores = st.cell_scorer.attribute(d, st.cell_scorer(d), st.judge.thresholds)
        metric = st.judge.judge(scores)
        metric.details["align_score"] = round(float(align_score), 4)
        timings["cells"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        metric_image = st.transform.metric_image(d)
        overlay = draw_overlay(aligned, st.recipe.grid, marked=[x.address for x in metric.defects])
        timings["overlay"] = (time.perf_counter() - t) * 1000
        images["metric"] = metric_image
        images["overlay"] = overlay

        judges = {"metric": metric}
        prompt = raw = None
        if self.vlm is not None:
            t = time.perf_counter()
            vlm_result, prompt = self.vlm.judge_part(golden=st.recipe.golden, aligned=aligned,
                                             metric_image=metric_image,
                                             golden_metric=st.golden_metric(),
                                             grid=st.recipe.grid)
            timings["vlm"] = (time.perf_counter() - t) * 1000
            judges["vlm"] = vlm_result
            raw = vlm_result.details.get("raw")

        verdict, reason, defects = decide(self.policy, metric, judges.get("vlm"))
        timings["total"] = (time.perf_counter() - t0) * 1000
        return InspectionResult(
            part_id=part_id,
            verdict=verdict,
            reason=reason,
            defects=defects,
            judges=judges,
            timings_ms=timings,
            recipe=self.recipe.short_hash,
            model=self.model_name,
            cell_scores=scores,
            images=images,
            prompt=prompt,
            raw_answer=raw,
        )


def _frame_problem(image: np.ndarray) -> str | None:
    """Why a decoded array cannot be inspected, or None."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return "empty_frame"
    if image.dtype not in (np.uint8, np.uint16):
        return f"bad_frame: dtype {image.dtype} (need uint8 or uint16)"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return f"bad_frame: shape {image.shape}"
    if min(image.shape[:2]) < 16:
        return f"bad_frame: too small {image.shape[1]}x{image.shape[0]}"
    return None
