"""The one image decoder of the project, for live cameras, replay and recipes alike.

Strict: a damaged image is a ``corrupt_frame``, never a picture with a grey or smeared part that
could be judged.  Decoders that would repair damage silently are not trusted alone:

- JPEG is decoded by libjpeg-turbo through ``simplejpeg`` in strict mode: a missing end marker
  (``FFD9``), a scan cut short (libjpeg's "premature end of data segment") or any other warning
  libjpeg would print and repair is an error (bit-identical pixels to OpenCV's decoder otherwise);
- PNG is walked chunk by chunk first: every CRC must match and ``IEND`` must be there;
- every other format (and PNG after that check) goes through
  ``cv2.imdecode(data, IMREAD_UNCHANGED)``, which refuses short BMP/TIFF/WebP files.

A grey file stays grey ``(H, W)`` and a colour file is BGR ``(H, W, 3)``; then

- 16-bit samples are mapped to 8 bit over the full 16-bit range (``v / 257``, rounded): fixed,
  not per image, so a golden and its test frames stay comparable;
- float samples are taken as ``[0, 1]`` and scaled to ``[0, 255]``;
- an alpha channel is dropped (BGRA → BGR, grey + alpha → grey).
"""

from __future__ import annotations

import struct
import time
import zlib
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
    when it is empty, damaged or does not decode).  See the module docstring.
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
    return decode_image(data, p)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"


def decode_image(data: bytes | np.ndarray, where: str | Path) -> np.ndarray:
    """Decode one encoded image (a file's bytes, a JPEG from an MJPEG stream) strictly, as uint8
    grey ``(H, W)`` or BGR ``(H, W, 3)``; :class:`FrameReadError` ``corrupt_frame`` naming
    ``where`` when it is empty, damaged or not an image."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    if buf.size == 0:
        raise FrameReadError("corrupt_frame", where, "empty file")
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        img = _decode_jpeg(buf, where)
    else:
        if head == _PNG_SIGNATURE:
            problem = png_problem(buf.tobytes())
            if problem:
                raise FrameReadError("corrupt_frame", where, problem)
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error as e:
            raise FrameReadError("corrupt_frame", where, f"decoder error: {e.err}") from None
        if img is None or img.size == 0:
            raise FrameReadError("corrupt_frame", where,
                                 f"cannot decode {buf.size} bytes as an image")
    try:
        img = _to_uint8(img)
    except ValueError as e:
        raise FrameReadError("corrupt_frame", where, str(e)) from None
    if img.ndim == 3:
        if img.shape[2] in (1, 2):  # grey, grey + alpha
            img = img[:, :, 0]
        elif img.shape[2] == 4:
            img = img[:, :, :3]
        elif img.shape[2] != 3:
            raise FrameReadError("corrupt_frame", where, f"{img.shape[2]} channels")
    return np.ascontiguousarray(img)


def _decode_jpeg(buf: np.ndarray, where: str | Path) -> np.ndarray:
    """libjpeg-turbo in strict mode: any warning (truncation, corrupt scan data) is an error.

    ``simplejpeg`` is imported here, not with the module: a tool that never decodes a JPEG (the
    GPU benchmarks carry only what they need) imports this module without it."""
    try:
        import simplejpeg
    except ImportError:  # a dependency of the package: without it no JPEG is judged, never passed
        raise FrameReadError("unreadable", where, "the strict JPEG decoder (simplejpeg) is not "
                             "installed") from None
    try:
        _h, _w, colorspace, _sub = simplejpeg.decode_jpeg_header(buf)
        if colorspace == "Gray":
            return simplejpeg.decode_jpeg(buf, colorspace="GRAY", strict=True)[:, :, 0]
        if colorspace in ("CMYK", "YCCK"):
            # validated strictly, converted to BGR the way OpenCV always did
            simplejpeg.decode_jpeg(buf, colorspace="CMYK", strict=True)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ValueError("OpenCV cannot convert this CMYK JPEG")
            return img
        return simplejpeg.decode_jpeg(buf, colorspace="BGR", strict=True)
    except (ValueError, cv2.error) as e:
        why = str(e).strip().rstrip(".") or type(e).__name__
        raise FrameReadError("corrupt_frame", where, f"damaged JPEG ({why})") from None


def png_problem(data: bytes) -> str | None:
    """Why a PNG file's chunk structure is damaged (a chunk cut short, a CRC that does not
    match, no ``IEND``), or None when it is whole."""
    pos = len(_PNG_SIGNATURE)
    n = len(data)
    while True:
        if pos + 8 > n:
            return f"damaged PNG (cut short at byte {pos}: no IEND chunk)"
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if length > 0x7FFFFFFF or end > n:
            return (f"damaged PNG (chunk {kind.decode('latin-1')!r} at byte {pos} is cut short: "
                    f"{n} bytes, needs {end})")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[pos + 4:end - 4]) & 0xFFFFFFFF != crc:
            return f"damaged PNG (CRC mismatch in chunk {kind.decode('latin-1')!r} at byte {pos})"
        if kind == b"IEND":
            return None
        pos = end


def frame_from_file(path: Path, seq: int, source_id: str, meta: dict[str, Any]) -> Frame:
    """A Frame of the image at ``path``, or an error frame saying why it could not be read."""
    try:
        img = read_image(path)
    except FrameReadError as e:
        return Frame(image=None, seq=seq, ts=time.time(), source_id=source_id, error=str(e),
                     meta=meta)
    return Frame(image=img, seq=seq, ts=time.time(), source_id=source_id, meta=meta)


def frame_from_bytes(data: bytes | np.ndarray, where: str, seq: int, source_id: str,
                     meta: dict[str, Any] | None = None) -> Frame:
    """A Frame of one encoded image held in memory (a JPEG of an MJPEG stream), or an error
    frame (``corrupt_frame: <where>: <why>``) when it does not decode strictly."""
    try:
        img = decode_image(data, where)
    except FrameReadError as e:
        return Frame(image=None, seq=seq, ts=time.time(), source_id=source_id, error=str(e),
                     meta=dict(meta or {}))
    return Frame(image=img, seq=seq, ts=time.time(), source_id=source_id, meta=dict(meta or {}))
