"""Replay of a recording folder written by :class:`station.recorder.Recorder`.

Each record yields one :class:`~pipeline.base.frames.Frame` with the recorded camera frame,
read back
unchanged (``cv2.IMREAD_UNCHANGED`` of a lossless PNG: bit-for-bit what was inspected), and meta
taken from the record: ``part_id``, ``label`` (the recorded verdict), ``defects`` (addresses),
``seq`` / ``ts`` (the original event's), ``record_id``, ``path``, ``reason`` and ``record`` (the
whole ``meta.json``).

Records come from the index ``recording.jsonl`` (an older ``index.jsonl`` is accepted too) plus
complete record folders the index missed (a crash between the folder rename and the index
append), oldest first.  Pruned records (index line, no folder) are skipped silently; staging
folders of interrupted writes (``.tmp/``) are never looked at.  A record that is there but broken
(no or unreadable ``meta.json``, missing or undecodable ``frame.png``) yields
``Frame(image=None, error="corrupt_frame: <path>: <why>")`` and replay goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.base.frames import Frame
from pipeline.base.imageio import FrameReadError, read_image

log = logging.getLogger(__name__)

INDEX_NAMES = ("recording.jsonl", "index.jsonl")
META_NAME = "meta.json"


def is_recording_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder with a recording index."""
    p = Path(path)
    return p.is_dir() and any((p / n).is_file() for n in INDEX_NAMES)


class RecordingSource:
    """Iterate the records of a recording folder as Frames (a FrameSource).

    Args:
        dir: the recording folder (``recording.jsonl`` + one folder per record).
        frame_key: which recorded image to replay (``frame``: the raw camera frame).
    """

    def __init__(self, dir: str | Path, *, frame_key: str = "frame") -> None:
        self.dir = Path(dir)
        self.frame_key = frame_key
        self.source_id = f"recording:{self.dir}"
        self.skipped = 0  # index lines whose record was pruned, or unparsable lines

    def records(self) -> list[dict[str, Any]]:
        """The index lines of the records to replay, oldest first (orphan folders included)."""
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        self.skipped = 0
        for name in INDEX_NAMES:
            index = self.dir / name
            if not index.is_file():
                continue
            try:
                text = index.read_text("utf-8", errors="replace")
            except OSError as e:
                log.error("%s: cannot read %s: %s", self.source_id, index, e)
                continue
            for n, ln in enumerate(text.splitlines(), 1):
                if not ln.strip():
                    continue
                try:
                    d = json.loads(ln)
                    rid = str(d["id"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: %s:%d: unreadable index line skipped", self.source_id,
                                name, n)
                    self.skipped += 1
                    continue
                if rid in seen or rid.startswith(".") or "/" in rid or rid in ("", ".."):
                    continue
                if not (self.dir / rid).is_dir():
                    self.skipped += 1  # pruned
                    continue
                seen.add(rid)
                entries.append(d)
        try:
            names = sorted(p.name for p in self.dir.iterdir()
                           if p.is_dir() and not p.name.startswith(".") and p.name not in seen)
        except OSError:
            names = []
        for name in names:  # complete records the index missed, or broken ones to flag
            folder = self.dir / name
            meta_path = folder / META_NAME
            if meta_path.is_file():
                try:
                    doc = json.loads(meta_path.read_text("utf-8"))
                    entries.append({"id": name, "t": float(doc.get("recorded_at") or 0.0)})
                    continue
                except (OSError, ValueError):
                    pass
                entries.append({"id": name, "t": meta_path.stat().st_mtime})
            elif (folder / f"{self.frame_key}.png").is_file():  # no meta.json: flagged later
                frame_png = folder / f"{self.frame_key}.png"
                entries.append({"id": name, "t": frame_png.stat().st_mtime})
        entries.sort(key=lambda d: float(d.get("t") or 0.0))
        return entries

    def __len__(self) -> int:
        return len(self.records())

    def __iter__(self) -> Iterator[Frame]:
        for seq, entry in enumerate(self.records()):
            yield self._frame(seq, entry)

    def _frame(self, seq: int, entry: dict[str, Any]) -> Frame:
        rid = str(entry["id"])
        folder = self.dir / rid
        meta: dict[str, Any] = {"record_id": rid, "path": str(folder / f"{self.frame_key}.png")}

        def bad(path: Path, why: str) -> Frame:
            return Frame(image=None, seq=seq, ts=float(entry.get("t") or time.time()),
                         source_id=self.source_id, error=f"corrupt_frame: {path}: {why}",
                         meta=meta)

        meta_path = folder / META_NAME
        try:
            doc = json.loads(meta_path.read_text("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return bad(meta_path, "incomplete record: no meta.json")
        except (OSError, ValueError) as e:
            return bad(meta_path, f"unreadable: {e}")
        meta.update(_meta_of(doc))
        files = doc.get("files") or {}
        name = files.get(self.frame_key, f"{self.frame_key}.png")
        path = folder / name
        meta["path"] = str(path)
        ts = _ts_of(doc, entry)
        if not path.is_file():
            why = f"no {self.frame_key} image in the record"
            if meta.get("verdict") == "error" and meta.get("reason"):
                why += f" (recorded error: {meta['reason']})"
            return bad(path, why)
        try:  # the one strict decoder (pipeline.base.imageio), as for live frames
            img = read_image(path)
        except FrameReadError as e:
            return bad(path, e.why)
        shape = (doc.get("shapes") or {}).get(self.frame_key)
        if shape and img.ndim == 2 and len(shape) == 3 and shape[2] == 1:
            img = img[:, :, None]  # a (H, W, 1) frame comes back with its channel axis
        return Frame(image=img, seq=seq, ts=ts, source_id=self.source_id, meta=meta)

    def close(self) -> None:
        """Nothing to release."""


RECORD_FIELDS = ("verdict", "reason", "part_id", "seq", "ts", "defects")


def record_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The event fields of a record's meta: top-level keys, else those of a nested ``event``
    (the daemon records ``{"event": <result event>, "prompt": …, "raw_answer": …}``)."""
    event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
    return {k: doc[k] if k in doc else event.get(k) for k in RECORD_FIELDS}


def defect_addresses(defects: Any) -> list[str]:
    """Distinct addresses of ``defects`` given as dicts with ``address`` or as strings."""
    out: list[str] = []
    for d in defects or []:
        a = d.get("address") if isinstance(d, dict) else getattr(d, "address", d)
        if a:
            out.append(str(a))
    return list(dict.fromkeys(out))


def _meta_of(doc: dict[str, Any]) -> dict[str, Any]:
    f = record_fields(doc)
    return {
        "part_id": f["part_id"],
        "label": f["verdict"],
        "verdict": f["verdict"],
        "reason": f["reason"],
        "defects": defect_addresses(f["defects"]),
        "seq": f["seq"],
        "ts": f["ts"],
        "record": doc,
    }


def _ts_of(doc: dict[str, Any], entry: dict[str, Any]) -> float:
    """Original capture time (epoch seconds): ``ts`` as a number or ISO string, else recorded_at."""
    ts = record_fields(doc)["ts"]
    if isinstance(ts, (int, float)):
        return float(ts)
    if isinstance(ts, str):
        try:
            from datetime import datetime

            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return float(doc.get("recorded_at") or entry.get("t") or time.time())
