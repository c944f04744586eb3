"""The station daemon: camera → Inspector → journal → ZeroMQ, supervised by systemd.

The daemon runs what it is given (:mod:`station.build` builds it from the config); it builds no
part itself.  Threads:

* the **main thread** runs the inspection loop (trigger queue or free-run clock) and sends
  ``WATCHDOG=1`` from it, so a hung pipeline stops the pings and systemd restarts the service;
* the **request thread** (:class:`station.servers.RequestServer`) owns the trigger and catch-up
  ROUTER sockets (:class:`station.requests.StationRequests` answers them) and publishes the
  heartbeat;
* the camera's own threads call :meth:`StationDaemon._on_camera_health` on transitions.

Every event goes through one :class:`station.events.EventPublisher` (seq → journal fsync → PUB,
under one lock), so the wire order is the journal order.  SIGTERM/SIGINT: the part in hand is
finished, queued triggers get an ``error`` result (``station_stopping``), ``stopping`` is
announced, the journal is flushed, exit 0.

Verdict integrity:

* **frame after trigger**: each trigger claims the first frame captured after it arrived (the
  camera hands it over even while the part waits in the queue, :mod:`camera.claims`); none within
  ``trigger.max_wait_ms`` → ``error`` ``stale_trigger``.  Results carry ``trigger_ts`` and
  ``frame_ts``;
* **one part, one verdict**: accepted part ids are indexed (rebuilt from the journal at start),
  a repeat is answered ``duplicate`` (:mod:`station.part_ids`);
* **a full disk is a state**: a journal append that fails leaves nothing behind; the station
  turns ``degraded`` (``disk_full``), refuses triggers ``unavailable``, keeps its heartbeats and
  resumes by itself once space is back; a part's recording is written before its event, which
  names it only when it exists (``frame: null`` otherwise);
* ``ready`` is announced only once the camera delivers frames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from camera.source import ClaimsFrames
from pipeline.base.atomic import write_json_atomic
from pipeline.base.frames import Frame
from pipeline.inspector import InspectionResult
from station import __version__
from station.config import StationConfig
from station.drift import RecipeWatch
from station.events import EventPublisher, new_boot_id, utc_iso
from station.journal import Journal, JournalWriteError
from station.notify import Notifier
from station.part_ids import PartIdIndex
from station.parts import StationParts
from station.requests import Job, StationRequests, TriggerQueue
from station.security import StationAuth, start_auth
from station.servers import CATCHUP_SNDHWM, RequestServer, make_pub, make_router
from station.status import StationStatus
from station.web.ring import ImageRing

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0
DISK_CHECK_S = 1.0
# free space (beyond the journal's reserve) before a station that ran out of disk resumes
RESUME_FREE_BYTES = 4 * 1024 * 1024


class StationDaemon:
    """One run of the station.

    ``assemble`` returns the parts to run (:func:`station.build.build_parts`).  It is called once
    the event sockets are bound and ``starting`` is announced, so that subscribers get heartbeats
    and status answers while a large model loads, and a part that cannot be built (a broken
    recipe: ConfigError, exit 78) is announced as ``stopping`` with the error.
    ``notifier`` defaults to the real ``$NOTIFY_SOCKET``.
    """

    def __init__(self, config: StationConfig, assemble: Callable[[], StationParts], *,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self._assemble = assemble
        self.notifier = notifier or Notifier()
        self.station_id = str(config.station.id)
        self.mode = str(config.mode)
        self.boot = new_boot_id()
        self.state_dir = Path(config.resolve(config.station.state_dir))
        self.exit_reason = "requested"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.status = StationStatus(self.station_id, self.mode, self.boot,
                                    queue_max=int(config.events.trigger_queue))
        self.max_wait_s = float(config.trigger.max_wait_ms) / 1000.0
        self.part_ids = PartIdIndex(float(config.trigger.duplicate_window_h) * 3600.0)
        self.triggers = TriggerQueue(int(config.events.trigger_queue), self.boot, self._stop,
                                     part_ids=self.part_ids, max_wait_s=self.max_wait_s)
        self.parts: StationParts | None = None
        self._ready_announced = False
        self._last_disk_check = 0.0
        self._last_status = 0.0
        self._ctx: zmq.Context | None = None
        self._auth: StationAuth | None = None
        self._pub: zmq.Socket | None = None
        self._server: RequestServer | None = None
        self.journal: Journal | None = None
        self.publisher: EventPublisher | None = None
        # the operator page's in-memory images (station.web.ring), set by station.build when the
        # page is served: parts that are not recorded hand their images over (references only)
        self.images: ImageRing | None = None
        # drift figure, frame_size / recipe_drift states, drift updates (station.drift)
        self.drift: RecipeWatch | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        """The bound endpoints (``pub``, ``trigger``, ``catchup``), ports resolved."""
        return self.status.endpoints

    @property
    def state(self) -> str:
        """``starting``, ``ready``, ``camera_down``, ``degraded`` or ``stopping``."""
        return self.status.state

    # ------------------------------------------------------------------------------ control
    def request_stop(self, reason: str = "requested") -> None:
        """Ask the daemon to stop after the part in hand (thread- and signal-safe)."""
        self.exit_reason = reason
        self._stop.set()

    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called (or a signal arrived)."""
        return self._stop.is_set()

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
        ev = cfg.events
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.state_dir / "journal",
                               segment_bytes=int(ev.journal_segment_mb * 2**20),
                               max_bytes=int(ev.journal_max_mb * 2**20))
        self._ctx = zmq.Context()
        self._auth = start_auth(self._ctx, cfg)  # CURVE + ZAP when security.curve is set
        curve = self._auth.curve if self._auth is not None else None
        self.part_ids.load(self.journal.entries())
        self._pub, pub_ep = make_pub(self._ctx, ev.pub, curve=curve)
        trigger, trig_ep = make_router(self._ctx, ev.trigger, "events.trigger", curve=curve)
        catchup, cu_ep = make_router(self._ctx, ev.catchup, "events.catchup",
                                     sndhwm=CATCHUP_SNDHWM, curve=curve)
        self.status.endpoints.update({"pub": pub_ep, "trigger": trig_ep, "catchup": cu_ep})
        pub = self._pub
        self.publisher = EventPublisher(self.journal, station=self.station_id, boot=self.boot,
                                        send=lambda frames: pub.send_multipart(frames, zmq.NOBLOCK))
        try:
            write_json_atomic(self.state_dir / "endpoints.json", {
                "station": self.station_id, "boot": self.boot, "pid": os.getpid(),
                **self.endpoints})
        except OSError as exc:  # a full disk: the heartbeats announce the endpoints too
            log.error("cannot write %s: %s", self.state_dir / "endpoints.json", exc)
        log.info("station %s boot %s: pub %s trigger %s catchup %s (last seq %d)",
                 self.station_id, self.boot, pub_ep, trig_ep, cu_ep, self.journal.last_seq)
        self._publish_status("starting", None, mode=self.mode, version=__version__,
                             pid=os.getpid(), endpoints=self.endpoints)
        if not self.journal.reserve_held and self.journal.reserve_bytes:
            # No room for the reserve (e.g. restarted on a full disk): a full disk from the start.
            self._enter_disk_full(f"no room for the journal's {self.journal.reserve_bytes} "
                                  f"byte reserve")
        self.notifier.status(f"starting (boot {self.boot})")
        requests = StationRequests(mode=self.mode, triggers=self.triggers, journal=self.journal,
                                   catchup_batch=int(ev.catchup_batch), status=self._status_reply)
        self._server = RequestServer({trigger: requests.on_trigger, catchup: requests.on_catchup},
                                     tick=self._tick, tick_s=float(ev.heartbeat_s))
        self._server.start()

        self.parts = parts = self._assemble()
        self.drift = RecipeWatch.for_station(cfg.drift, parts.inspector, self.state_dir)
        self.status.drift_info = self.drift.figure
        self.status.camera_source = parts.camera.source_id
        self.status.recipe_hash = parts.inspector.recipe.short_hash
        self.status.model_name = parts.inspector.model_name
        if parts.recorder is not None:
            self.status.recorder_info = parts.recorder.health
        # Cameras that hand frames to triggers (camera.claims) keep each trigger's first frame;
        # the others are read with after_ts when the part leaves the queue.
        camera = parts.camera
        self.triggers.claim_frame = (camera.claim_frame if isinstance(camera, ClaimsFrames)
                                     else None)
        parts.camera.set_health_callback(self._on_camera_health)
        parts.camera.start()
        self._await_camera(cfg.camera.open_timeout_s)

        with self.publisher.lock, self.triggers.lock:
            self.status.running = self.triggers.running = True
            self.status.refresh()
            if self.status.camera_up:
                self._announce_ready()
        self._ready.set()
        self.notifier.ready(self._status_line())
        self._last_status = time.monotonic()

    def _await_camera(self, timeout: float) -> None:
        """Give the camera its open timeout to deliver a first frame before announcing ready,
        so a normal start is not reported as camera_down → camera_up."""
        assert self.parts is not None
        camera = self.parts.camera
        deadline = time.monotonic() + max(0.0, timeout)
        while (self.status.camera_up is None and time.monotonic() < deadline
               and not self._stop.is_set()):
            if camera.is_up:
                break
            time.sleep(0.02)
        if self.status.camera_up is None:  # no transition yet: report what the camera says
            self._on_camera_health(camera.is_up,
                                   camera.reason or ("frames flowing" if camera.is_up
                                                     else "camera down"))

    def _announce_ready(self) -> None:
        """``ready`` (under the publisher's lock), once: the station runs and frames flow."""
        if (self._ready_announced or not self.status.running or self.status.stopping
                or self.status.disk_full):
            return
        if self._publish_status("ready", None, mode=self.mode, camera=self.status.camera_info(),
                                model=self.status.model_info()):
            self._ready_announced = True

    # ------------------------------------------------------------------------------ health
    def _on_camera_health(self, up: bool, reason: str) -> None:
        """Camera transition (camera thread) → ``camera_down``/``camera_up`` event (and the
        first ``ready`` when the camera was down at start-up)."""
        pub = self.publisher
        if pub is None:
            return
        with pub.lock:
            if self.status.camera_up is up:
                return
            self.status.camera_up = up
            self.status.camera_reason = reason
            self.status.refresh()
            self._publish_status("camera_up" if up else "camera_down", reason,
                                 camera=self.status.camera_info())
            if up:
                self._announce_ready()
        self.notifier.status(self._status_line())

    def _set_degraded(self, degraded: bool, reason: str | None) -> None:
        pub = self.publisher
        assert pub is not None
        with pub.lock:
            if self.status.degraded == degraded:
                return
            self.status.degraded = degraded
            self.status.refresh()
            self._publish_status("degraded" if degraded else self.status.state, reason,
                                 model=self.status.model_info())

    # ------------------------------------------------------------------------------ journal
    def _publish_status(self, state: str, reason: str | None, **extra: Any) -> bool:
        """Journal and publish a status event; False (and the disk-full state) when the
        journal cannot take it."""
        pub = self.publisher
        assert pub is not None
        try:
            pub.publish_status(state, reason, **extra)
            return True
        except JournalWriteError as exc:
            self._journal_failed(exc)
            return False
        except Exception:
            log.exception("cannot publish status %s", state)
            return False

    def _journal_failed(self, exc: JournalWriteError) -> None:
        """The journal could not take an event: refuse triggers (``unavailable``), say
        ``degraded`` / ``disk_full`` from the journal's reserve, check for space every second."""
        self._enter_disk_full(f"journal write failed: {exc}")

    def _enter_disk_full(self, detail: str) -> None:
        pub = self.publisher
        assert pub is not None and self.journal is not None
        with pub.lock:
            if self.status.disk_full:
                return
            log.error("%s: refusing triggers until the journal can write again", detail)
            self.status.disk_full = True
            self.triggers.unavailable = "disk_full"
            self.status.refresh()
            self.journal.release_reserve()
            with contextlib.suppress(OSError):
                self.status.disk_free_bytes = self.journal.free_bytes()
            try:
                pub.publish_status("degraded", "disk_full", disk=self.status.disk_info(),
                                   detail=detail)
            except Exception as again:
                log.error("cannot journal the disk_full state either: %s", again)
        self.notifier.status(self._status_line())

    def _check_disk(self) -> None:
        """Every second: the free space; after a full disk, resume once space is back."""
        now = time.monotonic()
        if now - self._last_disk_check < DISK_CHECK_S or self.journal is None:
            return
        self._last_disk_check = now
        journal, pub = self.journal, self.publisher
        assert pub is not None
        try:
            free = journal.free_bytes()
        except OSError:
            return
        self.status.disk_free_bytes = free
        if not self.status.disk_full or free < journal.reserve_bytes + RESUME_FREE_BYTES:
            return
        if not journal.restore_reserve():
            return
        with pub.lock:
            self.status.disk_full = False
            state = self.status.refresh()
            try:
                pub.publish_status(state, "disk space available again",
                                   disk=self.status.disk_info())
                if state == "ready":
                    self._ready_announced = True
            except JournalWriteError as exc:
                log.error("still cannot journal: %s", exc)
                self.status.disk_full = True
                self.status.refresh()
                journal.release_reserve()
                return
            self.triggers.unavailable = None
        log.info("journal writes again (%d bytes free): accepting triggers", free)
        self.notifier.status(self._status_line())

    # ------------------------------------------------------------------------------ reporting
    def _last_seq(self) -> int:
        return self.publisher.last_seq if self.publisher else 0

    def _status_line(self) -> str:
        return self.status.line(seq=self._last_seq(), queued=self.triggers.qsize())

    def _status_reply(self) -> dict[str, Any]:
        return self.status.reply(seq=self._last_seq(), queued=self.triggers.qsize())

    def _tick(self) -> None:
        """Heartbeat (request thread, every ``heartbeat_s``)."""
        pub = self.publisher
        if pub is None:
            return
        pub.publish_heartbeat(self.status.heartbeat(
            interval_s=float(self.config.events.heartbeat_s), queued=self.triggers.qsize()))

    def _alive_ping(self) -> None:
        """WATCHDOG=1 only while the request thread is alive too (it carries the heartbeat)."""
        srv = self._server
        if srv is not None and srv.is_alive() and time.monotonic() - srv.last_loop < 5.0:
            self.notifier.watchdog()
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.notifier.status(self._status_line())

    # ------------------------------------------------------------------------------ inspection
    def _loop(self) -> None:
        if self.mode == "free_run":
            self._free_run_loop()
        else:
            self._trigger_loop()

    def _trigger_loop(self) -> None:
        while not self._stop.is_set():
            self._alive_ping()
            self._check_disk()
            job = self.triggers.get(timeout=0.2)
            if job is not None:
                self._inspect_one(job.part_id, job)

    def _free_run_loop(self) -> None:
        period = 1.0 / float(self.config.free_run.rate_hz)
        read_timeout = float(self.config.camera.read_timeout_s)
        next_t = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self._alive_ping()
            self._check_disk()
            now = time.monotonic()
            if self.status.disk_full:  # nothing could be journaled: no part is judged
                self._stop.wait(0.2)
                continue
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
        assert self.parts is not None
        try:
            return self.parts.camera.read_latest(timeout, after_ts=after_ts)
        except Exception as exc:  # a camera bug is a camera failure, never a pass
            log.exception("camera read failed")
            return Frame(image=None, seq=-1, error=f"camera_down: read failed: {exc}")

    def _veto_pass(self) -> str | None:
        if self.status.camera_up is False:
            return f"camera_down: {self.status.camera_reason}"
        return None

    def _frame_for(self, job: Job) -> tuple[Frame, float | None]:
        """The first frame captured after ``job``'s trigger, within ``trigger.max_wait_ms``;
        else a frame-less ``camera_down`` / ``stale_trigger`` frame.  Returns it and the ms
        spent waiting for it."""
        until = job.wall_ts + self.max_wait_s
        claim = job.claim
        if claim is not None and claim.done and claim.frame is not None:
            return claim.frame, 0.0  # captured while the part waited in the queue
        if self.status.camera_up is False:
            # Known down: answer now instead of waiting a read timeout per queued part.
            return Frame(image=None, seq=-1,
                         error=f"camera_down: {self.status.camera_reason}"), None
        t = time.monotonic()
        left = until - time.time()
        if claim is not None:  # a frame captured in time may be handed over a bit later
            frame = claim.wait(left + self.max_wait_s)
        else:  # a camera that captures on demand (or a plug-in without claims)
            frame = self._grab(job.wall_ts, left) if left > 0 else None
        waited = (time.monotonic() - t) * 1000
        if frame is not None and _captured(frame) and job.wall_ts <= frame.ts <= until:
            return frame, waited
        if self.status.camera_up is False:
            return Frame(image=None, seq=-1,
                         error=f"camera_down: {self.status.camera_reason}"), waited
        return Frame(image=None, seq=-1,
                     error=f"stale_trigger: no frame captured within "
                           f"{self.max_wait_s * 1000:.0f} ms after the trigger"), waited

    def _inspect_one(self, part_id: str, job: Job | None, *, frame: Frame | None = None) -> None:
        parts = self.parts
        pub = self.publisher
        assert parts is not None and pub is not None
        t_start = time.monotonic()
        self.status.in_hand_since = t_start
        extra: dict[str, float] = {}
        if job is not None:
            extra["queue"] = (t_start - job.mono) * 1000
        if job is not None and self.status.disk_full:
            # Nothing could be journaled: the part is answered (from the journal's reserve)
            # without judging it.
            self._publish_result({"part_id": part_id, "verdict": "error", "reason": "disk_full",
                                  "trigger_ts": utc_iso(job.wall_ts), "frame_ts": None}, None)
            self.status.in_hand_since = None
            return
        if frame is None and job is not None:
            frame, waited = self._frame_for(job)
            if waited is not None:
                extra["grab"] = waited
        elif frame is None:
            t = time.monotonic()
            frame = self._grab(None, float(self.config.camera.read_timeout_s))
            extra["grab"] = (time.monotonic() - t) * 1000
        result: InspectionResult | None
        try:
            result = parts.inspector.inspect(frame, part_id)
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
        payload["trigger_ts"] = utc_iso(job.wall_ts) if job is not None else None
        payload["frame_ts"] = utc_iso(frame.ts) if _captured(frame) else None
        self.status.parts += 1
        record_id = self._record(f"{self.boot}-{self.status.parts:06d}", payload, frame, result)
        if record_id is None and self.images is not None and result is not None:
            self.images.put(part_id, result.images)
        event = self._publish_result(payload, record_id)
        self.status.in_hand_since = None
        if event is None:
            return
        change = self.status.count_result(event["verdict"], str(event.get("reason") or ""))
        if change is True:
            self._set_degraded(True, f"{self.status.errors_in_row} errors in a row, "
                                     f"last: {event.get('reason') or ''}")
        elif change is False:
            self._set_degraded(False, "inspections succeed again")
        if record_id is not None and parts.recorder is not None:
            parts.recorder.complete(record_id, {"event": event})
        if result is not None and event["verdict"] == result.verdict.value:
            self._drift_step(result)

    def _drift_step(self, result: InspectionResult) -> None:
        """The drift component takes the result; a new reason (``frame_size``,
        ``recipe_drift``, fine again) or recipe version is announced as a status event."""
        if self.drift is None or self.publisher is None:
            return
        change = self.drift.observe(result)
        if change is None:
            return
        with self.publisher.lock:
            self.status.drift_reason = change.reason
            self.status.recipe_hash = self.drift.recipe_hash
            state = self.status.refresh()
            if change.reason_changed:
                self._publish_status(state, change.reason or "recipe_known", detail=change.detail,
                                     drift=self.drift.figure(), model=self.status.model_info())
            if change.new_version is not None:
                self._publish_status(state, "recipe_version", drift=self.drift.figure(),
                                     model=self.status.model_info())

    def _publish_result(self, payload: dict[str, Any],
                        record_id: str | None) -> dict[str, Any] | None:
        """Journal and publish a part's result; when the journal cannot take it, the station
        goes ``disk_full`` and the part gets an ``error`` ``disk_full`` result instead (from the
        journal's reserve).  None when not even that could be journaled."""
        pub = self.publisher
        assert pub is not None
        part_id = str(payload.get("part_id"))

        def resolve(event: dict[str, Any]) -> None:  # before the send: a retry sees the seq
            self.part_ids.resolve(part_id, int(event["seq"]))

        try:
            event = pub.publish_result(payload, frame=record_id, veto=self._veto_pass,
                                       journaled=resolve)
        except JournalWriteError as exc:
            self._journal_failed(exc)
            short = {"part_id": part_id, "verdict": "error", "reason": "disk_full",
                     "trigger_ts": payload.get("trigger_ts"), "frame_ts": payload.get("frame_ts"),
                     "recipe": payload.get("recipe")}
            try:
                event = pub.publish_result(short, frame=record_id, journaled=resolve)
            except Exception as again:
                log.error("result of %s could not be journaled: %s", part_id, again)
                return None
        return event

    def _record(self, record_id: str, payload: dict[str, Any], frame: Frame,
                result: InspectionResult | None) -> str | None:
        """Write the part's recording before its event is published, so the event names it only
        when it exists; None when recording is off, there is nothing to record or the write
        failed (the recorder's health says why)."""
        recorder = self.parts.recorder if self.parts else None
        if recorder is None or self.status.disk_full:
            return None
        images = dict(result.images) if result is not None else {}
        if not images and frame.image is not None:
            images = {"frame": frame.image}
        meta = {"event": payload, "frame_meta": frame.meta,
                "prompt": result.prompt if result is not None else None,
                "raw_answer": result.raw_answer if result is not None else None}
        try:
            used = recorder.record(record_id, images, meta, index=False)
        except Exception:
            log.exception("recording %s failed", record_id)
            return None
        if used and used != record_id:
            log.warning("recording %s stored as %s", record_id, used)
        return used or None

    # ------------------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        pub = self.publisher
        if pub is not None:
            with pub.lock, self.triggers.lock:
                self.status.stopping = self.triggers.closed = True
                self.status.refresh()
            # Parts acknowledged but not inspected: say so now instead of letting them time out.
            for job in self.triggers.drain():
                with contextlib.suppress(Exception):
                    pub.publish_result({"part_id": job.part_id, "verdict": "error",
                                        "reason": "station_stopping",
                                        "trigger_ts": utc_iso(job.wall_ts), "frame_ts": None})
            with contextlib.suppress(Exception):
                pub.publish_status("stopping", self.exit_reason, parts=self.status.parts,
                                   counts=dict(self.status.counts))
        self.notifier.stopping(f"stopping ({self.exit_reason})")
        if self._server is not None:
            self._server.stop()
        parts = self.parts
        if parts is not None:
            try:
                parts.camera.close()
            except Exception:
                log.exception("camera close failed")
            if parts.recorder is not None:
                try:  # finish queued recordings, within systemd's TimeoutStopSec
                    parts.recorder.close(timeout=10.0)
                except Exception:
                    log.exception("recorder close failed")
        if self._pub is not None:
            self._pub.close(linger=1000)  # let the last events (stopping) leave
        if self.journal is not None:
            self.journal.close()
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)  # closes sockets a failed start-up left open
        self.notifier.close()
        log.info("station %s stopped (%s): %d parts, last seq %d", self.station_id,
                 self.exit_reason, self.status.parts, self.journal.last_seq if self.journal else 0)


def _captured(frame: Frame) -> bool:
    """True for a frame the camera captured (decodable or not), False for the stand-ins a source
    or the daemon makes when there is none (``camera_down``, ``stale_trigger``)."""
    if frame.image is not None:
        return True
    return bool(frame.error) and not str(frame.error).startswith(("camera_down", "stale_trigger"))
