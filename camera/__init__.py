"""Frame sources: live OpenCV capture, replay of recorded frames, the synthetic line."""

from camera.source import FrameSource
from pipeline.base.frames import Frame

__all__ = ["Frame", "FrameSource"]
