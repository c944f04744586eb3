"""Camera sources chosen by ``type:`` in a real station YAML through camera.registry: the built-in
types (files, synthetic, opencv, and configs without ``type:``), a type registered in this file
and used through the config only (a whole station runs on it), and the errors with file:line."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.files import FilesCamera, FilesOptions
from camera.live import LiveCamera, OpenCvOptions
from camera.registry import SourceOptions, register_source
from camera.source import HealthCallback, LiveSource
from camera.synthetic import SyntheticCamera, SyntheticOptions
from pipeline.base.errors import ConfigError
from pipeline.base.frames import Frame
from pipeline.recipe import Recipe
from station.bench.events import StationClient
from station.build import build_camera, build_daemon
from station.config import load_config
from station.demo.line import write_part_frames


# ------------------------------------------------------------------ a type defined in a test
@dataclass(frozen=True)
class StillPartsOptions(SourceOptions):
    """``camera: {type: test-still-parts, folder: …}``."""

    folder: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.folder:
            raise ValueError("folder: required")


class StillParts:
    """A camera that photographs the next part of a folder each time it is read (PNG files in
    name order, over and over): a real LiveSource, defined outside the camera package."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(folder.glob("*.png"))
        if not self.files:
            raise ValueError(f"{folder}: no PNG files")
        self.source_id = f"still:{folder.name}"
        self._callback: HealthCallback | None = None
        self._up = False
        self._reason = "not started"
        self._seq = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._set(True, "still parts ready")

    def read_latest(self, timeout: float, *, after_ts: float | None = None) -> Frame:
        if not self._up:
            return Frame(image=None, seq=self._seq, source_id=self.source_id,
                         error=f"camera_down: {self._reason}")
        with self._lock:
            path = self.files[self._seq % len(self.files)]
            self._seq += 1
            seq = self._seq
        return Frame(image=cv2.imread(str(path)), seq=seq, ts=time.time(),
                     source_id=self.source_id, meta={"path": str(path)})

    def set_health_callback(self, callback: HealthCallback | None) -> None:
        self._callback = callback

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def reason(self) -> str:
        return self._reason

    def close(self) -> None:
        self._set(False, "closed")

    def _set(self, up: bool, reason: str) -> None:
        changed = up != self._up
        self._up, self._reason = up, reason
        if changed and self._callback is not None:
            self._callback(up, reason)


