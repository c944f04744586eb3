"""Fault injection: damaged images are ``error: corrupt_frame`` everywhere (issue 8 item 2).

Real parts only: real JPEG/PNG files of the synthetic line cut short or damaged on disk, the
strict decoder, OpenCV's image-sequence path of a live camera, the replay sources, an ffmpeg
MJPEG video, and a real ``station run`` process triggered over its real trigger socket.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.files import FilesCamera
from camera.live import LiveCamera
from camera.replay import ImageFolderSource, VideoFileSource
from pipeline.base.imageio import FrameReadError, decode_image, read_image
from station.bench.events import StationClient, StationProcess, write_config
from station.demo.line import write_part_frames

from support.stream import FFMPEG

FRACTIONS = (0.80, 0.83, 0.86, 0.89, 0.92, 0.95)


@pytest.fixture(scope="module")
def part_jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Six good parts of the synthetic line as real JPEG files' bytes (quality 95)."""
    pattern = write_part_frames(tmp_path_factory.mktemp("parts"), 6, defect_every=0)
    out = []
    for i in range(6):
        img = cv2.imread(pattern % i, cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        out.append(buf.tobytes())
    return out


def _truncated(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


# ------------------------------------------------------------------------------ the decoder
def test_jpeg_damage_is_corrupt_frame(tmp_path: Path, part_jpegs: list[bytes]) -> None:
    good = part_jpegs[0]
    assert good.endswith(b"\xff\xd9")
    img = decode_image(good, "good")
    assert img.shape == (480, 640, 3)
    # bit-identical to OpenCV's own decoder on an intact file
    assert np.array_equal(img, cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_UNCHANGED))
    damaged = {
        "no end marker": good[:-2],
        "truncated 90 %": _truncated(good, 0.9),
        # cut short and the end marker put back: libjpeg's "premature end of data segment"
        "premature end of data segment": _truncated(good, 0.9) + b"\xff\xd9",
        "bytes cut from the middle": good[:len(good) // 2] + good[len(good) // 2 + 700:],
        "short file": good[:40],
    }
    for name, data in damaged.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jpg"
        path.write_bytes(data)
        with pytest.raises(FrameReadError) as exc:
            read_image(path)
        assert exc.value.kind == "corrupt_frame", name
        assert str(path) in str(exc.value)
    # OpenCV alone repairs the first three into pictures: the reason for the strict decoder
    repaired = cv2.imdecode(np.frombuffer(damaged["premature end of data segment"], np.uint8),
                            cv2.IMREAD_UNCHANGED)
    assert repaired is not None and repaired.shape == (480, 640, 3)


def test_png_damage_is_corrupt_frame(tmp_path: Path, part_jpegs: list[bytes]) -> None:
    img = decode_image(part_jpegs[1], "part")
    png = cv2.imencode(".png", img)[1].tobytes()
    assert np.array_equal(decode_image(png, "png"), img)
    idat = png.find(b"IDAT")
    flipped = bytearray(png)
    flipped[idat + 100] ^= 0x01  # one bit in the compressed data: the chunk's CRC no longer fits
    text_chunk = b"tEXt" + b"Comment\x00hello"
    bad_crc = struct.pack(">I", len(text_chunk) - 4) + text_chunk + b"\x00\x00\x00\x00"
    ancillary = png[:33] + bad_crc + png[33:]  # an ancillary chunk libpng would only warn about
    cases = {"no IEND": png[:-12], "truncated 90 %": _truncated(png, 0.9),
             "bad CRC": bytes(flipped), "bad ancillary CRC": ancillary, "short": png[:20]}
    for name, data in cases.items():
        with pytest.raises(FrameReadError, match="corrupt_frame") as exc:
            decode_image(data, name)
        assert name in str(exc.value)


# --------------------------------------------------------------------- live and replay alike
def test_live_image_sequence_and_replay_say_the_same(tmp_path: Path,
                                                     part_jpegs: list[bytes]) -> None:
    """OpenCV's image-sequence capture repairs truncated JPEGs; the live camera must not use it:
    it reads the files through the strict decoder, frame by frame, like replay."""
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, data in enumerate(part_jpegs):  # even frames truncated, odd ones whole
        (folder / f"part_{i:03d}.jpg").write_bytes(
            _truncated(data, FRACTIONS[i]) if i % 2 == 0 else data)
    pattern = str(folder / "part_%03d.jpg")
    # the path the camera used before: FFmpeg's image2 reader hands out repaired pictures
    cap = cv2.VideoCapture(pattern, cv2.CAP_IMAGES)
    ok, repaired = cap.read()
    cap.release()
    assert ok and repaired is not None

    replayed = list(ImageFolderSource(folder))
    cam = LiveCamera(pattern, fps=30, read_timeout=5.0)
    cam.start()
    try:
        live = [cam.read_latest(10.0) for _ in range(6)]
    finally:
        cam.close()
    files_cam = FilesCamera(pattern, fps=30)  # camera type "files": the same decoder
    files_cam.start()
    try:
        played = [files_cam.read_latest(10.0) for _ in range(6)]
    finally:
        files_cam.close()
    assert [f.error for f in played] == [f.error for f in replayed]
    for i, (lf, rf) in enumerate(zip(live, replayed, strict=True)):
        if i % 2 == 0:
            assert lf.image is None and rf.image is None
            assert lf.error == rf.error and lf.error.startswith("corrupt_frame: ")
            assert f"part_{i:03d}.jpg" in lf.error
        else:
            assert lf.error is None and rf.error is None
            assert np.array_equal(lf.image, rf.image)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (tests/run.sh installs it)")
def test_mjpeg_video_frames_go_through_the_strict_decoder(tmp_path: Path,
                                                          part_jpegs: list[bytes]) -> None:
    """An MJPEG video (the codec network cameras stream) is read raw: its JPEGs are decoded by
    the strict decoder, in replay and in the live camera; a damaged one is corrupt_frame."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.jpg").write_bytes(part_jpegs[i])
    video = tmp_path / "line.avi"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-framerate", "5", "-i",
                    str(src / "f%d.jpg"), "-c:v", "copy", str(video)], check=True, timeout=60)
    frames = list(VideoFileSource(video))
    assert len(frames) == 4 and all(f.error is None for f in frames)
    assert np.array_equal(frames[0].image, decode_image(part_jpegs[0], "f0"))
    # damage the second JPEG inside the container, same length kept: an end marker half-way
    # through its scan (libjpeg: "premature end of data segment", then repairs the rest grey)
    data = bytearray(video.read_bytes())
    second = data.find(part_jpegs[1][-4000:])
    assert second > 0
    data[second:second + 2] = b"\xff\xd9"
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    frames = list(VideoFileSource(broken))
    assert frames[1].image is None and frames[1].error.startswith("corrupt_frame: ")
    assert frames[0].error is None and frames[2].error is None
    cam = LiveCamera(str(broken), fps=20, read_timeout=5.0)
    cam.start()
    try:
        live = [cam.read_latest(10.0) for _ in range(3)]
    finally:
        cam.close()
    assert [f.error is None for f in live] == [True, False, True]
    assert live[1].error.startswith("corrupt_frame: ")


class MultipartJpegServer:
    """A network camera that sends what it is given: HTTP ``multipart/x-mixed-replace`` (the
    MJPEG-over-HTTP of IP cameras) on 127.0.0.1, one client, the JPEGs in turn at ``fps``, each
    part's Content-Length the bytes actually sent (a truncated JPEG arrives whole as a part)."""

    def __init__(self, jpegs: list[bytes], fps: float = 10.0) -> None:
        self.jpegs = jpegs
        self.period = 1.0 / fps
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._srv.getsockname()[1]}/cam.mjpg"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._srv.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.recv(65536)  # the GET request
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;"
                                 b"boundary=frame\r\n\r\n")
                    i = 0
                    while not self._stop.is_set():
                        data = self.jpegs[i % len(self.jpegs)]
                        conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        i += 1
                        time.sleep(self.period)
                except OSError:
                    continue

    def close(self) -> None:
        """Stop serving."""
        self._stop.set()
        self._thread.join(5)
        self._srv.close()


