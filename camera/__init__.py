"""Frame sources: live OpenCV capture, replay of recorded frames, the synthetic line."""

from camera.frames import Frame, FrameSource

__all__ = ["Frame", "FrameSource"]
