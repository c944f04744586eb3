"""Line drift (issue 9 item 5): the drift figure, ``recipe_drift`` / ``frame_size`` states, bounded
recipe updates from parts passed with margin, recipe versions and rollback.

The drifting line is the synthetic pin line at 320×240 (grey) whose parts drift slowly over
1,000 parts: the lamp dims (gain 1 → 0.8) and grows an illumination slope across the field (up to
±30 %), the black level rises (offset 0 → +15) and a film blurs the image (σ 0 → 0.6 px); every
10th part carries one defect.  Parts go through the real Inspector and the real drift component
the daemon uses (:class:`station.drift.RecipeWatch`); one test runs a real station process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from camera.synth import LineSpec, make_part, sample_defects
from pipeline.base.errors import ConfigError
from pipeline.base.frames import Frame
from pipeline.drift import DriftMonitor, DriftSettings, UnitSpaceAdapter, _cov, _mahal, max_ratio
from pipeline.inspector import Inspector
from pipeline.nsoartc import UnitSpace
from pipeline.recipe import Recipe
from station.bench.events import StationClient, StationProcess, write_config
from station.cli import main as cli_main
from station.demo.line import build_demo_recipe
from station.drift import RecipeWatch
from station.recipe_versions import RecipeVersions

from support.cli import station
from support.faults import with_sections

SPEC = LineSpec(size=(320, 240), jitter_px=3, jitter_deg=0.5, gain_drift=0.03, offset_drift=3,
                color=False)
N_PARTS = 1000


@pytest.fixture(scope="module")
def line_recipe(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    """The 320×240 line's recipe, built from 24 good parts as the demo builds it."""
    return build_demo_recipe(tmp_path_factory.mktemp("drift-line"), SPEC, seed=11, n_train=24)


