"""The synthetic pin line for the demo, the benches and the tests: its recipe and its parts on disk.

There is one way to build the line's recipe, the demo's (:func:`build_demo_recipe`): good parts
are written as a labelled line, read back through the replay source, and the recipe is built from
them with ``station/defaults/synthetic.yaml`` and the grid of the rendered pin array.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from camera.replay import ManifestSource
from camera.synth import LineSpec, grid_config, make_part, sample_defects, write_line
from pipeline.recipe import Recipe, build_recipe
from station.progress import progress_bar
from station.recipe_tools import DEFAULTS_DIR, load_settings_file

__all__ = ["build_demo_recipe", "write_part_frames"]


def build_demo_recipe(workdir: str | Path, spec: LineSpec | None = None, seed: int = 1,
                      n_train: int = 24) -> Recipe:
    """Good parts of the synthetic line → the recipe, saved under ``workdir/recipe`` and loaded.

    ``n_train`` good parts (drawn with ``seed + 1000``) are written to ``workdir/train-line``
    and read back as a replay source would read them; ``spec`` defaults to the 640×480 line.
    """
    workdir = Path(workdir)
    spec = spec or LineSpec()
    with progress_bar(3, "recipe", unit="step") as bar:
        bar.set_postfix_str("rendering good parts")
        train_csv = write_line(workdir / "train-line", 0, 0, seed=seed + 1000, spec=spec,
                               n_train=n_train).parent / "train.csv"
        bar.update()
        bar.set_postfix_str("reading them back")
        src = ManifestSource(train_csv)
        try:
            frames = [f.image for f in src if f.ok]
        finally:
            src.close()
        bar.update()
        bar.set_postfix_str("golden, unit space, thresholds")
        settings = load_settings_file(DEFAULTS_DIR / "synthetic.yaml", grid_config(spec))
        recipe = build_recipe(frames, settings.grid, name="synthetic-pins", settings=settings,
                              source="station demo")
        recipe.save(workdir / "recipe")
        bar.update()
    return Recipe.load(workdir / "recipe")


def write_part_frames(folder: str | Path, n: int = 20, *, seed: int = 2,
                      defect_every: int = 4, size: tuple[int, int] = (640, 480)) -> str:
    """Render ``n`` synthetic parts (every ``defect_every``-th with one defect) as lossless PNGs
    plus ``truth.json``; returns the image-sequence pattern LiveCamera plays like a camera
    (``loop`` + ``fps``)."""
    spec = LineSpec(size=size)
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for i in range(n):
        defects = sample_defects(spec, rng, 1) if defect_every and i % defect_every == 1 else []
        part = make_part(spec, rng, defects)
        cv2.imwrite(str(folder / f"part_{i:04d}.png"), part.image)
        truth.append({"frame": i, "label": part.label, "defects": part.addresses})
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return str(folder / "part_%04d.png")
