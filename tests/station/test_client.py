"""The event client library on real ZeroMQ sockets over loopback: a real journal, EventPublisher
and RequestServer (the station's own parts) for the protocol cases, and a real station process
for gap catch-up after a dropped connection, kill -9, restart and trigger-and-wait."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from station.client import (
    CatchupClient,
    ClientError,
    CurveKeys,
    Event,
    EventSubscriber,
    Notice,
    RequestTimeout,
    TriggerClient,
    TriggerTimeout,
)
from station.events import EventPublisher, catchup_reply
from station.journal import Journal
from station.servers import RequestServer, make_router


class MiniStation:
    """A journal, a PUB socket, a catch-up ROUTER and heartbeats every 0.1 s: the daemon's own
    event parts without a camera, so a test can make exactly the stream it needs (a gap by
    leaving ``live`` off, a restart by a new boot)."""

    def __init__(self, folder: Path, *, curve_secret: bytes | None = None) -> None:
        self.ctx = zmq.Context()
        self.pub_sock = self.ctx.socket(zmq.PUB)
        router = self.ctx.socket(zmq.ROUTER)
        for s in (self.pub_sock, router):
            if curve_secret is not None:  # CURVE server: options before bind
                s.curve_server = True
                s.curve_secretkey = curve_secret
            s.setsockopt(zmq.LINGER, 0)
        self.pub_ep = self._bind(self.pub_sock)
        self.catchup_ep = self._bind(router)
        self.folder = folder
        self.journal = Journal(folder)
        self.live = True
        self.publisher = EventPublisher(self.journal, station="mini", boot="boot-1",
                                        send=self._send)
        self.catchup_requests: list[dict[str, Any]] = []
        self.server = RequestServer({router: self._catchup}, tick=self._beat, tick_s=0.1)
        self.server.start()

    @staticmethod
    def _bind(sock: zmq.Socket) -> str:
        sock.bind("tcp://127.0.0.1:0")
        return sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def _catchup(self, req: dict[str, Any]) -> bytes | dict[str, Any]:
        if req.get("cmd") == "status":
            return {"ok": True, "station": "mini", "seq": self.journal.last_seq}
        self.catchup_requests.append(req)
        entries, more = self.journal.since(int(req["since"]), int(req.get("limit", 500)))
        return catchup_reply(entries, seq=self.journal.last_seq, more=more,
                             oldest=self.journal.oldest_seq)

    def _send(self, frames: list[bytes]) -> None:
        if self.live:
            self.pub_sock.send_multipart(frames)

    def _beat(self) -> None:
        self.publisher.publish_heartbeat({"state": "ready",
                                          "endpoints": {"catchup": self.catchup_ep}})

    def result(self, part_id: str, verdict: str = "pass", **kw: object) -> dict[str, Any]:
        return self.publisher.publish_result({"part_id": part_id, "verdict": verdict,
                                              "timings_ms": {"total": 12.0, "queue": 0.5,
                                                             "grab": 1.5}, **kw})

    def close(self) -> None:
        self.server.stop()
        self.pub_sock.close(0)
        self.journal.close()
        self.ctx.term()


class Collector:
    """Everything a subscriber thread delivers, with the time it arrived."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.notices: list[tuple[float, Notice]] = []
        self.lock = threading.Lock()

    def on_event(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)

    def on_notice(self, n: Notice) -> None:
        with self.lock:
            self.notices.append((time.monotonic(), n))

    def kinds(self) -> list[str]:
        with self.lock:
            return [n.kind for _, n in self.notices]

    def seqs(self) -> list[int]:
        with self.lock:
            return [e.seq for e in self.events if e.seq is not None]

    def wait(self, pred: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, (self.kinds(), self.seqs())
            time.sleep(0.01)


@pytest.fixture()
def mini(tmp_path: Path):
    st = MiniStation(tmp_path / "journal")
    yield st
    st.close()


# ------------------------------------------------------------------------------ subscriber
def test_gaps_are_filled_in_bounded_batches_and_every_seq_comes_once_in_order(
        mini: MiniStation) -> None:
    sub = EventSubscriber(mini.pub_ep, batch=2)  # catch-up endpoint from the heartbeats
    col = Collector()
    sub.start(col.on_event, col.on_notice)
    try:
        col.wait(lambda: "connected" in col.kinds())
        mini.result("p1")
        col.wait(lambda: 1 in col.seqs())
        mini.live = False  # journaled, never on the wire: a seq gap for the next live event
        for i in range(2, 7):
            mini.result(f"p{i}", "defect" if i == 3 else "pass")
        mini.publisher.publish_status("camera_down", "cable")
        mini.live = True
        mini.result("p8")
        col.wait(lambda: 8 in col.seqs())
        mini.live = False  # the last event before a quiet period: only a heartbeat tells
        mini.result("p9")
        mini.live = True
        col.wait(lambda: 9 in col.seqs())
    finally:
        sub.close()
    seqs = col.seqs()
    assert seqs == list(range(1, 10))  # each once, in order
    by_seq = {e.seq: e for e in col.events if e.seq is not None}
    assert [by_seq[s].caught_up for s in range(1, 10)] == [False, *[True] * 6, False, True]
    assert by_seq[7].topic == "insp.status" and by_seq[3].data["verdict"] == "defect"
    gaps = [n for _, n in col.notices if n.kind == "gap"]
    assert [(g.data["first"], g.data["last"], g.data["why"]) for g in gaps] == [
        (2, 7, "seq gap"), (9, 9, "heartbeat is ahead")]
    # 6 missed events in batches of at most 2: since 1 → 3 → 5 → 7 (limits 2, 2, 2)
    assert [(r["since"], r["limit"]) for r in mini.catchup_requests[:3]] == [
        (1, 2), (3, 2), (5, 2)]
    s = sub.stats
    assert (s.gaps, s.missed, s.recovered, s.lost, s.heartbeat_losses) == (2, 7, 7, 0, 0)
    assert sum(e.is_heartbeat for e in col.events) >= 1


def test_resume_from_a_persisted_seq_with_a_topic_filter(mini: MiniStation) -> None:
    for i in range(1, 7):
        mini.result(f"old-{i}", "defect" if i % 2 else "pass")
    sub = EventSubscriber(mini.pub_ep, since=2, topics=("insp.result.defect",))
    try:
        got: list[Item] = []
        deadline = time.monotonic() + 10
        while sum(isinstance(x, Event) for x in got) < 2 and time.monotonic() < deadline:
            got += sub.poll(0.2)  # the iterator/poll API, driven from this thread
        mini.result("new-7", "defect")
        while not any(isinstance(x, Event) and x.seq == 7 for x in got):
            assert time.monotonic() < deadline
            got += sub.poll(0.2)
    finally:
        sub.close()
    events = [x for x in got if isinstance(x, Event)]
    assert [(e.data["part_id"], e.caught_up) for e in events] == [
        ("old-3", True), ("old-5", True), ("new-7", False)]  # defects only, after seq 2
    assert [x.kind for x in got if isinstance(x, Notice)][:2] == ["connected", "resume"]
    assert sub.stats.gaps == 0 and sub.last_seq == 7  # resuming is not a gap


def test_restart_and_a_station_whose_seq_went_back(mini: MiniStation, tmp_path: Path) -> None:
    sub = EventSubscriber(mini.pub_ep)
    col = Collector()
    sub.start(col.on_event, col.on_notice)
    try:
        col.wait(lambda: "connected" in col.kinds())
        mini.result("a")
        col.wait(lambda: 1 in col.seqs())
        # same journal, new boot: a restart, seq goes on
        mini.publisher = EventPublisher(mini.journal, station="mini", boot="boot-2",
                                        send=mini._send)
        col.wait(lambda: "restart" in col.kinds())
        mini.result("b")
        col.wait(lambda: 2 in col.seqs())
        # a new state directory: the station's seq starts again at 1
        fresh, old = Journal(tmp_path / "fresh"), mini.journal
        mini.publisher = EventPublisher(fresh, station="mini", boot="boot-3", send=mini._send)
        mini.journal = fresh
        old.close()
        col.wait(lambda: "seq_reset" in col.kinds())
        mini.result("c")
        col.wait(lambda: any(e.data.get("part_id") == "c" for e in col.events))
    finally:
        sub.close()
    restarts = [n.data for _, n in col.notices if n.kind == "restart"]
    assert restarts == [{"old_boot": "boot-1", "boot": "boot-2"},
                        {"old_boot": "boot-2", "boot": "boot-3"}]
    assert [e.data["part_id"] for e in col.events if e.is_result] == ["a", "b", "c"]
    assert sub.stats.restarts == 2 and sub.boot == "boot-3" and sub.last_seq == 1


def test_unreachable_catch_up_reports_lost_events_and_goes_on(mini: MiniStation) -> None:
    dead = "tcp://127.0.0.1:9"  # discard port: nothing answers
    sub = EventSubscriber(mini.pub_ep, catchup=dead, timeout=0.3)
    col = Collector()
    sub.start(col.on_event, col.on_notice)
    try:
        col.wait(lambda: "connected" in col.kinds())
        mini.live = False
        mini.result("gone-1")
        mini.result("gone-2")
        mini.live = True
        mini.result("here")
        col.wait(lambda: 3 in col.seqs())
    finally:
        sub.close()
    assert col.kinds()[-2:] == ["gap", "lost"]
    lost = next(n for _, n in col.notices if n.kind == "lost")
    assert lost.data["lost"] == 2 and "no reply from tcp://127.0.0.1:9" in lost.message
    assert [e.data["part_id"] for e in col.events if e.is_result] == ["here"]
    assert (sub.stats.missed, sub.stats.recovered, sub.stats.lost) == (2, 0, 2)


def test_asyncio_iteration(mini: MiniStation) -> None:
    async def main() -> list[str]:
        sub = EventSubscriber(mini.pub_ep, topics=("insp.result.",))
        seen: list[str] = []
        try:
            async for item in sub.aiter():
                if isinstance(item, Notice) and item.kind == "connected":
                    mini.live = False
                    mini.result("x1")  # missed: comes from catch-up
                    mini.live = True
                    mini.result("x2")
                elif isinstance(item, Event):
                    seen.append(item.data["part_id"])
                    if len(seen) == 2:
                        break
        finally:
            sub.close()
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 10)) == ["x1", "x2"]


