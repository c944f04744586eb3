"""The PLC bridges' fail-safe core (:class:`StationLink`) against a CURVE station on loopback
made of the station's own event parts (journal, EventPublisher, RequestServer) whose trigger
answers and verdicts the test chooses: late passes, refusals, duplicates, silence."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from station.bridges.link import Endpoints, LinkSettings, StationLink
from station.client import CurveKeys
from station.events import EventPublisher, catchup_reply
from station.journal import Journal
from station.servers import RequestServer


class ScriptedStation:
    """A CURVE station whose verdict comes from the part id: ``defect-…``/``error-…`` after
    0.05 s, ``late-…`` a pass after 0.6 s, anything else a pass after 0.05 s; ``busy-…`` is
    refused, ``dup-…`` answered ``duplicate``.  Heartbeats every 0.2 s until :attr:`silent`."""

    def __init__(self, folder: Path, secret: bytes, public: bytes) -> None:
        self.ctx = zmq.Context()
        self.pub_sock = self.ctx.socket(zmq.PUB)
        trigger, catchup = self.ctx.socket(zmq.ROUTER), self.ctx.socket(zmq.ROUTER)
        eps = []
        for s in (self.pub_sock, trigger, catchup):
            s.curve_server = True
            s.curve_secretkey, s.curve_publickey = secret, public
            s.setsockopt(zmq.LINGER, 0)
            s.bind("tcp://127.0.0.1:0")
            eps.append(s.getsockopt(zmq.LAST_ENDPOINT).decode())
        self.endpoints = Endpoints(*eps)
        self.journal = Journal(folder)
        self.publisher = EventPublisher(self.journal, station="scripted", boot="b1",
                                        send=self.pub_sock.send_multipart)
        self.silent = threading.Event()
        self.due: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self._beat_at = 0.0
        self.server = RequestServer({trigger: self._trigger, catchup: self._catchup},
                                    tick=self._tick, tick_s=0.05)
        self.server.start()

    def _trigger(self, req: dict[str, Any]) -> dict[str, Any]:
        pid = str(req.get("part_id"))
        kind = pid.split("-", 1)[0]
        if kind == "busy":
            return {"ok": False, "error": "busy"}
        if kind == "dup":
            return {"ok": False, "error": "duplicate", "seq": 1}
        verdict = kind if kind in ("pass", "defect", "error") else "pass"
        delay = 0.6 if kind == "late" else 0.05
        with self.lock:
            self.due.append((time.monotonic() + delay, pid, verdict))
        return {"ok": True, "part_id": pid, "queued": 1}

    def _catchup(self, req: dict[str, Any]) -> bytes:
        entries, more = self.journal.since(int(req["since"]), int(req.get("limit", 500)))
        return catchup_reply(entries, seq=self.journal.last_seq, more=more,
                             oldest=self.journal.oldest_seq)

    def _tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            ready = [d for d in self.due if d[0] <= now]
            self.due = [d for d in self.due if d[0] > now]
        for _, pid, verdict in ready:
            defects = ([{"address": "X:3, Y:C", "column": "3", "row": "C", "score": 9.0,
                         "mode": None, "judge": "metric"}] if verdict == "defect" else [])
            self.publisher.publish_result({"part_id": pid, "verdict": verdict,
                                           "reason": "alignment_failed" if verdict == "error"
                                           else None, "defects": defects})
        if not self.silent.is_set() and now >= self._beat_at:
            self._beat_at = now + 0.2
            self.publisher.publish_heartbeat({"state": "ready", "interval_s": 0.2})

    def close(self) -> None:
        self.server.stop()
        self.pub_sock.close(0)
        self.journal.close()
        self.ctx.term()


@pytest.fixture()
def curve(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    st_pub, st_sec = zmq.auth.create_certificates(str(keys), "station")
    _, br_sec = zmq.auth.create_certificates(str(keys), "bridge")
    return {"station_pub": Path(st_pub), "station_sec": Path(st_sec),
            "bridge_sec": Path(br_sec)}


def wait_for(pred: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end
        time.sleep(0.02)


def test_link_is_fail_safe_over_curve(tmp_path: Path, curve: dict[str, Path]) -> None:
    public, secret = zmq.auth.load_certificate(curve["station_sec"])
    st = ScriptedStation(tmp_path / "journal", secret, public)
    keys = CurveKeys.load(curve["bridge_sec"], curve["station_pub"])
    link = StationLink(LinkSettings(endpoints=st.endpoints, deadline_s=0.4, keys=keys,
                                    down_after=1.0, ack_timeout_s=0.2)).start()
    plain = StationLink(LinkSettings(endpoints=st.endpoints, deadline_s=0.4,
                                     down_after=1.0)).start()
    try:
        wait_for(lambda: link.ready, 5)
        ok = link.inspect("pass-1")
        assert ok.accepted and ok.verdict == "pass" and ok.seq is not None
        bad = link.inspect("defect-1")
        assert not bad.accepted and bad.verdict == "defect" and bad.addresses == ["X:3, Y:C"]
        err = link.inspect("error-1")
        assert not err.accepted and err.verdict == "error" and "alignment_failed" in err.why
        late = link.inspect("late-1")  # the pass comes after the 0.4 s deadline
        assert not late.accepted and late.why.startswith("no result") and late.seq is None
        busy = link.inspect("busy-1")
        assert not busy.accepted and busy.refused and "busy" in busy.why
        dup = link.inspect("dup-1")  # the station knew this id before: never its old verdict
        assert not dup.accepted and dup.refused and "duplicate" in dup.why
        again = link.inspect("pass-1")  # the PLC reused an id: refused by the bridge itself
        assert not again.accepted and again.refused
        generated = link.inspect(None)
        assert generated.part_id.startswith("BR-") and generated.accepted
        # without the keys nothing gets through: never ready, every part rejected at once
        assert not plain.ready and not plain.inspect("pass-2").accepted
        # silence: ready drops after down_after; the part in hand is rejected then
        hb = link.heartbeat_count
        assert hb >= 1
        st.silent.set()
        t0 = time.monotonic()
        pending = threading.Thread(target=lambda: setattr(st, "held", link.inspect("late-2")))
        pending.start()
        wait_for(lambda: not link.ready, 2.0)
        pending.join(2)
        down_s = time.monotonic() - t0
        assert not st.held.accepted  # its pass came after the deadline anyway
        refused = link.inspect("pass-3")
        assert not refused.accepted and refused.why == "station down" and refused.elapsed_s < 0.05
        count = link.heartbeat_count
        time.sleep(1.2)
        assert link.heartbeat_count == count  # stopped counting
        assert down_s <= 1.5
        # heartbeats again: ready, parts pass again
        st.silent.clear()
        wait_for(lambda: link.ready, 3)
        assert link.inspect("pass-4").accepted
    finally:
        link.close()
        plain.close()
        st.close()
