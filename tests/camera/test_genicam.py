"""GenICam cameras through Aravis, against Aravis's fake GigE Vision camera
(``arv-fake-gv-camera-0.8`` from Debian's aravis-tools, bound to 127.0.0.1: the real GVCP/GVSP
protocols on loopback) and, for the hardware trigger, Aravis's simulated camera ``Fake_1`` (the
fake GigE Vision camera has no trigger line; the simulator fires its ``Line0`` at 25 Hz)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.registry import parse_camera
from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import load_yaml

from support.cli import station

FAKE_GV = shutil.which("arv-fake-gv-camera-0.8")
try:
    from camera.genicam import GenicamCamera, Region, load_aravis, to_uint8_image

    load_aravis()
    ARAVIS = ""
except Exception as exc:  # PyGObject or gir1.2-aravis-0.8 missing
    ARAVIS = str(exc)

pytestmark = [
    pytest.mark.skipif(FAKE_GV is None, reason="aravis-tools not installed (tests/run.sh "
                                               "installs it from Debian)"),
    pytest.mark.skipif(bool(ARAVIS), reason=f"Aravis not importable: {ARAVIS}"),
]

SERIAL = "GVT1"
DEVICE = f"Aravis-Fake-{SERIAL}"


def _gvcp_discover_serial(timeout: float = 0.1) -> str | None:
    """GVCP DISCOVERY_CMD to 127.0.0.1:3956; the serial number in the DISCOVERY_ACK, or None.
    (Aravis's own discovery waits a full second for every answer: this is a 1 ms readiness
    check.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(struct.pack(">BBHHH", 0x42, 0x11, 0x0002, 0, 1), ("127.0.0.1", 3956))
        try:
            data = s.recv(1024)
        except OSError:  # timeout, or ICMP port unreachable while nothing listens
            time.sleep(timeout)
            return None
    status, answer = struct.unpack(">HH", data[:4])
    if status != 0 or answer != 0x0003 or len(data) < 8 + 0xE8:
        return None
    return data[8 + 0xD8:8 + 0xE8].rstrip(b"\0").decode("ascii", "replace")


class FakeCamera:
    """``arv-fake-gv-camera-0.8 -i 127.0.0.1 -s SERIAL`` as a child process."""

    def __init__(self, serial: str = SERIAL) -> None:
        self.serial = serial
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        assert FAKE_GV is not None
        self.proc = subprocess.Popen([FAKE_GV, "-i", "127.0.0.1", "-s", self.serial],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake camera exited with {self.proc.returncode}")
            if _gvcp_discover_serial() == self.serial:
                return
        raise RuntimeError("the fake camera did not answer GVCP discovery on 127.0.0.1")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def fake() -> Iterator[FakeCamera]:
    cam = FakeCamera()
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


def _health_log() -> tuple[list[tuple[float, bool, str]], object]:
    events: list[tuple[float, bool, str]] = []
    return events, lambda up, why: events.append((time.monotonic(), up, why))


def test_list_and_grab_write_frames_of_the_fake_camera(tmp_path: Path, fake: FakeCamera) -> None:
    listed = station("camera", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {d["id"]: d for d in json.loads(listed.stdout)["genicam"]}
    assert found[DEVICE]["source"] == f"genicam://{DEVICE}"
    assert found[DEVICE]["protocol"] == "GigEVision" and found[DEVICE]["address"] == "127.0.0.1"

    out = tmp_path / "good"
    p = station("camera", "grab", f"genicam://{DEVICE}", "-n", "5", "-o", str(out))
    assert p.returncode == 0, p.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"frame_{i:04d}.png" for i in range(1, 6)]
    images = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]
    assert all(im.shape == (512, 512) and im.dtype == np.uint8 for im in images)
    # the fake camera's diagonal ramp moves by one grey level per frame: 5 different frames
    assert len({im.tobytes() for im in images}) == 5
    assert p.stdout.split() == [str(f) for f in files]


def test_grab_of_a_missing_camera_is_a_one_line_error(tmp_path: Path) -> None:
    missing = station("camera", "grab", "genicam://Aravis-Fake-NOPE", "-n", "1", "-o",
                      str(tmp_path / "none"), "--timeout", "2")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "Aravis-Fake-NOPE" in missing.stderr.splitlines()[-1]
    assert "not found" in missing.stderr.splitlines()[-1]


def test_software_trigger_fires_one_frame_per_read(fake: FakeCamera) -> None:
    events, on_health = _health_log()
    cam = GenicamCamera(DEVICE, trigger="software", read_timeout=2.0, on_health=on_health)
    with cam:
        deadline = time.monotonic() + 10
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.is_up, cam.reason
        frames = []
        for _ in range(5):
            t = time.time()
            f = cam.read_latest(2.0, after_ts=t)
            assert f.ok, f.error
            assert f.ts >= t and f.image.shape == (512, 512)
            frames.append(f)
        time.sleep(0.5)  # in trigger mode the camera sends nothing unasked
        stats = cam.stats
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert stats["triggers"] == 5 and stats["frames"] == 5 and stats["incomplete"] == 0
    assert events and events[0][1] is True and "software" in events[0][2]


def test_hardware_trigger_hands_out_each_line_frame_once() -> None:
    """Aravis's simulated camera fires Line0 at 25 Hz: every line frame goes to one part, in
    order; a trigger gets a frame captured after it."""
    cam = GenicamCamera("Fake_1", trigger="hardware")
    with cam:
        deadline = time.monotonic() + 10
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.is_up, cam.reason
        free = [cam.read_latest(2.0) for _ in range(10)]  # station free-run: each frame a part
        assert all(f.ok for f in free)
        seqs = [f.seq for f in free]
        assert seqs == list(range(seqs[0], seqs[0] + 10))
        assert len({f.meta["frame_id"] for f in free}) == 10
        time.sleep(0.5)  # ~12 line frames pile up: a trigger skips those from before it
        t = time.time()
        f = cam.read_latest(2.0, after_ts=t)
        assert f.ok and f.ts >= t and f.seq > seqs[-1] + 5
        assert cam.stats["dropped"] >= 5

        # three triggers at once (parts waiting in the station's queue): three line frames
        t = time.time()
        claims = [cam.claim_frame(t, t + 2.0) for _ in range(3)]
        got = [c.wait(2.0) for c in claims]
        assert all(g is not None and g.ok and g.ts >= t for g in got)
        assert [g.seq for g in got] == sorted({g.seq for g in got})  # distinct, in order


def test_software_trigger_claims_fire_the_camera_per_trigger(fake: FakeCamera) -> None:
    """Triggers that arrive while the station is busy claim their frame at once: the camera is
    fired for each when it arrives, each gets its own exposure."""
    cam = GenicamCamera(DEVICE, trigger="software", read_timeout=2.0)
    with cam:
        deadline = time.monotonic() + 10
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.is_up, cam.reason
        stamps = []
        claims = []
        for _ in range(3):
            stamps.append(time.time())
            claims.append(cam.claim_frame(stamps[-1], stamps[-1] + 3.0))
            time.sleep(0.15)
        got = [c.wait(3.0) for c in claims]
        assert all(g is not None and g.ok for g in got), [c.why for c in claims]
        assert all(g.ts >= t for g, t in zip(got, stamps, strict=True))
        assert [g.seq for g in got] == [1, 2, 3]
        # the ramp moves with every exposure: three different images
        assert len({g.image.tobytes() for g in got}) == 3
        assert cam.stats["triggers"] == 3


def test_settings_reach_the_camera(fake: FakeCamera) -> None:
    region = Region(x=64, y=32, width=256, height=128)
    cam = GenicamCamera(DEVICE, exposure_us=2000.0, gain_db=4.0, pixel_format="Mono16",
                        region=region, frame_rate=10.0)
    with cam:
        f = cam.read_latest(5.0)
        assert f.ok, f.error
        assert f.image.shape == (128, 256) and f.image.dtype == np.uint8  # Mono16 → 8 bit
    arv = load_aravis()
    check = arv.Camera.new(DEVICE)  # a second connection once ours is closed
    assert check.get_pixel_format_as_string() == "Mono16"
    assert tuple(check.get_region()) == (64, 32, 256, 128)
    assert check.get_exposure_time() == pytest.approx(2000.0)
    assert check.get_gain() == pytest.approx(4.0)
    assert check.get_frame_rate() == pytest.approx(10.0)
    del check


def test_refused_settings_keep_the_camera_down_with_the_reason(fake: FakeCamera) -> None:
    events, on_health = _health_log()
    cam = GenicamCamera(DEVICE, pixel_format="YUV422_8", reconnect_initial=0.2,
                        on_health=on_health)
    with cam:
        f = cam.read_latest(2.0)
    assert not f.ok and "YUV422_8" in f.error and "Mono8" in f.error
    assert events and not any(up for _, up, _ in events)


def test_genicam_config_section_is_typed_with_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("camera:\n  type: genicam\n  device_id: Aravis-Fake-GV01\n"
                    "  trigger: software\n  exposure_us: 5000\n"
                    "  region: {x: 0, y: 0, width: 256, height: 256}\n")
    doc = load_yaml(good)
    kind, opts = parse_camera(doc.data["camera"], doc)
    assert kind == "genicam" and opts.trigger == "software" and opts.region.width == 256
    for body, line, word in (("  trigger: sideways\n", 3, "trigger"),
                             ("  exposure_us: -1\n", 3, "exposure_us"),
                             ("  shutter: 3\n", 3, "shutter")):
        bad = tmp_path / "bad.yaml"
        bad.write_text("camera:\n  type: genicam\n" + body)
        doc = load_yaml(bad)
        with pytest.raises(ConfigError) as err:
            parse_camera(doc.data["camera"], doc)
        assert f"bad.yaml:{line}" in str(err.value) and word in str(err.value)


@pytest.mark.slow
def test_station_on_the_fake_camera_free_run_down_and_up(tmp_path: Path,
                                                         fake: FakeCamera) -> None:
    """Acceptance: grab → golden build → a station in free-run on genicam:// publishes results;
    killing the fake camera gives camera_down, restarting it camera_up and results again.  Then
    the same station in trigger mode with the software trigger: one exposure per part."""
    from station.bench.events import StationClient, StationProcess, write_config

    good = tmp_path / "good"
    p = station("camera", "grab", f"genicam://{DEVICE}", "-n", "10", "-o", str(good))
    assert p.returncode == 0, p.stderr
    grid = tmp_path / "grid.yaml"
    grid.write_text("roi: [64, 64, 384, 384]\ncolumns: ['1', '2', '3']\nrows: [A, B, C]\n")
    b = station("golden", "build", str(good), "-o", str(tmp_path / "recipe"), "--grid", str(grid))
    assert b.returncode == 0, b.stderr

    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=tmp_path / "recipe", state_dir=state,
                       mode="free_run", rate_hz=5.0)
    data = json.loads(cfg.read_text())
    data["camera"] = {"type": "genicam", "device_id": DEVICE, "read_timeout_s": 1.0,
                      "reconnect": {"initial_s": 0.2, "max_s": 1.0}}
    cfg.write_text(json.dumps(data))
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        c.wait_live()

        def until(state_name: str, timeout: float) -> dict:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                msg = c.recv(0.2)
                if msg and msg[0] == "insp.status" and msg[1]["state"] == state_name:
                    return msg[1]
            raise AssertionError(f"no {state_name} within {timeout} s; the station's log:\n"
                                 + st.log_path.read_text()[-4000:])

        t0 = time.monotonic()
        results = []
        while time.monotonic() - t0 < 5.0:
            msg = c.recv(0.2)
            if msg and msg[0].startswith("insp.result."):
                results.append(msg[1])
        assert len(results) >= 15  # 5 Hz for 5 s
        assert all(r["part_id"] and r["verdict"] in ("pass", "defect", "error") for r in results)
        assert any(r["verdict"] != "error" for r in results)
        seqs = [r["seq"] for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        fake.kill()
        down = until("camera_down", 10.0)
        assert "frame" in down["reason"] or "answer" in down["reason"]
        fake.start()
        # reconnecting goes through Aravis's discovery and GVCP retries: slower on a loaded host
        until("camera_up", 30.0)
        after = c.results(3, 10.0)
        assert len(after) == 3 and any(r["verdict"] != "error" for r in after)

    # trigger mode, software trigger: the station fires the camera for each part
    data["mode"] = "trigger"
    data["camera"]["trigger"] = "software"
    cfg.write_text(json.dumps(data))
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        c.wait_live()
        # the killed first station's GigE Vision session holds the camera until its heartbeat
        # times out on the camera: this station gets it a moment later
        end = time.monotonic() + 15
        while not c.status()["camera"]["up"] and time.monotonic() < end:
            time.sleep(0.1)
        assert c.status()["camera"]["up"], st.log_path.read_text()[-3000:]
        ids = [f"sw-{i}" for i in range(5)]
        for part_id in ids:
            assert c.trigger(part_id)["ok"]
        results = c.results(5, 20.0)
    assert [r["part_id"] for r in results] == ids
    # every part judged on its own frame (the moving ramp may fail alignment: error, not pass)
    assert not [r["reason"] for r in results if r["verdict"] == "error"
                and not r["reason"].startswith("alignment_failed")], st.log_path.read_text()[-3000:]
    assert all(r["frame_ts"] >= r["trigger_ts"] for r in results)
    assert len({r["frame_ts"] for r in results}) == 5  # one exposure per part


def test_software_trigger_camera_lost_and_back(fake: FakeCamera) -> None:
    """No frames flow between software triggers: the loss is seen by the register probe (or the
    heartbeat), the parts meanwhile are camera_down errors, the camera is re-opened when back."""
    events, on_health = _health_log()
    cam = GenicamCamera(DEVICE, trigger="software", read_timeout=1.0, reconnect_initial=0.2,
                        reconnect_max=1.0, on_health=on_health)
    with cam:
        deadline = time.monotonic() + 10
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.read_latest(2.0, after_ts=time.time()).ok
        fake.kill()
        t_kill = time.monotonic()
        while cam.is_up and time.monotonic() - t_kill < 10:
            time.sleep(0.05)
        t_down = time.monotonic() - t_kill
        assert not cam.is_up and t_down < 4.0, t_down
        lost = cam.read_latest(1.0, after_ts=time.time())
        assert not lost.ok and lost.error.startswith("camera_down")
        fake.start()
        deadline = time.monotonic() + 20
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.is_up, cam.reason
        back = cam.read_latest(2.0, after_ts=time.time())
        assert back.ok, back.error
    ups = [up for _, up, _ in events]
    assert ups == [True, False, True]  # no flicker: one down, one up
    print(f"\nsoftware trigger: camera_down {t_down:.2f} s after the fake camera was killed")


def test_colour_pixel_formats_become_bgr(fake: FakeCamera) -> None:
    """RGB8 is converted to BGR, Bayer is demosaiced: the station's images are grey or BGR."""
    shapes = {}
    for fmt in ("RGB8", "BayerRG8"):
        with GenicamCamera(DEVICE, pixel_format=fmt) as cam:
            f = cam.read_latest(5.0)
            assert f.ok, f.error
            shapes[fmt] = (f.image.shape, f.image.dtype)
    assert shapes == {"RGB8": ((512, 512, 3), np.uint8), "BayerRG8": ((512, 512, 3), np.uint8)}


def test_deep_mono_formats_scale_to_8_bit() -> None:
    arv = load_aravis()
    values = np.array([[0, 512, 1023, 4095]], dtype="<u2")
    img10 = to_uint8_image(values.tobytes(), 4, 1, arv.PIXEL_FORMAT_MONO_10)
    assert img10.tolist() == [[0, 128, 255, 255]]  # 10-bit: >> 2, out-of-range clipped
    img12 = to_uint8_image(values.tobytes(), 4, 1, arv.PIXEL_FORMAT_MONO_12)
    assert img12.tolist() == [[0, 32, 63, 255]]
    img16 = to_uint8_image(np.array([[0, 257, 65535, 32896]], "<u2").tobytes(), 4, 1,
                           arv.PIXEL_FORMAT_MONO_16)
    assert img16.tolist() == [[0, 1, 255, 128]]
    with pytest.raises(ValueError, match="needs"):
        to_uint8_image(b"\0" * 7, 4, 1, arv.PIXEL_FORMAT_MONO_16)
    with pytest.raises(ValueError, match="not supported"):
        to_uint8_image(b"\0" * 8, 4, 1, arv.PIXEL_FORMAT_MONO_12_PACKED)
