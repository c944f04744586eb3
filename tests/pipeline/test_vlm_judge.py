"""The VLM judge with real tiny random 4-bit models (Llama-3.2-Vision, Qwen2-VL, Pixtral) on a CPU.

The models are written from configs in code by ``station.modeltools.tiny`` (tokenizer, processor and
all: nothing is downloaded) and loaded in 4 bit through transformers + bitsandbytes.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.base.errors import ConfigError
from pipeline.verdicts import Verdict
from pipeline.vlm.parser import parse_answer
from pipeline.vlm.prompts import build_prompt, fit_image, instruction_text, to_tagged_messages
from pipeline.vlm.settings import INSTRUCTION_DST, PromptTexts, VlmSettings, fill

COLS = [str(i) for i in range(1, 10)]
ROWS = ["U", "C", "D"]
CELLS = {f"X:{c}, Y:{r}" for c in COLS for r in ROWS}
FAMILIES = ["qwen2_vl", "mllama", "llava"]
pytestmark = pytest.mark.filterwarnings("ignore:`hidden_state` is deprecated:FutureWarning")


# --- settings and prompts (no model) -------------------------------------------------------------


def test_settings_defaults_are_the_seed_texts():
    s = VlmSettings()
    assert s.mode == "scored" and s.images == "pair" and s.composition == "separate"
    assert s.max_image_side == 448 and s.threshold == 0.5 and not s.one_shot
    assert s.prompts.dst.endswith("if you find a solid white circle, it is likely to be a defect.")
    assert "solid white circle" not in s.prompts.raw
    assert s.prompts.single.startswith("You are visual inspector who judges")
    assert "red star" in s.prompts.star
    assert s.type_name("DST") == "CYLN_DST" and s.type_name("raw") == "CYLN_RAW"


def test_settings_from_mapping_checks_keys_and_values():
    s = VlmSettings.from_mapping(
        {"mode": "generate", "image_type": "raw", "prompts": {"dst": "x"}, "defect_modes": ["bent"]}
    )
    assert s.mode == "generate" and s.image_type == "RAW" and s.prompts.dst == "x"
    assert s.prompts.raw.startswith("You are a visual inspector")
    bad = [
        ({"modes": "scored"}, "unknown key"),
        ({"mode": "fast"}, "vlm.mode"),
        ({"threshold": 1.5}, "vlm.threshold"),
        ({"max_image_side": "big"}, "vlm.max_image_side"),
        ({"prompts": {"dts": "x"}}, "vlm.prompts"),
        ({"device": "gpu"}, "vlm.device"),
        ({"one_shot": True}, "one_shot"),
        ({"warmup": "yes"}, "vlm.warmup"),
        ({"defect_modes": ["bent", "Bent"]}, "duplicates"),
        ({"image_type_names": {"DST": "A"}}, "RAW"),
    ]
    for data, what in bad:
        with pytest.raises(ConfigError, match=what):
            VlmSettings.from_mapping(data)
    assert VlmSettings.from_mapping(VlmSettings().to_dict()) == VlmSettings()


def test_fill_leaves_unknown_braces():
    assert fill("{pin_count} {noun} {other}", pin_count=27, noun="pins") == "27 pins {other}"


def _img(w=120, h=90, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_prompts_for_each_mode():
    two = [_img(), _img(seed=1)]
    s = VlmSettings()
    p = build_prompt(s, two, columns=COLS, rows=ROWS)
    assert len(p.messages) == 1 and len(p.images) == 2
    parts = p.messages[0]["content"]
    assert parts[0]["type"] == "text" and parts[0]["text"].startswith(INSTRUCTION_DST)
    assert [x["type"] for x in parts[1:]] == ["image", "image"]
    assert p.prefill == "- image type->CYLN_DST\n- number of pins->27 pins\n- your judgement->"
    assert "1 2 3 4 5 6 7 8 9" in p.instruction and "U C D" in p.instruction

    s = VlmSettings(image_type="RAW", mode="generate", pin_count=12, noun="studs")
    p = build_prompt(s, two, columns=COLS, rows=ROWS)
    assert p.prefill == "" and "solid white circle" not in p.instruction
    assert "- number of studs->12 studs" in p.instruction

    s = VlmSettings(composition="stacked")
    p = build_prompt(s, [_img()], columns=COLS, rows=ROWS)
    assert "top image" in p.instruction and len(p.images) == 1
    s = VlmSettings(images="single", prompts=PromptTexts(format_hint=""))
    p = build_prompt(s, [_img()], columns=COLS, rows=ROWS)
    assert p.instruction == s.prompts.single
    with pytest.raises(ValueError, match="expected 1 image"):
        build_prompt(s, two, columns=COLS, rows=ROWS)


def test_one_shot_prompt_has_the_example_turn():
    s = VlmSettings(one_shot=True, one_shot_image="/x.png", one_shot_address="X:3, Y:C")
    p = build_prompt(s, [_img(), _img()], columns=COLS, rows=ROWS, one_shot_image=_img(seed=5))
    assert [m["role"] for m in p.messages] == ["user", "assistant", "user"]
    assert p.messages[0]["content"][0]["text"] == s.prompts.star
    assert p.messages[1]["content"][0]["text"].endswith("- defect position->X:3, Y:C")
    assert len(p.images) == 3
    tagged = to_tagged_messages(p.messages)
    assert tagged[0]["content"].startswith("<|image_1|>\n")
    assert tagged[2]["content"].startswith("<|image_2|>\n<|image_3|>\n")
    # every image before the test image is keyed by content, the example scaled once
    assert len(p.reference_keys) == 2
    again = build_prompt(s, [_img(), _img(seed=9)], columns=COLS, rows=ROWS,
                         one_shot_image=_img(seed=5))
    assert again.images[0] is p.images[0] and again.reference_keys == p.reference_keys
    other = build_prompt(s, [_img(), _img()], columns=COLS, rows=ROWS,
                         one_shot_image=_img(seed=6))
    assert other.reference_keys[0] != p.reference_keys[0]
    assert other.reference_keys[1] == p.reference_keys[1]


def test_fit_image_caps_the_size_and_reads_bgr():
    assert fit_image(_img(1000, 500), 448).size == (448, 224)
    assert fit_image(_img(100, 50), 448).size == (100, 50)
    bgr = np.zeros((10, 20, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert fit_image(bgr, 448).getpixel((0, 0)) == (0, 0, 255)
    assert fit_image(np.full((5, 5), 7, np.uint8), 448).getpixel((0, 0)) == (7, 7, 7)


def test_reference_images_are_scaled_once():
    from pipeline.vlm.prompts import fit_reference

    golden = np.random.default_rng(4).integers(0, 255, (239, 657, 3), dtype=np.uint8)
    a = fit_reference(golden, 448)
    assert a.tobytes() == fit_image(golden, 448).tobytes() and a.size == (448, 163)
    assert fit_reference(golden.copy(), 448) is a  # same bytes, another array: not scaled again
    other = golden.copy()
    other[0, 0] ^= 1
    assert fit_reference(other, 448) is not a
    pil = fit_image(golden, 600)  # a PIL image is keyed by its content too
    assert fit_reference(pil, 448) is fit_reference(pil.copy(), 448)


# --- tiny models -------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    from station.modeltools.tiny import write_tiny_model

    root = tmp_path_factory.mktemp("vlm")
    return {f: write_tiny_model(root / f, f) for f in [*FAMILIES, "qwen2_5_vl"]}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def loaded(tiny_dirs, cache_dir):
    from pipeline.vlm.backends import load_model

    return {
        f: load_model(VlmSettings(model_dir=str(d)), cache_dir=cache_dir)
        for f, d in tiny_dirs.items()
    }


def _judge(loaded, family, **kw):
    from pipeline.vlm.judge import VlmJudge

    kw.setdefault("max_image_side", 112)
    kw.setdefault("warmup", False)
    return VlmJudge(VlmSettings(model_dir="unused", **kw), loaded=loaded[family])


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_loads_in_4bit_offline(loaded, family):
    import os

    lm = loaded[family]
    info = lm.info()
    assert info["backend"] == "transformers" and info["device"] == "cpu"
    assert info["family"] == family and info["compute_dtype"] == "float32"
    assert 0 < lm.n_4bit <= lm.n_linear
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["UNSLOTH_DISABLE_STATISTICS"] == "1"
    assert os.environ["UNSLOTH_COMPILE_LOCATION"].endswith("unsloth_compiled_cache")
    assert lm.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("images", "composition", "image_type", "n"),
    [
        ("pair", "separate", "DST", 2),
        ("pair", "stacked", "RAW", 1),
        ("single", "separate", "DST", 1),
    ],
)
def test_scored_defect_always_has_a_valid_address(
    loaded, family, images, composition, image_type, n
):
    # A threshold near 0 sends every part down the defect path (random weights say anything).
    j = _judge(
        loaded,
        family,
        images=images,
        composition=composition,
        image_type=image_type,
        threshold=1e-6,
    )
    for seed in range(2):
        r = j.judge(_images(n, seed), columns=COLS, rows=ROWS)
        assert r.verdict == Verdict.DEFECT, r
        d = r.details
        assert d["mode"] == "scored" and 0.0 <= d["p_defect"] <= 1.0 and d["p_mass"] > 0
        assert d["address"] in CELLS and len(r.defects) == 1
        assert r.defects[0].address == d["address"] and r.defects[0].judge == "vlm"
        assert d["forwards"] == 1  # prompt and answer tree in one pass
        assert d["kv_cache"] is (family != "mllama")  # mllama: one full pass, no prefix cache
        prefix = f"- image type->CYLN_{image_type}\n- number of pins->27 pins\n"
        assert d["raw"].startswith(prefix + "- your judgement->defective\n- defect position->")
        p = parse_answer(d["raw"], COLS, ROWS)  # the built answer honours the contract
        assert p.judgement == "defect" and p.positions == [(r.defects[0].column, r.defects[0].row)]
    j.close()


@pytest.mark.vlm
def test_qwen2_5_vl_family(loaded):
    lm = loaded["qwen2_5_vl"]
    assert lm.family == "qwen2_5_vl" and lm.n_4bit > 0
    j = _judge(loaded, "qwen2_5_vl", threshold=1e-6)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.DEFECT and r.details["address"] in CELLS
    assert r.details["kv_cache"] is True
    j.close()
    j = _judge(loaded, "qwen2_5_vl", mode="generate", max_new_tokens=8, compile_generate=True,
               one_pass=False)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.details["tokens_out"] <= 8 and j.model_info["compile_generate"] is True
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_scored_pass_is_one_forward(loaded, family):
    j = _judge(loaded, family, threshold=1 - 1e-9)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.PASS and r.defects == []
    assert r.details["forwards"] == 1 and r.details["address"] is None
    assert r.details["raw"].endswith("- your judgement->passed")
    assert r.details["ms"] > 0
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_scored_other_grids_and_mode_choices(loaded, family):
    cols = [str(i) for i in range(1, 13)]  # "10".."12": multi-token labels for some tokenizers
    rows = ["A", "B"]
    modes = ["bent", "missing", "foreign matter"]
    j = _judge(loaded, family, threshold=1e-6, defect_modes=modes)
    for seed in range(3):
        r = j.judge(_images(2, seed), columns=cols, rows=rows)
        d = r.defects[0]
        assert d.column in cols and d.row in rows and d.mode in modes
        assert 0 < r.details["address_p"] <= 1 and 0 < r.details["mode_p"] <= 1
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_steps_match_full_recompute(loaded, family):
    j = _judge(loaded, family, threshold=1e-6, one_pass=False)
    imgs = _images(2, seed=7)
    a = j.judge_now(imgs, columns=COLS, rows=ROWS)
    j._engine.kv_cache_ok = False
    try:
        b = j.judge_now(imgs, columns=COLS, rows=ROWS)
    finally:
        j._engine.kv_cache_ok = True
    assert a.details["kv_cache"] is True and b.details["kv_cache"] is False
    assert a.details["raw"] == b.details["raw"]
    assert a.details["address_p"] == pytest.approx(b.details["address_p"], rel=1e-3)
    assert a.details["p_defect"] == pytest.approx(b.details["p_defect"], abs=1e-5)
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("modes", [[], ["bent", "missing", "foreign matter"]])
def test_one_pass_scores_equal_step_by_step(loaded, family, modes):
    """One forward pass (cached prefix + answer tree) gives the step-by-step decoder's scores."""
    one = _judge(loaded, family, threshold=1e-6, defect_modes=modes)
    step = _judge(loaded, family, threshold=1e-6, defect_modes=modes, one_pass=False)
    golden = _images(1, seed=11)[0]
    for seed in range(3):  # same golden, new test images: parts after the first reuse the prefix
        imgs = [golden, _images(1, seed=20 + seed)[0]]
        a = one.judge_now(imgs, columns=COLS, rows=ROWS).details
        b = step.judge_now(imgs, columns=COLS, rows=ROWS).details
        assert a["forwards"] == 1 and b["forwards"] >= 3
        assert a["address"] == b["address"] and a["defect_mode"] == b["defect_mode"]
        assert a["raw"] == b["raw"] and a["tokens_in"] == b["tokens_in"]
        assert a["p_defect"] == pytest.approx(b["p_defect"], abs=1e-4)
        for k in ("column_p", "row_p", *(["mode_p"] if modes else [])):
            assert a[k] == pytest.approx(b[k], rel=1e-3), k
    op = one._engine.onepass
    assert op is not None and op.cached is (family != "mllama")
    if op.cached:  # the prefix (instruction, golden) was computed once, not per part
        assert 0 < op.plan.split < a["tokens_in"]
    one.close()
    step.close()


