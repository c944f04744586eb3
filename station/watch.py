"""``station watch``: the operators' live feed of a station's events.

One line per part (time, part id, verdict, defect addresses, latency), status changes, a warning
and an automatic catch-up (catch-up ROUTER, ``{"since": N}``) when a ``seq`` gap appears or a
heartbeat announces a ``last_seq`` ahead of what was seen, a loud warning when heartbeats stop for
``down_after`` seconds, and a summary at the end.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import zmq

from pipeline.base.stats import percentile
from station.events import RESULT_PREFIX, TOPIC_HEARTBEAT, TOPIC_STATUS, decode, parse_iso

MAX_CATCHUP_BATCHES = 100

_COLORS = {"pass": "32", "defect": "1;31", "error": "1;33", "warn": "33", "down": "1;97;41",
           "status": "36", "dim": "2", "ok": "1;32"}


def derive_catchup(pub_endpoint: str) -> str | None:
    """Default catch-up endpoint: the PUB endpoint's port + 1 (5556 → 5557); None for ipc://."""
    m = re.match(r"^(tcp://.+):(\d+)$", pub_endpoint)
    if not m:
        return None
    return f"{m.group(1)}:{int(m.group(2)) + 1}"


def _connectable(bound: str, pub_endpoint: str) -> str:
    """A station's bound endpoint (``tcp://0.0.0.0:5557``) as reachable from here."""
    m = re.match(r"^tcp://(\*|0\.0\.0\.0|\[::\]|::):(\d+)$", bound)
    host = re.match(r"^tcp://(.+):\d+$", pub_endpoint)
    if m and host:
        return f"tcp://{host.group(1)}:{m.group(2)}"
    return bound


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
    """Subscribes to a station's PUB endpoint and prints the feed to ``out``.

    ``catchup`` is the catch-up endpoint (default: from the heartbeat's ``endpoints``, else the
    PUB port + 1).  ``color``: None = only when ``out`` is a terminal.  ``since``: start with a
    catch-up from that seq (``None``: only what happens from now on).  ``json_lines``: print each
    event as its JSON instead of the formatted line.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        catchup: str | None = None,
        down_after: float = 3.0,
        out: TextIO | None = None,
        color: bool | None = None,
        since: int | None = None,
        json_lines: bool = False,
        timeout: float = 2.0,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.catchup = catchup
        self._catchup_given = catchup is not None
        self.down_after = float(down_after)
        self.out = out or sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.json_lines = json_lines
        self.timeout = timeout
        self.ctx = context or zmq.Context.instance()
        self.summary = WatchSummary(last_seq=since)
        self._start_since = since
        self._boot: str | None = None
        self._down = False
        self._last_hb: float | None = None
        self._seen_station = False

    # ------------------------------------------------------------------------------ output
    def _c(self, kind: str, text: str) -> str:
        if not self.color:
            return text
        return f"\x1b[{_COLORS[kind]}m{text}\x1b[0m"

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def _clock(ts: str | None) -> str:
        try:
            t = parse_iso(ts) if ts else time.time()
        except ValueError:
            t = time.time()
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"

    def _result_line(self, event: dict[str, Any], caught_up: bool) -> str:
        verdict = str(event.get("verdict"))
        kind = verdict if verdict in ("pass", "defect", "error") else "error"
        defects = [d for d in event.get("defects") or [] if isinstance(d, dict)]
        addresses = "; ".join(dict.fromkeys(str(d.get("address")) for d in defects))
        if verdict == "error":
            addresses = str(event.get("reason") or "")
        timings = event.get("timings_ms") or {}
        lat = self._latency(timings)
        lat_s = f"{lat:7.1f} ms" if lat is not None else "      - ms"
        tag = "  (caught up)" if caught_up else ""
        return (f"{self._clock(event.get('ts'))}  {str(event.get('part_id'))[:24]:<24}  "
                f"{self._c(kind, f'{verdict.upper():<6}')}  {addresses[:48]:<48}  {lat_s}  "
                f"#{event.get('seq')}{tag}")

    @staticmethod
    def _latency(timings: dict[str, Any]) -> float | None:
        """Station latency of a part: queue wait + grab + pipeline total, as far as known."""
        if not isinstance(timings, dict) or "total" not in timings:
            return None
        try:
            return sum(float(timings.get(k) or 0.0) for k in ("queue", "grab", "total"))
        except (TypeError, ValueError):
            return None

    # ------------------------------------------------------------------------------ events
    def _handle(self, topic: str, event: dict[str, Any], *, caught_up: bool = False) -> None:
        if self.json_lines:
            self._print(json.dumps({"topic": topic, "event": event}, separators=(",", ":")))
        if topic == TOPIC_HEARTBEAT:
            return
        seq = event.get("seq")
        if isinstance(seq, int):
            self.summary.seqs.append(seq)
            self.summary.last_seq = seq if self.summary.last_seq is None else max(
                self.summary.last_seq, seq)
        if topic.startswith(RESULT_PREFIX):
            self.summary.parts += 1
            verdict = str(event.get("verdict"))
            self.summary.counts[verdict] = self.summary.counts.get(verdict, 0) + 1
            lat = self._latency(event.get("timings_ms") or {})
            if lat is not None:
                self.summary.latencies_ms.append(lat)
            if not self.json_lines:
                self._print(self._result_line(event, caught_up))
        elif topic == TOPIC_STATUS and not self.json_lines:
            state = str(event.get("state"))
            reason = event.get("reason")
            kind = "down" if state == "camera_down" else ("warn" if state in (
                "degraded", "stopping") else "status")
            text = f"-- {state}" + (f": {reason}" if reason else "")
            tag = "  (caught up)" if caught_up else ""
            self._print(f"{self._clock(event.get('ts'))}  {self._c(kind, text)}  "
                        f"#{event.get('seq')}{tag}")

    def _on_message(self, topic: str, event: dict[str, Any], req_ep: Callable[[], str | None]
                    ) -> None:
        now = time.monotonic()
        boot = event.get("boot")
        if isinstance(boot, str) and boot != self._boot:
            if self._boot is not None:
                self._print(self._c("warn", f"!! station restarted: boot {self._boot} → {boot}"))
            self._boot = boot
            self.summary.boots.append(boot)
        if topic == TOPIC_HEARTBEAT:
            self._last_hb = now
            if not self._catchup_given and isinstance(event.get("endpoints"), dict):
                bound = event["endpoints"].get("catchup")
                if isinstance(bound, str):
                    self.catchup = _connectable(bound, self.endpoint)
            if self._down:
                self._down = False
                self._print(self._c("ok", f"== station {event.get('station')} is back "
                                          f"(state {event.get('state')}, seq "
                                          f"{event.get('last_seq')})"))
            if not self._seen_station:
                self._seen_station = True
                self._print(self._c("dim", f"== connected to {event.get('station')} at "
                                           f"{self.endpoint} (boot {boot}, state "
                                           f"{event.get('state')}, seq {event.get('last_seq')})"))
                if self._start_since is not None:
                    self._catch_up(req_ep(), upto=None)
            last = event.get("last_seq")
            if isinstance(last, int):
                if self.summary.last_seq is None:
                    self.summary.last_seq = last  # baseline: history before we came is not news
                elif last > self.summary.last_seq:
                    self._gap(self.summary.last_seq, last + 1, req_ep(), "heartbeat is ahead")
            self._handle(topic, event)
            return
        seq = event.get("seq")
        if isinstance(seq, int) and self.summary.last_seq is not None:
            if seq <= self.summary.last_seq:
                return  # already seen (caught up before it arrived live)
            if seq > self.summary.last_seq + 1:
                self._gap(self.summary.last_seq, seq, req_ep(), "seq gap")
        self._handle(topic, event)

    def _gap(self, last: int, upto: int, endpoint: str | None, why: str) -> None:
        missing = upto - last - 1
        if missing <= 0:
            return
        self.summary.gaps += 1
        self.summary.missed += missing
        self._print(self._c("warn", f"!! {why}: missed seq {last + 1}..{upto - 1} "
                                    f"({missing}), catching up from {endpoint}"))
        got = self._catch_up(endpoint, upto=upto)
        self.summary.recovered += got
        if got < missing:
            self.summary.lost += missing - got
            self._print(self._c("warn", f"!! {missing - got} event(s) could not be recovered "
                                        "(rotated out of the journal or station unreachable)"))

    def _catch_up(self, endpoint: str | None, upto: int | None) -> int:
        """Fetch events after ``summary.last_seq`` (below ``upto``) and handle them."""
        if endpoint is None:
            self._print(self._c("warn", "!! no catch-up endpoint known (use --catchup)"))
            return 0
        got = 0
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
        try:
            sock.connect(endpoint)
            for _ in range(MAX_CATCHUP_BATCHES):
                since = self.summary.last_seq if self.summary.last_seq is not None else 0
                sock.send(json.dumps({"since": since}).encode())
                reply = json.loads(sock.recv())
                if not reply.get("ok"):
                    self._print(self._c("warn", f"!! catch-up refused: {reply.get('error')}"))
                    break
                events = reply.get("events") or []
                for item in events:
                    ev = item.get("event") or {}
                    seq = ev.get("seq")
                    if not isinstance(seq, int) or (upto is not None and seq >= upto):
                        continue
                    if self.summary.last_seq is not None and seq <= self.summary.last_seq:
                        continue
                    self._handle(str(item.get("topic")), ev, caught_up=True)
                    got += 1
                done = not reply.get("more") or not events
                if upto is not None and (self.summary.last_seq or 0) >= upto - 1:
                    done = True
                if done:
                    break
        except zmq.Again:
            self._print(self._c("warn", f"!! catch-up from {endpoint}: no answer "
                                        f"within {self.timeout:g} s"))
        except (zmq.ZMQError, ValueError) as exc:
            self._print(self._c("warn", f"!! catch-up from {endpoint} failed: {exc}"))
        finally:
            sock.close(linger=0)
        return got

    # ------------------------------------------------------------------------------ loop
    def run(self, *, duration: float | None = None, count: int | None = None,
            stop: threading.Event | None = None) -> WatchSummary:
        """Watch until ``stop`` is set, ``duration`` s passed, ``count`` parts were seen,
        or Ctrl-C; prints the summary and returns it."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"insp.")
        sub.connect(self.endpoint)
        t0 = time.monotonic()
        deadline = t0 + duration if duration is not None else None
        self._last_hb = None
        down_since = t0  # before the first heartbeat, count from the start

        def req_ep() -> str | None:
            return self.catchup or derive_catchup(self.endpoint)

        try:
            while stop is None or not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if count is not None and self.summary.parts >= count:
                    break
                ref = self._last_hb if self._last_hb is not None else down_since
                hb_deadline = ref + self.down_after
                if not self._down and now >= hb_deadline:
                    self._down = True
                    self.summary.heartbeat_losses += 1
                    self.summary.down_reported_at.append(now)
                    bell = "\a" if self.color else ""
                    what = (f"no heartbeat for {now - ref:.1f} s"
                            if self._last_hb is not None else
                            f"no heartbeat within {self.down_after:g} s of connecting")
                    self._print(bell + self._c(
                        "down", f"!!!! STATION DOWN: {what} from {self.endpoint} "
                                f"(last seq {self.summary.last_seq}) — treat every part as "
                                "rejected !!!!"))
                wait = 0.1 if self._down else max(0.0, min(0.1, hb_deadline - now))
                if sub.poll(wait * 1000) == 0:
                    continue
                for _ in range(1000):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        topic, event = decode(frames)
                    except (ValueError, UnicodeDecodeError):
                        continue
                    self._on_message(topic, event, req_ep)
        except KeyboardInterrupt:
            pass
        finally:
            sub.close(linger=0)
        self._print(self._c("dim", "== " + self.summary.line()))
        return self.summary
