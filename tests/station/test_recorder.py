"""Recorder + RecordingSource on real files: bit-for-bit replay, limits, crash safety, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from camera.recording import RecordingSource, is_recording_dir
from station.recorder import INDEX_NAME, STAGING_NAME, Recorder

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A settable wall clock for the age limits."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _images(rng: np.random.Generator, h: int = 48, w: int = 64) -> dict[str, np.ndarray]:
    return {
        "frame": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),     # noise: incompressible
        "aligned": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),   # not in save → not written
        "metric": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "overlay": rng.integers(0, 256, (h + 20, w + 20, 3), dtype=np.uint8),
    }


def _meta(seq: int, verdict: str, defects: tuple[str, ...] = ()) -> dict:
    return {
        "seq": seq, "ts": f"2024-05-01T12:00:{seq % 60:02d}.000+00:00", "part_id": f"P{seq:04d}",
        "verdict": verdict, "reason": None if verdict != "error" else "alignment_failed: ecc 0.3",
        "defects": [{"address": a, "column": a[2], "row": a[-1], "mode": "bent",
                     "score": np.float32(7.5), "judge": "metric"} for a in defects],
        "prompt": "You are a visual inspector …", "raw_answer": "- your judgement->defective",
        "timings_ms": {"align": np.float64(3.25), "total": 12.5}, "recipe": "abc123",
    }


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for d in root.iterdir() if d.is_dir() and d.name != STAGING_NAME
               for p in d.iterdir())


def test_record_and_replay_bit_for_bit(tmp_path):
    rng = np.random.default_rng(1)
    rec = Recorder(tmp_path / "rec")
    written = []
    for seq, (verdict, defects) in enumerate([("pass", ()), ("defect", ("X:3, Y:C",)),
                                              ("defect", ("X:1, Y:U", "X:9, Y:D"))], start=41):
        imgs = _images(rng)
        if seq == 42:
            imgs["frame"] = rng.integers(0, 256, (48, 64), dtype=np.uint8)  # grey frame
        rid = rec.record(f"2024-05-01/{seq:08d}", imgs, _meta(seq, verdict, defects))
        assert rid and "/" not in rid
        written.append((rid, imgs, seq, verdict, defects))
    assert rec.stats["written"] == 3 and rec.stats["failures"] == 0
    assert rec.total_bytes == _disk_bytes(tmp_path / "rec")

    d = tmp_path / "rec"
    assert is_recording_dir(d)
    lines = [json.loads(x) for x in (d / INDEX_NAME).read_text().splitlines()]
    assert [x["id"] for x in lines] == [w[0] for w in written]
    rid0 = written[0][0]
    assert sorted(p.name for p in (d / rid0).iterdir()) == \
        ["frame.png", "meta.json", "metric.png", "overlay.png"]
    meta = json.loads((d / rid0 / "meta.json").read_text())
    assert meta["prompt"].startswith("You are") and meta["raw_answer"].endswith("defective")
    assert meta["timings_ms"]["align"] == 3.25 and meta["files"]["frame"] == "frame.png"

    frames = list(RecordingSource(d))
    assert len(frames) == 3
    for f, (rid, imgs, seq, verdict, defects) in zip(frames, written, strict=True):
        assert f.ok, f.error
        assert f.image.dtype == imgs["frame"].dtype and f.image.shape == imgs["frame"].shape
        assert np.array_equal(f.image, imgs["frame"])  # bit for bit
        assert f.meta["record_id"] == rid and f.meta["part_id"] == f"P{seq:04d}"
        assert f.meta["label"] == verdict and f.meta["defects"] == list(defects)
        assert f.meta["seq"] == seq and f.meta["ts"] == _meta(seq, verdict)["ts"]
        assert f.meta["record"]["recipe"] == "abc123"
    # the other images are lossless too
    import cv2

    got = cv2.imread(str(d / rid0 / "overlay.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, written[0][1]["overlay"])

    # the project's replay entry point picks the recording up
    from camera.replay import open_replay_source

    src = open_replay_source(d)
    assert isinstance(src, RecordingSource)
    assert [f.meta["record_id"] for f in src] == [w[0] for w in written]


def test_size_limit_deletes_passes_first_and_totals_survive_restart(tmp_path):
    rng = np.random.default_rng(2)
    one = Recorder(tmp_path / "probe", save=("frame",))
    one.record("x", _images(rng), _meta(0, "pass"))
    size = one.total_bytes  # ≈ 9.3 kB of incompressible PNG + meta
    limit = int(size * 10.5)
    d = tmp_path / "rec"
    rec = Recorder(d, max_bytes=limit, save=("frame",))
    verdicts = []
    for i in range(30):
        v = "defect" if i % 5 == 0 else "pass"  # 6 defects, 24 passes
        verdicts.append(v)
        assert rec.record(f"r{i:03d}", _images(rng), _meta(i, v, ("X:2, Y:U",) if v == "defect"
                                                           else ()))
        assert rec.total_bytes <= limit
    kept = rec.record_ids()
    assert rec.total_bytes == _disk_bytes(d)
    defects = [f"r{i:03d}" for i, v in enumerate(verdicts) if v == "defect"]
    assert all(r in kept for r in defects)                      # every defect survived
    passes = [r for r in kept if r not in defects]
    assert passes == [f"r{i:03d}" for i in range(30) if verdicts[i] == "pass"][-len(passes):]
    assert 2 <= len(passes) <= 5                                # newest passes only
    assert rec.stats["pruned"] == 30 - len(kept)

    # when only defects are left over the limit, the oldest defects go
    for i in range(30, 40):
        rec.record(f"r{i:03d}", _images(rng), _meta(i, "defect", ("X:1, Y:C",)))
    kept2 = rec.record_ids()
    assert rec.total_bytes <= limit and "r000" not in kept2 and "r039" in kept2
    assert all(r not in kept2 for r in passes)

    # a new Recorder on the same folder rebuilds the same totals from the index alone
    again = Recorder(d, max_bytes=limit, save=("frame",))
    assert again.total_bytes == rec.total_bytes and again.record_ids() == kept2
    assert [f.meta["record_id"] for f in RecordingSource(d)] == kept2


def test_age_limits_keep_defects_longer(tmp_path):
    rng = np.random.default_rng(3)
    clock = Clock()
    d = tmp_path / "rec"
    rec = Recorder(d, max_age_s=60, defect_max_age_s=600, save=("frame",), clock=clock)
    rec.record("p0", _images(rng), _meta(0, "pass"))
    rec.record("d0", _images(rng), _meta(1, "defect", ("X:4, Y:D",)))
    rec.record("e0", _images(rng), _meta(2, "error"))
    clock.t += 30
    rec.record("p1", _images(rng), _meta(3, "pass"))
    assert rec.record_ids() == ["p0", "d0", "e0", "p1"]
    clock.t += 45  # p0 is 75 s old, p1 45 s
    assert rec.prune() == 1
    assert rec.record_ids() == ["d0", "e0", "p1"] and not (d / "p0").exists()
    clock.t += 100
    rec.record("p2", _images(rng), _meta(4, "pass"))  # record() prunes what is due on its own
    assert rec.record_ids() == ["d0", "e0", "p2"]
    clock.t += 400  # d0/e0 are 575 s old: kept; p2 400 s: gone
    assert rec.prune() == 1 and rec.record_ids() == ["d0", "e0"]
    clock.t += 100  # d0/e0 675 s
    assert rec.prune() == 2 and rec.record_ids() == []
    assert rec.total_bytes == 0 == _disk_bytes(d)
    assert list(RecordingSource(d)) == []  # pruned index lines are skipped silently


def test_crash_leftovers_do_not_break_replay(tmp_path):
    rng = np.random.default_rng(4)
    d = tmp_path / "rec"
    rec = Recorder(d)
    good = [rec.record(f"g{i}", _images(rng), _meta(i, "pass")) for i in range(3)]
    frame_g1 = np.asarray(RecordingSource(d)._frame(0, {"id": good[1]}).image)

    # 1) a write interrupted mid-way by a crash, in staging (pid of a finished process)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stage = d / STAGING_NAME / f"{dead.stdout.strip()}.7.g3"
    stage.mkdir()
    (stage / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # truncated
    # 2) a complete record whose index line was never appended
    rec2 = Recorder(tmp_path / "other")
    rec2.record("orphan", _images(rng), _meta(9, "defect", ("X:5, Y:C",)))
    os.rename(tmp_path / "other" / "orphan", d / "orphan")
    # 3) an index line cut by the crash
    with open(d / INDEX_NAME, "ab") as f:
        f.write(b'{"id": "g3", "t": 17')
    # 4) a record folder whose frame is damaged, and one without meta.json
    (d / good[2] / "frame.png").write_bytes(b"not a png")
    (d / "half").mkdir()
    (d / "half" / "frame.png").write_bytes(b"\x89PNG")

    frames = list(RecordingSource(d))  # no exception
    by_id = {f.meta["record_id"]: f for f in frames}
    assert set(by_id) == {good[0], good[1], good[2], "orphan", "half"}
    assert by_id[good[0]].ok and by_id[good[1]].ok and by_id["orphan"].ok
    assert np.array_equal(by_id[good[1]].image, frame_g1)
    assert by_id["orphan"].meta["label"] == "defect"
    assert by_id[good[2]].image is None
    assert by_id[good[2]].error.startswith("corrupt_frame: ") and "frame.png" in \
        by_id[good[2]].error
    assert by_id["half"].error.startswith("corrupt_frame: ") and "no meta.json" in \
        by_id["half"].error

    # the next start cleans staging, re-indexes the orphan and repairs the cut line
    rec3 = Recorder(d)
    assert not stage.exists()
    assert "orphan" in rec3.record_ids()
    assert rec3.record("g4", _images(rng), _meta(4, "pass")) == "g4"
    lines = (d / INDEX_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["id"] == "g4"  # not glued to the cut line
    assert any(json.loads(x)["id"] == "orphan" for x in lines if x.startswith('{"id": "o'))
    ids = [f.meta["record_id"] for f in RecordingSource(d)]
    assert ids[-1] == "g4" and len(ids) == 6


def test_unwritable_dir_counts_failures_without_raising(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    rec = Recorder(blocker / "rec")  # cannot be created, even as root
    rng = np.random.default_rng(5)
    assert rec.record("r1", _images(rng), _meta(1, "pass")) == ""
    assert rec.record("r2", _images(rng), _meta(2, "defect")) == ""
    s = rec.stats
    assert s["failures"] >= 2 and s["written"] == 0 and s["last_error"]
    assert rec.prune() == 0

    # an image that cannot be encoded is a counted failure too, and leaves nothing behind
    good = Recorder(tmp_path / "rec")
    bad = {"frame": np.zeros((4, 4, 7), np.float64)}
    assert good.record("bad", bad, _meta(3, "pass")) == ""
    assert good.stats["failures"] == 1
    assert list((tmp_path / "rec" / STAGING_NAME).iterdir()) == []
    assert good.record("ok", _images(rng), _meta(4, "pass")) == "ok"

    # the folder removed under a running recorder: failure, then it recovers
    import shutil

    shutil.rmtree(tmp_path / "rec")
    assert good.record("lost", _images(rng), _meta(5, "pass")) == ""
    assert good.record("back", _images(rng), _meta(6, "pass")) == "back"
    assert good.stats["failures"] == 2


def test_full_disk_is_a_counted_failure(tmp_path):
    """A real write error (EFBIG from RLIMIT_FSIZE, what a full disk looks like to write()),
    in a child process so the limit does not touch pytest itself."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from station.recorder import Recorder
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        rec = Recorder({str(tmp_path / "rec")!r}, save=("frame",))
        rng = np.random.default_rng(0)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        big = rec.record("big", {{"frame": rng.integers(0, 256, (200, 200, 3), np.uint8)}},
                         {{"verdict": "pass"}})
        failing = rec.health()
        small = rec.record("small", {{"frame": np.zeros((8, 8), np.uint8)}}, {{"verdict": "pass"}})
        print(json.dumps({{"big": big, "small": small, "stats": rec.stats, "failing": failing,
                           "after": rec.health()}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["big"] == "" and res["small"] == "small"
    assert res["stats"]["failures"] == 1 and "File too large" in res["stats"]["last_error"]
    assert res["failing"]["ok"] is False and "File too large" in res["failing"]["last_error"]
    assert res["after"]["ok"] is True and res["after"]["last_error"] is None  # writes again
    frames = list(RecordingSource(tmp_path / "rec"))
    assert [f.meta["record_id"] for f in frames] == ["small"] and frames[0].ok


@pytest.mark.parametrize("rid", ["../escape", "a/b\\c d", ".hidden", ""])
def test_record_ids_are_sanitised(tmp_path, rid):
    rec = Recorder(tmp_path / "rec", save=("frame",))
    out = rec.record(rid, {"frame": np.zeros((4, 4), np.uint8)}, {"verdict": "pass"})
    assert out and "/" not in out and not out.startswith(".")
    assert (tmp_path / "rec" / out / "frame.png").is_file()
    assert rec.record(rid, {"frame": np.zeros((4, 4), np.uint8)}, {"verdict": "pass"}) != out


def test_record_async_keeps_encoding_out_of_the_loop(tmp_path):
    rng = np.random.default_rng(6)
    d = tmp_path / "rec"
    rec = Recorder(d, save=("frame", "overlay"), max_pending=2)
    sent = []
    for i in range(20):
        imgs = {"frame": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                "overlay": rng.integers(0, 256, (260, 340, 3), dtype=np.uint8)}
        sent.append((rec.record_async(f"a{i:02d}", imgs, _meta(i, "pass")), imgs))
    assert rec.flush(30)
    rec.close()
    s = rec.stats
    ok = [(rid, imgs) for rid, imgs in sent if rid]
    assert s["dropped"] == 20 - len(ok) and s["written"] == len(ok) and s["failures"] == 0
    assert s["dropped"] >= 1 and s["pending"] == 0  # a bounded queue, not unbounded memory
    frames = list(RecordingSource(d))
    assert [f.meta["record_id"] for f in frames] == [rid for rid, _ in ok]  # ids given up front
    assert all(np.array_equal(f.image, imgs["frame"]) for f, (_, imgs) in zip(frames, ok,
                                                                               strict=True))
    assert rec.record_async("late", {"frame": np.zeros((4, 4), np.uint8)}, {}) == "late"
    rec.close()
    assert (d / "late" / "frame.png").is_file()


def test_daemon_meta_shape_and_from_config(tmp_path):
    """The daemon records {"event": <result event>, "prompt", "raw_answer", "frame_meta"} and
    builds the recorder from the station config's recording section."""
    from station.config import RecordingSection, StationConfig

    cfg = StationConfig(recipe="recipe.yaml", path=str(tmp_path / "station.yaml"),
                        recording=RecordingSection(dir="rec", max_bytes=1e6, max_age_days=1,
                                                   defect_max_age_days=3))
    clock = Clock()
    rec = Recorder.from_config(cfg)
    assert rec.dir == tmp_path / "rec" and rec.max_bytes == 1_000_000
    assert rec.max_age_s == 86400 and rec.defect_max_age_s == 3 * 86400
    rec.clock = clock
    rng = np.random.default_rng(7)
    for i, verdict in enumerate(["pass", "defect"]):
        event = {"schema": "inspection-station.event.v1", "seq": 100 + i, "part_id": f"A{i}",
                 "ts": "2024-05-01T00:00:00.000Z", "verdict": verdict, "reason": None,
                 "defects": [{"address": "X:7, Y:U"}] if verdict == "defect" else []}
        rec.record(f"boot-{i:06d}", _images(rng), {"event": event, "prompt": "p",
                                                    "raw_answer": None, "frame_meta": {"a": 1}})
    clock.t += 2 * 86400
    assert rec.prune() == 1 and rec.record_ids() == ["boot-000001"]  # the defect stayed
    (f,) = list(RecordingSource(tmp_path / "rec"))
    assert f.ok and f.meta["label"] == "defect" and f.meta["part_id"] == "A1"
    assert f.meta["defects"] == ["X:7, Y:U"] and f.meta["seq"] == 101


def test_written_before_the_event_then_completed_with_it(tmp_path):
    """The daemon's order: the record is complete on disk before the event is published
    (``index=False``), then :meth:`Recorder.complete` puts the published event in its meta and
    appends its index line; a crash in between leaves a record re-indexed at the next start."""
    rng = np.random.default_rng(4)
    rec = Recorder(tmp_path / "rec")
    rid = rec.record("boot-000001", _images(rng), {"event": {"part_id": "P1", "verdict": "pass"}},
                     index=False)
    assert rid == "boot-000001" and (tmp_path / "rec" / rid / "frame.png").is_file()
    assert not (tmp_path / "rec" / INDEX_NAME).exists()
    event = {"part_id": "P1", "verdict": "pass", "seq": 41, "ts": "2026-12-01T20:00:00.000Z"}
    assert rec.complete(rid, {"event": event})
    meta = json.loads((tmp_path / "rec" / rid / "meta.json").read_text())
    assert meta["event"] == event and meta["files"]["frame"] == "frame.png"
    index = [json.loads(x) for x in (tmp_path / "rec" / INDEX_NAME).read_text().splitlines()]
    assert [(x["id"], x["seq"]) for x in index] == [(rid, 41)]
    rid2 = rec.record("boot-000002", _images(rng), {"event": {"part_id": "P2"}}, index=False)
    assert not rec.complete("no-such-record", {"event": {}})  # counted, never raises
    assert rec.health()["ok"] is False
    reopened = Recorder(tmp_path / "rec")  # "crash" before complete(): re-indexed
    assert reopened.record_ids() == [rid, rid2]
