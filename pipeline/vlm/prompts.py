"""Chat messages for each way of asking: pair (separate or stacked), single image, 1-shot.

Messages use the generic multimodal chat format of transformers processors
(``{"role": "user", "content": [{"type": "text", ...}, {"type": "image"}]}``); the images
travel separately, in the order of their ``{"type": "image"}`` parts.  As in the source documents,
the instruction text comes first, then the images.  Families whose chat template only takes
string content with numbered image tags (Phi-3.5-vision) get :func:`to_tagged_messages`; Pixtral,
whose published template reads text parts from a ``content`` key and assistant turns as strings,
gets :func:`to_pixtral_messages`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.vlm.settings import VlmSettings, fill


@dataclass
class Prompt:
    """One request to the model."""

    messages: list[dict[str, Any]]
    images: list[Image.Image]  # in the order they appear in ``messages``
    instruction: str  # the user text of the final turn (for the recorder)
    prefill: str  # the assistant turn's fixed beginning (scored mode); "" for generate
    meta: dict[str, Any] = field(default_factory=dict)
    # content digests of every image before the test image (one-shot example, golden), in order
    reference_keys: list[str] = field(default_factory=list)


def to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """RGB PIL image from a PIL image or a pipeline array (uint8 grey or BGR, OpenCV order)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, not {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB), "RGB")
    raise ValueError(f"image array must be (H, W) or (H, W, 3), not {arr.shape}")


SizeRule = Callable[[int, int], tuple[int, int]]


def fit_image(image: Image.Image | np.ndarray, max_side: int,
              size_rule: SizeRule | None = None) -> Image.Image:
    """RGB image scaled down (never up) so that its longer side is at most ``max_side``.

    ``size_rule``: the model's own sizing ((width, height) → (width, height), e.g. Qwen-VL's
    multiples of 28) applied to that size, so the image is scaled once, to the size the model's
    processor would scale it to anyway."""
    img = to_pil(image)
    w, h = img.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image ({w}×{h})")
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale))) if scale < 1.0 else (w, h)
    if size_rule is not None:
        size = size_rule(*size)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return img


_FIT_CACHE: dict[tuple, tuple[Image.Image, str]] = {}
_FIT_CACHE_SIZE = 4


def fit_reference_keyed(image: Image.Image | np.ndarray, max_side: int,
                        size_rule: SizeRule | None = None) -> tuple[Image.Image, str]:
    """:func:`fit_image` for an image that repeats from part to part (a pair's golden, the
    one-shot example), and a digest of its content: an image seen before (same bytes) is not
    converted and scaled again.  The image is the same one :func:`fit_image` gives; hashing the
    bytes costs a tenth of the scaling, and the digest tells the VLM engine whether its cached
    prefix still holds."""
    import hashlib

    if isinstance(image, Image.Image):
        data: Any = image.tobytes()
        layout: tuple = (image.mode, *image.size)
    else:
        arr = np.ascontiguousarray(image)
        data, layout = memoryview(arr).cast("B"), (str(arr.dtype), *arr.shape)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    key = (layout, max_side, size_rule, digest)
    hit = _FIT_CACHE.get(key)
    if hit is None:
        hit = (fit_image(image, max_side, size_rule), f"{layout}:{digest}")
        if len(_FIT_CACHE) >= _FIT_CACHE_SIZE:
            _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
        _FIT_CACHE[key] = hit
    return hit


def fit_reference(image: Image.Image | np.ndarray, max_side: int) -> Image.Image:
    """The image of :func:`fit_reference_keyed` alone."""
    return fit_reference_keyed(image, max_side)[0]


def answer_prefix(settings: VlmSettings, image_type: str | None = None) -> str:
    """The answer's first lines up to the judgement: what scored mode pre-fills."""
    noun = settings.noun
    return (
        f"- image type->{settings.type_name(image_type)}\n"
        f"- number of {noun}->{settings.pin_count} {noun}\n"
        f"- your judgement->"
    )


