"""The station daemon: camera → Inspector → journal → ZeroMQ, supervised by systemd.

Threads:

* the **main thread** runs the inspection loop (trigger queue or free-run clock) and sends
  ``WATCHDOG=1`` from it, so a hung pipeline stops the pings and systemd restarts the service;
* the **request thread** (:class:`station.servers.RequestServer`) owns the trigger and catch-up
  ROUTER sockets and publishes the heartbeat;
* the camera's own threads call :meth:`StationDaemon._on_camera_health` on transitions.

Every event goes through one :class:`station.events.EventPublisher` (seq → journal fsync → PUB,
under one lock), so the wire order is the journal order.  SIGTERM/SIGINT: the part in hand is
finished, queued triggers get an ``error`` result (``station_stopping``), ``stopping`` is
announced, the journal is flushed, exit 0.
"""

from __future__ import annotations

import contextlib
import faulthandler
import inspect as _inspect
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from pipeline.base.atomic import write_json_atomic
from pipeline.base.errors import ConfigError, StationError
from pipeline.base.frames import Frame
from station import __version__
from station.events import EventPublisher, catchup_reply, new_boot_id
from station.journal import Journal
from station.notify import Notifier
from station.servers import RequestError, RequestServer, make_pub, make_router

if TYPE_CHECKING:
    from pipeline.inspector import InspectionResult

log = logging.getLogger(__name__)

MAX_PART_ID = 128
DEGRADED_AFTER = 3  # consecutive non-camera error results before the station says "degraded"
STATUS_EVERY_S = 5.0


@dataclass
class _Job:
    part_id: str
    wall_ts: float  # time.time() when the trigger arrived (the frame must be newer)
    mono: float


def _safe_part_id(value: Any) -> str:
    if not isinstance(value, str):
        raise RequestError("part_id must be a string")
    if not 1 <= len(value) <= MAX_PART_ID or not value.isprintable():
        raise RequestError(f"part_id must be 1..{MAX_PART_ID} printable characters")
    return value


def _int_field(req: dict[str, Any], key: str, default: int | None, lo: int) -> int:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise RequestError(f"'{key}' must be an integer >= {lo}")
    return value


