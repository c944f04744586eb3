"""``/metrics``: the station in the Prometheus text format (prometheus-client).

Counted by the page server from the events it receives (live and gap catch-up; the history
fetched at start is not counted again): ``station_parts_total{verdict}`` and the per-stage
latency histograms ``station_stage_latency_seconds{stage}`` (the result's ``timings_ms``:
align, nsoartc, cells, overlay, judges, total, queue, grab; ``latency`` = queue + grab + total).
Read from the last heartbeat at scrape time: heartbeat age, station up, queue depth, camera up,
model ok, journal lag (events journaled that this server has not received yet), disk free,
recorder drops and failures.  The bridges publish no heartbeat the station can see (they count
theirs into the PLC's registers), so there is no bridge metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from station.web.live import VERDICTS, LiveState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
STATES = ("starting", "ready", "camera_down", "degraded", "stopping")


class _HeartbeatCollector(Collector):
    """Gauges from the newest heartbeat, computed when Prometheus scrapes."""

    def __init__(self, state: LiveState, clients: Callable[[], int]) -> None:
        self.state = state
        self.clients = clients

    def collect(self) -> Iterator[Metric]:
        st = self.state
        hb: dict[str, Any] = st.heartbeat or {}
        age = st.heartbeat_age()

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], float(value))
                yield g

        yield from gauge("station_heartbeat_age_seconds",
                         "Seconds since the last heartbeat of the station arrived", age)
        yield from gauge("station_up", "1 while heartbeats arrive (none for 3 s: 0)",
                         0.0 if age is None or age > 3.0 else 1.0)
        yield from gauge("station_sse_clients", "Browsers connected to the live feed",
                         self.clients())
        if not hb:
            return
        state = GaugeMetricFamily("station_state", "1 for the station's current state",
                                  labels=["state"])
        for s in STATES:
            state.add_metric([s], 1.0 if hb.get("state") == s else 0.0)
        yield state
        yield from gauge("station_queue_depth", "Triggered parts waiting", _num(hb.get("queued")))
        cam, model = hb.get("camera") or {}, hb.get("model") or {}
        disk, rec = hb.get("disk") or {}, hb.get("recorder")
        yield from gauge("station_camera_up", "1 while the camera delivers frames",
                         _flag(cam.get("up")))
        yield from gauge("station_model_ok", "1 unless the station is degraded by model errors",
                         _flag(model.get("ok")))
        last = _num(hb.get("last_seq"))
        if last is not None:
            yield from gauge("station_last_seq", "Newest seq journaled by the station", last)
            yield from gauge("station_journal_lag_events",
                             "Events journaled by the station and not yet received here",
                             max(0.0, last - float(st.last_seq or 0)))
        yield from gauge("station_disk_free_bytes", "Free bytes where the journal is written",
                         _num(disk.get("free_bytes")))
        yield from gauge("station_disk_ok", "0 while the station cannot journal (disk full)",
                         _flag(disk.get("ok")))
        if isinstance(rec, dict):
            for key, doc in (("dropped", "Recordings dropped (writer queue full)"),
                             ("failures", "Recordings that could not be written")):
                v = _num(rec.get(key))
                if v is not None:
                    c = CounterMetricFamily(f"station_recorder_{key}", doc)
                    c.add_metric([], v)
                    yield c
            yield from gauge("station_recorder_ok", "1 when the last recording was written",
                             _flag(rec.get("ok")))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _flag(v: Any) -> float | None:
    return None if v is None else (1.0 if v else 0.0)


class StationMetrics:
    """The page server's Prometheus registry (its own, not the process-global one)."""

    def __init__(self, state: LiveState, clients: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.parts = Counter("station_parts", "Parts judged, by verdict", ["verdict"],
                             registry=self.registry)
        for v in VERDICTS:
            self.parts.labels(v)  # 0 until the first part, so the series exist
        self.latency = Histogram("station_stage_latency_seconds",
                                 "Per-stage latency of judged parts (the events' timings_ms)",
                                 ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_HeartbeatCollector(state, clients))

    def count(self, summary: dict[str, Any]) -> None:
        """Count one result (its page summary)."""
        verdict = summary.get("verdict")
        self.parts.labels(verdict if verdict in VERDICTS else "error").inc()
        timings = dict(summary.get("timings_ms") or {})
        if summary.get("latency_ms") is not None:
            timings["latency"] = summary["latency_ms"]
        for stage, ms in timings.items():
            if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
                self.latency.labels(str(stage)[:32]).observe(float(ms) / 1000.0)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
