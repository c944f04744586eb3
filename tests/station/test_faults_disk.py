"""Fault injection: a full disk is a state, not a crash.

A real small file system (tmpfs with ``size=``, mounted for the test) holds the station's state
directory (journal) and its recordings; a real station process judges parts from LiveCamera while
a filler file takes the space away, gives it back, takes it again; the station is killed (-9) and
restarted while the disk is full.  Mounting needs root (as here and in CI); elsewhere the test is
skipped and says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.recipe import Recipe
from station.bench.events import StationClient, StationProcess, write_config
from station.demo.line import write_part_frames

from support.faults import journal_lines, with_sections

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted at ``tmp_path/fs`` for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (the suite runs as root in CI)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(filler: Path, leave: int) -> None:
    """Grow ``filler`` until only about ``leave`` bytes are free on its file system (the station
    writes meanwhile: what is free moves, so allocate in shrinking steps)."""
    with open(filler, "ab") as f:
        for _ in range(1000):
            want = _free(filler.parent) - leave
            if want < 4096:
                return
            size = f.seek(0, os.SEEK_END)
            while want >= 4096:
                try:
                    os.posix_fallocate(f.fileno(), size, want)
                    break
                except OSError:
                    want //= 2


def _refill(filler: Path) -> bool:
    """Fill the file system again (a full disk stays full while the station deletes old
    recordings to make room); always False, for use inside a wait condition."""
    _fill(filler, 0)
    return False


class _Line:
    """Triggers parts every ``period`` s from a bridge-like client and records what comes back."""

    def __init__(self, c: StationClient, prefix: str) -> None:
        self.c, self.prefix, self.n = c, prefix, 0
        self.acks: list[dict[str, Any]] = []
        self.stream: list[tuple[str, dict[str, Any]]] = []

    def run(self, seconds: float, until: Any = None, period: float = 0.1) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.n += 1
            self.acks.append(self.c.trigger(f"{self.prefix}-{self.n:04d}", timeout=10))
            t_next = time.monotonic() + period
            while time.monotonic() < t_next:
                msg = self.c.recv(max(0.0, t_next - time.monotonic()))
                if msg is not None:
                    self.stream.append(msg)
            if until is not None and until(self):
                return True
        return until is None

    def seen(self, topic: str, **fields: Any) -> list[dict[str, Any]]:
        return [ev for t, ev in self.stream
                if t.startswith(topic) and all(ev.get(k) == v for k, v in fields.items())]


def _disk_full_beats(line: _Line) -> list[dict[str, Any]]:
    return [hb for hb in line.seen("insp.heartbeat", state="degraded", reason="disk_full")
            if hb["disk"]["ok"] is False]


@pytest.mark.slow
def test_full_disk_degrades_recovers_and_survives_kill_9(
        tmp_path: Path, small_fs: Path, synthetic_recipe: Recipe) -> None:
    assert synthetic_recipe.folder is not None
    frames = write_part_frames(tmp_path / "frames", 8)
    state, rec = small_fs / "state", small_fs / "recordings"
    cfg = with_sections(
        write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder, state_dir=state,
                     camera=frames, fps=30, loop=True, recording_dir=rec, heartbeat_s=0.5),
        events={"journal_segment_mb": 1, "journal_max_mb": 8})
    filler = small_fs / "filler"
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        c.wait_live()
        line = _Line(c, "a")
        assert line.run(3.0)
        assert line.seen("insp.result.pass")
        # 1. the recordings no longer fit: parts are still judged, their events say frame null
        _fill(filler, 600_000)
        assert line.run(40, lambda ln: any(ev["frame"] is None
                                           for ev in ln.seen("insp.result.")))
        assert line.run(10, lambda ln: any(hb["recorder"]["ok"] is False
                                           for hb in ln.seen("insp.heartbeat")))
        assert line.seen("insp.status", state="degraded") == []  # the journal still writes
        # 2. nothing fits any more: degraded / disk_full, triggers refused, heartbeats go on
        # the disk stays full: what the station frees (old recordings) is taken again at once
        assert line.run(30, lambda ln: _refill(filler) or ln.seen(
            "insp.status", state="degraded", reason="disk_full")), "no disk_full on the bus"
        assert line.run(5, lambda ln: len(_disk_full_beats(ln)) >= 3)
        assert line.acks[-1] == {"ok": False, "error": "unavailable", "reason": "disk_full"}
        assert c.status()["state"] == "degraded"
        # 3. space comes back: the station resumes by itself, no restart
        filler.unlink()
        assert line.run(20, lambda ln: ln.seen("insp.status", state="ready",
                                               reason="disk space available again")), [
            (ev["state"], ev["reason"]) for ev in line.seen("insp.status")]
        n_before = len(line.seen("insp.result."))
        assert line.run(20, lambda ln: len(ln.seen("insp.result.pass")) > 0
                        and len(ln.seen("insp.result.")) > n_before + 3)
        assert line.acks[-1]["ok"] is True
        # 4. full again, then kill -9 in that state
        assert line.run(30, lambda ln: _refill(filler) or len(ln.seen(
            "insp.status", state="degraded", reason="disk_full")) >= 2)
        st.signal(signal.SIGKILL)
        st.wait(10)
    seen = {ev["seq"]: ev for _, ev in line.stream if "seq" in ev}
    entries, bad = journal_lines(state)
    assert not bad, bad[:3]  # no half line, nothing glued
    on_disk = {s: ev for s, _, ev in entries}
    assert len(on_disk) == len(entries)  # no seq twice
    for s, ev in seen.items():
        assert on_disk[s] == ev  # everything published is journaled, unchanged
    for ev in line.seen("insp.result."):
        if ev["frame"] is not None:  # an event names only a recording that exists
            assert (rec / ev["frame"] / "meta.json").is_file(), ev["frame"]

    # 5. restart while the disk is still full: a state again, not a crash loop
    log = open(tmp_path / "restart.log", "ab")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "-c", str(cfg)],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        with StationClient(st.endpoints) as c:
            line2 = _Line(c, "b")
            hb = c.wait_live(60)
            assert line2.run(30, lambda ln: _disk_full_beats(ln)), "restarted station not degraded"
            assert proc.poll() is None
            assert line2.acks[-1] == {"ok": False, "error": "unavailable", "reason": "disk_full"}
            filler.unlink()
            assert line2.run(30, lambda ln: len(ln.seen("insp.result.")) >= 3)
            new = [ev["seq"] for ev in line2.seen("insp.result.")]
            assert min(new) > max(seen), (min(new), max(seen))  # no seq reused
            assert hb["boot"] != next(iter(seen.values()))["boot"]
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
    entries, bad = journal_lines(state)
    assert not bad
    seqs = [s for s, _, _ in entries]
    assert seqs == sorted(set(seqs))
