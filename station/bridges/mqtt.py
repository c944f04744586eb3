"""``station bridge mqtt``: every event of a station to the plant's MQTT broker (paho-mqtt).

Topics under ``<prefix>``:

* ``result/<verdict>`` — every result (QoS 1), the station's JSON as published;
* ``event/status`` — every status event (QoS 1);
* ``heartbeat`` — the station's heartbeats (QoS 0: they carry no ``seq``, the next one follows);
* ``status`` — retained: ``online`` (bridge and station up), ``station_down`` (no heartbeat for
  3 s), ``offline`` (the bridge stopped, or its last will when it vanished);
* ``notice`` — events the bridge could not recover (rotated out of the journal), QoS 1.

Nothing is lost across a broker outage or a bridge restart: results and status events go out
with QoS 1 and the position file (``<state>/position.json``) only advances over ``seq``s whose
PUBACK came back, in order.  While the broker is away the bridge stops reading events (nothing
piles up in memory); when it is back, the bridge resumes from the journal after the last
acknowledged ``seq`` through the event client's catch-up.  Messages paho had in flight are also
sent again by paho itself, so a subscriber may see one twice (QoS 1 is at-least-once):
consumers keep the first of each ``seq``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.base.atomic import write_json_atomic
from pipeline.base.errors import ConfigError
from station.bridges.link import Endpoints
from station.client import CurveKeys, Event, EventSubscriber, Notice

log = logging.getLogger(__name__)

POSITION_FILE = "position.json"
PERSIST_EVERY_S = 0.1  # a kill -9 re-sends at most this much (QoS 1: at least once)


@dataclass(frozen=True)
class MqttSettings:
    """What the MQTT bridge connects to and where it keeps its position."""

    endpoints: Endpoints
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "inspection"
    state_dir: str = "./bridge-mqtt-state"
    since: int | None = None
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    keepalive: int = 10
    down_after: float = 3.0
    keys: CurveKeys | None = None
    window: int = 1000  # QoS 1 messages without PUBACK at most

    @classmethod
    def from_args(cls, args: argparse.Namespace, endpoints: Endpoints,
                  keys: CurveKeys | None, password: str | None) -> MqttSettings:
        """From the ``station bridge mqtt`` options (ConfigError when one is wrong)."""
        from station.bridges.modbus import parse_listen

        try:
            host, port = parse_listen(args.broker, 1883)
        except ValueError as exc:
            raise ConfigError(f"--broker: {exc}") from exc
        prefix = args.prefix.strip("/")
        if not prefix or any(c in prefix for c in "+#\0"):
            raise ConfigError(f"--prefix {args.prefix!r}: a topic without +, # or NUL")
        return cls(endpoints=endpoints, host=host, port=port, prefix=prefix,
                   state_dir=args.state, since=args.since,
                   client_id=args.client_id or f"inspection-bridge-{prefix.replace('/', '-')}",
                   username=args.username, password=password, tls_ca=args.tls_ca,
                   keepalive=args.keepalive, down_after=args.down_after, keys=keys)


def read_position(state_dir: str | Path) -> int | None:
    """The last ``seq`` the broker acknowledged, from ``<state_dir>/position.json``."""
    p = Path(state_dir) / POSITION_FILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: unreadable position file ({exc}); remove it and give "
                          "--since to choose where to resume") from exc
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) else None


class MqttBridge:
    """Publishes a station's events to a broker with at-least-once delivery by ``seq``."""

    def __init__(self, settings: MqttSettings) -> None:
        self.s = settings
        self.state_dir = Path(settings.state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--state {self.state_dir}: cannot create it ({exc})") from exc
        if not os.access(self.state_dir, os.W_OK):
            raise ConfigError(f"--state {self.state_dir}: not writable by this user")
        stored = read_position(self.state_dir)
        self.delivered: int | None = stored if stored is not None else settings.since
        self.handed = self.delivered  # the newest seq given to paho
        self._saved = stored
        self._saved_at = 0.0
        # seq -> mid (None once acknowledged), in the order handed to paho
        self.pending: OrderedDict[int, int | None] = OrderedDict()
        self._mid_seq: dict[int, int] = {}
        self._acks: deque[int] = deque()
        self.connected = threading.Event()
        self._stopping = False
        self.published = 0
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.s
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.will_set(self.topic("status"), "offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.max_queued_messages_set(0)
        # no paho-side queue beyond the bridge's window: paho's reconnect resends only what it
        # had in flight, and stops at the first message it had merely queued
        c.max_inflight_messages_set(0)
        if s.username:
            c.username_pw_set(s.username, s.password)
        if s.tls_ca:
            c.tls_set(ca_certs=s.tls_ca)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def topic(self, *parts: str) -> str:
        """``<prefix>/<parts…>``."""
        return "/".join((self.s.prefix, *parts))

    # ------------------------------------------------------------------ paho's thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.s.host, self.s.port,
                        reason)
            return
        log.info("connected to the broker %s:%d", self.s.host, self.s.port)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("lost the broker %s:%d (%s): pausing; resuming from the journal after "
                        "the last acknowledged seq %s when it is back", self.s.host, self.s.port,
                        reason, self.delivered)
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acks.append(mid)  # handled in the bridge's thread (paho holds its locks here)

    # ------------------------------------------------------------------ the bridge's thread
    def run(self, stop: threading.Event) -> int:
        """Publish until ``stop`` is set; the position file is current on return."""
        s = self.s
        log.info("MQTT bridge: station %s → broker %s:%d, prefix %s, resuming after seq %s",
                 s.endpoints.pub, s.host, s.port, s.prefix, self.delivered)
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self.client.loop_start()
        sub: EventSubscriber | None = None
        try:
            while not stop.is_set():
                self._take_acks()
                self._persist()
                if not self.connected.is_set():
                    if sub is not None:
                        sub.close()  # read nothing while the broker is away
                        sub = None
                    stop.wait(0.05)
                    continue
                if sub is None:
                    # (re)connected: everything after the last acknowledged seq, from the
                    # journal; what paho still had in flight may arrive twice (QoS 1)
                    self.pending.clear()
                    self._mid_seq.clear()
                    self.handed = self.delivered
                    sub = EventSubscriber(s.endpoints.pub, catchup=s.endpoints.catchup,
                                          since=self.delivered, down_after=s.down_after,
                                          keys=s.keys)
                if len(self.pending) >= s.window:
                    stop.wait(0.01)
                    continue
                for item in sub.poll(0.05):
                    if isinstance(item, Event):
                        self._publish_event(item)
                    else:
                        self._on_notice(item)
        finally:
            if sub is not None:
                sub.close()
            self._finish()
        return 0

    def _publish_event(self, ev: Event) -> None:
        data = json.dumps(ev.data, separators=(",", ":"))
        if ev.is_heartbeat:
            self.client.publish(self.topic("heartbeat"), data, qos=0)
            return
        if ev.is_result:
            topic = self.topic("result", str(ev.data.get("verdict") or "unknown"))
        elif ev.topic == "insp.status":
            topic = self.topic("event", "status")
        else:
            topic = self.topic("event", ev.topic.removeprefix("insp.").replace(".", "/"))
        info = self.client.publish(topic, data, qos=1)
        # NO_CONN: paho keeps the message and sends it once connected again
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"paho refused to queue seq {ev.seq}: {mqtt.error_string(info.rc)}")
        self.published += 1
        if ev.seq is not None:
            self.pending[ev.seq] = info.mid
            self._mid_seq[info.mid] = ev.seq
            self.handed = ev.seq

    def _on_notice(self, n: Notice) -> None:
        level = logging.WARNING if n.kind in ("down", "lost", "gap", "seq_reset") else logging.INFO
        log.log(level, "%s", n.message)
        if n.kind == "down":
            self.client.publish(self.topic("status"), "station_down", qos=1, retain=True)
        elif n.kind in ("up", "connected"):
            self.client.publish(self.topic("status"), "online", qos=1, retain=True)
        elif n.kind == "lost":
            self.client.publish(self.topic("notice"), json.dumps(
                {"kind": "lost", "message": n.message, **n.data}), qos=1)
        elif n.kind == "seq_reset":
            # the station's journal was replaced: follow its numbering from here
            self.pending.clear()
            self._mid_seq.clear()
            self.handed = self.delivered = n.data.get("seq")

    def _take_acks(self) -> None:
        while self._acks:
            seq = self._mid_seq.pop(self._acks.popleft(), None)
            if seq is not None and seq in self.pending:
                self.pending[seq] = None
        while self.pending:
            seq, mid = next(iter(self.pending.items()))
            if mid is not None:
                break
            self.pending.popitem(last=False)
            self.delivered = seq
        if not self.pending:
            self.delivered = self.handed

    def _persist(self, force: bool = False) -> None:
        if self.delivered == self._saved or self.delivered is None:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < PERSIST_EVERY_S:
            return
        self._saved_at = now
        try:
            write_json_atomic(self.state_dir / POSITION_FILE,
                              {"seq": self.delivered, "prefix": self.s.prefix,
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except OSError as exc:  # a full disk: keep publishing; a restart then re-sends more
            log.error("cannot save the position (seq %s) in %s: %s", self.delivered,
                      self.state_dir, exc)
            return
        self._saved = self.delivered

    def _finish(self) -> None:
        """Wait a moment for the last PUBACKs, save the position, say offline, disconnect."""
        end = time.monotonic() + 2.0
        while self.pending and self.connected.is_set() and time.monotonic() < end:
            time.sleep(0.02)
            self._take_acks()
        self._take_acks()
        self._persist(force=True)
        self._stopping = True
        if self.connected.is_set():
            info = self.client.publish(self.topic("status"), "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # the broker went away now
                info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()
        log.info("MQTT bridge stopped: %d messages published, position seq %s", self.published,
                 self.delivered)


def run_mqtt(settings: MqttSettings) -> int:
    """Run the bridge until SIGTERM/SIGINT."""
    bridge = MqttBridge(settings)  # refuses a bad state folder before anything starts
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return bridge.run(stop)
