"""Station config and recipe validation: every mistake names file:line; the CLI exits 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.base.errors import EXIT_CONFIG, ConfigError
from pipeline.recipe import Recipe
from station.config import load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def recipe_dir(synthetic_recipe: Recipe) -> Path:
    assert synthetic_recipe.folder is not None
    return synthetic_recipe.folder


def test_good_config_loads(tmp_path: Path, recipe_dir: Path) -> None:
    cfg = load_config(write(tmp_path / "s.yaml", f"""
station: {{id: line1-st1, state_dir: state}}
recipe: {recipe_dir}
mode: free_run
free_run: {{rate_hz: 5}}
camera: {{source: "rtsp://127.0.0.1:8554/cam", read_timeout_s: 1.5}}
events: {{pub: "tcp://127.0.0.1:7556"}}
policy: metric
"""))
    assert cfg.station.id == "line1-st1"
    assert cfg.mode == "free_run" and cfg.free_run.rate_hz == 5.0
    assert cfg.camera.read_timeout_s == 1.5 and cfg.camera.reconnect.max_s == 10.0
    assert cfg.events.pub == "tcp://127.0.0.1:7556" and cfg.events.trigger == "tcp://*:5555"
    assert cfg.resolve(cfg.station.state_dir) == (tmp_path / "state").resolve()


@pytest.mark.parametrize(("body", "line", "message"), [
    ("mode: trigger\nfree_run: {rate_hz: fast}\n", 3, "expected a number"),
    ("mode: trigger\ncamera:\n  source: 0\n  read_timout_s: 2\n", 5,
     "unknown key 'camera.read_timout_s'"),
    ("mode: sometimes\n", 2, "must be one of"),
    ("policy: majority\n", 2, "must be one of"),
    ("events:\n  pub: tcp://*:1\n  trigger: tcp://*:1\n", 2, "different endpoints"),
    ("camera: {reconnect: {initial_s: 5, max_s: 1}}\n", 2, "initial_s"),
    ("mode: [trigger\n", 3, "YAML syntax"),
])
def test_errors_name_file_and_line(tmp_path: Path, recipe_dir: Path, body: str, line: int,
                                   message: str) -> None:
    path = write(tmp_path / "bad.yaml", f"recipe: {recipe_dir}\n{body}")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:{line}" in str(err.value)
    assert message in str(err.value)


def test_missing_recipe_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no recipe\.yaml"):
        load_config(write(tmp_path / "s.yaml", "station: {id: a}\nrecipe: nowhere\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="missing required key 'recipe'"):
        load_config(write(tmp_path / "t.yaml", "station: {id: a}\n"))


def test_recipe_errors_name_line(tmp_path: Path, recipe_dir: Path) -> None:
    import shutil

    bad = tmp_path / "recipe"
    shutil.copytree(recipe_dir, bad)
    text = (bad / "recipe.yaml").read_text()
    (bad / "recipe.yaml").write_text(text.replace("window: 9", "window: 8"))
    with pytest.raises(ConfigError, match=r"recipe.yaml:\d+: nsoartc: window must be odd"):
        Recipe.load(bad)
    lines = text.splitlines()
    i = next(n for n, t in enumerate(lines) if t.startswith("thresholds:"))
    del lines[i + 1]  # one cell loses its threshold
    (bad / "recipe.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=f"recipe.yaml:{i + 1}: thresholds missing for 1 cell"):
        Recipe.load(bad)


def test_cli_exit_78(tmp_path: Path, recipe_dir: Path) -> None:
    path = write(tmp_path / "bad.yaml", f"recipe: {recipe_dir}\nmode: sometimes\n")
    proc = subprocess.run([sys.executable, "-m", "station.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_CONFIG
    assert f"{path}:2" in proc.stderr and proc.stderr.count("\n") == 1
    good = write(tmp_path / "good.yaml", f"recipe: {recipe_dir}\n")
    proc = subprocess.run([sys.executable, "-m", "station.cli", "check-config", str(good)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout
