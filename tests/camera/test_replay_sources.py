"""Replay sources on real files: image folders, videos, manifests, DeepPCB."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.deeppcb import DeepPcbSource, parse_boxes
from camera.replay import (
    FrameReadError,
    ImageFolderSource,
    ManifestSource,
    SourceError,
    VideoFileSource,
    normalize_address,
    open_replay_source,
    read_image,
)

from support.deeppcb import DEEPPCB
from support.video import write_mjpeg_avi


def _png(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    buf.tofile(str(path))
    return path


def _grey(value: int, shape=(24, 32)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


# ---------------------------------------------------------------------------------------------
# image folder


def test_folder_goes_on_past_corrupt_and_empty_files(tmp_path):
    _png(tmp_path / "frame_1.png", _grey(10))
    good = _png(tmp_path / "frame_2.png", _grey(20))
    corrupt = tmp_path / "frame_3.png"
    corrupt.write_bytes(good.read_bytes()[:40] + b"\x00garbage" * 20)  # PNG header, bad body
    empty = tmp_path / "frame_4.png"
    empty.write_bytes(b"")
    _png(tmp_path / "frame_5.jpg", cv2.cvtColor(_grey(128), cv2.COLOR_GRAY2BGR))
    _png(tmp_path / "frame_10.bmp", _grey(100))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder with an image name is not a frame

    src = ImageFolderSource(tmp_path)
    assert len(src) == 6
    frames = list(src)
    assert [f.seq for f in frames] == list(range(6))
    # natural order: frame_10 after frame_5
    assert [Path(f.meta["path"]).name for f in frames] == [
        "frame_1.png", "frame_2.png", "frame_3.png", "frame_4.png", "frame_5.jpg", "frame_10.bmp"]
    assert [f.meta["part_id"] for f in frames][:2] == ["frame_1", "frame_2"]
    ok = [f for f in frames if f.ok]
    assert len(ok) == 4
    assert frames[0].image.shape == (24, 32) and frames[0].image[0, 0] == 10
    assert frames[4].image.shape == (24, 32, 3)  # colour stays colour
    assert frames[2].image is None and frames[2].error.startswith(f"corrupt_frame: {corrupt}: ")
    assert frames[3].image is None and frames[3].error == f"corrupt_frame: {empty}: empty file"
    assert all(f.source_id == f"folder:{tmp_path}" for f in frames)
    assert frames[5].ts >= frames[0].ts


def test_folder_errors_and_single_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        ImageFolderSource(tmp_path / "nope")
    assert list(ImageFolderSource(tmp_path)) == []
    one = _png(tmp_path / "one.png", _grey(7))
    frames = list(ImageFolderSource(one))
    assert len(frames) == 1 and frames[0].image[0, 0] == 7


def test_read_image_normalises_depth_and_alpha(tmp_path):
    deep = np.array([[0, 257 * 100, 65535]], np.uint16)
    assert read_image(_png(tmp_path / "d.png", deep)).tolist() == [[0, 100, 255]]
    assert read_image(_png(tmp_path / "d.tif", deep)).dtype == np.uint8

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 17
    img = read_image(_png(tmp_path / "a.png", bgra))
    assert img.shape == (3, 4, 3) and img[0, 0, 0] == 200

    grey = read_image(_png(tmp_path / "g.png", _grey(33)))
    assert grey.ndim == 2 and grey.dtype == np.uint8

    with pytest.raises(FrameReadError) as e:
        read_image(tmp_path / "missing.png")
    assert e.value.kind == "unreadable" and str(e.value).startswith("unreadable: ")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(FrameReadError) as e:
        read_image(tmp_path / "junk.png")
    assert e.value.kind == "corrupt_frame"


# ---------------------------------------------------------------------------------------------
# video


def test_video_file_is_read_back(tmp_path):
    path = tmp_path / "line.avi"
    write_mjpeg_avi(path, 8)
    src = open_replay_source(path)
    assert isinstance(src, VideoFileSource)
    frames = list(src)
    assert [f.seq for f in frames] == list(range(8))
    assert all(f.ok and f.image.shape == (48, 64, 3) for f in frames)
    means = [float(f.image[:5, :5].mean()) for f in frames]
    assert means == sorted(means) and abs(means[0] - 20) < 6 and abs(means[-1] - 195) < 6
    assert frames[3].meta["frame_index"] == 3 and frames[3].meta["part_id"] == "line-000003"
    assert frames[0].source_id == f"video:{path}"
    # a second pass reopens the file
    assert len(list(src)) == 8
    src.close()


def test_video_that_cannot_be_opened_fails_at_open(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"this is no video" * 64)
    with pytest.raises(SourceError, match=r"broken\.avi"):
        VideoFileSource(bad)
    with pytest.raises(SourceError, match="no such file"):
        VideoFileSource(tmp_path / "absent.avi")


# ---------------------------------------------------------------------------------------------
# manifest


def test_manifest_parsing(tmp_path):
    (tmp_path / "imgs").mkdir()
    _png(tmp_path / "imgs" / "p0.png", _grey(50))
    _png(tmp_path / "imgs" / "p1.png", _grey(60))
    _png(tmp_path / "golden.png", _grey(55))
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "\ufeffframe,label,defects,golden,station\n"
        "# a comment line\n"
        "imgs/p0.png,pass,,golden.png,st1\n"
        "\n"
        'imgs/p1.png,DEFECT,"X:3,Y:C; x:9, y:U",,st2\n'
        "imgs/gone.png,defect\n",
        encoding="utf-8",
    )
    src = ManifestSource(csv_path)
    assert len(src) == 3
    frames = list(src)
    assert [f.seq for f in frames] == [0, 1, 2]
    f0, f1, f2 = frames
    assert f0.ok and f0.image[0, 0] == 50
    assert f0.meta["label"] == "pass" and f0.meta["defects"] == []
    assert f0.meta["golden"] == str((tmp_path / "golden.png").resolve())
    assert f0.meta["path"] == str((tmp_path / "imgs" / "p0.png").resolve())
    assert f0.meta["part_id"] == "p0" and f0.meta["line"] == 3 and f0.meta["station"] == "st1"
    assert f1.meta["label"] == "defect" and "golden" not in f1.meta
    assert f1.meta["defects"] == ["X:3, Y:C", "X:9, Y:U"]
    # a row cut short after the required columns is fine; its image is missing → error frame
    assert f2.image is None and f2.error.startswith("unreadable: ")
    assert f2.meta["label"] == "defect" and f2.meta["defects"] == []
    assert f0.source_id == f"manifest:{csv_path}"


@pytest.mark.parametrize(
    ("body", "line", "match"),
    [
        ("a.png,pass,,\nb.png,maybe,,\n", 3, "label 'maybe'"),
        ("a.png,pass,,\nb.png\n", 3, "missing column"),
        ('a.png,pass,"X:3, Y:C",\n', 2, "'pass' with defects"),
        ("a.png,defect,3C,\n", 2, "not an address"),
        ("a.png,defect,X:3, Y:C\n", 2, "quote the defects field"),
        (",pass,,\n", 2, "empty 'frame'"),
        ("a.png,pass,,,extra,more\n", 2, "fields"),
    ],
)
def test_manifest_bad_row_names_file_and_line(tmp_path, body, line, match):
    p = tmp_path / "bad.csv"
    p.write_text("frame,label,defects,golden\n" + body)
    with pytest.raises(SourceError, match=match) as e:
        ManifestSource(p)
    assert f"{p}:{line}" in str(e.value)


def test_manifest_bad_header_and_missing_file(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("image,verdict\na.png,pass\n")
    with pytest.raises(SourceError, match=r"h\.csv:1: .*lacks column"):
        ManifestSource(p)
    with pytest.raises(SourceError, match="no such file"):
        ManifestSource(tmp_path / "absent.csv")
    with pytest.raises(SourceError):
        open_replay_source(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------------------------
# dispatch


def test_open_replay_source_dispatch(tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    _png(folder / "a.png", _grey(1))
    assert isinstance(open_replay_source(folder), ImageFolderSource)
    assert isinstance(open_replay_source(folder / "a.png"), ImageFolderSource)

    (tmp_path / "m.csv").write_text("frame,label,defects,golden\nfolder/a.png,pass,,\n")
    assert isinstance(open_replay_source(tmp_path / "m.csv"), ManifestSource)

    line = tmp_path / "line"
    line.mkdir()
    (line / "manifest.csv").write_text("frame,label,defects,golden\n")
    assert isinstance(open_replay_source(line), ManifestSource)

    # a recording folder goes to camera.recording.RecordingSource (imported on demand)
    opened: list[Path] = []

    class FakeRecording:
        def __init__(self, path):
            opened.append(Path(path))

    fake = types.ModuleType("camera.recording")
    fake.RecordingSource = FakeRecording
    monkeypatch.setitem(sys.modules, "camera.recording", fake)
    for marker in ("recording.jsonl", "index.jsonl"):
        rec = tmp_path / f"rec_{marker}"
        rec.mkdir()
        (rec / marker).write_text("")
        assert isinstance(open_replay_source(rec), FakeRecording)
        assert opened[-1] == rec

    (tmp_path / "x.dat").write_bytes(b"1")
    with pytest.raises(SourceError, match="unknown file type"):
        open_replay_source(tmp_path / "x.dat")
    with pytest.raises(SourceError, match="no such file"):
        open_replay_source(tmp_path / "missing")


def test_normalize_address():
    assert normalize_address("x:3,y:C") == "X:3, Y:C"
    assert normalize_address("  X : 10 ,  Y : D ") == "X:10, Y:D"
    with pytest.raises(ValueError):
        normalize_address("X3 YC")


# ---------------------------------------------------------------------------------------------
# DeepPCB


def test_deeppcb_real_index():
    src = DeepPcbSource(DEEPPCB)
    assert len(src) == 299
    row0 = src.rows[0]
    assert row0["part_id"] == "00041009" and row0["group"] == "group00041"
    assert row0["boxes"][0] == [520, 453, 559, 486, 1]
    assert all(r["label"] == "defect" and len(r["boxes"]) >= 1 for r in src.rows)
    assert sum(len(r["boxes"]) for r in src.rows) > 1500

    some = DeepPcbSource(DEEPPCB, groups=["group13000"], limit=3)
    frames = list(some)
    assert [f.seq for f in frames] == [0, 1, 2]
    for f in frames:
        assert f.ok and f.image.shape[:2] == (640, 640)
        assert f.meta["group"] == "group13000" and f.meta["label"] == "defect"
        assert Path(f.meta["golden"]).is_absolute() and Path(f.meta["golden"]).is_file()
        assert f.meta["golden"].endswith("_temp.jpg") and f.meta["path"].endswith("_test.jpg")
        assert Path(f.meta["path"]).stem.startswith(f.meta["part_id"])
        for x1, y1, x2, y2, cls in f.meta["boxes"]:
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 640 and 1 <= cls <= 6
    # the index CSV itself is accepted too
    assert len(DeepPcbSource(DEEPPCB / "index.csv", limit=5)) == 5


def test_deeppcb_bad_index(tmp_path):
    (tmp_path / "index.csv").write_text(
        "id,group,test,template,boxes\n"
        "1,g,a_test.jpg,a_temp.jpg,1 2 3 4 1\n"
        "2,g,b_test.jpg,b_temp.jpg,1 2 3 1\n")
    with pytest.raises(SourceError, match=r"index\.csv:3: .*4 numbers"):
        DeepPcbSource(tmp_path)
    (tmp_path / "index.csv").write_text(
        "id,group,test,template,boxes\n1,g,a_test.jpg,a_temp.jpg,1 2 3 4 1\n")
    frames = list(DeepPcbSource(tmp_path))  # images missing: an error frame, not an exception
    assert len(frames) == 1 and frames[0].error.startswith("unreadable: ")
    assert parse_boxes("1 2 3 4 5; 10 20 30 40 6;") == [[1, 2, 3, 4, 5], [10, 20, 30, 40, 6]]
    with pytest.raises(ValueError):
        parse_boxes("5 5 1 1 1")
    with pytest.raises(SourceError, match="no such file"):
        DeepPcbSource(tmp_path / "nowhere")
