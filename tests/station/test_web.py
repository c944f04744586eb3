"""The operator page and /metrics: a real station process serving the page from its own process,
driven in Debian's headless Chromium through Playwright; ``station web`` as a process of its own;
the in-memory image ring on a real aiohttp server; hostile requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.recipe import Recipe
from station.bench.events import StationProcess, free_ports, write_config
from station.client import EventSubscriber, TriggerClient
from station.web.ring import ImageRing
from station.web.server import WebOptions, WebServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
HOSTILE = [  # (path, statuses it may get): never a 500, never a traceback, never a file
    ("/api/parts?limit=-1", {400}), ("/api/parts?limit=abc", {400}),
    ("/api/parts?limit=0", {400}), ("/api/parts?limit=99999999999", {400}),
    ("/api/parts?verdict=../../x", {400}), ("/api/events?since=-5", {400}),
    ("/api/events?since=1e9", {400}),
    ("/api/parts/..%2F..%2F..%2Fetc%2Fpasswd/overlay.png", {400, 404}),
    ("/api/parts/%2e%2e/overlay.png", {400, 404}),
    ("/api/parts/../../etc/passwd", {404}), ("/api/parts/P%00x/overlay.png", {400}),
    ("/api/parts/" + "x" * 129 + "/overlay.png", {400}),
    ("/api/parts/nope/overlay.png", {404}), ("/api/parts/P1/secrets.png", {404}),
    ("/api/parts/P1/overlay.gif", {404}), ("/api/parts/P1/overlay.png.jpg", {404}),
    ("/static/..%2Fserver.py", {404}), ("/static/../live.py", {404}),
]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (urllib would normalise ``..``)."""
    host, port = base.split("//")[1].strip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def sse_parts(base: str, headers: dict[str, str], n: int, timeout: float = 10.0) -> list[dict]:
    """The first ``n`` ``part`` events of /api/events."""
    host, port = base.split("//")[1].strip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    out: list[dict] = []
    try:
        c.request("GET", "/api/events?backlog=0", headers=headers)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream")
        kind = None
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            line = r.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "part":
                out.append(json.loads(line[6:]))
    finally:
        c.close()
    return out


def check_hostile(base: str) -> None:
    for path, allowed in HOSTILE:
        status, body = raw_get(base, path)
        assert status in allowed, (path, status, body[:200])
        assert b"Traceback" not in body and b"root:" not in body, path


@contextlib.contextmanager
def page_station(tmp_path: Path, recipe: Recipe, *, recording: bool = True
                 ) -> Iterator[tuple[StationProcess, str]]:
    """A station process (synthetic line) serving its page on a free port, once the page says
    ready; with ``recording`` off the page's images come from the station's in-memory ring."""
    assert recipe.folder is not None
    cfg_path = write_config(tmp_path / "station.yaml", recipe=recipe.folder,
                            state_dir=tmp_path / "state",
                            recording_dir=tmp_path / "rec" if recording else None,
                            station_id="web-st1")
    cfg = json.loads(cfg_path.read_text())
    port = free_ports(1)[0]
    cfg["web"] = {"listen": f"127.0.0.1:{port}"}
    cfg_path.write_text(json.dumps(cfg))
    with StationProcess(cfg_path, tmp_path / "state") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_page_ready(base)
        yield proc, base


def wait_page_ready(base: str, timeout: float = 20.0) -> None:
    """Wait until the page at ``base`` says its station is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the page starts beside the station
        try:
            if json.loads(get(base + "/api/status")[1]).get("ready"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail("the operator page did not say ready")


@pytest.fixture()
def station(tmp_path: Path, synthetic_recipe: Recipe) -> Iterator[tuple[StationProcess, str]]:
    """A station process (synthetic line, recording on) serving its page on a free port."""
    with page_station(tmp_path, synthetic_recipe) as served:
        yield served


def trigger_parts(endpoints: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` parts, one at a time (trigger, wait for the result); returns the result events."""
    out = []
    with EventSubscriber(endpoints["pub"], topics=("insp.result.",)) as sub, \
            TriggerClient(endpoints["trigger"], timeout=5.0, retries=0) as tc:
        assert sub.wait_connected(10.0)
        for i in range(n):
            res = tc.trigger_and_wait(f"LINE1/2026-12-01/part {i:03d} ünïcode-long-id-{i}",
                                      10.0, sub)
            assert res.event is not None, res.why
            out.append(res.event)
    return out


