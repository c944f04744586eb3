"""Replay sources: an image folder, a video file, a manifest CSV, a recording folder.

Every source yields :class:`pipeline.base.frames.Frame` with ``seq`` 0, 1, 2, … (restarting at 0 for
each iteration), ``ts`` (wall-clock time of the read), ``source_id`` and ``meta``.  One bad file
never stops a replay: it becomes ``Frame(image=None, error="corrupt_frame: <path>: <why>")`` (the
file exists but is empty or cannot be decoded) or ``"unreadable: <path>: <why>"`` (it cannot be
opened or read at all) and iteration goes on.  Problems with the source as a whole (a folder that
does not exist, a video OpenCV cannot open, a malformed manifest) raise :class:`SourceError` when
the source is opened, naming the file (and line).

Images are read with :func:`read_image` (:mod:`pipeline.base.imageio`, the one strict decoder:
a truncated or damaged JPEG/PNG is ``corrupt_frame``; an MJPEG video is read in raw mode and its
JPEGs decoded by the same decoder), so a grey file stays grey ``(H, W)`` and a colour file is
BGR ``(H, W, 3)``; then

- 16-bit samples are mapped to 8 bit over the full 16-bit range (``v / 257``, rounded): fixed,
  not per image, so a golden and its test frames stay comparable (12-bit-in-16 data comes out
  dark: convert it beforehand if that matters);
- float samples are taken as ``[0, 1]`` and scaled to ``[0, 255]``;
- an alpha channel is dropped (BGRA → BGR, grey + alpha → grey).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camera.source import FrameSource
from pipeline.base.addresses import normalize_address
from pipeline.base.errors import SourceError
from pipeline.base.frames import Frame
from pipeline.base.imageio import FrameReadError, decode_image, frame_from_file, read_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameReadError",
    "ImageFolderSource",
    "ManifestSource",
    "SourceError",
    "VideoFileSource",
    "frame_from_file",
    "normalize_address",
    "open_replay_source",
    "raw_mjpeg",
    "read_image",
    "read_strict",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".mov", ".mjpg", ".mjpeg", ".mpg",
                              ".mpeg", ".webm", ".wmv", ".ts", ".h264", ".h265", ".hevc"})
LABELS = ("pass", "defect")
_REQUIRED = ("frame", "label")

_MJPG = int.from_bytes(b"MJPG", "little")  # CAP_PROP_FOURCC of an MJPEG video or stream


def raw_mjpeg(cap: cv2.VideoCapture) -> bool:
    """Switch an FFmpeg capture of MJPEG to raw packets (each read gives one JPEG's bytes, for
    :func:`read_strict`); False (left as it is) for other codecs or a backend that cannot."""
    try:
        return int(cap.get(cv2.CAP_PROP_FOURCC)) == _MJPG and bool(
            cap.set(cv2.CAP_PROP_FORMAT, -1))
    except cv2.error:
        return False


def read_strict(cap: cv2.VideoCapture, where: str) -> tuple[bool, np.ndarray | None, str | None]:
    """One read: ``(ok, image, error)``.  In raw MJPEG mode the JPEG is decoded by the strict
    decoder (``error`` ``"corrupt_frame: <where>: <why>"`` when damaged); else the backend's
    image.  ``(False, None, None)`` at the end or on a failed read."""
    ok, image = cap.read()
    if not ok or image is None:
        return False, None, None
    if image.dtype == np.uint8 and image.ndim == 2 and image.shape[0] == 1 \
            and cap.get(cv2.CAP_PROP_FORMAT) == -1:  # raw mode: the encoded JPEG
        try:
            return True, decode_image(image.reshape(-1), where), None
        except FrameReadError as exc:
            return True, None, str(exc)
    return True, image, None


def _natural_key(name: str) -> list[Any]:
    # frame_2 before frame_10, as a person numbering files expects
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------


class ImageFolderSource:
    """The image files of one folder (png, jpg, bmp, tif), in natural name order.

    ``path`` may also be a single image file (a one-frame source).  Other files are ignored;
    ``recursive=True`` also walks sub-folders.  ``meta``: ``path``, ``part_id`` (file stem).
    """

    def __init__(self, path: str | Path, *, recursive: bool = False,
                 source_id: str | None = None) -> None:
        self.path = Path(path)
        if self.path.is_file():
            files = [self.path]
        elif self.path.is_dir():
            it = self.path.rglob("*") if recursive else self.path.iterdir()
            files = [p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]
            files.sort(key=lambda p: _natural_key(str(p.relative_to(self.path))))
        else:
            raise SourceError(f"image folder {self.path}: no such file or directory")
        self.files: list[Path] = files
        self.source_id = source_id or f"folder:{self.path}"

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for seq, f in enumerate(self.files):
            yield frame_from_file(f, seq, self.source_id, {"path": str(f), "part_id": f.stem})

    def close(self) -> None:
        """Nothing to release."""


class VideoFileSource:
    """The frames of a video file, read with ``cv2.VideoCapture``.

    The file is opened in the constructor: a missing file or one OpenCV cannot open raises
    :class:`SourceError` there.  ``meta``: ``path``, ``frame_index``, ``pos_ms`` (position in the
    video), ``part_id`` (``<stem>-<index>``).  A video that opens but yields no frame at all gives
    one ``corrupt_frame`` error frame.
    """

    def __init__(self, path: str | Path, *, source_id: str | None = None) -> None:
        self.path = Path(path)
        self.source_id = source_id or f"video:{self.path}"
        if not self.path.is_file():
            raise SourceError(f"video {self.path}: no such file")
        self._cap: cv2.VideoCapture | None = self._open()
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video {self.path}: OpenCV cannot open it (unknown container or "
                              "codec, or a corrupt file)")
        raw_mjpeg(cap)  # MJPEG: decoded by the strict decoder, like image files
        return cap

    def __iter__(self) -> Iterator[Frame]:
        cap = self._cap if self._cap is not None else self._open()
        self._cap = None  # consumed: a second iteration reopens the file
        n = 0
        try:
            while True:
                pos_ms = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                try:
                    ok, img, error = read_strict(cap, f"{self.path}: frame {n}")
                except cv2.error as e:
                    yield Frame(image=None, seq=n, ts=time.time(), source_id=self.source_id,
                                error=f"corrupt_frame: {self.path}: frame {n}: {e.err}",
                                meta=self._meta(n, pos_ms))
                    return
                if not ok:
                    break
                yield Frame(image=img, seq=n, ts=time.time(), source_id=self.source_id,
                            error=error, meta=self._meta(n, pos_ms))
                n += 1
        finally:
            cap.release()
        if n == 0:
            yield Frame(image=None, seq=0, ts=time.time(), source_id=self.source_id,
                        error=f"corrupt_frame: {self.path}: no decodable frame",
                        meta=self._meta(0, 0.0))

    def _meta(self, index: int, pos_ms: float) -> dict[str, Any]:
        return {"path": str(self.path), "frame_index": index, "pos_ms": pos_ms,
                "part_id": f"{self.path.stem}-{index:06d}"}

    def close(self) -> None:
        """Release the capture if it was not consumed."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ManifestSource:
    """A labelled list of frames: CSV with the header ``frame,label,defects,golden``.

    - ``frame``: image path, relative to the CSV (or absolute); required.
    - ``label``: ``pass`` or ``defect`` (any case); required.
    - ``defects``: addresses ``X:<column>, Y:<row>`` separated by ``;`` (may be empty; must be
      empty for ``pass``).
    - ``golden``: golden image path for this row, relative to the CSV; optional.

    ``defects`` and ``golden`` may be left empty, cut off at the end of a row, or absent from
    the header.

    Blank lines and lines starting with ``#`` are skipped; extra columns are passed into ``meta``.
    The whole file is parsed in the constructor: a missing file, a missing column, a bad label or
    address raises :class:`SourceError` naming ``file:line``.  A missing *image* does not: it is
    an ``unreadable`` error frame when its turn comes.

    ``meta``: ``label``, ``defects`` (list), ``golden`` (absolute path, when given), ``path``
    (absolute), ``part_id`` (file stem), ``line`` (CSV line number), plus any extra columns.
    """

    def __init__(self, csv_path: str | Path, *, source_id: str | None = None) -> None:
        self.path = Path(csv_path)
        self.source_id = source_id or f"manifest:{self.path}"
        self.rows: list[dict[str, Any]] = self._parse()

    def _fail(self, line: int | None, msg: str) -> SourceError:
        where = f"{self.path}:{line}" if line else str(self.path)
        return SourceError(f"manifest {where}: {msg}")

    def _parse(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise self._fail(None, "no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise self._fail(None, f"cannot read: {e}") from None
        base = self.path.resolve().parent
        reader = csv.reader(io.StringIO(text, newline=""))
        header: list[str] | None = None
        rows: list[dict[str, Any]] = []
        for rec in reader:
            line = reader.line_num
            if not rec or all(not c.strip() for c in rec) or rec[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in rec]
                missing = [c for c in _REQUIRED if c not in header]
                if missing:
                    raise self._fail(line, f"header {','.join(header)} lacks column(s) "
                                           f"{', '.join(missing)} (expected "
                                           "frame,label,defects,golden)")
                if len(set(header)) != len(header):
                    raise self._fail(line, f"duplicate column in header {','.join(header)}")
                continue
            if len(rec) > len(header):
                raise self._fail(line, f"{len(rec)} fields, header has {len(header)}")
            lacking = [c for c in header[len(rec):] if c in _REQUIRED]
            if lacking:
                raise self._fail(line, f"missing column(s) {', '.join(lacking)} "
                                       f"({len(rec)} fields, header has {len(header)})")
            # a row cut short lacks optional trailing fields only; they read as ''
            row = {k: v.strip() for k, v in zip(header, rec, strict=False)}
            rows.append(self._row(row, line, base))
        if header is None:
            raise self._fail(None, "empty (no header)")
        return rows

    def _row(self, row: dict[str, str], line: int, base: Path) -> dict[str, Any]:
        frame = row.pop("frame")
        if not frame:
            raise self._fail(line, "empty 'frame'")
        label = row.pop("label").lower()
        if label not in LABELS:
            raise self._fail(line, f"label {label!r} is not one of {', '.join(LABELS)}")
        defects: list[str] = []
        for part in row.pop("defects", "").split(";"):
            if part.strip():
                try:
                    defects.append(normalize_address(part))
                except ValueError as e:
                    hint = ""
                    if re.fullmatch(r"\s*X\s*:\s*\S+\s*", part, re.IGNORECASE):
                        hint = " (an address holds a comma: quote the defects field)"
                    raise self._fail(line, f"{e}{hint}") from None
        if label == "pass" and defects:
            raise self._fail(line, f"label 'pass' with defects {defects}")
        golden = row.pop("golden", "")
        path = (base / frame).resolve() if not Path(frame).is_absolute() else Path(frame)
        meta: dict[str, Any] = {k: v for k, v in row.items() if k}
        meta.update({"label": label, "defects": defects, "path": str(path),
                     "part_id": path.stem, "line": line})
        if golden:
            gp = Path(golden)
            meta["golden"] = str(gp if gp.is_absolute() else (base / gp).resolve())
        return meta

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Frame]:
        for seq, meta in enumerate(self.rows):
            m = dict(meta)
            m["defects"] = list(meta["defects"])
            yield frame_from_file(Path(meta["path"]), seq, self.source_id, m)

    def close(self) -> None:
        """Nothing to release."""


def open_replay_source(path: str | Path) -> FrameSource:
    """Open ``path`` as the right replay source.

    - a ``.csv`` file → :class:`ManifestSource`;
    - a folder with ``recording.jsonl`` or ``index.jsonl`` → ``camera.recording.RecordingSource``;
    - a folder with ``manifest.csv`` (what ``camera.synth.write_line`` writes) → that manifest;
    - any other folder, or a single image file → :class:`ImageFolderSource`;
    - a video file (``VIDEO_EXTENSIONS``) → :class:`VideoFileSource`.

    Raises :class:`SourceError` for a missing path or an unknown file type.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "recording.jsonl").is_file() or (p / "index.jsonl").is_file():
            from camera.recording import RecordingSource  # written separately; loaded on demand

            return RecordingSource(p)
        if (p / "manifest.csv").is_file():
            return ManifestSource(p / "manifest.csv")
        return ImageFolderSource(p)
    if not p.exists():
        raise SourceError(f"replay source {p}: no such file or directory")
    ext = p.suffix.lower()
    if ext == ".csv":
        return ManifestSource(p)
    if ext in VIDEO_EXTENSIONS:
        return VideoFileSource(p)
    if ext in IMAGE_EXTENSIONS:
        return ImageFolderSource(p)
    raise SourceError(f"replay source {p}: unknown file type {ext or '(none)'!r} (expected a "
                      "folder, a manifest .csv, a video or an image)")