def test_heartbeat_loss_is_noticed_after_down_after_seconds(mini: MiniStation) -> None:
    sub = EventSubscriber(mini.pub_ep, down_after=0.5)
    col = Collector()
    sub.start(col.on_event, col.on_notice)
    try:
        col.wait(lambda: "connected" in col.kinds())
        t_stop = time.monotonic()
        mini.live = False  # silence (heartbeats included)
        col.wait(lambda: "down" in col.kinds())
        t_down = next(t for t, n in col.notices if n.kind == "down")
        waiter = sub.expect("any")  # a part waiting while down fails at once
        assert waiter.done and waiter.failure == "station down"
        mini.live = True
        col.wait(lambda: "up" in col.kinds())
    finally:
        sub.close()
    assert 0.3 <= t_down - t_stop <= 1.0
    assert sub.stats.heartbeat_losses == 1


# ------------------------------------------------------------------------------ trigger
class TriggerPeer:
    """A real ROUTER + RequestServer answering triggers by the station's documented rules:
    the first request for a part_id is accepted (after ``delay_s``), a repeat is ``duplicate``
    with the first result's ``seq``."""

    def __init__(self, delay_s: float = 0.0, refuse: str | None = None) -> None:
        self.ctx = zmq.Context()
        router, self.endpoint = make_router(self.ctx, "tcp://127.0.0.1:0", "trigger")
        self.delay_s = delay_s
        self.refuse = refuse
        self.seen: list[dict[str, Any]] = []
        self.server = RequestServer({router: self.handle}, tick_s=1.0)
        self.server.start()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(req)
        if req.get("cmd") == "status":
            return {"ok": True, "state": "ready", "seq": 41}
        if self.refuse:
            return {"ok": False, "error": self.refuse}
        pid = req.get("part_id")
        if sum(r.get("part_id") == pid for r in self.seen) > 1:
            return {"ok": False, "error": "duplicate", "seq": 42}
        time.sleep(self.delay_s)  # the first attempt's ack comes too late for the client
        return {"ok": True, "part_id": pid, "queued": 1}

    def close(self) -> None:
        self.server.stop()
        self.ctx.term()


