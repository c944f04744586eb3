"""Loading a local vision-language model folder in 4 bit: Unsloth or transformers + bitsandbytes.

* Offline, always: ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``,
  ``UNSLOTH_DISABLE_STATISTICS=1`` and ``local_files_only`` on every load; the folder is passed as
  an absolute path so it can never be read as a Hub repository id; Unsloth's compiled modules go
  to ``<cache>/unsloth_compiled_cache`` (``UNSLOTH_COMPILE_LOCATION``).
* Families (``model_type`` of ``config.json``): ``mllama`` (Llama-3.2-Vision), ``qwen2_vl``,
  ``qwen2_5_vl``, ``llava`` (Pixtral, LLaVA) and, through transformers only and when the recipe says
  ``trust_remote_code: true``, ``phi3_v`` (Phi-3.5-vision, which carries its own code).
* A folder with ``adapter_config.json`` is a LoRA adapter: its base (``vlm.base_model_dir`` or the
  adapter's ``base_model_name_or_path``, a local folder) is loaded in 4 bit, then the adapter on top
  with peft.
* After loading, the bitsandbytes ``Linear4bit`` layers are counted: Unsloth falls back to 16 bit
  without a word, so zero 4-bit layers is a start-up error unless ``vlm.require_4bit: false``.

Every start-up problem (missing folder, no weights, corrupt weights, text-only model, a family the
backend cannot run, no GPU for Unsloth, out of memory) is a
:class:`pipeline.base.errors.ConfigError`
with a one-line cause (exit 78).  Heavy imports (torch, transformers, unsloth) happen inside the
functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.base.errors import ConfigError
from pipeline.vlm.settings import VlmSettings

log = logging.getLogger(__name__)

# model_type → human name; these run through both backends unless listed in TRANSFORMERS_ONLY.
FAMILIES: dict[str, str] = {
    "mllama": "Llama-3.2-Vision",
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "llava": "Pixtral / LLaVA",
    "phi3_v": "Phi-3.5-vision",
}
TRANSFORMERS_ONLY = {"phi3_v"}
REMOTE_CODE = {"phi3_v"}  # no class in transformers: the folder's own modelling code
# Families whose processor can be built without torchvision (image-only, PIL image processor).
_QWEN_PROCESSORS = {
    "qwen2_vl": "transformers.models.qwen2_vl.Qwen2VLProcessor",
    "qwen2_5_vl": "transformers.models.qwen2_5_vl.Qwen2_5_VLProcessor",
}
# Arguments of Pixtral's processor read from a folder's processor_config.json.
_PIXTRAL_PROCESSOR_KEYS = (
    "patch_size",
    "spatial_merge_size",
    "image_token",
    "image_break_token",
    "image_end_token",
)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt")
# Weights in Python's pickle format: loading one runs whatever code it carries.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def weights_problem(path: Path, *, allow_pickle: bool = False,
                    stem: str = "*") -> str | None:
    """Why the weights of ``path`` must not be loaded, or None: safetensors files are used when
    there (pickle files beside them are ignored); pickle-format files alone (``*.bin``, ``*.pt``,
    ``*.pth``, ``*.ckpt``) only with ``allow_pickle`` (``vlm.allow_pickle: true`` in the recipe:
    unpickling runs code from the file).  ``stem`` narrows the names (``adapter_model``)."""
    if any(path.glob(f"{stem}.safetensors")):
        return None
    pickles = pickle_only(path, stem)
    if not pickles:
        return f"no weights ({stem}.safetensors) in {path}"
    if allow_pickle:
        return None
    return pickle_refusal(path, pickles)


def pickle_only(path: Path, stem: str = "*") -> list[str]:
    """Names of the pickle-format weight files of ``path`` when it has no safetensors ones
    (empty when it has, or has neither)."""
    if any(path.glob(f"{stem}.safetensors")):
        return []
    return sorted(p.name for pat in PICKLE_PATTERNS for p in path.glob(stem + pat[1:]))


def pickle_refusal(path: Path, pickles: list[str]) -> str:
    """Why a folder of pickle-only weights is refused, and what to do."""
    return (f"{path} holds only pickle-format weights ({', '.join(pickles[:3])}), which can run "
            "code when loaded: convert them to safetensors, or set vlm.allow_pickle: true in "
            "the recipe if you trust this folder")


@dataclass
class ModelFolder:
    """What a folder holds, read from its json files alone (no torch needed)."""

    path: Path  # absolute
    family: str  # model_type of the (base) model
    config: dict[str, Any]
    adapter_dir: Path | None = None  # set when ``path`` is a LoRA adapter
    base_dir: Path | None = None  # the adapter's base model folder
    prequantized: str | None = None  # quant_method of a saved quantization_config
    pickle_weights: bool = False  # no safetensors: pickle weights, allowed by vlm.allow_pickle

    @property
    def weights_dir(self) -> Path:
        """The folder with the base model's weights."""
        return self.base_dir or self.path


