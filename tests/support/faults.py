"""Fault-injection helpers: station configs with extra sections, the journal as raw bytes, RSS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from station.journal import decode_line


def with_sections(cfg: Path, **sections: dict[str, Any]) -> Path:
    """Merge ``sections`` (``trigger={…}``, ``events={…}``) into a station config written by
    :func:`station.bench.events.write_config` (JSON, which is YAML); returns ``cfg``."""
    data = json.loads(cfg.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    return cfg


def journal_lines(state_dir: Path) -> tuple[list[tuple[int, str, dict[str, Any]]], list[bytes]]:
    """Every line of a station's journal segments, read as raw bytes: ``(entries, bad)`` where
    ``bad`` holds each line that does not decode (torn, glued or corrupt) and a last line
    without its newline."""
    good: list[tuple[int, str, dict[str, Any]]] = []
    bad: list[bytes] = []
    for seg in sorted((state_dir / "journal").glob("events-*.log")):
        for line in seg.read_bytes().splitlines(keepends=True):
            entry = decode_line(line)
            if entry is None:
                bad.append(line)
            else:
                good.append((entry.seq, entry.topic, json.loads(entry.json)))
    return good, bad


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
