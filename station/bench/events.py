"""Event-path benchmarks, and the station-process helpers they (and the daemon tests) use.

The client side is the event client library (:mod:`station.client`); :class:`StationClient`
only adds the raw wire access tests need.

* :func:`bench_pubsub` — publish → receive latency on loopback: an :class:`EventPublisher` with a
  real fsync'd journal in this process, a subscriber in another process.  Two figures per event:
  ``publish`` (from the ``publish()`` call, journal fsync included, to the subscriber) and
  ``wire`` (from the PUB socket send to the subscriber).
* :func:`bench_trigger` — trigger → result latency of a real station process (synthetic camera,
  metric judge) measured by a client on loopback: DEALER send → result received on SUB.

``python -m station.bench.events`` prints both as JSON.  Clocks: ``time.monotonic_ns`` (the
system-wide CLOCK_MONOTONIC), comparable between processes on one host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from camera.synth import LineSpec
from pipeline.base.stats import percentile
from station.client import CatchupClient, EventSubscriber, TriggerClient
from station.demo.line import build_demo_recipe, write_part_frames
from station.events import EventPublisher, decode
from station.journal import Journal
from station.servers import make_pub

_ROOT = Path(__file__).resolve().parents[2]  # the repository (station/bench/events.py)


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) or 0.0


def summarize(values_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean (ms, rounded to µs) of a list of latencies."""
    if not values_ms:
        return {"n": 0}
    return {"n": len(values_ms), "p50_ms": round(_pct(values_ms, 50), 3),
            "p90_ms": round(_pct(values_ms, 90), 3), "p99_ms": round(_pct(values_ms, 99), 3),
            "max_ms": round(max(values_ms), 3),
            "mean_ms": round(sum(values_ms) / len(values_ms), 3)}


# ------------------------------------------------------------------------------ station helpers
def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports the kernel just handed out as free (bound to port 0, read back,
    released: another process could take one in between, which is good enough for tests)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_config(path: str | Path, *, recipe: str | Path, state_dir: str | Path,
                 mode: str = "trigger", camera: str = "synthetic", rate_hz: float = 2.0,
                 heartbeat_s: float = 1.0, trigger_queue: int = 16, fps: float | None = None,
                 loop: bool = False, read_timeout_s: float = 2.0,
                 recording_dir: str | Path | None = None, station_id: str = "bench-st1",
                 host: str = "127.0.0.1") -> Path:
    """A station YAML on three free loopback ports (also in ``<state_dir>/endpoints.json``
    once the station runs).  Fixed ports, so a restarted station is found where it was."""
    ports = free_ports(3, host)
    cfg = {
        "station": {"id": station_id, "state_dir": str(state_dir), "cache_dir": str(state_dir)},
        "recipe": str(recipe),
        "mode": mode,
        "free_run": {"rate_hz": rate_hz},
        "camera": {"source": camera, "fps": fps, "loop": loop, "read_timeout_s": read_timeout_s,
                   "open_timeout_s": 3.0, "reconnect": {"initial_s": 0.2, "max_s": 1.0}},
        "events": {"pub": f"tcp://{host}:{ports[0]}", "trigger": f"tcp://{host}:{ports[1]}",
                   "catchup": f"tcp://{host}:{ports[2]}", "heartbeat_s": heartbeat_s,
                   "trigger_queue": trigger_queue},
        "recording": {"enabled": recording_dir is not None,
                      "dir": str(recording_dir or Path(state_dir) / "recordings")},
        "policy": "any",
    }
    Path(path).write_text(json.dumps(cfg, indent=1) + "\n")  # JSON is YAML
    return Path(path)


