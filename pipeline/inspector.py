"""Frame → addressed verdict.  The one code path for live inspection, replay and evaluation.

Shared stages, computed once per part: validate the frame → align to the golden (+ photometric
normalisation) → NSOARTC distance ``D`` → cell scores → metric image.  Then the judges the
Inspector was given run in order on one :class:`~pipeline.judges.base.JudgeContext` (each timed as
``timings_ms[<judge name>]``), the decision policy combines their results, and the overlay marks
the defects of the final decision.  A recipe without a unit space (its judges, the variation
judge only, use no NSOARTC distance: ``recipe.has_metric`` False) skips ``D`` and the NSOARTC cell
scores; its result carries the variation judge's cell scores, and its metric image is the
variation judge's filtered deviation map (``255 · clip(z / 2k, 0, 1)``: the judge's threshold
``k`` is mid-grey).  Anything that goes wrong gives an ``error`` result with a
reason; nothing that could not be judged is ever reported ``pass``.

An Inspector has one recipe.  Judging frames against goldens of their own (manifest rows, DeepPCB
pairs) is evaluation-only and lives in :mod:`station.golden_switch`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipeline.align import MAX_SIZE_MISMATCH
from pipeline.base.frames import Frame
from pipeline.decision import decide, validate_policy
from pipeline.judges.base import Judge, JudgeContext
from pipeline.judges.selection import judges_for
from pipeline.nsoartc import NsoartcTransform
from pipeline.overlay import draw_overlay
from pipeline.recipe import Recipe, needs_unit_space, to_channels
from pipeline.verdicts import Defect, JudgeResult, Verdict

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
    # for the recorder only: what the language-model judges were asked and answered (see
    # JudgeResult.prompt / raw_answer)
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


class Inspector:
    """Inspects frames against one recipe with a list of judges and a decision ``policy``.

    ``judges``: built by :func:`pipeline.judges.selection.judges_for` (names unique; default:
    the recipe's ``judges:``); ``policy``: ``any``, ``all``/``both`` or one judge's name
    (ValueError when it does not fit the judges).
    """

    def __init__(self, recipe: Recipe, judges: Sequence[Judge] | None = None, *,
                 policy: str = "any") -> None:
        if judges is None:
            judges = judges_for(recipe)
        names = [j.name for j in judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be unique, got {names}")
        self.policy = validate_policy(policy, names)
        if not recipe.has_metric and needs_unit_space(names):
            raise ValueError(f"recipe {recipe.settings.name!r} has no unit space (built for judges "
                             f"{recipe.settings.judges}); judges {names} need one: rebuild it "
                             "with them listed")
        self.recipe = recipe
        self.judges: list[Judge] = list(judges)
        self.aligner = recipe.make_aligner()
        self.photometric = recipe.make_photometric()
        self.transform = recipe.make_transform() if recipe.has_metric else None
        self.cell_scorer = recipe.make_cell_scorer()
        self.thresholds = _checked_thresholds(recipe.settings.thresholds)
        self._golden_metric: np.ndarray | None = None
        models = [m for m in (getattr(j, "model_name", None) for j in self.judges) if m]
        self.model_name: str | None = "; ".join(models) if models else None

    @property
    def judge_names(self) -> list[str]:
        """Names of the judges, in the order they run."""
        return [j.name for j in self.judges]

    def golden_metric(self) -> np.ndarray:
        """Metric image of the golden itself (the "passed" DST image shown to the VLM); computed
        on first use."""
        if self._golden_metric is None:
            if self.transform is None:
                raise RuntimeError("a recipe without a unit space has no golden metric image")
            d = self.transform.distance(self.recipe.golden, None)
            self._golden_metric = self.transform.metric_image(d)
        return self._golden_metric

    def use_recipe(self, recipe: Recipe, transform: NsoartcTransform | None = None) -> None:
        """Inspect with ``recipe`` from the next part on: a version of the current recipe (same
        golden and grid, another unit space or thresholds, e.g. a drift update or a rollback);
        the judges stay as they are.  ``transform``: ``recipe.make_transform()`` made ahead
        (off the inspection thread).  ValueError when the golden's size or the grid differ."""
        if (recipe.golden.shape != self.recipe.golden.shape
                or recipe.grid.cells != self.recipe.grid.cells):
            raise ValueError("use_recipe takes a version of the same recipe (golden size, grid)")
        thresholds = _checked_thresholds(recipe.settings.thresholds)
        if transform is None and recipe.has_metric:
            transform = recipe.make_transform()
        self.recipe, self.transform, self.thresholds = recipe, transform, thresholds
        self._golden_metric = None

    def close(self) -> None:
        """Close the judges that hold resources (a model worker)."""
        for j in self.judges:
            close = getattr(j, "close", None)
            if callable(close):
                close()

    @staticmethod
    def part_id_of(frame: Frame, part_id: str | None = None) -> str:
        """The part id a result for ``frame`` carries: ``part_id``, the frame's, or source#seq."""
        return part_id or str(frame.meta.get("part_id") or f"{frame.source_id}#{frame.seq}")

    @staticmethod
    def frame_problem(frame: Frame) -> str | None:
        """Why ``frame`` cannot be inspected at all (no image, bad array), or None."""
        if not frame.ok:
            return frame.error or "no_frame"
        assert frame.image is not None
        return _frame_problem(frame.image)

    def error_result(self, part_id: str, reason: str, t0: float | None = None,
                     timings: dict[str, float] | None = None,
                     images: dict[str, np.ndarray] | None = None) -> InspectionResult:
        """An ``error`` result for ``part_id`` (``timings['total']`` since ``t0``)."""
        timings = {} if timings is None else timings
        timings["total"] = (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0
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
        part_id = self.part_id_of(frame, part_id)
        timings: dict[str, float] = {}
        problem = self.frame_problem(frame)
        if problem:
            return self.error_result(part_id, problem, t0, timings)
        assert frame.image is not None
        try:
            return self._inspect(frame, frame.image, part_id, t0, timings)
        except Exception as exc:  # a bug or an unexpected input must not become a pass
            log.exception("inspection of %s failed", part_id)
            return self.error_result(part_id, f"internal_error: {type(exc).__name__}: {exc}", t0,
                                     timings)

    def _inspect(self, frame: Frame, image: np.ndarray, part_id: str, t0: float,
                 timings: dict[str, float]) -> InspectionResult:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        recipe = self.recipe
        settings = recipe.settings
        image = to_channels(image, settings.nsoartc.channels)
        images: dict[str, np.ndarray] = {"frame": frame.image}  # type: ignore[dict-item]
        wrong = frame_size_problem(image.shape[:2], recipe.golden.shape[:2],
                                   settings.align.enabled)
        if wrong:
            return self.error_result(part_id, wrong, t0, timings, images)

        t = time.perf_counter()
        if settings.align.enabled:
            al = self.aligner.align(image)
            if not al.ok or al.image is None:
                timings["align"] = (time.perf_counter() - t) * 1000
                # a frame of another size that does not align (a camera ROI a few rows off
                # aligns; another resolution does not) says so in the same words every time
                why = (frame_size_problem(image.shape[:2], recipe.golden.shape[:2], False)
                       or al.reason or "alignment_failed")
                if why.startswith("frame_size"):
                    log.debug("%s: %s: %s", part_id, why, al.reason)
                return self.error_result(part_id, why, t0, timings, images)
            aligned = self.photometric.apply(al.image, al.valid)
            valid, align_score = al.valid, al.score
            timings["align"] = (time.perf_counter() - t) * 1000
        else:
            t = time.perf_counter()
            aligned, valid, align_score = self.photometric.apply(image), None, 1.0
            timings["align"] = (time.perf_counter() - t) * 1000
        images["aligned"] = aligned

        d: np.ndarray | None = None
        scores: dict[str, float] | None = None
        metric_image: np.ndarray | None = None
        overlay_ms = 0.0
        if self.transform is not None:
            t = time.perf_counter()
            d = self.transform.distance(aligned, valid)
            timings["nsoartc"] = (time.perf_counter() - t) * 1000

            t = time.perf_counter()
            scores = self.cell_scorer.attribute(d, self.cell_scorer(d), self.thresholds)
            timings["cells"] = (time.perf_counter() - t) * 1000

            t = time.perf_counter()
            metric_image = self.transform.metric_image(d)
            overlay_ms = (time.perf_counter() - t) * 1000
            images["metric"] = metric_image

        ctx = JudgeContext(
            part_id=part_id, recipe=recipe, frame=frame, aligned=aligned, valid=valid,
            distance=d, cell_scores=scores, metric_image=metric_image,
            align_score=float(align_score), grid=recipe.grid, thresholds=self.thresholds,
            golden_metric_fn=self.golden_metric,
        )
        judges: dict[str, JudgeResult] = {}
        for judge in self.judges:
            t = time.perf_counter()
            judges[judge.name] = self._run_judge(judge, ctx)
            timings[judge.name] = (time.perf_counter() - t) * 1000

        verdict, reason, defects = decide(self.policy, judges)
        if scores is None:
            scores, metric = _variation_figures(judges, ctx)
            if metric is not None:
                images["metric"] = metric

        t = time.perf_counter()
        images["overlay"] = draw_overlay(aligned, recipe.grid,
                                         marked=list(dict.fromkeys(x.address for x in defects)))
        timings["overlay"] = overlay_ms + (time.perf_counter() - t) * 1000
        prompts = [(n, j.prompt) for n, j in judges.items() if j.prompt]
        answers = [(n, j.raw_answer) for n, j in judges.items() if j.raw_answer is not None]
        timings["total"] = (time.perf_counter() - t0) * 1000
        return InspectionResult(
            part_id=part_id,
            verdict=verdict,
            reason=reason,
            defects=defects,
            judges=judges,
            timings_ms=timings,
            recipe=recipe.short_hash,
            model=self.model_name,
            cell_scores=scores,
            images=images,
            prompt=_join(prompts),
            raw_answer=_join(answers),
        )

    @staticmethod
    def _run_judge(judge: Judge, ctx: JudgeContext) -> JudgeResult:
        """``judge.judge(ctx)``; a judge that raises gives an ``error`` result (never a pass)."""
        try:
            result = judge.judge(ctx)
        except Exception as exc:
            log.exception("judge %s failed on %s", judge.name, ctx.part_id)
            return JudgeResult(judge.name, Verdict.ERROR,
                               reason=f"judge_failed: {type(exc).__name__}: {exc}")
        if not isinstance(result, JudgeResult):
            return JudgeResult(judge.name, Verdict.ERROR,
                               reason=f"judge_failed: returned {type(result).__name__}")
        return result


def _variation_figures(judges: dict[str, JudgeResult],
                       ctx: JudgeContext) -> tuple[dict[str, float], np.ndarray | None]:
    """Cell scores and metric image of a part judged without a unit space: the variation
    judge's (empty / None when it gave none, e.g. an ``error``)."""
    result = judges.get("variation")
    cells = (result.details or {}).get("cells") if result is not None else None
    scores = {a: float(s) for a, s in cells.items()} if isinstance(cells, dict) else {}
    zf = ctx.maps.get("variation")
    if zf is None:
        return scores, None
    k = float(result.details.get("k") or 1.0) if result is not None and result.details else 1.0
    return scores, cv2.convertScaleAbs(zf, alpha=127.5 / max(k, 1e-6))


def _checked_thresholds(thresholds: dict[str, float]) -> dict[str, float]:
    """The recipe's per-cell thresholds as floats; ValueError for one that is not > 0."""
    out: dict[str, float] = {}
    for a, t in thresholds.items():
        t = float(t)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"threshold for {a!r} must be a positive number, got {t}")
        out[a] = t
    return out


def _join(texts: list[tuple[str, str]]) -> str | None:
    """One judge's text as is; several judges' texts each under a ``[name]`` header."""
    if not texts:
        return None
    if len(texts) == 1:
        return texts[0][1]
    return "\n\n".join(f"[{name}]\n{text}" for name, text in texts)


def frame_size_problem(shape: tuple[int, ...], golden_shape: tuple[int, ...],
                       align: bool = True) -> str | None:
    """``frame_size: WxH (recipe WxH)`` when a frame of ``shape`` cannot be judged against a
    golden of ``golden_shape`` (another camera resolution: beyond what alignment absorbs, or any
    difference without alignment); None when it can.  A frame within the aligner's tolerance
    that then fails to align is reported the same way by the Inspector."""
    (h, w), (gh, gw) = shape[:2], golden_shape[:2]
    tol = MAX_SIZE_MISMATCH if align else 0.0
    if abs(w - gw) > tol * gw or abs(h - gh) > tol * gh:
        return f"frame_size: {w}x{h} (recipe {gw}x{gh})"
    return None


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
