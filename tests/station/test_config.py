"""Station config and recipe validation: every mistake names file:line; the CLI exits 78."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.base.errors import EXIT_CONFIG, ConfigError
from pipeline.recipe import Recipe, seal_recipe
from pipeline.vlm.settings import effective_vlm_settings
from station.config import load_config

from support.cli import station
from support.files import write


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
    assert cfg.camera.read_timeout_s == 1.5 and cfg.camera.options.reconnect.max_s == 10.0
    # endpoints not named listen on the loopback interface only
    assert cfg.events.pub == "tcp://127.0.0.1:7556"
    assert cfg.events.trigger == "tcp://127.0.0.1:5555"
    assert cfg.events.catchup == "tcp://127.0.0.1:5557"
    assert cfg.resolve(cfg.station.state_dir) == (tmp_path / "state").resolve()


@pytest.mark.parametrize(("body", "line", "message"), [
    ("mode: trigger\nfree_run: {rate_hz: fast}\n", 3, "expected a number"),
    ("mode: trigger\ncamera:\n  source: 0\n  read_timout_s: 2\n", 5,
     "unknown key 'camera.read_timout_s'"),
    ("mode: sometimes\n", 2, "must be one of"),
    ("policy: majority\n", 2, "must be one of"),
    ("events:\n  pub: tcp://*:1\n  trigger: tcp://*:1\n", 4, "different endpoints"),
    ("events:\n  heartbeat_s: 1\n  pub: tcp://127.0.0.1:70000\n", 4,
     "events.pub: port '70000' of 'tcp://127.0.0.1:70000' is outside 1-65535"),
    ("events: {catchup: 'tcp://127.0.0.1:-5'}\n", 2, "outside 1-65535"),
    ("events:\n  trigger: 'tcp://127.0.0.1'\n", 3, "is not a tcp endpoint"),
    ("events:\n  trigger: 'udp://127.0.0.1:5555'\n", 3, "is not a ZeroMQ endpoint"),
    ("policy: any\nmode: trigger\npolicy: metric\n", 4,
     "duplicate key 'policy' (first given at line 2"),
    ("events:\n  pub: tcp://127.0.0.1:7001\n  pub: tcp://127.0.0.1:7002\n", 4,
     "duplicate key 'events.pub'"),
    ("vlm:\n  enabled: false\n  mode: fast\n", 4, "vlm.mode: must be one of"),
    ("vlm:\n  prompts:\n    dts: hello\n", 4, "unknown key 'vlm.prompts.dts'"),
    ("vlm:\n  threshold: 2\n", 3, "vlm.threshold: must be between 0 and 1"),
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
    proc = station("check-config", str(path))
    assert proc.returncode == EXIT_CONFIG
    assert f"{path}:2" in proc.stderr and proc.stderr.count("\n") == 1
    good = write(tmp_path / "good.yaml", f"recipe: {recipe_dir}\n")
    proc = station("check-config", str(good))
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout


# --- the VLM settings: recipe vlm: <- station vlm: <- command line, merged once ------------------


def copy_recipe(recipe_dir: Path, dest: Path, vlm_yaml: str) -> Path:
    """The test recipe with ``vlm_yaml`` (a ``vlm:`` block) appended to its recipe.yaml."""
    shutil.copytree(recipe_dir, dest)
    text = (dest / "recipe.yaml").read_text()
    assert "\nvlm: {}\n" in text  # the demo recipe sets no vlm key
    (dest / "recipe.yaml").write_text(text.replace("\nvlm: {}\n", "\n") + vlm_yaml)
    seal_recipe(dest)  # a deliberate edit: sealed again, as `station recipe seal` does
    return dest


def model_folder(path: Path) -> Path:
    """A folder that looks like a local model (config.json); loading it is not this test's job."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen2_vl"}')
    return path


def test_vlm_layers_merge_key_by_key(tmp_path: Path, recipe_dir: Path) -> None:
    recipe = Recipe.load(copy_recipe(recipe_dir, tmp_path / "recipe", (
        "vlm:\n"
        "  mode: generate\n"
        "  pin_count: 12\n"
        "  prompts: {dst: 'recipe dst {pin_count}', raw: recipe raw}\n"
        "  model_dir: models/from-recipe\n")))
    model = model_folder(tmp_path / "conf" / "models" / "qwen")
    cfg = load_config(write(tmp_path / "conf" / "s.yaml", (
        f"recipe: {recipe.folder}\n"
        "vlm:\n"
        "  enabled: true\n"
        "  model_dir: models/qwen\n"       # relative to this file
        "  prompts: {raw: station raw}\n")))
    s = effective_vlm_settings(recipe.settings, cfg)
    assert s.enabled and s.mode == "generate" and s.pin_count == 12  # recipe keys kept
    assert s.model_dir == str(model.resolve())                      # the config's wins
    assert s.prompts.raw == "station raw"                            # one prompt replaced ...
    assert s.prompts.dst == "recipe dst {pin_count}"                 # ... the recipe's others kept
    assert s.prompts.single.startswith("You are visual inspector")   # ... and the defaults
    # the recipe alone: the judge is off (nobody enabled it), nothing checked about the model
    alone = effective_vlm_settings(recipe.settings)
    assert not alone.enabled
    assert alone.model_dir == str((recipe.folder / "models/from-recipe").resolve())
    # command-line flags are the top layer (``--vlm DIR``)
    other = model_folder(tmp_path / "other")
    s = effective_vlm_settings(recipe.settings, cfg, {"model_dir": str(other), "mode": "scored"})
    assert s.model_dir == str(other) and s.mode == "scored" and s.prompts.raw == "station raw"
    with pytest.raises(ConfigError, match=r"^command line: vlm\.backend: must be one of"):
        effective_vlm_settings(recipe.settings, cfg, {"backend": "fastest"})