@dataclass
class LoadedModel:
    """A loaded model with its processor, ready for the judge."""

    model: Any
    processor: Any
    tokenizer: Any
    folder: ModelFolder
    backend: str  # "unsloth" | "transformers"
    device: str
    compute_dtype: str
    n_4bit: int
    n_linear: int
    load_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The ``model_type``: mllama, qwen2_vl, qwen2_5_vl, llava, phi3_v."""
        return self.folder.family

    def info(self) -> dict[str, Any]:
        """JSON-ready description (event ``model`` field, ``station model check``)."""
        return {
            "family": self.family,
            "name": FAMILIES.get(self.family, self.family),
            "model_dir": str(self.folder.weights_dir),
            "adapter_dir": str(self.folder.adapter_dir) if self.folder.adapter_dir else None,
            "backend": self.backend,
            "device": self.device,
            "compute_dtype": self.compute_dtype,
            "linear_4bit": self.n_4bit,
            "linear_total": self.n_linear,
            "load_s": round(self.load_s, 2),
            **self.extra,
        }


# --- environment ---------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The service's cache folder: systemd's ``$CACHE_DIRECTORY``, else ``~/.cache/...``."""
    env = os.environ.get("CACHE_DIRECTORY")  # set by CacheDirectory= in the unit
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inspection-station"


def prepare_environment(cache_dir: str | Path | None = None) -> Path:
    """Force offline mode and point Unsloth's compile cache into ``cache_dir``; returns it.

    Safe to call more than once.  huggingface_hub reads ``HF_HUB_OFFLINE`` when imported, so if it
    is already imported its constant is set too.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    compile_dir = (cache / "unsloth_compiled_cache").resolve()
    try:
        compile_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"vlm: cache folder {compile_dir} is not writable: {exc}") from exc
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["UNSLOTH_DISABLE_STATISTICS"] = "1"
    os.environ["UNSLOTH_COMPILE_LOCATION"] = str(compile_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes' CPU backend warns at import that an optional kernel package is missing.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import sys

    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    return cache


# --- folders -------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"vlm: unreadable {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"vlm: {path} is not a JSON object")
    return data


def _local_dir(value: str | os.PathLike[str], what: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        hint = ""
        if not path.is_absolute() and str(value).count("/") == 1:
            hint = " (models load from a local folder only: copy it onto this machine first)"
        raise ConfigError(f"vlm: {what} {str(value)!r} not found or not a folder{hint}")
    return path.resolve()


def family_of(config: dict[str, Any], where: Path) -> str:
    """The supported family of a ``config.json``, or a ConfigError saying why not."""
    model_type = str(config.get("model_type") or "")
    if model_type in FAMILIES:
        return model_type
    is_vision = any(k in config for k in ("vision_config", "img_processor", "vision_tower")) or any(
        "vision" in str(a).lower() or "vl" in str(a).lower() or "imagetext" in str(a).lower()
        for a in config.get("architectures") or []
    )
    if not is_vision:
        raise ConfigError(
            f"vlm: {where} holds a text-only model (model_type {model_type or '?'!r}); "
            "the VLM judge needs a vision-language model"
        )
    raise ConfigError(
        f"vlm: unsupported model family {model_type or '?'!r} in {where}; "
        f"supported: {', '.join(sorted(FAMILIES))}"
    )


def inspect_folder(
    model_dir: str | os.PathLike[str], base_model_dir: str | None = None, *,
    allow_pickle: bool = False,
) -> ModelFolder:
    """Read a model (or LoRA adapter) folder's json files and check that it can be loaded
    (safetensors weights, or pickle ones with ``allow_pickle``: see :func:`weights_problem`)."""
    path = _local_dir(model_dir, "model folder")
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file():
        acfg = _read_json(adapter_cfg)
        base_ref = base_model_dir or acfg.get("base_model_name_or_path")
        if not base_ref:
            raise ConfigError(
                f"vlm: adapter {path} names no base model; set vlm.base_model_dir to its folder"
            )
        base = _local_dir(base_ref, "base model folder of the adapter")
        folder = inspect_folder(base, allow_pickle=allow_pickle)
        problem = weights_problem(path, allow_pickle=allow_pickle, stem="adapter_model")
        if problem:
            raise ConfigError(f"vlm: adapter: {problem}")
        folder.adapter_dir, folder.base_dir = path, base
        folder.path = path
        return folder
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"vlm: {path} has no config.json (not a model folder)")
    config = _read_json(cfg_path)
    family = family_of(config, path)
    problem = weights_problem(path, allow_pickle=allow_pickle)
    if problem:
        raise ConfigError(f"vlm: {problem}")
    quant = config.get("quantization_config") or None
    return ModelFolder(
        path=path,
        family=family,
        config=config,
        prequantized=(quant or {}).get("quant_method") if isinstance(quant, dict) else None,
        pickle_weights=not any(path.glob("*.safetensors")),
    )


# --- loading -------------------------------------------------------------------------------------


def count_4bit_layers(model: Any) -> tuple[int, int]:
    """(bitsandbytes ``Linear4bit`` layers, all ``nn.Linear`` layers incl. those) of ``model``."""
    import torch

    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:  # bitsandbytes missing or broken: nothing can be 4 bit
        Linear4bit = ()  # type: ignore[assignment]
    n4 = n = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            n += 1
            if Linear4bit and isinstance(mod, Linear4bit):
                n4 += 1
    return n4, n


def _pick_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"vlm.device: {setting} asked for, but no CUDA GPU is usable here")
    return setting


CHOICE_FILE = "vlm_backend_choice.json"


def device_name(device: str) -> str:
    """The accelerator's name (``NVIDIA H200``) or ``cpu``: what a backend measurement is for."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    return "cpu"