@pytest.mark.slow
def test_page_in_chromium_metrics_station_web_and_station_down(
        station: tuple[StationProcess, str], tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    from playwright.sync_api import sync_playwright

    proc, base = station
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/")
            # a function, not an expression: Playwright polls an expression with eval, which the
            # page's CSP (script-src 'self') refuses once the first check is false
            page.wait_for_function("() => document.getElementById('state').textContent === 'ready'",
                                   timeout=10_000)
            assert page.is_hidden("#down-banner")
            results = trigger_parts(proc.endpoints, 5)
            last = results[-1]
            # the latest part: full id, verdict, overlay image (from the recorder's folder)
            page.wait_for_function(
                "id => document.getElementById('latest-part-id').textContent === id",
                arg=last["part_id"], timeout=10_000)
            assert page.text_content("#latest-verdict") == last["verdict"]
            page.wait_for_function(
                "() => { const i = document.getElementById('latest-overlay');"
                " return i.complete && i.naturalWidth > 0; }", timeout=10_000)
            feed = page.locator("#feed .pid").all_text_contents()
            assert feed[:5] == [r["part_id"] for r in reversed(results)]  # newest first, full
            shots = Path(os.environ.get("STATION_WEB_SCREENSHOTS") or tmp_path)
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "page-1280x800.png"))
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(base + "/")
            phone.wait_for_function(
                "id => document.getElementById('latest-part-id').textContent === id",
                arg=last["part_id"], timeout=10_000)
            phone.wait_for_timeout(500)  # images
            phone.screenshot(path=str(shots / "page-phone-390x844.png"), full_page=True)
            phone.close()

            # /metrics counts every part; /api/status says ready
            status, body = get(base + "/metrics")
            assert status == 200
            fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
            parts = {s.labels["verdict"]: s.value for s in fams["station_parts"].samples
                     if s.name == "station_parts_total"}
            want = {v: float(sum(r["verdict"] == v for r in results))
                    for v in ("pass", "defect", "error")}
            assert parts == want
            lat = [s for s in fams["station_stage_latency_seconds"].samples
                   if s.name.endswith("_count") and s.labels["stage"] == "total"]
            assert lat and lat[0].value == 5
            for name in ("station_up", "station_camera_up", "station_model_ok",
                         "station_queue_depth", "station_disk_free_bytes",
                         "station_journal_lag_events", "station_recorder_dropped"):
                assert name in fams, name
            st = json.loads(get(base + "/api/status")[1])
            assert st["ready"] is True and st["state"] == "ready"
            assert sum(st["shift"][v] for v in ("pass", "defect", "error")) == 5
            api = json.loads(get(base + "/api/parts?limit=3")[1])["parts"]
            assert [p["part_id"] for p in api] == [r["part_id"] for r in results[:-4:-1]]
            check_hostile(base)
            # a browser that reconnects with Last-Event-ID gets exactly what it missed
            missed = sse_parts(base, {"Last-Event-ID": str(results[1]["seq"])}, 3)
            assert [p["seq"] for p in missed] == [r["seq"] for r in results[2:]]

            # `station web` as a process of its own, remembering only 2 results: a reload
            # from seq 0 is filled from the station's journal; images from --recordings
            web_port = free_ports(1)[0]
            web_base = f"http://127.0.0.1:{web_port}"
            web = subprocess.Popen(
                [sys.executable, "-m", "station.cli", "web", "--station",
                 proc.endpoints["pub"], "--recordings", str(tmp_path / "rec"), "--history", "2",
                 "--listen", f"127.0.0.1:{web_port}"], stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 20
                api = []
                while time.monotonic() < deadline and len(api) < 2:
                    time.sleep(0.2)
                    try:
                        api = json.loads(get(web_base + "/api/parts?limit=10")[1])["parts"]
                    except (OSError, ValueError):
                        continue
                if web.poll() is not None:
                    pytest.fail(f"station web exited {web.returncode}: {web.stderr.read()}")
                assert [p["part_id"] for p in api] == [r["part_id"] for r in results[:-3:-1]]
                status, png = get(f"{web_base}/api/parts/"
                                  f"{urllib.request.quote(last['part_id'], safe='')}/overlay.png")
                assert status == 200
                assert png == (tmp_path / "rec" / last["frame"] / "overlay.png").read_bytes()
                caught = sse_parts(web_base, {"Last-Event-ID": "0"}, 5)
                assert [p["part_id"] for p in caught] == [r["part_id"] for r in results]

                # kill -9: the page server dies with the station; the browser says STATION DOWN
                # from the age of the last heartbeat it received
                proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                t_kill = time.time()
                page.wait_for_selector("#down-banner", state="visible", timeout=10_000)
                assert "STATION DOWN" in page.inner_text("#down-banner")
                # the page's own record (browser clock = this machine's clock, ms): down 3 s
                # after the last heartbeat it received, which came before the kill; so within
                # 3 s of the kill plus the page's 0.2 s check period (and up to 0.3 s more for
                # a browser timer on a loaded machine)
                down_at = float(page.get_attribute("body", "data-down-at") or 0) / 1000
                last_hb = float(page.get_attribute("body", "data-last-heartbeat-at") or 0) / 1000
                assert last_hb <= t_kill + 0.05, (last_hb, t_kill)
                assert 3.0 <= down_at - last_hb <= 3.5, down_at - last_hb
                assert down_at - t_kill <= 3.5, down_at - t_kill
                deadline = time.monotonic() + 3
                st = {}
                while time.monotonic() < deadline and not st.get("down"):
                    st = json.loads(get(web_base + "/api/status")[1])
                    time.sleep(0.2)
                assert st["down"] is True and st["ready"] is False
            finally:
                web.send_signal(signal.SIGTERM)
                try:
                    assert web.wait(10) == 0, web.stderr.read() if web.stderr else ""
                finally:
                    if web.poll() is None:
                        web.kill()
        finally:
            browser.close()


def test_unrecorded_images_come_from_the_in_memory_ring_and_bad_input_is_refused(
        tmp_path: Path) -> None:
    """No station at all: the ring is what the daemon hands over when nothing is recorded."""
    ring = ImageRing(2)
    overlay = np.zeros((40, 60, 3), np.uint8)
    overlay[10:20, 5:50] = (0, 255, 255)
    ring.put("P1", {"overlay": overlay, "frame": overlay[:, :, 0], "aligned": overlay})
    ring.put("P2", {"overlay": overlay})
    ring.put("P3", {"overlay": overlay})  # P1 falls out (size 2)
    assert ring.get("P1", "overlay") is None and len(ring) == 2
    port = free_ports(2)
    server = WebServer(WebOptions(pub=f"tcp://127.0.0.1:{port[1]}", catchup=None,
                                  listen=f"127.0.0.1:{port[0]}"), ring=ring)
    base = server.start().rstrip("/")
    try:
        status, png = get(base + "/api/parts/P3/overlay.png")
        assert status == 200
        back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, overlay)  # lossless
        status, jpg = get(base + "/api/parts/P3/overlay.jpg")  # what the page loads
        assert status == 200 and jpg[:2] == b"\xff\xd8"
        back = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_UNCHANGED)
        assert back.shape == overlay.shape
        assert np.abs(back.astype(int) - overlay).mean() < 3  # quality 85
        assert get(base + "/api/parts/P1/overlay.png")[0] == 404
        assert get(base + "/api/parts/P3/frame.png")[0] == 404
        check_hostile(base)
        status, page = get(base + "/")
        assert status == 200 and b"STATION DOWN" in page
        assert b"http://" not in page and b"https://" not in page  # no CDN
        st = json.loads(get(base + "/api/status")[1])
        assert st["ready"] is False and st["down"] is True  # no heartbeat ever
        assert get(base + "/metrics")[0] == 200
    finally:
        server.stop()


