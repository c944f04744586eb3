"""Writes small randomly initialised vision-language models with a working processor, offline.

Everything is built in code: a byte-level BPE tokenizer trained on the station's own prompt texts
(so ``passed``, ``defective`` and the answer keys are real tokens), the family's special tokens and
a chat template in the family's format, the family's image processor and processor, a config and
random weights.  Nothing is downloaded.  The folders load like real checkpoints through
``pipeline.vlm.backends`` (``station model tiny DIR``, tests, the GPU benchmark).

Families: ``mllama``, ``qwen2_vl``, ``qwen2_5_vl`` and ``llava`` (Pixtral layout: a Pixtral vision
tower and a Mistral text model, ``[IMG]``/``[IMG_BREAK]``/``[IMG_END]`` image tokens, Pixtral's
``[INST]`` chat template and a torchvision-free Pixtral processor).

Shapes: ``tiny`` (a few hundred thousand parameters, seconds on a CPU) or, for Qwen2-VL, the real
``2b`` and ``7b`` architectures (Qwen2-VL-2B/7B-Instruct layer sizes; random weights; the small
tokenizer means the embedding rows past it are never used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("mllama", "qwen2_vl", "qwen2_5_vl", "llava")
SHAPES = ("tiny", "2b", "7b")
PIXTRAL_PATCH = 16
PIXTRAL_PROCESSOR_CONFIG = {
    "processor_class": "PixtralProcessor",
    "patch_size": PIXTRAL_PATCH,
    "spatial_merge_size": 1,
    "image_token": "[IMG]",
    "image_break_token": "[IMG_BREAK]",
    "image_end_token": "[IMG_END]",
}

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<|python_tag|>",
    "<|image|>",
]
_MISTRAL_SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
    "<pad>",
]

# The families' chat templates, reduced to what the station sends (text and image parts; string
# content too), in the real templates' token layout.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA_VISION_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] | trim }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)
# Pixtral's template as first published with mistral-community/pixtral-12b (later versions also
# read "text"): text parts are read from their "content" key and an assistant turn must be a
# string; no generation prompt (the answer follows "[/INST]").  The judge sends messages that suit
# both versions (pipeline.vlm.prompts.to_pixtral_messages).
PIXTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('conversation roles must alternate user/assistant/user/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}{{- '[INST]' + system_message + '\n\n' }}"
    "{%- else %}{{- '[INST]' }}{%- endif %}"
    "{%- if message['content'] is not string %}{%- for chunk in message['content'] %}"
    "{%- if chunk['type'] == 'text' %}{{- chunk['content'] }}"
    "{%- elif chunk['type'] == 'image' %}{{- '[IMG]' }}"
    "{%- else %}{{- raise_exception('Unrecognized content type!') }}{%- endif %}"
    "{%- endfor %}{%- else %}{{- message['content'] }}{%- endif %}"
    "{{- '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported') }}{%- endif %}"
    "{%- endfor %}"
)


def _corpus() -> list[str]:
    """Training text for the tokenizer: the station's prompts and answers, in many variants."""
    from pipeline.vlm.settings import PromptTexts

    p = PromptTexts()
    texts = [p.dst, p.raw, p.single, p.stacked_dst, p.stacked_raw, p.star, p.format_hint]
    cols = [str(i) for i in range(1, 13)]
    rows = ["U", "C", "D", "A", "B", "E"]
    answers = []
    for t in ("CYLN_DST", "CYLN_RAW"):
        for j in ("passed", "defective", "Passed", "Defective", "pass", "defect", "ok", "NG"):
            for m in ("bent", "missing", "none", "foreign matter", "broken", "short"):
                answers.append(
                    f"- image type->{t}\n- number of pins->27 pins\n- your judgement->{j}\n"
                    f"- defect mode->{m}\n"
                    f"- defect position->X:{cols[len(m) % 9]}, Y:{rows[len(j) % 3]}"
                )
    grid = [f"X:{c}, Y:{r} {c}{r} ({c}, {r})" for c in cols for r in rows]
    words = (
        "The product is passed. The product is defective. no defect found, assistant user system "
        "image picture top bottom left right column row address position mode judgement"
    )
    return texts * 3 + answers + grid + [words] * 3


