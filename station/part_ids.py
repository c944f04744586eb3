"""One part, one verdict: the part ids a station has accepted, and the seq of their result.

A second trigger for a ``part_id`` accepted within the window (a bridge's retry, a second client)
is answered ``duplicate`` with the first result's ``seq`` and never judged again.  The index is
rebuilt from the journal at start-up (:meth:`PartIdIndex.load`), so the rule holds across
restarts.  Memory is bounded by the window and by ``max_ids`` (the oldest ids go first).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable

from station.journal import Entry

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 24 * 3600.0
DEFAULT_MAX_IDS = 2_000_000


class PartIdIndex:
    """``part_id`` → (when it was accepted, seq of its result or None while pending)."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, *,
                 max_ids: int = DEFAULT_MAX_IDS) -> None:
        self.window_s = float(window_s)
        self.max_ids = max(1, int(max_ids))
        self._lock = threading.Lock()
        self._ids: dict[str, tuple[float, int | None]] = {}  # insertion order = acceptance order

    def __len__(self) -> int:
        return len(self._ids)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        ids = self._ids
        while ids:
            first = next(iter(ids))
            if ids[first][0] >= horizon and len(ids) <= self.max_ids:
                return
            del ids[first]

    def seen(self, part_id: str, now: float | None = None) -> tuple[bool, int | None]:
        """``(True, seq or None)`` when ``part_id`` was accepted within the window."""
        t = time.time() if now is None else now
        with self._lock:
            self._prune(t)
            hit = self._ids.get(part_id)
        return (False, None) if hit is None else (True, hit[1])

    def accept(self, part_id: str, now: float | None = None) -> None:
        """Record ``part_id`` as accepted (its result is still to come)."""
        t = time.time() if now is None else now
        with self._lock:
            if part_id not in self._ids:
                self._ids[part_id] = (t, None)
            self._prune(t)

    def resolve(self, part_id: str, seq: int) -> None:
        """The first result of ``part_id`` was journaled with ``seq``."""
        with self._lock:
            hit = self._ids.get(part_id)
            if hit is None:
                self._ids[part_id] = (time.time(), seq)
            elif hit[1] is None:
                self._ids[part_id] = (hit[0], seq)

    def load(self, entries: Iterable[Entry], now: float | None = None) -> int:
        """Rebuild from journaled results (oldest first); returns the number of ids known."""
        from station.events import RESULT_PREFIX, parse_iso

        t_now = time.time() if now is None else now
        horizon = t_now - self.window_s
        n = 0
        with self._lock:
            for entry in entries:
                if not entry.topic.startswith(RESULT_PREFIX):
                    continue
                try:
                    ev = json.loads(entry.json)
                    part_id = ev.get("part_id")
                    ts = parse_iso(ev["ts"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if not isinstance(part_id, str) or ts < horizon or part_id in self._ids:
                    continue
                self._ids[part_id] = (ts, entry.seq)
                n += 1
            self._prune(t_now)
        if n:
            log.info("part ids: %d accepted within the last %.0f h (from the journal)", n,
                     self.window_s / 3600)
        return len(self._ids)
