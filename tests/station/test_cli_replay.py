"""``station golden build``, ``replay`` and ``demo`` as a user runs them (real processes, files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.recipe import Recipe

from support.cli import station


@pytest.mark.slow
def test_golden_build_then_replay_with_report(tmp_path: Path, synthetic_line: Path) -> None:
    line = synthetic_line.parent
    # good frames: the pass rows of the manifest (the CLI skips defect rows)
    p = station("golden", "build", str(synthetic_line), "-o", str(tmp_path / "recipe"),
                "--grid", str(line / "grid.json"))
    assert p.returncode == 0, p.stderr
    built = json.loads(p.stdout)
    assert built["good_frames"] == 14 and built["skipped"] == 7
    recipe = Recipe.load(tmp_path / "recipe")
    assert recipe.short_hash == built["hash"]
    assert len(recipe.settings.thresholds) == 27

    # a folder replay with a corrupt PNG and an empty file among real frames
    frames = tmp_path / "frames"
    frames.mkdir()
    rows = (line / "manifest.csv").read_text().splitlines()[1:6]
    for i, row in enumerate(rows):
        shutil.copy(line / row.split(",")[0], frames / f"f{i}_ok.png")
    (frames / "f2_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (frames / "f3_empty.png").write_bytes(b"")
    p = station("replay", str(frames), "--recipe", str(tmp_path / "recipe"),
                "--out", str(tmp_path / "out.jsonl"), "--report", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stderr
    parts = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(parts) == 7
    errors = [x for x in parts if x["verdict"] == "error"]
    assert len(errors) == 2
    assert all(x["reason"].startswith(("corrupt_frame", "unreadable")) for x in errors)
    assert all(x["verdict"] in ("pass", "defect") for x in parts if x not in errors)

    # the manifest replay: ground truth → confusion counts, and the Markdown report
    p = station("replay", str(synthetic_line), "--recipe", str(tmp_path / "recipe"),
                "--out", str(tmp_path / "m.jsonl"), "--report", str(tmp_path / "rep2"))
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert rep["parts"] == 21 and rep["labelled"] == 21
    assert set(rep["part_confusion"]) == {"tp", "fp", "tn", "fn"}
    assert sum(rep["part_confusion"].values()) == 21
    assert rep["part_confusion"]["fn"] == 0
    assert sum(rep["cell_confusion"].values()) == 21 * 27
    for stage in ("align", "nsoartc", "cells", "overlay", "total"):
        assert set(rep["latency_ms"][stage]) >= {"p50", "p95", "p99"}
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "Score distribution" in md and "Latency" in md


def test_replay_missing_source_is_one_line_error(tmp_path: Path, synthetic_recipe: Recipe) -> None:
    p = station("replay", str(tmp_path / "nothing"), "--recipe", str(synthetic_recipe.folder))
    assert p.returncode != 0
    assert p.stderr.strip().count("\n") == 0 and "error" in p.stderr


@pytest.mark.slow
def test_demo_meets_its_numbers() -> None:
    """Acceptance: 0 misses, false-reject rate ≤ 1 %, address accuracy ≥ 95 % (issue #2)."""
    p = station("demo", "--json", "--quiet", timeout=600)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["parts"] >= 60
    assert summary["misses"] == 0
    assert summary["false_reject_rate"] <= 0.01
    assert summary["address_accuracy"] >= 0.95
    assert summary["errors"] == 0


def test_replay_publishes_journaled_events(tmp_path: Path, synthetic_line: Path,
                                           synthetic_recipe: Recipe) -> None:
    """``replay --publish``: every part goes out as an event.v1 result with consecutive seq."""
    import socket

    import zmq

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"insp.result")
    sub.connect(f"tcp://127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "replay", str(synthetic_line),
                             "--recipe", str(synthetic_recipe.folder), "--limit", "6",
                             "--publish", f"tcp://127.0.0.1:{port}",
                             "--state", str(tmp_path / "state"), "--out", str(tmp_path / "o")])
    try:
        events = []
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while len(events) < 6 and poller.poll(60000):
            topic, body = sub.recv_multipart()
            events.append((topic.decode(), json.loads(body)))
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        sub.close()
    assert len(events) == 6
    assert [e["seq"] for _, e in events] == list(range(1, 7))
    for topic, e in events:
        assert e["schema"] == "inspection-station.event.v1"
        assert topic == f"insp.result.{e['verdict']}"
        assert e["frame"] and e["part_id"]
    assert (tmp_path / "state" / "journal").is_dir()


def test_eval_manifest_layout(tmp_path: Path, synthetic_line: Path,
                              synthetic_recipe: Recipe) -> None:
    """``station eval`` on a manifest scores it like a replay with ground truth."""
    p = station("eval", str(synthetic_line), "--layout", "manifest", "--recipe",
                str(synthetic_recipe.folder), "--report", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["parts"] == summary["labelled"] == 21
    assert summary["misses"] == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == summary


@pytest.mark.slow
def test_demo_serve_answers_triggers(tmp_path: Path, synthetic_recipe: Recipe) -> None:
    """``station demo --serve``: a live station on the synthetic line (ports from --config)."""
    import socket

    import zmq

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(
        f"recipe: {synthetic_recipe.folder}\n"
        f"station: {{id: demo-test, state_dir: {tmp_path / 'state'}}}\n"
        f"events: {{pub: 'tcp://127.0.0.1:{ports[0]}', trigger: 'tcp://127.0.0.1:{ports[1]}',"
        f" catchup: 'tcp://127.0.0.1:{ports[2]}'}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "demo", "--serve", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"insp.result")
    sub.connect(f"tcp://127.0.0.1:{ports[0]}")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{ports[1]}")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the station says it is ready
        assert "demo station ready" in line, line
        time.sleep(0.5)  # the subscription reaches the PUB socket (ZeroMQ slow joiner)
        results = []
        for i in range(5):
            dealer.send_multipart([b"", json.dumps({"cmd": "trigger",
                                                    "part_id": f"D{i}"}).encode()])
            assert dealer.poll(10000)
            ack = json.loads(dealer.recv_multipart()[-1])
            assert ack["ok"] is True, ack
            assert sub.poll(20000)
            results.append(json.loads(sub.recv_multipart()[1]))
        assert [r["part_id"] for r in results] == [f"D{i}" for i in range(5)]
        assert all(r["verdict"] in ("pass", "defect") for r in results)
        assert [r["seq"] for r in results] == sorted({r["seq"] for r in results})
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        sub.close()
        dealer.close()