@pytest.mark.vlm
def test_warmup_with_the_recipe_layout_builds_the_plan_at_start_up(loaded):
    j = _judge(loaded, "qwen2_vl", threshold=1e-6)
    golden = _images(1, seed=5)[0]
    j.warmup([golden, golden], columns=COLS, rows=ROWS)
    info = j.model_info["one_pass"]
    assert info["cached_prefix_tokens"] > 0 and info["graph"] == "eager"  # no CUDA here
    plan = j._engine.onepass.plan
    r = j.judge([golden, _images(1, seed=6)[0]], columns=COLS, rows=ROWS)
    assert r.details["forwards"] == 1 and j._engine.onepass.plan is plan  # nothing re-planned
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava"])
def test_cached_prefix_matches_the_uncached_pass(loaded, family):
    """The prefix cache changes nothing: same logits as the whole prompt in one pass, also
    after the golden image changes (the prefix is recomputed, not reused stale)."""
    j = _judge(loaded, family, threshold=1e-6, defect_modes=["bent", "missing"])
    eng = j._engine
    op = eng.onepass
    tree = eng.tree(COLS, ROWS)
    from pipeline.vlm.prompts import build_prompt

    for seed in (1, 2):
        prompt = build_prompt(j.settings, _images(2, seed), columns=COLS, rows=ROWS)
        inputs = eng.encode(prompt)
        with torch.inference_mode():
            root_c, table_c = op.run(inputs, tree)
            root_u, table_u = op.full_forward(inputs, tree)
        # float32 sums in another order (4-bit CPU matmuls over other row counts): ~1e-4
        assert (root_c - root_u).abs().max() < 1e-3
        for node in tree.decision_nodes():
            a, b = table_c[node], table_u[node]
            live = torch.isfinite(b)
            assert torch.equal(live, torch.isfinite(a)) and (a[live] - b[live]).abs().max() < 1e-3
        op.plan = None if seed == 2 else op.plan
    j.close()