class StationDaemon:
    """One run of the station.  ``inspector``/``camera``/``recorder`` may be given pre-built
    (``station demo --serve`` reuses its synthetic line); otherwise they are built from
    ``config``.  ``notifier`` defaults to the real ``$NOTIFY_SOCKET``.
    """

    def __init__(
        self,
        config: Any,
        *,
        inspector: Any | None = None,
        camera: Any | None = None,
        recorder: Any | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.inspector = inspector
        self.camera = camera
        self.recorder = recorder
        self.notifier = notifier or Notifier()
        self.station_id = str(config.station.id)
        self.mode = str(config.mode)
        self.boot = new_boot_id()
        self.state_dir = Path(config.resolve(config.station.state_dir)
                              if hasattr(config, "resolve") else config.station.state_dir)
        self.endpoints: dict[str, str] = {}
        self.state = "starting"
        self.exit_reason = "requested"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=int(config.events.trigger_queue))
        self._queue_lock = threading.Lock()
        self._camera_up: bool | None = None
        self._poll_health = camera is not None  # a camera built elsewhere has no callback of ours
        self._running = False
        self._stopping = False
        self._auto_ids = 0
        self._camera_reason = "not started"
        self._degraded = False
        self._errors_in_row = 0
        self._parts = 0
        self._counts = {"pass": 0, "defect": 0, "error": 0}
        self._in_hand_since: float | None = None
        self._last_status = 0.0
        self._t0 = time.monotonic()
        self._read_accepts_after = False
        self._ctx: zmq.Context | None = None
        self._pub: zmq.Socket | None = None
        self._server: RequestServer | None = None
        self.journal: Journal | None = None
        self.publisher: EventPublisher | None = None

    # ------------------------------------------------------------------------------ control
    def request_stop(self, reason: str = "requested") -> None:
        """Ask the daemon to stop after the part in hand (thread- and signal-safe)."""
        self.exit_reason = reason
        self._stop.set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the station is ready (tests, demo)."""
        return self._ready.wait(timeout)

    def run(self) -> int:
        """Run until stopped; returns the exit code (0 after a clean stop).

        Raises :class:`ConfigError` (exit 78) for bad configuration and :class:`StationError`
        for other start-up failures, after announcing ``stopping`` when the PUB socket was up.
        """
        restore = self._install_signals()
        try:
            self._start()
            self._loop()
            return 0
        except Exception as exc:
            self.exit_reason = f"error: {exc}"
            raise
        finally:
            self._shutdown()
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))
        return old

    # ------------------------------------------------------------------------------ start-up
    def _start(self) -> None:
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ev = cfg.events
        self.journal = Journal(self.state_dir / "journal",
                               segment_bytes=int(ev.journal_segment_mb * 2**20),
                               max_bytes=int(ev.journal_max_mb * 2**20))
        self._ctx = zmq.Context()
        self._pub, pub_ep = make_pub(self._ctx, cfg.events.pub)
        trigger, trig_ep = make_router(self._ctx, cfg.events.trigger, "events.trigger")
        catchup, cu_ep = make_router(self._ctx, cfg.events.catchup, "events.catchup")
        self.endpoints = {"pub": pub_ep, "trigger": trig_ep, "catchup": cu_ep}
        pub = self._pub
        self.publisher = EventPublisher(self.journal, station=self.station_id, boot=self.boot,
                                        send=lambda frames: pub.send_multipart(frames, zmq.NOBLOCK))
        write_json_atomic(self.state_dir / "endpoints.json", {
            "station": self.station_id, "boot": self.boot, "pid": os.getpid(), **self.endpoints})
        log.info("station %s boot %s: pub %s trigger %s catchup %s (last seq %d)",
                 self.station_id, self.boot, pub_ep, trig_ep, cu_ep, self.journal.last_seq)
        self.publisher.publish_status("starting", None, mode=self.mode, version=__version__,
                                      pid=os.getpid(), endpoints=self.endpoints)
        self.notifier.status(f"starting (boot {self.boot})")
        self._server = RequestServer({trigger: self._handle_trigger, catchup: self._handle_catchup},
                                     tick=self._tick, tick_s=float(cfg.events.heartbeat_s))
        self._server.start()

        if self.inspector is None:
            self.inspector = self._build_inspector()
        if self.recorder is None:
            self.recorder = self._build_recorder()
        if self.camera is None:
            self.camera = self._build_camera()
        with contextlib.suppress(TypeError, ValueError):
            params = _inspect.signature(self.camera.read_latest).parameters
            self._read_accepts_after = "after_ts" in params
        self.camera.start()
        self._await_camera(cfg.camera.open_timeout_s)

        with self.publisher.lock:
            self._running = True
            self.state = self._effective_state()
            self.publisher.publish_status("ready", None, mode=self.mode,
                                          camera=self._camera_info(), model=self._model_info())
        self._ready.set()
        self.notifier.ready(self._status_line())
        self._last_status = time.monotonic()

    def _build_inspector(self) -> Any:
        """The same Inspector replay builds from this config (recipe, VLM stage, policy)."""
        from station.recipe_tools import build_inspector

        return build_inspector(self.config)

    def _build_recorder(self) -> Any | None:
        rec = self.config.recording
        if not rec.enabled:
            return None
        from station.recorder import Recorder

        return Recorder.from_config(self.config)

    def _build_camera(self) -> Any:
        cam = self.config.camera
        if str(cam.source).strip().lower() == "synthetic":
            from camera.synthetic import SyntheticCamera

            return SyntheticCamera(fps=cam.fps, on_health=self._on_camera_health)
        from camera.live import LiveCamera

        try:
            return LiveCamera(
                cam.source, width=cam.width, height=cam.height, fps=cam.fps,
                fourcc=cam.fourcc, open_timeout=cam.open_timeout_s,
                read_timeout=cam.read_timeout_s, reconnect_initial=cam.reconnect.initial_s,
                reconnect_max=cam.reconnect.max_s, loop=cam.loop,
                on_health=self._on_camera_health)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"camera: {exc}") from exc

    # ------------------------------------------------------------------------------ state
    def _effective_state(self) -> str:
        if self._stopping:
            return "stopping"
        if not self._running:
            return "starting"
        if self._camera_up is False:
            return "camera_down"
        if self._degraded:
            return "degraded"
        return "ready"

    def _camera_info(self) -> dict[str, Any]:
        cam = self.camera
        return {"up": bool(self._camera_up), "source": getattr(cam, "source_id", None),
                "reason": self._camera_reason}

    def _model_info(self) -> dict[str, Any]:
        insp = self.inspector
        recipe = getattr(insp, "recipe", None)
        return {"ok": not self._degraded, "recipe": getattr(recipe, "short_hash", None),
                "name": getattr(insp, "model_name", None), "errors_in_row": self._errors_in_row}

    def _on_camera_health(self, up: bool, reason: str) -> None:
        """Camera transition (camera thread or poll) → ``camera_down``/``camera_up`` event."""
        pub = self.publisher
        if pub is None:
            return
        with pub.lock:
            if self._camera_up is up:
                return
            self._camera_up = up
            self._camera_reason = reason
            self.state = self._effective_state()
            try:
                pub.publish_status("camera_up" if up else "camera_down", reason,
                                   camera=self._camera_info())
            except Exception:
                log.exception("cannot publish camera health")
        self.notifier.status(self._status_line())

    def _poll_camera_health(self, force: bool = False) -> None:
        """For cameras built elsewhere (no callback of ours): detect transitions by polling.

        Read under the publish lock, so a poll cannot overtake a newer transition.
        """
        cam, pub = self.camera, self.publisher
        if cam is None or pub is None or not (force or (self._poll_health and self._running)):
            return
        with pub.lock:
            try:
                up = bool(cam.healthy)
            except Exception:
                up = False
            if up is not self._camera_up:
                reason = getattr(cam, "reason", None) or ("frames flowing" if up else "camera down")
                self._on_camera_health(up, str(reason))

    def _await_camera(self, timeout: float) -> None:
        """Give the camera its open timeout to deliver a first frame before announcing ready,
        so a normal start is not reported as camera_down → camera_up."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._camera_up is None and time.monotonic() < deadline and not self._stop.is_set():
            try:
                if self.camera.healthy:
                    break
            except Exception:
                break
            time.sleep(0.02)
        if self._camera_up is None:  # no callback (pre-built camera) or still nothing: poll
            self._poll_camera_health(force=True)

    def _set_degraded(self, degraded: bool, reason: str | None) -> None:
        pub = self.publisher
        assert pub is not None
        with pub.lock:
            if self._degraded == degraded:
                return
            self._degraded = degraded
            self.state = self._effective_state()
            pub.publish_status("degraded" if degraded else "ready", reason,
                               model=self._model_info())

    def _status_line(self) -> str:
        c = self._counts
        last = self.publisher.last_seq if self.publisher else 0
        cam = "up" if self._camera_up else "DOWN"
        return (f"{self.state}: {self._parts} parts ({c['pass']} pass, {c['defect']} defect, "
                f"{c['error']} error), last seq {last}, camera {cam}, queue {self._queue.qsize()}")

    # ------------------------------------------------------------------------------ requests
    def _status_reply(self) -> dict[str, Any]:
        pub = self.publisher
        assert pub is not None
        return {
            "ok": True, "station": self.station_id, "boot": self.boot, "state": self.state,
            "mode": self.mode, "seq": pub.last_seq, "queued": self._queue.qsize(),
            "queue_max": self._queue.maxsize, "parts": self._parts, "counts": dict(self._counts),
            "camera": self._camera_info(), "model": self._model_info(),
            "uptime_s": round(time.monotonic() - self._t0, 3), "pid": os.getpid(),
            "version": __version__, "endpoints": self.endpoints,
        }

    def _handle_trigger(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if not isinstance(cmd, str):
            raise RequestError("'cmd' must be a string: trigger | status")
        if cmd == "status":
            return self._status_reply()
        if cmd != "trigger":
            raise RequestError(f"unknown cmd {cmd[:40]!r} (trigger | status)")
        raw = req.get("part_id")
        if self.mode != "trigger":
            raise RequestError(f"not in trigger mode (mode is {self.mode})")
        with self._queue_lock:
            if raw is not None:
                part_id = _safe_part_id(raw)
            else:
                self._auto_ids += 1
                part_id = f"{self.boot}-t{self._auto_ids:06d}"
            if self._stopping or self._stop.is_set():
                raise RequestError("stopping")
            if not self._running:
                raise RequestError("starting")
            try:
                self._queue.put_nowait(_Job(part_id, time.time(), time.monotonic()))
            except queue.Full:
                raise RequestError("busy") from None
            return {"ok": True, "part_id": part_id, "queued": self._queue.qsize()}

    def _handle_catchup(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        if req.get("cmd") == "status":
            return self._status_reply()
        if "since" not in req:
            raise RequestError("expected {\"since\": N}")
        since = _int_field(req, "since", None, 0)
        batch = int(self.config.events.catchup_batch)
        limit = min(_int_field(req, "limit", batch, 1), batch)
        journal = self.journal
        assert journal is not None
        entries, more = journal.since(since, limit)
        return catchup_reply(entries, seq=journal.last_seq, more=more, oldest=journal.oldest_seq)

    def _tick(self) -> None:
        """Heartbeat (request thread, every ``heartbeat_s``)."""
        self._poll_camera_health()
        pub = self.publisher
        if pub is None:
            return
        in_hand = self._in_hand_since
        pub.publish_heartbeat({
            "state": self.state, "mode": self.mode,
            "interval_s": float(self.config.events.heartbeat_s),
            "uptime_s": round(time.monotonic() - self._t0, 3),
            "queued": self._queue.qsize(), "parts": self._parts, "counts": dict(self._counts),
            "in_hand_s": round(time.monotonic() - in_hand, 3) if in_hand else None,
            "camera": self._camera_info(), "model": self._model_info(),
            "endpoints": self.endpoints,
        })

    # ------------------------------------------------------------------------------ inspection
    def _loop(self) -> None:
        if self.mode == "free_run":
            self._free_run_loop()
        else:
            self._trigger_loop()

    def _alive_ping(self) -> None:
        """WATCHDOG=1 only while the request thread is alive too (it carries the heartbeat)."""
        srv = self._server
        if srv is not None and srv.is_alive() and time.monotonic() - srv.last_loop < 5.0:
            self.notifier.watchdog()
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.notifier.status(self._status_line())

    def _trigger_loop(self) -> None:
        while not self._stop.is_set():
            self._alive_ping()
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._inspect_one(job.part_id, job)

    def _free_run_loop(self) -> None:
        period = 1.0 / float(self.config.free_run.rate_hz)
        read_timeout = float(self.config.camera.read_timeout_s)
        next_t = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self._alive_ping()
            now = time.monotonic()
            if now < next_t:
                self._stop.wait(min(next_t - now, 0.2))
                continue
            next_t += period
            if next_t < now:  # the pipeline is slower than the rate: don't try to catch up
                next_t = now + period
            n += 1
            frame = self._grab(None, min(read_timeout, max(period, 0.05)))
            if not frame.ok:
                continue  # no part to judge; camera_down is announced by the health events
            self._inspect_one(f"{self.boot}-{n:06d}", None, frame=frame)

    def _grab(self, after_ts: float | None, timeout: float) -> Frame:
        cam = self.camera
        try:
            if after_ts is not None and self._read_accepts_after:
                return cam.read_latest(timeout, after_ts=after_ts)
            return cam.read_latest(timeout)
        except Exception as exc:  # a camera bug is a camera failure, never a pass
            log.exception("camera read failed")
            return Frame(image=None, seq=-1, error=f"camera_down: read failed: {exc}")

    def _veto_pass(self) -> str | None:
        if self._camera_up is False:
            return f"camera_down: {self._camera_reason}"
        return None

    def _inspect_one(self, part_id: str, job: _Job | None, *, frame: Frame | None = None) -> None:
        t_start = time.monotonic()
        self._in_hand_since = t_start
        extra: dict[str, float] = {}
        if job is not None:
            extra["queue"] = (t_start - job.mono) * 1000
        if frame is None and self._camera_up is False:
            # Known down: answer now instead of waiting a read timeout per queued part.
            frame = Frame(image=None, seq=-1, error=f"camera_down: {self._camera_reason}")
        elif frame is None:
            t = time.monotonic()
            timeout = float(self.config.camera.read_timeout_s)
            frame = self._grab(job.wall_ts if job else None, timeout)
            extra["grab"] = (time.monotonic() - t) * 1000
        if not frame.ok:
            self._poll_camera_health()
        try:
            result = self.inspector.inspect(frame, part_id)
            payload = dict(result.to_payload())
        except Exception as exc:  # the inspector promises not to raise; belt and braces
            log.exception("inspection of %s failed", part_id)
            result = None
            payload = {"part_id": part_id, "verdict": "error",
                       "reason": f"internal_error: {type(exc).__name__}: {exc}"}
        payload["part_id"] = part_id
        timings = dict(payload.get("timings_ms") or {})
        timings.update({k: round(v, 3) for k, v in extra.items()})
        payload["timings_ms"] = timings
        self._parts += 1
        record_id = f"{self.boot}-{self._parts:06d}" if self.recorder is not None else None
        pub = self.publisher
        assert pub is not None
        event = pub.publish_result(payload, frame=record_id, veto=self._veto_pass)
        verdict = event["verdict"]
        self._counts[verdict] = self._counts.get(verdict, 0) + 1
        self._in_hand_since = None
        self._after_result(event, frame, result, record_id)

    def _after_result(self, event: dict[str, Any], frame: Frame,
                      result: InspectionResult | None, record_id: str | None) -> None:
        reason = str(event.get("reason") or "")
        if event["verdict"] == "error" and not reason.startswith(("camera_down", "station_")):
            self._errors_in_row += 1
            if self._errors_in_row >= DEGRADED_AFTER:
                self._set_degraded(True, f"{self._errors_in_row} errors in a row, last: {reason}")
        elif event["verdict"] != "error":
            self._errors_in_row = 0
            if self._degraded:
                self._set_degraded(False, "inspections succeed again")
        if self.recorder is not None and record_id is not None:
            images = dict(result.images) if result is not None else {}
            if not images and frame.image is not None:
                images = {"frame": frame.image}
            meta = {"event": event, "frame_meta": frame.meta,
                    "prompt": result.prompt if result is not None else None,
                    "raw_answer": result.raw_answer if result is not None else None}
            # PNG encoding takes tens of ms: the recorder's writer thread does it, after the
            # result is already on the wire.
            write = self.recorder.record_async
            try:
                used = write(record_id, images, meta)
                if used and used != record_id:
                    log.warning("recording %s stored as %s", record_id, used)
            except Exception:
                log.exception("recording %s failed", record_id)

    # ------------------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        pub = self.publisher
        if pub is not None:
            with pub.lock, self._queue_lock:
                self._stopping = True
                self.state = "stopping"
            # Parts acknowledged but not inspected: say so now instead of letting them time out.
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                with contextlib.suppress(Exception):
                    pub.publish_result({"part_id": job.part_id, "verdict": "error",
                                        "reason": "station_stopping"})
            with contextlib.suppress(Exception):
                pub.publish_status("stopping", self.exit_reason, parts=self._parts,
                                   counts=dict(self._counts))
        self.notifier.stopping(f"stopping ({self.exit_reason})")
        if self._server is not None:
            self._server.stop()
        if self.camera is not None:
            try:
                self.camera.close()
            except Exception:
                log.exception("camera close failed")
        if self.recorder is not None and hasattr(self.recorder, "close"):
            try:  # finish queued recordings, within systemd's TimeoutStopSec
                self.recorder.close(timeout=10.0)
            except TypeError:
                self.recorder.close()
            except Exception:
                log.exception("recorder close failed")
        if self._pub is not None:
            self._pub.close(linger=1000)  # let the last events (stopping) leave
        if self.journal is not None:
            self.journal.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)  # closes sockets a failed start-up left open
        self.notifier.close()
        log.info("station %s stopped (%s): %d parts, last seq %d", self.station_id,
                 self.exit_reason, self._parts, self.journal.last_seq if self.journal else 0)


def serve(config: Any, inspector: Any | None = None, camera: Any | None = None, *,
          recorder: Any | None = None,
          on_ready: Callable[[StationDaemon], None] | None = None) -> int:
    """Run a station until SIGTERM/SIGINT; returns the exit code (78 on bad configuration).

    ``inspector`` and ``camera`` may be pre-built (``station demo --serve``).  ``on_ready`` is
    called from a helper thread once the station is ready (the demo prints its endpoints).
    """
    if not faulthandler.is_enabled():
        # systemd's watchdog aborts a hung station with SIGABRT: dump every thread's stack to
        # stderr (the journal) first, so the hang can be diagnosed.
        faulthandler.enable()
    daemon = StationDaemon(config, inspector=inspector, camera=camera, recorder=recorder)
    if on_ready is not None:
        def _wait() -> None:
            while not daemon._stop.is_set():
                if daemon.wait_ready(0.2):
                    on_ready(daemon)
                    return

        threading.Thread(target=_wait, name="on-ready", daemon=True).start()
    try:
        return daemon.run()
    except StationError as exc:
        log.error("station %s: %s", daemon.station_id, exc)
        return exc.exit_code
    except Exception:  # anything else at start-up: logged with its traceback, systemd restarts
        log.exception("station %s failed", daemon.station_id)
        return 1