def test_station_web_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from station.cli import main

    for args, word in ((["--station", "tcp://127.0.0.1:99999"], "--station"),
                       (["--station", "tcp://127.0.0.1:5556", "--listen", "nowhere"],
                        "--listen"),
                       (["--station", "tcp://127.0.0.1:5556", "--listen", "127.0.0.1:70000"],
                        "--listen"),
                       (["--station", "tcp://127.0.0.1:5556", "--shifts", "25:00"], "--shifts")):
        assert main(["web", *args]) == 78
        err = capsys.readouterr().err
        assert word in err and "Traceback" not in err, err


def test_chromium_is_the_debian_package() -> None:
    """tests/run.sh installs chromium; the page test needs it (and no browser download)."""
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "chromium"], capture_output=True,
                       text=True)
    assert "install ok installed" in r.stdout


def test_web_config_section_errors_name_file_and_line(tmp_path: Path,
                                                      synthetic_recipe: Recipe) -> None:
    from pipeline.base.errors import ConfigError
    from station.config import load_config

    for body, word in (('web:\n  listen: "nowhere"\n', "web.listen"),
                       ('web:\n  listen: "127.0.0.1:8080"\n  port: 1\n', "web.port"),
                       ('web:\n  shifts: ["6am"]\n', "web.shifts")):
        path = tmp_path / "station.yaml"
        path.write_text(f"recipe: {synthetic_recipe.folder}\n{body}")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert word in str(err.value) and f"{path}:" in str(err.value), str(err.value)
    path.write_text(f'recipe: {synthetic_recipe.folder}\nweb:\n  listen: "127.0.0.1:8080"\n')
    assert load_config(path).web.enabled
    path.write_text(f"recipe: {synthetic_recipe.folder}\n")
    assert not load_config(path).web.enabled  # off unless configured


