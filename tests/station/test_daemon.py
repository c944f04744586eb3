"""The station daemon with real parts: station processes on loopback TCP, the real Inspector on a
recipe of the synthetic line, LiveCamera playing pre-rendered parts (or an ffmpeg HTTP stream),
real signals, a real sd_notify socket."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from camera.synthetic import LineSpec, SyntheticCamera
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe
from station.bench.events import StationClient, StationProcess, free_ports, write_config
from station.build import build_daemon, serve
from station.config import load_config
from station.daemon import StationDaemon
from station.demo.line import write_part_frames
from station.events import TOPIC_STATUS
from station.journal import decode_line
from station.notify import Notifier

from support.stream import FFMPEG, MjpegServer


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_part_frames(tmp_path_factory.mktemp("frames"), 16)


def journal_entries(state_dir: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """Every valid line of a station's journal, read straight from the files."""
    out = []
    for seg in sorted((state_dir / "journal").glob("events-*.log")):
        for line in seg.read_bytes().splitlines(keepends=True):
            e = decode_line(line)
            if e is not None:
                out.append((e.seq, e.topic, json.loads(e.json)))
    return out


def run_triggers(c: StationClient, ids: list[str], window: int = 4, timeout: float = 60.0
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Trigger ``ids`` keeping ``window`` parts in flight; returns (acks, results in order)."""
    acks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    sent = 0
    deadline = time.monotonic() + timeout
    while len(results) < len(ids) and time.monotonic() < deadline:
        while sent < len(ids) and sent - len(results) < window:
            acks.append(c.trigger(ids[sent]))
            sent += 1
        results += c.results(1, max(0.0, deadline - time.monotonic()))
    return acks, results


# ---------------------------------------------------------------------------------- acceptance
@pytest.mark.slow
def test_200_triggers_give_200_results_in_order(tmp_path: Path, recipe: Path, frames: str) -> None:
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state",
                       camera=frames, fps=60, loop=True)
    with StationProcess(cfg, tmp_path / "state") as st, StationClient(st.endpoints) as c:
        hb = c.wait_live()
        assert hb["state"] == "ready" and hb["camera"]["up"] is True
        ids = [f"part-{i:04d}" for i in range(200)]
        t0 = time.monotonic()
        acks, results = run_triggers(c, ids)
        elapsed = time.monotonic() - t0
        assert all(a["ok"] for a in acks) and [a["part_id"] for a in acks] == ids
        assert [r["part_id"] for r in results] == ids
        seqs = [r["seq"] for r in results]
        assert seqs == sorted(set(seqs))
        # a status event (drift, recipe version, camera) may take a seq between two results;
        # a seq never goes missing and no other part's result sits between them
        between = [(s, t, e) for s, t, e in journal_entries(tmp_path / "state")
                   if seqs[0] <= s <= seqs[-1] and s not in set(seqs)]
        assert len(between) == seqs[-1] - seqs[0] + 1 - 200
        assert all(t == TOPIC_STATUS for _, t, _ in between), between
        print("\nstatus events between results:", [(s, e.get("state"), e.get("reason"))
                                                  for s, _, e in between])
        for r in results:
            assert r["schema"] == "inspection-station.event.v1"
            assert r["station"] == "bench-st1" and r["boot"] == hb["boot"]
            assert r["verdict"] in ("pass", "defect") and r["recipe"]
            assert {"align", "nsoartc", "total", "queue", "grab"} <= set(r["timings_ms"])
        assert sum(r["verdict"] == "pass" for r in results) > 100
        st.signal(signal.SIGTERM)
        assert st.wait(20) == 0
    print(f"\n200 triggers in {elapsed:.1f} s")


@pytest.mark.slow
def test_kill_9_and_restart_reuse_no_seq_and_catch_up_returns_what_was_missed(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=state, camera=frames,
                       fps=60, loop=True)
    seen: dict[int, dict[str, Any]] = {}
    with StationProcess(cfg, state) as st:
        c = StationClient(st.endpoints)
        try:
            boot1 = c.wait_live()["boot"]
            _, results = run_triggers(c, [f"a-{i:03d}" for i in range(30)])
            assert len(results) == 30
            seen.update({r["seq"]: r for r in results})
            # the subscriber goes away; the line goes on; then the station dies mid-stream
            assert c.sub is not None
            c.sub.close(0)
            c.sub = None
            deadline = time.monotonic() + 1.0
            i = 0
            while time.monotonic() < deadline:
                # on a loaded machine the 16-deep queue may fill: "busy" is the station's answer
                ack = c.trigger(f"b-{i:03d}")
                assert ack["ok"] or ack["error"] == "busy", ack
                i += 1
                time.sleep(0.02)
            st.signal(signal.SIGKILL)
            st.wait(10)
        finally:
            c.close()
    on_disk = journal_entries(state)
    disk_seqs = [s for s, _, _ in on_disk]
    assert disk_seqs == list(range(1, disk_seqs[-1] + 1))  # torn tail (if any) ignored
    last_seen = max(seen)
    missed = {s: ev for s, _, ev in on_disk if s > last_seen}
    assert len(missed) >= 5  # results of the b-parts the subscriber did not see
    for s, ev in seen.items():
        assert [e for q, _, e in on_disk if q == s] == [ev]  # what was published is on disk

    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        hb = c.wait_live()
        assert hb["boot"] != boot1 and hb["last_seq"] > disk_seqs[-1]
        _, results = run_triggers(c, [f"c-{i:03d}" for i in range(10)])
        assert len(results) == 10 and min(r["seq"] for r in results) > disk_seqs[-1]
        caught = c.catchup(last_seen)
        cseqs = [ev["seq"] for _, ev in caught]
        assert cseqs == list(range(last_seen + 1, cseqs[-1] + 1))
        assert cseqs[-1] >= max(r["seq"] for r in results)
        by_seq = {ev["seq"]: ev for _, ev in caught}
        for s, ev in missed.items():
            assert by_seq[s] == ev  # every journaled event it missed, unchanged
        assert {ev["boot"] for ev in by_seq.values()} == {boot1, hb["boot"]}
        states = [ev["state"] for t, ev in caught if t == "insp.status"]
        assert "starting" in states and "ready" in states


def _hostile(i: int, socket_kind: str) -> list[bytes]:
    kinds = [
        [b"not json at all"], [b"\x00\xff\x10garbage"], [b"[1,2,3]"], [b'"str"'], [b"null"],
        [b"{}"], [b'{"cmd": 42}'], [b'{"cmd": "trigger", "part_id": 7}'],
        [b'{"cmd": "trigger", "part_id": ""}'],
        [b'{"cmd": "trigger", "part_id": "' + b"x" * 500 + b'"}'],
        [b'{"cmd": "trigger", "part_id": "a\\u0000b"}'], [b'{"cmd": "shutdown"}'],
        [b'{"cmd": "' + b"k" * 3000 + b'"}'], [b'{"since": -1}'], [b'{"since": "12"}'],
        [b'{"since": true}'], [b'{"since": 1.5}'], [b'{"since": 1, "limit": 0}'],
        [b"a", b"b", b"c"], [b"", b""], [b"x" * 70_000], [b"[" * 20_000 + b"]" * 20_000],
        [b'{"cmd": "trigger"', b'"part_id": "p"}'], [b"1" * 6000],
    ]
    frames = kinds[i % len(kinds)]
    if socket_kind == "catchup" and frames == [b"{}"]:
        return [b'{"cmd": "trigger", "part_id": "p"}']  # a trigger on the catch-up socket
    return frames


def test_1000_malformed_requests_to_each_router_change_nothing(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state",
                       camera=frames, fps=60, loop=True)
    with StationProcess(cfg, tmp_path / "state") as st, StationClient(st.endpoints) as c:
        c.wait_live()
        before = c.status()
        for which in ("trigger", "catchup"):
            for i in range(1000):
                c.send(which, _hostile(i, which))
            replies = [c.reply(which, 10.0) for _ in range(1000)]
            assert all(r["ok"] is False and isinstance(r["error"], str) for r in replies)
        # a frame above ZMQ_MAXMSGSIZE: that peer is dropped, nobody else notices
        with StationClient(st.endpoints, subscribe=False) as big:
            big.send("trigger", [b"x" * (2 * 1024 * 1024)])
            with pytest.raises(TimeoutError):
                big.reply("trigger", 0.5)
        after = c.status()
        assert st.proc is not None and st.proc.poll() is None
        assert after["seq"] == before["seq"] and after["parts"] == 0 and after["queued"] == 0
        assert c.results(1, 0.3) == []  # nothing was inspected or published
        assert c.trigger("good-1")["ok"]
        assert [r["part_id"] for r in c.results(1, 10)] == ["good-1"]
        assert c.catchup(before["seq"])[0][1]["part_id"] == "good-1"


def _collect_notify(name: str, stop: threading.Event, out: list[tuple[float, str]]) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(0.1)
    try:
        while not stop.is_set():
            try:
                out.append((time.monotonic(), s.recv(4096).decode()))
            except TimeoutError:
                continue
    finally:
        s.close()


def test_sigterm_finishes_parts_announces_stopping_and_exits_0_with_sd_notify(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    name = f"station-test-notify-{time.monotonic_ns()}"
    msgs: list[tuple[float, str]] = []
    stop = threading.Event()
    listener = threading.Thread(target=_collect_notify, args=(name, stop, msgs), daemon=True)
    listener.start()
    time.sleep(0.1)
    state = tmp_path / "state"
    rec_dir = tmp_path / "recordings"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=state, camera=frames,
                       fps=60, loop=True, recording_dir=rec_dir)
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"}
    try:
        with StationProcess(cfg, state, env=env) as st, StationClient(st.endpoints) as c:
            c.wait_live()
            time.sleep(1.0)  # long enough for several watchdog pings
            ids = [f"t-{i}" for i in range(6)]
            assert all(c.trigger(p)["ok"] for p in ids)
            st.signal(signal.SIGTERM)
            assert st.wait(20) == 0
    finally:
        stop.set()
        listener.join(5)
    texts = [m for _, m in msgs]
    assert texts[0].startswith("STATUS=starting")
    ready = [i for i, m in enumerate(texts) if m.startswith("READY=1")]
    assert ready and "STATUS=" in texts[ready[0]]
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert len(pings) >= 3 and max(b - a for a, b in itertools.pairwise(pings)) < 0.6
    assert any(m.startswith("STOPPING=1") for m in texts[ready[0]:])
    entries = journal_entries(state)
    results = {ev["part_id"]: ev for _, t, ev in entries if t.startswith("insp.result.")}
    assert set(ids) <= set(results)  # every acknowledged part got a verdict or an error
    for p in ids:
        assert results[p]["verdict"] in ("pass", "defect") or (
            results[p]["reason"] == "station_stopping")
    assert entries[-1][1] == "insp.status" and entries[-1][2]["state"] == "stopping"
    assert entries[-1][2]["reason"] == "SIGTERM"
    # the recorder kept each inspected part under the id the event names in "frame"
    recorded = [r for r in results.values() if r["reason"] != "station_stopping"]
    assert recorded
    for r in recorded:
        folder = rec_dir / r["frame"]
        assert (folder / "frame.png").is_file() and (folder / "overlay.png").is_file()
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["event"]["seq"] == r["seq"] and meta["event"]["part_id"] == r["part_id"]


def test_free_run_generates_part_ids_and_refuses_triggers(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state",
                       camera=frames, fps=30, loop=True, mode="free_run", rate_hz=10)
    with StationProcess(cfg, tmp_path / "state") as st, StationClient(st.endpoints) as c:
        c.wait_live()
        results = c.results(8, 10)
        assert len(results) == 8
        ids = [r["part_id"] for r in results]
        assert len(set(ids)) == 8 and all(p.startswith(results[0]["boot"]) for p in ids)
        seqs = [r["seq"] for r in results]
        assert seqs == list(range(seqs[0], seqs[0] + 8))
        reply = c.trigger("x")
        assert reply == {"ok": False, "error": "not in trigger mode (mode is free_run)"}
        st.signal(signal.SIGTERM)
        assert st.wait(20) == 0


def test_bad_recipe_exits_78_after_announcing_stopping(tmp_path: Path, recipe: Path,
                                                      frames: str) -> None:
    """The config passes, the recipe folder does not load (its golden image is gone): exit 78
    (systemd does not restart), and subscribers were told: ``starting`` then ``stopping`` with
    the reason, both journaled."""
    bad = tmp_path / "recipe"
    shutil.copytree(recipe, bad)
    (bad / "golden.png").unlink()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=bad, state_dir=state, camera=frames)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "station.cli", "run", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 78, proc.stderr
    states = [(ev["state"], ev["reason"]) for _, t, ev in journal_entries(state)
              if t == "insp.status"]
    assert [s_ for s_, _ in states] == ["starting", "stopping"]
    assert states[1][1].startswith("error: ")


# ---------------------------------------------------------------------------------- in-process
def _in_process(cfg_path: Path, **kw: Any) -> tuple[StationDaemon, threading.Thread, list[int]]:
    """The station of ``cfg_path`` built by station.build (``kw``: parts given pre-built)."""
    daemon = build_daemon(load_config(cfg_path), **kw)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(daemon.run()), daemon=True)
    t.start()
    assert daemon.wait_ready(30)
    return daemon, t, rc


def test_camera_outage_gives_errors_never_pass_and_recovers(tmp_path: Path, recipe: Path) -> None:
    """``station.build.serve`` with a pre-built inspector and a SyntheticCamera whose outage the
    test controls (the camera reports its health through the LiveSource callback)."""
    cfg = load_config(write_config(tmp_path / "station.yaml", recipe=recipe,
                                   state_dir=tmp_path / "state", heartbeat_s=0.1))
    cam = SyntheticCamera(seed=11, p_good=1.0)
    insp = Inspector(Recipe.load(recipe))
    ready: list[StationDaemon] = []
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(
        serve(cfg, inspector=insp, camera=cam, on_ready=ready.append)), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not ready and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon = ready[0]
    stream: list[tuple[str, dict[str, Any]]] = []
    try:
        with StationClient(daemon.endpoints) as c:
            c.wait_live()

            def parts(prefix: str) -> list[dict[str, Any]]:
                ids = [f"{prefix}-{i}" for i in range(3)]
                acks = [c.trigger(p) for p in ids]
                assert all(a["ok"] for a in acks)
                got: list[dict[str, Any]] = []
                end = time.monotonic() + 20
                while len(got) < 3 and time.monotonic() < end:
                    msg = c.recv(1.0)
                    if msg and msg[0] != "insp.heartbeat":
                        stream.append(msg)
                        if msg[0].startswith("insp.result."):
                            got.append(msg[1])
                assert [g["part_id"] for g in got] == ids
                return got

            def wait_state(state: str) -> None:
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    msg = c.recv(0.5)
                    if msg and msg[0] != "insp.heartbeat":
                        stream.append(msg)
                        if msg[0] == "insp.status" and msg[1]["state"] == state:
                            return
                raise AssertionError(f"no {state} status")

            up1 = parts("up1")
            assert all(r["verdict"] != "error" for r in up1), [r["reason"] for r in up1]
            cam.set_available(False, "cable pulled")
            wait_state("camera_down")
            down = parts("down")
            assert all(r["verdict"] == "error" and r["reason"].startswith("camera_down")
                       for r in down)
            assert c.status()["state"] == "camera_down"
            cam.set_available(True)
            wait_state("camera_up")
            assert all(r["verdict"] != "error" for r in parts("up2"))
    finally:
        daemon.request_stop()
        t.join(30)
    assert rc == [0]
    states = [(t_, ev.get("state"), ev.get("verdict")) for t_, ev in stream]
    i_down = states.index(("insp.status", "camera_down", None))
    i_up = states.index(("insp.status", "camera_up", None))
    assert all(v != "pass" for _, _, v in states[i_down:i_up])


def test_repeated_pipeline_errors_make_the_station_degraded_until_parts_pass(
        tmp_path: Path, recipe: Path) -> None:
    """Parts of another product (a 320×240 line against the 640×480 recipe) cannot be judged:
    after 3 errors in a row the station says ``degraded``; the right product brings it back."""
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state")
    cam = SyntheticCamera(LineSpec(size=(320, 240)), seed=3, p_good=1.0)
    daemon, t, rc = _in_process(cfg, camera=cam)
    try:
        with StationClient(daemon.endpoints) as c:
            c.wait_live()
            _, wrong = run_triggers(c, [f"w-{i}" for i in range(3)], timeout=30)
            assert [r["verdict"] for r in wrong] == ["error"] * 3
            assert not any(r["reason"].startswith("camera_down") for r in wrong)
            end = time.monotonic() + 5  # the status event follows the error results
            while c.status()["state"] != "degraded" and time.monotonic() < end:
                time.sleep(0.1)
            assert c.status()["state"] == "degraded"
            cam.spec = LineSpec()  # the line is switched back to the recipe's product
            _, right = run_triggers(c, [f"r-{i}" for i in range(2)], timeout=30)
            assert all(r["verdict"] != "error" for r in right)
            time.sleep(0.2)
            assert c.status()["state"] == "ready"
            events = c.catchup(0)
    finally:
        daemon.request_stop()
        t.join(30)
    assert rc == [0]
    states = [(ev["state"], ev["reason"]) for tp, ev in events if tp == "insp.status"]
    names = [s_ for s_, _ in states]
    assert names[:3] == ["starting", "camera_up", "ready"] and names[-1] == "ready", states
    degraded = [r for s_, r in states[3:-1] if s_ == "degraded"]
    assert degraded and set(names[3:-1]) == {"degraded"}, states
    # said as the errors came: 3 in a row, or (the drift component) the frame size at once
    assert any("3 errors in a row" in r or r == "frame_size" for r in degraded), states


class _Gate:
    """The real Inspector, except that the part named ``hang`` blocks until released: a pipeline
    stuck inside a judge, as far as the daemon can tell."""

    def __init__(self, inner: Inspector) -> None:
        self.inner = inner
        self.recipe = inner.recipe
        self.model_name = None
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:  # everything else is the real Inspector's
        return getattr(self.inner, name)

    def inspect(self, frame: Any, part_id: str | None = None) -> Any:
        if part_id == "hang":
            self.release.wait(20)
        return self.inner.inspect(frame, part_id)


def test_hung_pipeline_stops_the_watchdog_but_not_the_heartbeat(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(0.05)
    pings: list[float] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                if srv.recv(4096) == b"WATCHDOG=1":
                    pings.append(time.monotonic())
            except TimeoutError:
                pass

    def flush() -> None:
        srv.setblocking(False)
        try:
            while True:
                srv.recv(4096)
        except BlockingIOError:
            pass
        finally:
            srv.settimeout(0.05)

    gate = _Gate(Inspector(Recipe.load(recipe)))
    cfg_path = write_config(tmp_path / "station.yaml", recipe=recipe,
                            state_dir=tmp_path / "state", camera=frames, fps=60, loop=True,
                            heartbeat_s=0.2)
    notifier = Notifier({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    daemon, t, rc = _in_process(cfg_path, inspector=gate, notifier=notifier)
    try:
        with StationClient(daemon.endpoints) as c:
            c.wait_live()
            drain(0.6)
            assert len(pings) >= 3
            assert c.trigger("hang")["ok"]
            time.sleep(0.3)  # the part is in hand by now
            flush()  # pings still in the socket were sent before it hung
            n = len(pings)
            drain(1.2)
            hung_pings = len(pings) - n
            beats = []  # every heartbeat queued while the part hung (they kept coming)
            while (msg := c.recv(0.05)) is not None:
                if msg[0] == "insp.heartbeat":
                    beats.append(msg[1])
            assert len(beats) >= 5
            assert beats[-1]["in_hand_s"] is not None and beats[-1]["in_hand_s"] > 1.0
            gate.release.set()
            assert [r["part_id"] for r in c.results(1, 10)] == ["hang"]
            n = len(pings)
            drain(0.6)
            assert len(pings) - n >= 2
        assert hung_pings == 0
    finally:
        gate.release.set()
        daemon.request_stop()
        t.join(30)
        srv.close()
    assert rc == [0]


# ---------------------------------------------------------------------------------- live stream
@pytest.fixture
def good_frames(tmp_path: Path) -> str:
    return write_part_frames(tmp_path / "good", 8, seed=7, defect_every=0)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_live_stream_outage_through_the_daemon(tmp_path: Path, recipe: Path,
                                               good_frames: str) -> None:
    """ffmpeg MJPEG/HTTP stream → LiveCamera → daemon.  Stopping the server raises camera_down
    within 5 s, triggered parts are errors (never pass) while down, restarting brings
    camera_up and inspections back."""
    ff = MjpegServer(free_ports(1)[0], pattern=good_frames, path="/cam.mjpg", quality=2)
    ff.start()
    stream: list[tuple[float, str, dict[str, Any]]] = []
    try:
        cfg = write_config(tmp_path / "station.yaml", recipe=recipe,
                           state_dir=tmp_path / "state", camera=ff.url, read_timeout_s=1.0)
        with StationProcess(cfg, tmp_path / "state") as st, StationClient(st.endpoints) as c:
            c.wait_live()

            def pump(until: float, want: str | None = None) -> dict[str, Any] | None:
                while time.monotonic() < until:
                    msg = c.recv(0.2)
                    if msg and msg[0] != "insp.heartbeat":
                        stream.append((time.monotonic(), *msg))
                        if want and msg[0] == "insp.status" and msg[1]["state"] == want:
                            return msg[1]
                return None

            def parts(prefix: str) -> list[dict[str, Any]]:
                ids = [f"{prefix}-{i}" for i in range(4)]
                assert all(c.trigger(p)["ok"] for p in ids)
                n0 = len(stream)
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    got = [ev for _, t_, ev in stream[n0:] if t_.startswith("insp.result.")]
                    if len(got) >= 4:
                        return got
                    pump(time.monotonic() + 0.2)
                raise AssertionError("results missing")

            if not c.status()["camera"]["up"]:
                assert pump(time.monotonic() + 10, "camera_up")
            before = parts("up1")
            assert all(r["verdict"] != "error" for r in before)
            assert any(r["verdict"] == "pass" for r in before)
            t_stop = time.monotonic()
            ff.stop()
            assert pump(t_stop + 5, "camera_down") is not None
            t_down = stream[-1][0] - t_stop
            down = parts("down")
            assert all(r["verdict"] == "error" and r["reason"].startswith("camera_down")
                       for r in down)
            ff.start()
            assert pump(time.monotonic() + 15, "camera_up") is not None
            after = parts("up2")
            assert all(r["verdict"] != "error" for r in after)
    finally:
        ff.stop()
    kinds = [(t_, ev.get("state"), ev.get("verdict")) for _, t_, ev in stream]
    i_down = kinds.index(("insp.status", "camera_down", None))
    i_up = max(i for i, k in enumerate(kinds) if k == ("insp.status", "camera_up", None))
    assert all(v != "pass" for _, _, v in kinds[i_down:i_up])
    print(f"\ncamera_down {t_down:.2f} s after the stream server stopped")


def test_trigger_section_is_typed_and_checked(tmp_path: Path, recipe: Path) -> None:
    """``trigger:`` (max_wait_ms, duplicate_window_h) goes through the typed loader: a value out
    of range or an unknown key is a ConfigError naming the file and line."""
    from pipeline.base.errors import ConfigError

    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state")
    data = json.loads(cfg.read_text())
    assert load_config(cfg).trigger.max_wait_ms == 1000  # the default
    for section, problem in [({"max_wait_ms": 250, "duplicate_window_h": 1}, None),
                             ({"max_wait_ms": 0}, "max_wait_ms"),
                             ({"duplicate_window_h": -1}, "duplicate_window_h"),
                             ({"max_wait": 5}, "max_wait")]:
        cfg.write_text(json.dumps({**data, "trigger": section}, indent=1) + "\n")
        if problem is None:
            t = load_config(cfg).trigger
            assert (t.max_wait_ms, t.duplicate_window_h) == (250, 1)
            continue
        with pytest.raises(ConfigError) as err:
            load_config(cfg)
        assert f"{cfg}:" in str(err.value) and problem in str(err.value)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    # in-process daemons must have stopped their request threads
    left = [t for t in threading.enumerate() if t not in before and t.name == "station-requests"]
    assert not left


def test_a_native_fatal_breakpoint_dumps_every_thread_then_ends_the_process() -> None:
    """GLib ends a fatal error (in Aravis's threads too) with SIGTRAP: the station's stderr (the
    journal) gets every thread's Python stack, and the process still dies of the signal."""
    code = ("import os, signal, threading\n"
            "from station.build import enable_crash_dumps\n"
            "enable_crash_dumps()\n"
            "threading.Thread(target=threading.Event().wait, name='grabber', daemon=True).start()\n"
            "os.kill(os.getpid(), signal.SIGTRAP)\n"
            "print('survived')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGTRAP, (p.returncode, p.stderr[-2000:])
    assert "survived" not in p.stdout
    assert "Current thread" in p.stderr and p.stderr.count("most recent call first") >= 2
