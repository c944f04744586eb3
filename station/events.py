"""Event schema ``inspection-station.event.v1`` and the publisher (journal first, then PUB).

Every message on the PUB socket is two frames: ``[topic, json]`` (UTF-8).  Results and status
events consume a ``seq`` and are journaled (fsync'd) before they are sent; heartbeats carry the
last ``seq`` as ``last_seq``, consume none and are not journaled.  See ``docs/EVENTS.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from station.journal import Entry, Journal

SCHEMA = "inspection-station.event.v1"

TOPIC_PASS = "insp.result.pass"
TOPIC_DEFECT = "insp.result.defect"
TOPIC_ERROR = "insp.result.error"
TOPIC_HEARTBEAT = "insp.heartbeat"
TOPIC_STATUS = "insp.status"
RESULT_PREFIX = "insp.result."
RESULT_TOPICS = {"pass": TOPIC_PASS, "defect": TOPIC_DEFECT, "error": TOPIC_ERROR}

# States a station announces on insp.status (and reports in heartbeats).
STATES = ("starting", "ready", "camera_down", "camera_up", "degraded", "stopping")


def utc_iso(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: ``2026-05-09T07:35:25.123Z``."""
    t = time.time() if ts is None else ts
    d = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Epoch seconds of a timestamp written by :func:`utc_iso`."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_boot_id() -> str:
    """Id of one run of the daemon: UTC start time plus random suffix, sortable and unique."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, enums, dataclasses, paths; NaN/inf → None."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)


def dumps(event: Mapping[str, Any]) -> str:
    """Compact one-line JSON of an event (numpy etc. converted first)."""
    return json.dumps(to_jsonable(event), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def result_topic(verdict: str) -> str:
    """Topic of a result; anything that is not ``pass``/``defect`` is published as an error."""
    return RESULT_TOPICS.get(str(verdict), TOPIC_ERROR)


def encode(topic: str, text: str) -> list[bytes]:
    """The two frames of a PUB message."""
    return [topic.encode(), text.encode()]


def decode(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Topic and event of a received PUB message; ``ValueError`` if it is not a v1 event."""
    if len(frames) != 2:
        raise ValueError(f"expected 2 frames, got {len(frames)}")
    topic = frames[0].decode()
    event = json.loads(frames[1])
    if not isinstance(event, dict) or event.get("schema") != SCHEMA:
        raise ValueError("not an inspection-station.event.v1 event")
    return topic, event


class EventPublisher:
    """Gives events their ``seq``, journals them, then sends them on the PUB socket.

    All three steps run under one lock, so the order on the wire is the order in the journal,
    whichever thread publishes (inspection loop, camera health callback, heartbeat timer).
    ``send`` is the PUB socket's ``send_multipart`` (or ``None`` for journal-only use).
    """

    def __init__(
        self,
        journal: Journal,
        *,
        station: str,
        boot: str | None = None,
        send: Callable[[list[bytes]], Any] | None = None,
    ) -> None:
        self.journal = journal
        self.station = station
        self.boot = boot or new_boot_id()
        self._send = send
        self.lock = threading.RLock()
        self.published = 0
        self.send_errors = 0

    @property
    def last_seq(self) -> int:
        """The seq of the newest journaled event."""
        return self.journal.last_seq

    def _header(self, seq: int | None) -> dict[str, Any]:
        h: dict[str, Any] = {"schema": SCHEMA, "station": self.station, "boot": self.boot}
        if seq is not None:
            h["seq"] = seq
        h["ts"] = utc_iso()
        return h

    def _emit(self, topic: str, text: str) -> None:
        if self._send is None:
            return
        try:
            self._send(encode(topic, text))
            self.published += 1
        except Exception:  # a full or closed socket must not lose the journal entry's seq order
            self.send_errors += 1

    def publish(self, topic: str, body: Mapping[str, Any], *,
                journaled: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Journal (fsync) and publish one seq'd event; returns the event as sent.

        ``journaled(event)`` runs after the journal append and before the send, under the lock:
        whatever a subscriber may ask once it has the event (a duplicate's seq) is known by then.
        """
        with self.lock:
            seq = self.journal.last_seq + 1
            event = self._header(seq)
            for k, v in body.items():
                if k not in event:
                    event[k] = v
            clean = to_jsonable(event)
            text = json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            self.journal.append(seq, topic, text)
            if journaled is not None:
                journaled(clean)
            self._emit(topic, text)
            return clean

    def publish_result(self, payload: Mapping[str, Any], *, frame: str | None = None,
                       veto: Callable[[], str | None] | None = None,
                       journaled: Callable[[dict[str, Any]], None] | None = None,
                       ) -> dict[str, Any]:
        """Publish an inspection result (``payload`` = ``InspectionResult.to_payload()``).

        ``veto`` is called under the publish lock; if it returns a reason, a ``pass`` is turned
        into ``error`` with that reason (e.g. the camera went down while the part was judged), so
        no ``pass`` can follow a ``camera_down`` in the stream.  ``journaled``: see
        :meth:`publish`.
        """
        body = dict(payload)
        body.setdefault("part_id", None)
        body.setdefault("verdict", "error")
        body.setdefault("reason", None)
        body.setdefault("defects", [])
        body.setdefault("judges", {})
        body.setdefault("timings_ms", {})
        body["frame"] = frame
        body.setdefault("recipe", None)
        body.setdefault("model", None)
        verdict = str(to_jsonable(body["verdict"]))
        if verdict not in RESULT_TOPICS:
            verdict = "error"
        body["verdict"] = verdict
        with self.lock:
            if verdict == "pass" and veto is not None:
                why = veto()
                if why:
                    body["verdict"] = verdict = "error"
                    body["reason"] = why
            return self.publish(result_topic(verdict), body, journaled=journaled)

    def publish_status(self, state: str, reason: str | None = None,
                       **extra: Any) -> dict[str, Any]:
        """Publish a state change on ``insp.status``."""
        body: dict[str, Any] = {"state": state, "reason": reason}
        body.update(extra)
        return self.publish(TOPIC_STATUS, body)

    def publish_heartbeat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a heartbeat (no seq of its own, not journaled) carrying ``last_seq``."""
        with self.lock:
            event = self._header(None)
            event["last_seq"] = self.journal.last_seq
            event.update({k: v for k, v in body.items() if k not in event})
            clean = to_jsonable(event)
            text = json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            self._emit(TOPIC_HEARTBEAT, text)
            return clean


def catchup_reply(entries: list[Entry], *, seq: int, more: bool, oldest: int | None) -> bytes:
    """The catch-up reply, spliced from the journaled JSON text (no re-encoding)."""
    head = {"ok": True, "seq": seq, "more": more, "oldest": oldest, "count": len(entries)}
    parts = [json.dumps(head, separators=(",", ":"))[:-1] + ',"events":[']
    parts.append(",".join(f'{{"topic":{json.dumps(e.topic)},"event":{e.json}}}' for e in entries))
    parts.append("]}")
    return "".join(parts).encode()

