"""Frame claims: each pending trigger gets the first frame captured after it, not the newest.

A live source keeps only its newest frame, so a part that waited in the trigger queue would be
judged on whatever is in front of the camera when it leaves the queue (a later part).  Instead,
when a trigger arrives the station *claims* a frame from the source (:meth:`FrameClaims.claim`);
the source's reader offers every frame it captures (:meth:`FrameClaims.offer`) and the first
one captured at or after the trigger, and no later than the claim's deadline, is kept for that
trigger until the inspection loop takes it (:meth:`FrameClaim.wait`).

Memory is bounded: at most ``limit`` claims are pending per source (the oldest is given up
beyond that), a claim holds one frame, and claims whose deadline passed are dropped at the next
offer.  Claims sharing a frame share its array.
"""

from __future__ import annotations

import threading
import time

from pipeline.base.frames import Frame

DEFAULT_LIMIT = 64


class FrameClaim:
    """The first frame captured in ``[after_ts, until_ts]`` (wall-clock seconds), once offered."""

    def __init__(self, after_ts: float, until_ts: float) -> None:
        self.after_ts = float(after_ts)
        self.until_ts = float(until_ts)
        self._frame: Frame | None = None
        self._done = threading.Event()
        self.why: str | None = None  # why the claim ended without a frame

    @property
    def done(self) -> bool:
        """True once a frame was handed over or the claim ended without one."""
        return self._done.is_set()

    @property
    def frame(self) -> Frame | None:
        """The frame handed over (None while pending or when none came)."""
        return self._frame

    def offer(self, frame: Frame) -> bool:
        """Take ``frame`` if it is the first good one captured in the window; returns True when
        the claim is finished (filled, or the window is over)."""
        if self._done.is_set():
            return True
        if frame.ts < self.after_ts:
            return False
        if frame.ts > self.until_ts:
            self.end("no frame captured in time")
            return True
        self._frame = frame  # a frame that could not be decoded too: it is the part's (error)
        self._done.set()
        return True

    def end(self, why: str) -> None:
        """Finish without a frame (deadline passed, source closed, claim given up)."""
        if not self._done.is_set():
            self.why = why
            self._done.set()

    def wait(self, timeout: float) -> Frame | None:
        """The claimed frame, waiting up to ``timeout`` s for it to be handed over (a frame
        captured before the deadline may arrive a little after it: a camera that renders or
        transfers slowly)."""
        self._done.wait(max(0.0, timeout))
        return self._frame


class FrameClaims:
    """The pending claims of one source; the source calls :meth:`offer` for every frame."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._pending: list[FrameClaim] = []

    def claim(self, after_ts: float, until_ts: float) -> FrameClaim:
        """Register a claim for the first frame captured in ``[after_ts, until_ts]``."""
        c = FrameClaim(after_ts, until_ts)
        with self._lock:
            self._pending.append(c)
            while len(self._pending) > self.limit:
                self._pending.pop(0).end(f"more than {self.limit} pending claims")
        return c

    def offer(self, frame: Frame) -> None:
        """Hand ``frame`` to every pending claim it satisfies; drop finished and expired ones."""
        now = time.time()
        with self._lock:
            if not self._pending:
                return
            keep = []
            for c in self._pending:
                if c.offer(frame):
                    continue
                if c.until_ts < now:
                    c.end("no frame captured in time")
                    continue
                keep.append(c)
            self._pending = keep

    def expire(self, now: float | None = None) -> None:
        """End the claims whose deadline passed (a source that delivers no frame at all)."""
        t = time.time() if now is None else now
        with self._lock:
            if not self._pending:
                return
            keep = []
            for c in self._pending:
                if c.until_ts < t:
                    c.end("no frame captured in time")
                else:
                    keep.append(c)
            self._pending = keep

    def end_all(self, why: str) -> None:
        """Finish every pending claim without a frame (the source is closing)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for c in pending:
            c.end(why)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
