"""The parts a station runs, built from its configuration by :mod:`station.build`."""

from __future__ import annotations

from dataclasses import dataclass

from camera.source import LiveSource
from pipeline.inspector import Inspector
from station.recorder import Recorder


@dataclass
class StationParts:
    """The camera (created, not started), the Inspector with its judges, and the recorder
    (None when recording is off)."""

    camera: LiveSource
    inspector: Inspector
    recorder: Recorder | None = None
