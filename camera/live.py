"""Live OpenCV capture: a reader thread that keeps only the newest frame, with timeouts,
a watchdog, reconnect with exponential back-off and health reporting.

Sources (``source`` argument of :class:`LiveCamera`):

* a device: ``0`` / ``"0"`` (index) or ``"/dev/video0"`` (any ``/dev/...`` path, V4L2 on Linux);
* a network stream: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``
  (FFMPEG backend, with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC``);
* a video file or an image-sequence pattern (``frames/%04d.png``).  File sources are paced at
  their frame rate (``fps`` setting, else the file's, else 25) so they behave like a camera; at the
  end of the file the camera is "down" (``end_of_stream``) and the reconnect loop re-opens it,
  unless ``loop=True`` (re-opened at once, no health change).

Threads: one *reader* thread opens the capture and grabs continuously, publishing only the newest
frame (older ones are dropped, so ``read_latest`` never returns a stale backlog); one *watchdog*
thread declares the camera down when no frame arrived for ``read_timeout`` seconds, whatever the
backend does, and replaces a reader thread stuck inside OpenCV (a backend that ignores the
timeouts) with a fresh one.  Nothing raises out of these threads: failures are logged and become
health transitions.

Decoding (one decoder, strict: :mod:`pipeline.base.imageio`): an image-sequence pattern or a
single image file is not handed to OpenCV/FFmpeg (whose image2 reader repairs a truncated JPEG
into a picture) but read file by file with the project's decoder, so a damaged file becomes a
``corrupt_frame`` error frame, as in replay.  An FFmpeg source (stream or video file) whose codec
is MJPEG is read in raw mode (``CAP_PROP_FORMAT=-1``: each read gives the JPEG's bytes) and
decoded by the same decoder.  Other codecs (H.264, …) and devices are decoded by OpenCV's
backend, which conceals damage it cannot report: a documented limitation.
"""

from __future__ import annotations

import collections
import logging
import re
import statistics
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camera.files import sequence_files
from camera.registry import Reconnect, SourceOptions, register_source
from camera.replay import IMAGE_EXTENSIONS, raw_mjpeg, read_strict
from camera.source import HealthCallback
from camera.threaded import ThreadedSource
from pipeline.base.frames import Frame
from pipeline.base.imageio import FrameReadError, read_image

log = logging.getLogger(__name__)

_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_URL_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@:]*):([^/@]*)@")
_DEFAULT_FILE_FPS = 25.0


def mask_credentials(source: str) -> str:
    """Return ``source`` with the password of a ``scheme://user:pass@host`` URL masked."""
    return _URL_CREDENTIALS.sub(r"\1\2:***@", source)


def classify_source(source: int | str) -> tuple[str, int | str]:
    """Classify a capture source.

    Returns ``(kind, target)`` where ``kind`` is ``"device"``, ``"stream"`` or ``"file"`` and
    ``target`` is what to hand to ``cv2.VideoCapture`` (an ``int`` index for numeric devices).
    """
    if isinstance(source, bool):  # bool is an int subclass: refuse it explicitly
        raise TypeError("camera source must be an int index or a string, not bool")
    if isinstance(source, int):
        return "device", source
    text = str(source).strip()
    if text.isdigit():
        return "device", int(text)
    if text.startswith("/dev/"):
        return "device", text
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _STREAM_SCHEMES:
        return "stream", text
    if scheme == "file":
        return "file", text[len("file://") :]
    return "file", text