def test_yield_per_shift_and_heat_map_follow_the_events_time_stamps() -> None:
    import datetime as dt

    from station.web.live import LiveState, shift_start

    state = LiveState(shifts=["06:00", "14:00", "22:00"])
    today = dt.datetime.now().astimezone().replace(hour=13, minute=59, second=0, microsecond=0)

    def ev(seq: int, t: dt.datetime, verdict: str, cells: tuple[str, ...] = ()) -> dict:
        ts = t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return {"seq": seq, "ts": ts, "part_id": f"P{seq}", "verdict": verdict,
                "defects": [{"address": c, "score": 9.0, "judge": "metric"} for c in cells],
                "judges": {"metric": {"cells": {f"X:{x}, Y:{y}": 1.0 for y in "UD"
                                                for x in "123"}}},
                "timings_ms": {"queue": 1.0, "grab": 2.0, "total": 10.0}}

    state.add_result(ev(1, today, "defect", ("X:1, Y:U",)))        # morning shift
    state.add_result(ev(2, today + dt.timedelta(minutes=2), "defect", ("X:2, Y:D",)))
    state.add_result(ev(3, today + dt.timedelta(minutes=3), "pass"))
    assert state.shift_t == shift_start((today + dt.timedelta(minutes=2)).timestamp(),
                                        state.shifts)
    assert state.shift_counts == {"pass": 1, "defect": 1, "error": 0}
    assert state.heat == {"X:2, Y:D": 1}  # the morning shift's defect is not in this shift
    assert state.columns == ["1", "2", "3"] and state.rows == ["U", "D"]
    assert sum(sum(c.values()) for c in state.hours.values()) == 3
    assert state.latest is not None and state.latest["latency_ms"] == 13.0
    assert [p["seq"] for p in state.parts(2)] == [3, 2]
    assert [p["seq"] for p in state.parts(5, "defect")] == [2, 1]
    held, missing = state.after(1)
    assert [p["seq"] for p in held] == [2, 3] and missing is None


def test_demo_serve_turns_the_page_on_at_8080_unless_told_otherwise(
        tmp_path: Path, synthetic_recipe: Recipe) -> None:
    import argparse

    from camera.synth import LineSpec
    from pipeline.base.errors import ConfigError
    from station.demo_serve import demo_config

    def cfg(web_listen: str | None):
        args = argparse.Namespace(state=str(tmp_path / "state"), config=None, seed=1,
                                  policy="any", pub=None, trigger=None, catchup=None,
                                  web_listen=web_listen)
        return demo_config(args, synthetic_recipe, LineSpec())

    assert cfg(None).web.listen == "127.0.0.1:8080"
    assert cfg("0.0.0.0:9090").web.listen == "0.0.0.0:9090"
    assert not cfg("off").web.enabled
    with pytest.raises(ConfigError, match="--web-listen"):
        cfg("port-8080")


@pytest.mark.slow
def test_page_follows_a_curve_station_with_its_own_client_key(
        tmp_path: Path, synthetic_recipe: Recipe) -> None:
    from pipeline.base.errors import ConfigError
    from station.config import load_config
    from station.security import generate_keys

    generate_keys(tmp_path / "keys")                                 # the station's pair
    generate_keys(tmp_path / "keys" / "clients", name="web")         # the page's pair
    secret = tmp_path / "keys" / "web.key_secret"
    (tmp_path / "keys" / "clients" / "web.key_secret").rename(secret)
    assert synthetic_recipe.folder is not None
    cfg_path = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder,
                            state_dir=tmp_path / "state", station_id="web-curve")
    cfg = json.loads(cfg_path.read_text())
    port = free_ports(1)[0]
    cfg["security"] = {"curve": {"server_secret": str(tmp_path / "keys" / "station.key_secret"),
                                 "clients": str(tmp_path / "keys" / "clients")}}
    cfg["web"] = {"listen": f"127.0.0.1:{port}"}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"web\.client_key"):  # it could never connect
        load_config(cfg_path, check_paths=True)
    cfg["web"]["client_key"] = str(secret)
    cfg_path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "-c", str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        st: dict[str, Any] = {}
        while time.monotonic() < deadline and not st.get("ready"):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
            try:
                st = json.loads(get(f"http://127.0.0.1:{port}/api/status")[1])
            except (OSError, ValueError):
                continue
        assert st.get("ready") is True and st["station"] == "web-curve", st
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()


