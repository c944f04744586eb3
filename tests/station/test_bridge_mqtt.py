"""``station bridge mqtt`` against real peers: ``station demo --serve`` on loopback, Debian's
mosquitto started by the test on loopback, and a paho subscriber with a persistent session."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from station.client import CatchupClient, TriggerClient

from support.bridge_peers import DemoStation, Mosquitto, bridge

mqtt = pytest.importorskip("paho.mqtt.client", reason="the bridges extra is not installed "
                                                      "(tests/run.sh installs it)")
if not Mosquitto.available():
    pytest.skip("Debian's mosquitto is not installed (tests/run.sh installs it)",
                allow_module_level=True)

PREFIX = "plant/line1"


class Subscriber:
    """A plant consumer: persistent session (clean_session=False), QoS 1, every topic."""

    def __init__(self, port: int) -> None:
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-plant-consumer",
                             clean_session=False)
        self.c.reconnect_delay_set(0.2, 1)
        self.c.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/#", qos=1)
        self.c.on_subscribe = lambda *_: self.subscribed.set()
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(10)

    def _on(self, c: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def results(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages
                    if t.startswith(f"{PREFIX}/result/")]

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            got = [p for t, p, _ in self.messages if t == topic]
        return got[-1] if got else None

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Line:
    """Parts flowing: a trigger every 0.25 s from a thread until stopped."""

    def __init__(self, trigger_ep: str) -> None:
        self.tc = TriggerClient(trigger_ep, timeout=1.0, retries=1)
        self.n = 0
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            self.n += 1
            if self.tc.trigger(f"MQ-{self.n:04d}").ok:
                self.accepted.append(f"MQ-{self.n:04d}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.tc.close()


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_broker_outage_and_bridge_kill_lose_no_result(tmp_path: Path) -> None:
    """Broker stopped 10 s while parts flow, then restarted: every result reaches the
    subscriber exactly once by seq; the bridge killed -9 and restarted resumes from its
    position file; the last will says offline."""
    broker = Mosquitto(tmp_path / "broker").start()
    station = DemoStation(tmp_path / "station").start()
    with TriggerClient(station.trigger) as tc:
        start_seq = tc.status()["seq"]
    args = ["--pub", station.pub, "--catchup", station.catchup,
            "--broker", f"127.0.0.1:{broker.port}", "--prefix", PREFIX,
            "--state", str(tmp_path / "bridge-state"), "--since", str(start_seq),
            "--keepalive", "2"]
    consumer = Subscriber(broker.port)
    br = bridge("mqtt", args, tmp_path / "bridge.log")
    line = None
    try:
        wait_until(lambda: consumer.last(f"{PREFIX}/status") == b"online", 20, "bridge online")
        line = Line(station.trigger)
        wait_until(lambda: len(consumer.results()) >= 5, 20, "first results")
        broker.stop()  # SIGTERM: the broker saves the consumer's session
        t_down = time.monotonic()
        time.sleep(10)
        n_during = len(line.accepted)
        broker.start()
        wait_until(lambda: len(consumer.results()) >= n_during, 30, "results after the outage")
        outage_s = time.monotonic() - t_down
        time.sleep(1.5)  # parts flow on through the bridge
        # the bridge vanishes (kill -9): the broker publishes its last will
        br.stop(signal.SIGKILL)
        wait_until(lambda: consumer.last(f"{PREFIX}/status") == b"offline", 10, "last will")
        time.sleep(1.0)  # parts flow on without a bridge
        br = bridge("mqtt", args, tmp_path / "bridge.log")
        time.sleep(1.5)
        line.close()
        parts = set(line.accepted)
        wait_until(lambda: {r["part_id"] for r in consumer.results()} >= parts, 30,
                   f"all {len(parts)} parts")
        with CatchupClient(station.catchup) as cc:  # ground truth: the station's journal
            journal = [ev for topic, ev in cc.fetch(start_seq) if topic.startswith("insp.result.")]
        br_rc = br.stop()
        wait_until(lambda: consumer.last(f"{PREFIX}/status") == b"offline", 5, "clean offline")
    finally:
        if line is not None:
            line.close()
        br.stop()
        consumer.close()
        station.stop()
        broker.stop()
    assert br_rc == 0, br.text()[-3000:]
    assert {ev["part_id"] for ev in journal} == parts and len(journal) == len(parts)
    got = consumer.results()
    by_seq = {r["seq"]: r for r in got}
    assert sorted(by_seq) == [ev["seq"] for ev in journal]  # none lost, none invented
    assert all(by_seq[ev["seq"]] == ev for ev in journal)  # the station's JSON, untouched
    dups = len(got) - len(by_seq)
    print(f"\n{len(parts)} parts, broker outage {outage_s:.1f} s, {dups} QoS-1 redeliveries "
          f"(same seq)")