@pytest.mark.vlm
def test_qwen25_precomputed_vision_windows_change_nothing(loaded):
    """Qwen2.5-VL's attention windows, made once per layout so the tower can be captured, give
    the logits of the pass that computes them itself, on an image of the pipeline's size (several
    windows per image)."""
    j = _judge(loaded, "qwen2_5_vl", max_image_side=448, threshold=1e-6,
               defect_modes=["bent", "missing"])
    eng = j._engine
    op, tree = eng.onepass, eng.tree(COLS, ROWS)
    rng = np.random.default_rng(12)
    images = [rng.integers(0, 255, (239, 657, 3), dtype=np.uint8) for _ in range(2)]
    prompt = build_prompt(j.settings, images, columns=COLS, rows=ROWS, size_rule=eng.size_rule)
    inputs = eng.encode(prompt)
    with torch.inference_mode():
        root_c, _ = op.run(inputs, tree)
        root_u, _ = op.full_forward(inputs, tree)
    windows = op.plan.static["meta"]["vision_kwargs"]["cu_window_seqlens"]
    assert len(windows) > 3 and (root_c - root_u).abs().max() < 1e-3
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_test_image_pixels_equal_the_processor(loaded, family):
    """Qwen-VL: the per-part pixel values made on the device equal the image processor's, and
    the prompt's images are sized once, to what the processor would scale them to."""
    j = _judge(loaded, family)
    eng = j._engine
    assert eng.pixels is not None and eng.size_rule is not None
    rng = np.random.default_rng(11)
    for h, w in [(96, 128), (163, 448), (300, 97)]:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ref = eng.processor.image_processor(images=[img], return_tensors="pt")["pixel_values"]
        got = eng.test_pixels(img)
        assert got.shape == ref.shape and (got.cpu() - ref).abs().max() < 1e-5
    prompt = build_prompt(j.settings, _images(2, 3), columns=COLS, rows=ROWS,
                          size_rule=eng.size_rule)
    for im in prompt.images:
        assert im.size == eng.size_rule(*im.size) and im.size[0] % 28 == 0 == im.size[1] % 28
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava"])
def test_cached_prefix_generate_gives_transformers_tokens(loaded, family):
    """Generate on the cached prefix with static buffers and an on-device decode loop gives the
    tokens of transformers' greedy generate, also for later parts with the same golden."""
    fast = _judge(loaded, family, mode="generate", max_new_tokens=10)
    ref = _judge(loaded, family, mode="generate", max_new_tokens=10, one_pass=False)
    golden = _images(1, seed=8)[0]
    for seed in range(2):
        imgs = [golden, _images(1, seed=30 + seed)[0]]
        a = fast.judge_now(imgs, columns=COLS, rows=ROWS).details
        b = ref.judge_now(imgs, columns=COLS, rows=ROWS).details
        assert a["raw"] == b["raw"] and a["tokens_out"] == b["tokens_out"]
        assert a["tokens_in"] == b["tokens_in"]
    fg = fast._engine.fastgen
    assert fg is not None and fg.ready() and 0 < fg.plan.split < a["tokens_in"]
    fast.close()
    ref.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_mode(loaded, family):
    j = _judge(loaded, family, mode="generate", max_new_tokens=12)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    d = r.details
    assert d["mode"] == "generate" and 0 < d["tokens_out"] <= 12 and isinstance(d["raw"], str)
    # random weights: almost surely unreadable, which must be 'uncertain' with the text kept
    assert r.verdict in (Verdict.UNCERTAIN, Verdict.PASS, Verdict.DEFECT)
    if r.verdict == Verdict.UNCERTAIN:
        assert r.reason.startswith("vlm_unreadable") and d["vlm_verdict"] is None
    j.close()


