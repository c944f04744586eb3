"""What the operator page shows, built from the station's events (one :class:`LiveState`).

Fed in ``seq`` order by the page server's :class:`~station.client.EventSubscriber` (live events,
gaps and the history fetched at start all come through it), read by the HTTP handlers.  All in
the server's event loop: no locks.

* the last ``keep`` results (summaries: part id, verdict, reason, defects, per-judge figures,
  latency, recording id), by ``seq`` and by part id;
* yield counters by the events' own time stamps (so history from the journal counts where it
  belongs): per local clock hour (the last 24) and for the current shift (``shifts``: local
  start times); the per-cell defect heat map of the current shift;
* the last heartbeat (state, camera, model, disk, recorder, queue) and the last status event.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from typing import Any

VERDICTS = ("pass", "defect", "error")
HOURS_KEPT = 24


def parse_ts(text: Any) -> float | None:
    """An event's ``ts`` (ISO 8601 UTC, ``Z``) as epoch seconds; None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def shift_start(t: float, starts: list[str]) -> float:
    """Epoch seconds of the start of the shift (local time, ``HH:MM`` starts) holding ``t``."""
    local = dt.datetime.fromtimestamp(t).astimezone()
    best: dt.datetime | None = None
    for day in (local.date(), local.date() - dt.timedelta(days=1)):
        for s in starts:
            hh, mm = (int(x) for x in s.split(":"))
            cand = dt.datetime.combine(day, dt.time(hh, mm), tzinfo=local.tzinfo)
            if cand <= local and (best is None or cand > best):
                best = cand
    assert best is not None  # yesterday's shifts always include one before now
    return best.timestamp()


def hour_start(t: float) -> float:
    """Epoch seconds of the local clock hour holding ``t``."""
    local = dt.datetime.fromtimestamp(t).astimezone()
    return local.replace(minute=0, second=0, microsecond=0).timestamp()


def latency_ms(timings: dict[str, Any]) -> float | None:
    """The station's latency of one part: trigger queue + frame wait + pipeline total."""
    total = 0.0
    seen = False
    for k in ("queue", "grab", "total"):
        v = timings.get(k)
        if isinstance(v, (int, float)):
            total += float(v)
            seen = True
    return round(total, 3) if seen else None


def _judge_figures(judges: Any) -> dict[str, dict[str, Any]]:
    """Per judge: its verdict, reason, defect count and scalar figures (not the per-cell map)."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(judges, dict):
        return out
    for name, j in judges.items():
        if not isinstance(j, dict):
            continue
        fig: dict[str, Any] = {"verdict": j.get("verdict"), "reason": j.get("reason"),
                               "defects": len(j.get("defects") or [])}
        for k, v in j.items():
            if k not in fig and isinstance(v, (int, float, str, bool)) and k != "prompt":
                fig[k] = v
        out[str(name)] = fig
    return out


def summarize(event: dict[str, Any]) -> dict[str, Any]:
    """The page's view of a result event."""
    timings = event.get("timings_ms") if isinstance(event.get("timings_ms"), dict) else {}
    defects = [{"address": d.get("address"), "score": d.get("score"), "judge": d.get("judge"),
                "mode": d.get("mode")}
               for d in (event.get("defects") or []) if isinstance(d, dict)]
    return {
        "seq": event.get("seq"), "ts": event.get("ts"), "part_id": event.get("part_id"),
        "verdict": event.get("verdict"), "reason": event.get("reason"), "defects": defects,
        "judges": _judge_figures(event.get("judges")), "timings_ms": timings,
        "latency_ms": latency_ms(timings), "frame": event.get("frame"),
        "boot": event.get("boot"), "recipe": event.get("recipe"), "model": event.get("model"),
    }


def _grid_of(event: dict[str, Any]) -> list[str]:
    judges = event.get("judges")
    metric = judges.get("metric") if isinstance(judges, dict) else None
    cells = metric.get("cells") if isinstance(metric, dict) else None
    return [str(c) for c in cells] if isinstance(cells, dict) else []


def split_address(address: str) -> tuple[str, str] | None:
    """``"X:3, Y:C"`` → ``("3", "C")``; None for anything else."""
    x, sep, y = address.partition(",")
    x, y = x.strip(), y.strip()
    if not sep or not x.startswith("X:") or not y.startswith("Y:"):
        return None
    return x[2:], y[2:]


