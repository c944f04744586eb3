"""The zero-shot 4-bit VLM judge (DESIGN 5.2).

* :mod:`pipeline.vlm.settings` — the recipe's ``vlm:`` section (:class:`VlmSettings`), with the
  source documents' prompts as defaults.
* :mod:`pipeline.vlm.prompts` — chat messages for pair (separate / stacked), single, 1-shot.
* :mod:`pipeline.vlm.parser` — the tolerant answer parser (generate mode).
* :mod:`pipeline.vlm.backends` — offline 4-bit loading (Unsloth, transformers + bitsandbytes),
  family detection, LoRA adapters, the 4-bit layer count; start-up problems are ConfigErrors.
* :mod:`pipeline.vlm.judge` — :class:`VlmJudge`: scored (default) and generate modes under a time
  budget; never raises for one part.

Importing this package is cheap: torch, transformers and unsloth are imported when a model loads.
See ``docs/vlm.md``.
"""

from pipeline.vlm.judge import VlmJudge
from pipeline.vlm.parser import ParsedAnswer, parse_answer
from pipeline.vlm.settings import VlmSettings

__all__ = ["ParsedAnswer", "VlmJudge", "VlmSettings", "parse_answer"]
