"""The PLC bridges' side of the station: one subscriber, triggers, and the bridge contract.

:class:`StationLink` keeps one :class:`~station.client.EventSubscriber` running in a thread
(gap catch-up, heartbeat loss, restarts) and turns a PLC's trigger into a :class:`PartResult`
through :meth:`~station.client.TriggerClient.trigger_and_wait`: accepted only for a ``pass`` of
that ``part_id`` within the deadline; refused, late, missing, ``defect``, ``error`` and a silent
station are all rejects.  A ``part_id`` the PLC already used (through this bridge, or one the
station answers ``duplicate`` at the first attempt) is refused: a new physical part never
inherits an earlier part's verdict.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from station.client import CurveKeys, Event, EventSubscriber, Notice, TriggerClient

log = logging.getLogger(__name__)

SEEN_MAX = 100_000  # part ids remembered for duplicate refusal
# socket monitor events of a handshake the station refused, and what each means here
HANDSHAKE_FAILED_WHY = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "connection dropped",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "client key not authorized",
}
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


@dataclass(frozen=True)
class Endpoints:
    """The station's three endpoints, as this host reaches them."""

    pub: str = "tcp://127.0.0.1:5556"
    trigger: str = "tcp://127.0.0.1:5555"
    catchup: str | None = "tcp://127.0.0.1:5557"


@dataclass(frozen=True)
class LinkSettings:
    """How a PLC bridge talks to its station.

    ``deadline_s``: the takt budget from trigger to result (bridge rule 1); ``down_after``:
    seconds without a heartbeat before the station counts as down (rule 2); ``ack_timeout_s``:
    per trigger attempt (retries reuse the ``part_id``); ``id_prefix``: generated part ids.
    """

    endpoints: Endpoints = field(default_factory=Endpoints)
    deadline_s: float = 2.0
    down_after: float = 3.0
    ack_timeout_s: float = 0.5
    retries: int = 2
    keys: CurveKeys | None = None
    id_prefix: str = "BR"


@dataclass(frozen=True)
class PartResult:
    """What the bridge tells the PLC about one part.

    ``accepted`` only for a ``pass`` in time.  ``verdict`` is ``pass``, ``defect`` or ``error``
    (anything else that rejects: no result, refused, station down).  ``refused``: the trigger was
    refused (``busy``, duplicate ``part_id``, not ready…).  ``why`` says it in words; ``seq``,
    ``defects`` and ``event`` come from the station's result when there is one.
    """

    part_id: str
    accepted: bool
    verdict: str
    why: str
    refused: bool = False
    seq: int | None = None
    defects: list[dict[str, Any]] = field(default_factory=list)
    ts: str = ""
    event: dict[str, Any] | None = None
    elapsed_s: float = 0.0

    @property
    def addresses(self) -> list[str]:
        """The defective cells' addresses (``X:3, Y:C``)."""
        return [str(d.get("address")) for d in self.defects if d.get("address")]


