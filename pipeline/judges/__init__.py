"""Judges as plug-ins: the protocol and registry (:mod:`pipeline.judges.base`) and the built-in
judges (``metric``, ``vlm``), each in its own module, imported when first named."""

from pipeline.judges.base import (
    Judge,
    JudgeContext,
    build_judges,
    register_judge,
    registered_judges,
)

__all__ = ["Judge", "JudgeContext", "build_judges", "register_judge", "registered_judges"]