def test_mjpeg_network_stream_damaged_frames_are_corrupt(part_jpegs: list[bytes]) -> None:
    """MJPEG over HTTP (OpenCV's FFmpeg backend exposes the JPEG bytes in raw mode): a whole
    JPEG gives the strict decoder's picture, a truncated one ``corrupt_frame``."""
    whole, cut = part_jpegs[2], _truncated(part_jpegs[3], 0.85)
    server = MultipartJpegServer([whole, cut])
    cam = LiveCamera(server.url, open_timeout=10.0, read_timeout=5.0)
    cam.start()
    try:
        frames = [cam.read_latest(15.0) for _ in range(6)]
    finally:
        cam.close()
        server.close()
    good = [f for f in frames if f.image is not None]
    bad = [f for f in frames if f.error is not None]
    assert good and bad, [f.error for f in frames]
    assert all(np.array_equal(f.image, decode_image(whole, "whole")) for f in good)
    assert all(f.error.startswith("corrupt_frame: stream frame: damaged JPEG") for f in bad)


# ----------------------------------------------------------------------------- acceptance
@pytest.mark.slow
def test_truncated_jpegs_through_a_live_camera_never_pass(tmp_path: Path, part_jpegs: list[bytes],
                                                          synthetic_recipe) -> None:
    """Acceptance: JPEGs truncated to 80-95 % of their bytes, played by a live image-sequence
    camera in a real station process, 10 triggers on the real socket: 0 ``pass``, every one
    ``error`` with reason ``corrupt_frame``."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, data in enumerate(part_jpegs):
        (folder / f"part_{i:03d}.jpg").write_bytes(_truncated(data, FRACTIONS[i]))
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder, state_dir=state,
                       camera=str(folder / "part_%03d.jpg"), fps=20, loop=True)
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        c.wait_live(30.0)
        acks = [c.trigger(f"trunc-{i}", timeout=10.0) for i in range(10)]
        assert all(a["ok"] for a in acks), acks
        results = c.results(10, 120.0)
    assert len(results) == 10
    verdicts = [r["verdict"] for r in results]
    assert verdicts.count("pass") == 0, verdicts
    assert all(r["verdict"] == "error" and r["reason"].startswith("corrupt_frame")
               for r in results), [r["reason"] for r in results]
