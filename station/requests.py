"""What the station answers on its request sockets, and the queue of acknowledged triggers.

:class:`TriggerQueue` holds the parts a client was told are queued, until the inspection loop
takes them (or the station stops and answers them with ``station_stopping``).
:class:`StationRequests` turns one parsed request into one reply: ``trigger`` and ``status`` on
the trigger socket, ``{"since": N}`` and ``status`` on the catch-up socket.  A wrong request raises
:class:`station.servers.RequestError`, which the request server sends back as
``{"ok": false, "error": …}``.  The request thread calls these; the inspection loop only reads
the queue.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from camera.claims import FrameClaim
from station.events import catchup_reply
from station.journal import Journal
from station.part_ids import PartIdIndex
from station.servers import RequestError

MAX_PART_ID = 128
# A catch-up reply stops adding events past this many bytes (at least one event is sent), so a
# reply held for a client that does not read costs at most this much.
MAX_CATCHUP_REPLY_BYTES = 128 * 1024


@dataclass
class Job:
    """One acknowledged trigger."""

    part_id: str
    wall_ts: float  # time.time() when the trigger arrived (the frame must be captured after)
    mono: float
    claim: FrameClaim | None = None  # the first frame captured after the trigger, when the
    #                                  camera hands frames to triggers (camera.claims)


class Refusal(RequestError):
    """A trigger refused with a reply of its own (``duplicate`` with ``seq``, ``unavailable``
    with ``reason``)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(str(reply.get("error")))
        self.reply = {"ok": False, **reply}


def safe_part_id(value: Any) -> str:
    """A client's ``part_id``: a string of 1..128 printable characters, else RequestError."""
    if not isinstance(value, str):
        raise RequestError("part_id must be a string")
    if not 1 <= len(value) <= MAX_PART_ID or not value.isprintable():
        raise RequestError(f"part_id must be 1..{MAX_PART_ID} printable characters")
    return value


def int_field(req: dict[str, Any], key: str, default: int | None, lo: int) -> int:
    """``req[key]`` (or ``default``) as an integer >= ``lo``, else RequestError."""
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise RequestError(f"'{key}' must be an integer >= {lo}")
    return value


class TriggerQueue:
    """Bounded queue of acknowledged triggers; accepts only while the station runs.

    ``stop`` is the daemon's stop event: once it is set no trigger is acknowledged any more, even
    before the loop has noticed.  ``part_ids`` answers a repeated ``part_id`` ``duplicate``;
    :attr:`unavailable` (a reason, e.g. ``disk_full``) refuses triggers while it is set;
    :attr:`claim_frame` (``(after_ts, until_ts) -> FrameClaim``, set once the camera is built)
    keeps for each accepted trigger the first frame captured after it, within ``max_wait_s``.
    """

    def __init__(self, maxsize: int, boot: str, stop: threading.Event, *,
                 part_ids: PartIdIndex | None = None, max_wait_s: float = 1.0) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self.lock = threading.Lock()
        self._boot = boot
        self._stop = stop
        self._auto_ids = 0
        self.part_ids = part_ids if part_ids is not None else PartIdIndex()
        self.max_wait_s = float(max_wait_s)
        self.claim_frame: Callable[[float, float], FrameClaim] | None = None
        self.unavailable: str | None = None
        self.running = False
        self.closed = False

    @property
    def maxsize(self) -> int:
        """Capacity."""
        return self._queue.maxsize

    def qsize(self) -> int:
        """Triggers waiting."""
        return self._queue.qsize()

    def put(self, raw_part_id: Any) -> Job:
        """Acknowledge a trigger (``part_id`` from the client, or ``<boot>-tNNNNNN``); raises
        :class:`Refusal` ``duplicate`` (the part was accepted before) / ``unavailable``, or
        RequestError ``stopping`` / ``starting`` / ``busy`` instead of queueing."""
        with self.lock:
            now = time.time()
            if raw_part_id is not None:
                part_id = safe_part_id(raw_part_id)
                seen, seq = self.part_ids.seen(part_id, now)
                if seen:
                    raise Refusal({"error": "duplicate", "part_id": part_id, "seq": seq})
            else:
                self._auto_ids += 1
                part_id = f"{self._boot}-t{self._auto_ids:06d}"
            if self.closed or self._stop.is_set():
                raise RequestError("stopping")
            if not self.running:
                raise RequestError("starting")
            if self.unavailable:
                raise Refusal({"error": "unavailable", "reason": self.unavailable})
            if self._queue.full():
                raise RequestError("busy")
            job = Job(part_id, now, time.monotonic())
            if self.claim_frame is not None:
                job.claim = self.claim_frame(now, now + self.max_wait_s)
            self._queue.put_nowait(job)  # only this thread puts: the check above holds
            self.part_ids.accept(part_id, now)
            return job

    def get(self, timeout: float) -> Job | None:
        """The next trigger, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Job]:
        """Everything still queued (at shutdown, after :attr:`closed` was set)."""
        jobs = []
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                return jobs


class StationRequests:
    """The handlers of the trigger and catch-up sockets."""

    def __init__(self, *, mode: str, triggers: TriggerQueue, journal: Journal,
                 catchup_batch: int, status: Callable[[], dict[str, Any]]) -> None:
        self.mode = mode
        self.triggers = triggers
        self.journal = journal
        self.catchup_batch = catchup_batch
        self.status = status

    def on_trigger(self, req: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "trigger", "part_id"?}`` → ``{"ok", "part_id", "queued"}``; ``status``."""
        cmd = req.get("cmd")
        if not isinstance(cmd, str):
            raise RequestError("'cmd' must be a string: trigger | status")
        if cmd == "status":
            return self.status()
        if cmd != "trigger":
            raise RequestError(f"unknown cmd {cmd[:40]!r} (trigger | status)")
        if self.mode != "trigger":
            raise RequestError(f"not in trigger mode (mode is {self.mode})")
        try:
            job = self.triggers.put(req.get("part_id"))
        except Refusal as refusal:
            return refusal.reply
        return {"ok": True, "part_id": job.part_id, "queued": self.triggers.qsize()}

    def on_catchup(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        """``{"since": N, "limit"?}`` → the journaled events after N (pre-encoded); ``status``."""
        if req.get("cmd") == "status":
            return self.status()
        if "since" not in req:
            raise RequestError("expected {\"since\": N}")
        since = int_field(req, "since", None, 0)
        limit = min(int_field(req, "limit", self.catchup_batch, 1), self.catchup_batch)
        entries, more = self.journal.since(since, limit, max_bytes=MAX_CATCHUP_REPLY_BYTES)
        return catchup_reply(entries, seq=self.journal.last_seq, more=more,
                             oldest=self.journal.oldest_seq)
