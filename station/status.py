"""What a running station says about itself: its state, counters, camera and model health.

One :class:`StationStatus` per daemon.  It decides the state (``starting``, ``ready``,
``camera_down``, ``degraded``, ``stopping``) from the facts the daemon records, and assembles the
payloads of status replies, heartbeats and the systemd status line.  It publishes nothing itself:
the daemon changes it under the publisher's lock and announces the transitions.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from station import __version__

DEGRADED_AFTER = 3  # consecutive non-camera error results before the station says "degraded"


@dataclass
class StationStatus:
    """State and counters of one run of the station (boot)."""

    station_id: str
    mode: str
    boot: str
    queue_max: int
    endpoints: dict[str, str] = field(default_factory=dict)
    camera_source: str | None = None
    recipe_hash: str | None = None
    model_name: str | None = None
    state: str = "starting"
    running: bool = False
    stopping: bool = False
    camera_up: bool | None = None  # None until the camera's first transition
    camera_reason: str = "not started"
    degraded: bool = False
    errors_in_row: int = 0
    parts: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"pass": 0, "defect": 0, "error": 0})
    in_hand_since: float | None = None
    t0: float = field(default_factory=time.monotonic)

    def refresh(self) -> str:
        """Recompute :attr:`state` from the facts; returns it."""
        if self.stopping:
            self.state = "stopping"
        elif not self.running:
            self.state = "starting"
        elif self.camera_up is False:
            self.state = "camera_down"
        elif self.degraded:
            self.state = "degraded"
        else:
            self.state = "ready"
        return self.state

    def count_result(self, verdict: str, reason: str) -> bool | None:
        """Count one published result; returns the new ``degraded`` flag when it changes.

        Errors that are not the camera's or the station's own (``camera_down…``,
        ``station_…``) in a row make the model degraded; any pass/defect clears it.
        """
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        if verdict == "error" and not reason.startswith(("camera_down", "station_")):
            self.errors_in_row += 1
            if self.errors_in_row >= DEGRADED_AFTER and not self.degraded:
                return True
        elif verdict != "error":
            self.errors_in_row = 0
            if self.degraded:
                return False
        return None

    # ------------------------------------------------------------------ payloads
    def camera_info(self) -> dict[str, Any]:
        """``camera`` field of status events, replies and heartbeats."""
        return {"up": bool(self.camera_up), "source": self.camera_source,
                "reason": self.camera_reason}

    def model_info(self) -> dict[str, Any]:
        """``model`` field of status events, replies and heartbeats."""
        return {"ok": not self.degraded, "recipe": self.recipe_hash, "name": self.model_name,
                "errors_in_row": self.errors_in_row}

    def uptime_s(self) -> float:
        """Seconds since this run started, rounded to ms."""
        return round(time.monotonic() - self.t0, 3)

    def reply(self, *, seq: int, queued: int) -> dict[str, Any]:
        """The answer to ``{"cmd": "status"}``."""
        return {
            "ok": True, "station": self.station_id, "boot": self.boot, "state": self.state,
            "mode": self.mode, "seq": seq, "queued": queued, "queue_max": self.queue_max,
            "parts": self.parts, "counts": dict(self.counts), "camera": self.camera_info(),
            "model": self.model_info(), "uptime_s": self.uptime_s(), "pid": os.getpid(),
            "version": __version__, "endpoints": self.endpoints,
        }

    def heartbeat(self, *, interval_s: float, queued: int) -> dict[str, Any]:
        """Body of an ``insp.heartbeat`` event."""
        in_hand = self.in_hand_since
        return {
            "state": self.state, "mode": self.mode, "interval_s": interval_s,
            "uptime_s": self.uptime_s(), "queued": queued, "parts": self.parts,
            "counts": dict(self.counts),
            "in_hand_s": round(time.monotonic() - in_hand, 3) if in_hand else None,
            "camera": self.camera_info(), "model": self.model_info(),
            "endpoints": self.endpoints,
        }

    def line(self, *, seq: int, queued: int) -> str:
        """One line for systemd's ``STATUS=``."""
        c = self.counts
        cam = "up" if self.camera_up else "DOWN"
        return (f"{self.state}: {self.parts} parts ({c['pass']} pass, {c['defect']} defect, "
                f"{c['error']} error), last seq {seq}, camera {cam}, queue {queued}")
