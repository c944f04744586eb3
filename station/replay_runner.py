"""Replay: run any frame source through the Inspector and compare with ground truth when known.

Frames that name their own golden (manifest rows, DeepPCB pairs) are judged against it through a
:class:`~station.golden_switch.GoldenSwitch` (evaluation only; the live Inspector has one recipe).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
        return d


def truth_of(frame: Frame) -> tuple[str | None, list[str]]:
    """Ground truth from a labelled frame's meta (manifest, DeepPCB, recording, synthetic)."""
    label = frame.meta.get("label")
    defects = list(frame.meta.get("defects") or [])
    if label is None:
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
        outcome = PartOutcome(frame, result, label, addresses)
        if on_part:
            on_part(outcome)
        yield outcome


class Progress:
    """A one-line progress bar on stderr when it is a terminal (silent otherwise)."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.n = 0
        self.t0 = time.monotonic()

    def step(self, outcome: PartOutcome) -> None:
        """Advance by one part."""
        self.n += 1
        if not self.enabled:
            return
        rate = self.n / max(time.monotonic() - self.t0, 1e-6)
        if self.total:
            filled = int(30 * self.n / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"\r[{bar}] {self.n}/{self.total} {rate:5.1f} parts/s"
        else:
            text = f"\r{self.n} parts {rate:5.1f} parts/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled and self.n:
            self.stream.write("\n")
            self.stream.flush()


def write_json_line(outcome: PartOutcome, out: TextIO) -> None:
    """Write one part as a JSON line."""
    out.write(json.dumps(outcome.to_json(), separators=(",", ":")) + "\n")
    out.flush()