def page_processes(station_pid: int) -> list[int]:
    """The page processes (``station.web.process``) whose parent is ``station_pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == station_pid and b"station.web.process" in cmd:
            out.append(int(d.name))
    return out


def test_page_is_a_process_of_its_own_with_the_rings_images_restarted_and_ended_with_the_station(
        tmp_path: Path, synthetic_recipe: Recipe) -> None:
    """Recording off: the page process shows the station's in-memory images (over the private
    link); it runs at the lowest CPU priority; killed, it comes back while the station inspects
    on; it ends when the station ends."""
    with page_station(tmp_path, synthetic_recipe, recording=False) as (proc, base):
        assert proc.proc is not None
        station_pid = proc.proc.pid
        pages = page_processes(station_pid)
        assert len(pages) == 1
        # the lowest CPU priority: the page runs on what the inspection leaves
        assert os.sched_getscheduler(pages[0]) == os.SCHED_IDLE
        assert os.sched_getscheduler(station_pid) == os.SCHED_OTHER
        results = trigger_parts(proc.endpoints, 3)
        last = results[-1]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the page follows the feed a moment later
            parts = json.loads(get(base + "/api/parts?limit=3")[1])["parts"]
            if parts and parts[0]["part_id"] == last["part_id"]:
                break
            time.sleep(0.05)
        assert parts[0]["part_id"] == last["part_id"] and parts[0]["image"] == "jpg"
        pid = urllib.parse.quote(last["part_id"], safe="")
        status, jpg = get(f"{base}/api/parts/{pid}/overlay.jpg")
        assert status == 200 and jpg[:2] == b"\xff\xd8"
        overlay = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        status, png = get(f"{base}/api/parts/{pid}/frame.png")
        frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        # the camera's frame as the Inspector had it; the overlay adds the address margins
        assert status == 200 and frame.shape[:2] == (480, 640)
        assert overlay.shape[0] > 480 and overlay.shape[1] > 640
        # the page dies: the station inspects on and starts it again
        os.kill(pages[0], signal.SIGKILL)
        assert trigger_parts(proc.endpoints, 1)[0]["verdict"] in ("pass", "defect")
        wait_page_ready(base)
        again = page_processes(station_pid)
        assert len(again) == 1 and again != pages
        # the page comes back with the station's history (its journal), images of what the ring
        # still holds
        assert get(f"{base}/api/parts/{pid}/overlay.jpg")[0] == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    deadline = time.monotonic() + 5
    while Path(f"/proc/{again[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{again[0]}").exists() or b"zombie" in Path(
        f"/proc/{again[0]}/status").read_bytes()


def test_image_link_answers_the_page_and_closes_on_anything_else() -> None:
    """The station's side of the private link: what the ring holds, byte for byte; a request
    that is not one ends the link (the page then shows parts without images), never the
    station."""
    import socket

    from station.web.ring_link import RemoteRing, serve_ring

    ring = ImageRing(4)
    metric = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    ring.put("P1", {"overlay": np.full((30, 40, 3), 7, np.uint8), "metric": metric})
    ours, theirs = socket.socketpair()
    import threading

    t = threading.Thread(target=serve_ring, args=(ours, ring), daemon=True)
    t.start()
    remote = RemoteRing(theirs)
    got = remote.get("P1", "metric")
    assert got is not None and got.dtype == np.float32 and np.array_equal(got, metric)
    assert remote.get("P1", "frame") is None and remote.get("nope", "overlay") is None
    assert remote.get("P1", "../../etc/passwd") is None
    assert np.array_equal(remote.get("P1", "overlay"), ring.get("P1", "overlay"))
    theirs.sendall(b"\xff\xff\xff\xff" + b"x" * 64)  # a 4 GiB "request"
    t.join(5)
    assert not t.is_alive()
    assert remote.get("P1", "overlay") is None  # the link is gone: no image, no exception
    remote.close()
