"""A real network camera stand-in: ffmpeg serving MJPEG over HTTP on 127.0.0.1 (one client)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")


def listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:port, or has already accepted its one client
    there (checked via /proc, no connection made: the one-client ffmpeg server must not be
    consumed by the probe, and a reconnecting camera may take it between two probes)."""
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(hexport) and parts[3] in ("0A", "01"):  # LISTEN, ESTABLISHED
                return True
    return False


class MjpegServer:
    """ffmpeg streaming MJPEG over HTTP at 15 fps on ``http://127.0.0.1:PORT/PATH``.

    The picture is ffmpeg's 320x240 test pattern, or, with ``pattern``, an image sequence
    (``part_%04d.png``) looped.  :meth:`start` returns once it listens (bounded); :meth:`stop`
    kills it (SIGKILL also ends a SIGSTOPped process); it can be started again.
    """

    def __init__(self, port: int, *, pattern: str | None = None, path: str = "/",
                 quality: int = 5) -> None:
        self.port = port
        self.pattern = pattern
        self.quality = quality
        self.url = f"http://127.0.0.1:{port}{path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start ffmpeg and wait until it listens; RuntimeError when it exits or never does."""
        assert FFMPEG is not None, "ffmpeg not installed"
        if self.pattern is None:
            source = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=15"]
        else:
            source = ["-framerate", "15", "-loop", "1", "-i", self.pattern]
        self.proc = subprocess.Popen(
            [FFMPEG, "-nostdin", "-loglevel", "error", "-re", *source, "-c:v", "mjpeg",
             "-q:v", str(self.quality), "-f", "mpjpeg", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ffmpeg exited with {self.proc.returncode}")
            if listening(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("ffmpeg did not start listening")

    def stop(self) -> None:
        """Kill the server (no-op when it is not running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
