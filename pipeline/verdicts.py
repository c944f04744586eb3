"""Verdict types shared by the judges, the decision policy, events and reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from pipeline.base.addresses import make_address

__all__ = ["Defect", "JudgeResult", "Verdict", "make_address"]


class Verdict(str, Enum):
    """Verdict of a judge or of the whole part.

    ``uncertain`` exists only for a judge (the VLM could not be read); a part's final verdict is
    ``pass``, ``defect`` or ``error``.  Neither ``error`` nor ``uncertain`` is ever a pass.
    """

    PASS = "pass"
    DEFECT = "defect"
    ERROR = "error"
    UNCERTAIN = "uncertain"

    def __str__(self) -> str:
        return self.value


@dataclass
class Defect:
    """One defect at one address (``X:<column>, Y:<row>``)."""

    address: str
    column: str
    row: str
    score: float | None = None
    mode: str | None = None
    judge: str = "metric"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the event schema's ``defects[]`` shape."""
        return asdict(self)


@dataclass
class JudgeResult:
    """What one judge (named ``judge``: ``metric``, ``vlm``, any registered one) said about one
    part."""

    judge: str
    verdict: Verdict
    defects: list[Defect] = field(default_factory=list)
    reason: str | None = None
    # judge-specific figures, in events and reports: metric → {"max_score": …, "cells": {...},
    # "align_score": …}; vlm → {"p_defect": …, "raw": answer text, "mode": …, "ms": …}
    details: dict[str, Any] = field(default_factory=dict)
    # for the recorder only (never in an event): the text a language-model judge was asked and
    # its full answer
    prompt: str | None = None
    raw_answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for ``judges.<name>`` of the event."""
        d: dict[str, Any] = {"verdict": self.verdict.value, "reason": self.reason}
        d["defects"] = [x.to_dict() for x in self.defects]
        d.update(self.details)
        return d