def now_iso() -> str:
    """The current UTC time as the station writes it (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StationLink:
    """A PLC bridge's connection to one station (thread-safe; :meth:`inspect` may run in many
    threads at once).  ``on_change`` is called (from the link's threads) when ``ready``,
    ``heartbeat_count`` or ``state`` changed."""

    def __init__(self, settings: LinkSettings,
                 on_change: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.on_change = on_change
        ep = settings.endpoints
        self.sub = EventSubscriber(ep.pub, catchup=ep.catchup, down_after=settings.down_after,
                                   topics=("insp.status", "insp.heartbeat"),
                                   keys=settings.keys)
        self.heartbeat_count = 0
        self.state: str | None = None  # the station's state from its heartbeats/status events
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._n = 0
        self._tag = f"{time.strftime('%y%m%d%H%M%S', time.gmtime())}{os.getpid() % 100:02d}"
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        # the TCP connection to the station's PUB socket is gone (a killed station on this host
        # or a refused reconnect): not ready at once, before the 3 s heartbeat rule says so
        self.disconnected = False
        self._hinted = False  # the "is it running, CURVE keys?" hint was logged (once)

    # ------------------------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        """Heartbeats arrive and the station says ``ready`` (triggers will be inspected)."""
        return self.up and self.state == "ready"

    @property
    def up(self) -> bool:
        """Heartbeats arrive and the connection stands (the station may still be starting or
        have its camera down)."""
        return self.sub.connected and not self.sub.down and not self.disconnected

    def start(self) -> StationLink:
        """Start the subscriber thread and the 1 Hz heartbeat counter."""
        sock, pub = self.sub.socket, self.settings.endpoints.pub
        monitor = sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | HANDSHAKE_FAILED)
        # the subscriber connected when it was made, before this monitor existed: connect
        # again so the monitor sees the whole connection (a handshake refused by then would go
        # unseen, and libzmq does not retry one the station refused)
        with contextlib.suppress(zmq.ZMQError):  # no connection to that endpoint (any more)
            sock.disconnect(pub)
        sock.connect(pub)
        self.sub.start(self._on_event, self._on_notice)
        self._watcher = threading.Thread(target=self._watch, args=(monitor,),
                                         name="bridge-connection", daemon=True)
        self._watcher.start()
        self._ticker = threading.Thread(target=self._tick, name="bridge-heartbeat", daemon=True)
        self._ticker.start()
        return self

    def close(self) -> None:
        """Stop the threads and close the sockets."""
        self._stop.set()
        for t in (self._ticker, self._watcher):
            if t is not None:
                t.join(2.0)
        self.sub.close()

    def _watch(self, monitor: zmq.Socket) -> None:
        """Follow the SUB socket's TCP connection (its monitor socket, owned by this thread).

        A connection counts as established once its ZMTP handshake succeeded: one the station
        drops during the handshake (CURVE: an unlisted or missing client key) never does, and
        is the reason for the CURVE hint."""
        handshaking = False  # a TCP connection stands, its handshake has not succeeded yet
        try:
            while not self._stop.is_set():
                if not monitor.poll(200):
                    continue
                msg = recv_monitor_message(monitor)
                event = msg["event"]
                if event == zmq.EVENT_CONNECTED:
                    handshaking = True
                    continue
                if event & HANDSHAKE_FAILED:
                    handshaking = False
                    self._hint(f"the station at {self.settings.endpoints.pub} failed the "
                               f"handshake ({HANDSHAKE_FAILED_WHY.get(event, 'refused')})")
                    continue
                if event == zmq.EVENT_DISCONNECTED and handshaking:
                    handshaking = False
                    self._hint(f"the station at {self.settings.endpoints.pub} dropped the "
                               "connection during the handshake")
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    handshaking = False
                lost = event == zmq.EVENT_DISCONNECTED
                if lost != self.disconnected:
                    self.disconnected = lost
                    log.log(logging.WARNING if lost else logging.INFO, "connection to %s %s",
                            self.settings.endpoints.pub, "lost" if lost else "established")
                    self._changed()
        finally:
            monitor.close(linger=0)

    def _hint(self, what: str) -> None:
        """Say once why the station may never answer: not running there, or CURVE keys (the
        station requires them, or does not list this bridge's public key)."""
        with self._lock:
            if self._hinted:
                return
            self._hinted = True
        log.warning("%s: is it running there, and does it require CURVE keys "
                    "(--client-key/--server-key; this bridge's public key listed in the "
                    "station's clients folder)?", what)

    def _tick(self) -> None:
        """Count once a second while heartbeats arrive: a heartbeat newer than 1.5 intervals."""
        while not self._stop.wait(1.0):
            age = self.sub.heartbeat_age()
            hb = self.sub.last_heartbeat or {}
            interval = hb.get("interval_s") if isinstance(hb.get("interval_s"), float) else 1.0
            if age is not None and age < 1.5 * max(1.0, interval) and self.up:
                self.heartbeat_count += 1
            self._changed()

    def _on_event(self, ev: Event) -> None:
        state = ev.data.get("state")
        if isinstance(state, str) and state != self.state:
            # heartbeats carry the current state; status events the changes (camera_up: ready)
            self.state = "ready" if state == "camera_up" else state
            log.info("station %s: %s", ev.data.get("station"), self.state)
            self._changed()

    def _on_notice(self, n: Notice) -> None:
        log.log(logging.WARNING if n.kind in ("down", "lost", "gap") else logging.INFO,
                "%s", n.message)
        if n.kind == "down" and self.sub.station is None:
            self._hint(f"never heard from the station at {self.settings.endpoints.pub}")
        if n.kind in ("down", "up", "connected", "restart"):
            if n.kind == "down":
                self.state = None
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a broken listener must not stop the link
                log.exception("bridge state listener failed")

    # ------------------------------------------------------------------------------ parts
    def new_part_id(self) -> str:
        """A part id for a trigger without one: ``<prefix>-<bridge start>-<n>`` (≤ 32 chars)."""
        with self._lock:
            self._n += 1
            return f"{self.settings.id_prefix}-{self._tag}-{self._n:06d}"[:32]

    def inspect(self, part_id: str | None) -> PartResult:
        """Trigger one part and wait for its fate (at most the deadline plus a little): the
        bridge contract's decision for the PLC.  Blocking; call it from a worker thread."""
        t0 = time.monotonic()
        pid = part_id or self.new_part_id()

        def reject(why: str, *, refused: bool = False) -> PartResult:
            log.info("part %s: REJECT (%s)", pid, why)
            return PartResult(pid, False, "error", why, refused=refused, ts=now_iso(),
                              elapsed_s=time.monotonic() - t0)

        with self._lock:
            if pid in self._seen:
                return reject("refused: duplicate part id (already triggered through this "
                              "bridge)", refused=True)
            self._seen[pid] = None
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
        if not self.up:
            return reject("station down")
        s = self.settings
        with TriggerClient(s.endpoints.trigger, timeout=s.ack_timeout_s, retries=s.retries,
                           keys=s.keys) as tc:
            out = tc.trigger_and_wait(pid, s.deadline_s, self.sub)
        if out.ack is not None and out.ack.duplicate and out.ack.attempts == 1:
            # the first attempt was answered "duplicate": the id was used before, not by a retry
            return reject("refused: duplicate part id", refused=True)
        ev = out.event or {}
        verdict = out.verdict if out.verdict in ("pass", "defect", "error") else "error"
        defects = ev.get("defects") if isinstance(ev.get("defects"), list) else []
        seq = ev.get("seq") if isinstance(ev.get("seq"), int) else None
        result = PartResult(pid, out.accepted, "pass" if out.accepted else
                            ("defect" if verdict == "defect" else "error"),
                            out.why, refused=out.why.startswith("refused"), seq=seq,
                            defects=[d for d in defects if isinstance(d, dict)],
                            ts=str(ev.get("ts") or now_iso()), event=out.event,
                            elapsed_s=time.monotonic() - t0)
        log.info("part %s: %s (%s) in %.3f s", pid, "ACCEPT" if result.accepted else "REJECT",
                 result.why, result.elapsed_s)
        return result
