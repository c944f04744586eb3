"""Decision policy: combine the judges' results into the part's verdict (DESIGN §5.4).

A policy speaks of judge names:

- ``any`` (default) is fail-safe: the part is rejected when any judge says defect or is
  uncertain, and it is an ``error`` when a judge erred and none said defect.
- ``all`` (``both`` is its alias, from the days of two judges) rejects only when every judge says
  defect: it lets a defect through whenever one judge misses it, so it is not fail-safe and is
  meant for trials.  It needs at least two judges.
- the NAME of one judge: only that judge decides; the others still run and are reported.

Under every policy, a consulted judge that errs or is uncertain makes the part an ``error`` or a
reject, never a ``pass``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pipeline.verdicts import Defect, JudgeResult, Verdict

GENERIC_POLICIES: tuple[str, ...] = ("any", "all", "both")


def validate_policy(policy: str, judge_names: Collection[str]) -> str:
    """``policy`` when it makes sense for judges ``judge_names``, else ValueError saying why."""
    names = list(judge_names)
    if not names:
        raise ValueError("no judges: list at least one (e.g. judges: [metric])")
    if policy in ("all", "both"):
        if len(names) < 2:
            raise ValueError(f"policy {policy!r} needs at least two judges (judges: "
                             f"{', '.join(names)}); use 'any' or a judge's name")
        return policy
    if policy == "any" or policy in names:
        return policy
    raise ValueError(f"unknown policy {policy!r}: it must be one of any, all, both or the name of "
                     f"a judge that runs ({', '.join(names)})")


def _error(judges: list[JudgeResult]) -> tuple[Verdict, str | None]:
    bad = [j for j in judges if j.verdict is Verdict.ERROR]
    return Verdict.ERROR, "; ".join(f"{j.judge}: {j.reason or 'error'}" for j in bad)


def decide(
    policy: str, results: Mapping[str, JudgeResult]
) -> tuple[Verdict, str | None, list[Defect]]:
    """The part's verdict, reason and defects under ``policy``, from ``results`` (judge name →
    result, in the order the judges ran).

    Never returns ``pass`` unless every judge the policy consults returned ``pass`` (``all``:
    at least one judge returned pass and none failed or was uncertain).
    """
    validate_policy(policy, results.keys())
    judges = [results[policy]] if policy in results else list(results.values())
    defects = [d for j in judges for d in j.defects]
    says_defect = [j for j in judges if j.verdict is Verdict.DEFECT]
    uncertain = [j for j in judges if j.verdict is Verdict.UNCERTAIN]
    errors = [j for j in judges if j.verdict is Verdict.ERROR]

    if policy in ("all", "both"):
        if errors:
            return (*_error(judges), defects)
        if uncertain:  # an unreadable judge is never a pass, whatever the others said
            return Verdict.DEFECT, "; ".join(f"{j.judge}: uncertain" for j in uncertain), defects
        if all(j.verdict is Verdict.DEFECT for j in judges):
            return Verdict.DEFECT, None, defects
        return Verdict.PASS, None, []

    # any / one judge: a defect found by a consulted judge rejects the part even if another judge
    # failed (the part is bad either way); otherwise a failure is an error, never a pass.
    if says_defect:
        return Verdict.DEFECT, None, defects
    if errors:
        return (*_error(judges), defects)
    if uncertain:
        return Verdict.DEFECT, "; ".join(f"{j.judge}: uncertain" for j in uncertain), defects
    return Verdict.PASS, None, []
