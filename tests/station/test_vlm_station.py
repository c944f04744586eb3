"""The VLM judge inside the station: replay with a tiny 4-bit model, start-up errors of `run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.base.errors import EXIT_CONFIG
from pipeline.recipe import Recipe

from support.cli import station

pytest.importorskip("bitsandbytes", reason="the VLM extra is installed by tests/run.sh")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "qwen2-vl-tiny"
    p = station("model", "tiny", str(out))
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.slow
@pytest.mark.vlm
@pytest.mark.parametrize("mode", ["scored", "generate"])
def test_replay_carries_the_vlm_verdict_for_every_part(tmp_path: Path, synthetic_line: Path,
                                                       synthetic_recipe: Recipe, tiny_model: Path,
                                                       mode: str) -> None:
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        f"recipe: {synthetic_recipe.folder}\n"
        f"vlm: {{enabled: true, backend: transformers, device: cpu, mode: {mode}, "
        f"model_dir: {tiny_model}, max_new_tokens: 8, timeout_ms: 120000}}\n")
    p = station("replay", str(synthetic_line), "-c", str(cfg), "--limit", "4",
                "--out", str(tmp_path / "out.jsonl"))
    assert p.returncode == 0, p.stderr
    parts = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(parts) == 4
    for part in parts:
        vlm = part["judges"]["vlm"]
        assert vlm["verdict"] in ("pass", "defect", "uncertain", "error")
        assert part["model"] and "qwen2" in part["model"].lower()
        if mode == "scored" and vlm["verdict"] != "error":
            assert 0.0 <= vlm["p_defect"] <= 1.0
        for d in vlm["defects"]:  # scored mode: always a cell of the grid
            assert d["address"] in synthetic_recipe.grid.cells
        # fail-safe policy any: a random model's defect/uncertain never becomes a pass
        if vlm["verdict"] != "pass":
            assert part["verdict"] != "pass"


@pytest.mark.vlm
@pytest.mark.parametrize("problem", ["missing", "corrupt", "text_only"])
def test_run_stops_with_exit_78_and_one_line(tmp_path: Path, synthetic_recipe: Recipe,
                                             tiny_model: Path, problem: str) -> None:
    import shutil

    model = tmp_path / "model"
    if problem == "missing":
        expected = "not found"
    else:
        shutil.copytree(tiny_model, model)
        if problem == "corrupt":
            weights = next(model.glob("*.safetensors"))
            weights.write_bytes(weights.read_bytes()[:200])
            expected = "corrupt"
        else:
            conf = json.loads((model / "config.json").read_text())
            conf = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                    **conf.get("text_config", {})}
            (model / "config.json").write_text(json.dumps(conf))
            expected = "text-only"
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        f"recipe: {synthetic_recipe.folder}\n"
        f"station: {{id: t, state_dir: {tmp_path / 'state'}}}\n"
        f"camera: {{source: synthetic}}\n"
        "events: {pub: 'tcp://127.0.0.1:0', trigger: 'tcp://127.0.0.1:0', "
        "catchup: 'tcp://127.0.0.1:0'}\n"
        f"vlm: {{enabled: true, backend: transformers, device: cpu, model_dir: {model}}}\n")
    p = station("run", "-c", str(cfg), timeout=300)
    assert p.returncode == EXIT_CONFIG, (p.returncode, p.stderr[-2000:])
    last = p.stderr.strip().splitlines()[-1]
    assert expected in last.lower(), last


@pytest.mark.vlm
def test_warm_up_runs_on_the_recipes_own_layout(synthetic_recipe: Recipe,
                                                tiny_model: Path) -> None:
    from pipeline.judges.vlm import vlm_judge
    from pipeline.vlm.settings import VlmSettings

    settings = VlmSettings.from_mapping({"enabled": True, "backend": "transformers",
                                         "device": "cpu", "model_dir": str(tiny_model)})
    judge = vlm_judge(synthetic_recipe, vlm_settings=settings)
    try:
        model = judge.judge_model
        # the warm-up ran on the recipe's layout: the one-pass plan (cached prefix of the
        # golden, the grid's answer tree) exists before the first part
        assert model.warmup_s is not None
        assert model.counters["parts"] == 0
        assert model.model_info["warmup_s"] == model.warmup_s
        onepass = model._engine.onepass
        assert onepass is not None and onepass.plan is not None
    finally:
        judge.close()
