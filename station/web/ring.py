"""The last parts' images in memory, for the operator page when they are not recorded.

The daemon calls :meth:`ImageRing.put` from the inspection thread: it stores references to the
arrays the Inspector has just made (no copy, no encoding; the Inspector never touches them
again), so handing them over costs microseconds.  The page server encodes a PNG only when a
browser asks for it.  Bounded: the oldest part goes when a new one comes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

import numpy as np

KINDS = ("overlay", "frame", "metric")


class ImageSource(Protocol):
    """Where the page server gets a part's image that is not recorded: the ring itself, or
    the page process's link to the station's ring (:class:`station.web.ring_link.RemoteRing`)."""

    def get(self, part_id: str, kind: str) -> np.ndarray | None:
        """The image ``kind`` of ``part_id``, or None."""


class ImageRing:
    """The images (``overlay``, ``frame``, ``metric``) of the last ``size`` parts by part id."""

    def __init__(self, size: int = 8) -> None:
        self.size = max(0, int(size))
        self._parts: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, part_id: str, images: Mapping[str, np.ndarray | None]) -> None:
        """Keep ``images`` of ``part_id`` (the arrays must not change afterwards).  Never
        blocks on anything but a dict update; never raises on odd input."""
        if self.size == 0:
            return
        kept = {k: v for k, v in images.items() if k in KINDS and isinstance(v, np.ndarray)}
        if not kept:
            return
        with self._lock:
            self._parts.pop(part_id, None)
            self._parts[part_id] = kept
            while len(self._parts) > self.size:
                self._parts.popitem(last=False)

    def get(self, part_id: str, kind: str) -> np.ndarray | None:
        """The image ``kind`` of ``part_id``, or None when it is not (or no longer) here."""
        with self._lock:
            return self._parts.get(part_id, {}).get(kind)

    def __len__(self) -> int:
        with self._lock:
            return len(self._parts)