def build_tokenizer(family: str, vocab_size: int = 1200) -> Any:
    """A byte-level BPE tokenizer with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    qwen = family.startswith("qwen")
    specials = {"mllama": _LLAMA_SPECIALS, "llava": _MISTRAL_SPECIALS}.get(family, _QWEN_SPECIALS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    if qwen:
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            chat_template=QWEN2_VL_CHAT_TEMPLATE,
            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        )
    elif family == "llava":
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            chat_template=PIXTRAL_CHAT_TEMPLATE,
        )
    else:
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            pad_token="<|finetune_right_pad_id|>",
            chat_template=LLAMA_VISION_CHAT_TEMPLATE,
        )
    return hf


def _qwen2_vl_config(tok: Any, shape: str) -> Any:
    from transformers import Qwen2VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    if shape == "tiny":
        text = dict(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        )
        # bitsandbytes' CPU kernels need in_features to be a multiple of 64 (its block size).
        vision = dict(depth=2, embed_dim=64, hidden_size=64, num_heads=2, mlp_ratio=2)
        tie = False
    elif shape == "2b":  # Qwen2-VL-2B-Instruct
        text = dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        )
        vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
        tie = True
    elif shape == "7b":  # Qwen2-VL-7B-Instruct
        text = dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        )
        vision = dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)
        tie = False
    else:
        raise ValueError(f"unknown shape {shape!r} for qwen2_vl (tiny, 2b, 7b)")
    text.update(
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=tie,
    )
    vision.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie,
    )


def _qwen2_5_vl_config(tok: Any, shape: str) -> Any:
    from transformers import Qwen2_5_VLConfig

    if shape != "tiny":
        raise ValueError(f"shape {shape!r}: only 'tiny' is available for qwen2_5_vl")
    q2 = _qwen2_vl_config(tok, "tiny")
    text = q2.text_config.to_dict()
    for k in ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype"):
        text.pop(k, None)
    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=64,
        window_size=112,
        fullatt_block_indexes=[1],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=q2.image_token_id,
        video_token_id=q2.video_token_id,
        vision_start_token_id=q2.vision_start_token_id,
        vision_end_token_id=q2.vision_end_token_id,
    )


def _mllama_config(tok: Any, shape: str) -> Any:
    from transformers import MllamaConfig

    if shape != "tiny":
        raise ValueError(f"shape {shape!r}: only 'tiny' is available for mllama")
    image_id = tok.convert_tokens_to_ids("<|image|>")
    vocab = len(tok)
    n_indices = 2
    vision = dict(
        hidden_size=64,  # multiples of 64: bitsandbytes' CPU block size
        intermediate_size=128,
        num_hidden_layers=4,
        num_global_layers=1,
        attention_heads=2,
        image_size=56,
        patch_size=14,
        max_num_tiles=4,
        intermediate_layers_indices=[1, 3],
        vision_output_dim=64 * (n_indices + 1),
    )
    text = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        cross_attention_layers=[1, 3],
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        rope_theta=500000.0,
        max_position_embeddings=131072,
        bos_token_id=tok.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|eot_id|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|finetune_right_pad_id|>"),
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)


def _llava_config(tok: Any, shape: str) -> Any:
    """Pixtral-12B's layout (Llava with a Pixtral vision tower and a Mistral text model), tiny."""
    from transformers import LlavaConfig

    if shape != "tiny":
        raise ValueError(f"shape {shape!r}: only 'tiny' is available for llava")
    vision = dict(
        model_type="pixtral",
        hidden_size=64,  # multiples of 64: bitsandbytes' CPU block size
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=1024,
        patch_size=PIXTRAL_PATCH,
        hidden_act="silu",
    )
    text = dict(
        model_type="mistral",
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        sliding_window=None,
        bos_token_id=tok.convert_tokens_to_ids("<s>"),
        eos_token_id=tok.convert_tokens_to_ids("</s>"),
        pad_token_id=tok.convert_tokens_to_ids("<pad>"),
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def build_processor(family: str, tok: Any) -> Any:
    """The family's processor around ``tok``, with PIL image processors (no torchvision needed)."""
    if family in ("qwen2_vl", "qwen2_5_vl"):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        from pipeline.vlm.backends import image_only_processor_class

        # Bounds in pixels: the station scales images to vlm.max_image_side first.
        ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=1024 * 28 * 28)
        cls = image_only_processor_class(family)
        return cls(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    if family == "mllama":
        from transformers.models.mllama import MllamaProcessor
        from transformers.models.mllama.image_processing_pil_mllama import (
            MllamaImageProcessorPil,
        )

        ip = MllamaImageProcessorPil(size={"height": 56, "width": 56}, max_image_tiles=4)
        return MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    if family == "llava":
        from transformers.models.pixtral.image_processing_pil_pixtral import (
            PixtralImageProcessorPil,
        )

        from pipeline.vlm.pixtral import PixtralProcessorPil

        patch = {"height": PIXTRAL_PATCH, "width": PIXTRAL_PATCH}
        ip = PixtralImageProcessorPil(size={"longest_edge": 1024}, patch_size=patch)
        return PixtralProcessorPil(
            image_processor=ip,
            tokenizer=tok,
            patch_size=PIXTRAL_PATCH,
            chat_template=tok.chat_template,
        )
    raise ValueError(f"unknown family {family!r}")


def write_tiny_model(
    out_dir: str | Path,
    family: str = "qwen2_vl",
    *,
    shape: str = "tiny",
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Write a randomly initialised model of ``family`` with its processor into ``out_dir``.

    ``out_dir`` is created (it must be empty or missing).  Returns its absolute path.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(family)
    make = {"qwen2_vl": _qwen2_vl_config, "qwen2_5_vl": _qwen2_5_vl_config, "llava": _llava_config}
    config = make.get(family, _mllama_config)(tok, shape)
    torch.manual_seed(seed)
    dtype = torch.float32 if shape == "tiny" else torch.bfloat16
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    processor = build_processor(family, tok)
    processor.image_processor.save_pretrained(out)
    if family == "llava":  # as in Pixtral-12B's folders: names PixtralProcessor and its tokens
        (out / "processor_config.json").write_text(json.dumps(PIXTRAL_PROCESSOR_CONFIG, indent=2))
    (out / "chat_template.jinja").write_text(tok.chat_template)
    info = {
        "family": family,
        "shape": shape,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "note": "random weights written by station.modeltools.tiny; for tests and benchmarks only",
    }
    (out / "station_tiny.json").write_text(json.dumps(info, indent=2) + "\n")
    del model
    return out
