"""``station watch``: the operators' live feed of a station's events.

One line per part (time, verdict, latency, ``#seq``, the full part id, defect addresses or the
error reason), status changes, a warning and an automatic catch-up when a ``seq`` gap appears or
a heartbeat announces a ``last_seq`` ahead of what was seen, a loud warning when heartbeats stop
for ``down_after`` seconds, and a summary at the end.  The protocol work (catch-up, heartbeat
loss, restarts) is the event client library's :class:`~station.client.EventSubscriber`; this
module only prints.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from pipeline.base.stats import percentile
from station.client import Event, EventSubscriber, Notice, derive_catchup
from station.client.keys import CurveKeys
from station.events import RESULT_PREFIX, TOPIC_HEARTBEAT, TOPIC_STATUS, parse_iso

__all__ = ["WatchSummary", "Watcher", "derive_catchup"]

_COLORS = {"pass": "32", "defect": "1;31", "error": "1;33", "warn": "33", "down": "1;97;41",
           "status": "36", "dim": "2", "ok": "1;32"}

@dataclass
class WatchSummary:
    """What the watcher saw; printed at the end, returned for tools and tests."""

    started: float = field(default_factory=time.monotonic)
    parts: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"pass": 0, "defect": 0, "error": 0})
    latencies_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    missed: int = 0
    recovered: int = 0
    lost: int = 0
    heartbeat_losses: int = 0
    down_reported_at: list[float] = field(default_factory=list)  # monotonic times of warnings
    last_seq: int | None = None
    boots: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    def line(self) -> str:
        """The one-paragraph summary."""
        c = self.counts
        dur = time.monotonic() - self.started
        judged = c["pass"] + c["defect"]
        yld = f"{100.0 * c['pass'] / judged:.1f} %" if judged else "n/a"
        p50, p99 = percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)
        lat = f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms" if p50 is not None else "latency n/a"
        return (f"watch summary: {dur:.1f} s, {self.parts} parts: {c['pass']} pass, "
                f"{c['defect']} defect, {c['error']} error (yield {yld}); {lat}; "
                f"gaps {self.gaps} ({self.missed} missed, {self.recovered} recovered, "
                f"{self.lost} lost); heartbeat losses {self.heartbeat_losses}; "
                f"last seq {self.last_seq}")


class Watcher:
    """Subscribes to a station's PUB endpoint and prints the feed.

    ``catchup`` is the catch-up endpoint (default: from the heartbeat's ``endpoints``, else the
    PUB port + 1).  ``color``: None = only when ``out`` is a terminal.  ``since``: start with a
    catch-up from that seq (``None``: only what happens from now on).  ``json_lines``: print each
    event as one JSON object per line on ``out`` and everything for people on ``err``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        catchup: str | None = None,
        down_after: float = 3.0,
        out: TextIO | None = None,
        err: TextIO | None = None,
        color: bool | None = None,
        since: int | None = None,
        json_lines: bool = False,
        timeout: float = 2.0,
        keys: CurveKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.out = out or sys.stdout
        # human lines: with --json on stderr so stdout stays machine-readable
        self.err = (err or sys.stderr) if json_lines else self.out
        self.color = self.err.isatty() if color is None else color
        self.json_lines = json_lines
        self.summary = WatchSummary(last_seq=since)
        self.sub = EventSubscriber(endpoint, catchup=catchup, since=since,
                                   down_after=down_after, timeout=timeout, keys=keys)

    # ------------------------------------------------------------------------------ output
    def _c(self, kind: str, text: str) -> str:
        if not self.color:
            return text
        return f"\x1b[{_COLORS[kind]}m{text}\x1b[0m"

    def _say(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    @staticmethod
    def _clock(ts: object) -> str:
        try:
            t = parse_iso(ts) if isinstance(ts, str) else time.time()
        except ValueError:
            t = time.time()
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"

    def _result_line(self, event: Event) -> str:
        """Fixed-width columns first, then the part id and the details in full (never cut)."""
        d = event.data
        verdict = str(d.get("verdict"))
        kind = verdict if verdict in ("pass", "defect", "error") else "error"
        defects = [x for x in d.get("defects") or [] if isinstance(x, dict)]
        detail = "; ".join(dict.fromkeys(str(x.get("address")) for x in defects))
        if verdict == "error":
            detail = str(d.get("reason") or "")
        lat = self._latency(d.get("timings_ms") or {})
        lat_s = f"{lat:7.1f} ms" if lat is not None else "      - ms"
        seq = f"#{d.get('seq')}"
        tag = "  (caught up)" if event.caught_up else ""
        line = (f"{self._clock(d.get('ts'))}  {self._c(kind, f'{verdict.upper():<6}')}  "
                f"{lat_s}  {seq:<7}  {d.get('part_id')}  {detail}")
        return line.rstrip() + tag

    @staticmethod
    def _latency(timings: object) -> float | None:
        """Station latency of a part: queue wait + grab + pipeline total, as far as known."""
        if not isinstance(timings, dict) or "total" not in timings:
            return None
        try:
            return sum(float(timings.get(k) or 0.0) for k in ("queue", "grab", "total"))
        except (TypeError, ValueError):
            return None

    # ------------------------------------------------------------------------------ items
    def _on_event(self, event: Event) -> None:
        if self.json_lines:
            self.out.write(json.dumps({"topic": event.topic, "event": event.data},
                                      separators=(",", ":")) + "\n")
            self.out.flush()
        if event.topic == TOPIC_HEARTBEAT:
            return
        if event.seq is not None:
            self.summary.seqs.append(event.seq)
            self.summary.last_seq = event.seq
        if event.topic.startswith(RESULT_PREFIX):
            self.summary.parts += 1
            verdict = str(event.data.get("verdict"))
            self.summary.counts[verdict] = self.summary.counts.get(verdict, 0) + 1
            lat = self._latency(event.data.get("timings_ms") or {})
            if lat is not None:
                self.summary.latencies_ms.append(lat)
            if not self.json_lines:
                self._say(self._result_line(event))
        elif event.topic == TOPIC_STATUS and not self.json_lines:
            state = str(event.data.get("state"))
            reason = event.data.get("reason")
            kind = "down" if state == "camera_down" else ("warn" if state in (
                "degraded", "stopping") else "status")
            text = f"-- {state}" + (f": {reason}" if reason else "")
            tag = "  (caught up)" if event.caught_up else ""
            self._say(f"{self._clock(event.data.get('ts'))}  {self._c(kind, text)}  "
                      f"#{event.seq}{tag}")

    def _on_notice(self, n: Notice) -> None:
        if n.kind == "down":
            self.summary.heartbeat_losses += 1
            self.summary.down_reported_at.append(time.monotonic())
            bell = "\a" if self.color else ""
            what = n.message.removeprefix("station down: ")
            self._say(bell + self._c("down", f"!!!! STATION DOWN: {what} (last seq "
                                             f"{self.sub.last_seq}) — treat every part as "
                                             "rejected !!!!"))
        elif n.kind == "up":
            self._say(self._c("ok", f"== {n.message}"))
        elif n.kind == "connected":
            if self.sub.boot and self.sub.boot not in self.summary.boots:
                self.summary.boots.append(self.sub.boot)
            self._say(self._c("dim", f"== {n.message}"))
        elif n.kind == "restart":
            self.summary.boots.append(str(n.data.get("boot")))
            self._say(self._c("warn", f"!! {n.message}"))
        elif n.kind == "resume":
            self._say(self._c("dim", f"== {n.message}"))
        else:  # gap, lost, seq_reset
            if n.kind == "lost" and self.sub.catchup_endpoint is None:
                self._say(self._c("warn", "!! no catch-up endpoint known (use --catchup)"))
            self._say(self._c("warn", f"!! {n.message}"))

    # ------------------------------------------------------------------------------ loop
    def run(self, *, duration: float | None = None, count: int | None = None,
            stop: threading.Event | None = None) -> WatchSummary:
        """Watch until ``stop`` is set, ``duration`` s passed, ``count`` parts were seen,
        or Ctrl-C; prints the summary and returns it."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while stop is None or not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if count is not None and self.summary.parts >= count:
                    break
                wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
                for item in self.sub.poll(wait):
                    if isinstance(item, Event):
                        self._on_event(item)
                    else:
                        self._on_notice(item)
        except KeyboardInterrupt:
            pass
        finally:
            self.sub.close()
        st = self.sub.stats
        s = self.summary
        s.gaps, s.missed, s.recovered, s.lost = st.gaps, st.missed, st.recovered, st.lost
        if self.sub.last_seq is not None:
            s.last_seq = self.sub.last_seq
        self._say(self._c("dim", "== " + s.line()))
        return s