class LiveState:
    """The page's state; see the module docstring."""

    def __init__(self, *, keep: int = 2000, shifts: list[str] | None = None) -> None:
        self.keep = max(1, int(keep))
        self.shifts = list(shifts or ["06:00", "14:00", "22:00"])
        self.results: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.by_part: dict[str, dict[str, Any]] = {}
        self.latest: dict[str, Any] | None = None
        self.hours: dict[float, dict[str, int]] = {}
        self.shift_t: float | None = None
        self.shift_counts = dict.fromkeys(VERDICTS, 0)
        self.heat: dict[str, int] = {}
        self.columns: list[str] = []
        self.rows: list[str] = []
        self.heartbeat: dict[str, Any] | None = None
        self.heartbeat_at: float | None = None  # time.time() it was received
        self.status_event: dict[str, Any] | None = None
        self.station: str | None = None
        self.boot: str | None = None
        self.last_seq: int | None = None
        self.down = False
        self.notices: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ feeding
    def add_result(self, event: dict[str, Any]) -> dict[str, Any]:
        """Take one result event; returns its summary."""
        s = summarize(event)
        seq = s["seq"]
        if isinstance(seq, int):
            self.results[seq] = s
            self.last_seq = max(seq, self.last_seq or 0)
            while len(self.results) > self.keep:
                _, old = self.results.popitem(last=False)
                if self.by_part.get(old["part_id"]) is old:
                    del self.by_part[old["part_id"]]
        if isinstance(s["part_id"], str):
            self.by_part[s["part_id"]] = s
        self.latest = s
        self._learn_grid(event)
        t = parse_ts(event.get("ts")) or time.time()
        verdict = s["verdict"] if s["verdict"] in VERDICTS else "error"
        h = hour_start(t)
        self.hours.setdefault(h, dict.fromkeys(VERDICTS, 0))[verdict] += 1
        for old_h in sorted(self.hours)[:-HOURS_KEPT]:
            del self.hours[old_h]
        start = shift_start(t, self.shifts)
        if self.shift_t is None or start > self.shift_t:
            self.shift_t = start
            self.shift_counts = dict.fromkeys(VERDICTS, 0)
            self.heat = {}
        if start == self.shift_t:
            self.shift_counts[verdict] += 1
            if verdict == "defect":
                for d in s["defects"]:
                    a = d.get("address")
                    if isinstance(a, str):
                        self.heat[a] = self.heat.get(a, 0) + 1
        return s

    def _learn_grid(self, event: dict[str, Any]) -> None:
        cells = _grid_of(event)
        if not cells:
            return
        cols: list[str] = []
        rows: list[str] = []
        for c in cells:
            xy = split_address(c)
            if xy is None:
                continue
            if xy[0] not in cols:
                cols.append(xy[0])
            if xy[1] not in rows:
                rows.append(xy[1])
        if cols and rows:
            self.columns, self.rows = cols, rows

    def add_heartbeat(self, event: dict[str, Any]) -> None:
        """Take one heartbeat."""
        self.heartbeat = event
        self.heartbeat_at = time.time()
        self.station = event.get("station") or self.station
        self.boot = event.get("boot") or self.boot
        self.down = False

    def add_status(self, event: dict[str, Any]) -> None:
        """Take one status event (starting, ready, camera_down, …)."""
        self.status_event = event
        if isinstance(event.get("seq"), int):
            self.last_seq = max(event["seq"], self.last_seq or 0)

    def add_notice(self, kind: str, message: str) -> None:
        """Remember one of the subscriber's notices (the newest 20)."""
        if kind == "down":
            self.down = True
        self.notices.append({"kind": kind, "message": message,
                             "ts": dt.datetime.now(dt.timezone.utc).isoformat()})
        del self.notices[:-20]

    # ------------------------------------------------------------------ reading
    def parts(self, limit: int, verdict: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` results (of ``verdict`` when given), newest first."""
        out = []
        for s in reversed(self.results.values()):
            if verdict is None or s["verdict"] == verdict:
                out.append(s)
                if len(out) >= limit:
                    break
        return out

    def after(self, seq: int) -> tuple[list[dict[str, Any]], int | None]:
        """Results with ``seq`` above ``seq`` held here, oldest first, and the first ``seq``
        missing below them (None when nothing is missing)."""
        held = [s for k, s in self.results.items() if k > seq]
        oldest = next(iter(self.results), None)
        missing = oldest if oldest is not None and oldest > seq + 1 else None
        return held, missing

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat arrived (None before the first)."""
        return None if self.heartbeat_at is None else time.time() - self.heartbeat_at

    def snapshot(self) -> dict[str, Any]:
        """``/api/status`` and the page's status message."""
        hb = self.heartbeat or {}
        age = self.heartbeat_age()
        state = hb.get("state") if hb else (self.status_event or {}).get("state")
        down = age is None or age > 3.0
        hours = [{"hour": dt.datetime.fromtimestamp(h).astimezone().isoformat(), **c}
                 for h, c in sorted(self.hours.items())]
        now = time.time()
        now_h = hour_start(now)
        cur_shift = shift_start(now, self.shifts)
        same_shift = self.shift_t == cur_shift  # else no part yet in this shift
        shift_counts = self.shift_counts if same_shift else dict.fromkeys(VERDICTS, 0)
        return {
            "ok": True, "station": self.station, "boot": self.boot,
            "state": "down" if down and hb else state, "station_state": state,
            "ready": state == "ready" and not down, "down": down,
            "heartbeat_age_s": None if age is None else round(age, 3),
            "heartbeat_ts": hb.get("ts"), "last_seq": self.last_seq,
            "station_last_seq": hb.get("last_seq"),
            "queued": hb.get("queued"), "in_hand_s": hb.get("in_hand_s"),
            "mode": hb.get("mode"), "uptime_s": hb.get("uptime_s"),
            "counts_since_boot": hb.get("counts"),
            "camera": hb.get("camera"), "model": hb.get("model"), "disk": hb.get("disk"),
            "recorder": hb.get("recorder"),
            "hour": self.hours.get(now_h, dict.fromkeys(VERDICTS, 0)),
            "hours": hours,
            "shift": {"start": dt.datetime.fromtimestamp(cur_shift).astimezone().isoformat(),
                      **shift_counts},
            "heat": {"columns": self.columns, "rows": self.rows,
                     "counts": self.heat if same_shift else {}},
            "latest": self.latest, "notices": self.notices[-5:],
        }
