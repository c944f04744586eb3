"""The synthetic camera: a live source that renders a fresh part of the synthetic pin line per
read (the generator is :mod:`camera.synth`)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camera.claims import FrameClaim
from camera.registry import SourceOptions, register_source
from camera.synth import DEFECT_MODES, LineSpec, make_part, render_golden, sample_defects
from pipeline.base.frames import Frame

__all__ = ["LineSpec", "SyntheticCamera"]


class SyntheticCamera:
    """A live source (:class:`camera.source.LiveSource`) that renders a fresh part per read.

    Each ``read_latest`` returns a new part: good with probability ``p_good``, otherwise one
    (sometimes two) random defects.  ``meta`` carries the truth: ``label``, ``defects``
    (addresses), ``modes`` (``[{address, mode}]``) and ``part_id``.  ``fps`` (optional) caps the
    rate like a real camera would; ``read_latest`` never waits longer than its timeout.
    :meth:`set_available` simulates a camera outage for tests of the daemon's health handling.
    """

    def __init__(self, spec: LineSpec | None = None, *, seed: int = 0, p_good: float = 0.8,
                 fps: float | None = None, source_id: str = "synthetic",
                 modes: Sequence[str] = DEFECT_MODES,
                 on_health: Callable[[bool, str], None] | None = None) -> None:
        if not 0.0 <= p_good <= 1.0:
            raise ValueError(f"p_good must be in [0, 1], got {p_good}")
        self.spec = spec or LineSpec()
        self.source_id = source_id
        self.p_good = p_good
        self.fps = fps
        self.modes = tuple(modes)
        self._on_health = on_health
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._seq = 0  # seq of the last returned frame; the first frame is 1, as in LiveCamera
        self._last_ts = 0.0
        self._started = False
        self._closed = False
        self._available = True
        self._down_reason = ""
        self._golden: np.ndarray | None = None
        # triggers waiting for their part: rendered at once, in trigger order, by one thread
        self._claims: queue.Queue[tuple[FrameClaim, float]] = queue.Queue(maxsize=64)
        self._shutter: threading.Thread | None = None
        self._shutter_lock = threading.Lock()

    def start(self) -> None:
        """Mark the camera started (rendering happens on demand); never raises."""
        with self._lock:
            self._started = True
            self._closed = False
        self._notify(True, "synthetic camera started")

    @property
    def is_up(self) -> bool:
        """True while started, not closed and not in a simulated outage."""
        return self._started and not self._closed and self._available

    @property
    def healthy(self) -> bool:
        """Same as :attr:`is_up` (older name)."""
        return self.is_up

    @property
    def reason(self) -> str:
        """Why the camera is down, or that it is up."""
        if self._closed:
            return "synthetic camera closed"
        if not self._started:
            return "synthetic camera not started"
        return self._down_reason or "synthetic camera started"

    def set_health_callback(self, callback: Callable[[bool, str], None] | None) -> None:
        """Call ``callback(up, reason)`` on every later health transition."""
        self._on_health = callback

    @property
    def golden(self) -> np.ndarray:
        """The golden image of this line (rendered once)."""
        if self._golden is None:
            self._golden = render_golden(self.spec)
        return self._golden

    def set_available(self, up: bool, reason: str = "simulated outage") -> None:
        """Simulate the camera going down (``up=False``) or coming back; fires ``on_health``."""
        changed = up != self._available
        self._available = up
        self._down_reason = "" if up else reason
        if changed:
            self._notify(up, "synthetic camera back" if up else reason)

    def claim_frame(self, after_ts: float, until_ts: float) -> FrameClaim:
        """Take the part in front of the camera now (a software trigger): rendered by the
        camera's own thread and handed to the returned claim (:mod:`camera.claims`), so a part
        that then waits in a queue is judged on the picture of its trigger's moment."""
        claim = FrameClaim(after_ts, until_ts)
        shot = max(after_ts, time.time())
        with self._shutter_lock:
            if self._shutter is None or not self._shutter.is_alive():
                self._shutter = threading.Thread(target=self._shoot, name="synthetic-shutter",
                                                 daemon=True)
                self._shutter.start()
        try:
            self._claims.put_nowait((claim, shot))
        except queue.Full:
            claim.end("too many pending triggers")
        return claim

    def _shoot(self) -> None:
        while True:
            claim, shot = self._claims.get()
            if self._closed:
                claim.end("synthetic camera closed")
                continue
            frame = self._take(1.0, shot)
            if frame.image is not None:
                claim.offer(frame)
            else:
                claim.end(frame.error or "no frame")

    def read_latest(self, timeout: float, *, after_ts: float | None = None) -> Frame:
        """A freshly rendered part (seq 1, 2, …), or ``Frame(image=None, error="camera_down: …")``
        carrying the seq of the last returned frame (as camera.live.LiveCamera does).

        Parts are rendered when read, so every frame is captured after ``after_ts``."""
        return self._take(timeout, None)

    def _take(self, timeout: float, shot_ts: float | None) -> Frame:
        """Render the part in front of the camera at ``shot_ts`` (the shutter's moment: now when
        None; rendering itself takes a while but the picture is of that moment)."""
        if not self._started or self._closed:
            return Frame(image=None, seq=self._seq, source_id=self.source_id,
                         error="camera_down: synthetic camera not started")
        if not self._available:
            time.sleep(max(0.0, min(timeout, 0.05)))
            return Frame(image=None, seq=self._seq, source_id=self.source_id,
                         error=f"camera_down: {self._down_reason}")
        with self._lock:
            if self.fps:
                wait = self._last_ts + 1.0 / self.fps - time.time()
                if wait > 0:
                    time.sleep(min(wait, max(timeout, 0.0)))
            t_shot = time.time() if shot_ts is None else shot_ts
            if self.fps:
                t_shot = max(t_shot, self._last_ts + 1.0 / self.fps)
            if self._rng.random() < self.p_good:
                defects: list[tuple[str, str]] = []
            else:
                defects = sample_defects(self.spec, self._rng,
                                         2 if self._rng.random() < 0.15 else 1, self.modes)
            part = make_part(self.spec, self._rng, defects)
            self._seq += 1
            seq = self._seq
            self._last_ts = t_shot
        meta = {"label": part.label, "defects": part.addresses,
                "modes": [{"address": a, "mode": m} for a, m in part.defects],
                "part_id": f"syn-{seq:06d}"}
        return Frame(image=part.image, seq=seq, ts=self._last_ts, source_id=self.source_id,
                     meta=meta)

    def close(self) -> None:
        """Stop; later reads return ``camera_down`` frames."""
        with self._lock:
            was = self._started and not self._closed
            self._closed = True
        if was:
            self._notify(False, "synthetic camera closed")

    def _notify(self, up: bool, reason: str) -> None:
        if self._on_health is not None:
            with contextlib.suppress(Exception):  # a faulty callback must not kill the camera
                self._on_health(up, reason)


# ------------------------------------------------------------------ camera type "synthetic"
@dataclass(frozen=True)
class SyntheticOptions(SourceOptions):
    """``camera: {type: synthetic, …}``: the synthetic pin line (the demo's camera)."""

    width: int = 640
    height: int = 480
    seed: int = 0
    p_good: float = 0.8
    fps: float | None = None

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.p_good <= 1.0:
            raise ValueError("p_good must be in [0, 1]")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be > 0")


@register_source("synthetic", options=SyntheticOptions)
def open_synthetic(options: SyntheticOptions, base_dir: Path) -> SyntheticCamera:
    """A :class:`SyntheticCamera` rendering ``width``×``height`` parts."""
    return SyntheticCamera(LineSpec(size=(options.width, options.height)), seed=options.seed,
                           p_good=options.p_good, fps=options.fps)
