"""The parts a station runs, built from its configuration by :mod:`station.build`."""

from __future__ import annotations

from dataclasses import dataclass

from camera.source import LiveSource
from pipeline.inspector import Inspector
from station.recorder import Recorder


@dataclass
class StationParts:
    """A started-to-be camera, the Inspector with its judges, and the recorder (if recording)."""

    camera: LiveSource
    inspector: Inspector
    recorder: Recorder | None = None
