"""Decision policy: combine the metric and VLM judges into the part's verdict (DESIGN §5.4).

``any`` (default) is fail-safe: the part is rejected when either judge says defect or the VLM is
uncertain, and it is an ``error`` when a judge that has a say could not judge.  ``both`` rejects
only when both judges say defect: it lets a defect through whenever one judge misses it, so it is
not fail-safe and is meant for trials.  Under every policy, a consulted judge that errs or is
uncertain makes the part an ``error`` or a reject, never a ``pass``.
"""

from __future__ import annotations

from typing import Literal

from pipeline.verdicts import Defect, JudgeResult, Verdict

Policy = Literal["any", "metric", "vlm", "both"]
POLICIES: tuple[str, ...] = ("any", "metric", "vlm", "both")


def _error(judges: list[JudgeResult]) -> tuple[Verdict, str | None]:
    bad = [j for j in judges if j.verdict is Verdict.ERROR]
    return Verdict.ERROR, "; ".join(f"{j.judge}: {j.reason or 'error'}" for j in bad)


def decide(
    policy: str, metric: JudgeResult, vlm: JudgeResult | None
) -> tuple[Verdict, str | None, list[Defect]]:
    """The part's verdict, reason and defects under ``policy``.

    Never returns ``pass`` unless every judge the policy consults returned ``pass`` (``both``:
    at least one judge returned pass and none failed).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    if policy in ("vlm", "both") and vlm is None:
        raise ValueError(f"policy {policy!r} needs the VLM judge")
    consulted = [metric] if policy == "metric" else [vlm] if policy == "vlm" else [metric, vlm]
    judges = [j for j in consulted if j is not None]
    defects = [d for j in judges for d in j.defects]
    says_defect = [j for j in judges if j.verdict is Verdict.DEFECT]
    uncertain = [j for j in judges if j.verdict is Verdict.UNCERTAIN]
    errors = [j for j in judges if j.verdict is Verdict.ERROR]

    if policy == "both":
        if errors:
            return (*_error(judges), defects)
        if uncertain:  # an unreadable judge is never a pass, whatever the other said
            return Verdict.DEFECT, "; ".join(f"{j.judge}: uncertain" for j in uncertain), defects
        if all(j.verdict is Verdict.DEFECT for j in judges):
            return Verdict.DEFECT, None, defects
        return Verdict.PASS, None, []

    # any / metric / vlm: a defect found by a consulted judge rejects the part even if another
    # judge failed (the part is bad either way); otherwise a failure is an error, never a pass.
    if says_defect:
        return Verdict.DEFECT, None, defects
    if errors:
        return (*_error(judges), defects)
    if uncertain:
        return Verdict.DEFECT, "; ".join(f"{j.judge}: uncertain" for j in uncertain), defects
    return Verdict.PASS, None, []
