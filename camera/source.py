"""The protocol every frame source follows (replay sources and live cameras)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pipeline.base.frames import Frame


class FrameSource(Protocol):
    """Anything that yields frames: replay sources iterate to the end, live ones run forever."""

    source_id: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
