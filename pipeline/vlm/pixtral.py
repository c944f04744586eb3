"""Pixtral's processor without torchvision (imported lazily: it imports transformers).

transformers' ``PixtralProcessor`` module imports the torchvision image processor, so where
torchvision is missing the class is a placeholder and ``AutoProcessor`` cannot build a Pixtral
folder's processor.  :class:`PixtralProcessorPil` is the same processor (same arguments, same
expansion of each ``[IMG]`` into rows of ``[IMG]`` tokens closed by ``[IMG_BREAK]``, the last by
``[IMG_END]``) for use with ``PixtralImageProcessorPil``.
"""

from __future__ import annotations

from typing import Any

from transformers.processing_utils import ProcessingKwargs, ProcessorMixin


class PixtralProcessorKwargs(ProcessingKwargs, total=False):
    """Defaults of Pixtral's processor call (no padding, no mm token type ids, PyTorch tensors)."""

    _defaults = {  # noqa: RUF012  (read by ProcessorMixin._merge_kwargs, as in transformers)
        "text_kwargs": {"padding": False, "return_mm_token_type_ids": False},
        "common_kwargs": {"return_tensors": "pt"},
    }


class PixtralProcessorPil(ProcessorMixin):
    """``PixtralProcessor`` of transformers 5.x, free of torchvision."""

    valid_processor_kwargs = PixtralProcessorKwargs

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        patch_size: int = 16,
        spatial_merge_size: int = 1,
        chat_template: str | None = None,
        image_token: str = "[IMG]",
        image_break_token: str = "[IMG_BREAK]",
        image_end_token: str = "[IMG_END]",
        **kwargs: Any,
    ) -> None:
        """Wrap ``image_processor`` (``PixtralImageProcessorPil``) and ``tokenizer``."""
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = int(patch_size)
        self.spatial_merge_size = int(spatial_merge_size)
        self.image_token = image_token
        self.image_break_token = image_break_token
        self.image_end_token = image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    @property
    def image_token_ids(self) -> list[int]:
        """The three image token ids (image, row break, image end)."""
        return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    def _process_images(self, images: Any, **images_kwargs: Any) -> Any:
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        """The tokens that stand for image ``image_idx``: one row of patches per line."""
        patch = self.patch_size * self.spatial_merge_size
        height, width = (int(x) for x in image_inputs["image_sizes"][image_idx])
        row = [self.image_token] * (width // patch) + [self.image_break_token]
        tokens = row * (height // patch)
        tokens[-1] = self.image_end_token
        return "".join(tokens)

    @property
    def model_input_names(self) -> list[str]:
        """Inputs the model takes from this processor."""
        names = [*self.tokenizer.model_input_names, *self.image_processor.model_input_names]
        return list(dict.fromkeys([*names, "image_sizes"]))


__all__ = ["PixtralProcessorPil"]