def test_trigger_retry_reuses_the_part_id_and_duplicate_counts_as_accepted() -> None:
    peer = TriggerPeer(delay_s=0.6)
    try:
        with TriggerClient(peer.endpoint, timeout=0.5, retries=2) as tc:
            ack = tc.trigger("L1-000123")
            # the late ack of attempt 1 went to a closed socket; nothing is left to confuse
            assert tc.status()["seq"] == 41
    finally:
        peer.close()
    assert ack.ok and ack.duplicate and ack.seq == 42 and ack.part_id == "L1-000123"
    assert ack.attempts == 2
    assert [r.get("part_id") for r in peer.seen if r["cmd"] == "trigger"] == ["L1-000123"] * 2


def test_refusals_are_not_retried_and_silence_times_out() -> None:
    peer = TriggerPeer(refuse="busy")
    try:
        with TriggerClient(peer.endpoint, timeout=0.3, retries=3) as tc:
            ack = tc.trigger("P1")
    finally:
        peer.close()
    assert not ack.ok and ack.error == "busy" and ack.attempts == 1 and len(peer.seen) == 1

    dead = "tcp://127.0.0.1:9"
    with TriggerClient(dead, timeout=0.2, retries=2) as tc:
        t0 = time.monotonic()
        with pytest.raises(TriggerTimeout, match="3 attempts"):
            tc.trigger("P2")
        took = time.monotonic() - t0
        with pytest.raises(TriggerTimeout, match="1 attempt"):
            tc.trigger(None)  # the station would make the id: a repeat would be a 2nd part
        with pytest.raises(RequestTimeout):
            tc.status(timeout=0.1)
    assert 0.5 <= took < 2.0
    with CatchupClient(dead, timeout=0.2, retries=0) as cc, pytest.raises(RequestTimeout):
        list(cc.fetch(0))


