"""``station golden build`` refuses what would make a bad recipe (issue 10 item 6): an existing
recipe folder without ``--force``, a grid or ROI outside the image, a malformed grid file (exit
78 naming file:line, never a traceback), and good frames that disagree (outliers left out; above
10 % the build stops).  Real CLI processes on the synthetic line at 320×240."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from camera.synth import LineSpec, write_line
from pipeline.base.errors import EXIT_CONFIG
from pipeline.recipe import Recipe

from support.cli import station
from support.files import write

SPEC = LineSpec(size=(320, 240))


def _folder(tmp: Path, name: str, n_good: int, n_defect: int, seed: int) -> tuple[Path, Path]:
    """An unlabelled image folder of the line's parts (as a camera dump is) and its grid file;
    the manifest beside it keeps the truth for the assertions."""
    manifest = write_line(tmp / f"{name}-line", n_good, n_defect, seed=seed, spec=SPEC,
                          n_train=0)
    folder = tmp / name
    folder.mkdir()
    for png in sorted((manifest.parent / "frames").glob("*.png")):
        shutil.copy(png, folder / png.name)
    return folder, manifest.parent / "grid.json"


def _defective(folder: Path) -> set[str]:
    rows = (folder.parent / f"{folder.name}-line" / "manifest.csv").read_text().splitlines()[1:]
    return {Path(r.split(",")[0]).name for r in rows if r.split(",")[1] == "defect"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _folder(tmp_path_factory.mktemp("gb"), "good", 8, 0, seed=21)


def test_existing_recipe_is_kept_without_force(tmp_path: Path, small: tuple[Path, Path]) -> None:
    frames, grid = small
    out = tmp_path / "recipe"
    out.mkdir()
    (out / "recipe.yaml").write_text("name: the old one\n")
    p = station("golden", "build", str(frames), "-o", str(out), "--grid", str(grid))
    assert p.returncode != 0 and "--force" in p.stderr and "Traceback" not in p.stderr
    assert (out / "recipe.yaml").read_text() == "name: the old one\n"
    p = station("golden", "build", str(frames), "-o", str(out), "--grid", str(grid), "--force")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["hash"] == Recipe.load(out).short_hash


@pytest.mark.parametrize("case", ["roi_outside", "cell_outside", "not_a_list", "no_rows",
                                  "yaml_syntax", "not_a_mapping"])
def test_bad_grid_is_exit_78_with_file_and_line(tmp_path: Path, small: tuple[Path, Path],
                                                 case: str) -> None:
    frames, grid = small
    good = json.loads(grid.read_text())
    cols, rows = json.dumps(good["columns"]), json.dumps(good["rows"])
    text, line = {
        "roi_outside": (f"# grid\ncolumns: {cols}\nrows: {rows}\nroi: [100, 20, 300, 150]\n", 4),
        "cell_outside": ('cells:\n  "X:1, Y:A": [10, 10, 20, 20]\n'
                         '  "X:2, Y:A": [310, 10, 20, 20]\n', 1),
        "not_a_list": (f"columns: {cols}\nrows: {rows}\nroi: 12\n", 3),
        "no_rows": (f"columns: {cols}\nroi: [10, 10, 100, 100]\n", 1),
        "yaml_syntax": (f"columns: {cols}\nrows: [U, C\nroi: [1, 2, 3, 4]\n", None),
        "not_a_mapping": ("- just\n- a list\n", 1),
    }[case]
    bad = write(tmp_path / "grid.yaml", text)
    p = station("golden", "build", str(frames), "-o", str(tmp_path / "r"), "--grid", str(bad))
    assert p.returncode == EXIT_CONFIG, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert (f"{bad}:{line}:" if line else f"{bad}:") in p.stderr, p.stderr
    assert not (tmp_path / "r").exists() and p.stdout == ""


@pytest.mark.slow
def test_good_folder_with_30_percent_defective_parts_stops(tmp_path: Path) -> None:
    frames, grid = _folder(tmp_path, "dirty", 14, 6, seed=7)  # 6 of 20 defective
    p = station("golden", "build", str(frames), "-o", str(tmp_path / "r"), "--grid", str(grid))
    assert p.returncode != 0
    assert "disagree" in p.stderr and "Nothing was written" in p.stderr, p.stderr
    named = {w.strip(",:") for w in p.stderr.split() if w.endswith((".png", ".png,"))}
    assert len(named) > 2 and named <= _defective(frames), (named, _defective(frames))
    assert not (tmp_path / "r").exists() and p.stdout == ""


@pytest.mark.slow
def test_one_outlier_is_reported_and_left_out(tmp_path: Path) -> None:
    frames, grid = _folder(tmp_path, "mostly", 19, 1, seed=9)  # 5 %: below the 10 % limit
    p = station("golden", "build", str(frames), "-o", str(tmp_path / "r"), "--grid", str(grid))
    assert p.returncode == 0, p.stderr
    built = json.loads(p.stdout)
    outliers = {Path(o["frame"]).name for o in built["agreement"]["outliers"]}
    assert outliers == _defective(frames)
    assert "left out" in p.stderr
    assert Recipe.load(tmp_path / "r").settings.built["good_frames"] == 19
