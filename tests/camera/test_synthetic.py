"""The synthetic pin line: determinism, nuisances, defect locality, the written line, the camera."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import threading

import cv2
import numpy as np
import pytest

from camera.replay import ManifestSource
from camera.synth import (
    DEFECT_MODES,
    LineSpec,
    grid_config,
    make_part,
    parse_address,
    pin_centers,
    render_golden,
    render_part,
    sample_defects,
    write_line,
)
from camera.synthetic import SyntheticCamera
from pipeline.base.frames import Frame
from pipeline.verdicts import make_address

SPEC = LineSpec()
GREY = LineSpec(color=False)
# Every nuisance off: a part differs from the golden only by its defects.
STILL = dataclasses.replace(GREY, jitter_px=0, jitter_deg=0, gain_drift=0, offset_drift=0,
                            gradient_drift=0, noise_sigma=0, pin_shift_sigma=0,
                            pin_gain_sigma=0)


def _cell(spec: LineSpec, address: str) -> tuple[int, int, int, int]:
    col, row = parse_address(spec, address)
    x0, y0, _, _ = spec.roi
    px, py = spec.cell_pitch
    return x0 + spec.columns.index(col) * px, y0 + spec.rows.index(row) * py, px, py


def test_golden_format_and_grid_holds_one_pin_per_cell():
    g = render_golden(SPEC)
    assert g.shape == (480, 640, 3) and g.dtype == np.uint8
    grey = render_golden(GREY)
    assert grey.shape == (480, 640) and grey.dtype == np.uint8

    cfg = grid_config(SPEC)
    assert cfg["columns"] == [str(i) for i in range(1, 10)] and cfg["rows"] == ["U", "C", "D"]
    x, y, w, h = cfg["roi"]
    assert all(isinstance(v, int) for v in cfg["roi"])
    assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
    assert w % 9 == 0 and h % 3 == 0  # equal integer cells
    board = float(np.median(grey))
    centres = pin_centers(SPEC)
    assert len(centres) == 27
    for addr, (cx, cy) in centres.items():
        cx0, cy0, cw, ch = _cell(SPEC, addr)
        assert cx0 < cx < cx0 + cw and cy0 < cy < cy0 + ch
        assert abs(cx - (cx0 + cw / 2)) < 1 and abs(cy - (cy0 + ch / 2)) < 1
        # a bright pin top at the centre of every cell, dark well around it
        assert grey[int(cy), int(cx)] > board + 80
        assert grey[int(cy), int(cx0 + 2)] < board + 30


def test_large_frame_renders_at_scale():
    spec = LineSpec(size=(1280, 1024), color=False)
    g = render_golden(spec)
    assert g.shape == (1024, 1280)
    assert spec.cell_pitch == (120, 120) and spec.radius == 32
    x, y, w, h = grid_config(spec)["roi"]
    assert x + w <= 1280 and y + h <= 1024
    for cx, cy in pin_centers(spec).values():
        assert g[int(cy), int(cx)] > 150


def test_deterministic_from_seed():
    d = [("X:3, Y:C", "bent"), ("X:7, Y:U", "particle")]
    a = render_part(SPEC, np.random.default_rng(42), d)
    b = render_part(SPEC, np.random.default_rng(42), d)
    c = render_part(SPEC, np.random.default_rng(43), d)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(render_golden(SPEC), render_golden(dataclasses.replace(SPEC)))


def test_good_part_without_nuisances_is_the_golden():
    part = make_part(STILL, np.random.default_rng(0))
    assert part.label == "pass" and part.defects == []
    assert np.array_equal(part.image, render_golden(STILL))
    # the jitter settings do not change the board: the golden is the same
    assert np.array_equal(render_golden(STILL), render_golden(GREY))


def test_jitter_and_drift_within_bounds_and_warp_is_the_truth():
    rng = np.random.default_rng(7)
    golden = render_golden(GREY).astype(np.float32)
    x, y, w, h = GREY.roi
    inner = (slice(y, y + h), slice(x, x + w))
    poses = []
    for _ in range(12):
        p = make_part(GREY, rng)
        assert abs(p.dx) <= 10 and abs(p.dy) <= 10 and abs(p.angle_deg) <= 2
        assert 0.92 <= p.gain <= 1.08 and abs(p.offset) <= 8
        poses.append((p.dx, p.dy, p.angle_deg))
        # undoing the reported warp puts the part back onto the golden
        back = cv2.warpAffine(p.image.astype(np.float32), cv2.invertAffineTransform(p.warp),
                              (640, 480), flags=cv2.INTER_LINEAR)
        g = golden[inner]
        b = back[inner]
        b = (b - b.mean()) / b.std() * g.std() + g.mean()  # remove gain/offset
        assert np.abs(b - g).mean() < 4.0
        if abs(p.dx) + abs(p.dy) > 3:
            raw = p.image.astype(np.float32)[inner]
            assert np.abs(raw - g).mean() > 2 * np.abs(b - g).mean()
    spread = np.ptp(np.array(poses), axis=0)
    assert spread[0] > 8 and spread[1] > 8 and spread[2] > 1.5  # jitter really is used


@pytest.mark.parametrize("mode", DEFECT_MODES)
def test_defect_changes_its_cell_only(mode):
    golden = render_golden(STILL).astype(np.int16)
    rng = np.random.default_rng(11)
    for addr in ("X:1, Y:U", "X:5, Y:C", "X:9, Y:D"):
        part = make_part(STILL, rng, [(addr, mode)])
        assert part.defects == [(addr, mode)] and part.label == "defect"
        diff = np.abs(part.image.astype(np.int16) - golden)
        x, y, w, h = _cell(STILL, addr)
        inside = diff[y:y + h, x:x + w]
        # clearly visible: a strong change over a patch, not a pixel or two
        assert inside.max() > 80, (mode, addr, inside.max())
        assert (inside > 30).sum() >= 40, (mode, addr, (inside > 30).sum())
        outside = diff.copy()
        outside[y:y + h, x:x + w] = 0
        assert outside.max() <= 2, (mode, addr, outside.max())


def test_defects_stand_out_against_good_variation():
    """A golden comparison can catch every mode: the residual (RT "σ") in the defect cell is
    well above the worst of that cell over good parts, after aligning with the true warp."""
    golden = render_golden(GREY).astype(np.float32)
    k = 9

    def sigma(img: np.ndarray, warp: np.ndarray) -> np.ndarray:
        x = cv2.warpAffine(img.astype(np.float32), cv2.invertAffineTransform(warp), (640, 480),
                           flags=cv2.INTER_LINEAR)
        def box(a):
            return cv2.boxFilter(a, -1, (k, k), normalize=False)
        sgg, sxx, sgx = box(golden * golden), box(x * x), box(golden * x)
        se = np.maximum(sxx - sgx * sgx / (sgg + 1e-6), 0)
        return np.sqrt(se / (k * k - 1))

    rng = np.random.default_rng(5)
    good_max: dict[str, float] = {}
    for _ in range(8):
        p = make_part(GREY, rng)
        s = sigma(p.image, p.warp)
        for a in GREY.addresses:
            x, y, w, h = _cell(GREY, a)
            good_max[a] = max(good_max.get(a, 0.0), float(s[y:y + h, x:x + w].max()))
    for mode in DEFECT_MODES:
        for _ in range(3):
            (addr, _m), = sample_defects(GREY, rng, 1, [mode])
            p = make_part(GREY, rng, [(addr, mode)])
            x, y, w, h = _cell(GREY, addr)
            score = float(sigma(p.image, p.warp)[y:y + h, x:x + w].max())
            assert score > 1.3 * good_max[addr], (mode, addr, score, good_max[addr])


def test_bad_defect_requests_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not a cell"):
        render_part(SPEC, rng, [("X:10, Y:C", "bent")])
    with pytest.raises(ValueError, match="not an address"):
        render_part(SPEC, rng, [("3C", "bent")])
    with pytest.raises(ValueError, match="unknown defect mode"):
        render_part(SPEC, rng, [("X:3, Y:C", "melted")])
    with pytest.raises(ValueError):
        LineSpec(size=(640, 480), pitch=(80, 80))  # 9 × 80 > 640
    # address spacing is normalised to make_address's form
    p = make_part(STILL, rng, [("x:3,y:C", "scratch")])
    assert p.defects == [(make_address("3", "C"), "scratch")]


def test_write_line_manifest_and_train_set(tmp_path):
    manifest = write_line(tmp_path / "line", n_good=4, n_defect=6, seed=3, spec=SPEC, n_train=3)
    root = tmp_path / "line"
    assert manifest == root / "manifest.csv"
    assert (root / "golden.png").is_file()
    assert json.loads((root / "grid.json").read_text()) == grid_config(SPEC)

    with open(manifest, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["frame", "label", "defects", "golden"]
    body = rows[1:]
    assert len(body) == 10
    assert sorted(r[1] for r in body) == ["defect"] * 6 + ["pass"] * 4
    for frame, label, defects, golden in body:
        assert (root / frame).is_file() and golden == "golden.png"
        if label == "pass":
            assert defects == ""
        else:
            for a in defects.split(";"):
                parse_address(SPEC, a)
                assert a == make_address(*parse_address(SPEC, a))

    truth = json.loads((root / "line.json").read_text())
    line_modes = {d["mode"] for fr in truth["frames"] if fr["frame"].startswith("frames/")
                  for d in fr["defects"]}
    assert line_modes == set(DEFECT_MODES)  # 6 defect parts cycle through all 5 modes

    with open(root / "train.csv", newline="") as f:
        train = list(csv.DictReader(f))
    assert len(train) == 3 and all(r["label"] == "pass" and r["defects"] == "" for r in train)

    # the replay reader understands what was written
    frames = list(ManifestSource(manifest))
    assert [f.seq for f in frames] == list(range(10))
    assert all(f.ok and f.image.shape == (480, 640, 3) for f in frames)
    assert frames[0].meta["golden"] == str((root / "golden.png").resolve())
    assert {f.meta["label"] for f in frames} == {"pass", "defect"}

    # same seed → same files
    write_line(tmp_path / "again", n_good=4, n_defect=6, seed=3, spec=SPEC, n_train=3)
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == manifest.read_bytes()
    first = body[0][0]
    assert (tmp_path / "again" / first).read_bytes() == (root / first).read_bytes()


def test_synthetic_camera_protocol():
    events: list[tuple[bool, str]] = []
    cam = SyntheticCamera(GREY, seed=1, p_good=0.5, on_health=lambda up, why: events.append(
        (up, why)))
    f = cam.read_latest(0.1)
    assert f.image is None and f.error.startswith("camera_down:")
    assert not cam.healthy

    cam.start()
    assert cam.healthy and events[-1][0] is True
    frames = [cam.read_latest(1.0) for _ in range(10)]
    assert [f.seq for f in frames] == list(range(1, 11))
    assert all(isinstance(f, Frame) and f.ok and f.image.shape == (480, 640) for f in frames)
    assert all(f.source_id == "synthetic" for f in frames)
    assert len({f.meta["part_id"] for f in frames}) == 10
    assert all(b.ts >= a.ts for a, b in itertools.pairwise(frames))
    labels = {f.meta["label"] for f in frames}
    assert labels == {"pass", "defect"}
    for f in frames:
        assert (f.meta["label"] == "defect") == bool(f.meta["defects"])
        assert [m["address"] for m in f.meta["modes"]] == f.meta["defects"]
    assert cam.golden.shape == (480, 640)

    cam.set_available(False, "cable pulled")
    assert not cam.healthy and events[-1] == (False, "cable pulled")
    down = cam.read_latest(0.01)
    assert down.image is None and down.error == "camera_down: cable pulled"
    assert down.seq == 10  # the last returned seq, as LiveCamera reports it
    cam.set_available(True)
    assert cam.healthy and events[-1][0] is True
    assert cam.read_latest(1.0).seq == 11

    cam.close()
    assert not cam.healthy and events[-1][0] is False
    assert cam.read_latest(0.01).error.startswith("camera_down:")


def test_synthetic_camera_rates_and_threads():
    good = SyntheticCamera(GREY, seed=2, p_good=1.0)
    bad = SyntheticCamera(GREY, seed=2, p_good=0.0, modes=["missing"])
    good.start()
    bad.start()
    assert all(good.read_latest(1.0).meta["label"] == "pass" for _ in range(3))
    for _ in range(3):
        f = bad.read_latest(1.0)
        assert f.meta["label"] == "defect"
        assert {m["mode"] for m in f.meta["modes"]} == {"missing"}

    # concurrent readers never get the same seq
    seqs: list[int] = []
    lock = threading.Lock()

    def reader():
        for _ in range(3):
            s = good.read_latest(1.0).seq
            with lock:
                seqs.append(s)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(4, 13))
    good.close()
    bad.close()
