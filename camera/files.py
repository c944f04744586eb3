"""Files played as a live camera: an image folder, an image sequence or a video, at a frame rate.

``camera: {type: files, source: frames/, fps: 10, loop: true}``.  The frames are read by the same
replay sources ``station replay`` uses (:func:`camera.replay.open_replay_source`: a folder, a
video, a manifest or a recording; one decoder), or from an image-sequence pattern
(``frames/part_%04d.png``), and handed out like a camera's: a reader thread keeps only the newest
frame, paced at ``fps`` (else the video's rate, else 25).  A file that cannot be decoded becomes
that moment's frame (``corrupt_frame: …``, judged ``error``, never ``pass``).  At the end the
camera goes down (``end_of_stream``) unless ``loop`` is set.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from camera.registry import SourceOptions, register_source
from camera.replay import open_replay_source
from camera.source import HealthCallback
from camera.threaded import ThreadedSource
from pipeline.base.errors import SourceError
from pipeline.base.frames import Frame
from pipeline.base.imageio import frame_from_file

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
_SEQ_FIELD = re.compile(r"%(0?\d*)d")


def sequence_files(pattern: str | Path) -> list[Path]:
    """The files of an image-sequence pattern (one ``%d`` / ``%04d`` field in the file name),
    in frame-number order."""
    pattern = Path(pattern)
    m = _SEQ_FIELD.search(pattern.name)
    if m is None:
        raise ValueError(f"{pattern}: not an image-sequence pattern (no %d field)")
    head, tail = pattern.name[:m.start()], pattern.name[m.end():]
    width = int(m.group(1) or 0)
    digits = rf"\d{{{width},}}" if width else r"\d+"
    rx = re.compile(re.escape(head) + f"({digits})" + re.escape(tail) + "$")
    folder = pattern.parent
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            hit = rx.match(p.name)
            if hit and p.is_file():
                found.append((int(hit.group(1)), p))
    return [p for _, p in sorted(found)]


class FilesCamera(ThreadedSource):
    """Image folder / image sequence / video as a :class:`camera.source.LiveSource`.

    Raises :class:`SourceError` at construction when ``path`` does not exist (or a pattern
    matches no file): a wrong path is a configuration mistake, not a camera outage.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None, loop: bool = False,
                 source_id: str | None = None, on_health: HealthCallback | None = None) -> None:
        self.path = Path(path)
        self.is_sequence = _SEQ_FIELD.search(self.path.name) is not None
        if self.is_sequence:
            if not sequence_files(self.path):
                raise SourceError(f"image sequence {self.path}: no file matches")
        elif not self.path.exists():
            raise SourceError(f"{self.path}: no such file or directory")
        if fps is not None and not 0 < fps <= 1000:
            raise ValueError(f"fps must be in (0, 1000], got {fps}")
        self.fps = fps
        self.loop = loop
        self.source_id = source_id or f"files:{self.path}"
        self._init_threaded(on_health)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ LiveSource
    def start(self) -> None:
        """Start the reader thread; returns at once."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._reason = "starting"
        self._thread = threading.Thread(target=self._run, name=f"reader[{self.source_id}]",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader thread; idempotent.  Wakes pending reads."""
        self._stop.set()
        self._newest.wake()
        self._claims.end_all("camera closed")
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)
        self._health_closed()
        self._thread = None

    # ------------------------------------------------------------------ reader
    def _frames(self) -> tuple[Iterable[Frame], float | None]:
        """One pass over the files, and the rate the source itself suggests (a video's)."""
        if self.is_sequence:
            files = sequence_files(self.path)
            return (frame_from_file(p, i, self.source_id, {"path": str(p), "part_id": p.stem})
                    for i, p in enumerate(files)), None
        src = open_replay_source(self.path)
        native = getattr(src, "fps", None)

        def frames() -> Iterator[Frame]:
            try:
                yield from src
            finally:
                src.close()
        return frames(), float(native) if native else None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frames, native = self._frames()
                fps = self.fps or (native if native and 0 < native <= 1000 else DEFAULT_FPS)
                played = self._play(frames, 1.0 / fps)
                if self._stop.is_set():
                    return
                if not played:
                    self._set_health(False, f"no frame in {self.path}")
                    return
                if not self.loop:
                    self._set_health(False, "end_of_stream")
                    return
        except Exception as exc:  # never raise out of the thread: a failure is a camera down
            log.exception("%s: reader failed", self.source_id)
            self._set_health(False, f"read failed: {type(exc).__name__}: {exc}")

    def _play(self, frames: Iterable[Frame], period: float) -> int:
        n = 0
        next_due = time.monotonic()
        for frame in frames:
            if self._stop.is_set():
                break
            self._publish(frame)
            n += 1
            if not self._up:
                shape = frame.image.shape if frame.image is not None else None
                size = f" ({shape[1]}x{shape[0]})" if shape else ""
                self._set_health(True, f"frames flowing{size}")
            next_due = max(next_due + period, time.monotonic() - period)
            if self._stop.wait(max(0.0, next_due - time.monotonic())):
                break
        return n

    def _publish(self, frame: Frame) -> None:
        self._claims.offer(self._newest.put(replace(frame, ts=time.time())))


# ------------------------------------------------------------------ camera type "files"
@dataclass(frozen=True)
class FilesOptions(SourceOptions):
    """``camera: {type: files, source: PATH, fps: …, loop: …}``: ``source`` is an image folder,
    an image-sequence pattern, a video (or a manifest / recording folder), relative to the
    station config's folder."""

    source: str = ""
    fps: float | None = None
    loop: bool = False

    def validate(self) -> None:
        super().validate()
        if not self.source.strip():
            raise ValueError("source: give the image folder, sequence pattern or video")
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise ValueError("fps must be in (0, 1000]")


@register_source("files", options=FilesOptions)
def open_files(options: FilesOptions, base_dir: Path) -> FilesCamera:
    """A :class:`FilesCamera` on ``options.source`` (relative to ``base_dir``)."""
    path = Path(options.source).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return FilesCamera(path, fps=options.fps, loop=options.loop)
