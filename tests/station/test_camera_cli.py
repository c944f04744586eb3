"""``station camera grab`` on the sources that need no GenICam camera (the GenICam ones are in
test_genicam.py): an image folder, a video, the synthetic line, a missing device."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from support.cli import station


def _pngs(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def test_grab_from_a_folder_and_a_video_then_golden_build(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    base = np.full((120, 160), 40, np.uint8)  # a part: pads on a board
    for x in range(20, 150, 30):
        cv2.rectangle(base, (x, 30), (x + 12, 50), 220, -1)
        cv2.circle(base, (x + 6, 85), 8, 180, -1)
    base = cv2.GaussianBlur(base, (3, 3), 0)
    video = cv2.VideoWriter(str(tmp_path / "line.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                            (160, 120), isColor=False)
    for i in range(20):  # grab takes the newest frame at 25 fps: room for skipped ones
        img = np.roll(base, i % 3, axis=1)  # a little jitter from part to part
        img[-1, -1] = i  # and each frame told apart
        cv2.imwrite(str(src / f"{i:03d}.png"), img)
        video.write(img)
    video.release()

    p = station("camera", "grab", str(src), "-n", "4", "-o", str(tmp_path / "from_folder"))
    assert p.returncode == 0, p.stderr
    got = _pngs(tmp_path / "from_folder")
    assert len(got) == 4 and all(g.shape == (120, 160) for g in got)
    originals = {cv2.imread(str(f), cv2.IMREAD_UNCHANGED).tobytes() for f in src.glob("*.png")}
    assert all(g.tobytes() in originals for g in got)  # lossless, the folder's own frames
    assert len({g.tobytes() for g in got}) == 4

    v = station("camera", "grab", str(tmp_path / "line.avi"), "-n", "3", "-o",
                str(tmp_path / "from_video"))
    assert v.returncode == 0, v.stderr
    assert len(_pngs(tmp_path / "from_video")) == 3

    grid = tmp_path / "grid.yaml"
    grid.write_text("roi: [10, 10, 140, 100]\ncolumns: ['1', '2']\nrows: [A]\n")
    b = station("golden", "build", str(tmp_path / "from_folder"), "-o", str(tmp_path / "recipe"),
                "--grid", str(grid))
    assert b.returncode == 0, b.stderr
    assert (tmp_path / "recipe" / "recipe.yaml").exists()


def test_grab_from_the_synthetic_line(tmp_path: Path) -> None:
    p = station("camera", "grab", "synthetic", "-n", "2", "-o", str(tmp_path / "syn"))
    assert p.returncode == 0, p.stderr
    got = _pngs(tmp_path / "syn")
    assert len(got) == 2 and got[0].shape[:2] == (480, 640)


def test_grab_errors_are_one_line(tmp_path: Path) -> None:
    nowhere = station("camera", "grab", str(tmp_path / "nowhere"), "-n", "1", "-o",
                      str(tmp_path / "out"))
    assert nowhere.returncode == 78 and "Traceback" not in nowhere.stderr
    assert "no such file or directory" in nowhere.stderr
    device = station("camera", "grab", "/dev/video97", "-n", "1", "-o", str(tmp_path / "out"),
                     "--timeout", "1")
    assert device.returncode == 1 and "Traceback" not in device.stderr
    assert device.stderr.strip().splitlines()[-1].startswith("station camera: error: /dev/video97")
    zero = station("camera", "grab", "synthetic", "-n", "0", "-o", str(tmp_path / "out"))
    assert zero.returncode == 78
