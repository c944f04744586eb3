"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis: camera type ``genicam``.

The pip build of OpenCV cannot open an industrial camera; Aravis (Debian's ``gir1.2-aravis-0.8``,
reached through GObject introspection, the ``genicam`` extra installs PyGObject) speaks the
protocols and the GenICam feature tree.  :class:`GenicamCamera` is a
:class:`camera.source.LiveSource` like the OpenCV camera: one reader thread owns the device
(open → configure → stream → on loss back off and re-open, forever), health is reported on
transitions (``camera_down`` / ``camera_up`` in the daemon) and ``read_latest`` never raises.

Trigger modes (``trigger:``):

* ``free_run`` — the camera streams at its frame rate; ``read_latest`` gives the newest frame (as
  the OpenCV camera does) and a trigger's claim the first frame captured after it.  No frame for
  ``read_timeout_s`` → down, and the device is re-opened.
* ``software`` — the station fires the camera per part: a trigger's claim (:mod:`camera.claims`)
  sends ``TriggerSoftware`` when the trigger arrives, ``read_latest`` when it is called; either
  gets the frame exposed after its own command.
* ``hardware`` — the camera is fired on its line (``trigger_source``, default ``Line0``) by the
  PLC or a light barrier; every line frame goes to one part only, in order: a trigger's claim
  gets the first frame captured after the trigger that no earlier trigger took; ``read_latest``
  the oldest unused frame captured at or after ``after_ts`` (without ``after_ts``, in the
  station's free-run mode, each line frame becomes one part).

In ``software`` and ``hardware`` modes no frame flows between parts, so health does not come
from frames: the camera is up once acquisition runs, and down when the device's control channel
is lost (GigE Vision heartbeat: Aravis's ``control-lost`` signal) or a one-second register probe
fails.

Frames are handed out as ``uint8`` grey or BGR images (Mono10/12/16 scaled to 8 bit, Bayer
demosaiced, RGB converted), ``Frame.ts`` is the host time the frame arrived.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from camera.claims import FrameClaim, FrameClaims
from camera.registry import Reconnect, SourceOptions, register_source
from camera.source import HealthCallback
from camera.threaded import ThreadedSource
from pipeline.base.errors import SourceError
from pipeline.base.frames import Frame
from pipeline.base.yamlconf import FieldError

log = logging.getLogger(__name__)

ARAVIS_VERSION = "0.8"
SCHEME = "genicam://"
#: Aravis's built-in simulated cameras (``Fake_1``) live on its "Fake" interface, off by default
_FAKE_PREFIX = "Fake_"
_POP_US = 100_000  # buffer pop timeout: how often the reader looks at stop/probe/staleness
_PROBE_S = 1.0     # control-channel probe period while no frame flows

TriggerMode = Literal["free_run", "software", "hardware"]

_aravis: Any = None
_aravis_lock = threading.Lock()


def load_aravis() -> Any:
    """Import Aravis 0.8 through GObject introspection; SourceError saying what to install."""
    global _aravis
    with _aravis_lock:
        if _aravis is not None:
            return _aravis
        try:
            import gi

            gi.require_version("Aravis", ARAVIS_VERSION)
            from gi.repository import Aravis
        except ImportError as exc:
            raise SourceError(
                f"GenICam cameras need PyGObject (pip install 'inspection-station[genicam]'): "
                f"{exc}") from None
        except ValueError as exc:
            raise SourceError(
                f"GenICam cameras need Aravis {ARAVIS_VERSION} (apt-get install "
                f"gir1.2-aravis-0.8): {exc}") from None
        _aravis = Aravis
        return Aravis


@dataclass(frozen=True)
class GenicamDevice:
    """One camera Aravis found (``station camera list``)."""

    id: str
    vendor: str
    model: str
    serial: str
    address: str
    protocol: str


def list_devices(*, include_simulated: bool = False) -> list[GenicamDevice]:
    """Every GenICam device Aravis discovers (GigE Vision on all interfaces, USB3 Vision).

    ``include_simulated`` also lists Aravis's built-in simulated camera (``Fake_1``)."""
    arv = load_aravis()
    if include_simulated:
        arv.enable_interface("Fake")
    arv.update_device_list()
    out = []
    for i in range(arv.get_n_devices()):
        out.append(GenicamDevice(
            id=arv.get_device_id(i) or "", vendor=arv.get_device_vendor(i) or "",
            model=arv.get_device_model(i) or "", serial=arv.get_device_serial_nbr(i) or "",
            address=arv.get_device_address(i) or "", protocol=arv.get_device_protocol(i) or ""))
    return out


@dataclass(frozen=True)
class Region:
    """Region of interest on the sensor in pixels (``width``/``height`` omitted: the rest of
    the sensor from the offset)."""

    x: int = 0
    y: int = 0
    width: int | None = None
    height: int | None = None

    def validate(self) -> None:
        if self.x < 0 or self.y < 0:
            raise ValueError("x and y must be >= 0")
        if (self.width is not None and self.width <= 0) or (
                self.height is not None and self.height <= 0):
            raise ValueError("width and height must be > 0")


class _Lost(Exception):
    """The device stopped answering (reason in the message)."""


def _glib_message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def to_uint8_image(data: bytes, width: int, height: int, pixel_format: int) -> np.ndarray:
    """One buffer's payload → ``uint8`` grey ``(H, W)`` or BGR ``(H, W, 3)``.

    ValueError for a payload of the wrong size or a pixel format this station does not read."""
    arv = load_aravis()
    n = width * height
    mono_bits = {arv.PIXEL_FORMAT_MONO_10: 10, arv.PIXEL_FORMAT_MONO_12: 12,
                 arv.PIXEL_FORMAT_MONO_14: 14, arv.PIXEL_FORMAT_MONO_16: 16}
    bayer = {arv.PIXEL_FORMAT_BAYER_RG_8: cv2.COLOR_BayerRGGB2BGR,
             arv.PIXEL_FORMAT_BAYER_GR_8: cv2.COLOR_BayerGRBG2BGR,
             arv.PIXEL_FORMAT_BAYER_GB_8: cv2.COLOR_BayerGBRG2BGR,
             arv.PIXEL_FORMAT_BAYER_BG_8: cv2.COLOR_BayerBGGR2BGR}

    def need(nbytes: int) -> None:
        if len(data) < nbytes:
            raise ValueError(f"payload of {len(data)} bytes, {width}x{height} needs {nbytes}")

    if pixel_format == arv.PIXEL_FORMAT_MONO_8:
        need(n)
        return np.frombuffer(data, np.uint8, n).reshape(height, width).copy()
    if pixel_format in mono_bits:
        need(2 * n)
        img = np.frombuffer(data, "<u2", n).reshape(height, width)
        bits = mono_bits[pixel_format]
        if bits == 16:
            return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        return (np.minimum(img, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)
    if pixel_format in bayer:
        need(n)
        raw = np.frombuffer(data, np.uint8, n).reshape(height, width)
        return cv2.cvtColor(raw, bayer[pixel_format])
    if pixel_format in (arv.PIXEL_FORMAT_RGB_8_PACKED, arv.PIXEL_FORMAT_BGR_8_PACKED):
        need(3 * n)
        img = np.frombuffer(data, np.uint8, 3 * n).reshape(height, width, 3)
        if pixel_format == arv.PIXEL_FORMAT_RGB_8_PACKED:
            return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        return img.copy()
    raise ValueError(f"pixel format 0x{pixel_format:08x} is not supported "
                     "(use Mono8/10/12/14/16, Bayer??8, RGB8 or BGR8)")


class OrderedClaims:
    """Claims of a triggered camera: each frame goes to one claim, the oldest pending one
    (one exposure per part), where :class:`camera.claims.FrameClaims` shares a frame among every
    claim it satisfies (a free-running camera)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._pending: collections.deque[FrameClaim] = collections.deque()

    def claim(self, after_ts: float, until_ts: float) -> FrameClaim:
        """Register a claim for the first unclaimed frame captured in ``[after_ts, until_ts]``."""
        c = FrameClaim(after_ts, until_ts)
        with self._lock:
            self._pending.append(c)
            while len(self._pending) > self.limit:
                self._pending.popleft().end(f"more than {self.limit} pending claims")
        return c

    def offer(self, frame: Frame) -> bool:
        """Give ``frame`` to the oldest pending claim; True when a claim took it."""
        now = time.time()
        with self._lock:
            while self._pending:
                c = self._pending[0]
                if c.done:
                    self._pending.popleft()
                    continue
                if c.until_ts < now:
                    c.end("no frame captured in time")
                    self._pending.popleft()
                    continue
                if frame.ts < c.after_ts:
                    return False  # captured before every pending trigger: no part's frame
                self._pending.popleft()
                c.offer(frame)
                return c.frame is frame
            return False

    def end_all(self, why: str) -> None:
        """Finish every pending claim without a frame."""
        with self._lock:
            pending, self._pending = list(self._pending), collections.deque()
        for c in pending:
            c.end(why)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class GenicamCamera(ThreadedSource):
    """A GenICam camera through Aravis (:class:`camera.source.LiveSource`).

    Args:
        device_id: Aravis device id (``station camera list``: ``Vendor-Model-Serial``, a serial
            number, an IP address); ``""`` takes the first camera found.  ``Fake_1`` is Aravis's
            built-in simulated camera.
        exposure_us, gain_db, pixel_format, region, frame_rate: camera settings applied after
            every (re-)open (``frame_rate`` only in ``free_run``).  A setting the camera refuses
            keeps the camera down with the reason (and is retried with the back-off).
        trigger: ``free_run``, ``software`` or ``hardware`` (see the module documentation).
        trigger_source: the line of ``hardware`` mode (``Line0``, ``Line1``, …).
        packet_size: GigE Vision stream packet size in bytes (``None``: the camera's).
        buffers: stream buffers queued in Aravis (frames in flight).
        open_timeout, read_timeout: seconds; ``read_timeout`` without a frame (``free_run``) or
            without a triggered frame (``software``) is a camera failure.
        reconnect_initial, reconnect_max: exponential back-off between re-open attempts.
        on_health: ``on_health(up, reason)`` on transitions (also :meth:`set_health_callback`).
        source_id: identifier put in every Frame (default ``genicam://<device_id>``).
    """

    def __init__(
        self,
        device_id: str = "",
        *,
        exposure_us: float | None = None,
        gain_db: float | None = None,
        pixel_format: str | None = None,
        region: Region | None = None,
        trigger: TriggerMode = "free_run",
        trigger_source: str = "Line0",
        frame_rate: float | None = None,
        packet_size: int | None = None,
        buffers: int = 8,
        open_timeout: float = 5.0,
        read_timeout: float = 2.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 10.0,
        on_health: HealthCallback | None = None,
        source_id: str | None = None,
    ) -> None:
        if trigger not in ("free_run", "software", "hardware"):
            raise ValueError(f"trigger must be free_run, software or hardware, got {trigger!r}")
        self.device_id = device_id
        self.source_id = source_id or f"{SCHEME}{device_id or 'first'}"
        self.exposure_us = exposure_us
        self.gain_db = gain_db
        self.pixel_format = pixel_format
        self.region = region
        self.trigger = trigger
        self.trigger_source = trigger_source
        self.frame_rate = frame_rate
        self.packet_size = packet_size
        self.buffers = max(2, int(buffers))
        self.open_timeout = max(0.1, float(open_timeout))
        self.read_timeout = max(0.1, float(read_timeout))
        self.reconnect_initial = max(0.01, float(reconnect_initial))
        self.reconnect_max = max(self.reconnect_initial, float(reconnect_max))
        self._init_threaded(on_health)

        self._cond = threading.Condition()      # guards the frames below
        self._frames: collections.deque[Frame] = collections.deque(maxlen=64 if
                                                                    trigger == "hardware" else 1)
        self._grab_seq = 0
        self._returned_seq = 0
        # triggers waiting for their frame (camera.claims): shared in free_run, one each otherwise
        self._claims: FrameClaims | OrderedClaims = (
            FrameClaims() if trigger == "free_run" else OrderedClaims())
        self._fire_queue: queue.SimpleQueue[FrameClaim | None] = queue.SimpleQueue()
        self._firer: threading.Thread | None = None
        self._last_frame_mono = 0.0

        self._io_lock = threading.Lock()        # the device's control channel
        self._camera: Any = None                # set while acquisition runs
        self._lost = threading.Event()          # control-lost signal from Aravis's thread
        self._lost_why = ""
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._busy: tuple[str, float] | None = None  # (what, since mono): a control transfer
        self._session_got = False               # a frame arrived in the current connection
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {"frames": 0, "opens": 0, "open_failures": 0,
                                       "incomplete": 0, "bad_frames": 0, "reconnects": 0,
                                       "triggers": 0, "dropped": 0, "callback_errors": 0}

    # ------------------------------------------------------------------ LiveSource
    def start(self) -> None:
        """Start the reader thread; returns at once, never raises for a missing camera."""
        if self._reader is not None:
            return
        self._stop.clear()
        self._reason = "starting"
        self._reader = threading.Thread(target=self._run, name=f"reader[{self.source_id}]",
                                        daemon=True)
        self._reader.start()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog[{self.source_id}]",
                                          daemon=True)
        self._watchdog.start()
        if self.trigger == "software":
            self._firer = threading.Thread(target=self._fire_claims,
                                           name=f"trigger[{self.source_id}]", daemon=True)
            self._firer.start()

    def claim_frame(self, after_ts: float, until_ts: float) -> FrameClaim:
        """Keep the first frame captured in ``[after_ts, until_ts]`` for a trigger that may
        wait in the station's queue (:mod:`camera.claims`); in ``software`` mode the camera is
        fired for it now, in ``software`` and ``hardware`` modes each frame serves one claim."""
        c = self._claims.claim(after_ts, until_ts)
        if self.trigger == "software":
            self._fire_queue.put(c)
        return c

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics (frames, opens, reconnects, incomplete buffers, …)."""
        with self._stats_lock:
            out: dict[str, Any] = dict(self._stats)
        out.update(healthy=self.is_up, reason=self._reason, last_seq=self._grab_seq)
        return out

    def read_latest(self, timeout: float, *, after_ts: float | None = None) -> Frame:
        """A frame per the trigger mode (module documentation), waiting up to ``timeout`` s;
        ``Frame(image=None, error="camera_down: …")`` when none comes, while down, or closed."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self.trigger == "software":
            fired = self._fire()
            if fired is None:
                return self._down_frame(timeout)
            after_ts = fired if after_ts is None else max(after_ts, fired)
        with self._cond:
            while True:
                f = self._take(after_ts)
                if f is not None:
                    return f
                remaining = deadline - time.monotonic()
                if self._stop.is_set() or remaining <= 0:
                    break
                self._cond.wait(remaining)
        if self.trigger == "software" and not self._stop.is_set():
            self._count("missed_triggers")
        return self._down_frame(timeout)

    def close(self) -> None:
        """Stop acquisition and the reader thread; idempotent; wakes pending reads."""
        self._stop.set()
        self._fire_queue.put(None)
        with self._cond:
            self._cond.notify_all()
        self._claims.end_all("camera closed")
        for t in (self._firer, self._watchdog, self._reader):
            if t is not None and t is not threading.current_thread():
                t.join(self.open_timeout + 10.0)
                if t.is_alive():
                    log.warning("%s: %s did not stop (stuck in Aravis)", self.source_id, t.name)
        self._health_closed()
        self._reader = self._watchdog = self._firer = None

    def __enter__(self) -> GenicamCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GenicamCamera({self.source_id!r}, trigger={self.trigger}, up={self.is_up})"

    # ------------------------------------------------------------------ reading
    def _take(self, after_ts: float | None) -> Frame | None:
        """The frame to hand out now, or None (caller holds ``_cond``)."""
        frames = self._frames
        if self.trigger == "hardware":  # every frame once, oldest first
            while frames and after_ts is not None and frames[0].ts < after_ts:
                frames.popleft()
                self._count("dropped")
            if frames:
                f = frames.popleft()
                self._returned_seq = f.seq
                return f
            return None
        f = frames[-1] if frames else None
        if f is not None and f.seq > self._returned_seq and (after_ts is None or f.ts >= after_ts):
            self._returned_seq = f.seq
            return f
        return None

    def _down_frame(self, timeout: float) -> Frame:
        awaited = "triggered frame" if self.trigger == "software" else "new frame"
        return self._no_frame(self._returned_seq, timeout, awaited)

    def _fire_claims(self) -> None:
        """Software mode: fire the camera for each claim as its trigger arrives (off the
        station's request thread: a dead camera blocks a command for seconds)."""
        while not self._stop.is_set():
            c = self._fire_queue.get()
            if c is None or self._stop.is_set():
                break
            if c.done:
                continue
            if time.time() > c.until_ts:
                c.end("no frame captured in time")
            elif self._fire() is None:
                c.end(f"camera_down: {self._reason}")
            else:  # one exposure at a time: a camera ignores a trigger while it reads out
                c.wait(self.read_timeout)

    def _fire(self) -> float | None:
        """Send TriggerSoftware; the wall-clock time just before it, or None when down."""
        if self._up is False or not self._io_lock.acquire(timeout=self.read_timeout):
            return None
        try:
            cam = self._camera
            if cam is None:
                return None
            t = time.time()
            try:
                with self._transfer("software trigger"):
                    cam.software_trigger()
            except Exception as exc:
                self._lost_why = f"software trigger failed: {_glib_message(exc)}"
                self._lost.set()
                return None
            if self._up is False:  # answered, but too late: the watchdog declared it down
                self._lost_why = "software trigger answered too late; re-opening"
                self._lost.set()
                return None
        finally:
            self._io_lock.release()
        self._count("triggers")
        return t

    @contextlib.contextmanager
    def _transfer(self, what: str) -> Any:
        """Mark a control-channel transfer for the watchdog (a dead camera blocks it for
        seconds of GVCP retries; the watchdog reports the loss meanwhile)."""
        self._busy = (what, time.monotonic())
        try:
            yield
        finally:
            self._busy = None

    # ------------------------------------------------------------------ health
    def _drop_frames(self) -> None:
        with self._cond:  # never hand out a frame from before a loss
            self._frames.clear()

    def _watch(self) -> None:
        """Watchdog: a control transfer hanging, or (free_run) frames stopping, for longer than
        ``read_timeout`` → down at once, while the reader is still blocked in Aravis."""
        period = min(0.1, self.read_timeout / 4)
        while not self._stop.wait(period):
            if not self._up:
                continue
            now = time.monotonic()
            busy = self._busy
            if busy is not None and now - busy[1] > self.read_timeout:
                self._set_health(False, f"camera does not answer ({busy[0]}: no reply for "
                                        f"{now - busy[1]:.1f} s)")
            elif (self.trigger == "free_run" and self._last_frame_mono
                  and now - self._last_frame_mono > self.read_timeout):
                self._set_health(False, f"no frame for {now - self._last_frame_mono:.1f} s "
                                        f"(read timeout {self.read_timeout:g} s)")

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    # ------------------------------------------------------------------ reader thread
    def _run(self) -> None:
        """Open → acquire until lost → back off → re-open, until :meth:`close`."""
        delay = self.reconnect_initial
        first = True
        while not self._stop.is_set():
            if not first:
                self._count("reconnects")
            first = False
            self._session_got = False
            try:
                self._session()
                why = "closed"
            except _Lost as exc:
                why = str(exc)
            except SourceError as exc:
                why = str(exc)
            except Exception as exc:  # a GLib.Error from Aravis, or a bug: never raise out
                why = f"{type(exc).__name__}: {_glib_message(exc)}"
                log.debug("%s: session ended", self.source_id, exc_info=True)
            if self._stop.is_set():
                break
            self._set_health(False, why)
            if self._session_got:
                delay = self.reconnect_initial
            log.info("%s: reconnecting in %.2f s", self.source_id, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max)

    def _session(self) -> None:
        """One connection: returns when stopped, raises _Lost, SourceError or a GLib error on
        failure (``_session_got`` records whether a frame arrived)."""
        arv = load_aravis()
        self._count("opens")
        if self.device_id.startswith(_FAKE_PREFIX):
            arv.enable_interface("Fake")
        try:
            cam = arv.Camera.new(self.device_id or None)
        except Exception as exc:
            self._count("open_failures")
            raise _Lost(f"open failed: {self.device_id or 'no camera found'}: "
                        f"{_glib_message(exc)}") from None
        self._lost.clear()
        self._lost_why = ""
        device = cam.get_device()
        handler = device.connect("control-lost", self._on_control_lost)
        stream = None
        try:
            # A controller that died (killed, crashed) leaves the camera acquiring, streaming to
            # its own dead port once its heartbeat runs out; a GigE Vision camera takes the
            # stream destination when acquisition starts (Aravis's fake camera keeps the old
            # one while acquisition runs), and most refuse settings during acquisition.
            with contextlib.suppress(Exception):
                cam.stop_acquisition()
            self._configure(cam)
            stream = self._open_stream(arv, cam)
            cam.start_acquisition()
            if self.trigger == "software":
                self._warm_up(cam, stream)
            with self._io_lock:
                self._camera = cam
            log.info("%s: acquiring (%s, %s, trigger %s)", self.source_id,
                     cam.get_model_name(), cam.get_pixel_format_as_string(), self.trigger)
            if self.trigger != "free_run":
                _, _, w, h = cam.get_region()
                self._set_health(True, f"acquiring, waiting for {self.trigger} triggers "
                                       f"({w}x{h} {cam.get_pixel_format_as_string()})")
            self._acquire(arv, cam, stream)
        finally:
            with self._io_lock:
                self._camera = None
            with contextlib.suppress(Exception):
                cam.stop_acquisition()
            with contextlib.suppress(Exception):
                device.disconnect(handler)
            del stream, cam, device  # Aravis closes the sockets when the objects go

    def _warm_up(self, cam: Any, stream: Any) -> None:
        """One frame fired and thrown away before the first part: Aravis sizes the stream's
        socket buffer only when a frame begins, so a new stream's first frame of a burst loses
        packets (seen with every new connection to the fake GigE Vision camera).  No frame at all
        within ``read_timeout``: the stream does not work, _Lost (re-opened with the back-off)."""
        with self._transfer("software trigger"):
            cam.software_trigger()
        buf = stream.timeout_pop_buffer(int(self.read_timeout * 1e6))
        if buf is None:  # the stream delivers nothing: not up, every part would be stale
            raise _Lost(f"no frame within {self.read_timeout:g} s of the warm-up trigger")
        stream.push_buffer(buf)

    def _on_control_lost(self, *_: object) -> None:
        """Aravis's heartbeat thread: the camera stopped answering."""
        self._lost_why = "control lost (no heartbeat answer from the camera)"
        self._lost.set()

    def _configure(self, cam: Any) -> None:
        """Apply the settings; SourceError naming the one the camera refused."""
        def apply(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:
                raise SourceError(f"camera refused {what}: {_glib_message(exc)}") from None

        arv = load_aravis()
        apply("acquisition mode", lambda: cam.set_acquisition_mode(
            arv.AcquisitionMode.CONTINUOUS))
        if self.pixel_format:
            formats = list(cam.dup_available_pixel_formats_as_strings() or [])
            if formats and self.pixel_format not in formats:
                raise SourceError(f"pixel_format {self.pixel_format!r} not offered by the camera "
                                  f"(offers {', '.join(formats)})")
            apply(f"pixel_format {self.pixel_format}",
                  lambda: cam.set_pixel_format_from_string(self.pixel_format))
        if self.region is not None:
            r = self.region
            sw, sh = cam.get_sensor_size()
            w = r.width if r.width is not None else sw - r.x
            h = r.height if r.height is not None else sh - r.y
            apply(f"region {r.x},{r.y} {w}x{h}", lambda: cam.set_region(r.x, r.y, w, h))
        if self.exposure_us is not None:
            if cam.is_exposure_auto_available():
                apply("exposure auto off", lambda: cam.set_exposure_time_auto(arv.Auto.OFF))
            apply(f"exposure_us {self.exposure_us}",
                  lambda: cam.set_exposure_time(float(self.exposure_us)))
        if self.gain_db is not None:
            if cam.is_gain_auto_available():
                apply("gain auto off", lambda: cam.set_gain_auto(arv.Auto.OFF))
            apply(f"gain_db {self.gain_db}", lambda: cam.set_gain(float(self.gain_db)))
        if self.trigger == "free_run":
            apply("trigger off", cam.clear_triggers)
            if self.frame_rate is not None:
                apply(f"frame_rate {self.frame_rate}",
                      lambda: cam.set_frame_rate(float(self.frame_rate)))
        elif self.trigger == "software":
            apply("software trigger", lambda: cam.set_trigger("Software"))
        else:
            sources = list(cam.dup_available_trigger_sources() or [])
            if sources and self.trigger_source not in sources:
                raise SourceError(f"trigger_source {self.trigger_source!r} not offered by the "
                                  f"camera (offers {', '.join(sources)})")
            apply(f"hardware trigger on {self.trigger_source}",
                  lambda: cam.set_trigger(self.trigger_source))
        if self.packet_size is not None and cam.is_gv_device():
            apply(f"packet_size {self.packet_size}",
                  lambda: cam.gv_set_packet_size(int(self.packet_size)))

    def _open_stream(self, arv: Any, cam: Any) -> Any:
        payload = cam.get_payload()
        if cam.is_gv_device():
            # Aravis's packet-socket receiver (root only) sees nothing of a camera on loopback;
            # the plain UDP socket works everywhere (a service without CAP_NET_RAW uses it anyway).
            cam.gv_set_stream_options(arv.GvStreamOption.PACKET_SOCKET_DISABLED)
        stream = cam.create_stream(None, None)
        if stream is None:
            raise SourceError("cannot create the stream")
        if cam.is_gv_device():
            # Size the socket buffer to a whole frame: with the kernel's default a burst of
            # GVSP packets overflows it (seen on loopback: every frame missing packets).
            with contextlib.suppress(Exception):
                stream.set_property("socket-buffer", arv.GvStreamSocketBuffer.FIXED)
                stream.set_property("socket-buffer-size", 2 * payload)
        for _ in range(self.buffers):
            stream.push_buffer(arv.Buffer.new_allocate(payload))
        return stream

    def _acquire(self, arv: Any, cam: Any, stream: Any) -> None:
        """Pop buffers until stopped or lost."""
        last_probe = time.monotonic()
        started = time.monotonic()
        while not self._stop.is_set():
            if self._lost.is_set():
                raise _Lost(self._lost_why or "control lost")
            buf = stream.timeout_pop_buffer(_POP_US)
            now = time.monotonic()
            if buf is None:
                if self.trigger == "free_run":
                    got = self._session_got
                    since = self._last_frame_mono if got else started
                    limit = self.read_timeout if got else self.open_timeout + self.read_timeout
                    if now - since > limit:
                        raise _Lost(f"no frame for {now - since:.1f} s "
                                    f"(read timeout {self.read_timeout:g} s)")
                elif now - last_probe >= _PROBE_S:
                    last_probe = now
                    self._probe(cam)
                continue
            try:
                self._handle(arv, buf)
            finally:
                stream.push_buffer(buf)
            last_probe = now

    def _probe(self, cam: Any) -> None:
        """Read a register over the control channel: a camera that does not answer is lost."""
        with self._io_lock, self._transfer("register probe"):
            try:
                cam.get_integer("Width")
            except Exception as exc:
                raise _Lost(f"camera does not answer: {_glib_message(exc)}") from None
        if self._up is False:  # answered, but too late: the watchdog declared it down meanwhile
            raise _Lost("camera answered too late; re-opening")

    def _handle(self, arv: Any, buf: Any) -> None:
        status = buf.get_status()
        if status != arv.BufferStatus.SUCCESS:
            self._count("incomplete")
            log.debug("%s: buffer %s dropped", self.source_id, status.value_nick)
            return
        sys_ts = buf.get_system_timestamp()
        ts = sys_ts / 1e9 if sys_ts else time.time()
        try:
            image = to_uint8_image(buf.get_image_data(), buf.get_image_width(),
                                   buf.get_image_height(), buf.get_image_pixel_format())
        except ValueError as exc:
            self._count("bad_frames")
            log.warning("%s: frame dropped: %s", self.source_id, exc)
            return
        with self._cond:
            self._grab_seq += 1
            frame = Frame(image=image, seq=self._grab_seq, ts=ts, source_id=self.source_id,
                          meta={"frame_id": buf.get_frame_id()})
            self._last_frame_mono = time.monotonic()
        claimed = self._claims.offer(frame)
        if not claimed:  # a claimed frame of a triggered camera is that part's alone
            with self._cond:
                if self.trigger == "hardware" and len(self._frames) == self._frames.maxlen:
                    self._count("dropped")
                self._frames.append(frame)
                self._cond.notify_all()
        self._count("frames")
        self._session_got = True
        if self._up is not True:
            h, w = image.shape[:2]
            self._set_health(True, f"frames flowing ({w}x{h})")


# ------------------------------------------------------------------ camera type "genicam"
@dataclass(frozen=True)
class GenicamOptions(SourceOptions):
    """``camera: {type: genicam, …}``: a GigE Vision / USB3 Vision camera through Aravis
    (see :class:`GenicamCamera`; ``docs/CAMERAS.md``)."""

    device_id: str = ""
    exposure_us: float | None = None
    gain_db: float | None = None
    pixel_format: str | None = None
    region: Region | None = None
    trigger: TriggerMode = "free_run"
    trigger_source: str = "Line0"
    frame_rate: float | None = None
    packet_size: int | None = None
    buffers: int = 8
    reconnect: Reconnect = field(default_factory=Reconnect)

    def validate(self) -> None:
        super().validate()
        if self.exposure_us is not None and self.exposure_us <= 0:
            raise FieldError("exposure_us", "must be > 0")
        if self.frame_rate is not None and self.frame_rate <= 0:
            raise FieldError("frame_rate", "must be > 0")
        if self.packet_size is not None and not 576 <= self.packet_size <= 16384:
            raise FieldError("packet_size", "must be in [576, 16384]")
        if not 2 <= self.buffers <= 256:
            raise FieldError("buffers", "must be in [2, 256]")


def camera_from_options(o: GenicamOptions, **kw: Any) -> GenicamCamera:
    """A :class:`GenicamCamera` from typed options (``kw``: e.g. ``on_health``)."""
    return GenicamCamera(
        o.device_id, exposure_us=o.exposure_us, gain_db=o.gain_db, pixel_format=o.pixel_format,
        region=o.region, trigger=o.trigger, trigger_source=o.trigger_source,
        frame_rate=o.frame_rate, packet_size=o.packet_size,
        buffers=o.buffers, open_timeout=o.open_timeout_s, read_timeout=o.read_timeout_s,
        reconnect_initial=o.reconnect.initial_s, reconnect_max=o.reconnect.max_s, **kw)


@register_source("genicam", options=GenicamOptions)
def open_genicam(options: GenicamOptions, base_dir: Path) -> GenicamCamera:
    """A :class:`GenicamCamera` (``base_dir`` unused); SourceError when Aravis is missing."""
    load_aravis()
    return camera_from_options(options)
