"""The two protocols every frame source follows.

* :class:`FrameSource` — replay: iterate to the end (image folder, video, manifest, recording).
* :class:`LiveSource` — a camera the station runs: started once, read on demand (newest frame,
  or the first frame captured after a trigger), health reported through a callback and
  :attr:`LiveSource.is_up`.  Every live source (``camera.live.LiveCamera``,
  ``camera.files.FilesCamera``, ``camera.synthetic.SyntheticCamera``, the types of
  :mod:`camera.registry`) implements exactly this signature, so the daemon never needs to know
  which one it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from camera.claims import FrameClaim
from pipeline.base.frames import Frame

HealthCallback = Callable[[bool, str], None]
"""``callback(up, reason)``: called by a live source on every health transition."""


class FrameSource(Protocol):
    """Anything that yields frames: replay sources iterate to the end."""

    source_id: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class LiveSource(Protocol):
    """A live camera as the station runs it.

    Contract:

    * :meth:`start` returns at once and never raises for a camera that is missing or down: that
      is reported as a health transition (``up=False``) instead;
    * :meth:`read_latest` returns the newest frame newer than the last one returned, waiting up
      to ``timeout`` seconds; with ``after_ts`` (wall-clock seconds) only a frame captured at or
      after that time is accepted (trigger mode: the part in front of the camera *after* the
      trigger).  On timeout, while down, or once closed it returns
      ``Frame(image=None, error="camera_down: <reason>")`` carrying the seq of the last frame
      returned — it never raises for a camera failure;
    * the callback given to :meth:`set_health_callback` is called on transitions only
      (``(True, "frames flowing …")``, ``(False, "<why>")``), from the source's own threads;
      exceptions it raises are swallowed by the source;
    * :attr:`is_up` and :attr:`reason` give the current health and the reason of the last
      transition; :meth:`close` is idempotent and wakes pending reads.
    """

    source_id: str

    def start(self) -> None: ...

    def read_latest(self, timeout: float, *, after_ts: float | None = None) -> Frame: ...

    def set_health_callback(self, callback: HealthCallback | None) -> None: ...

    @property
    def is_up(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class ClaimsFrames(Protocol):
    """A live source that can keep, for a trigger, the first frame captured after it (the
    part in front of the camera at the trigger's moment, even when the trigger then waits in a
    queue): :mod:`camera.claims`.  The station uses it when the camera has it; a camera
    without it is read when the trigger's turn comes (``read_latest(after_ts=…)``)."""

    def claim_frame(self, after_ts: float, until_ts: float) -> FrameClaim: ...
