"""The Inspector end to end on real synthetic frames, and everything that must not become a pass."""

from __future__ import annotations

import numpy as np
import pytest

from camera.synth import LineSpec, make_part
from pipeline.base.frames import Frame
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe
from pipeline.verdicts import Verdict


@pytest.fixture(scope="module")
def inspector(synthetic_recipe: Recipe) -> Inspector:
    return Inspector(synthetic_recipe)


def frame(image: np.ndarray | None, error: str | None = None) -> Frame:
    return Frame(image, seq=1, source_id="test", error=error)


def test_good_part_passes_and_defect_is_addressed(inspector: Inspector,
                                                  line_spec: LineSpec) -> None:
    rng = np.random.default_rng(42)
    good = inspector.inspect(frame(make_part(line_spec, rng).image), part_id="g1")
    assert good.verdict is Verdict.PASS, good.judges["metric"].to_dict()
    assert good.defects == [] and good.part_id == "g1"
    for stage in ("align", "nsoartc", "cells", "overlay", "total"):
        assert good.timings_ms[stage] >= 0
    for mode in ("missing", "bent", "short", "particle", "scratch"):
        bad = inspector.inspect(frame(make_part(line_spec, rng, [("X:4, Y:C", mode)]).image))
        assert bad.verdict is Verdict.DEFECT, mode
        assert "X:4, Y:C" in bad.addresses, (mode, bad.addresses)
        d = next(x for x in bad.defects if x.address == "X:4, Y:C")
        assert (d.column, d.row, d.judge) == ("4", "C", "metric") and d.score > 0
    payload = bad.to_payload()
    assert payload["verdict"] == "defect" and payload["recipe"] == inspector.recipe.short_hash
    assert payload["judges"]["metric"]["verdict"] == "defect"


@pytest.mark.parametrize(("image", "error", "reason"), [
    (None, "corrupt_frame: a.png: truncated", "corrupt_frame"),
    (np.zeros((0, 0), np.uint8), None, "empty_frame"),
    (np.zeros((480, 640), np.float32), None, "bad_frame: dtype"),
    (np.zeros((8, 8), np.uint8), None, "bad_frame: too small"),
    (np.zeros((480, 640, 2), np.uint8), None, "bad_frame: shape"),
])
def test_unusable_frames_are_errors(inspector: Inspector, image, error, reason) -> None:
    r = inspector.inspect(frame(image, error))
    assert r.verdict is Verdict.ERROR
    assert r.reason.startswith(reason)


def test_unrelated_and_blank_images_fail_alignment(inspector: Inspector) -> None:
    rng = np.random.default_rng(0)
    for img in (rng.integers(0, 256, (480, 640), dtype=np.uint8),
                np.full((480, 640), 128, np.uint8)):
        r = inspector.inspect(frame(img))
        assert r.verdict is Verdict.ERROR
        assert r.reason.startswith("alignment_failed"), r.reason
    # another camera's size is named as such (issue 9 item 5), not an alignment failure
    r = inspector.inspect(frame(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)))
    assert r.verdict is Verdict.ERROR and r.reason == "frame_size: 200x300 (recipe 640x480)"


def test_sixteen_bit_and_colour_frames(inspector: Inspector, line_spec: LineSpec) -> None:
    img = make_part(line_spec, np.random.default_rng(5)).image
    r16 = inspector.inspect(frame(img.astype(np.uint16) * 257))
    assert r16.verdict is Verdict.PASS, r16.reason
    grey = inspector.inspect(frame(img[:, :, 1].copy()))
    assert grey.verdict in (Verdict.PASS, Verdict.DEFECT)  # judged, whatever the channel


def test_policy_must_name_a_judge_that_runs(synthetic_recipe: Recipe) -> None:
    with pytest.raises(ValueError, match=r"unknown policy 'vlm'.*judge that runs \(metric\)"):
        Inspector(synthetic_recipe, policy="vlm")
    with pytest.raises(ValueError, match="needs at least two judges"):
        Inspector(synthetic_recipe, policy="both")
    assert Inspector(synthetic_recipe, policy="metric").judge_names == ["metric"]
