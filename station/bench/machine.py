"""The machine and date benchmark figures were measured on (docs/BENCHMARKS.md names both)."""

from __future__ import annotations

import platform
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict[str, str]:
    """``machine`` (architecture), ``cpu`` (model) and ``date`` (YYYY-MM-DD, local)."""
    return {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d")}
