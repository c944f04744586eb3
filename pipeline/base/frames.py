"""The frame every source yields (the pipeline's input type)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One grabbed (or replayed) image with where and when it came from.

    ``image`` is ``None`` when the source could not decode the frame; ``error`` then says why
    (``"corrupt_frame: …"``, ``"unreadable: …"``).  The pipeline turns such a frame into an
    ``error`` verdict, never into ``pass``.

    ``meta`` carries what a labelled source knows about the part: ``label`` ("pass"/"defect"),
    ``defects`` (list of addresses), ``golden`` (path of a per-row golden image), ``part_id``,
    ``path`` (file the frame came from), ``boxes`` (DeepPCB defect boxes).
    """

    image: np.ndarray | None
    seq: int
    ts: float = field(default_factory=time.time)
    source_id: str = ""
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the frame holds a decoded image."""
        return self.image is not None and self.error is None