def instruction_text(
    settings: VlmSettings,
    *,
    image_type: str,
    columns: Sequence[str],
    rows: Sequence[str],
) -> str:
    """The final user turn's text: the mode's instruction plus the answer-format hint."""
    p = settings.prompts
    it = image_type.upper()
    if settings.images == "single":
        base = p.single
    elif settings.composition == "stacked":
        base = p.stacked_dst if it == "DST" else p.stacked_raw
    else:
        base = p.dst if it == "DST" else p.raw
    values = {
        "image_type": settings.type_name(it),
        "noun": settings.noun,
        "pin_count": settings.pin_count,
        "columns": " ".join(columns),
        "rows": " ".join(rows),
    }
    text = fill(base, **values)
    if p.format_hint.strip():
        text = text.rstrip() + "\n\n" + fill(p.format_hint, **values).strip()
    return text


def build_prompt(
    settings: VlmSettings,
    images: Sequence[Image.Image | np.ndarray],
    *,
    image_type: str | None = None,
    columns: Sequence[str],
    rows: Sequence[str],
    one_shot_image: Image.Image | None = None,
    size_rule: SizeRule | None = None,
) -> Prompt:
    """Messages and images for one part, in the recipe's mode.

    ``images``: ``[golden, test]`` (pair, separate), ``[stacked]`` (pair, stacked) or ``[test]``
    (single), already composed with the address overlay.  With ``settings.one_shot`` the source
    documents' example turn comes first: the STAR instruction with ``one_shot_image`` and the
    answer giving its address.  ``size_rule``: the model's image sizing (see :func:`fit_image`).
    """
    want = settings.images_expected()
    if len(images) != want:
        raise ValueError(
            f"expected {want} image(s) for images={settings.images}, "
            f"composition={settings.composition}; got {len(images)}"
        )
    it = (image_type or settings.image_type).upper()
    if it not in settings.image_type_names:
        raise ValueError(f"unknown image type {image_type!r}")
    side = settings.max_image_side
    # the images before the test image (golden, one-shot example) repeat from part to part:
    # scaled once, not per part, and their digests key the cached prefix
    refs = [fit_reference_keyed(im, side, size_rule) for im in images[:-1]]
    pics = [im for im, _ in refs] + [fit_image(images[-1], side, size_rule)]
    text = instruction_text(settings, image_type=it, columns=columns, rows=rows)
    messages: list[dict[str, Any]] = []
    all_images: list[Image.Image] = []
    if settings.one_shot:
        if one_shot_image is None:
            raise ValueError("one_shot is on but no example image was given")
        example = (
            f"- image type->{settings.type_name(it)}\n"
            f"- number of {settings.noun}->{settings.pin_count} {settings.noun}\n"
            f"- defect position->{settings.one_shot_address}"
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "text", "text": settings.prompts.star}, {"type": "image"}],
            }
        )
        messages.append({"role": "assistant", "content": [{"type": "text", "text": example}]})
        shot = fit_reference_keyed(one_shot_image, settings.max_image_side, size_rule)
        refs.insert(0, shot)
        all_images.append(shot[0])
    messages.append(
        {
            "role": "user",
            "content": [{"type": "text", "text": text}] + [{"type": "image"}] * len(pics),
        }
    )
    all_images += pics
    prefill = answer_prefix(settings, it) if settings.mode == "scored" else ""
    return Prompt(
        messages=messages,
        images=all_images,
        instruction=text,
        prefill=prefill,
        meta={"image_type": it, "sizes": [im.size for im in all_images]},
        reference_keys=[k for _, k in refs],
    )


def to_tagged_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """String-content messages with ``<|image_N|>`` tags (Phi-3-vision style chat templates)."""
    out = []
    n = 0
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            out.append(dict(msg))
            continue
        tags, texts = [], []
        for part in content:
            if part.get("type") == "image":
                n += 1
                tags.append(f"<|image_{n}|>")
            elif part.get("type") == "text":
                texts.append(part["text"])
        out.append({"role": msg["role"], "content": "\n".join(tags + texts)})
    return out


def to_pixtral_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages that Pixtral's chat templates render in full (first published and later versions).

    The template first published with mistral-community/pixtral-12b reads a text part's ``content``
    key, so a part with only ``text`` would silently render empty, and adds the end token to an
    assistant turn's content, so that must be a string.  Text parts get both
    keys; an assistant turn of text parts becomes one string.
    """
    out = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            out.append(dict(msg))
        elif msg["role"] == "assistant" and all(p.get("type") == "text" for p in content):
            out.append({**msg, "content": "".join(p["text"] for p in content)})
        else:
            parts = [
                {**p, "content": p["text"]} if p.get("type") == "text" else dict(p) for p in content
            ]
            out.append({**msg, "content": parts})
    return out
