"""``station watch``: per-part lines, gap warning + automatic catch-up, heartbeat loss, summary."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_client import MiniStation  # the daemon's own event parts, no camera

from pipeline.base.stats import percentile
from station.bench.events import StationProcess, write_config
from station.demo.line import build_demo_recipe, write_part_frames
from station.watch import Watcher, derive_catchup

ROOT = Path(__file__).resolve().parents[2]


def test_helpers() -> None:
    assert derive_catchup("tcp://10.0.0.5:5556") == "tcp://10.0.0.5:5557"
    assert derive_catchup("ipc:///run/st.pub") is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 50) is None


def test_gap_is_reported_and_caught_up_in_order(tmp_path: Path) -> None:
    st = MiniStation(tmp_path / "journal")
    out = io.StringIO()
    w = Watcher(st.pub_ep, out=out, color=False, down_after=3.0)
    stop = threading.Event()
    t = threading.Thread(target=w.run, kwargs={"stop": stop}, daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 5
        while "connected" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "connected to mini" in out.getvalue()
        st.result("p1")
        st.result("p2", "defect", defects=[{"address": "X:3, Y:C"}, {"address": "X:4, Y:U"}])
        time.sleep(0.2)
        st.live = False  # these three are journaled but never reach the subscriber
        st.result("p3")
        st.result("p4", "error", reason="camera_down: cable")
        st.publisher.publish_status("camera_down", "cable")
        st.live = True
        st.result("p5")
        deadline = time.monotonic() + 5
        while "p5" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
        st.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert any("seq gap: missed seq 3..5 (3)" in x for x in lines), text
    order = [next(i for i, x in enumerate(lines) if f"  {p}" in x) for p in
             ("p1", "p2", "p3", "p4", "p5")]
    assert order == sorted(order)  # caught-up parts printed before the live one
    p2 = lines[order[1]]
    assert "DEFECT" in p2 and "X:3, Y:C; X:4, Y:U" in p2 and "14.0 ms" in p2 and "#2" in p2
    assert "(caught up)" in lines[order[2]] and "ERROR" in lines[order[3]]
    assert "camera_down: cable" in lines[order[3]]
    assert any("-- camera_down: cable" in x and "(caught up)" in x for x in lines)
    s = w.summary
    assert (s.parts, s.gaps, s.missed, s.recovered, s.lost) == (5, 1, 3, 3, 0)
    assert s.seqs == [1, 2, 3, 4, 5, 6] and s.counts == {"pass": 3, "defect": 1, "error": 1}
    assert "watch summary" in lines[-1] and "5 parts: 3 pass, 1 defect, 1 error" in lines[-1]
    assert "\x1b[" not in text  # no colour when not asked


def test_colour_on_a_terminal_and_heartbeat_ahead_triggers_catch_up(tmp_path: Path) -> None:
    st = MiniStation(tmp_path / "journal")
    for i in range(3):
        st.result(f"old-{i}")  # before the watcher came: not news
    out = io.StringIO()
    w = Watcher(st.pub_ep, out=out, color=True)
    stop = threading.Event()
    t = threading.Thread(target=w.run, kwargs={"stop": stop}, daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 5
        while "connected" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        st.live = False
        st.result("lost-in-transit", "defect", defects=[{"address": "X:1, Y:D"}])
        st.live = True  # nothing else follows: only the next heartbeat tells of it
        deadline = time.monotonic() + 5
        while "lost-in-transit" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(5)
        st.close()
    text = out.getvalue()
    assert "heartbeat is ahead: missed seq 4..4" in text
    assert "\x1b[1;31mDEFECT" in text and "old-" not in text
    assert w.summary.recovered == 1


@pytest.mark.slow
def test_watch_reports_station_death_within_3_s(tmp_path: Path) -> None:
    """``station watch`` as its operators run it, against a station process that is killed -9."""
    recipe = build_demo_recipe(tmp_path, n_train=8).folder
    frames = write_part_frames(tmp_path / "frames", 4)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=state,
                       camera=frames, fps=30, loop=True, mode="free_run", rate_hz=5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with StationProcess(cfg, state) as st:
        watch = subprocess.Popen(
            [sys.executable, "-m", "station.cli", "watch", st.endpoints["pub"]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        lines: list[tuple[float, str]] = []

        def reader() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                lines.append((time.monotonic(), line.rstrip("\n")))

        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        try:
            deadline = time.monotonic() + 20
            while sum(" PASS " in x or " DEFECT " in x for _, x in lines) < 3:
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
            t_kill = time.monotonic()
            st.signal(signal.SIGKILL)
            st.wait(10)
            deadline = t_kill + 6
            down = None
            while down is None and time.monotonic() < deadline:
                down = next((t for t, x in lines if "STATION DOWN" in x), None)
                time.sleep(0.01)
            assert down is not None, lines
            detect = down - t_kill
            watch.send_signal(signal.SIGTERM)
            watch.wait(10)
            rt.join(5)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait(5)
    print(f"\nheartbeat loss reported {detect:.2f} s after kill -9")
    assert detect <= 3.2  # ≤ 3 s after the last heartbeat, itself before the death
    assert watch.returncode == 0
    assert "watch summary" in lines[-1][1] and "heartbeat losses 1" in lines[-1][1]
    assert "\x1b[" not in "".join(x for _, x in lines)  # a pipe is not a terminal


def test_json_lines_on_stdout_people_on_stderr_and_full_part_ids(tmp_path: Path) -> None:
    st = MiniStation(tmp_path / "journal")
    long_id = "LINE1-2026-12-01T20:15:03.123Z-tray-0042-slot-17-" + "x" * 40
    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    jw = Watcher(st.pub_ep, out=out, err=err, color=False, json_lines=True)
    hw_out = io.StringIO()
    hw = Watcher(st.pub_ep, out=hw_out, color=False)
    threads = [threading.Thread(target=w.run, kwargs={"stop": stop}, daemon=True)
               for w in (jw, hw)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while not ("connected" in err.getvalue() and "connected" in hw_out.getvalue()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        st.result(long_id, "defect", defects=[{"address": "X:9, Y:D"}])
        while long_id not in hw_out.getvalue() or long_id not in out.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        st.close()
    objs = [json.loads(line) for line in out.getvalue().splitlines()]  # JSON only, each line
    assert {o["topic"] for o in objs} >= {"insp.heartbeat", "insp.result.defect"}
    assert any(o["event"].get("part_id") == long_id for o in objs)
    assert "connected to mini" in err.getvalue() and "watch summary" in err.getvalue()
    line = next(x for x in hw_out.getvalue().splitlines() if long_id in x)
    assert line.endswith(f"{long_id}  X:9, Y:D") and "DEFECT" in line  # never cut


@pytest.mark.parametrize("args", [["--count", "0"], ["--duration", "0.3"]])
def test_watch_ends_on_count_or_duration_with_a_summary(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "station.cli", "watch",
                           "tcp://127.0.0.1:9", *args], capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0 and "watch summary: " in proc.stdout


def test_watch_json_keeps_stdout_for_json_and_key_files_are_checked(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "station.cli", "watch", "tcp://127.0.0.1:9"]
    proc = subprocess.run([*cmd, "--json", "--duration", "0.3"], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 0 and proc.stdout == "" and "watch summary: " in proc.stderr
    proc = subprocess.run([*cmd, "--client-key", str(tmp_path / "none.key_secret"),
                           "--server-key", str(tmp_path / "st.key")], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 78 and "none.key_secret: no such key file" in proc.stderr