def test_trigger_and_wait_follows_the_bridge_rule(mini: MiniStation) -> None:
    """Accept only a pass in time: the peer publishes each part's result on the mini station."""
    verdicts = {"good": "pass", "bad": "defect", "late": "pass"}
    publishers: list[threading.Thread] = []

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        pid = req["part_id"]

        def publish() -> None:
            time.sleep(0.6 if pid == "late" else 0.02)
            mini.result(pid, verdicts[pid])

        publishers.append(threading.Thread(target=publish, daemon=True))
        publishers[-1].start()
        return {"ok": True, "part_id": pid, "queued": 1}

    ctx = zmq.Context()
    router, ep = make_router(ctx, "tcp://127.0.0.1:0", "trigger")
    server = RequestServer({router: handle}, tick_s=1.0)
    server.start()
    sub = EventSubscriber(mini.pub_ep)
    try:
        with TriggerClient(ep, timeout=0.5) as tc:
            out = {p: tc.trigger_and_wait(p, 0.4, sub) for p in ("good", "bad", "late")}
        for t in publishers:
            t.join(5)
    finally:
        sub.close()
        server.stop()
        ctx.term()
    assert out["good"].accepted and out["good"].why == "pass" and out["good"].ack.ok
    assert not out["bad"].accepted and out["bad"].why == "defect"
    assert not out["late"].accepted and out["late"].why == "no result within 0.4 s"
    assert out["late"].elapsed_s < 0.6


