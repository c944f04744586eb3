"""DeepPCB reader: real template/test pairs of printed circuit boards with defect boxes.

The development subset in ``../shared/data/deeppcb`` has an ``index.csv`` with the columns
``id, group, test, template, boxes`` (paths relative to the folder; ``boxes`` =
``x1 y1 x2 y2 class`` separated by ``;``, classes 1 open, 2 short, 3 mousebite, 4 spur,
5 spurious copper, 6 pin hole).  :class:`DeepPcbSource` yields the *test* images as frames; the
template (the golden of that board area) is named in ``meta["golden"]``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from camera.replay import SourceError, frame_from_file
from pipeline.base.frames import Frame

__all__ = ["DEEPPCB_CLASSES", "DeepPcbSource", "parse_boxes"]

DEEPPCB_CLASSES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "spurious_copper",
                   6: "pin_hole"}
_COLUMNS = ("id", "group", "test", "template", "boxes")


def parse_boxes(text: str) -> list[list[int]]:
    """``"x1 y1 x2 y2 cls;…"`` → ``[[x1, y1, x2, y2, cls], …]``; ValueError when malformed."""
    boxes = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        vals = part.replace(",", " ").split()
        if len(vals) != 5:
            raise ValueError(f"box {part!r} has {len(vals)} numbers, expected 5")
        x1, y1, x2, y2, cls = (int(float(v)) for v in vals)
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {part!r} has x2 < x1 or y2 < y1")
        if cls not in DEEPPCB_CLASSES:
            raise ValueError(f"box {part!r} has unknown class {cls}")
        boxes.append([x1, y1, x2, y2, cls])
    return boxes


class DeepPcbSource:
    """Frames of the DeepPCB test images listed in ``index.csv``.

    ``data_dir`` is the folder holding ``index.csv`` (or the CSV itself).  ``groups`` keeps only
    those board groups (e.g. ``["group00041"]``), ``limit`` the first ``limit`` rows after that.
    The index is parsed in the constructor; a malformed row raises :class:`SourceError` with
    ``file:line``.  A missing or corrupt image is an error frame, as in every replay source.

    ``meta``: ``part_id`` (the id), ``group``, ``path`` and ``golden`` (absolute paths of the test
    and template images), ``boxes`` (``[[x1, y1, x2, y2, cls], …]``), ``label`` (``defect`` when
    there are boxes, else ``pass``).  No ``defects`` addresses: a DeepPCB board has no pin grid;
    the evaluator maps boxes onto its own cells.
    """

    def __init__(self, data_dir: str | Path, *, groups: Iterable[str] | None = None,
                 limit: int | None = None, source_id: str | None = None) -> None:
        p = Path(data_dir)
        self.index = p if p.suffix.lower() == ".csv" else p / "index.csv"
        self.root = self.index.resolve().parent
        self.source_id = source_id or f"deeppcb:{self.root}"
        rows = self._parse()
        if groups is not None:
            keep = set(groups)
            rows = [r for r in rows if r["group"] in keep]
        self.rows: list[dict[str, Any]] = rows[:limit] if limit is not None else rows

    def _parse(self) -> list[dict[str, Any]]:
        try:
            text = self.index.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise SourceError(f"DeepPCB index {self.index}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"DeepPCB index {self.index}: cannot read: {e}") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header: list[str] | None = None
        rows = []
        for rec in reader:
            line = reader.line_num
            if not rec or all(not c.strip() for c in rec):
                continue
            if header is None:
                header = [c.strip().lower() for c in rec]
                missing = [c for c in _COLUMNS if c not in header]
                if missing:
                    raise SourceError(f"DeepPCB index {self.index}:{line}: header lacks "
                                      f"{', '.join(missing)} (expected {','.join(_COLUMNS)})")
                continue
            if len(rec) != len(header):
                raise SourceError(f"DeepPCB index {self.index}:{line}: {len(rec)} fields, "
                                  f"header has {len(header)}")
            row = {k: v.strip() for k, v in zip(header, rec, strict=False)}
            if not row["id"] or not row["test"] or not row["template"]:
                raise SourceError(f"DeepPCB index {self.index}:{line}: empty id, test or "
                                  "template")
            try:
                boxes = parse_boxes(row["boxes"])
            except ValueError as e:
                raise SourceError(f"DeepPCB index {self.index}:{line}: {e}") from None
            rows.append({
                "part_id": row["id"],
                "group": row["group"],
                "path": str((self.root / row["test"]).resolve()),
                "golden": str((self.root / row["template"]).resolve()),
                "boxes": boxes,
                "label": "defect" if boxes else "pass",
            })
        if header is None:
            raise SourceError(f"DeepPCB index {self.index}: empty (no header)")
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Frame]:
        for seq, row in enumerate(self.rows):
            meta = dict(row)
            meta["boxes"] = [list(b) for b in row["boxes"]]
            yield frame_from_file(Path(row["path"]), seq, self.source_id, meta)

    def close(self) -> None:
        """Nothing to release."""
