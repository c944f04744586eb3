"""Replay: run any frame source through the Inspector and compare with ground truth when known.

Frames that name their own golden (manifest rows, DeepPCB pairs) are judged against it through a
:class:`~station.golden_switch.GoldenSwitch` (evaluation only; the live Inspector has one recipe).

Ground truth comes from labelled sources only (manifest, DeepPCB, synthetic line).  A recording's
verdicts are what the station said, not the truth: they are kept as ``recorded`` and reports show
the agreement with them, never a confusion matrix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from pipeline.base.frames import Frame
from pipeline.inspector import InspectionResult, Inspector
from pipeline.verdicts import Verdict
from station.golden_switch import GoldenSwitch


@dataclass
class PartOutcome:
    """One replayed part: the result, the ground truth (if labelled) and how they compare."""

    frame: Frame
    result: InspectionResult
    truth_label: str | None = None  # "pass" | "defect" | None (unlabelled)
    truth_addresses: list[str] = field(default_factory=list)
    # the per-cell thresholds the part was judged with (a GoldenSwitch builds them per golden)
    thresholds: Mapping[str, float] | None = None

    @property
    def recorded(self) -> dict[str, Any] | None:
        """What a recording says the station decided for this frame (``verdict``, ``defects``,
        ``recipe``), or None when the frame does not come from a recording."""
        doc = self.frame.meta.get("record")
        if not isinstance(doc, dict):
            return None
        event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
        return {"verdict": self.frame.meta.get("verdict"),
                "defects": list(self.frame.meta.get("defects") or []),
                "recipe": doc.get("recipe", event.get("recipe"))}

    @property
    def rejected(self) -> bool:
        """The line would reject this part (defect or error: never a pass)."""
        return self.result.verdict is not Verdict.PASS

    @property
    def outcome(self) -> str | None:
        """tp / fp / tn / fn at part level (rejected = positive), None if unlabelled."""
        if self.truth_label is None:
            return None
        bad = self.truth_label == "defect"
        return ("tp" if bad else "fp") if self.rejected else ("fn" if bad else "tn")

    def to_json(self) -> dict[str, Any]:
        """The JSON line written per part."""
        d = self.result.to_payload()
        d["frame"] = self.frame.meta.get("path") or f"{self.frame.source_id}#{self.frame.seq}"
        if self.truth_label is not None:
            d["truth"] = {"label": self.truth_label, "defects": self.truth_addresses}
            d["outcome"] = self.outcome
        recorded = self.recorded
        if recorded is not None:
            d["recorded"] = recorded
        return d


def truth_of(frame: Frame) -> tuple[str | None, list[str]]:
    """Ground truth from a labelled frame's meta (manifest, DeepPCB, synthetic); a recording's
    recorded verdict is not ground truth (None)."""
    label = frame.meta.get("label")
    defects = list(frame.meta.get("defects") or [])
    if label is None or "record" in frame.meta:
        return None, defects
    label = str(label).strip().lower()
    if label in ("pass", "ok", "good", "passed"):
        return "pass", defects
    if label in ("error",):  # a recorded error has no ground truth
        return None, defects
    return "defect", defects


def replay(
    source: Iterable[Frame],
    inspector: Inspector | GoldenSwitch,
    *,
    on_part: Callable[[PartOutcome], None] | None = None,
    limit: int | None = None,
) -> Iterator[PartOutcome]:
    """Inspect every frame of ``source`` (up to ``limit``), yielding outcomes as they come; an
    Inspector is wrapped in a GoldenSwitch (frames with a ``golden`` of their own)."""
    if isinstance(inspector, Inspector):
        inspector = GoldenSwitch(inspector)
    for n, frame in enumerate(source):
        if limit is not None and n >= limit:
            break
        result = inspector.inspect(frame)
        label, addresses = truth_of(frame)
        outcome = PartOutcome(frame, result, label, addresses,
                              _thresholds(inspector, frame, result))
        if on_part:
            on_part(outcome)
        yield outcome


def _thresholds(inspector: GoldenSwitch, frame: Frame,
                result: InspectionResult) -> Mapping[str, float]:
    """The thresholds ``frame`` was judged with: its golden's recipe's (already built and cached
    by the inspection), else (an error: nothing was judged) the base recipe's."""
    if result.verdict is Verdict.ERROR:
        return inspector.recipe.settings.thresholds
    try:
        return inspector.inspector_for(frame).recipe.settings.thresholds
    except Exception:  # an unusable golden: the part is an error; the base thresholds do
        return inspector.recipe.settings.thresholds


def write_json_line(outcome: PartOutcome, out: TextIO) -> None:
    """Write one part as a JSON line."""
    out.write(json.dumps(outcome.to_json(), separators=(",", ":")) + "\n")
    out.flush()
