"""Event schema, journal-before-publish, PUB/SUB on loopback, and the hardened ROUTER loop."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.verdicts import Verdict
from station.events import (
    SCHEMA,
    TOPIC_HEARTBEAT,
    TOPIC_STATUS,
    EventPublisher,
    catchup_reply,
    decode,
    dumps,
    parse_iso,
    result_topic,
    to_jsonable,
    utc_iso,
)
from station.journal import Journal
from station.servers import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    RequestError,
    RequestServer,
    make_pub,
    make_router,
    parse_request,
)


def test_to_jsonable_and_dumps() -> None:
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": Verdict.PASS,
           "e": (1, np.int64(2)), "f": Path("/x"), 3: math.inf}
    assert to_jsonable(obj) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": "pass", "e": [1, 2],
                                "f": "/x", "3": None}
    text = dumps(obj)
    assert "\n" not in text and json.loads(text)["c"] is None


def test_timestamps_and_topics() -> None:
    ts = utc_iso(1_700_000_000.1234)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
    assert ts == "2023-11-14T22:13:20.123Z"
    assert abs(parse_iso(ts) - 1_700_000_000.123) < 1e-6
    assert result_topic("pass") == "insp.result.pass"
    assert result_topic("defect") == "insp.result.defect"
    assert result_topic("uncertain") == "insp.result.error"


def test_publisher_journals_before_sending(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    sent: list[list[bytes]] = []

    def send(frames: list[bytes]) -> None:
        # at send time the event must already be on disk
        event = json.loads(frames[1])
        if frames[0] != b"insp.heartbeat":
            assert journal.last_seq == event["seq"]
            assert any(e.seq == event["seq"] for e in journal.entries())
        sent.append(frames)

    pub = EventPublisher(journal, station="st1", boot="b1", send=send)
    s = pub.publish_status("starting")
    r = pub.publish_result({"part_id": "p1", "verdict": "pass", "defects": [],
                            "timings_ms": {"total": 1.0}}, frame="rec1")
    hb = pub.publish_heartbeat({"state": "ready"})
    assert (s["seq"], r["seq"]) == (1, 2)
    assert r["schema"] == SCHEMA and r["station"] == "st1" and r["boot"] == "b1"
    assert r["frame"] == "rec1" and r["verdict"] == "pass" and r["part_id"] == "p1"
    for key in ("ts", "reason", "defects", "judges", "timings_ms", "recipe", "model"):
        assert key in r
    assert "seq" not in hb and hb["last_seq"] == 2
    assert [f[0] for f in sent] == [b"insp.status", b"insp.result.pass", b"insp.heartbeat"]
    assert [e.seq for e in journal.entries()] == [1, 2]  # heartbeat not journaled
    assert pub.send_errors == 0
    journal.close()


def test_veto_turns_pass_into_error_and_bad_verdicts_into_errors(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        pub = EventPublisher(journal, station="s", boot="b")
        ev = pub.publish_result({"part_id": "p", "verdict": "pass"},
                                veto=lambda: "camera_down: gone")
        assert ev["verdict"] == "error" and ev["reason"] == "camera_down: gone"
        ev = pub.publish_result({"part_id": "p", "verdict": "defect"}, veto=lambda: "x")
        assert ev["verdict"] == "defect"
        ev = pub.publish_result({"part_id": "p", "verdict": "uncertain"})
        assert ev["verdict"] == "error"
        assert [e.topic for e in journal.entries()] == [
            "insp.result.error", "insp.result.defect", "insp.result.error"]


def test_catchup_reply_is_valid_json(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        pub = EventPublisher(journal, station="s", boot="b")
        for i in range(5):
            pub.publish_result({"part_id": f"p{i}", "verdict": "pass"})
        entries, more = journal.since(2, 2)
        reply = json.loads(catchup_reply(entries, seq=journal.last_seq, more=more, oldest=1))
        assert reply["ok"] and reply["seq"] == 5 and reply["more"] and reply["oldest"] == 1
        assert [x["event"]["seq"] for x in reply["events"]] == [3, 4]
        assert reply["events"][0]["topic"] == "insp.result.pass"


def test_pub_sub_loopback(tmp_path: Path) -> None:
    ctx = zmq.Context()
    sock, ep = make_pub(ctx, "tcp://127.0.0.1:0")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"insp.")
    sub.setsockopt(zmq.RCVTIMEO, 2000)
    sub.connect(ep)
    try:
        with Journal(tmp_path) as journal:
            pub = EventPublisher(journal, station="s", boot="b", send=sock.send_multipart)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # slow joiner: wait until the subscription is live
                pub.publish_heartbeat({"state": "ready"})
                if sub.poll(50):
                    break
            while sub.poll(50):
                sub.recv_multipart()
            for i in range(100):
                pub.publish_result({"part_id": f"p{i}", "verdict": "pass" if i % 3 else "defect"})
            pub.publish_status("stopping", "test")
            got = [decode(sub.recv_multipart()) for _ in range(101)]
        assert [e["seq"] for _, e in got] == list(range(1, 102))
        assert [e["part_id"] for _, e in got[:100]] == [f"p{i}" for i in range(100)]
        assert got[0][0] == "insp.result.defect" and got[1][0] == "insp.result.pass"
        assert got[-1][0] == TOPIC_STATUS and got[-1][1]["state"] == "stopping"
        with pytest.raises(ValueError):
            decode([b"insp.x", b'{"schema": "other"}'])
        assert TOPIC_HEARTBEAT == "insp.heartbeat"
    finally:
        sub.close(0)
        sock.close(0)
        ctx.term()


# --------------------------------------------------------------------------- request parsing
@pytest.mark.parametrize("frames, error", [
    ([], "empty"),
    ([b"id"], "expected one JSON frame"),
    ([b"id", b"", b"a", b"b"], "expected one JSON frame"),
    ([b"id", b"\xff\xfe"], "not UTF-8"),
    ([b"id", b"{nope"], "not JSON"),
    ([b"id", b"[1, 2]"], "JSON object"),
    ([b"id", b"[" * 50_000 + b"]" * 50_000], "too large"),
    ([b"id", b"[" * 30_000 + b"]" * 30_000], "not JSON"),  # nesting bomb within the size limit
    ([b"id", b"1" * 5000], "not JSON"),  # int above the 4300-digit limit
])
def test_parse_request_rejects(frames: list[bytes], error: str) -> None:
    req = parse_request(frames)
    assert req.body is None and req.error is not None and error in req.error


def test_parse_request_envelopes() -> None:
    req = parse_request([b"id", b"", b'{"cmd": "status"}'])  # REQ client
    assert req.envelope == [b"id", b""] and req.body == {"cmd": "status"}
    req = parse_request([b"id", b'{"since": 3}'])  # DEALER client
    assert req.envelope == [b"id"] and req.body == {"since": 3}


def _garbage(i: int) -> list[bytes]:
    """A rotating catalogue of hostile requests (as sent by a DEALER, envelope added by ROUTER)."""
    kinds = [
        [b"not json at all"],
        [b"\x00\xff\x10garbage"],
        [b"[1,2,3]"],
        [b'"just a string"'],
        [b"null"],
        [b'{"cmd": 42}'],
        [b'{"cmd": "trigger", "part_id": 7}'],
        [b'{"cmd": "trigger", "part_id": ""}'],
        [b'{"cmd": "trigger", "part_id": "' + b"x" * 500 + b'"}'],
        [b'{"cmd": "trigger", "part_id": "a\\nb"}'],
        [b'{"cmd": "shutdown"}'],
        [b'{"cmd": "' + b"k" * 2000 + b'"}'],
        [b'{"since": -1}'],
        [b'{"since": "12"}'],
        [b'{"since": true}'],
        [b'{"since": 1.5}'],
        [b"{}"],
        [b"a", b"b", b"c"],
        [b"", b"", b""],
        [b"x" * (MAX_REQUEST_BYTES + 1)],
        [b"[" * 20_000 + b"]" * 20_000],
        [b'{"cmd": "trigger"', b'"part_id": "p"}'],
    ]
    return kinds[i % len(kinds)]


def test_request_server_survives_1000_hostile_requests() -> None:
    """Real ROUTER, real DEALER/REQ peers: every malformed request gets ok=false, the loop keeps
    answering, and a frame above MAXMSGSIZE only costs its sender the connection."""
    ctx = zmq.Context()
    router, ep = make_router(ctx, "tcp://127.0.0.1:0", "test")
    state = {"triggers": 0}

    def handler(req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "triggers": state["triggers"]}
        if cmd == "trigger" and isinstance(req.get("part_id"), str) and 0 < len(
                req["part_id"]) <= 128 and req["part_id"].isprintable():
            state["triggers"] += 1
            return {"ok": True, "part_id": req["part_id"]}
        if "since" in req and type(req["since"]) is int and req["since"] >= 0:
            return {"ok": True, "events": []}
        raise RequestError("bad request")

    ticks = []
    server = RequestServer({router: handler}, tick=lambda: ticks.append(time.monotonic()),
                           tick_s=0.1)
    server.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(ep)
    try:
        n = 1000
        for i in range(n):
            dealer.send_multipart(_garbage(i))
        replies = []
        deadline = time.monotonic() + 20
        while len(replies) < n and time.monotonic() < deadline:
            if dealer.poll(500):
                replies.append(json.loads(dealer.recv_multipart()[-1]))
        assert len(replies) == n
        assert all(r == {"ok": False, "error": r["error"]} and r["error"] for r in replies)
        assert state["triggers"] == 0

        # an oversized frame: ZeroMQ drops that peer, nobody else notices
        big = ctx.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(ep)
        big.send(b"x" * (MAX_MESSAGE_BYTES + 10))
        assert big.poll(300) == 0
        big.close(0)

        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 2000)
        req.connect(ep)
        req.send(b'{"cmd": "trigger", "part_id": "good-1"}')
        assert json.loads(req.recv()) == {"ok": True, "part_id": "good-1"}
        req.send(b'{"cmd": "status"}')
        assert json.loads(req.recv())["triggers"] == 1
        req.close(0)
        assert server.is_alive() and len(ticks) >= 3  # the heartbeat kept ticking
    finally:
        dealer.close(0)
        server.stop()
        ctx.term()


def test_handler_bug_is_an_error_reply_not_a_crash() -> None:
    ctx = zmq.Context()
    router, ep = make_router(ctx, f"ipc://@station-test-{id(ctx)}", "test")

    def handler(req: dict) -> dict:
        raise KeyError("boom")

    server = RequestServer({router: handler}, tick=None)
    server.start()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, 2000)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(ep)
    try:
        for _ in range(3):
            req.send(b'{"cmd": "status"}')
            assert json.loads(req.recv()) == {"ok": False, "error": "internal error: KeyError"}
        assert server.is_alive()
    finally:
        req.close(0)
        server.stop()
        ctx.term()


def test_busy_publisher_threads_keep_wire_order(tmp_path: Path) -> None:
    """Three threads publish at once: seqs on the wire are strictly increasing, none missing."""
    sent: list[int] = []
    with Journal(tmp_path, fsync=False) as journal:
        pub = EventPublisher(journal, station="s", boot="b",
                             send=lambda f: sent.append(json.loads(f[1]).get("seq", -1)))

        def work(k: int) -> None:
            for i in range(200):
                if i % 10 == 0:
                    pub.publish_heartbeat({})
                pub.publish_result({"part_id": f"{k}-{i}", "verdict": "pass"})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    seqs = [s for s in sent if s != -1]
    assert seqs == list(range(1, 601))
