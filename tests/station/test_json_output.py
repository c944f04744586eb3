"""Clean machine output (issue 10 item 5): every command's JSON output, run as a real
subprocess, is JSON objects only on stdout, one per line; human text goes to stderr.
(``station model check --json``: in ``tests/station/test_model_cli.py``, on the models it builds,
stdout captured at the file-descriptor level.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from camera.synth import LineSpec, write_line
from station.bench.events import write_config
from station.cmd_bench import flatten

from support.cli import station


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as one JSON object (AssertionError naming the first that is
    not); an empty stdout is an error too."""
    assert stdout.endswith("\n"), repr(stdout[-200:])
    objs = []
    for n, line in enumerate(stdout.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"stdout line {n} is not JSON: {line[:200]!r}") from None
        assert isinstance(obj, dict), f"stdout line {n} is not an object: {line[:200]!r}"
        objs.append(obj)
    return objs


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 320×240 labelled line, its frames as an unlabelled folder, and a recipe built by the
    CLI (its output checked here)."""
    tmp = tmp_path_factory.mktemp("jsonout")
    manifest = write_line(tmp / "line", 6, 3, seed=4, spec=LineSpec(size=(320, 240)), n_train=8)
    folder = tmp / "frames"
    shutil.copytree(manifest.parent / "frames", folder)
    recipe = tmp / "recipe"
    p = station("golden", "build", str(manifest.parent / "train.csv"), "-o", str(recipe),
                "--grid", str(manifest.parent / "grid.json"))
    assert p.returncode == 0, p.stderr
    (built,) = json_lines(p.stdout)
    assert built["good_frames"] == 8 and len(built["agreement"]["outliers"]) <= 1
    return {"manifest": manifest, "folder": folder, "recipe": recipe, "tmp": tmp}


def test_replay_eval_check_config(line: dict[str, Path]) -> None:
    p = station("replay", str(line["folder"]), "--recipe", str(line["recipe"]), "--json")
    assert p.returncode == 0, p.stderr
    objs = json_lines(p.stdout)
    assert len(objs) == 10 and "summary" in objs[-1]
    assert all(o["verdict"] in ("pass", "defect") for o in objs[:-1])
    assert "9 parts" in p.stderr  # the human line

    p = station("eval", str(line["manifest"]), "--recipe", str(line["recipe"]), "--json")
    assert p.returncode == 0, p.stderr
    (summary,) = json_lines(p.stdout)
    assert summary["parts"] == summary["labelled"] == 9

    cfg = write_config(line["tmp"] / "station.yaml", recipe=line["recipe"],
                       state_dir=line["tmp"] / "state")
    p = station("check-config", str(cfg), "--json")
    assert p.returncode == 0, p.stderr
    (checked,) = json_lines(p.stdout)
    assert checked["ok"] is True


@pytest.mark.slow
def test_demo_json_is_one_line_and_the_feed_goes_to_stderr() -> None:
    p = station("demo", "--json", "--parts", "6", "--train", "6", "--size", "320x240")
    assert p.returncode == 0, p.stderr
    (summary,) = json_lines(p.stdout)
    assert summary["parts"] == 6 and "latency_ms" in summary
    assert p.stderr.count(" ms") >= 6 and "6 parts:" in p.stderr  # feed + human summary
    p = station("demo", "--json", "--quiet", "--parts", "4", "--train", "6", "--size", "320x240")
    assert p.returncode == 0, p.stderr
    assert len(json_lines(p.stdout)) == 1


@pytest.mark.slow
def test_bench_json_is_one_line() -> None:
    p = station("bench", "--json", "--size", "320x240", "--repeats", "2")
    assert p.returncode == 0, p.stderr
    (result,) = json_lines(p.stdout)
    assert result["frame"] == [320, 240] and result["total_ms"] > 0


def test_bench_human_listing_has_no_python_dicts() -> None:
    rows = flatten({"trigger_result_ms": {"p50": 1.5, "n": 3}, "frame": [320, 240], "x": 1})
    assert rows == [("trigger_result_ms.p50", 1.5), ("trigger_result_ms.n", 3),
                    ("frame", "320 240"), ("x", 1)]


def _run_with_tty_stderr(args: list[str]) -> tuple[int, str, bytes]:
    """Run ``station ARGS`` with stderr on a 120-column pseudo-terminal; (rc, stdout, stderr)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "station.cli", *args], stdout=subprocess.PIPE,
                         stderr=slave)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = p.stdout.read().decode() if p.stdout else ""
    os.close(master)
    return p.wait(), out, err


def test_progress_bar_on_a_terminal_only(line: dict[str, Path]) -> None:
    args = ["replay", str(line["folder"]), "--recipe", str(line["recipe"])]
    rc, out, err = _run_with_tty_stderr(args)
    assert rc == 0, err[-2000:]
    # tqdm's bar on stderr, counting the 9 parts (which counts it shows depends on its refresh
    # rate; the bar is cleared when done)
    assert b"replay:" in err and re.search(rb"\d/9 \[", err)
    assert len(json_lines(out)) == 10  # stdout untouched
    p = station(*args)  # stderr a pipe: no bar
    assert p.returncode == 0 and "replay:" not in p.stderr and "9/9" not in p.stderr
