"""Running the ``station`` CLI as the operator does: a child process of this interpreter."""

from __future__ import annotations

import subprocess
import sys


def station(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``station ARGS…`` (``python -m station.cli``), output captured as text."""
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
