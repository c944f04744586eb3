"""The ``vlm:`` settings: which model, how it is asked, and the texts it is asked with.

Every prompt text, the pin count, the image type names and the product noun live here (and so in
the recipe), never in code.  The defaults are the source documents' prompts, verbatim (including
their hyphenation artefacts such as ``dif-ference``: they are what the authors sent to the models).

The recipe's ``vlm:`` section, the station config's ``vlm:`` section and command-line flags such as
``--vlm DIR`` are each a partial, typed layer (:class:`~pipeline.base.yamlconf.Overrides`); they
are merged once, key by key, by :func:`effective_vlm_settings` into one frozen :class:`VlmSettings`.
Every mistake is a ConfigError naming the file:line of the layer that set the bad value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import FieldError, Overrides, last_given, merge_overrides

# --- prompt texts of the source documents (seeds/000_*, seeds/001_*) ---

INSTRUCTION_RAW = (
    "You are a visual inspector who judges whether a product is passed or defective. Both image2 "
    "and image3 show a group of pins (cylinders) on the product. These images are top view of the "
    "pins. The number and arrangement of pins in image2 and image3 are the same. First, you should "
    "confirm that number and arrangement of pins in image2 and image3 must be the same. Then, you "
    "should count the quantity of pins in image3. Image2 is an image of passed product. You should "
    "compare all of pins on the product in image2 and image3 one by one. If you found a "
    "significant dif-ference on the pins, it is defined as defect. After visual inspection, you "
    "should describe type of image, quantity of pins, defect mode, and address of defect."
)

# DST: the same, plus the source documents' hint about what a defect looks like in a metric image.
SOLID_WHITE_HINT = (
    " You should understand that if you find a solid white circle, it is likely to be a defect."
)
INSTRUCTION_DST = INSTRUCTION_RAW + SOLID_WHITE_HINT

# seeds/001: the one-image prompt (the stray closing quote of the blog's copy is left out).
INSTRUCTION_SINGLE = (
    "You are visual inspector who judges whether a product is passed or defective. The image show "
    "a group of pins (cylinders) on the product. This image is top view of the pins. First, you "
    "should count the quantity of pins in the image. If you find a significant abnormality on the "
    "pins, it is defined as de-fect. After visual inspection, you should describe image type, "
    "quantity of pins, your judgement, defect mode, and defect position."
)

# seeds/000: the first turn of the 1-shot prompt (an example image with a red star at a known cell).
INSTRUCTION_STAR = (
    "You are a visual inspector who find defect on a product. Image1 shows a group of pins "
    "(cylinders) on the product. This image shows pins from above. There are alphanumeric "
    "char-acters located above and left of the product. These alphanumeric characters are used to "
    "generate ad-dress where the defect is located. Image1 has a red star as defect. You should "
    "specify a location of the red star. After your inspection, you should describe the type of "
    "image, number of pins, and position of the red star."
)

# The stacked composition (golden above, test below, one image) follows seeds/002-003 ("the top
# image is one of passed product ... the bottom image"), worded like the pair prompts above.

INSTRUCTION_STACKED_RAW = (
    "You are a visual inspector who judges whether a product is passed or defective. The image has "
    "two images inside: both the top image and the bottom image show a group of pins (cylinders) "
    "on the product. These images are top view of the pins. The number and arrangement of pins in "
    "the top image and the bottom image are the same. First, you should confirm that number and "
    "arrangement of pins in the top image and the bottom image must be the same. Then, you should "
    "count the quantity of pins "
    "in the bottom image. The top image is an image of passed product. You should compare all of "
    "pins on the product in the top image and the bottom image one by one. If you found a "
    "significant difference on the pins, it is defined as defect. After visual inspection, you "
    "should describe type of image, quantity of pins, defect mode, and address of defect."
)

INSTRUCTION_STACKED_DST = INSTRUCTION_STACKED_RAW + SOLID_WHITE_HINT

# Not in the source documents (their fine-tuned models had learned the format): tells a zero-shot
# model the answer contract of DESIGN 5.2.  Set to "" to send the seeds' prompts unchanged.
FORMAT_HINT = (
    "Answer in exactly this format, one line each:\n"
    "- image type->{image_type}\n"
    "- number of {noun}->{pin_count} {noun}\n"
    "- your judgement->passed or defective\n"
    "- defect mode->a short name of the defect, or none\n"
    "- defect position->X:<column>, Y:<row>\n"
    "Columns are labelled {columns} above the product, rows {rows} at its left."
)

BACKENDS = ("auto", "unsloth", "transformers")
MODES = ("scored", "generate")
IMAGE_MODES = ("pair", "single")
IMAGE_TYPES = ("DST", "RAW")
COMPOSITIONS = ("separate", "stacked")
PATH_KEYS = ("model_dir", "base_model_dir", "one_shot_image")  # relative: to the file's folder

_PLACEHOLDER = re.compile(r"\{(image_type|noun|pin_count|columns|rows)\}")


def fill(template: str, **values: Any) -> str:
    """Replace the known ``{name}`` placeholders of a prompt text; other braces stay as they are.

    Names: ``image_type``, ``noun``, ``pin_count``, ``columns``, ``rows``.  Unlike ``str.format``
    this never fails on a prompt that happens to contain braces.
    """
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


@dataclass(frozen=True)
class PromptTexts:
    """The prompt texts (recipe ``vlm.prompts``)."""

    dst: str = INSTRUCTION_DST
    raw: str = INSTRUCTION_RAW
    single: str = INSTRUCTION_SINGLE
    stacked_dst: str = INSTRUCTION_STACKED_DST
    stacked_raw: str = INSTRUCTION_STACKED_RAW
    star: str = INSTRUCTION_STAR
    format_hint: str = FORMAT_HINT


@dataclass(frozen=True)
class VlmSettings:
    """The ``vlm:`` section (all keys optional; ``model_dir`` is needed to run).

    Build it with :func:`effective_vlm_settings` (recipe + station config + command line) or
    :meth:`from_mapping` (settings given in code); both check every key and value.
    """

    enabled: bool = False  # the judge runs only where a layer says so (usually the station config)
    # --- model ---
    # auto: unsloth when it imports and CUDA is there, else transformers
    backend: Literal["auto", "unsloth", "transformers"] = "auto"
    model_dir: str | None = None  # local folder only (absolute after loading); may be an adapter
    base_model_dir: str | None = None  # base model of an adapter (default: the adapter's record)
    trust_remote_code: bool = False  # only for folders that carry their own code (Phi-3.5-vision)
    # weights in pickle format (*.bin, *.pt, *.pth, *.ckpt) run code when loaded: refused unless
    # the recipe opts in; safetensors are used whenever the folder has them
    allow_pickle: bool = False
    device: str = "auto"  # auto | cuda | cuda:N | cpu
    require_4bit: bool = True  # no 4-bit layer after loading is a start-up error
    warmup: bool = True  # one inference at start-up, outside any budget (compiles, allocates)
    # --- how it is asked ---
    mode: Literal["scored", "generate"] = "scored"
    images: Literal["pair", "single"] = "pair"  # pair (golden + test) | single (test only)
    image_type: str = "DST"  # DST (metric image) | RAW (aligned camera image); any case
    composition: Literal["separate", "stacked"] = "separate"  # stacked: one image, golden on top
    max_image_side: int = 448  # images are scaled down to this (image tokens grow with size)
    one_shot: bool = False  # the source documents' 1-shot example turn (red star image)
    one_shot_image: str | None = None  # the example image (with the red star) for one_shot
    one_shot_address: str | None = None  # where its star is, e.g. "X:3, Y:C"
    # --- answer contract ---
    pin_count: int = 27
    noun: str = "pins"
    image_type_names: dict[str, str] = field(
        default_factory=lambda: {"DST": "CYLN_DST", "RAW": "CYLN_RAW"}
    )
    pass_word: str = "passed"
    defect_word: str = "defective"
    defect_modes: list[str] = field(default_factory=list)  # empty: free mode text (mode_tokens)
    prompts: PromptTexts = field(default_factory=PromptTexts)
    # --- decoding and budget ---
    threshold: float = 0.5  # scored: p_defect >= threshold → defect
    max_new_tokens: int = 48  # generate mode
    # generate mode, transformers backend on CUDA: static KV cache + torch.compile (CUDA graphs) for
    # the decode steps; ~30 s of compiling at warm-up, then ~3x faster (docs/vlm-gpu-bench.md)
    compile_generate: bool = False
    # scored mode: prompt and answer tree in one forward pass on the cached constant prefix
    # (pipeline/vlm/onepass.py); false: the step-by-step reference path
    one_pass: bool = True
    cuda_graphs: bool = True  # one_pass on CUDA: the per-part pass captured at warm-up
    mode_tokens: int = 6  # scored: at most this many greedy tokens for the defect mode
    timeout_ms: int = 3000  # per inference; over it → verdict error, reason vlm_timeout

    def __post_init__(self) -> None:
        # spelling normalised once, here: image types are upper case, the threshold a float
        if isinstance(self.image_type, str):
            object.__setattr__(self, "image_type", self.image_type.upper())
        if isinstance(self.image_type_names, Mapping):
            object.__setattr__(self, "image_type_names", {
                (k.upper() if isinstance(k, str) else k): v
                for k, v in self.image_type_names.items()})
        if isinstance(self.threshold, int) and not isinstance(self.threshold, bool):
            object.__setattr__(self, "threshold", float(self.threshold))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None,
                     origin: str = "vlm settings") -> VlmSettings:
        """Settings given in code (a ``vlm:``-shaped mapping), checked like the recipe's section;
        ConfigError naming the key (``origin: vlm.mode: must be one of ...``)."""
        layer = Overrides.from_mapping(cls, data, origin, key_path=("vlm",))
        return merge_overrides(cls, [layer])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the inverse of ``from_mapping``) for saving and hashing a recipe."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Ranges and cross-key rules (the loader checks the types); FieldError names the key."""
        if self.image_type not in IMAGE_TYPES:
            raise FieldError("image_type", f"must be one of {', '.join(IMAGE_TYPES)}, "
                                           f"not {self.image_type!r}")
        for name in ("model_dir", "base_model_dir", "one_shot_image", "one_shot_address"):
            v = getattr(self, name)
            if v is not None and not v.strip():
                raise FieldError(name, f"must be a non-empty string or null, not {v!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise FieldError("device", f"must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        for name, lo, hi in (
            ("max_image_side", 28, 4096),
            ("pin_count", 1, 100000),
            ("max_new_tokens", 1, 4096),
            ("mode_tokens", 1, 64),
            ("timeout_ms", 1, 3_600_000),
        ):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise FieldError(name, f"must be between {lo} and {hi}, not {v}")
        if not 0.0 < self.threshold < 1.0:
            raise FieldError("threshold",
                             f"must be between 0 and 1 (exclusive), not {self.threshold}")
        for name in ("noun", "pass_word", "defect_word"):
            if not getattr(self, name).strip():
                raise FieldError(name, "must be a non-empty string")
        if self.pass_word.strip().lower() == self.defect_word.strip().lower():
            raise FieldError(("pass_word", "defect_word"), "pass_word and defect_word must differ")
        if not all(v.strip() for v in self.image_type_names.values()):
            raise FieldError("image_type_names", "must map DST and RAW to names, e.g. CYLN_DST")
        missing = [t for t in IMAGE_TYPES if t not in self.image_type_names]
        if missing:
            raise FieldError("image_type_names", f"missing {', '.join(missing)}")
        if not all(m.strip() for m in self.defect_modes):
            raise FieldError("defect_modes", "must be a list of non-empty strings")
        if len({m.strip().lower() for m in self.defect_modes}) != len(self.defect_modes):
            raise FieldError("defect_modes", "contains duplicates")
        if self.one_shot and (not self.one_shot_image or not self.one_shot_address):
            raise FieldError(("one_shot", "one_shot_image", "one_shot_address"),
                             "one_shot needs one_shot_image and one_shot_address")
        if self.one_shot and self.images != "pair":
            raise FieldError(("one_shot", "images"),
                             "the source documents' 1-shot example (one_shot) is for pair mode")

    # --- derived ---------------------------------------------------------------------------

    def images_expected(self) -> int:
        """How many images ``judge`` takes: 2 (pair, separate) or 1 (pair stacked, single)."""
        if self.images == "pair" and self.composition == "separate":
            return 2
        return 1

    def type_name(self, image_type: str | None = None) -> str:
        """The answer's image type name, e.g. ``CYLN_DST``."""
        return self.image_type_names[(image_type or self.image_type).upper()]


class HasVlmSection(Protocol):
    """A loaded file with a ``vlm:`` section: the recipe's settings, the station config."""

    @property
    def vlm(self) -> Overrides[VlmSettings]: ...


def effective_vlm_settings(recipe: HasVlmSection, config: HasVlmSection | None = None,
                           cli: Mapping[str, Any] | None = None, *,
                           check_model: bool = True) -> VlmSettings:
    """The one place the VLM settings are put together: defaults, overridden key by key by the
    recipe's ``vlm:`` (``recipe``: a RecipeSettings), then the station config's ``vlm:``
    (``config``), then command-line flags (``cli``, e.g. ``{"enabled": True, "model_dir": DIR}``
    for ``--vlm DIR``).  Relative paths are taken relative to the file that gives them.

    With ``check_model`` and the judge enabled, the model folder must exist and hold a
    ``config.json`` (or a LoRA ``adapter_config.json``).  Every problem is a ConfigError naming
    the file:line of the layer that set the offending key (exit 78).
    """
    layers = [recipe.vlm]
    if config is not None:
        layers.append(config.vlm)
    if cli:
        layers.append(Overrides.from_mapping(VlmSettings, cli, "command line", key_path=("vlm",)))
    layers = [layer.with_resolved_paths(PATH_KEYS) for layer in layers]
    settings = merge_overrides(VlmSettings, layers)
    if settings.enabled and check_model:
        _check_model_folder(settings, layers)
    return settings


def _check_model_folder(settings: VlmSettings, layers: list[Overrides[VlmSettings]]) -> None:
    """An enabled judge needs an existing local model folder with a config.json."""
    if not settings.model_dir:
        at = last_given(layers, "enabled") or layers[-1]
        raise ConfigError("vlm.enabled is true but vlm.model_dir is not set (the VLM judge needs "
                          "a local model folder)", at.where("enabled"))
    at = last_given(layers, "model_dir") or layers[-1]
    folder = Path(settings.model_dir)
    if not folder.exists():
        raise ConfigError(f"vlm.model_dir: model folder {folder} not found", at.where("model_dir"))
    if not folder.is_dir():
        raise ConfigError(f"vlm.model_dir: {folder} is not a folder", at.where("model_dir"))
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        raise ConfigError(f"vlm.model_dir: {folder} has no config.json (not a model folder)",
                          at.where("model_dir"))
    from pipeline.vlm.backends import pickle_only, pickle_refusal  # imports settings: here

    adapter = (folder / "adapter_config.json").is_file()
    pickles = pickle_only(folder, "adapter_model" if adapter else "*")
    if pickles and not settings.allow_pickle:
        raise ConfigError(f"vlm.model_dir: {pickle_refusal(folder, pickles)}",
                          at.where("model_dir"))