class LiveCamera(ThreadedSource):
    """OpenCV camera / stream / file with a newest-frame reader thread
    (:class:`camera.source.LiveSource`).

    Args:
        source: device index, ``/dev/videoN``, stream URL, video file or image-sequence pattern.
        width, height, fps, fourcc, exposure: capture settings applied after opening a device
            (``fourcc`` first, e.g. ``"MJPG"``).  ``fps`` also paces file sources.
            Settings a backend refuses are logged, never fatal.
        props: further ``cv2.CAP_PROP_*`` settings for devices, by id or name
            (``{"AUTO_EXPOSURE": 1, "GAIN": 4}``).
        open_timeout: seconds allowed to open the source (FFMPEG: ``CAP_PROP_OPEN_TIMEOUT_MSEC``).
        read_timeout: seconds without a frame after which the camera is down (FFMPEG:
            ``CAP_PROP_READ_TIMEOUT_MSEC``; enforced by the watchdog for every backend).
        reconnect_initial, reconnect_max: exponential back-off between re-open attempts
            (doubling from ``initial`` up to ``max``; reset once frames flow again).  Retries go
            on forever until :meth:`close`.
        loop: file sources only: re-open at the end instead of reporting ``end_of_stream``.
        on_health: ``on_health(up, reason)``, called on transitions only (first frame → up,
            loss → down; the first failure to open counts as a transition from "unknown" to down).
            Called from the camera's threads; exceptions it raises are logged and ignored.
        source_id: identifier put in every Frame (default ``"camera:<source>"``, password masked).
        backend: force a ``cv2.CAP_*`` backend instead of the one chosen from the source kind.
    """

    def __init__(
        self,
        source: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        exposure: float | None = None,
        props: Mapping[int | str, float] | None = None,
        open_timeout: float = 5.0,
        read_timeout: float = 3.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 10.0,
        loop: bool = False,
        on_health: HealthCallback | None = None,
        source_id: str | None = None,
        backend: int | None = None,
    ) -> None:
        self.source = source
        self.kind, self._target = classify_source(source)
        self.source_id = source_id or f"camera:{mask_credentials(str(source))}"
        self.width = width
        self.height = height
        self.fps = fps
        self.fourcc = fourcc
        self.exposure = exposure
        self.props = dict(props or {})
        self.open_timeout = max(0.1, float(open_timeout))
        self.read_timeout = max(0.1, float(read_timeout))
        self.reconnect_initial = max(0.01, float(reconnect_initial))
        self.reconnect_max = max(self.reconnect_initial, float(reconnect_max))
        self.loop = loop
        self._init_threaded(on_health)
        self.backend = backend
        if fourcc is not None and len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters, got {fourcc!r}")

        self._last_frame_mono = 0.0
        self._captured_lb = 0.0       # capture-time lower bound of the newest stream frame
        self._intervals: collections.deque[float] = collections.deque(maxlen=16)
        self._last_frame_wall = 0.0

        # threads (the stop event is ThreadedSource's)
        self._started = False
        self._gen = 0               # reader generation; a stuck reader is abandoned by bumping it
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._op: tuple[int, str, float] | None = None   # (gen, "open"/"read", since mono)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "frames": 0, "opens": 0, "open_failures": 0, "read_failures": 0,
            "reconnects": 0, "stuck_readers": 0, "callback_errors": 0,
        }

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the reader and watchdog threads; returns at once, never raises for a bad camera."""
        if self._started:
            return
        self._started = True
        self._stop.clear()
        self._reason = "starting"
        self._spawn_reader()
        self._watchdog = threading.Thread(
            target=self._watch, name=f"watchdog[{self.source_id}]", daemon=True
        )
        self._watchdog.start()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for heartbeats and diagnostics (frames, opens, reconnects, failures, …)."""
        with self._stats_lock:
            out = dict(self._stats)
        out["healthy"] = self.is_up
        out["reason"] = self._reason
        out["last_seq"] = self._newest.grab_seq
        out["last_frame_age_s"] = (
            round(time.monotonic() - self._last_frame_mono, 3) if self._last_frame_mono else None
        )
        return out

    def close(self) -> None:
        """Stop the threads, release the capture; idempotent.  Wakes pending ``read_latest``."""
        self._stop.set()
        self._newest.wake()
        self._claims.end_all("camera closed")
        wait = self.open_timeout + self.read_timeout + 2.0
        for t in (self._watchdog, self._reader):
            if t is not None and t is not threading.current_thread():
                t.join(wait)
                if t.is_alive():
                    log.warning("%s: thread %s did not stop within %.1f s (stuck in OpenCV); "
                                "left behind as a daemon thread", self.source_id, t.name, wait)
        self._health_closed()
        self._started = False

    def __enter__(self) -> LiveCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LiveCamera({self.source_id!r}, up={self.is_up})"

    # ------------------------------------------------------------------ health
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    # ------------------------------------------------------------------ threads
    def _spawn_reader(self) -> None:
        self._gen += 1
        gen = self._gen
        self._op = None
        self._reader = threading.Thread(
            target=self._run_reader, args=(gen,), name=f"reader{gen}[{self.source_id}]", daemon=True
        )
        self._reader.start()

    def _set_op(self, gen: int, what: str | None) -> None:
        """Record what reader ``gen`` is blocked in (for the watchdog); ignored for old readers."""
        if gen == self._gen:
            self._op = (gen, what, time.monotonic()) if what else None

    def _alive(self, gen: int) -> bool:
        return not self._stop.is_set() and gen == self._gen

    def _watch(self) -> None:
        """Watchdog: staleness → down; a reader stuck in OpenCV → replaced."""
        period = min(0.1, self.read_timeout / 4)
        while not self._stop.wait(period):
            try:
                self._claims.expire()
                now = time.monotonic()
                if self._up and now - self._last_frame_mono > self.read_timeout:
                    self._set_health(
                        False, f"no frame for {now - self._last_frame_mono:.1f} s "
                               f"(read timeout {self.read_timeout:g} s)")
                op = self._op
                if op is not None and op[0] == self._gen:
                    _, what, since = op
                    limit = (self.open_timeout if what == "open" else self.read_timeout) * 2 + 2.0
                    if now - since > limit:
                        self._count("stuck_readers")
                        log.error("%s: reader stuck in %s for %.1f s; starting a new reader",
                                  self.source_id, what, now - since)
                        self._set_health(False, f"capture stuck in {what} for {now - since:.1f} s")
                        self._spawn_reader()
            except Exception:  # pragma: no cover - defensive: the watchdog must never die
                log.exception("%s: watchdog error", self.source_id)

    def _run_reader(self, gen: int) -> None:
        """Reader thread: open → grab newest frames → on loss back off and re-open, forever."""
        delay = self.reconnect_initial
        first = True
        while self._alive(gen):
            if not first:
                self._count("reconnects")
            first = False
            got_frames = False
            cap = None
            try:
                cap, why = self._open(gen)
                if cap is not None and self._alive(gen):
                    got_frames, why = self._read_loop(cap, gen)
            except Exception as e:  # never raise out of the thread
                why = f"capture error: {type(e).__name__}: {e}"
                log.exception("%s: reader error", self.source_id)
            finally:
                self._set_op(gen, None)
                if cap is not None:
                    try:
                        cap.release()
                    except Exception:
                        log.exception("%s: release failed", self.source_id)
            if not self._alive(gen):
                break
            if why == "loop":
                continue  # file source with loop=True: re-open at once
            self._set_health(False, why)
            if got_frames:
                delay = self.reconnect_initial
            log.info("%s: reconnecting in %.2f s", self.source_id, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max)

    def _open(self, gen: int) -> tuple[Any, str]:
        """Open the capture; returns ``(cap, "")`` or ``(None, reason)``."""
        self._set_op(gen, "open")
        self._count("opens")
        kind, target = self.kind, self._target
        if self.backend is None and is_image_files(kind, target):
            files = ImageFiles.open(str(target))
            self._set_op(gen, None)
            if files is None:
                self._count("open_failures")
                return None, f"open failed: no image file matches {target}"
            log.info("%s: opened (%d image files, strict decoder)", self.source_id, len(files))
            return files, ""
        params: list[int] = []
        if self.backend is not None:
            backend = self.backend
        elif kind == "stream":
            backend = cv2.CAP_FFMPEG
        elif kind == "device":
            backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        elif isinstance(target, str) and "%" in target:
            backend = cv2.CAP_IMAGES
        else:
            backend = cv2.CAP_FFMPEG
        if backend in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000)]
        cap = None
        try:
            cap = cv2.VideoCapture(target, backend, params) if params else \
                cv2.VideoCapture(target, backend)
            if not cap.isOpened() and kind == "device" and backend != cv2.CAP_ANY \
                    and self.backend is None:
                cap.release()
                cap = cv2.VideoCapture(target, cv2.CAP_ANY)
        except Exception as e:
            self._set_op(gen, None)
            self._count("open_failures")
            return None, f"open failed: {type(e).__name__}: {e}"
        self._set_op(gen, None)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self._count("open_failures")
            return None, f"open failed: {mask_credentials(str(self.source))}"
        try:
            name = cap.getBackendName()
        except Exception:
            name = "?"
        log.info("%s: opened (%s backend)", self.source_id, name)
        if kind != "device" and name == "FFMPEG" and raw_mjpeg(cap):
            log.info("%s: MJPEG read raw, decoded strictly", self.source_id)
        if kind == "device":
            self._apply_settings(cap)
        return cap, ""

    def _apply_settings(self, cap: Any) -> None:
        settings: list[tuple[str, int, float]] = []
        if self.fourcc:
            settings.append(("fourcc", cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc)))
        if self.width:
            settings.append(("width", cv2.CAP_PROP_FRAME_WIDTH, self.width))
        if self.height:
            settings.append(("height", cv2.CAP_PROP_FRAME_HEIGHT, self.height))
        if self.fps:
            settings.append(("fps", cv2.CAP_PROP_FPS, self.fps))
        if self.exposure is not None:
            settings.append(("exposure", cv2.CAP_PROP_EXPOSURE, self.exposure))
        for key, value in self.props.items():
            if isinstance(key, str):
                prop = getattr(cv2, "CAP_PROP_" + key.upper().removeprefix("CAP_PROP_"), None)
                if prop is None:
                    log.warning("%s: unknown capture property %r", self.source_id, key)
                    continue
            else:
                prop = int(key)
            settings.append((str(key), prop, value))
        for name, prop, value in settings:
            try:
                ok = cap.set(prop, float(value))
                got = cap.get(prop)
            except Exception as e:
                ok, got = False, f"{type(e).__name__}: {e}"
            if not ok:
                log.warning("%s: backend refused %s=%s (now %s)", self.source_id, name, value, got)
            else:
                log.info("%s: %s=%s (reads back %s)", self.source_id, name, value, got)

    def _read_loop(self, cap: Any, gen: int) -> tuple[bool, str]:
        """Grab until failure; returns ``(got_any_frame, reason)``."""
        pace = 0.0
        if self.kind == "file":
            fps = self.fps or cap.get(cv2.CAP_PROP_FPS) or 0.0
            if not fps or fps <= 0 or fps > 1000:
                fps = _DEFAULT_FILE_FPS
            pace = 1.0 / fps
        got = False
        next_due = time.monotonic()
        while self._alive(gen):
            self._set_op(gen, "read")
            t_read = time.time()
            ok, image, error = _read(cap)
            self._set_op(gen, None)
            if not self._alive(gen):
                break
            if error is not None:  # a frame came, but damaged: that moment's frame is an error
                self._count("corrupt_frames")
                self._publish(None, self._capture_ts(t_read, got), error=error)
                got = True
                if self._up is not True:
                    self._set_health(True, "frames flowing (the first one damaged)")
                if pace:
                    next_due = max(next_due + pace, time.monotonic() - pace)
                    if self._stop.wait(max(0.0, next_due - time.monotonic())):
                        break
                continue
            if not ok or image is None or image.size == 0:
                self._count("read_failures")
                if self.kind == "file":
                    if self.loop and got:
                        return got, "loop"
                    return got, "end_of_stream" if got else "no frame could be read"
                return got, "read failed (stream ended or timed out)"
            self._publish(np.ascontiguousarray(image), self._capture_ts(t_read, got))
            got = True
            if self._up is not True:  # first frame of this connection, or back after a stall
                h, w = image.shape[:2]
                self._set_health(True, f"frames flowing ({w}x{h})")
            if pace:
                next_due = max(next_due + pace, time.monotonic() - pace)
                if self._stop.wait(max(0.0, next_due - time.monotonic())):
                    break
        return got, "closed"

    def _capture_ts(self, t_read: float, connected: bool) -> float:
        """A lower bound of when the frame just read was captured (wall-clock seconds).

        File sources are played at their pace: a frame is "captured" when it is read.  A
        device or a stream can hand out frames that waited in a buffer (the kernel's socket or
        V4L2 queue, the backend's) while the reader was behind or the source had frozen: such a
        frame comes out of a read that did not have to wait, and its capture time is unknown
        except that it is not later than the moment the reader last caught up.  A read that
        waited for data (at least half the usual interval between frames) had caught up, so its
        frame was captured after the read began.  A trigger is given a frame only when this
        bound is after the trigger, so a buffered frame can never stand in for its part.
        """
        now = time.time()
        if self.kind == "file":
            return now
        waited = now - t_read
        usual = statistics.median(self._intervals) if len(self._intervals) >= 4 else 0.0
        # first frame of a connection, or a read that waited for the source: captured after
        # the read began; else a buffered frame: no later than the last such bound
        lb = t_read if not connected or waited >= 0.5 * usual else self._captured_lb
        if connected and self._last_frame_wall:
            self._intervals.append(now - self._last_frame_wall)
        self._last_frame_wall = now
        self._captured_lb = max(lb, self._captured_lb)
        return self._captured_lb

    def _publish(self, image: np.ndarray | None, ts: float | None = None, *,
                 error: str | None = None) -> None:
        now = time.time() if ts is None else ts
        self._last_frame_mono = time.monotonic()
        frame = self._newest.put(Frame(image=image, seq=0, ts=now, error=error))  # numbered there
        self._claims.offer(frame)
        self._count("frames")


