"""Variation model and judge: good parts that vary (sub-pixel shift, ±1 px trace width, a smooth
bend) pass; thin opens and shorts (2 px) are found at their address; the judge plugs into the real
Inspector next to the metric judge."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.align import LocalAligner
from pipeline.base.frames import Frame
from pipeline.grid import AddressGrid
from pipeline.inspector import Inspector
from pipeline.judges.base import build_judges
from pipeline.judges.variation import VariationJudge
from pipeline.recipe import RecipeSettings, build_recipe
from pipeline.variation import VariationModel, VariationSettings, _shifted
from pipeline.verdicts import Verdict

from support.boards import GRID, S, board


def bend(img: np.ndarray, ax: float = 2.0, ay: float = 1.5) -> np.ndarray:
    """A smooth non-affine deformation (one sine period across the image)."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    mx = xx + ax * np.sin(2 * np.pi * yy / S)
    my = yy + ay * np.sin(2 * np.pi * xx / S)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flagged(model: VariationModel, frame: np.ndarray, k: float = 6.0) -> set[str]:
    scores, _ = model.score(frame, None, AddressGrid.from_config(GRID))
    return {a for a, s in scores.items() if s > k}


@pytest.fixture(scope="module")
def golden() -> np.ndarray:
    return board()


@pytest.fixture(scope="module")
def model(golden: np.ndarray) -> VariationModel:
    return VariationModel(golden, VariationSettings())


def test_shift_helper_equals_opencv_translation() -> None:
    img = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.float32)
    for d in (0.5, -0.5, 1.25, -1.75):
        for axis in (0, 1):
            dx, dy = (d, 0.0) if axis == 1 else (0.0, d)
            ref = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (50, 40),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            assert np.abs(ref - _shifted(img, d, axis))[3:-3, 3:-3].max() < 1e-3