class DriftingLine:
    """Parts of the drifting line: a pool of rendered parts (new pose, pin scatter per part),
    each shown with the drift of its moment and fresh sensor noise."""

    def __init__(self, n: int = N_PARTS, seed: int = 5, defect_every: int = 10) -> None:
        quiet = replace(SPEC, noise_sigma=0.0)
        rng = np.random.default_rng(seed)
        self.good = [make_part(quiet, rng).image for _ in range(16)]
        self.bad = [make_part(quiet, rng, sample_defects(quiet, rng, 1)).image for _ in range(12)]
        self.n, self.defect_every, self.rng = n, defect_every, rng
        self.u = np.linspace(-1, 1, SPEC.size[0], dtype=np.float32)[None, :]

    def drifted(self, image: np.ndarray, f: float) -> np.ndarray:
        """``image`` at drift fraction ``f`` (0: none, 1: the end of the 1,000 parts)."""
        img = image.astype(np.float32)
        if f * 0.6 > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), 0.6 * f)
        img = img * (1 - 0.2 * f) * (1 + 0.3 * f * self.u) + 15 * f
        img += self.rng.normal(0, 2.0, img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def part(self, i: int) -> tuple[Frame, bool]:
        """Part ``i``: its frame and whether it is defective."""
        defect = self.defect_every > 0 and i % self.defect_every == self.defect_every // 2
        src = self.bad[i % len(self.bad)] if defect else self.good[i % len(self.good)]
        img = self.drifted(src, i / (self.n - 1))
        return Frame(img, i, time.time(), "drift-line", meta={"part_id": f"p{i:04d}"}), defect


@dataclass
class Tally:
    good: int = 0
    false_rejects: int = 0
    defects: int = 0
    misses: int = 0
    reported_at: int | None = None  # part index of the first recipe_drift
    fr_at_report: float | None = None
    figure_at_report: dict | None = None
    recipes: list[str] = field(default_factory=list)

    @property
    def fr_rate(self) -> float:
        return self.false_rejects / max(self.good, 1)


def run_line(inspector: Inspector, watch: RecipeWatch, line: DriftingLine,
             stop_fr: float | None = None) -> Tally:
    """Every part through the Inspector and the drift component, as the daemon does."""
    t = Tally()
    for i in range(line.n):
        frame, defect = line.part(i)
        result = inspector.inspect(frame)
        assert result.verdict.value in ("pass", "defect"), result.reason
        if defect:
            t.defects += 1
            t.misses += result.verdict.value != "defect"
        else:
            t.good += 1
            t.false_rejects += result.verdict.value != "pass"
        if not t.recipes or t.recipes[-1] != result.recipe:
            t.recipes.append(result.recipe)
        change = watch.observe(result)
        if change and change.reason == "recipe_drift" and t.reported_at is None:
            t.reported_at, t.fr_at_report = i, t.fr_rate
            t.figure_at_report = watch.figure()
        if stop_fr is not None and t.good >= 50 and t.fr_rate > stop_fr:
            break
    return t


@pytest.mark.slow
def test_adaptation_follows_slow_drift_without_false_rejects_or_misses(
        line_recipe: Recipe, tmp_path: Path) -> None:
    inspector = Inspector(line_recipe)
    settings = DriftSettings(adapt=True)
    watch = RecipeWatch.for_station(settings, inspector, tmp_path / "state")
    t = run_line(inspector, watch, DriftingLine())
    print(f"adapt on: {t.false_rejects}/{t.good} false rejects, {t.misses}/{t.defects} misses, "
          f"{watch.updates} updates, figure {watch.figure()}")
    assert t.defects == 100 and t.misses == 0
    assert t.fr_rate <= 0.01, (t.false_rejects, t.good)
    assert t.reported_at is None  # the recipe kept up: the line never left what it knows
    # each update is a new sealed version (written by the worker while parts go on): its hash
    # reached the events, and every version loads
    # (a version swapped in at the very last part is in no result)
    assert watch.updates >= 10 and watch.updates <= len(t.recipes) <= watch.updates + 1
    watch.wait_pending()
    watch.close()
    versions = RecipeVersions(tmp_path / "state", line_recipe)
    assert versions.current() == watch.version == versions.numbers()[-1]
    hashes = set()
    for v in versions.numbers():
        r = versions.load(v)
        hashes.add(r.short_hash)
        if v:
            moved = r.settings.built["drift"]["moved"]
            assert moved["step_max"] <= settings.max_step + 1e-3
            assert moved["total_max"] <= settings.max_total + 1e-3
            assert 1.0 <= moved["var_ratio_max"] <= settings.max_var_ratio + 1e-3
            assert r.settings.built["drift"]["original"] == line_recipe.hash
    assert set(t.recipes) <= hashes and len(hashes) == len(versions.numbers()) == watch.updates + 1
    assert r.settings.built["drift"]["photometry"]["gain"] < 0.95  # the lamp dimmed


@pytest.mark.slow
def test_without_adaptation_drift_is_reported_before_false_rejects_pile_up(
        line_recipe: Recipe, tmp_path: Path) -> None:
    inspector = Inspector(line_recipe)
    settings = DriftSettings()
    assert settings.adapt is False  # off by default
    watch = RecipeWatch.for_station(settings, inspector, tmp_path / "state")
    t = run_line(inspector, watch, DriftingLine(), stop_fr=0.05)
    print(f"adapt off: recipe_drift at part {t.reported_at} with {t.fr_at_report:.3%} false "
          f"rejects so far; {t.false_rejects}/{t.good} false rejects when stopped")
    assert t.misses == 0
    # the drift does hurt a recipe that does not follow it ...
    assert t.fr_rate > 0.05
    # ... and it was reported first, in the figure the heartbeat carries
    assert t.reported_at is not None and t.fr_at_report is not None
    assert t.fr_at_report <= 0.05
    fig = t.figure_at_report
    assert fig is not None and fig["ratio_median"] >= settings.warn_ratio and fig["drifting"]
    assert watch.reason == "recipe_drift"
    assert RecipeVersions(tmp_path / "state", line_recipe).numbers() == [0]  # nothing written


def _unit_space(rng: np.random.Generator, shape: tuple[int, int]) -> UnitSpace:
    feats = [(1 + 0.03 * rng.standard_normal(shape), 2 + 0.5 * rng.standard_normal(shape))
             for _ in range(30)]
    return UnitSpace.fit(feats)


def test_a_run_of_defects_is_not_drift_but_good_parts_scoring_higher_are() -> None:
    """Half of the first parts defective (a bad batch, or a trigger that happens to land on the
    defective parts) leaves the good parts' median where it is: no ``recipe_drift``.  Good parts
    creeping up to the warn ratio are drift, and a window of mostly rejects is told too."""
    st = DriftSettings(window=20, min_parts=10)
    burst = DriftMonitor(st)
    for i in range(20):
        burst.add(3.0 if i % 2 else 0.42 + 0.01 * (i % 3), None)
        assert not burst.drifting
    assert burst.figure()["ratio_median"] < 0.5 and burst.figure()["ratio_p90"] == 3.0
    creeping = DriftMonitor(st)
    changes = [creeping.add(0.5 + 0.025 * i if i % 4 else 3.0, None) for i in range(20)]
    assert creeping.drifting and changes.count(True) == 1
    assert creeping.figure()["ratio_median"] >= st.warn_ratio
    scrap = DriftMonitor(st)
    for _ in range(10):
        scrap.add(1.4, None)
    assert scrap.drifting and scrap.figure()["ratio_median"] == 1.4


def test_unit_space_update_is_bounded_per_update_and_in_total() -> None:
    rng = np.random.default_rng(0)
    shape = (12, 16)
    original = _unit_space(rng, shape)
    mask = np.zeros(shape, bool)
    mask[2:10, 3:13] = True
    st = DriftSettings(adapt=True, batch=5, alpha=1.0, max_step=0.5, max_total=1.5,
                       max_var_ratio=2.0)
    ad = UnitSpaceAdapter(original, original, mask, st)
    inv0 = (original.inv_a.astype(np.float64), original.inv_b.astype(np.float64),
            original.inv_c.astype(np.float64))
    s0 = _cov(original)
    cur = original
    for k in range(6):  # parts far off, with a wide spread: every bound is hit
        for z in (-2, -1, 0, 1, 2):  # batch mean (1.5, 9) exactly: every step on one line
            ad.add(np.full(shape, 1.5 + 0.3 * z), np.full(shape, 9.0 - 2 * z))
        assert ad.ready
        new, moved = ad.update()
        step = _mahal(new.mu1 - cur.mu1.astype(np.float64), new.mu2 - cur.mu2.astype(np.float64),
                      inv0)
        total = _mahal(new.mu1 - original.mu1.astype(np.float64),
                       new.mu2 - original.mu2.astype(np.float64), inv0)
        assert step.max() <= st.max_step + 1e-3 and total.max() <= st.max_total + 1e-3
        assert total[mask].min() == pytest.approx(min(st.max_step * (k + 1), st.max_total),
                                                  rel=1e-3)
        s = _cov(new)
        for a, a0 in zip(s[:2], s0[:2], strict=True):  # variances: original ≤ Σ ≤ 2 × original
            assert np.all(a >= a0 * (1 - 1e-4)) and np.all(a <= a0 * st.max_var_ratio * 1.0001)
        # windows outside the cells never change
        for name in ("mu1", "mu2", "inv_a", "inv_b", "inv_c"):
            assert np.array_equal(getattr(new, name)[~mask], getattr(original, name)[~mask])
        assert moved["parts"] == st.batch and not ad.ready
        cur = new
    # features that stay where the recipe is move nothing, and never tighten it
    ad2 = UnitSpaceAdapter(original, original, mask, st)
    for _ in range(st.batch):
        ad2.add(original.mu1.copy(), original.mu2.copy())
    new, moved = ad2.update()
    assert moved["total_max"] < 1e-6
    assert np.allclose(_cov(new)[0], s0[0], rtol=1e-4)


def test_parts_not_passed_with_margin_do_not_teach(line_recipe: Recipe, tmp_path: Path) -> None:
    inspector = Inspector(line_recipe)
    watch = RecipeWatch.for_station(DriftSettings(adapt=True, batch=2), inspector,
                                    tmp_path / "state")
    line = DriftingLine(n=N_PARTS)
    # the end of the line: good parts have drifted past margin × threshold, defective parts
    # never teach
    for i in range(N_PARTS - 10, N_PARTS):
        frame, defect = line.part(i)
        result = inspector.inspect(frame)
        ratio = max_ratio(result.cell_scores, inspector.thresholds)
        assert defect or ratio >= watch.settings.margin, (i, ratio)
        watch.observe(result)
    assert watch.updates == 0 and watch.version == 0
    assert RecipeVersions(tmp_path / "state", line_recipe).numbers() == [0]


def test_frame_of_another_size_is_one_clear_error_and_state(line_recipe: Recipe,
                                                            tmp_path: Path) -> None:
    inspector = Inspector(line_recipe)
    watch = RecipeWatch.for_station(DriftSettings(), inspector, tmp_path / "state")
    line = DriftingLine(n=N_PARTS)
    frame, _ = line.part(0)
    small = cv2.resize(frame.image, (192, 144))
    changes, reasons = [], set()
    for k in range(5):
        result = inspector.inspect(Frame(small, k, source_id="cam"))
        assert result.verdict.value == "error"
        reasons.add(result.reason)
        changes.append(watch.observe(result))
    assert reasons == {"frame_size: 192x144 (recipe 320x240)"}  # the same words every time
    assert changes[0] is not None and changes[0].reason == "frame_size"
    assert changes[0].detail == "frame_size: 192x144 (recipe 320x240)"
    assert all(c is None for c in changes[1:])  # one state change, not a stream
    assert watch.figure()["frame_size"] == "192x144 (recipe 320x240)"
    # within the aligner's size tolerance but another resolution: it does not align, and says
    # so in the same words
    r = inspector.inspect(Frame(cv2.resize(frame.image, (256, 192)), 6, source_id="cam"))
    assert r.reason == "frame_size: 256x192 (recipe 320x240)"
    # a camera ROI a few rows taller still aligns and is judged
    taller = np.vstack([frame.image, frame.image[-8:]])
    assert inspector.inspect(Frame(taller, 7)).verdict.value == "pass"
    back = watch.observe(inspector.inspect(frame))  # the right camera again
    assert back is not None and back.reason is None and watch.reason is None
    # alignment off: any difference at all is the same error
    rs = replace(line_recipe.settings, align=replace(line_recipe.settings.align, enabled=False))
    off = Inspector(replace(line_recipe, settings=rs))
    odd = cv2.resize(frame.image, (318, 240))
    assert off.inspect(Frame(odd, 9)).reason == "frame_size: 318x240 (recipe 320x240)"


def test_versions_rollback_and_config_pin(line_recipe: Recipe, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Versions from real updates; `station recipe versions` lists them, `rollback` moves the
    current one, the config's drift.version pins one; a tampered version is refused (78)."""
    state = tmp_path / "state"
    inspector = Inspector(line_recipe)
    watch = RecipeWatch.for_station(DriftSettings(adapt=True, batch=3), inspector, state)
    line = DriftingLine(n=N_PARTS, defect_every=0)
    for i in range(7):  # early parts: passed with margin, two updates
        watch.observe(inspector.inspect(line.part(i)[0]))
        watch.wait_pending()  # the version is written by a worker; here: before the next part
    assert watch.updates == 2 and watch.version == 2
    v2_hash = inspector.recipe.short_hash
    assert v2_hash != line_recipe.short_hash
    cfg = write_config(tmp_path / "station.yaml", recipe=line_recipe.folder, state_dir=state)

    r = station("recipe", "versions", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    listed = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["version"] for e in listed] == [0, 1, 2]
    assert [e["current"] for e in listed] == [False, False, True]
    assert listed[0]["hash"] == line_recipe.short_hash and listed[2]["hash"] == v2_hash
    assert listed[2]["parent"] == 1 and listed[2]["parts"] == 3

    r = station("recipe", "rollback", "--config", str(cfg), "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    fresh = Inspector(line_recipe)
    again = RecipeWatch.for_station(DriftSettings(), fresh, state)
    assert again.version == 1 and fresh.recipe.short_hash == listed[1]["hash"]
    assert fresh.inspect(line.part(0)[0]).recipe == listed[1]["hash"]  # events carry it
    pinned = Inspector(line_recipe)
    RecipeWatch.for_station(DriftSettings(version=0), pinned, state)
    assert pinned.recipe.short_hash == line_recipe.short_hash
    # adapting on from version 1 writes version 3 (nothing is overwritten), parent 1
    follow = Inspector(line_recipe)
    cont = RecipeWatch.for_station(DriftSettings(adapt=True, batch=3), follow, state)
    assert cont.version == 1
    for i in range(10):  # early parts: nearly all passed with margin
        cont.observe(follow.inspect(line.part(i)[0]))
        cont.wait_pending()
        if cont.updates:
            break
    assert cont.version == 3
    v3 = RecipeVersions(state, line_recipe).load(3)
    assert v3.settings.built["drift"]["parent"] == 1

    assert cli_main(["recipe", "rollback", "--config", str(cfg), "9"]) == 78
    assert "recipe version 9 does not exist" in capsys.readouterr().err
    (state / "recipe-versions" / line_recipe.short_hash / "v0002" / "unitspace.npz").write_bytes(
        b"tampered")
    assert cli_main(["recipe", "rollback", "--config", str(cfg), "2"]) == 78
    assert "unitspace.npz" in capsys.readouterr().err
    assert RecipeVersions(state, line_recipe).current() == 3  # the refused rollback moved nothing
    with pytest.raises(ConfigError):
        RecipeWatch.for_station(DriftSettings(version=2), Inspector(line_recipe), state)


def test_daemon_heartbeat_carries_the_drift_figure_and_recipe_drift_state(
        line_recipe: Recipe, tmp_path: Path) -> None:
    """A real station process on drifted parts (late in the line: still passed, but near their
    thresholds): heartbeats carry ``drift``, the station turns degraded / recipe_drift."""
    line = DriftingLine(n=N_PARTS, defect_every=0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(6):
        frame, _ = line.part(860 + k)
        cv2.imwrite(str(frames / f"part_{k:04d}.png"), frame.image)
    state = tmp_path / "state"
    cfg = with_sections(
        write_config(tmp_path / "station.yaml", recipe=line_recipe.folder, state_dir=state,
                     mode="free_run", rate_hz=10, camera=str(frames / "part_%04d.png"), fps=20,
                     loop=True, heartbeat_s=0.2),
        drift={"window": 6, "min_parts": 4})
    seen: list[tuple[str, dict]] = []
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        hb = c.wait_live(30)
        assert hb["drift"]["parts"] >= 0 and hb["drift"]["adapt"] is False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            msg = c.recv(1.0)
            if msg is None:
                continue
            seen.append(msg)
            if msg[0] == "insp.heartbeat" and msg[1]["reason"] == "recipe_drift":
                break
        status = c.status()
    drift_status = [ev for t, ev in seen if t == "insp.status" and ev["reason"] == "recipe_drift"]
    assert len(drift_status) == 1, [ev for t, ev in seen if t == "insp.status"]
    assert drift_status[0]["state"] == "degraded"
    assert drift_status[0]["detail"].startswith("recipe_drift: median max score/threshold")
    beat = [ev for t, ev in seen if t == "insp.heartbeat"][-1]
    assert beat["state"] == "degraded" and beat["reason"] == "recipe_drift"
    fig = beat["drift"]
    assert fig["ratio_median"] >= fig["warn_ratio"] == 0.75 and fig["drifting"] is True
    assert fig["parts"] >= 4 and fig["recipe"] == line_recipe.short_hash
    assert fig["gain_drift"] < -0.05 and fig["offset_drift"] > 5  # the lamp dimmed, black rose
    results = [ev for t, ev in seen if t.startswith("insp.result.")]
    assert results and all(ev["verdict"] in ("pass", "defect") for ev in results)
    assert status["state"] == "degraded" and status["reason"] == "recipe_drift"
    assert status["drift"]["drifting"] is True


def test_daemon_frames_of_another_size_are_one_status_and_one_error_text(
        line_recipe: Recipe, tmp_path: Path) -> None:
    """A real station process whose camera now delivers 256×192 frames (the recipe: 320×240):
    one ``degraded`` / ``frame_size`` status (not "3 errors in a row"), every part the same
    error naming both sizes, the heartbeat saying why."""
    line = DriftingLine(n=N_PARTS, defect_every=0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        cv2.imwrite(str(frames / f"part_{k:04d}.png"), cv2.resize(line.part(k)[0].image,
                                                                  (256, 192)))
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=line_recipe.folder, state_dir=state,
                       mode="free_run", rate_hz=10, camera=str(frames / "part_%04d.png"),
                       fps=20, loop=True, heartbeat_s=0.2)
    seen: list[tuple[str, dict]] = []
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
        c.wait_live(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(
                [1 for t, _ in seen if t.startswith("insp.result.")]) < 8:
            msg = c.recv(1.0)
            if msg is not None:
                seen.append(msg)
        status = c.status()
        journal = c.catchup(0)  # from the start, before this subscriber joined
    results = [ev for t, ev in journal if t.startswith("insp.result.")]
    assert len(results) >= 8
    assert {(ev["verdict"], ev["reason"]) for ev in results} == {
        ("error", "frame_size: 256x192 (recipe 320x240)")}
    states = [(ev["state"], ev["reason"]) for t, ev in journal if t == "insp.status"]
    degraded = [st for st in states if st[0] == "degraded"]
    assert degraded == [("degraded", "frame_size")], states  # once, not "3 errors in a row"
    assert states[-1] == ("degraded", "frame_size"), states
    beat = [ev for t, ev in seen if t == "insp.heartbeat"][-1]
    assert (beat["state"], beat["reason"]) == ("degraded", "frame_size")
    assert beat["drift"]["frame_size"] == "256x192 (recipe 320x240)"
    assert status["reason"] == "frame_size" and status["model"]["errors_in_row"] == 0



def test_adaptation_of_a_recipe_without_unit_space_is_a_config_error(line_recipe: Recipe,
                                                                     tmp_path: Path) -> None:
    """A variation-only recipe has no NSOARTC unit space: adapting it is refused (exit 78), not
    a crash at the first update; monitoring alone still works."""
    from pipeline.recipe import build_recipe

    settings = replace(line_recipe.settings, judges=["variation"])
    recipe = build_recipe([], line_recipe.grid.to_config(), golden=line_recipe.golden,
                          settings=settings)
    recipe.save(tmp_path / "recipe")
    recipe = Recipe.load(tmp_path / "recipe")
    assert recipe.unit_space is None
    inspector = Inspector(recipe)
    with pytest.raises(ConfigError, match="no NSOARTC unit space"):
        RecipeWatch.for_station(DriftSettings(adapt=True), inspector, tmp_path / "state")
    watch = RecipeWatch.for_station(DriftSettings(adapt=False), inspector, tmp_path / "state2")
    frame, _ = DriftingLine(n=N_PARTS).part(0)
    watch.observe(inspector.inspect(frame))
    assert watch.updates == 0