@pytest.mark.vlm
@pytest.mark.parametrize("family", FAMILIES)
def test_compile_generate_static_cache_gives_the_same_answer(loaded, family):
    # On a CPU transformers does not compile, but the static KV cache path runs.
    answers = []
    for compile_generate in (False, True):
        j = _judge(
            loaded, family, mode="generate", max_new_tokens=10, compile_generate=compile_generate,
            one_pass=False,  # transformers' generate (the cached-prefix path is tested below)
        )
        answers.append(j.judge(_images(2, seed=4), columns=COLS, rows=ROWS).details["raw"])
        expected = compile_generate and family != "mllama"  # mllama: not possible, warned
        assert j.model_info["compile_generate"] is expected
        j.close()
    assert answers[0] == answers[1]


@pytest.mark.vlm
def test_generate_mode_reads_the_answer(loaded, monkeypatch):
    j = _judge(loaded, "qwen2_vl", mode="generate")
    answer = (
        "- your judgement->defective\n- defect mode->bent\n- defect position->X:4, Y:D<|im_end|>"
    )
    monkeypatch.setattr(j._engine.tok, "decode", lambda ids, **kw: answer)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.DEFECT and r.defects[0].address == "X:4, Y:D"
    assert r.defects[0].mode == "bent" and r.details["raw"] == answer
    j.close()


