"""What a running station says about itself: its state, counters, camera and model health.

One :class:`StationStatus` per daemon.  It decides the state (``starting``, ``ready``,
``camera_down``, ``degraded``, ``stopping``) from the facts the daemon records (a full disk makes
the station ``degraded`` with reason ``disk_full`` whatever else holds), and assembles the
payloads of status replies, heartbeats (with the disk's and the recorder's health) and the
systemd status line.  It publishes nothing itself:
the daemon changes it under the publisher's lock and announces the transitions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from station import __version__

DEGRADED_AFTER = 3  # consecutive non-camera error results before the station says "degraded"
# error reasons that say nothing about the model: the camera, the trigger timing, the station
NOT_MODEL_ERRORS = ("camera_down", "stale_trigger", "station_", "disk_full", "frame_size")


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
    disk_full: bool = False
    disk_free_bytes: int | None = None
    recorder_info: Callable[[], dict[str, Any]] | None = None
    # the drift component (station.drift): its reason for ``degraded`` (``frame_size``,
    # ``recipe_drift``) and the heartbeat's ``drift`` figure
    drift_reason: str | None = None
    drift_info: Callable[[], dict[str, Any]] | None = None
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
        elif self.disk_full:
            self.state = "degraded"
        elif self.camera_up is False:
            self.state = "camera_down"
        elif self.degraded or self.drift_reason:
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
        if verdict == "error" and not reason.startswith(NOT_MODEL_ERRORS):
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

    def state_reason(self) -> str | None:
        """Why the station is not ``ready`` (``disk_full``, the camera's reason…), else None."""
        if self.state == "degraded" and self.disk_full:
            return "disk_full"
        if self.state == "camera_down":
            return self.camera_reason
        if self.state == "degraded" and self.drift_reason and not self.degraded:
            return self.drift_reason
        if self.state == "degraded":
            return f"{self.errors_in_row} errors in a row"
        return None

    def drift(self) -> dict[str, Any] | None:
        """``drift`` field of replies and heartbeats (None without a drift component)."""
        if self.drift_info is None:
            return None
        try:
            return self.drift_info()
        except Exception as exc:  # health reporting must never stop a heartbeat
            return {"error": f"{type(exc).__name__}: {exc}"}

    def disk_info(self) -> dict[str, Any]:
        """``disk`` field of replies and heartbeats: can events be journaled."""
        return {"ok": not self.disk_full, "reason": "disk_full" if self.disk_full else None,
                "free_bytes": self.disk_free_bytes}

    def recorder_health(self) -> dict[str, Any] | None:
        """``recorder`` field of replies and heartbeats (None when recording is off)."""
        if self.recorder_info is None:
            return None
        try:
            return self.recorder_info()
        except Exception as exc:  # health reporting must never stop a heartbeat
            return {"ok": False, "last_error": f"{type(exc).__name__}: {exc}"}

    def uptime_s(self) -> float:
        """Seconds since this run started, rounded to ms."""
        return round(time.monotonic() - self.t0, 3)

    def reply(self, *, seq: int, queued: int) -> dict[str, Any]:
        """The answer to ``{"cmd": "status"}``."""
        return {
            "ok": True, "station": self.station_id, "boot": self.boot, "state": self.state,
            "reason": self.state_reason(),
            "mode": self.mode, "seq": seq, "queued": queued, "queue_max": self.queue_max,
            "parts": self.parts, "counts": dict(self.counts), "camera": self.camera_info(),
            "model": self.model_info(), "disk": self.disk_info(),
            "recorder": self.recorder_health(), "drift": self.drift(),
            "uptime_s": self.uptime_s(), "pid": os.getpid(),
            "version": __version__, "endpoints": self.endpoints,
        }

    def heartbeat(self, *, interval_s: float, queued: int) -> dict[str, Any]:
        """Body of an ``insp.heartbeat`` event."""
        in_hand = self.in_hand_since
        return {
            "state": self.state, "reason": self.state_reason(), "mode": self.mode,
            "interval_s": interval_s,
            "uptime_s": self.uptime_s(), "queued": queued, "parts": self.parts,
            "counts": dict(self.counts),
            "in_hand_s": round(time.monotonic() - in_hand, 3) if in_hand else None,
            "camera": self.camera_info(), "model": self.model_info(), "disk": self.disk_info(),
            "recorder": self.recorder_health(), "drift": self.drift(),
            "endpoints": self.endpoints,
        }

    def line(self, *, seq: int, queued: int) -> str:
        """One line for systemd's ``STATUS=``."""
        c = self.counts
        cam = "up" if self.camera_up else "DOWN"
        return (f"{self.state}: {self.parts} parts ({c['pass']} pass, {c['defect']} defect, "
                f"{c['error']} error), last seq {seq}, camera {cam}, queue {queued}")
