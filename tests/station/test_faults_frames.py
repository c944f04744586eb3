"""Fault injection: every part is judged on a frame captured after its trigger, or is an error.

Real parts: a station (in process, or a ``station run`` child process) on loopback ZeroMQ, the real
Inspector on a recipe of the synthetic line, LiveCamera playing an image sequence or reading a
real ffmpeg MJPEG/HTTP stream that is stalled (SIGSTOP) and killed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from camera.files import FilesCamera
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe
from station.bench.events import StationClient, StationProcess, free_ports, write_config
from station.build import build_daemon
from station.config import load_config
from station.demo.line import write_part_frames
from station.events import parse_iso

from support.faults import with_sections
from support.stream import MjpegServer, needs_ffmpeg


class _SlowLine:
    """The real Inspector taking at least ``seconds`` per part, as a heavy judge (a VLM) does:
    triggers queue up behind the part in hand."""

    def __init__(self, inner: Inspector, seconds: float) -> None:
        self.inner = inner
        self.recipe = inner.recipe
        self.model_name = None
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:  # everything else is the real Inspector's
        return getattr(self.inner, name)

    def inspect(self, frame: Any, part_id: str | None = None) -> Any:
        time.sleep(self.seconds)
        return self.inner.inspect(frame, part_id)


def test_burst_of_12_triggers_each_judged_on_the_first_frame_after_its_trigger(
        tmp_path: Path, recipe: Path) -> None:
    """12 triggers at once behind a slow judge: the last parts wait in the queue far longer than
    ``trigger.max_wait_ms``, yet each is judged on a frame captured just after its own trigger
    (not on the newest frame when it leaves the queue, which shows a later part)."""
    frames = write_part_frames(tmp_path / "frames", 16, seed=5, defect_every=0)
    cfg = with_sections(write_config(tmp_path / "station.yaml", recipe=recipe,
                                     state_dir=tmp_path / "state", camera=frames, fps=30,
                                     loop=True), trigger={"max_wait_ms": 1000})
    slow = _SlowLine(Inspector(Recipe.load(recipe)), 0.2)
    daemon = build_daemon(load_config(cfg), inspector=slow)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(daemon.run()), daemon=True)
    t.start()
    try:
        assert daemon.wait_ready(60)
        with StationClient(daemon.endpoints) as c:
            c.wait_live()
            ids = [f"burst-{i:02d}" for i in range(12)]
            assert all(c.trigger(p)["ok"] for p in ids)
            results = c.results(12, 90)
    finally:
        daemon.request_stop()
        t.join(30)
    assert rc == [0]
    assert [r["part_id"] for r in results] == ids
    for r in results:
        trig, shot = parse_iso(r["trigger_ts"]), parse_iso(r["frame_ts"])
        assert shot >= trig, r  # captured after the trigger arrived ...
        assert shot - trig <= 0.5, r  # ... the first such frame, not the one at dequeue time
        assert r["verdict"] == "pass", r
    assert results[-1]["timings_ms"]["queue"] > 1500  # it waited, its frame did not


def test_a_claim_gets_the_first_frame_after_its_trigger_not_the_newest(tmp_path: Path) -> None:
    """FilesCamera playing numbered parts at 20 fps: claims made at different moments each get
    the first frame played after them, even when taken long after newer frames came; a claim
    whose window passes with no frame (the camera closed) ends without one."""
    frames = write_part_frames(tmp_path / "frames", 40, seed=2, defect_every=0)
    cam = FilesCamera(frames, fps=20)
    cam.start()
    try:
        time.sleep(0.5)
        claims = []
        for _ in range(3):
            now = time.time()
            claims.append((now, cam.claim_frame(now, now + 1.0)))
            time.sleep(0.3)
        time.sleep(0.5)  # newer frames came meanwhile
        newest = cam.read_latest(1.0)
        got = [(t, c.wait(0.0)) for t, c in claims]
        for t, f in got:
            assert f is not None and t <= f.ts <= t + 0.5, (t, f and f.ts)
        seqs = [f.seq for _, f in got if f is not None]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3 and newest.seq > seqs[-1] + 3
    finally:
        cam.close()
    now = time.time()
    late = cam.claim_frame(now, now + 0.2)
    assert late.wait(1.0) is None and late.done


def _pump(c: StationClient, seconds: float, stream: list[tuple[str, dict[str, Any]]]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        msg = c.recv(0.1)
        if msg is not None:
            stream.append(msg)


def _result(c: StationClient, part_id: str, stream: list[tuple[str, dict[str, Any]]],
            timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for topic, ev in stream:
            if topic.startswith("insp.result.") and ev.get("part_id") == part_id:
                return ev
        _pump(c, 0.2, stream)
    raise AssertionError(f"no result for {part_id}")


def _wait_state(c: StationClient, state: str, stream: list[tuple[str, dict[str, Any]]],
                timeout: float, since: int | None = None) -> dict[str, Any]:
    """The first ``state`` status event from ``stream[since:]`` (default: from now on)."""
    end = time.monotonic() + timeout
    n = len(stream) if since is None else since
    while time.monotonic() < end:
        for topic, ev in stream[n:]:
            if topic == "insp.status" and ev["state"] == state:
                return ev
        n = len(stream)
        _pump(c, 0.2, stream)
    raise AssertionError(f"no {state} status")


@pytest.mark.slow
@needs_ffmpeg
def test_frozen_stream_gives_no_pass_from_buffered_frames(tmp_path: Path, recipe: Path) -> None:
    """A real ffmpeg MJPEG/HTTP stream.  The station is held (SIGSTOP: a swap storm, a long GC)
    while the stream keeps sending, so frames pile up in the socket buffers; the stream then
    freezes (ffmpeg SIGSTOPped) or dies (SIGKILL) and the station resumes with a trigger already
    waiting.  The buffered frames it now reads were captured before the trigger: the part gets
    an error (``stale_trigger`` / ``camera_down``), never a ``pass`` from one of them.  Also:
    ``ready`` is announced only once the camera delivers frames."""
    good = write_part_frames(tmp_path / "good", 8, seed=7, defect_every=0)
    server = MjpegServer(free_ports(1)[0], pattern=good, path="/cam.mjpg", quality=2)
    cfg = with_sections(write_config(tmp_path / "station.yaml", recipe=recipe,
                                     state_dir=tmp_path / "state", camera=server.url,
                                     read_timeout_s=1.5),
                        trigger={"max_wait_ms": 800})
    stream: list[tuple[str, dict[str, Any]]] = []
    try:
        # the camera is not there at start-up: no ready until it delivers frames
        with StationProcess(cfg, tmp_path / "state") as st, \
                StationClient(st.endpoints) as c:
            c.wait_live()
            status = c.status()
            assert status["state"] == "camera_down"
            _pump(c, 1.0, stream)
            assert not any(t == "insp.status" and ev["state"] == "ready" for t, ev in stream)
            server.start()
            _wait_state(c, "ready", stream, 20)
            states = [ev["state"] for t, ev in stream if t == "insp.status"]
            assert states.index("camera_up") < states.index("ready")

            for fault in ("stall", "kill"):
                assert c.trigger(f"{fault}-before")["ok"]
                before = _result(c, f"{fault}-before", stream)
                assert before["verdict"] == "pass", (before["reason"], before["timings_ms"])
                mark = len(stream)
                os.kill(st.pid, signal.SIGSTOP)
                time.sleep(2.5)  # ~37 frames sent meanwhile: the socket buffers fill up
                assert server.proc is not None
                if fault == "stall":
                    os.kill(server.proc.pid, signal.SIGSTOP)
                else:
                    server.stop()
                time.sleep(0.2)
                c.send("trigger", [f'{{"cmd": "trigger", "part_id": "{fault}-after"}}'.encode()])
                os.kill(st.pid, signal.SIGCONT)
                assert c.reply("trigger", 10)["ok"]
                after = _result(c, f"{fault}-after", stream)
                assert after["verdict"] == "error", after
                assert after["reason"].startswith(("stale_trigger", "camera_down")), after
                assert after["frame_ts"] is None
                if fault == "stall":
                    _wait_state(c, "camera_down", stream, 10, since=mark)
                    server.stop()  # SIGKILL ends the stopped ffmpeg
                    server.start()
                    _wait_state(c, "camera_up", stream, 20)
    finally:
        server.stop()
    for topic, ev in stream:
        if topic.startswith("insp.result.") and ev["frame_ts"] is not None:
            assert parse_iso(ev["frame_ts"]) >= parse_iso(ev["trigger_ts"])
