"""What the live cameras that run their own threads share (``LiveCamera``, ``FilesCamera``,
``GenicamCamera``): health as :class:`~camera.source.LiveSource` reports it, the frame a read
returns when none came, and frame claims for triggers.

Health changes on transitions only, under a lock held while the callback runs, so callbacks
arrive in order; once the camera is stopping nothing is reported any more.  A camera going down
drops the frames it holds (:meth:`ThreadedSource._drop_frames`): a frame from before a loss is
never handed out afterwards.
"""

from __future__ import annotations

import logging
import threading
import time

from camera.claims import FrameClaim, FrameClaims
from camera.source import HealthCallback
from pipeline.base.frames import Frame

log = logging.getLogger(__name__)


class ThreadedSource:
    """Base of the threaded live cameras; a subclass calls :meth:`_init_threaded` in its
    ``__init__``, :meth:`_set_health` from its threads, :meth:`_health_closed` from ``close``,
    and defines :meth:`_drop_frames`."""

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
        raise NotImplementedError

    def _count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key`` (cameras that keep statistics override this)."""
