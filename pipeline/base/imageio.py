"""The one image decoder of the project, for live cameras, replay and recipes alike.

Images are read with ``cv2.imdecode(np.fromfile(path), IMREAD_UNCHANGED)``, so a grey file stays
grey ``(H, W)`` and a colour file is BGR ``(H, W, 3)``; then

- 16-bit samples are mapped to 8 bit over the full 16-bit range (``v / 257``, rounded): fixed,
  not per image, so a golden and its test frames stay comparable;
- float samples are taken as ``[0, 1]`` and scaled to ``[0, 255]``;
- an alpha channel is dropped (BGRA → BGR, grey + alpha → grey).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.base.errors import SourceError
from pipeline.base.frames import Frame


class FrameReadError(SourceError):
    """One image could not be read; ``kind`` is ``corrupt_frame`` or ``unreadable``."""

    def __init__(self, kind: str, path: str | Path, why: str) -> None:
        self.kind = kind
        self.path = str(path)
        self.why = why
        super().__init__(f"{kind}: {path}: {why}")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    if img.dtype == np.int16:
        return ((img.astype(np.int32) + 32768 + 128) // 257).astype(np.uint8)
    raise ValueError(f"unsupported sample type {img.dtype}")


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as uint8 grey ``(H, W)`` or BGR ``(H, W, 3)``.

    Raises :class:`FrameReadError` (``unreadable`` when the file cannot be read, ``corrupt_frame``
    when it is empty or does not decode).  See the module docstring for the normalisation.
    """
    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except FileNotFoundError:
        raise FrameReadError("unreadable", p, "no such file") from None
    except IsADirectoryError:
        raise FrameReadError("unreadable", p, "is a directory") from None
    except OSError as e:
        raise FrameReadError("unreadable", p, e.strerror or str(e)) from None
    if data.size == 0:
        raise FrameReadError("corrupt_frame", p, "empty file")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise FrameReadError("corrupt_frame", p, f"decoder error: {e.err}") from None
    if img is None or img.size == 0:
        raise FrameReadError("corrupt_frame", p, f"cannot decode {data.size} bytes as an image")
    try:
        img = _to_uint8(img)
    except ValueError as e:
        raise FrameReadError("corrupt_frame", p, str(e)) from None
    if img.ndim == 3:
        if img.shape[2] in (1, 2):  # grey, grey + alpha
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = img[:, :, :3]
        elif img.shape[2] != 3:
            raise FrameReadError("corrupt_frame", p, f"{img.shape[2]} channels")
    return np.ascontiguousarray(img)


def frame_from_file(path: Path, seq: int, source_id: str, meta: dict[str, Any]) -> Frame:
    """A Frame of the image at ``path``, or an error frame saying why it could not be read."""
    try:
        img = read_image(path)
    except FrameReadError as e:
        return Frame(image=None, seq=seq, ts=time.time(), source_id=source_id, error=str(e),
                     meta=meta)
    return Frame(image=img, seq=seq, ts=time.time(), source_id=source_id, meta=meta)
