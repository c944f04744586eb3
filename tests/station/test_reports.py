"""Reports that explain (issue 10 item 3), from real replays and evaluations: counts per verdict
for unlabelled data, a panel per defect with each flagged cell's score and threshold, the parts
that could not be judged named, agreement (not confusion) with a recording and a warning when it
was made under another recipe, bounded panels, plots, and a self-contained report.html."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import pytest

from camera.replay import ManifestSource
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe
from station.recorder import Recorder
from station.replay_runner import replay
from station.report import ReportBuilder

from support.cli import station
from support.deeppcb import DEEPPCB, write_subset


def assert_self_contained(html: str) -> None:
    """Every image inlined, nothing fetched from elsewhere (no script, link or external URL)."""
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
                        for s in srcs)
    assert "<script" not in html and "<link" not in html and "href=" not in html
    assert "url(" not in html


@pytest.mark.slow
def test_replay_of_unlabelled_frames_counts_and_explains(tmp_path: Path, synthetic_line: Path,
                                                         synthetic_recipe: Recipe) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(synthetic_line.parent / "frames", frames)
    (frames / "part_9999.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # corrupt
    p = station("replay", str(frames), "--recipe", str(synthetic_recipe.folder), "--report",
                str(tmp_path / "rep"), "--out", str(tmp_path / "parts.jsonl"))
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "rep" / "report.json").read_text())
    parts = [json.loads(x) for x in (tmp_path / "parts.jsonl").read_text().splitlines()]
    assert s["parts"] == 22 and sum(s["verdicts"].values()) == 22
    assert s["verdicts"]["defect"] >= 7 and s["verdicts"]["error"] == 1  # 7 defective parts
    assert s["labelled"] == 0
    assert not {"part_confusion", "cell_confusion", "misses", "false_reject_rate"} & set(s)
    assert s["reasons"]["error"] == {"corrupt_frame": 1}
    assert [u["part_id"] for u in s["unjudged"]] == ["part_9999"]
    assert s["recipe"]["hash"] == synthetic_recipe.short_hash
    assert s["panels"]["defect"] == {"shown": s["verdicts"]["defect"],
                                     "total": s["verdicts"]["defect"]}

    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert_self_contained(html)
    assert html.count('class="panel"') == s["verdicts"]["defect"]
    assert "rate None" not in md and "labelled 0" not in md
    assert "Could not be judged (1)" in md and "part_9999" in html
    thresholds = synthetic_recipe.settings.thresholds
    sections = {x.split(" ", 1)[0]: x for x in md.split("\n### ")[1:]}  # one per panel
    for part in (x for x in parts if x["verdict"] == "defect"):
        assert part["part_id"] in html
        section = sections[part["part_id"]]
        for d in part["defects"]:  # each flagged cell with its score and its threshold
            score = part["judges"]["metric"]["cells"][d["address"]]
            row = re.search(rf"\| {re.escape(d['address'])} \| ([\d.]+) \| ([\d.]+) \|",
                            section)
            assert row, d["address"]
            assert abs(float(row.group(1)) - score) < 2e-3
            assert float(row.group(2)) == round(thresholds[d["address"]], 3)
    assert len(html) < 3_000_000


@pytest.mark.slow
def test_recording_replay_reports_agreement_and_another_recipe(tmp_path: Path,
                                                               synthetic_line: Path,
                                                               synthetic_recipe: Recipe) -> None:
    """Recorded verdicts are what a station said, not ground truth: no confusion, an agreement
    count; the recording was made under another recipe hash → a warning."""
    inspector = Inspector(synthetic_recipe)
    recorder = Recorder(tmp_path / "rec")
    src = ManifestSource(synthetic_line)
    try:
        frames = list(src)[:5]
    finally:
        src.close()
    flipped = None
    for i, frame in enumerate(frames):
        frame.meta.pop("golden", None)
        r = inspector.inspect(frame, f"R{i}")
        event = {**r.to_payload(), "seq": i + 1, "ts": "2026-12-01T10:00:00.000Z",
                 "recipe": "0123456789ab"}
        if i == 2:  # what that station said differs from what this recipe says
            flipped = event["verdict"]
            event["verdict"] = "defect" if flipped == "pass" else "pass"
        assert recorder.record(f"R{i}", r.images, {"event": event})
    recorder.close()
    p = station("replay", str(tmp_path / "rec"), "--recipe", str(synthetic_recipe.folder),
                "--report", str(tmp_path / "rep"), "--out", str(tmp_path / "o.jsonl"))
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert s["labelled"] == 0 and "part_confusion" not in s and "misses" not in s
    assert s["recorded"]["compared"] == 5 and s["recorded"]["agree"] == 4
    back = "defect" if flipped == "pass" else "pass"
    assert s["recorded"]["changed"] == {f"{back}->{flipped}": 1}
    assert s["recorded"]["recipes"] == {"0123456789ab": 5}
    assert any("another recipe" in w and "0123456789ab" in w for w in s["warnings"])
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "another recipe" in html and "not ground truth" in html
    assert "warning: recorded under another recipe" in p.stderr


def test_panels_are_bounded_and_plots_embedded(tmp_path: Path, synthetic_line: Path,
                                               synthetic_recipe: Recipe) -> None:
    builder = ReportBuilder(synthetic_recipe.grid, synthetic_recipe.settings.thresholds,
                            keep_worst=2, recipe_hash=synthetic_recipe.short_hash)
    src = ManifestSource(synthetic_line)
    try:
        for o in replay(src, Inspector(synthetic_recipe)):
            builder.add(o)
    finally:
        src.close()
    s = builder.write(tmp_path / "rep", title="Bounded")
    assert s["labelled"] == 21 and "part_confusion" in s  # a manifest is ground truth
    total = s["panels"]["defect"]["total"]
    assert total == s["part_confusion"]["tp"] >= 5 and s["panels"]["defect"]["shown"] == 2
    html = (tmp_path / "rep" / "report.html").read_text()
    assert_self_contained(html)
    assert f"… and {total - 2} more (the worst 2 are shown)" in html
    assert html.count("data:image/png;base64,") == 2  # the score plots
    for name in ("score_ratio", "cell_scores"):
        png = (tmp_path / "rep" / "images" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and cv2.imdecode(
            __import__("numpy").frombuffer(png, "uint8"), cv2.IMREAD_COLOR).shape[1] > 300


@pytest.mark.slow
@pytest.mark.skipif(not (DEEPPCB / "index.csv").is_file(),
                    reason="the DeepPCB subset is not on this machine (../shared/data/deeppcb)")
def test_eval_names_the_boards_it_could_not_judge(tmp_path: Path) -> None:
    data = write_subset(tmp_path / "deeppcb", per_group=1)
    rows = (data / "index.csv").read_text().splitlines()
    (data / "broken").mkdir()
    (data / "broken" / "bad_test.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    first = rows[1].split(",")
    rows = [*rows[:3], f"BADTEST,broken,broken/bad_test.jpg,{first[3]},{first[4]}",
            f"NOTEMPLATE,broken,{first[2]},broken/missing_temp.jpg,{first[4]}"]
    (data / "index.csv").write_text("\n".join(rows) + "\n")
    p = station("eval", str(data), "--layout", "deeppcb", "--report", str(tmp_path / "rep"),
                timeout=600)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["parts"] == 4 and s["errors"] == 2
    named = {u["part_id"]: u["reason"] for u in s["unjudged"]}
    assert set(named) == {"BADTEST", "NOTEMPLATE"}
    assert named["BADTEST"].startswith("corrupt_frame") and "bad_test.jpg" in named["BADTEST"]
    assert "missing_temp.jpg" in named["NOTEMPLATE"]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert_self_contained(html)
    assert "Could not be judged (2)" in html and "NOTEMPLATE" in html and "BADTEST" in html
    assert "cell_confusion" in s and "box_recall" in s
