"""The DeepPCB development subset for the tests: where it is, and a small representative part.

The full 299-pair evaluation is a benchmark (``station eval ../shared/data/deeppcb --layout
deeppcb``, docs/BENCHMARKS.md); unit tests use :func:`write_subset`.
"""

from __future__ import annotations

import csv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEEPPCB = REPO.parent / "shared" / "data" / "deeppcb"


def write_subset(dest: Path, per_group: int = 2, data: Path = DEEPPCB) -> Path:
    """A DeepPCB-layout folder in ``dest`` with the first ``per_group`` pairs (in index order) of
    every board group; the group folders are symlinks to ``data``.  Returns ``dest``."""
    with (data / "index.csv").open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    kept: list[dict[str, str]] = []
    taken: dict[str, int] = {}
    for row in rows:
        if taken.get(row["group"], 0) < per_group:
            taken[row["group"]] = taken.get(row["group"], 0) + 1
            kept.append(row)
    dest.mkdir(parents=True, exist_ok=True)
    for group in taken:
        (dest / group).symlink_to((data / group).resolve(), target_is_directory=True)
    with (dest / "index.csv").open("w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=fields)
        wr.writeheader()
        wr.writerows(kept)
    return dest
