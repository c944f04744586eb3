"""The test image's pixel values made on the model's device, as Qwen-VL's processor makes them.

Per part only the test image changes (the prompt's text, the image sizes and the golden are those
of the cached plan).  Qwen2-VL's and Qwen2.5-VL's image processors scale the image to multiples of
28 px (PIL, bicubic), rescale and normalise it in float32 NumPy and cut it into flattened 14×14
patches, each repeated over the two temporal slots: a few milliseconds of host work per part.
:class:`QwenPixels` does the same scaling with PIL (so the pixels are the same) and the rest on the
device with a handful of tensor operations; its output equals the processor's ``pixel_values``
(tested on a CPU).  Other families keep their processor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


class QwenPixels:
    """``pixel_values`` of one image on the device, laid out as Qwen-VL's image processor does."""

    def __init__(self, image_processor: Any, device: Any) -> None:
        """Read the processor's settings (patch, merge and temporal sizes, pixel bounds, mean,
        standard deviation, rescale factor); ValueError if they are not the plain ones."""
        import torch

        ip = image_processor
        if not (getattr(ip, "do_resize", True) and getattr(ip, "do_rescale", True)
                and getattr(ip, "do_normalize", True)):
            raise ValueError("an image processor that skips resize, rescale or normalize")
        resample = getattr(ip, "resample", Image.Resampling.BICUBIC)
        if int(resample) != int(Image.Resampling.BICUBIC):
            raise ValueError(f"resample {resample!r}: only bicubic is reproduced")
        size = getattr(ip, "size", None) or {}
        get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
        self.min_pixels = int(getattr(ip, "min_pixels", None) or get("shortest_edge"))
        self.max_pixels = int(getattr(ip, "max_pixels", None) or get("longest_edge"))
        self.patch = int(ip.patch_size)
        self.merge = int(ip.merge_size)
        self.temporal = int(ip.temporal_patch_size)
        self.torch = torch
        self.device = device
        mean = torch.tensor(list(ip.image_mean), dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(list(ip.image_std), dtype=torch.float32).view(3, 1, 1)
        scale = float(ip.rescale_factor)
        # (x * scale - mean) / std, as two device constants
        self.mul = (scale / std).to(device)
        self.add = (-mean / std).to(device)

    @classmethod
    def for_processor(cls, family: str, processor: Any, device: Any) -> QwenPixels | None:
        """The device-side maker for a Qwen-VL processor; None for other families or settings."""
        if family not in QWEN_FAMILIES:
            return None
        try:
            return cls(processor.image_processor, device)
        except (AttributeError, TypeError, ValueError):
            return None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the processor scales an image of this size to."""
        try:  # the PIL image processor's module needs no torchvision
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
        except ImportError:
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        h, w = smart_resize(height, width, factor=self.patch * self.merge,
                            min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return w, h

    def __call__(self, image: Image.Image) -> Any:
        """Pixel values (patches × channels·temporal·patch², float32) on the device."""
        torch = self.torch
        img = image if image.mode == "RGB" else image.convert("RGB")
        size = self.target_size(*img.size)
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        w, h = size
        x = torch.from_numpy(np.array(img)).to(self.device)
        x = x.permute(2, 0, 1).float() * self.mul + self.add  # (3, H, W)
        p, m = self.patch, self.merge
        gh, gw = h // p, w // p
        x = x.reshape(3, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        x = x[:, :, :, :, :, None].expand(*x.shape[:5], self.temporal, p, p)
        return x.reshape(gh * gw, 3 * self.temporal * p * p)


__all__ = ["QWEN_FAMILIES", "QwenPixels"]