@register_source("test-still-parts", options=StillPartsOptions)
def open_still_parts(options: StillPartsOptions, base_dir: Path) -> StillParts:
    return StillParts(base_dir / options.folder)


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four rendered parts of the demo line (the 2nd and 4th with a defect) + truth.json."""
    folder = tmp_path_factory.mktemp("parts") / "frames"
    write_part_frames(folder, 4, seed=5, defect_every=2)
    return folder


def station_yaml(tmp_path: Path, recipe: Recipe, camera: str) -> Path:
    """A station config with ``camera`` (YAML lines, indented by two) on ephemeral ports."""
    path = tmp_path / "station.yaml"
    path.write_text(
        f"recipe: {recipe.folder}\n"
        "station: {id: registry-test, state_dir: state}\n"
        "recording: {enabled: false}\n"
        "events: {pub: 'tcp://127.0.0.1:0', trigger: 'tcp://127.0.0.1:0',\n"
        "         catchup: 'tcp://127.0.0.1:0', heartbeat_s: 0.2}\n"
        f"camera:\n{camera}")
    return path


def frames_until_down(cam: LiveSource, limit_s: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        f = cam.read_latest(1.0)
        if f.error and f.error.startswith("camera_down"):
            if not cam.is_up and got:
                return got
            continue
        got.append(f)
    raise AssertionError("the camera never went down")


# ------------------------------------------------------------------ tests
def test_files_type_plays_a_folder_like_a_camera(tmp_path: Path, synthetic_recipe: Recipe,
                                                 parts_dir: Path) -> None:
    """``type: files``: the folder (relative to the config) at its fps, each frame the decoded
    file, a corrupt file an error frame, ``after_ts`` honoured, end_of_stream → down."""
    folder = tmp_path / "line"
    folder.mkdir()
    for p in sorted(parts_dir.glob("*.png"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "part_0003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cfg = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   "  type: files\n  source: line\n  fps: 8\n"))
    assert cfg.camera.type == "files" and isinstance(cfg.camera.options, FilesOptions)
    cam = build_camera(cfg)
    assert isinstance(cam, FilesCamera) and isinstance(cam, LiveSource)
    health: list[tuple[bool, str]] = []
    cam.set_health_callback(lambda up, why: health.append((up, why)))
    cam.start()
    try:
        t_trig = time.time()
        first = cam.read_latest(2.0, after_ts=t_trig)
        assert first.ts >= t_trig
        frames = [first, *frames_until_down(cam)]
    finally:
        cam.close()
    good = [f for f in frames if f.ok]
    assert good and all(np.array_equal(f.image, cv2.imread(f.meta["path"])) for f in good)
    assert any(f.error and f.error.startswith("corrupt_frame") for f in frames)
    assert [s for s in (f.seq for f in frames)] == sorted({f.seq for f in frames})
    assert health[0][0] is True and health[-1] == (False, "end_of_stream")
    assert cam.read_latest(0.1).error == "camera_down: closed"


def test_files_type_plays_an_image_sequence_in_number_order_and_loops(
        tmp_path: Path, synthetic_recipe: Recipe, parts_dir: Path) -> None:
    pattern = str(parts_dir / "part_%04d.png")
    cfg = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   f"  type: files\n  source: '{pattern}'\n  fps: 20\n"
                                   "  loop: true\n"))
    cam = build_camera(cfg)
    cam.start()
    try:
        frames = []
        while len(frames) < 9:
            f = cam.read_latest(2.0)
            assert f.ok, f.error
            frames.append(f)
        assert cam.is_up
    finally:
        cam.close()
    # seq counts every frame played (a slow reader may skip some, never reorder): frame n is
    # file (n - 1) mod 4 of the sequence, past its end again from the start
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] > 4
    for f in frames:
        assert Path(f.meta["path"]).name == f"part_{(f.seq - 1) % 4:04d}.png"
        assert np.array_equal(f.image, cv2.imread(f.meta["path"]))


def test_synthetic_type_and_configs_without_type(tmp_path: Path,
                                                 synthetic_recipe: Recipe) -> None:
    cfg = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   "  type: synthetic\n  width: 320\n  height: 240\n"
                                   "  seed: 4\n  p_good: 1.0\n"))
    assert cfg.camera.options == SyntheticOptions(width=320, height=240, seed=4, p_good=1.0)
    cam = build_camera(cfg)
    assert isinstance(cam, SyntheticCamera)
    cam.start()
    frame = cam.read_latest(1.0, after_ts=time.time() - 1)
    cam.close()
    assert frame.ok and frame.image.shape[:2] == (240, 320) and frame.meta["label"] == "pass"

    # written before the registry: no type → "synthetic" string → synthetic, else OpenCV
    old = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   "  source: synthetic\n  fps: 30\n  loop: true\n"
                                   "  read_timeout_s: 1.5\n"))
    assert old.camera.type == "synthetic"
    assert old.camera.options == SyntheticOptions(fps=30.0, read_timeout_s=1.5)
    url = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   "  source: 'rtsp://u:secret@127.0.0.1:8554/cam'\n"
                                   "  reconnect: {initial_s: 0.2, max_s: 1.0}\n"))
    assert url.camera.type == "opencv" and isinstance(url.camera.options, OpenCvOptions)
    live = build_camera(url)
    assert isinstance(live, LiveCamera) and live.reconnect_max == 1.0
    assert live.source_id == "camera:rtsp://u:***@127.0.0.1:8554/cam"  # built, never opened


def test_unknown_type_and_bad_options_name_file_and_line(tmp_path: Path,
                                                         synthetic_recipe: Recipe,
                                                         parts_dir: Path) -> None:
    path = station_yaml(tmp_path, synthetic_recipe, "  type: gige-x\n  source: 0\n")
    line = path.read_text().splitlines().index("  type: gige-x") + 1
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.where == f"{path}:{line}"
    assert "unknown camera type 'gige-x'" in str(err.value)
    known = str(err.value).split("(known: ")[1].rstrip(")").split(", ")
    assert {"files", "opencv", "synthetic", "test-still-parts"} <= set(known)

    path = station_yaml(tmp_path, synthetic_recipe, "  type: synthetic\n  source: 0\n")
    with pytest.raises(ConfigError, match=r"unknown key 'camera\.source'") as err:
        load_config(path)
    assert err.value.where == f"{path}:{line + 1}"

    path = station_yaml(tmp_path, synthetic_recipe, "  type: files\n  source: no-such-folder\n")
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="no-such-folder: no such file") as err:
        build_camera(cfg)
    assert err.value.where == f"{path}:{line - 1}"  # the camera section


@pytest.mark.slow
def test_a_type_registered_outside_the_package_runs_a_station_from_config_only(
        tmp_path: Path, synthetic_recipe: Recipe, parts_dir: Path) -> None:
    """``type: test-still-parts`` (registered above) in a YAML file: station.build opens it and
    the daemon inspects the parts it shows, exactly as with a built-in camera."""
    (tmp_path / "still").mkdir()
    for p in parts_dir.glob("*.png"):
        (tmp_path / "still" / p.name).write_bytes(p.read_bytes())
    cfg = load_config(station_yaml(tmp_path, synthetic_recipe,
                                   "  type: test-still-parts\n  folder: still\n"))
    daemon = build_daemon(cfg)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(daemon.run()), daemon=True)
    t.start()
    try:
        assert daemon.wait_ready(60)
        with StationClient(daemon.endpoints) as c:
            c.wait_live()
            status = c.status()
            assert status["camera"] == {"up": True, "source": "still:still",
                                        "reason": "still parts ready"}
            ids = [f"S{i}" for i in range(4)]
            assert all(c.trigger(p)["ok"] for p in ids)
            results = c.results(4, 60)
    finally:
        daemon.request_stop()
        t.join(30)
    assert rc == [0]
    assert [r["part_id"] for r in results] == ids
    assert [r["verdict"] for r in results] == ["pass", "defect", "pass", "defect"]