@pytest.mark.vlm
def test_warmup_and_one_shot(loaded, tmp_path):
    star = tmp_path / "star.png"
    _img(seed=3).save(star)
    j = _judge(
        loaded,
        "mllama",
        warmup=True,
        one_shot=True,
        one_shot_image=str(star),
        one_shot_address="X:3, Y:C",
        threshold=1e-6,
    )
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.DEFECT and r.details["address"] in CELLS
    assert j.model_info["linear_4bit"] > 0 and j.model_info["mode"] == "scored"
    assert j.model_name.endswith("(mllama, transformers, 4-bit)")
    assert "solid white circle" in j.prompt_text(columns=COLS, rows=ROWS)
    j.close()
    with pytest.raises(ConfigError, match="one_shot_image"):
        _judge(
            loaded,
            "mllama",
            one_shot=True,
            one_shot_image=str(tmp_path / "nope.png"),
            one_shot_address="X:1, Y:U",
        )


@pytest.mark.vlm
def test_pixtral_prompt_text_image_rows_and_one_shot(loaded, tmp_path):
    # Pixtral's published template reads text parts from "content" and wants string assistant
    # turns: without the judge's conversion the instruction would silently render empty.
    from pipeline.vlm.judge import VlmJudge
    from pipeline.vlm.pixtral import PixtralProcessorPil
    from pipeline.vlm.prompts import to_pixtral_messages

    lm = loaded["llava"]
    assert isinstance(lm.processor, PixtralProcessorPil)  # no torchvision needed
    s = VlmSettings(one_shot=True, one_shot_image="/x.png", one_shot_address="X:3, Y:C",
                    max_image_side=112)
    p = build_prompt(s, [_img(), _img()], columns=COLS, rows=ROWS, one_shot_image=_img(seed=5))
    msgs = to_pixtral_messages(p.messages)
    assert msgs[1]["content"].endswith("- defect position->X:3, Y:C")
    text = lm.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<s>[INST]" + s.prompts.star + "[IMG][/INST]- image type->")
    assert text.endswith(p.instruction + "[IMG][IMG][/INST]")
    ids = lm.processor(images=p.images, text=text, add_special_tokens=False)["input_ids"][0]
    tok = lm.tokenizer
    # 120×90 scaled to 112×84, padded to 7 columns × 6 rows of 16-pixel patches; a break after
    # each row but the last, which ends the image
    img, brk, end = (tok.convert_tokens_to_ids(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]"))
    assert list(ids).count(img) == 3 * 6 * 7 and list(ids).count(brk) == 3 * 5
    assert list(ids).count(end) == 3

    star = tmp_path / "star.png"
    _img(seed=3).save(star)
    settings = VlmSettings(
        model_dir="unused",
        max_image_side=112,
        warmup=False,
        one_shot=True,
        one_shot_image=str(star),
        one_shot_address="X:3, Y:C",
        threshold=1e-6,
    )
    j = VlmJudge(settings, loaded=lm)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.DEFECT and r.details["address"] in CELLS
    assert r.details["tokens_in"] > len(tok.encode(p.instruction, add_special_tokens=False))
    assert j.model_name.endswith("(llava, transformers, 4-bit)")
    j.close()


@pytest.mark.vlm
def test_timeout_does_not_pile_up(loaded):
    j = _judge(loaded, "qwen2_vl", timeout_ms=100)
    release = threading.Event()
    real = j._engine.scored

    def hung(*a, **kw):
        release.wait(10)
        return real(*a, **kw)

    j._engine.scored = hung
    t0 = time.perf_counter()
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.ERROR and r.reason == "vlm_timeout"
    assert 0.09 < time.perf_counter() - t0 < 2.0
    assert j.busy
    t0 = time.perf_counter()
    r = j.judge(_images(2), columns=COLS, rows=ROWS)  # at once, not queued behind the hung call
    assert r.verdict == Verdict.ERROR and r.reason == "vlm_busy"
    assert time.perf_counter() - t0 < 0.05
    release.set()
    deadline = time.time() + 10
    while j.busy and time.time() < deadline:
        time.sleep(0.01)
    j._engine.scored = real
    r = j.judge(_images(2), columns=COLS, rows=ROWS, timeout_ms=30000)
    assert r.verdict in (Verdict.PASS, Verdict.DEFECT)
    assert j.counters["timeouts"] == 1 and j.counters["busy"] == 1
    j.close()


@pytest.mark.vlm
def test_failures_are_error_verdicts(loaded, monkeypatch):
    j = _judge(loaded, "qwen2_vl")
    r = j.judge(["not an image", "x"], columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.ERROR and r.reason.startswith("vlm_failed: ")
    r = j.judge(_images(1), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.ERROR and "expected 2 image" in r.reason
    r = j.judge([np.zeros((0, 0, 3), np.uint8)] * 2, columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.ERROR and r.reason.startswith("vlm_failed: ")

    def oom(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(j._engine, "scored", oom)
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.ERROR and r.reason == "vlm_oom"
    monkeypatch.undo()
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict in (Verdict.PASS, Verdict.DEFECT)  # the station goes on
    j.close()


# --- start-up errors -----------------------------------------------------------------------------


def _load_error(cache_dir, **kw) -> str:
    from pipeline.vlm.backends import load_model

    with pytest.raises(ConfigError) as ei:
        load_model(VlmSettings(**kw), cache_dir=cache_dir)
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.exit_code == 78
    return msg


@pytest.mark.vlm
def test_missing_folder(cache_dir, tmp_path):
    assert "not found" in _load_error(cache_dir, model_dir=str(tmp_path / "nope"))
    msg = _load_error(cache_dir, model_dir="unsloth/Qwen2-VL-2B-Instruct-bnb-4bit")
    assert "local folder only" in msg
    assert "not set" in _load_error(cache_dir)
    assert "config.json" in _load_error(cache_dir, model_dir=str(tmp_path))


@pytest.mark.vlm
def test_corrupt_weights(cache_dir, tiny_dirs, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_dirs["qwen2_vl"], bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert "corrupt or unreadable weights" in _load_error(cache_dir, model_dir=str(bad))
    w.unlink()
    assert "no weights" in _load_error(cache_dir, model_dir=str(bad))


@pytest.mark.vlm
def test_text_only_and_unsupported_models(cache_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    text = tmp_path / "text"
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(cfg).save_pretrained(text)
    assert "text-only model" in _load_error(cache_dir, model_dir=str(text))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "blip-2", "vision_config": {}}))
    assert "unsupported model family 'blip-2'" in _load_error(cache_dir, model_dir=str(odd))
    phi = tmp_path / "phi"
    phi.mkdir()
    (phi / "config.json").write_text(json.dumps({"model_type": "phi3_v", "img_processor": {}}))
    (phi / "model.safetensors").write_bytes(b"")
    assert "trust_remote_code" in _load_error(cache_dir, model_dir=str(phi))
    msg = _load_error(cache_dir, model_dir=str(phi), trust_remote_code=True, backend="unsloth")
    assert "unsloth cannot run Phi-3.5-vision" in msg


@pytest.mark.vlm
def test_unsloth_needs_a_gpu(cache_dir, tiny_dirs):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    msg = _load_error(cache_dir, model_dir=str(tiny_dirs["mllama"]), backend="unsloth")
    assert "NVIDIA GPU" in msg


@pytest.mark.vlm
def test_lora_adapter_on_a_base_model(cache_dir, tiny_dirs, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    from pipeline.vlm.backends import load_model

    base = AutoModelForImageTextToText.from_pretrained(tiny_dirs["qwen2_vl"])
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == tiny_dirs["qwen2_vl"]
    lm = load_model(VlmSettings(model_dir=str(adapter)), cache_dir=cache_dir)
    assert lm.folder.adapter_dir == adapter.resolve() and lm.n_4bit > 0
    assert lm.info()["adapter_dir"] == str(adapter.resolve())
    from pipeline.vlm.judge import VlmJudge

    j = VlmJudge(
        VlmSettings(model_dir=str(adapter), max_image_side=112, warmup=False, threshold=1e-6),
        loaded=lm,
    )
    r = j.judge(_images(2), columns=COLS, rows=ROWS)
    assert r.verdict == Verdict.DEFECT and r.details["address"] in CELLS
    j.close()
    # an adapter whose base is not here
    cfg["base_model_name_or_path"] = "someone/base-model"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    assert "base model folder" in _load_error(cache_dir, model_dir=str(adapter))


def test_instruction_text_single_with_hint():
    s = VlmSettings(images="single")
    t = instruction_text(s, image_type="DST", columns=COLS, rows=ROWS)
    assert t.startswith(s.prompts.single) and "- your judgement->passed or defective" in t


def test_vlm_evaluation_figures():
    """The VLM judge's own figures from labelled parts (real JudgeResults, no model)."""
    from pipeline.verdicts import JudgeResult
    from pipeline.vlm.evaluation import VlmEvaluation

    ev = VlmEvaluation(threshold=0.5)

    def part(truth, vlm, p, address=None, metric="pass", cells=()):
        v = JudgeResult(judge="vlm", verdict=Verdict(vlm),
                        details={"p_defect": p, "address": address})
        m = JudgeResult(judge="metric", verdict=Verdict(metric))
        ev.add(truth=truth, truth_addresses=list(cells), judges={"vlm": v, "metric": m})

    part("pass", "pass", 0.1)
    part("pass", "defect", 0.6, "X:1, Y:U")
    part("pass", "uncertain", None)
    part("defect", "defect", 0.9, "X:3, Y:C", metric="defect", cells=["X:3, Y:C"])
    part("defect", "defect", 0.7, "X:4, Y:C", metric="defect", cells=["X:3, Y:C"])
    part(None, "defect", 0.9)  # unlabelled: not counted
    r = ev.report()
    assert r["parts"] == 5
    assert r["confusion"] == {"tp": 2, "fn": 0, "fp": 2, "tn": 1}  # uncertain is a rejection
    assert r["unjudged"]["uncertain"] == 1
    assert r["agreement_with_metric"] == {"parts": 4, "agree": 3, "rate": 0.75}
    assert r["address_accuracy"] == {"parts": 2, "correct": 1, "rate": 0.5}
    assert r["p_defect"]["pass"]["p50"] == pytest.approx(0.35)
    t = r["threshold"]
    assert 0.6 < t["best"] <= 0.7 and t["balanced_accuracy"] == 1.0
    assert t["balanced_accuracy_at_current"] == 0.75


@pytest.mark.slow
@pytest.mark.vlm
def test_eval_reports_the_vlm_judge(tiny_dirs, synthetic_line, synthetic_recipe, tmp_path):
    """``station eval … --vlm DIR`` adds the VLM judge's own figures to the summary."""
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "station.cli", "eval", str(synthetic_line), "--layout", "manifest",
         "--recipe", str(synthetic_recipe.folder), "--vlm", str(tiny_dirs["qwen2_vl"]),
         "--limit", "6"],
        capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    v = json.loads(p.stdout.strip().splitlines()[-1])["vlm_judge"]
    assert v["parts"] == 6 and sum(v["confusion"].values()) == 6
    assert v["unjudged"]["error"] == 0  # the tiny model judged every part
    assert 0 < v["agreement_with_metric"]["parts"] <= 6
    assert v["p_defect"]["pass"] is not None and v["threshold"] is not None
