"""The JSON Schemas of docs/schemas/ (draft 2020-12) against REAL messages: the events, requests
and replies of a real ``station run`` process (synthetic camera, recording on) on loopback ZeroMQ
sockets (results, heartbeats with recorder health, status events, live and through catch-up;
trigger acks, a duplicate, status, malformed requests), and the ``unavailable`` refusal of the
station's own request handler."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from pipeline.recipe import Recipe
from station.bench.events import StationProcess, write_config
from station.requests import StationRequests, TriggerQueue

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _registry() -> tuple[Registry, dict[str, dict[str, Any]]]:
    docs = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))}
    registry = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in docs.values())
    return registry, docs


REGISTRY, DOCS = _registry()


def validate(name: str, instance: Any) -> None:
    """Validate ``instance`` against ``docs/schemas/<name>.schema.json`` (ValidationError)."""
    Draft202012Validator(DOCS[f"{name}.schema.json"], registry=REGISTRY).validate(instance)


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert set(DOCS) >= {f"{n}.schema.json" for n in (
        "result", "status", "heartbeat", "trigger-request", "trigger-reply", "status-request",
        "status-reply", "catchup-request", "catchup-reply", "error-reply", "common")}
    for doc in DOCS.values():
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(doc)


def _ask(sock: zmq.Socket, body: bytes) -> dict[str, Any]:
    sock.send(body)
    assert sock.poll(15000), f"no reply to {body!r}"
    frames = sock.recv_multipart()
    assert len(frames) == 1
    return json.loads(frames[0])


@pytest.mark.slow
def test_real_events_and_replies_validate(tmp_path: Path, synthetic_recipe: Recipe) -> None:
    cfg = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder,
                       state_dir=tmp_path / "state", recording_dir=tmp_path / "rec")
    endpoints = json.loads(cfg.read_text())["events"]
    st = StationProcess(cfg, tmp_path / "state")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"insp.")
    sub.connect(endpoints["pub"])  # before the start: the starting status is seen too
    trig = ctx.socket(zmq.DEALER)
    catchup = ctx.socket(zmq.DEALER)
    events: list[tuple[str, dict[str, Any]]] = []

    def drain(until: float, want: Any) -> None:
        while time.monotonic() < until and not want():
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                events.append((topic.decode(), json.loads(body)))

    try:
        st.start()
        trig.connect(endpoints["trigger"])
        catchup.connect(endpoints["catchup"])
        drain(time.monotonic() + 5, lambda: any(t == "insp.heartbeat" for t, _ in events))
        replies: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for req in ({"cmd": "trigger", "part_id": "SCHEMA-1"},
                    {"cmd": "trigger", "part_id": "SCHEMA-1"},  # a repeat: duplicate
                    {"cmd": "trigger"}):  # the station names the part
            validate("trigger-request", req)
            replies.append(("trigger-reply", _ask(trig, json.dumps(req).encode()), req))
        validate("status-request", {"cmd": "status"})
        replies.append(("status-reply", _ask(trig, b'{"cmd": "status"}'), None))
        for bad in (b"not json", b'{"cmd": "launch"}', b"[1, 2]", b'{"cmd": "trigger", '
                    b'"part_id": 7}'):
            replies.append(("error-reply", _ask(trig, bad), None))
        replies.append(("error-reply", _ask(catchup, b'{"since": "yesterday"}'), None))
        drain(time.monotonic() + 30,
              lambda: sum(t.startswith("insp.result.") for t, _ in events) >= 2
              and sum(t == "insp.heartbeat" for t, _ in events) >= 2)
        validate("catchup-request", {"since": 0})
        caught = _ask(catchup, b'{"since": 0}')
        replies.append(("catchup-reply", caught, None))
    finally:
        st.signal(15)  # SIGTERM: a clean stop announces "stopping"
        with contextlib.suppress(Exception):
            st.wait(30)
        st.kill()
    drain(time.monotonic() + 2, lambda: any(e.get("state") == "stopping" for _, e in events))
    for s in (sub, trig, catchup):
        s.close(0)
    ctx.term()

    kinds = [r.get("error", "ack") for name, r, _ in replies if name == "trigger-reply"]
    assert kinds == ["ack", "duplicate", "ack"], replies
    for name, reply, _ in replies:
        validate(name, reply)
    topics = {t for t, _ in events}
    assert {"insp.heartbeat", "insp.status"} <= topics and any(
        t.startswith("insp.result.") for t in topics), topics
    beats = [e for t, e in events if t == "insp.heartbeat" and e["state"] == "ready"]
    assert beats and all(b["recorder"]["ok"] is True for b in beats), beats  # recording on
    results = [e for t, e in events if t.startswith("insp.result.")]
    assert all(r["frame"] for r in results)
    for topic, event in events:
        if topic == "insp.heartbeat":
            validate("heartbeat", event)
        elif topic == "insp.status":
            validate("status", event)
        else:
            validate("result", event)
            assert topic == f"insp.result.{event['verdict']}"
    assert caught["count"] == len(caught["events"]) >= 3  # starting, ready, two results
    assert {e["event"]["part_id"] for e in caught["events"] if "part_id" in e["event"]} >= {
        "SCHEMA-1"}


def test_unavailable_refusal_validates() -> None:
    """The ``unavailable`` reply (disk full) as the station's request handler builds it."""
    queue = TriggerQueue(4, "boot-1", threading.Event())
    queue.running, queue.unavailable = True, "disk_full"
    handler = StationRequests(mode="trigger", triggers=queue, journal=None,  # type: ignore[arg-type]
                              catchup_batch=10, status=dict)
    reply = handler.on_trigger({"cmd": "trigger", "part_id": "P1"})
    assert reply == {"ok": False, "error": "unavailable", "reason": "disk_full"}
    validate("trigger-reply", reply)


@pytest.mark.parametrize(("name", "bad"), [
    ("result", {"schema": "inspection-station.event.v1", "station": "s", "boot": "b",
                "ts": "2026-12-01T10:00:00.000Z", "part_id": "P", "verdict": "pass",
                "reason": None, "defects": [], "judges": {}, "timings_ms": {}, "frame": None,
                "recipe": "r", "model": None}),  # no seq
    ("result", {"schema": "inspection-station.event.v1", "station": "s", "boot": "b", "seq": 3,
                "ts": "2026-12-01T10:00:00.000Z", "part_id": "P", "verdict": "error",
                "reason": None, "defects": [], "judges": {}, "timings_ms": {}, "frame": None,
                "recipe": "r", "model": None}),  # an error without a reason
    ("trigger-reply", {"ok": False, "error": "duplicate", "part_id": "P"}),  # no seq
    ("trigger-reply", {"ok": True, "part_id": "P"}),  # no queued
    ("error-reply", {"ok": True, "error": "x"}),
])
def test_schemas_refuse_what_breaks_the_contract(name: str, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate(name, bad)
