"""The recipe's ``vlm:`` section: which model, how it is asked, and the texts it is asked with.

Every prompt text, the pin count, the image type names and the product noun live here (and so in
the recipe), never in code.  The defaults are the source documents' prompts, verbatim (including
their hyphenation artefacts such as ``dif-ference``: they are what the authors sent to the models).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

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

_PLACEHOLDER = re.compile(r"\{(image_type|noun|pin_count|columns|rows)\}")


def fill(template: str, **values: Any) -> str:
    """Replace the known ``{name}`` placeholders of a prompt text; other braces stay as they are.

    Names: ``image_type``, ``noun``, ``pin_count``, ``columns``, ``rows``.  Unlike ``str.format``
    this never fails on a prompt that happens to contain braces.
    """
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


@dataclass
class PromptTexts:
    """The prompt texts (recipe ``vlm.prompts``)."""

    dst: str = INSTRUCTION_DST
    raw: str = INSTRUCTION_RAW
    single: str = INSTRUCTION_SINGLE
    stacked_dst: str = INSTRUCTION_STACKED_DST
    stacked_raw: str = INSTRUCTION_STACKED_RAW
    star: str = INSTRUCTION_STAR
    format_hint: str = FORMAT_HINT


@dataclass
class VlmSettings:
    """The recipe's ``vlm:`` section (all keys optional; ``model_dir`` is needed to run)."""

    enabled: bool = True
    # --- model ---
    backend: str = "auto"  # auto: unsloth when it imports and CUDA is there, else transformers
    model_dir: str | None = (
        None  # local folder only (absolute after loading); may be a LoRA adapter
    )
    base_model_dir: str | None = (
        None  # base model of an adapter (default: the adapter's own record)
    )
    trust_remote_code: bool = False  # only for folders that carry their own code (Phi-3.5-vision)
    device: str = "auto"  # auto | cuda | cuda:N | cpu
    require_4bit: bool = True  # no 4-bit layer after loading is a start-up error
    warmup: bool = True  # one inference at start-up, outside any budget (compiles, allocates)
    # --- how it is asked ---
    mode: str = "scored"  # scored | generate
    images: str = "pair"  # pair (golden + test) | single (test only)
    image_type: str = "DST"  # DST (metric image) | RAW (aligned camera image)
    composition: str = "separate"  # separate (two images) | stacked (one image, golden on top)
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
    mode_tokens: int = 6  # scored: at most this many greedy tokens for the defect mode
    timeout_ms: int = 3000  # per inference; over it → verdict error, reason vlm_timeout

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VlmSettings:
        """Build from the recipe's ``vlm:`` mapping; unknown keys and bad values raise ValueError.

        Messages name the key (``vlm.mode: must be one of scored, generate, not 'fast'``).
        """
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"vlm: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        prompts = data.pop("prompts", None)
        if prompts is None:
            prompts = {}
        if not isinstance(prompts, dict):
            raise ValueError("vlm.prompts: must be a mapping of prompt texts")
        p_known = {f.name for f in dataclasses.fields(PromptTexts)}
        p_unknown = sorted(set(prompts) - p_known)
        if p_unknown:
            raise ValueError(
                f"vlm.prompts: unknown key(s) {', '.join(map(repr, p_unknown))}; "
                f"known: {', '.join(sorted(p_known))}"
            )
        for k, v in prompts.items():
            if not isinstance(v, str):
                raise ValueError(f"vlm.prompts.{k}: must be a string")
        out = cls(prompts=PromptTexts(**prompts))
        for k, v in data.items():
            setattr(out, k, v)
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the inverse of ``from_dict``) for saving and hashing a recipe."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check types and ranges; raise ValueError naming the key."""

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ValueError(f"vlm.{name}: must be one of {', '.join(options)}, not {v!r}")

        def typed(name: str, types: type | tuple[type, ...], what: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) and bool not in (
                types if isinstance(types, tuple) else (types,)
            ):
                raise ValueError(f"vlm.{name}: must be {what}, not {v!r}")
            if not isinstance(v, types):
                raise ValueError(f"vlm.{name}: must be {what}, not {v!r}")

        for name in (
            "enabled",
            "trust_remote_code",
            "require_4bit",
            "warmup",
            "one_shot",
            "compile_generate",
        ):
            typed(name, bool, "true or false")
        choice("backend", BACKENDS)
        choice("mode", MODES)
        choice("images", IMAGE_MODES)
        if isinstance(self.image_type, str):
            self.image_type = self.image_type.upper()
        choice("image_type", IMAGE_TYPES)
        choice("composition", COMPOSITIONS)
        for name in ("model_dir", "base_model_dir", "one_shot_image", "one_shot_address"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ValueError(f"vlm.{name}: must be a non-empty string or null, not {v!r}")
        if not isinstance(self.device, str) or not re.fullmatch(
            r"auto|cpu|cuda(:\d+)?", self.device
        ):
            raise ValueError(f"vlm.device: must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        for name, lo, hi in (
            ("max_image_side", 28, 4096),
            ("pin_count", 1, 100000),
            ("max_new_tokens", 1, 4096),
            ("mode_tokens", 1, 64),
            ("timeout_ms", 1, 3_600_000),
        ):
            typed(name, int, "an integer")
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"vlm.{name}: must be between {lo} and {hi}, not {v}")
        typed("threshold", (int, float), "a number")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(
                f"vlm.threshold: must be between 0 and 1 (exclusive), not {self.threshold}"
            )
        self.threshold = float(self.threshold)
        for name in ("noun", "pass_word", "defect_word"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"vlm.{name}: must be a non-empty string, not {v!r}")
        if self.pass_word.strip().lower() == self.defect_word.strip().lower():
            raise ValueError("vlm.pass_word and vlm.defect_word must differ")
        if not isinstance(self.image_type_names, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip()
            for k, v in self.image_type_names.items()
        ):
            raise ValueError("vlm.image_type_names: must map DST and RAW to names, e.g. CYLN_DST")
        self.image_type_names = {k.upper(): v for k, v in self.image_type_names.items()}
        missing = [t for t in IMAGE_TYPES if t not in self.image_type_names]
        if missing:
            raise ValueError(f"vlm.image_type_names: missing {', '.join(missing)}")
        if not isinstance(self.defect_modes, list) or not all(
            isinstance(m, str) and m.strip() for m in self.defect_modes
        ):
            raise ValueError("vlm.defect_modes: must be a list of non-empty strings")
        if len({m.strip().lower() for m in self.defect_modes}) != len(self.defect_modes):
            raise ValueError("vlm.defect_modes: contains duplicates")
        if self.one_shot and (not self.one_shot_image or not self.one_shot_address):
            raise ValueError("vlm.one_shot: needs one_shot_image and one_shot_address")
        if self.one_shot and self.images != "pair":
            raise ValueError("vlm.one_shot: the source documents' 1-shot example is for pair mode")

    # --- derived ---------------------------------------------------------------------------

    def images_expected(self) -> int:
        """How many images ``judge`` takes: 2 (pair, separate) or 1 (pair stacked, single)."""
        if self.images == "pair" and self.composition == "separate":
            return 2
        return 1

    def type_name(self, image_type: str | None = None) -> str:
        """The answer's image type name, e.g. ``CYLN_DST``."""
        return self.image_type_names[(image_type or self.image_type).upper()]