def record_backend_choice(cache_dir: str | Path | None, folder: ModelFolder, device: str,
                          measured: dict[str, Any]) -> Path:
    """Store ``station model bench``'s result for ``backend: auto`` (per model folder, device)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / CHOICE_FILE
    data = _read_json(path) if path.is_file() else {}
    data[f"{folder.path}|{device_name(device)}"] = measured
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def measured_backend(cache_dir: str | Path | None, folder: ModelFolder,
                     device: str) -> dict[str, Any] | None:
    """The recorded measurement for this folder on this device (None when never measured)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / CHOICE_FILE
    if not path.is_file():
        return None
    try:
        entry = _read_json(path).get(f"{folder.path}|{device_name(device)}")
    except ConfigError:
        return None
    return entry if isinstance(entry, dict) and entry.get("fastest") in ("unsloth",
                                                                         "transformers") else None


def _pick_backend(setting: str, device: str, folder: ModelFolder,
                  cache_dir: str | Path | None = None) -> str:
    """The backend to load with; ``auto`` takes the fastest backend that keeps the model in 4 bit
    as measured on this device by ``station model bench``, and says so; unmeasured, transformers
    (every layer in 4 bit; Unsloth keeps vision towers in 16 bit: docs/vlm-gpu-bench.md)."""
    if setting != "auto":
        return setting
    if not device.startswith("cuda") or folder.family in TRANSFORMERS_ONLY:
        return "transformers"
    m = measured_backend(cache_dir, folder, device)
    if m is not None:
        log.info("vlm: backend auto -> %s, the fastest measured on %s (%s)", m["fastest"],
                 device_name(device), m.get("summary", ""))
        return str(m["fastest"])
    log.info("vlm: backend auto -> transformers (not measured on this GPU: "
             "`station model bench %s` times each backend)", folder.path)
    return "transformers"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _is_corrupt(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("SafetensorError", "HeaderTooLarge", "UnpicklingError", "EOFError") or any(
        s in text
        for s in (
            "deserializ",
            "header",
            "safetensor",
            "unable to load weights",
            "invalid load key",
            "incomplete",
            "corrupt",
            "truncated",
            "unexpected end",
        )
    )


def load_processor(folder: ModelFolder, *, trust_remote_code: bool = False) -> Any:
    """The folder's processor; Qwen-VL and Pixtral fall back to ones built without torchvision.

    transformers 5.x builds Qwen2-VL's processor with a video processor that needs torchvision, and
    its ``PixtralProcessor`` imports the torchvision image processor; where torchvision is missing
    (or does not match torch) the processor is built from the folder's tokenizer, its PIL image
    processor (``Qwen2VLImageProcessorPil``, ``PixtralImageProcessorPil``) and its chat template.
    """
    from transformers import AutoProcessor

    src = str(folder.weights_dir)
    try:
        return AutoProcessor.from_pretrained(
            src, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        pixtral = is_pixtral(folder.config)
        if folder.family not in _QWEN_PROCESSORS and not pixtral:
            raise ConfigError(f"vlm: cannot load the processor of {src}: {_one_line(exc)}") from exc
        log.info("vlm: %s; building the processor with the PIL image processor", _one_line(exc))
        try:
            if pixtral:
                return build_pixtral_processor(src)
            return build_image_only_processor(folder.family, src)
        except Exception as exc2:
            raise ConfigError(
                f"vlm: cannot load the processor of {src}: {_one_line(exc2)}"
            ) from exc2


def is_pixtral(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` is Pixtral's (a Llava model with a Pixtral vision tower)."""
    vision = config.get("vision_config")
    return config.get("model_type") == "llava" and (
        isinstance(vision, dict) and vision.get("model_type") == "pixtral"
    )


def _folder_chat_template(src: str, tok: Any) -> str | None:
    """The folder's chat template file (``.jinja`` or ``.json``), else the tokenizer's."""
    for name in ("chat_template.jinja", "chat_template.json"):
        p = Path(src) / name
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return getattr(tok, "chat_template", None)


def image_only_processor_class(family: str) -> type:
    """A subclass of the Qwen-VL processor class without its video part (no torchvision)."""
    import importlib

    from transformers.processing_utils import ProcessorMixin

    mod_name, cls_name = _QWEN_PROCESSORS[family].rsplit(".", 1)
    base = getattr(importlib.import_module(mod_name), cls_name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return type(f"{cls_name}ImageOnly", (base,), {"__init__": __init__})


def build_image_only_processor(family: str, src: str) -> Any:
    """Qwen-VL processor from a folder: tokenizer, PIL image processor, chat template."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    ip = Qwen2VLImageProcessorPil.from_pretrained(src, local_files_only=True)
    return image_only_processor_class(family)(
        image_processor=ip, tokenizer=tok, chat_template=_folder_chat_template(src, tok)
    )


def build_pixtral_processor(src: str) -> Any:
    """Pixtral processor from a folder without torchvision (``pipeline.vlm.pixtral``).

    Tokenizer, ``PixtralImageProcessorPil``, chat template, and the patch size and image tokens of
    the folder's ``processor_config.json``.
    """
    from transformers import AutoTokenizer
    from transformers.models.pixtral.image_processing_pil_pixtral import (
        PixtralImageProcessorPil,
    )

    from pipeline.vlm.pixtral import PixtralProcessorPil

    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    ip = PixtralImageProcessorPil.from_pretrained(src, local_files_only=True)
    cfg_path = Path(src) / "processor_config.json"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    kwargs = {k: cfg[k] for k in _PIXTRAL_PROCESSOR_KEYS if cfg.get(k) is not None}
    return PixtralProcessorPil(
        image_processor=ip, tokenizer=tok, chat_template=_folder_chat_template(src, tok), **kwargs
    )


def _load_transformers(folder: ModelFolder, device: str, trust_remote_code: bool) -> tuple:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        BitsAndBytesConfig,
    )

    on_gpu = device.startswith("cuda")
    if on_gpu:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        compute = torch.float32
    kwargs: dict[str, Any] = {
        "dtype": compute,
        "device_map": {"": device},
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        # safetensors whenever the folder has them (never unpickle a .bin lying beside them)
        "use_safetensors": not folder.pickle_weights,
    }
    if folder.prequantized is None:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    if folder.family in REMOTE_CODE:
        # Phi-3.5-vision: flash-attention is its default, and is not installed.
        kwargs["_attn_implementation"] = "eager"
        auto = AutoModelForCausalLM
    else:
        auto = AutoModelForImageTextToText
    model = auto.from_pretrained(str(folder.weights_dir), **kwargs)
    processor = load_processor(folder, trust_remote_code=trust_remote_code)
    return model, processor, str(compute).removeprefix("torch.")


def _load_unsloth(folder: ModelFolder, device: str) -> tuple:
    import torch

    if not device.startswith("cuda"):
        raise ConfigError(
            "vlm.backend: unsloth runs vision models on an NVIDIA GPU only; "
            "use backend: transformers (or auto) on this machine"
        )
    try:
        import unsloth  # noqa: F401  (patches transformers: import it first)
        from unsloth import FastVisionModel
    except Exception as exc:
        raise ConfigError(f"vlm.backend: unsloth is not usable here: {_one_line(exc)}") from exc
    model, processor = FastVisionModel.from_pretrained(
        str(folder.weights_dir),
        load_in_4bit=True,
        dtype=None,
        device_map={"": device},
        use_gradient_checkpointing=False,
        trust_remote_code=False,
        local_files_only=True,
    )
    FastVisionModel.for_inference(model)
    if isinstance(processor, type(None)):
        processor = load_processor(folder)
    compute = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float16)
    return model, processor, str(compute).removeprefix("torch.")


def _apply_adapter(model: Any, adapter_dir: Path) -> Any:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError(
            f"vlm: {adapter_dir} is a LoRA adapter and loading it needs peft (pip install peft)"
        ) from exc
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.eval()
    return model


def load_model(settings: VlmSettings, *, cache_dir: str | Path | None = None) -> LoadedModel:
    """Load ``settings.model_dir`` with the configured backend; ConfigError on any problem."""
    if not settings.model_dir:
        raise ConfigError("vlm.model_dir: not set (a local model folder is needed)")
    cache = prepare_environment(cache_dir)
    folder = inspect_folder(settings.model_dir, settings.base_model_dir,
                            allow_pickle=settings.allow_pickle)
    if folder.family in REMOTE_CODE and not settings.trust_remote_code:
        raise ConfigError(
            f"vlm: {FAMILIES[folder.family]} runs its own code from {folder.weights_dir}; "
            "set vlm.trust_remote_code: true if you trust that folder"
        )
    device = _pick_device(settings.device)
    backend = _pick_backend(settings.backend, device, folder, cache)
    if backend == "unsloth" and folder.family in TRANSFORMERS_ONLY:
        raise ConfigError(
            f"vlm.backend: unsloth cannot run {FAMILIES[folder.family]}; use backend: transformers"
        )
    t0 = time.perf_counter()
    try:
        if backend == "unsloth":
            model, processor, compute = _load_unsloth(folder, device)
        else:
            model, processor, compute = _load_transformers(
                folder, device, settings.trust_remote_code
            )
        if folder.adapter_dir is not None:
            model = _apply_adapter(model, folder.adapter_dir)
    except ConfigError:
        raise
    except Exception as exc:
        if _is_oom(exc):
            _free_cuda()
            raise ConfigError(
                f"vlm: the model in {folder.weights_dir} does not fit in memory on {device} "
                f"({_one_line(exc)})"
            ) from exc
        if _is_corrupt(exc):
            raise ConfigError(
                f"vlm: corrupt or unreadable weights in {folder.weights_dir}: {_one_line(exc)}"
            ) from exc
        raise ConfigError(
            f"vlm: cannot load {folder.weights_dir} with {backend}: {_one_line(exc)}"
        ) from exc
    model.eval()
    n4, n = count_4bit_layers(model)
    loaded = LoadedModel(
        model=model,
        processor=processor,
        tokenizer=getattr(processor, "tokenizer", processor),
        folder=folder,
        backend=backend,
        device=device,
        compute_dtype=compute,
        n_4bit=n4,
        n_linear=n,
        load_s=time.perf_counter() - t0,
    )
    log.info(
        "vlm: loaded %s (%s) from %s with %s on %s: %d of %d linear layers in 4 bit, %.1f s",
        FAMILIES[folder.family],
        folder.family,
        folder.weights_dir,
        backend,
        device,
        n4,
        n,
        loaded.load_s,
    )
    if n4 == 0:
        msg = (
            f"vlm: no 4-bit layer in the loaded model ({n} linear layers in 16/32 bit): "
            f"{backend} did not quantize {folder.weights_dir}"
        )
        if settings.require_4bit:
            raise ConfigError(msg + " (set vlm.require_4bit: false to accept)")
        log.warning(msg)
    return loaded


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