# ------------------------------------------------------------------ strict decoding
def is_image_files(kind: str, target: int | str) -> bool:
    """True for a file source that is an image-sequence pattern or one image file: read by
    :class:`ImageFiles` (the project's decoder), not by OpenCV's image reader."""
    if kind != "file" or not isinstance(target, str):
        return False
    return "%" in Path(target).name or Path(target).suffix.lower() in IMAGE_EXTENSIONS


class ImageFiles:
    """An image sequence (``frames/%04d.jpg``) or one image file, read like an OpenCV capture
    but decoded strictly by :mod:`pipeline.base.imageio`: :meth:`read_checked` gives
    ``(ok, image, error)`` with ``error`` ``"corrupt_frame: <path>: <why>"`` for a damaged file.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._next = 0

    @classmethod
    def open(cls, target: str) -> ImageFiles | None:
        """The files of ``target`` (a pattern's in number order), or None when none exists."""
        if "%" in Path(target).name:
            try:
                files = sequence_files(target)
            except ValueError:
                return None
        else:
            files = [Path(target)] if Path(target).is_file() else []
        return cls(files) if files else None

    def __len__(self) -> int:
        return len(self.files)

    def read_checked(self) -> tuple[bool, np.ndarray | None, str | None]:
        """The next file's image; ``(False, None, None)`` after the last file."""
        if self._next >= len(self.files):
            return False, None, None
        path = self.files[self._next]
        self._next += 1
        try:
            return True, read_image(path), None
        except FrameReadError as exc:
            return True, None, str(exc)

    def get(self, prop: int) -> float:
        """No rate of its own (the camera's ``fps`` or the default paces it)."""
        return 0.0

    def release(self) -> None:
        """Nothing to release."""


def _read(cap: Any) -> tuple[bool, np.ndarray | None, str | None]:
    """One read of ``cap``: ``(ok, image, error)``; raw MJPEG packets and image files go through
    the strict decoder (``error`` set for a damaged frame)."""
    if isinstance(cap, ImageFiles):
        return cap.read_checked()
    return read_strict(cap, "stream frame")


# ------------------------------------------------------------------ camera type "opencv"
@dataclass(frozen=True)
class OpenCvOptions(SourceOptions):
    """``camera: {type: opencv, …}``: a device index / ``/dev/videoN``, a stream URL, a video
    file or an image-sequence pattern (see :class:`LiveCamera`)."""

    source: int | str = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    exposure: float | None = None
    props: dict[str, float] = field(default_factory=dict)
    reconnect: Reconnect = field(default_factory=Reconnect)
    loop: bool = False

    def validate(self) -> None:
        super().validate()
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters, got {self.fourcc!r}")
        if isinstance(self.source, str) and not self.source.strip():
            raise ValueError("source must not be empty")


@register_source("opencv", options=OpenCvOptions)
def open_opencv(options: OpenCvOptions, base_dir: Path) -> LiveCamera:
    """A :class:`LiveCamera` from its options (``base_dir`` unused: a relative file path is taken
    relative to the working directory, as before the registry)."""
    o = options
    return LiveCamera(o.source, width=o.width, height=o.height, fps=o.fps, fourcc=o.fourcc,
                      exposure=o.exposure, props=o.props, open_timeout=o.open_timeout_s,
                      read_timeout=o.read_timeout_s, reconnect_initial=o.reconnect.initial_s,
                      reconnect_max=o.reconnect.max_s, loop=o.loop)