def test_model_spread_sits_on_edges_only(model: VariationModel, golden: np.ndarray) -> None:
    edges = cv2.morphologyEx(golden, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    far = cv2.dilate(edges.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    assert float(model.std[far].max()) == 0.0
    assert float(np.median(model.std[edges])) > 30
    assert np.allclose(model.mean[far], golden[far])


@pytest.mark.parametrize("nuisance", ["shift", "thicker", "thinner", "bend"])
def test_good_parts_that_vary_pass(model: VariationModel, golden: np.ndarray,
                                   nuisance: str) -> None:
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    frame = {
        "shift": lambda: cv2.warpAffine(golden, np.float32([[1, 0, 0.4], [0, 1, -0.3]]),
                                        (S, S), borderMode=cv2.BORDER_REPLICATE),
        "thicker": lambda: cv2.erode(golden, cross),  # black copper grows by a pixel
        "thinner": lambda: cv2.dilate(golden, cross),
        "bend": lambda: bend(golden),
    }[nuisance]()
    assert flagged(model, frame) == set()


def test_bend_needs_the_local_realignment(golden: np.ndarray) -> None:
    rigid = VariationModel(golden, VariationSettings(local=False))
    assert flagged(rigid, bend(golden, 2.5, 2.0))  # one warp cannot absorb it ...
    assert flagged(VariationModel(golden), bend(golden, 2.5, 2.0)) == set()  # ... the field does


def test_thin_open_and_short_are_found_at_their_address(model: VariationModel,
                                                        golden: np.ndarray) -> None:
    bad = golden.copy()
    bad[105:116, 100:102] = 255  # a 2-px open across the 9-px trace at y = 110 (cell X:2, Y:B)
    bad[190:231, 210:212] = 0  # a 2-px short bridging the traces at y = 190 and 230 (X:3/X:4)
    got = flagged(model, bad)
    assert "X:2, Y:B" in got
    assert {"X:3, Y:C", "X:4, Y:C", "X:3, Y:D", "X:4, Y:D"} & got
    assert got <= {"X:2, Y:B", "X:3, Y:C", "X:4, Y:C", "X:3, Y:D", "X:4, Y:D"}
    # on a bent board etched a pixel thicker, a 4-px open (2 px left of it) is still found
    wide = golden.copy()
    wide[105:116, 100:104] = 255
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    assert flagged(model, bend(cv2.erode(wide, cross))) == {"X:2, Y:B"}


def test_speckle_is_not_a_defect(model: VariationModel, golden: np.ndarray) -> None:
    frame = golden.copy()
    rng = np.random.default_rng(3)
    ys, xs = rng.integers(5, S - 5, 60), rng.integers(5, S - 5, 60)
    frame[ys, xs] = 255 - frame[ys, xs]  # isolated single-pixel flips (binarisation noise)
    assert flagged(model, frame) == set()


def test_local_aligner_recovers_a_shift_and_a_bend(golden: np.ndarray) -> None:
    la = LocalAligner(golden)
    shifted = cv2.warpAffine(golden, np.float32([[1, 0, 1.5], [0, 1, -1.0]]), (S, S),
                             borderMode=cv2.BORDER_REPLICATE)
    u, v = la.field(shifted)
    assert abs(float(np.median(u)) - 1.5) < 0.3 and abs(float(np.median(v)) + 1.0) < 0.3
    bent = bend(golden)
    before = np.count_nonzero(cv2.absdiff(bent, golden) > 128)
    after = np.count_nonzero(cv2.absdiff(la.realign(bent)[0], golden) > 128)
    assert after < 0.3 * before
    assert la.realign(golden)[0] is not None
    u0, v0 = la.field(golden)
    assert float(np.abs(u0).max()) < 0.05 and float(np.abs(v0).max()) < 0.05
    flat = LocalAligner(np.full((64, 64), 200, np.uint8))  # nothing to align on: field 0
    assert not np.any(flat.field(np.full((64, 64), 90, np.uint8))[0])


def test_settings_are_validated() -> None:
    for bad in ({"k": 0}, {"sigma_min": 0}, {"opening": 0}, {"min_pixels": 0}, {"width": 5},
                {"local_grid": 1}):
        with pytest.raises(ValueError):
            VariationSettings(**bad).validate()
    with pytest.raises(ValueError):
        VariationModel(np.zeros((8, 8), np.uint8)).deviation(np.zeros((9, 8), np.uint8))


def test_variation_judge_in_the_inspector_with_the_metric_judge(golden: np.ndarray) -> None:
    settings = RecipeSettings(name="pcb", grid=GRID, judges=["metric", "variation"],
                              variation=VariationSettings(k=6.0))
    recipe = build_recipe([], GRID, golden=golden, settings=settings)
    assert recipe.settings.variation.k == 6.0 and recipe.settings.judges == ["metric",
                                                                               "variation"]
    judges = build_judges(recipe.settings.judges, recipe)
    assert isinstance(judges[1], VariationJudge)
    inspector = Inspector(recipe, judges, policy="any")
    good = Frame(image=cv2.erode(golden, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))),
                 seq=0, source_id="t", meta={})
    res = inspector.inspect(good)
    assert res.judges["variation"].verdict is Verdict.PASS, res.judges["variation"].defects
    bad = golden.copy()
    bad[105:116, 100:102] = 255
    res = inspector.inspect(Frame(image=bad, seq=1, source_id="t", meta={}))
    v = res.judges["variation"]
    assert v.verdict is Verdict.DEFECT and v.defects[0].address == "X:2, Y:B"
    assert v.defects[0].judge == "variation" and v.details["max_score"] > 6.0
    assert res.verdict is Verdict.DEFECT and "X:2, Y:B" in res.addresses
    assert "variation" in res.timings_ms
    # the model is fitted once per golden and reused
    j = judges[1]
    assert j.model_for(recipe.golden) is j.model_for(recipe.golden)
