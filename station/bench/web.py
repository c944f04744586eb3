"""Does the operator page slow the inspection?  Trigger → result with browsers connected vs none.

A real station process (synthetic parts played by LiveCamera at 30 fps, as ``station bench
--events`` does) serves its page, a child process of the station; recording off, so the page's
images come from the station's in-memory ring over the private link and are encoded in the page
process (the heavier case).  Parts are triggered one
at a time at ``rate_hz`` through the event client library (trigger → result delivered), in
blocks that alternate between no browser and ``clients`` browsers, paired in the same run.  A
browser is an SSE connection to ``/api/events`` that, like the page, fetches the overlay and the
frame of every part it is told about (another process, at the lowest CPU priority: on a line the
browsers run on other machines).  Reports p50/p99 per condition and their ratios.

``python -m station.bench.web`` (or ``station bench --web``) prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from camera.synth import LineSpec
from station.bench.events import StationProcess, free_ports, summarize, write_config
from station.bench.machine import machine_info
from station.client import EventSubscriber, TriggerClient
from station.demo.line import build_demo_recipe, write_part_frames

_BROWSERS = textwrap.dedent("""
    import http.client, json, os, socket, sys, threading, urllib.parse
    # the browsers of a line run on other machines: here they take only CPU nobody else wants
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conns = []
    def browser(c):
        try:
            c.request("GET", "/api/events?backlog=50")
            r = c.getresponse()
            img = http.client.HTTPConnection(host, port)
            kind = None
            while True:
                line = r.readline()
                if not line:
                    return
                line = line.decode().rstrip("\\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "part":
                    part = json.loads(line[6:])
                    pid = urllib.parse.quote(part["part_id"], safe="")
                    for k in ("overlay", "frame"):
                        img.request("GET", f"/api/parts/{pid}/{k}.{part.get('image', 'png')}")
                        img.getresponse().read()
        except OSError:
            return
    for cmd in sys.stdin:  # "on": n browsers open the page; "off": they all close it
        if cmd.strip() == "on":
            for _ in range(n):
                c = http.client.HTTPConnection(host, port)
                conns.append(c)
                threading.Thread(target=browser, args=(c,), daemon=True).start()
        else:
            for c in conns:
                if c.sock is not None:
                    c.sock.shutdown(socket.SHUT_RDWR)
            conns.clear()
        print("done", flush=True)
""")


def _clients_now(base: str) -> int:
    with urllib.request.urlopen(base + "/api/status", timeout=5) as r:
        return int(json.loads(r.read())["web"]["clients"])


def bench_web(*, rounds: int = 30, block: int = 5, clients: int = 5, rate_hz: float = 10.0,
              size: tuple[int, int] = (640, 480), camera_fps: float = 30.0,
              workdir: str | Path | None = None) -> dict[str, Any]:
    """Trigger → result p50/p99 with ``clients`` SSE browsers vs none, alternating blocks of
    ``block`` parts for ``rounds`` rounds (each round: one block without, one with)."""
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(tmp.name if tmp else workdir)  # type: ignore[arg-type]
    load_before = os.getloadavg()[0]
    lat: dict[str, list[float]] = {"none": [], "browsers": []}
    # from the frame the part was judged on to its result here: trigger → result without the
    # wait for the camera's next frame (uniform over a frame period, and no business of the page)
    after_frame: dict[str, list[float]] = {"none": [], "browsers": []}
    stages: dict[str, dict[str, list[float]]] = {
        k: {"none": [], "browsers": []} for k in ("queue", "grab", "total")}
    try:
        recipe = build_demo_recipe(folder, LineSpec(size=size), n_train=8)
        frames = write_part_frames(folder / "frames", size=size)
        cfg_path = write_config(folder / "station.yaml", recipe=recipe.folder,
                                state_dir=folder / "state", station_id="bench-web",
                                camera=frames, fps=camera_fps, loop=True)
        cfg = json.loads(cfg_path.read_text())
        port = free_ports(1)[0]
        cfg["web"] = {"listen": f"127.0.0.1:{port}"}
        cfg_path.write_text(json.dumps(cfg))
        base = f"http://127.0.0.1:{port}"
        with StationProcess(cfg_path, folder / "state") as st, \
                EventSubscriber(st.endpoints["pub"], topics=("insp.result.",)) as sub, \
                TriggerClient(st.endpoints["trigger"], timeout=5.0, retries=0) as tc:
            if not sub.wait_connected(10.0):
                raise RuntimeError("no heartbeat from the station")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    _clients_now(base)
                    break
                except OSError:
                    time.sleep(0.1)
            # the browsers of a line run on other machines: here they share the VM, in one
            # process at the lowest CPU priority (SCHED_IDLE), opened and closed between blocks
            browsers = subprocess.Popen([sys.executable, "-c", _BROWSERS,
                                         "127.0.0.1", str(port), str(clients)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert browsers.stdin is not None and browsers.stdout is not None

            def switch(on: bool) -> None:
                browsers.stdin.write("on\n" if on else "off\n")  # type: ignore[union-attr]
                browsers.stdin.flush()  # type: ignore[union-attr]
                browsers.stdout.readline()  # type: ignore[union-attr]
                want = clients if on else 0
                t_end = time.monotonic() + 10
                while _clients_now(base) != want and time.monotonic() < t_end:
                    sub.poll(0.05)  # keep taking heartbeats (else: "station down")

            n = 0
            try:
                for r in range(rounds):
                    for cond in ("none", "browsers") if r % 2 == 0 else ("browsers", "none"):
                        switch(cond == "browsers")
                        for _ in range(block):
                            n += 1
                            t_next = time.monotonic() + 1.0 / rate_hz
                            t0 = time.monotonic_ns()
                            out = tc.trigger_and_wait(f"web-bench-{n:05d}", 10.0, sub)
                            t1 = time.monotonic_ns()
                            received = time.time()
                            if out.event is None:
                                raise RuntimeError(f"no result for part {n}: {out.why}")
                            if isinstance(out.event.get("frame_ts"), str):  # ISO 8601, ms
                                shot = datetime.fromisoformat(out.event["frame_ts"]).timestamp()
                                after_frame[cond].append((received - shot) * 1e3)
                            sub.poll(0.0)
                            lat[cond].append((t1 - t0) / 1e6)
                            for k, v in stages.items():
                                ms = out.event["timings_ms"].get(k)
                                if isinstance(ms, (int, float)):
                                    v[cond].append(float(ms))
                            time.sleep(max(0.0, t_next - time.monotonic()))
            finally:
                browsers.kill()
                browsers.wait(10)
    finally:
        if tmp is not None:
            tmp.cleanup()
    none, with_b = summarize(lat["none"]), summarize(lat["browsers"])
    return {
        "parts": sum(len(v) for v in lat.values()), "rounds": rounds, "block": block,
        "browsers": clients, "rate_hz": rate_hz, "frame": list(size), "camera_fps": camera_fps,
        "trigger_to_result": {"none": none, "browsers": with_b},
        "frame_to_result": {c: summarize(v) for c, v in after_frame.items()},
        # the station's own breakdown: trigger queue, frame wait (first frame after the
        # trigger), pipeline total
        "station_ms": {k: {c: summarize(v) for c, v in by.items()} for k, by in stages.items()},
        "ratio_p50": round(with_b["p50_ms"] / none["p50_ms"], 3),
        "ratio_p99": round(with_b["p99_ms"] / none["p99_ms"], 3),
        # other work on the machine (1-min load average before and after the run)
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        **machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m station.bench.web [--rounds N] [--block N] [--clients N]``: JSON figures."""
    ap = argparse.ArgumentParser(prog="station.bench.web", description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--rate", type=float, default=10.0)
    a = ap.parse_args(argv)
    print(json.dumps(bench_web(rounds=a.rounds, block=a.block, clients=a.clients,
                               rate_hz=a.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
