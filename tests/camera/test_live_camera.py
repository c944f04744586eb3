"""LiveCamera against real sources: an ffmpeg MJPEG-over-HTTP server on 127.0.0.1, a video file,
an image sequence, and sources that cannot be opened.  No mocks: real sockets, real OpenCV."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest

from camera.live import LiveCamera, classify_source, mask_credentials
from station.bench.events import free_ports

from support.stream import MjpegServer, needs_ffmpeg
from support.video import write_mjpeg_avi


@pytest.fixture
def server() -> Iterator[MjpegServer]:
    srv = MjpegServer(free_ports(1)[0])
    try:
        yield srv
    finally:
        srv.stop()


class Events:
    """Collects on_health calls with their monotonic time."""

    def __init__(self) -> None:
        self.items: list[tuple[float, bool, str]] = []
        self._cond = threading.Condition()

    def __call__(self, up: bool, reason: str) -> None:
        with self._cond:
            self.items.append((time.monotonic(), up, reason))
            self._cond.notify_all()

    def wait_for(self, up: bool, timeout: float, after: int = 0) -> tuple[float, bool, str]:
        """Wait for an event with ``up`` among events ``after`` onwards; returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.items[after:]:
                    if ev[1] is up:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {'up' if up else 'down'} event in {timeout} s: "
                                         f"{self.items}")
                self._cond.wait(left)


@pytest.fixture
def make_camera() -> Iterator[Callable[..., LiveCamera]]:
    cams: list[LiveCamera] = []

    def make(source: int | str, **kw: object) -> LiveCamera:
        cam = LiveCamera(source, **kw)  # type: ignore[arg-type]
        cams.append(cam)
        cam.start()
        return cam

    try:
        yield make
    finally:
        for cam in cams:
            cam.close()


def _frames(cam: LiveCamera, n: int, timeout: float = 5.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        f = cam.read_latest(0.5)
        if f.ok:
            out.append(f)
    assert len(out) == n, f"only {len(out)} frames in {timeout} s"
    return out


# --------------------------------------------------------------------------- network stream
@needs_ffmpeg
def test_stream_newest_frame_down_and_up_without_recreating(server, make_camera, capsys):
    server.start()
    events = Events()
    cam = make_camera(server.url, open_timeout=2.0, read_timeout=1.5,
                      reconnect_initial=0.2, reconnect_max=1.0, on_health=events)
    _, _, reason = events.wait_for(True, 8)
    assert cam.is_up and "320x240" in reason

    frames = _frames(cam, 5)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5, seqs
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    assert all(f.error is None and f.source_id == cam.source_id for f in frames)

    # newest-frame semantics: after 1 s idle (≈15 frames produced) we get ONE fresh frame,
    # skipping the backlog, not the oldest queued one
    time.sleep(1.0)
    f1 = cam.read_latest(1.0)
    assert f1.ok and f1.seq >= seqs[-1] + 8, (seqs[-1], f1.seq)
    assert time.time() - f1.ts < 0.25
    f2 = cam.read_latest(1.0)
    assert f2.ok and f2.seq > f1.seq and f2.ts > f1.ts
    # trigger mode: a frame grabbed after the trigger instant
    t_trig = time.time()
    f_trig = cam.read_latest(1.0, after_ts=t_trig)
    assert f_trig.ok and f_trig.ts >= t_trig and f_trig.seq > f2.seq
    f2 = f_trig
    # nothing newer than what we just got right now → an error frame, not a repeat
    f3 = cam.read_latest(0.0)
    assert f3.image is None and f3.error.startswith("camera_down: no new frame")

    # server dies → camera_down within 5 s, read_latest gives error frames
    n_before = len(events.items)
    t_stop = time.monotonic()
    server.stop()
    t_down, _, down_reason = events.wait_for(False, 5, after=n_before)
    down_s = t_down - t_stop
    assert down_s < 5.0
    assert not cam.is_up
    err = cam.read_latest(0.3)
    assert err.image is None and err.error.startswith("camera_down: ")
    assert err.seq == f2.seq  # no new frame number invented

    # server comes back on the same URL → camera_up, frames resume, same LiveCamera object
    time.sleep(1.0)  # a couple of failed reconnects while it is away
    n_before = len(events.items)
    t_restart = time.monotonic()
    server.start()
    t_up2, _, _ = events.wait_for(True, 8, after=n_before)
    up_s = t_up2 - t_restart
    after = _frames(cam, 3)
    assert after[0].seq > f2.seq and cam.is_up
    assert [e[1] for e in events.items] == [True, False, True], events.items  # transitions only
    assert cam.stats["reconnects"] >= 1
    with capsys.disabled():
        print(f"\n[live camera] down detected {down_s:.2f} s after server kill ({down_reason!r}); "
              f"up {up_s:.2f} s after server restart")

    cam.close()
    assert not cam._reader.is_alive() and not cam._watchdog.is_alive()
    closed = cam.read_latest(1.0)
    assert closed.error == "camera_down: closed" and not cam.is_up


@needs_ffmpeg
def test_stalled_stream_is_down_by_read_timeout(server, make_camera, capsys):
    """A server that stops sending (SIGSTOP) without closing: only the timeouts can see it."""
    server.start()
    events = Events()
    cam = make_camera(server.url, open_timeout=1.0, read_timeout=1.0,
                      reconnect_initial=0.2, reconnect_max=0.5, on_health=events)
    events.wait_for(True, 8)
    _frames(cam, 2)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGSTOP)
    try:
        t_down, _, reason = events.wait_for(False, 4, after=1)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert t_down - t0 < 1.0 + 1.5, reason
    with capsys.disabled():
        print(f"\n[live camera] stalled stream down after {t_down - t0:.2f} s ({reason!r})")
    f = cam.read_latest(0.2)
    assert f.image is None and f.error.startswith("camera_down")


