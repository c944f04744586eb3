"""Judges as plug-ins: a judge defined here, in its own file, is selected by configuration only;
the policy speaks of its name; evaluation-only golden switching lives outside the live Inspector."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from camera.synth import LineSpec, make_part
from pipeline.base.errors import ConfigError
from pipeline.base.frames import Frame
from pipeline.grid import parse_address
from pipeline.inspector import Inspector
from pipeline.judges.base import JudgeContext, build_judges, register_judge
from pipeline.recipe import Recipe, seal_recipe
from pipeline.verdicts import Defect, JudgeResult, Verdict
from station.config import load_config
from station.golden_switch import GoldenSwitch
from station.recipe_tools import build_inspector
from station.replay_runner import replay
from station.report import ReportBuilder


@register_judge("toy")
class ToyJudge:
    """Rejects parts whose id starts with ``reject-`` at their highest-scoring cell; reports
    what it saw of the context."""

    name = "toy"

    def __init__(self, recipe: Recipe, **_deps: object) -> None:
        self.recipe = recipe

    def judge(self, ctx: JudgeContext) -> JudgeResult:
        top = max(ctx.cell_scores, key=ctx.cell_scores.__getitem__)
        details = {
            "top_ratio": round(ctx.cell_scores[top] / ctx.thresholds[top], 4),
            "golden_metric_mean": round(float(ctx.golden_metric.mean()), 3),
            "same_shape": ctx.aligned.shape[:2] == ctx.distance.shape[:2]
            == ctx.metric_image.shape[:2] == ctx.golden.shape[:2],
        }
        if not ctx.part_id.startswith("reject-"):
            return JudgeResult("toy", Verdict.PASS, details=details, prompt="reject it?",
                               raw_answer="no")
        col, row = parse_address(top)
        return JudgeResult("toy", Verdict.DEFECT, [Defect(top, col, row, judge="toy")],
                           details=details, prompt="reject it?", raw_answer="yes")


@register_judge("explodes")
def _explodes(recipe: Recipe, **_deps: object) -> object:
    class Explodes:
        name = "explodes"

        def judge(self, ctx: JudgeContext) -> JudgeResult:
            raise RuntimeError("boom")

    return Explodes()


def recipe_with_judges(src: Recipe, folder: Path, judges: list[str]) -> Path:
    """A copy of ``src``'s folder whose recipe.yaml lists ``judges``."""
    assert src.folder is not None
    shutil.copytree(src.folder, folder)
    data = yaml.safe_load((folder / "recipe.yaml").read_text())
    data["judges"] = judges
    (folder / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    seal_recipe(folder)  # a deliberate edit: sealed again, as `station recipe seal` does
    return folder


def station_yaml(path: Path, recipe: Path, extra: str = "") -> Path:
    path.write_text(f"recipe: {recipe}\nstation: {{state_dir: {path.parent / 'state'}, "
                    f"cache_dir: {path.parent / 'cache'}}}\n{extra}")
    return path


@pytest.fixture(scope="module")
def good_image(line_spec: LineSpec) -> np.ndarray:
    return make_part(line_spec, np.random.default_rng(42)).image


def test_toy_judge_selected_by_recipe_and_policy_by_name(
        tmp_path: Path, synthetic_recipe: Recipe, good_image: np.ndarray) -> None:
    folder = recipe_with_judges(synthetic_recipe, tmp_path / "recipe", ["metric", "toy"])
    for policy, expect_good, expect_reject in (("toy", Verdict.PASS, Verdict.DEFECT),
                                               ("metric", Verdict.PASS, Verdict.PASS),
                                               ("any", Verdict.PASS, Verdict.DEFECT),
                                               ("all", Verdict.PASS, Verdict.PASS)):
        cfg = load_config(station_yaml(tmp_path / f"{policy}.yaml", folder, f"policy: {policy}\n"))
        inspector = build_inspector(cfg)
        assert inspector.judge_names == ["metric", "toy"]
        good = inspector.inspect(Frame(good_image, seq=1, source_id="t"), part_id="ok-1")
        bad = inspector.inspect(Frame(good_image, seq=2, source_id="t"), part_id="reject-2")
        assert (good.verdict, bad.verdict) == (expect_good, expect_reject), policy
        for r in (good, bad):  # every judge runs, is timed and reported, whatever the policy
            assert set(r.judges) == {"metric", "toy"}
            assert r.timings_ms["toy"] >= 0 and r.timings_ms["metric"] >= 0
            assert r.judges["toy"].details["same_shape"] is True
            assert r.judges["toy"].details["golden_metric_mean"] >= 0
            assert r.to_payload()["judges"]["toy"]["verdict"] in ("pass", "defect")
        # the prompt and the answer reach the recorder, never the event
        assert (bad.prompt, bad.raw_answer) == ("reject it?", "yes")
        assert "reject it?" not in str(bad.to_payload())
        if expect_reject is Verdict.DEFECT:
            assert [d.judge for d in bad.defects] == ["toy"]
            assert bad.addresses == [bad.judges["toy"].defects[0].address]
        else:
            assert bad.defects == [] and bad.judges["toy"].verdict is Verdict.DEFECT


def test_station_config_overrides_the_judges(tmp_path: Path, synthetic_recipe: Recipe,
                                             good_image: np.ndarray) -> None:
    assert synthetic_recipe.folder is not None
    cfg = load_config(station_yaml(tmp_path / "s.yaml", synthetic_recipe.folder,
                                   "judges: [toy]\npolicy: toy\n"))
    inspector = build_inspector(cfg)
    assert inspector.judge_names == ["toy"]
    r = inspector.inspect(Frame(good_image, seq=1, source_id="t"), part_id="reject-1")
    assert r.verdict is Verdict.DEFECT and set(r.judges) == {"toy"}
    assert r.cell_scores  # the shared stages ran without the metric judge


def test_report_counts_every_judge_by_name(tmp_path: Path, synthetic_recipe: Recipe,
                                           good_image: np.ndarray) -> None:
    inspector = Inspector(synthetic_recipe, build_judges(["metric", "toy"], synthetic_recipe))
    frames = [Frame(good_image, seq=i, source_id="t", meta={"part_id": f"{p}-{i}"})
              for i, p in enumerate(("ok", "reject", "reject"))]
    builder = ReportBuilder(synthetic_recipe.grid, synthetic_recipe.settings.thresholds)
    for outcome in replay(frames, inspector):
        builder.add(outcome)
    summary = builder.write(tmp_path / "report")
    assert summary["judges"]["toy"]["verdicts"] == {"defect": 2, "pass": 1}
    assert summary["judges"]["metric"]["verdicts"] == {"pass": 3}
    assert summary["judges"]["toy"]["details"]["top_ratio"]["n"] == 3  # the judge's own figures
    assert "same_shape" not in summary["judges"]["toy"]["details"]  # numbers only
    assert set(summary["latency_ms"]) >= {"align", "cells", "metric", "toy", "total"}
    assert "| toy | 3 | defect 2, pass 1 |" in (tmp_path / "report" / "report.md").read_text()


def test_config_mistakes_name_the_judge_or_policy(tmp_path: Path, synthetic_recipe: Recipe) -> None:
    assert synthetic_recipe.folder is not None
    path = station_yaml(tmp_path / "p.yaml", synthetic_recipe.folder, "policy: toy\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: .*unknown policy 'toy'.*\(metric\)"):
        load_config(path)
    path = station_yaml(tmp_path / "b.yaml", synthetic_recipe.folder, "policy: both\n")
    with pytest.raises(ConfigError, match="at least two judges"):
        load_config(path)
    cfg = load_config(station_yaml(tmp_path / "u.yaml", synthetic_recipe.folder,
                                   "judges: [metric, nosuchjudge]\n"))
    with pytest.raises(ConfigError, match=r"unknown judge 'nosuchjudge' \(known: .*metric"):
        build_inspector(cfg)


def test_registry_rules(synthetic_recipe: Recipe) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_judge("toy")(lambda recipe, **_: None)
    with pytest.raises(ValueError, match="invalid judge name"):
        register_judge("any")
    with pytest.raises(ValueError, match="invalid judge name"):
        register_judge("Bad Name")
    with pytest.raises(ValueError, match="listed twice"):
        build_judges(["metric", "metric"], synthetic_recipe)
    judges = build_judges(["toy", "metric"], synthetic_recipe)
    assert [j.name for j in judges] == ["toy", "metric"]


def test_a_judge_that_raises_is_an_error_never_a_pass(synthetic_recipe: Recipe,
                                                      good_image: np.ndarray) -> None:
    inspector = Inspector(synthetic_recipe, build_judges(["metric", "explodes"], synthetic_recipe))
    r = inspector.inspect(Frame(good_image, seq=1, source_id="t"))
    assert r.verdict is Verdict.ERROR
    assert r.reason == "explodes: judge_failed: RuntimeError: boom"
    assert r.judges["metric"].verdict is Verdict.PASS


# --- evaluation only: frames that bring their own golden ------------------------------------

def test_golden_switch_builds_each_golden_once(tmp_path: Path, synthetic_recipe: Recipe,
                                               good_image: np.ndarray) -> None:
    assert synthetic_recipe.folder is not None
    base = Inspector(synthetic_recipe)
    switch = GoldenSwitch(base, cache_size=1)
    own = synthetic_recipe.folder / "golden.png"
    g1, g2 = tmp_path / "g1.png", tmp_path / "g2.png"
    shutil.copy(own, g1)
    shutil.copy(own, g2)

    def frame(golden: Path | str | None) -> Frame:
        return Frame(good_image, seq=1, source_id="t", meta={"golden": str(golden)} if golden
                     else {})

    assert switch.inspector_for(frame(None)) is base
    assert switch.inspector_for(frame(own)) is base
    first = switch.inspector_for(frame(g1))
    assert first is not base and switch.inspector_for(frame(g1)) is first  # cached
    assert first.judges == base.judges and first.policy == base.policy  # shared judges
    assert first.recipe.hash == synthetic_recipe.hash
    assert switch.inspector_for(frame(g2)) is not first
    assert switch.inspector_for(frame(g1)) is not first  # LRU of one: g1 was evicted
    r = switch.inspect(frame(g1), part_id="p1")
    assert r.verdict in (Verdict.PASS, Verdict.DEFECT) and r.recipe == synthetic_recipe.short_hash
    # judged with the thresholds fitted for that golden (the judges take them from the context)
    own_thresholds = switch.inspector_for(frame(g1)).thresholds
    assert own_thresholds != base.thresholds
    assert set(r.addresses) == {a for a, v in r.cell_scores.items() if v > own_thresholds[a]}

    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((480, 640), 128, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    unusable = switch.inspect(frame(blank))
    assert unusable.verdict is Verdict.ERROR
    assert unusable.reason.startswith(f"golden_unusable: {blank.resolve()}: ")
    unreadable = switch.inspect(frame(tmp_path / "broken.png"))
    assert unreadable.verdict is Verdict.ERROR and unreadable.reason.startswith(
        "golden_unreadable: ")
    # the frame's own problem comes first
    corrupt = Frame(None, seq=3, source_id="t", error="corrupt_frame: x",
                    meta={"golden": str(tmp_path / "broken.png")})
    assert switch.inspect(corrupt).reason == "corrupt_frame: x"
    # replay wraps a plain Inspector in a GoldenSwitch; the live Inspector ignores meta golden
    (outcome,) = replay([frame(tmp_path / "broken.png")], base)
    assert outcome.result.reason.startswith("golden_unreadable: ")
    live = base.inspect(frame(tmp_path / "broken.png"))
    assert live.verdict is Verdict.PASS, live.reason