# ------------------------------------------------------------------------------ CURVE
def test_curve_keys_from_pyzmq_certificate_files(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    server_pub, server_sec = zmq.auth.create_certificates(keys_dir, "station")
    client_pub, client_sec = zmq.auth.create_certificates(keys_dir, "bridge")
    zmq.auth.create_certificates(keys_dir, "other")
    keys = CurveKeys.load(client_sec, server_pub)
    assert "secret" not in repr(keys) and keys.client_secret.decode() not in repr(keys)
    with pytest.raises(ClientError, match="no secret key"):
        CurveKeys.load(client_pub, server_pub)
    with pytest.raises(ClientError, match="no such key file"):
        CurveKeys.load(tmp_path / "missing.key_secret", server_pub)

    _, secret = zmq.auth.load_certificate(server_sec)
    st = MiniStation(tmp_path / "journal", curve_secret=secret)
    try:
        with CatchupClient(st.catchup_ep, timeout=1.0, keys=keys) as cc:
            assert cc.status()["station"] == "mini"
        sub = EventSubscriber(st.pub_ep, keys=keys)
        try:
            assert sub.wait_connected(5.0) and sub.station == "mini"
        finally:
            sub.close()
        # a plain client, or one expecting another server key, gets nothing
        with CatchupClient(st.catchup_ep, timeout=0.5, retries=0) as plain, \
                pytest.raises(RequestTimeout):
            plain.status()
        wrong = CurveKeys.load(client_sec, keys_dir / "other.key")
        with CatchupClient(st.catchup_ep, timeout=0.5, retries=0, keys=wrong) as cc, \
                pytest.raises(RequestTimeout):
            cc.status()
        plain_sub = EventSubscriber(st.pub_ep, down_after=1.0)
        try:
            assert not plain_sub.wait_connected(1.0)
        finally:
            plain_sub.close()
    finally:
        st.close()


# ------------------------------------------------------------------------------ real station
@pytest.mark.slow
def test_real_station_gap_after_dropped_connection_kill_9_and_restart(tmp_path: Path) -> None:
    from station.bench.events import StationProcess, write_config
    from station.demo.line import build_demo_recipe, write_part_frames

    recipe = build_demo_recipe(tmp_path, n_train=8).folder
    frames = write_part_frames(tmp_path / "frames", 4)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=state,
                       camera=frames, fps=30, loop=True)
    st = StationProcess(cfg, state)
    st.start()
    ep = st.endpoints
    sub = EventSubscriber(ep["pub"], down_after=3.0)
    col = Collector()
    tc = TriggerClient(ep["trigger"], timeout=2.0)
    try:
        assert sub.wait_connected(10)
        first = [tc.trigger_and_wait(f"w-{i}", 10.0, sub) for i in range(3)]
        assert all(o.verdict in ("pass", "defect") and o.event for o in first), first
        assert all(o.accepted == (o.verdict == "pass") for o in first)
        items = sub.poll(0.0)  # what trigger_and_wait met on the way is still delivered
        assert [e.data["part_id"] for e in items if isinstance(e, Event) and e.is_result] == [
            "w-0", "w-1", "w-2"]
        # drop the subscriber's connection; parts go on meanwhile
        base = sub.last_seq
        assert base is not None
        sub.socket.disconnect(ep["pub"])
        time.sleep(0.5)  # disconnecting is asynchronous: let it take effect
        for i in range(4):
            assert tc.trigger(f"gap-{i}").ok
        deadline = time.monotonic() + 20
        while tc.status()["seq"] < base + 4:  # all four journaled (and published)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sub.socket.connect(ep["pub"])
        sub.start(col.on_event, col.on_notice)
        col.wait(lambda: sum(e.is_result for e in col.events) >= 4, 10)
        assert [e.data["part_id"] for e in col.events if e.is_result] == [
            f"gap-{i}" for i in range(4)]
        assert all(e.caught_up for e in col.events if e.is_result)
        assert "gap" in col.kinds() and sub.stats.lost == 0
        old_boot, last = sub.boot, sub.last_seq
        # kill -9: heartbeats stop; the subscriber says so within 3 s
        n0 = len(col.notices)  # (a down while it was disconnected may be among them)
        t_kill = time.monotonic()
        st.signal(signal.SIGKILL)
        st.wait(10)
        col.wait(lambda: "down" in col.kinds()[n0:], 6)
        t_down = next(t for t, n in col.notices[n0:] if n.kind == "down")
        down_after_kill = t_down - t_kill
        assert tc_station_down(sub)
        # restart on the same ports: restart noticed, the new boot's events follow in seq order
        st2 = StationProcess(cfg, state)
        st2.start()
        try:
            col.wait(lambda: "up" in col.kinds(), 15)
            col.wait(lambda: any(e.topic == "insp.status" and e.data["boot"] != old_boot
                                 and e.data.get("state") == "ready" for e in col.events), 10)
            assert tc.trigger_and_wait("after", 10.0, sub).verdict in ("pass", "defect")
        finally:
            st2.kill()
    finally:
        sub.close()
        tc.close()
        st.kill()
    print(f"\nheartbeat loss noticed {down_after_kill:.2f} s after kill -9")
    assert down_after_kill <= 3.2  # ≤ 3 s after the last heartbeat, itself before the death
    restart = next(n for _, n in col.notices if n.kind == "restart")
    assert restart.data["old_boot"] == old_boot and restart.data["boot"] == sub.boot
    seqs = col.seqs()
    assert seqs == sorted(set(seqs)) and min(s for s in seqs if s > last) == last + 1
    kinds = col.kinds()[n0:]
    assert kinds.index("down") < kinds.index("restart") and sub.stats.restarts == 1


def tc_station_down(sub: EventSubscriber) -> bool:
    """While the station is down, a bridge rejects at once."""
    with TriggerClient("tcp://127.0.0.1:9", timeout=0.1, retries=0) as tc:
        out = tc.trigger_and_wait("while-down", 1.0, sub)
    return not out.accepted and out.why == "station down" and out.elapsed_s < 0.1


def test_events_json_round_trip_is_untouched(mini: MiniStation) -> None:
    """Delivered events are the station's JSON as published (nothing added or renamed)."""
    sent = mini.result("rt", "defect", defects=[{"address": "X:1, Y:U"}])
    sub = EventSubscriber(mini.pub_ep, since=0, topics=("insp.result.",))
    try:
        got: list[Item] = []
        deadline = time.monotonic() + 5
        while not any(isinstance(x, Event) for x in got):
            assert time.monotonic() < deadline
            got += sub.poll(0.2)
    finally:
        sub.close()
    ev = next(x for x in got if isinstance(x, Event))
    assert json.dumps(ev.data, sort_keys=True) == json.dumps(sent, sort_keys=True)


Item = Event | Notice