class StationProcess:
    """``station run -c CONFIG`` as a child process; :meth:`start` waits until it is ready.

    Always use as a context manager (or call :meth:`kill`): the process is killed on exit.
    """

    def __init__(self, config: str | Path, state_dir: str | Path, *,
                 env: dict[str, str] | None = None, log: str | Path | None = None) -> None:
        self.config = Path(config)
        self.state_dir = Path(state_dir)
        path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.log_path = Path(log) if log else self.state_dir.parent / "station.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> StationProcess:
        """Start and wait for ``endpoints.json`` of this pid and a ``ready`` status."""
        ep_file = self.state_dir / "endpoints.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "station.cli", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, cwd=str(_ROOT))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"station exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                ep = json.loads(ep_file.read_text())
                if ep.get("pid") == self.proc.pid:
                    self.endpoints = ep
                    break
            time.sleep(0.05)
        else:
            self.kill()
            raise RuntimeError("station did not bind its sockets in time")
        with StationClient(self.endpoints, subscribe=False) as c:
            while time.monotonic() < deadline:
                st = c.status(timeout=2.0)
                if st.get("state") not in (None, "starting"):
                    return self
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("station did not become ready in time")

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Send a signal to the station."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def __enter__(self) -> StationProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class StationClient:
    """A bridge-like test probe: the raw SUB socket (tests look at the wire as it is), the event
    client library for trigger, status and catch-up, and raw DEALER frames for hostile requests.
    """

    def __init__(self, endpoints: dict[str, Any], *, subscribe: bool = True,
                 context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.endpoints = endpoints
        self.sub: zmq.Socket | None = None
        if subscribe:
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.setsockopt(zmq.RCVHWM, 0)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"insp.")
            self.sub.connect(endpoints["pub"])
        self._req: dict[str, zmq.Socket] = {}
        self._trigger: TriggerClient | None = None

    def close(self) -> None:
        """Close every socket."""
        if self.sub is not None:
            self.sub.close(0)
        for s in self._req.values():
            s.close(0)
        self._req.clear()
        if self._trigger is not None:
            self._trigger.close()

    def __enter__(self) -> StationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sock(self, which: str) -> zmq.Socket:
        s = self._req.get(which)
        if s is None:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.endpoints[which])
            self._req[which] = s
        return s

    def send(self, which: str, frames: list[bytes]) -> None:
        """Send raw frames (after the empty delimiter a REQ would add)."""
        self._sock(which).send_multipart([b"", *frames])

    def reply(self, which: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next reply to :meth:`send` on ``which``; TimeoutError if none."""
        s = self._sock(which)
        if not s.poll(timeout * 1000):
            raise TimeoutError(f"no reply on {which} within {timeout} s")
        return json.loads(s.recv_multipart()[-1])

    def request(self, which: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One raw JSON request/reply on ``trigger`` or ``catchup``."""
        self.send(which, [json.dumps(body).encode()])
        return self.reply(which, timeout)

    def _triggers(self) -> TriggerClient:
        if self._trigger is None:
            self._trigger = TriggerClient(self.endpoints["trigger"], retries=0,
                                          context=self.ctx)
        return self._trigger

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"cmd": "status"}`` on the trigger socket."""
        return self._triggers().status(timeout=timeout)

    def trigger(self, part_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """One trigger (no retry); returns the station's reply as it is."""
        return self._triggers().trigger(part_id, timeout=timeout).reply

    def catchup(self, since: int, timeout: float = 5.0, max_batches: int = 1000
                ) -> list[tuple[str, dict[str, Any]]]:
        """Every journaled event after ``since`` (following ``more``)."""
        with CatchupClient(self.endpoints["catchup"], timeout=timeout, retries=0,
                           max_batches=max_batches, context=self.ctx) as c:
            return list(c.fetch(since))

    def recv(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]] | None:
        """The next PUB message (topic, event) or None after ``timeout``."""
        assert self.sub is not None
        if not self.sub.poll(timeout * 1000):
            return None
        return decode(self.sub.recv_multipart())

    def wait_live(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for a heartbeat: the subscription is live from then on (ZeroMQ slow joiner)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg and msg[0] == "insp.heartbeat":
                return msg[1]
        raise TimeoutError("no heartbeat")

    def results(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """The next ``n`` result events (other topics skipped)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg and msg[0].startswith("insp.result."):
                out.append(msg[1])
        return out


@contextlib.contextmanager
def synthetic_station(workdir: str | Path, *, recipe: str | Path | None = None,
                      size: tuple[int, int] = (640, 480),
                      **config: Any) -> Iterator[StationProcess]:
    """A ready station process on the synthetic line in ``workdir`` (recipe built if not given).

    ``config`` goes to :func:`write_config`; ``camera="frames"`` plays pre-rendered parts through
    LiveCamera (``fps`` default 30, looped) instead of rendering each part on demand.
    """
    workdir = Path(workdir)
    if recipe is None:
        recipe = workdir / "recipe"
        if not (recipe / "recipe.yaml").is_file():
            build_demo_recipe(workdir, LineSpec(size=size), n_train=8)
    if config.get("camera") == "frames":
        config["camera"] = write_part_frames(workdir / "frames", size=size)
        config.setdefault("fps", 30.0)
        config.setdefault("loop", True)
    cfg = write_config(workdir / "station.yaml", recipe=recipe, state_dir=workdir / "state",
                       **config)
    with StationProcess(cfg, workdir / "state") as proc:
        yield proc


# ------------------------------------------------------------------------------ benchmarks
_SUBSCRIBER = textwrap.dedent("""
    import json, sys, time
    from station.client import Event, EventSubscriber
    sub = EventSubscriber(sys.argv[1], topics=("insp.result.",), down_after=3600)
    n = int(sys.argv[2])
    got = {}
    print("ready", flush=True)
    idle_until = time.monotonic() + 10
    while len(got) < n and time.monotonic() < idle_until:
        for item in sub.poll(0.5):
            if isinstance(item, Event) and item.seq is not None:
                got[item.seq] = time.monotonic_ns()
                idle_until = time.monotonic() + 10
    sub.close()
    print(json.dumps(got), flush=True)
""")


def bench_pubsub(n: int = 5000, *, rate_hz: float = 1000.0, fsync: bool = True,
                 state_dir: str | Path | None = None) -> dict[str, Any]:
    """Publish → delivery latency on loopback TCP: the subscriber is the event client library's
    :class:`~station.client.EventSubscriber` in a separate process.

    Events are result-sized (about 1 KB with defects and judges) and paced at ``rate_hz`` so the
    figure is latency, not queueing.  Returns ``{"publish": {...}, "wire": {...}, ...}`` with
    p50/p90/p99/max in ms.
    """
    tmp = tempfile.TemporaryDirectory() if state_dir is None else None
    folder = Path(tmp.name if tmp else state_dir)  # type: ignore[arg-type]
    ctx = zmq.Context()
    sock, ep = make_pub(ctx, "tcp://127.0.0.1:0")
    send_t: dict[int, int] = {}
    call_t: dict[int, int] = {}

    def send(frames: list[bytes]) -> None:
        if frames[0] != b"insp.heartbeat":
            send_t[json.loads(frames[1])["seq"]] = time.monotonic_ns()
        sock.send_multipart(frames)

    proc = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, ep, str(n)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    journal = Journal(folder / "journal", fsync=fsync)
    try:
        pub = EventPublisher(journal, station="bench", boot="bench", send=send)
        assert proc.stdout is not None
        proc.stdout.readline()
        # slow joiner: heartbeats until the subscriber's subscription has reached us
        time.sleep(0.3)
        for _ in range(5):
            pub.publish_heartbeat({"state": "ready"})
        payload = {
            "part_id": "", "verdict": "defect", "reason": None,
            "defects": [{"address": "X:3, Y:C", "column": "3", "row": "C", "mode": "bent",
                         "score": 12.5, "judge": "metric"}],
            "judges": {"metric": {"verdict": "defect", "reason": None, "max_score": 12.5,
                                  "cells": {f"X:{c}, Y:{r}": 1.0 for c in "123456789"
                                            for r in "UCD"}}},
            "timings_ms": {"align": 9.1, "nsoartc": 4.2, "cells": 0.4, "overlay": 1.1,
                           "total": 15.0}, "recipe": "0123456789ab", "model": None}
        period = 1e9 / rate_hz
        first_seq = journal.last_seq + 1
        t_next = time.monotonic_ns()
        for i in range(n):
            while time.monotonic_ns() < t_next:
                pass  # busy-wait: sleep() granularity would dominate at 1 kHz
            t_next += period
            payload["part_id"] = f"bench-{i:06d}"
            t0 = time.monotonic_ns()
            ev = pub.publish_result(payload)
            call_t[ev["seq"]] = t0
        out, _ = proc.communicate(timeout=60)
        recv = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        journal.close()
        sock.close(0)
        ctx.term()
        if tmp is not None:
            tmp.cleanup()
    seqs = range(first_seq, first_seq + n)
    publish = [(recv[s] - call_t[s]) / 1e6 for s in seqs if s in recv]
    wire = [(recv[s] - send_t[s]) / 1e6 for s in seqs if s in recv]
    return {"events": n, "received": len(publish), "rate_hz": rate_hz, "fsync": fsync,
            "publish": summarize(publish), "wire": summarize(wire)}


def bench_trigger(n: int = 200, *, workdir: str | Path | None = None, warmup: int = 10,
                  fps: float = 30.0, size: tuple[int, int] = (1280, 1024)) -> dict[str, Any]:
    """Trigger → result latency of a real station process on the metric path.

    The camera is LiveCamera playing pre-rendered synthetic parts at ``fps`` (the station waits
    for the first frame grabbed after the trigger, as with a real camera: up to one frame
    period).  One trigger at a time (a PLC with one part in the station), through the event
    client library: ``TriggerClient.trigger_and_wait`` (trigger → result delivered).  Also
    reports the station's own breakdown (queue, grab, pipeline total) and the latency without
    the frame wait.
    """
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(tmp.name if tmp else workdir)  # type: ignore[arg-type]
    try:
        with synthetic_station(folder, camera="frames", fps=fps, size=size) as st, \
                EventSubscriber(st.endpoints["pub"], topics=("insp.result.",)) as sub, \
                TriggerClient(st.endpoints["trigger"], timeout=5.0, retries=0) as tc:
            if not sub.wait_connected(10.0):
                raise RuntimeError("no heartbeat from the station")
            lat: list[float] = []
            no_wait: list[float] = []
            parts: dict[str, list[float]] = {"queue": [], "grab": [], "total": []}
            verdicts: dict[str, int] = {}
            for i in range(n + warmup):
                pid = f"bench-{i:05d}"
                t0 = time.monotonic_ns()
                out = tc.trigger_and_wait(pid, 10.0, sub)
                t1 = time.monotonic_ns()
                if out.event is None:
                    raise RuntimeError(f"no result for {pid}: {out.why}")
                sub.poll(0.0)  # drop what the wait met on the way
                if i < warmup:
                    continue
                res = out.event
                lat.append((t1 - t0) / 1e6)
                no_wait.append(lat[-1] - float(res["timings_ms"].get("grab") or 0.0))
                verdicts[res["verdict"]] = verdicts.get(res["verdict"], 0) + 1
                for k in parts:
                    v = res["timings_ms"].get(k)
                    if isinstance(v, (int, float)):
                        parts[k].append(float(v))
            st.signal(signal.SIGTERM)
            st.wait(30)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"parts": n, "frame": list(size), "camera_fps": fps,
            "trigger_to_result": summarize(lat),
            "trigger_to_result_without_frame_wait": summarize(no_wait), "verdicts": verdicts,
            "station_ms": {k: summarize(v) for k, v in parts.items()}}


def main(argv: list[str] | None = None) -> int:
    """``python -m station.bench.events [--events N] [--parts N]``: print the figures as JSON."""
    ap = argparse.ArgumentParser(prog="station.bench.events", description=__doc__)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--no-fsync", action="store_true")
    a = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if a.events > 0:
        out["pubsub"] = bench_pubsub(a.events, rate_hz=a.rate, fsync=not a.no_fsync)
        print(json.dumps({"pubsub": out["pubsub"]}), file=sys.stderr, flush=True)
    if a.parts > 0:
        out["trigger"] = bench_trigger(a.parts)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
