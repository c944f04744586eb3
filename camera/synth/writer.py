"""Writing a labelled synthetic line to disk (frames, manifests, golden, grid, truth)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camera.synth.render import make_part, render_golden, sample_defects
from camera.synth.spec import DEFECT_MODES, LineSpec, grid_config


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def write_line(out_dir: str | Path, n_good: int, n_defect: int, seed: int = 0,
               spec: LineSpec | None = None, *, n_train: int = 8,
               modes: Sequence[str] = DEFECT_MODES) -> Path:
    """Write a labelled synthetic line to ``out_dir``; return the path of ``manifest.csv``.

    Layout::

        golden.png         the perfect part (render_golden)
        grid.json          grid_config(spec)
        frames/part_NNNN.png + manifest.csv   the line: n_good + n_defect parts, shuffled
        train/good_NNNN.png  + train.csv      n_train extra good parts (for building the recipe)
        line.json          spec, seed and per-frame truth (modes, pose, drift)

    Both CSVs have the header ``frame,label,defects,golden`` (paths relative to the CSV,
    ``defects`` = addresses separated by ``;``).  Defect parts cycle through ``modes`` so each
    mode is equally represented; about one in five carries a second defect elsewhere.
    """
    spec = spec or LineSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _write_png(out / "golden.png", render_golden(spec))
    (out / "grid.json").write_text(json.dumps(grid_config(spec), indent=2) + "\n")

    plan: list[list[tuple[str, str]]] = [[] for _ in range(n_good)]
    for k in range(n_defect):
        first = sample_defects(spec, rng, 1, [modes[k % len(modes)]])
        if rng.random() < 0.2:
            extra = sample_defects(spec, rng, 2, modes)
            first += [d for d in extra if d[0] != first[0][0]][:1]
        plan.append(first)
    order = rng.permutation(len(plan))
    truth: list[dict[str, Any]] = []

    def emit(csv_name: str, sub: str, stem: str, plans: list[list[tuple[str, str]]]) -> None:
        with open(out / csv_name, "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(["frame", "label", "defects", "golden"])
            for i, defects in enumerate(plans):
                part = make_part(spec, rng, defects)
                rel = f"{sub}/{stem}_{i:04d}.png"
                _write_png(out / rel, part.image)
                wr.writerow([rel, part.label, ";".join(part.addresses), "golden.png"])
                truth.append({"frame": rel, "label": part.label,
                              "defects": [{"address": a, "mode": m} for a, m in part.defects],
                              "dx": round(part.dx, 3), "dy": round(part.dy, 3),
                              "angle_deg": round(part.angle_deg, 4),
                              "gain": round(part.gain, 4), "offset": round(part.offset, 3)})

    emit("train.csv", "train", "good", [[] for _ in range(n_train)])
    emit("manifest.csv", "frames", "part", [plan[int(i)] for i in order])
    meta = {"seed": seed, "spec": asdict(spec), "grid": grid_config(spec), "frames": truth}
    (out / "line.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out / "manifest.csv"
