"""What the live cameras that run their own threads share (``LiveCamera``, ``FilesCamera``,
``GenicamCamera``): health as :class:`~camera.source.LiveSource` reports it, the frame a read
returns when none came, frame claims for triggers, and the newest-frame slot that ``read_latest``
reads (:class:`NewestFrame`; GenICam keeps its own, it has trigger modes).

Health changes on transitions only, under a lock held while the callback runs, so callbacks
arrive in order; once the camera is stopping nothing is reported any more.  A camera going down
drops the frames it holds (:meth:`ThreadedSource._drop_frames`): a frame from before a loss is
never handed out afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from camera.claims import FrameClaim, FrameClaims
from camera.source import HealthCallback
from pipeline.base.frames import Frame

log = logging.getLogger(__name__)


class NewestFrame:
    """The newest frame a camera's thread grabbed: numbered in grab order, handed out at most
    once, older ones dropped (a read never gets a stale backlog)."""

    def __init__(self, source_id: str) -> None:
        """``source_id``: stamped on every frame put here."""
        self.source_id = source_id
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self.grab_seq = 0      # seq of the newest grabbed frame
        self.returned_seq = 0  # seq of the last frame handed out

    def put(self, frame: Frame) -> Frame:
        """Keep ``frame`` (renumbered, stamped with the source) as the newest; wake readers."""
        with self._cond:
            self.grab_seq += 1
            latest = self._latest = replace(frame, seq=self.grab_seq, source_id=self.source_id)
            self._cond.notify_all()
        return latest

    def take(self, timeout: float, after_ts: float | None, stop: threading.Event) -> Frame | None:
        """The newest frame not handed out yet (captured at or after ``after_ts`` when given),
        waiting up to ``timeout`` s; None when none came in time or ``stop`` is set."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                f = self._latest
                if (f is not None and f.seq > self.returned_seq
                        and (after_ts is None or f.ts >= after_ts)):
                    self.returned_seq = f.seq
                    return f
                remaining = deadline - time.monotonic()
                if stop.is_set() or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def drop(self) -> None:
        """Forget the newest frame (a camera that went down: never hand out one from before)."""
        with self._cond:
            self._latest = None

    def wake(self) -> None:
        """Wake waiting readers (the camera is closing)."""
        with self._cond:
            self._cond.notify_all()


class ThreadedSource:
    """Base of the threaded live cameras; a subclass calls :meth:`_init_threaded` in its
    ``__init__`` (after setting ``source_id``), :meth:`_set_health` from its threads,
    :meth:`_health_closed` from ``close``, and puts grabbed frames in ``self._newest`` (or
    overrides :meth:`read_latest` and :meth:`_drop_frames`)."""

    source_id: str
    on_health: HealthCallback | None

    def _init_threaded(self, on_health: HealthCallback | None) -> None:
        self.on_health = on_health
        self._stop = threading.Event()
        # health, guarded by _health_lock (held while the callback runs: callbacks stay ordered)
        self._health_lock = threading.Lock()
        self._up: bool | None = None
        self._reason = "not started"
        # triggers waiting for the first frame captured after them
        self._claims = FrameClaims()
        # the newest grabbed frame, for read_latest
        self._newest = NewestFrame(self.source_id)

    # ------------------------------------------------------------------ LiveSource
    def set_health_callback(self, callback: HealthCallback | None) -> None:
        """Call ``callback(up, reason)`` on every later health transition (replaces
        ``on_health``); set it before ``start`` to see the first transition."""
        with self._health_lock:
            self.on_health = callback

    @property
    def is_up(self) -> bool:
        """True while frames flow (up), False before the first frame and while down."""
        return bool(self._up)

    @property
    def healthy(self) -> bool:
        """Same as :attr:`is_up` (older name)."""
        return self.is_up

    @property
    def reason(self) -> str:
        """Reason of the last health transition (why it is down, or what brought it up)."""
        return self._reason

    def claim_frame(self, after_ts: float, until_ts: float) -> FrameClaim:
        """Keep the first frame captured in ``[after_ts, until_ts]`` for the caller (a trigger
        that may wait in a queue): see :mod:`camera.claims`."""
        claim = self._claims.claim(after_ts, until_ts)
        if self._stop.is_set():
            claim.end("camera closed")
        return claim

    def read_latest(self, timeout: float, *, after_ts: float | None = None) -> Frame:
        """The newest frame newer than the last one returned (captured at or after ``after_ts``
        — wall-clock seconds, trigger mode: a frame taken after the trigger — when given),
        waiting up to ``timeout`` s; else ``Frame(image=None, error="camera_down: <reason>")``
        carrying the seq of the last returned frame (none came in time, down, or closed)."""
        frame = self._newest.take(timeout, after_ts, self._stop)
        return frame if frame is not None else self._no_frame(self._newest.returned_seq, timeout)

    # ------------------------------------------------------------------ for the subclass
    def _no_frame(self, seq: int, timeout: float, awaited: str = "new frame") -> Frame:
        """What a read returns when no frame (``awaited``) came within ``timeout``:
        ``camera_down`` with why (closed, frames stopped, or the reason the camera is down)."""
        if self._stop.is_set():
            reason = "closed"
        elif self._up:
            reason = f"no {awaited} within {timeout:.3g} s"
        else:
            reason = self._reason
        return Frame(image=None, seq=seq, ts=time.time(), source_id=self.source_id,
                     error=f"camera_down: {reason}")

    def _set_health(self, up: bool, reason: str) -> None:
        """A health observation; reported (logged, callback) when it is a transition."""
        with self._health_lock:
            if self._stop.is_set():
                return
            if self._up is up:
                if not up:
                    self._reason = reason  # keep the freshest reason for reads while down
                return
            self._up = up
            self._reason = reason
            if not up:
                self._drop_frames()
            (log.info if up else log.warning)(
                "%s: camera %s: %s", self.source_id, "up" if up else "down", reason)
            if self.on_health is not None:
                try:
                    self.on_health(up, reason)
                except Exception:
                    self._count("callback_errors")
                    log.exception("%s: on_health callback failed", self.source_id)

    def _health_closed(self) -> None:
        """The camera is closed: down, reason ``closed`` (no callback: it was asked for)."""
        with self._health_lock:
            self._up = False
            self._reason = "closed"

    def _drop_frames(self) -> None:
        """Forget the frames held (called under the health lock when the camera goes down)."""
        self._newest.drop()

    def _count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key`` (cameras that keep statistics override this)."""
