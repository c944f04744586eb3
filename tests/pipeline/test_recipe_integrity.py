"""Recipe integrity (issue 8 item 4): a tampered or damaged recipe is refused at load, by
``station check-config`` first and by ``station run`` the same way, exit 78 naming the cause.

Real parts: copies of a recipe built exactly as the demo builds it, damaged on disk (a changed
golden, NaN / tiny thresholds, a truncated or zeroed unit space, a golden of another size), and
the real ``station`` command as child processes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.base.errors import ConfigError
from pipeline.recipe import Recipe, seal_recipe
from station.bench.events import write_config

from support.cli import station


@pytest.fixture(scope="module")
def recipe_dir(synthetic_recipe: Recipe) -> Path:
    assert synthetic_recipe.folder is not None
    return synthetic_recipe.folder


def _copy(recipe_dir: Path, dest: Path) -> Path:
    shutil.copytree(recipe_dir, dest)
    return dest


def _changed_golden(d: Path) -> None:
    g = cv2.imread(str(d / "golden.png"), cv2.IMREAD_UNCHANGED)
    g[100:104, 100:104] = 255 - g[100:104, 100:104]
    cv2.imwrite(str(d / "golden.png"), g)


def _set_threshold(value: str) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        text = (d / "recipe.yaml").read_text()
        new, n = re.subn(r"(thresholds:\n  [^\n]+: )[^\n ]+", rf"\g<1>{value}", text,
                         count=1)
        assert n == 1
        (d / "recipe.yaml").write_text(new)
    return mutate


def _truncated_unit_space(d: Path) -> None:
    data = (d / "unitspace.npz").read_bytes()
    (d / "unitspace.npz").write_bytes(data[:len(data) * 2 // 3])


def _rewrite_unit_space(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        with np.load(d / "unitspace.npz") as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        np.savez_compressed(d / "unitspace.npz", **arrays)
    return mutate


def _zero_inverse(a: dict[str, np.ndarray]) -> None:
    for k in ("inv_a", "inv_b", "inv_c"):
        a[k] = np.zeros_like(a[k])


def _crop_unit_space(a: dict[str, np.ndarray]) -> None:
    for k in ("mu1", "mu2", "inv_a", "inv_b", "inv_c"):
        a[k] = np.ascontiguousarray(a[k][:-8, :-8])


def _bigger_golden(d: Path) -> None:
    g = cv2.imread(str(d / "golden.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(d / "golden.png"), cv2.resize(g, None, fx=1.25, fy=1.25))


# name → (mutation, re-seal afterwards (a deliberate edit), what the error must say)
CASES: dict[str, tuple[Callable[[Path], None], bool, str]] = {
    "changed golden": (_changed_golden, False,
                       r"recipe\.sha256: content hash mismatch: golden\.png .*changed"),
    "unsealed threshold edit": (_set_threshold("1.0e+30"), False,
                                r"recipe\.sha256: content hash mismatch: recipe\.yaml"),
    "NaN threshold": (_set_threshold(".nan"), True,
                      r"recipe\.yaml:\d+: threshold for 'X:\S+, Y:\S+' must be a finite number"),
    "negative threshold": (_set_threshold("-2.0"), True, r"recipe\.yaml:\d+: threshold .* > 0"),
    "truncated unit space": (_truncated_unit_space, False,
                             r"unitspace\.npz: unit space unreadable \(truncated"),
    "zeroed inverse": (_rewrite_unit_space(_zero_inverse), True,
                       r"unitspace\.npz: unit space inverse covariance not positive definite"),
    "wrong-shape unit space": (_rewrite_unit_space(_crop_unit_space), True,
                               r"unitspace\.npz: unit space shape .* does not fit the golden"),
    "golden of another size": (_bigger_golden, True,
                               r"unit space shape \(480, 640\) does not fit the golden \(800x600"),
}


def _damaged(recipe_dir: Path, tmp_path: Path, case: str) -> Path:
    mutate, reseal, _ = CASES[case]
    d = _copy(recipe_dir, tmp_path / re.sub(r"\W+", "_", case))
    mutate(d)
    if reseal:
        seal_recipe(d)
    return d


def test_recipes_written_by_the_builders_verify(recipe_dir: Path) -> None:
    """The demo's builder (Recipe.save) seals: the content hash, then each file's SHA-256."""
    lines = (recipe_dir / "recipe.sha256").read_text().splitlines()
    recipe = Recipe.load(recipe_dir)
    assert lines[0] == recipe.hash
    assert lines[1:] == [f"{hashlib.sha256((recipe_dir / n).read_bytes()).hexdigest()}  {n}"
                         for n in ("recipe.yaml", "golden.png", "unitspace.npz")]


@pytest.mark.parametrize("case", list(CASES))
def test_load_refuses_a_damaged_recipe(recipe_dir: Path, tmp_path: Path, case: str) -> None:
    d = _damaged(recipe_dir, tmp_path, case)
    with pytest.raises(ConfigError) as exc:
        Recipe.load(d)
    assert re.search(CASES[case][2], str(exc.value)), str(exc.value)
    assert str(d) in str(exc.value)


def test_missing_seal_is_refused_and_seal_restores(recipe_dir: Path, tmp_path: Path) -> None:
    d = _copy(recipe_dir, tmp_path / "r")
    (d / "recipe.sha256").unlink()
    with pytest.raises(ConfigError, match=r"recipe\.sha256 is missing"):
        Recipe.load(d)
    r = station("recipe", "seal", str(d), timeout=120)
    assert r.returncode == 0, r.stderr
    assert Recipe.load(d).hash == (d / "recipe.sha256").read_text().split()[0]
    _changed_golden(d)
    r = station("recipe", "verify", str(d), timeout=120)
    assert r.returncode == 78 and "golden.png" in r.stderr and "Traceback" not in r.stderr


def test_check_config_dry_run_refuses_thresholds_the_golden_fails(recipe_dir: Path,
                                                                  tmp_path: Path) -> None:
    """Thresholds far below the golden's own scores: every part would be a defect.  Loading
    cannot see it; the dry run (the golden through the complete inspector) does."""
    d = _copy(recipe_dir, tmp_path / "tiny")
    text = (d / "recipe.yaml").read_text()
    (d / "recipe.yaml").write_text(re.sub(r"(thresholds:\n(?:  [^\n]+\n)+)",
                                          lambda m: re.sub(r": [0-9.e+-]+\n", ": 1.0e-06\n",
                                                           m.group(1)), text, count=1))
    seal_recipe(d)
    Recipe.load(d)  # a valid recipe as far as its files go
    cfg = write_config(tmp_path / "station.yaml", recipe=d, state_dir=tmp_path / "state")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "dry run: the metric judge calls the golden itself a defect" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["changed golden", "NaN threshold", "truncated unit space"])
def test_check_config_and_run_refuse_with_78(recipe_dir: Path, tmp_path: Path, case: str) -> None:
    """Acceptance: check-config exits 78 naming the cause; ``station run`` refuses the same
    recipe with 78 (real processes), no traceback."""
    d = _damaged(recipe_dir, tmp_path, case)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=d, state_dir=state)
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78, r.stdout + r.stderr
    assert re.search(CASES[case][2], r.stderr) and "Traceback" not in r.stderr, r.stderr
    r = station("run", "-c", str(cfg), timeout=300)
    assert r.returncode == 78, r.stderr[-2000:]
    assert re.search(CASES[case][2], r.stderr) and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_check_config_accepts_a_good_recipe_after_its_dry_run(recipe_dir: Path,
                                                              tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe_dir, state_dir=tmp_path / "st")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"dry_run": {"metric": "pass"}' in r.stdout


# ------------------------------------------------------------------ model folders: no pickle
@pytest.fixture(scope="module")
def pickle_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny Qwen2-VL whose weights were converted to the pickle format (a
    ``pytorch_model.bin`` written by ``torch.save``, no safetensors left)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from station.modeltools.tiny import write_tiny_model

    folder = write_tiny_model(tmp_path_factory.mktemp("vlm") / "pickled", "qwen2_vl")
    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


@pytest.mark.vlm
@pytest.mark.slow
def test_pickle_only_model_folders_are_refused_unless_the_recipe_opts_in(
        recipe_dir: Path, tmp_path: Path, pickle_model: Path) -> None:
    from pipeline.vlm.backends import load_model
    from pipeline.vlm.settings import VlmSettings

    # the station enables the VLM on a pickle-only folder: check-config refuses, naming the line
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe_dir, state_dir=tmp_path / "st")
    data = json.loads(cfg.read_text())
    data["vlm"] = {"enabled": True, "model_dir": str(pickle_model)}
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78 and "pickle-format weights (pytorch_model.bin)" in r.stderr, r.stderr
    assert "vlm.allow_pickle: true" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ConfigError, match="pickle-format"):
        load_model(VlmSettings(model_dir=str(pickle_model), warmup=False))
    # the recipe opts in (a typed setting, sealed with the recipe): the folder loads
    opted = _copy(recipe_dir, tmp_path / "opted")
    yaml_text = (opted / "recipe.yaml").read_text()
    assert "\nvlm: {}\n" in yaml_text
    (opted / "recipe.yaml").write_text(yaml_text.replace("\nvlm: {}\n",
                                                         "\nvlm:\n  allow_pickle: true\n"))
    seal_recipe(opted)
    from pipeline.vlm.settings import effective_vlm_settings

    settings = effective_vlm_settings(Recipe.load(opted).settings, cli={
        "enabled": True, "model_dir": str(pickle_model), "warmup": False})
    assert settings.allow_pickle
    loaded = load_model(settings)
    assert loaded.n_4bit > 0
    # safetensors beside pickle files: the safetensors are loaded, the .bin never unpickled
    both = tmp_path / "both"
    shutil.copytree(pickle_model, both)
    (both / "pytorch_model.bin").unlink()
    from safetensors.torch import save_file

    save_file(_state_dict(pickle_model), str(both / "model.safetensors"))
    (both / "pytorch_model.bin").write_bytes(b"not a pickle: loading this would fail")
    assert load_model(VlmSettings(model_dir=str(both), warmup=False)).n_4bit > 0


def _state_dict(folder: Path) -> dict:
    import torch

    return torch.load(folder / "pytorch_model.bin", weights_only=True)


def test_check_config_creates_the_camera_as_the_daemon_does(recipe_dir: Path,
                                                             tmp_path: Path) -> None:
    """A files camera on a folder that does not exist: the daemon would refuse it at start-up
    (78), so check-config refuses it first."""
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe_dir, state_dir=tmp_path / "st")
    data = json.loads(cfg.read_text())
    data["camera"] = {"type": "files", "source": str(tmp_path / "no-such-frames")}
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78 and "camera (files)" in r.stderr and "no-such-frames" in r.stderr, (
        r.stderr)