# --------------------------------------------------------------------------- files
def test_video_file_behaves_like_a_camera(tmp_path, make_camera):
    """EOF → down (end_of_stream); the reconnect loop re-opens it → up again."""
    path = tmp_path / "clip.avi"
    write_mjpeg_avi(path, 10, 20.0)  # 0.5 s
    events = Events()
    cam = make_camera(str(path), reconnect_initial=0.3, reconnect_max=0.3, on_health=events)
    events.wait_for(True, 3)
    first = _frames(cam, 3)
    assert first[0].image.shape == (48, 64, 3)
    _, _, reason = events.wait_for(False, 3)
    assert reason == "end_of_stream"
    events.wait_for(True, 3, after=2)  # re-opened, same object
    again = _frames(cam, 2)
    assert again[0].seq > first[-1].seq
    assert cam.stats["reconnects"] >= 1


def test_video_file_loop_never_goes_down(tmp_path, make_camera):
    path = tmp_path / "clip.avi"
    write_mjpeg_avi(path, 5, 25.0)  # 0.2 s per pass
    events = Events()
    cam = make_camera(str(path), loop=True, on_health=events)
    frames = _frames(cam, 20, timeout=5)  # ≥ 4 passes through the file
    values = [int(f.image[0, 0, 0]) for f in frames]
    assert max(values) > 50 and values != sorted(values)  # wrapped around
    assert [e[1] for e in events.items] == [True]


def test_watchdog_declares_down_without_a_failed_read(tmp_path, make_camera):
    """A source that is slower than read_timeout but never fails a read (a file paced at
    0.5 fps): the watchdog alone says down, and the next frame brings it back up without
    a reconnect."""
    path = tmp_path / "slow.avi"
    write_mjpeg_avi(path, 5, 25.0)
    events = Events()
    cam = make_camera(str(path), fps=0.5, read_timeout=0.5, on_health=events)
    t_up, _, _ = events.wait_for(True, 3)
    assert cam.read_latest(1.0).ok
    t_down, _, reason = events.wait_for(False, 2)
    assert "no frame for" in reason and 0.4 < t_down - t_up < 1.0
    assert cam.read_latest(0.1).error.startswith("camera_down: no frame for")
    f = cam.read_latest(3.0)  # next paced frame, ~2 s after the first
    assert f.ok and f.seq == 2
    assert [e[1] for e in events.items] == [True, False, True]
    assert cam.stats["reconnects"] == 0


def test_image_sequence_pattern(tmp_path, make_camera):
    images = [np.full((30, 40, 3), (10 * i, 5 * i, 255 - 20 * i), np.uint8) for i in range(6)]
    for i, img in enumerate(images):
        assert cv2.imwrite(str(tmp_path / f"{i:04d}.png"), img)
    events = Events()
    cam = make_camera(str(tmp_path / "%04d.png"), fps=20, on_health=events,
                      reconnect_initial=5.0, reconnect_max=5.0)
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(e[1] is False for e in events.items):
        f = cam.read_latest(0.3)
        if f.ok:
            got.append(f)
    assert len(got) >= 3
    idx = []
    for f in got:  # every frame is bit-for-bit one of the PNGs, in order
        match = [i for i, img in enumerate(images) if np.array_equal(f.image, img)]
        assert len(match) == 1
        idx.append(match[0])
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert events.items[-1][2] == "end_of_stream"


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize("source", ["/dev/video99", "http://127.0.0.1:{port}/", "missing.avi",
                                    "rtsp://user:secret@127.0.0.1:{port}/cam"])
def test_unopenable_source_is_down_with_reason(source, tmp_path, make_camera):
    source = source.format(port=free_ports(1)[0])
    if source == "missing.avi":
        source = str(tmp_path / source)
    events = Events()
    t0 = time.monotonic()
    cam = make_camera(source, open_timeout=1.0, reconnect_initial=0.2, reconnect_max=0.4,
                      on_health=events)
    assert time.monotonic() - t0 < 0.5  # start() never blocks on the camera
    _, _, reason = events.wait_for(False, 3)
    assert reason.startswith("open failed") and "secret" not in reason
    assert "secret" not in cam.source_id
    assert not cam.is_up
    f = cam.read_latest(0.2)
    assert f.image is None and f.error.startswith("camera_down: open failed")
    time.sleep(0.7)  # keeps retrying with back-off, reports down once only
    assert cam.stats["opens"] >= 2
    assert [e[1] for e in events.items] == [False]
    t0 = time.monotonic()
    cam.close()
    assert time.monotonic() - t0 < 3.0


def test_classify_and_mask():
    assert classify_source(0) == ("device", 0)
    assert classify_source("2") == ("device", 2)
    assert classify_source("/dev/video1") == ("device", "/dev/video1")
    assert classify_source("rtsp://h/x")[0] == "stream"
    assert classify_source("udp://127.0.0.1:1234")[0] == "stream"
    assert classify_source("frames/%04d.png") == ("file", "frames/%04d.png")
    assert mask_credentials("rtsp://admin:pw@10.0.0.2/s") == "rtsp://admin:***@10.0.0.2/s"
    with pytest.raises(TypeError):
        classify_source(True)
