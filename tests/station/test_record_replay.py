"""One code path for live and replay: what a live station recorded replays to the same verdicts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.bench.events import StationClient, StationProcess, write_config
from station.demo.line import build_demo_recipe, write_part_frames


@pytest.mark.slow
def test_live_parts_replay_bit_for_bit_to_the_same_verdicts(tmp_path: Path) -> None:
    recipe = build_demo_recipe(tmp_path, n_train=8).folder
    frames = write_part_frames(tmp_path / "frames", 8, defect_every=2)
    rec_dir = tmp_path / "recordings"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state",
                       camera=frames, fps=30, loop=True, recording_dir=rec_dir)
    with StationProcess(cfg, tmp_path / "state") as st, StationClient(st.endpoints) as c:
        c.wait_live()
        # one part at a time, a frame period or more apart: triggers of one burst all see the
        # part in front of the camera then (the same frame), so a burst may be all good parts
        live: list[dict] = []
        for i in range(32):
            assert c.trigger(f"live-{i}")["ok"]
            live += c.results(1, 10)
            if len(live) >= 8 and {r["verdict"] for r in live} >= {"pass", "defect"}:
                break
            time.sleep(0.05)
        st.signal(signal.SIGTERM)  # a clean stop writes the recordings still queued
        assert st.wait(30) == 0
    assert len(live) == i + 1
    assert {r["verdict"] for r in live} <= {"pass", "defect"}
    assert "defect" in {r["verdict"] for r in live}

    p = subprocess.run([sys.executable, "-m", "station.cli", "replay", str(rec_dir),
                        "--recipe", str(recipe), "--out", str(tmp_path / "replay.jsonl")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    replayed = {r["part_id"]: r for r in
                map(json.loads, (tmp_path / "replay.jsonl").read_text().splitlines())}
    for r in live:
        again = replayed[r["part_id"]]
        assert again["verdict"] == r["verdict"], r["part_id"]
        assert [d["address"] for d in again["defects"]] == [d["address"] for d in r["defects"]]
        live_cells = r["judges"]["metric"]["cells"]
        for cell, score in again["judges"]["metric"]["cells"].items():
            assert abs(score - live_cells[cell]) < 1e-4, (r["part_id"], cell)