def test_vlm_errors_name_the_file_that_set_the_value(tmp_path: Path, recipe_dir: Path) -> None:
    folder = copy_recipe(recipe_dir, tmp_path / "recipe", (
        "vlm:\n"
        "  images: pair\n"
        "  one_shot: true\n"
        "  one_shot_image: star.png\n"
        "  one_shot_address: 'X:3, Y:C'\n"))
    recipe = Recipe.load(folder)
    yaml_lines = (folder / "recipe.yaml").read_text().splitlines()
    recipe_line = yaml_lines.index("vlm:") + 1
    assert effective_vlm_settings(recipe.settings).one_shot  # the recipe alone is fine
    # the station's ``images: single`` breaks the 1-shot rule: its line, in its file
    with pytest.raises(ConfigError) as err:
        cfg = load_config(write(tmp_path / "s.yaml", f"recipe: {folder}\nvlm:\n  images: single\n"))
        effective_vlm_settings(recipe.settings, cfg)
    assert str(err.value).startswith(f"{tmp_path / 's.yaml'}:3: vlm.images:")
    # a bad value in the recipe's vlm: names recipe.yaml and its line at load
    (folder / "recipe.yaml").write_text((folder / "recipe.yaml").read_text()
                                        .replace("  images: pair\n", "  images: triple\n"))
    with pytest.raises(ConfigError) as err:
        Recipe.load(folder)
    assert f"{folder / 'recipe.yaml'}:{recipe_line + 1}: vlm.images: must be one of" in str(
        err.value)


@pytest.mark.parametrize("problem", ["no_model_dir", "missing", "not_a_model"])
def test_enabled_vlm_needs_a_model_folder(tmp_path: Path, recipe_dir: Path, problem: str) -> None:
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    model_line = {"no_model_dir": "",
                  "missing": f"  model_dir: {tmp_path / 'nowhere'}\n",
                  "not_a_model": f"  model_dir: {not_a_model}\n"}[problem]
    path = write(tmp_path / "s.yaml", (
        f"recipe: {recipe_dir}\n"
        f"station: {{id: t, state_dir: {tmp_path / 'state'}}}\n"
        "camera: {source: synthetic}\n"
        "events: {pub: 'tcp://127.0.0.1:0', trigger: 'tcp://127.0.0.1:0', "
        "catchup: 'tcp://127.0.0.1:0'}\n"
        "vlm:\n"
        "  enabled: true\n"
        f"{model_line}"))
    line, message = {"no_model_dir": (6, "vlm.model_dir is not set"),
                     "missing": (7, "not found"),
                     "not_a_model": (7, "has no config.json")}[problem]
    # ``run`` goes through the same check (one case is enough to show it; each costs a process)
    for command in ("check-config", "run") if problem == "missing" else ("check-config",):
        proc = station(command, "-c", str(path))
        assert proc.returncode == EXIT_CONFIG, (command, proc.stderr[-2000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert f"{path}:{line}: " in last and message in last, (command, last)


@pytest.mark.parametrize("problem", ["under_a_file", "read_only_folder"])
@pytest.mark.parametrize("key", ["station.state_dir", "recording.dir"])
def test_unwritable_folders_are_refused(tmp_path: Path, recipe_dir: Path, key: str,
                                        problem: str) -> None:
    if problem == "under_a_file":
        blocker = write(tmp_path / "a-file", "not a folder")
        folder = blocker / "sub"
        message = "is a file"
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write into a mode-555 folder; the file case covers root")
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
        message = "is not writable"
    section, name = key.split(".")
    path = write(tmp_path / "s.yaml", (
        f"recipe: {recipe_dir}\n"
        f"{section}:\n"
        f"  {name}: {folder}\n"))
    load_config(path)  # a replay on another machine may read it; the station itself may not run
    for command in ("check-config", "run") if key == "station.state_dir" else ("check-config",):
        proc = station(command, "-c", str(path))
        assert proc.returncode == EXIT_CONFIG, (command, proc.stderr[-2000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert f"{path}:3: {key}: " in last and message in last, (command, last)


def test_check_config_cli_refuses_duplicate_key_bad_port(tmp_path: Path, recipe_dir: Path) -> None:
    """The CLI, end to end: a second ``policy:`` must not silently replace the fail-safe one."""
    dup = write(tmp_path / "dup.yaml", f"recipe: {recipe_dir}\npolicy: any\npolicy: metric\n")
    proc = station("check-config", str(dup))
    assert proc.returncode == EXIT_CONFIG
    assert f"{dup}:3: duplicate key 'policy'" in proc.stderr
    port = write(tmp_path / "port.yaml",
                 f"recipe: {recipe_dir}\nevents:\n  trigger: tcp://127.0.0.1:65536\n")
    proc = station("check-config", str(port))
    assert proc.returncode == EXIT_CONFIG
    assert f"{port}:3: events.trigger: port '65536'" in proc.stderr
    # a duplicate key in the recipe is refused the same way
    folder = tmp_path / "recipe"
    shutil.copytree(recipe_dir, folder)
    text = (folder / "recipe.yaml").read_text()
    (folder / "recipe.yaml").write_text(text + "version: 1\n")
    good = write(tmp_path / "good.yaml", f"recipe: {folder}\n")
    proc = station("check-config", str(good))
    assert proc.returncode == EXIT_CONFIG
    assert f"{folder / 'recipe.yaml'}:{len(text.splitlines()) + 1}: duplicate key 'version'" in (
        proc.stderr)
