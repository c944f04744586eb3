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

from station.events import catchup_reply
from station.journal import Journal
from station.servers import RequestError

MAX_PART_ID = 128


@dataclass
class Job:
    """One acknowledged trigger."""

    part_id: str
    wall_ts: float  # time.time() when the trigger arrived (the frame must be newer)
    mono: float


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
    before the loop has noticed.
    """

    def __init__(self, maxsize: int, boot: str, stop: threading.Event) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self.lock = threading.Lock()
        self._boot = boot
        self._stop = stop
        self._auto_ids = 0
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
        RequestError ``stopping`` / ``starting`` / ``busy`` instead of queueing."""
        with self.lock:
            if raw_part_id is not None:
                part_id = safe_part_id(raw_part_id)
            else:
                self._auto_ids += 1
                part_id = f"{self._boot}-t{self._auto_ids:06d}"
            if self.closed or self._stop.is_set():
                raise RequestError("stopping")
            if not self.running:
                raise RequestError("starting")
            job = Job(part_id, time.time(), time.monotonic())
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise RequestError("busy") from None
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
        job = self.triggers.put(req.get("part_id"))
        return {"ok": True, "part_id": job.part_id, "queued": self.triggers.qsize()}

    def on_catchup(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        """``{"since": N, "limit"?}`` → the journaled events after N (pre-encoded); ``status``."""
        if req.get("cmd") == "status":
            return self.status()
        if "since" not in req:
            raise RequestError("expected {\"since\": N}")
        since = int_field(req, "since", None, 0)
        limit = min(int_field(req, "limit", self.catchup_batch, 1), self.catchup_batch)
        entries, more = self.journal.since(since, limit)
        return catchup_reply(entries, seq=self.journal.last_seq, more=more,
                             oldest=self.journal.oldest_seq)
