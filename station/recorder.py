"""Recording of inspections: one folder per part, an append-only index, size and age limits.

Layout of a recording folder ``dir``::

    dir/recording.jsonl          index: one JSON line per record, in recording order
    dir/<record_id>/frame.png    the camera frame, lossless (replay is bit-for-bit)
    dir/<record_id>/metric.png   the NSOARTC metric image       (when in ``save``)
    dir/<record_id>/overlay.png  the addressed overlay           (when in ``save``)
    dir/<record_id>/meta.json    verdict, defects, prompt, raw model answer, timings, … + files
    dir/.tmp/                    staging area (same file system, so renames are atomic)

A record is written into ``.tmp/`` and renamed into place only when complete, then its index line is
appended: a crash leaves at most a staging folder (ignored by replay, removed at the next start) or
a complete folder without an index line (re-indexed at the next start).  Deletion is the reverse:
the folder is renamed into ``.tmp/`` first, then removed.

Limits: ``max_age_s`` applies to ordinary records, ``defect_max_age_s`` to the verdicts in
``keep_longer`` (``defect`` and ``error`` by default); when the total size exceeds ``max_bytes`` the
oldest ordinary records go first, kept-longer ones only when no ordinary record is left.  The
totals are kept in memory (one index read at start), so pruning costs O(records deleted).

The recorder never raises into the inspection loop: a failed write (full disk, read-only folder,
an image that cannot be encoded) is logged, counted in :attr:`Recorder.stats` and
:meth:`Recorder.record` returns ``""``; :meth:`Recorder.health` says whether the last write
worked.  One writer per folder.

The station writes a record before it publishes the part's event (``record(..., index=False)``),
so the event names only a recording that exists (``frame: null`` otherwise), then completes it
with the published event (:meth:`Recorder.complete`: meta.json replaced, index line appended).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import enum
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camera.recording import defect_addresses, record_fields
from pipeline.base.atomic import fsync_dir

log = logging.getLogger(__name__)

INDEX_NAME = "recording.jsonl"
META_NAME = "meta.json"
STAGING_NAME = ".tmp"
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LOG_EVERY = 100  # after the first failure, log one in this many identical failures


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for what inspection metadata holds (numpy, enums, dataclasses…)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)


def sanitize_record_id(record_id: str) -> str:
    """A record id usable as a folder name: ``[A-Za-z0-9._-]``, no leading dot, ≤ 120 chars."""
    rid = _ID_SAFE.sub("_", str(record_id)).strip("._") or "record"
    return rid[:120]


@dataclass
class _Entry:
    rid: str
    t: float          # wall-clock time it was recorded (age limits)
    nbytes: int
    keep: bool        # verdict in keep_longer


class Recorder:
    """Writes one folder per inspection and enforces size / age limits.

    Args:
        dir: the recording folder (created if missing).
        max_bytes: total size limit of the records (``None``: unlimited).
        max_age_s: age limit of ordinary (pass) records (``None``: unlimited).
        defect_max_age_s: age limit of ``keep_longer`` records (``None``: unlimited).
        save: which entries of ``images`` to write, each as ``<key>.png``.
        keep_longer: verdicts (``meta["verdict"]``) under ``defect_max_age_s`` and deleted last.
        png_compression: PNG level 0–9 (lossless at every level; 1 is fast).
        fsync: fsync files and folders (survives power loss, costs latency).
        clock: wall-clock function (seconds), for age limits.
        max_pending: queue length of :meth:`record_async` before records are dropped.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        max_bytes: float | None = None,
        max_age_s: float | None = None,
        defect_max_age_s: float | None = None,
        save: Iterable[str] = ("frame", "metric", "overlay"),
        *,
        keep_longer: Iterable[str] = ("defect", "error"),
        png_compression: int = 1,
        fsync: bool = False,
        clock: Callable[[], float] = time.time,
        max_pending: int = 8,
    ) -> None:
        self.dir = Path(dir)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.max_age_s = None if max_age_s is None else float(max_age_s)
        self.defect_max_age_s = None if defect_max_age_s is None else float(defect_max_age_s)
        self.save = tuple(save)
        self.keep_longer = frozenset(keep_longer)
        self.png_compression = int(min(9, max(0, png_compression)))
        self.fsync = fsync
        self.clock = clock
        self._lock = threading.RLock()
        self.max_pending = max(1, int(max_pending))
        self._queue: queue.Queue[tuple[str, str, dict[str, Any], dict[str, Any]] | None] = \
            queue.Queue()
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self._entries: dict[str, _Entry] = {}
        self._pending: set[str] = set()  # ids being written (not yet renamed into place)
        self._normal: collections.deque[_Entry] = collections.deque()
        self._kept: collections.deque[_Entry] = collections.deque()
        self._total = 0
        self._dead_lines = 0     # index lines of deleted records (compaction trigger)
        self._stage_n = 0
        self._ready = False
        self._last_fail_msg = ""
        self._same_fail_n = 0
        self._failing = False  # the last write (or attempt) failed
        self._stats: dict[str, Any] = {
            "written": 0, "failures": 0, "index_failures": 0, "pruned": 0,
            "prune_failures": 0, "dropped": 0, "last_error": None, "last_write_ms": None,
        }
        self._setup()

    # ------------------------------------------------------------------ public API
    def record(self, record_id: str, images: Mapping[str, np.ndarray | None],
               meta: Mapping[str, Any], *, index: bool = True) -> str:
        """Write one inspection now; returns the record id used (folder name) or ``""`` on failure.

        ``images``: arrays by name (``frame``, ``metric``, ``overlay``, …); only keys in ``save``
        are written, ``None`` values are skipped.  ``meta``: JSON-able metadata (verdict,
        defects, part_id, seq, ts, prompt, raw_answer, timings_ms, …); numpy values are converted.
        ``index=False``: the record is complete on disk but its index line waits for
        :meth:`complete` (a crash in between: re-indexed at the next start).  Never raises.
        """
        rid = self._reserve(record_id)
        if not rid:
            return ""
        return self._write(rid, record_id, images, meta, index=index)

    def complete(self, rid: str, meta: Mapping[str, Any]) -> bool:
        """Finish a record written with ``index=False``: its meta.json updated with ``meta``
        (atomically), then its index line.  False (logged, counted) when that failed: the record
        stays, with the meta it was written with.  Never raises."""
        folder = self.dir / rid
        try:
            doc = json.loads((folder / META_NAME).read_text("utf-8"))
            doc.update(meta)
            text = json.dumps(doc, default=json_default, ensure_ascii=False, indent=1)
            with self._lock:
                self._stage_n += 1
                tmp = self.dir / STAGING_NAME / f"{os.getpid()}.{self._stage_n}.meta.{rid}"
            try:
                self._write_file(tmp, text.encode("utf-8"))
                os.replace(tmp, folder / META_NAME)
            finally:
                tmp.unlink(missing_ok=True)
            entry = self._entries.get(rid)
            line = self._index_line(rid, entry.t if entry else self.clock(),
                                    entry.nbytes if entry else 0, doc)
            with self._lock:
                self._append_index(json.dumps(line, default=json_default, ensure_ascii=False))
            return True
        except Exception as e:
            with self._lock:
                self._stats["index_failures"] += 1
                self._failing = True
                self._fail(f"record {rid} could not be completed: {type(e).__name__}: {e}")
            return False

    def health(self) -> dict[str, Any]:
        """For heartbeats: ``ok`` (the last write worked), counters and the last error."""
        with self._lock:
            st = self._stats
            return {"ok": not self._failing, "written": st["written"], "failures": st["failures"],
                    "dropped": st["dropped"], "pending": self._queue.unfinished_tasks,
                    "last_error": st["last_error"] if self._failing else None}

    def record_async(self, record_id: str, images: Mapping[str, np.ndarray | None],
                     meta: Mapping[str, Any]) -> str:
        """Queue one inspection for the writer thread; returns its (reserved) record id at once.

        PNG encoding of a megapixel frame plus overlay takes tens of milliseconds: this keeps it
        out of the inspection loop.  The arrays must not be modified after the call.  When
        ``max_pending`` writes are already queued the record is dropped (counted in
        ``stats["dropped"]``) and ``""`` is returned.  A write that fails later is counted in
        ``stats["failures"]`` like a synchronous one.  Never raises.
        """
        try:
            with self._lock:
                if self._queue.qsize() >= self.max_pending:
                    self._stats["dropped"] += 1
                    self._failing = True
                    self._fail(f"writer queue full ({self.max_pending}): record dropped")
                    return ""
                rid = self._reserve(record_id)
                if not rid:
                    return ""
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(target=self._work, name="recorder",
                                                    daemon=True)
                    self._worker.start()
                self._queue.put((rid, record_id, dict(images), dict(meta)))
                return rid
        except Exception as e:
            self._stats["failures"] += 1
            self._fail(f"record {record_id!r} could not be queued: {type(e).__name__}: {e}")
            return ""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued writes are done; False if ``timeout`` expired first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left if left is not None else 0.5)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued writes (up to ``timeout`` s) and stop the writer thread."""
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            worker.join(timeout)
            if worker.is_alive():
                log.error("recorder %s: writer did not finish within %.0f s", self.dir, timeout)
        self._worker = None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            except Exception:  # pragma: no cover - _write never raises
                log.exception("recorder %s: writer error", self.dir)
            finally:
                self._queue.task_done()
                with self._idle:
                    self._idle.notify_all()

    def _reserve(self, record_id: str) -> str:
        """Pick and reserve a free, safe folder name; ``""`` (failure counted) if unusable."""
        try:
            with self._lock:
                if not self._ready:
                    self._setup()
                    if not self._ready:
                        raise OSError(self._stats["last_error"] or f"cannot use {self.dir}")
                rid = self._unique_id(sanitize_record_id(record_id))
                self._pending.add(rid)
                return rid
        except Exception as e:
            with self._lock:
                self._stats["failures"] += 1
                self._failing = True
                self._fail(f"record {record_id!r} failed: {type(e).__name__}: {e}")
            return ""

    def _write(self, rid: str, record_id: str, images: Mapping[str, np.ndarray | None],
               meta: Mapping[str, Any], *, index: bool = True) -> str:
        """Write a reserved record: staging folder → rename → index line → prune if due."""
        t0 = time.perf_counter()
        stage: Path | None = None
        try:
            with self._lock:
                self._stage_n += 1
                stage = self.dir / STAGING_NAME / f"{os.getpid()}.{self._stage_n}.{rid}"
            os.mkdir(stage)
            files: dict[str, str] = {}
            shapes: dict[str, list[int]] = {}
            nbytes = 0
            for key in self.save:
                img = images.get(key)
                if img is None:
                    continue
                arr = np.asarray(img)
                ok, buf = cv2.imencode(".png", arr,
                                       [cv2.IMWRITE_PNG_COMPRESSION, self.png_compression])
                if not ok:
                    raise ValueError(f"cannot encode {key!r} {arr.dtype} {arr.shape} as PNG")
                name = f"{key}.png"
                self._write_file(stage / name, buf.tobytes())
                files[key] = name
                shapes[key] = list(arr.shape)
                nbytes += int(buf.size)
            now = self.clock()
            doc = dict(meta)
            doc.update({
                "record_id": rid,
                "recorded_at": now,
                "recorded_at_iso": _iso(now),
                "files": files,
                "shapes": shapes,
            })
            text = json.dumps(doc, default=json_default, ensure_ascii=False, indent=1)
            self._write_file(stage / META_NAME, text.encode("utf-8"))
            nbytes += len(text.encode("utf-8"))
            final = self.dir / rid
            if self.fsync:
                fsync_dir(stage)
            os.rename(stage, final)  # atomic: the record appears complete or not at all
            stage = None
            if self.fsync:
                fsync_dir(self.dir)
            line = self._index_line(rid, now, nbytes, doc)
            verdict = line["verdict"]
            with self._lock:
                self._pending.discard(rid)
                self._add(_Entry(rid, now, nbytes, verdict in self.keep_longer))
                try:
                    if index:
                        self._append_index(json.dumps(line, default=json_default,
                                                      ensure_ascii=False))
                except Exception as e:  # record is on disk; re-indexed at the next start
                    self._stats["index_failures"] += 1
                    self._fail(f"index append failed for {rid}: {e}")
                self._stats["written"] += 1
                self._failing = False
                self._stats["last_write_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                if self._same_fail_n:
                    log.info("recorder %s: writing again after %d failure(s)", self.dir,
                             self._same_fail_n)
                    self._same_fail_n = 0
                    self._last_fail_msg = ""
                self._maybe_prune(now)
            return rid
        except Exception as e:
            with self._lock:
                self._pending.discard(rid)
                if isinstance(e, FileNotFoundError) and not (self.dir / STAGING_NAME).is_dir():
                    self._ready = False  # folder removed under us: set up again next time
                self._stats["failures"] += 1
                self._failing = True
                self._fail(f"record {record_id!r} failed: {type(e).__name__}: {e}")
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
            return ""

    def prune(self, now: float | None = None) -> int:
        """Enforce the age and size limits now; returns the number of records deleted."""
        with self._lock:
            return self._prune(self.clock() if now is None else now)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: records, bytes, written, failures, index_failures, pruned, last_error…"""
        with self._lock:
            out = dict(self._stats)
            out["records"] = len(self._entries)
            out["bytes"] = self._total
            out["kept_longer"] = len(self._kept)
            out["dir"] = str(self.dir)
            out["pending"] = self._queue.unfinished_tasks
            return out

    @property
    def total_bytes(self) -> int:
        """Running total of the bytes of all records (PNG + meta.json)."""
        return self._total

    def record_ids(self) -> list[str]:
        """Ids of the records currently kept, oldest first."""
        with self._lock:
            return sorted(self._entries, key=lambda r: self._entries[r].t)

    @classmethod
    def from_config(cls, config: Any) -> Recorder:
        """Build from a ``StationConfig`` (its ``recording:`` section; days → seconds, the
        folder resolved relative to the config file)."""
        rec = config.recording
        folder = config.resolve(rec.dir) if hasattr(config, "resolve") else Path(rec.dir)
        kw: dict[str, Any] = {}
        if getattr(rec, "save", None):
            kw["save"] = tuple(rec.save)
        return cls(folder, max_bytes=rec.max_bytes, max_age_s=rec.max_age_days * 86400.0,
                   defect_max_age_s=rec.defect_max_age_days * 86400.0, **kw)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _index_line(rid: str, t: float, nbytes: int, doc: Mapping[str, Any]) -> dict[str, Any]:
        f = record_fields(dict(doc))
        return {
            "id": rid, "t": round(t, 6), "verdict": str(f["verdict"] or ""),
            "part_id": f["part_id"], "seq": f["seq"], "ts": f["ts"],
            "defects": defect_addresses(f["defects"]), "bytes": nbytes,
            "files": doc.get("files", {}),
        }

    def _fail(self, msg: str) -> None:
        self._stats["last_error"] = msg
        if msg != self._last_fail_msg:
            self._last_fail_msg = msg
            self._same_fail_n = 1
            log.error("recorder %s: %s", self.dir, msg)
        else:
            self._same_fail_n += 1
            if self._same_fail_n % _LOG_EVERY == 0:
                log.error("recorder %s: %s (x%d)", self.dir, msg, self._same_fail_n)

    def _setup(self) -> None:
        """Create the folders, clean stale staging, load the index, re-index orphans."""
        try:
            (self.dir / STAGING_NAME).mkdir(parents=True, exist_ok=True)
        except Exception as e:
            self._stats["failures"] += 1
            self._fail(f"cannot create {self.dir}: {type(e).__name__}: {e}")
            return
        self._clean_staging()
        self._entries.clear()
        self._normal.clear()
        self._kept.clear()
        self._total = 0
        self._dead_lines = 0
        loaded: list[_Entry] = []
        seen: set[str] = set()
        try:
            names = {n for n in os.listdir(self.dir) if not n.startswith(".")}
        except OSError as e:
            self._stats["failures"] += 1
            self._fail(f"cannot list {self.dir}: {e}")
            return
        index = self.dir / INDEX_NAME
        needs_newline = False
        if index.exists():
            try:
                raw = index.read_bytes()
                needs_newline = bool(raw) and not raw.endswith(b"\n")
                for ln in raw.decode("utf-8", "replace").splitlines():
                    try:
                        d = json.loads(ln)
                        rid = str(d["id"])
                    except (ValueError, KeyError, TypeError):
                        self._dead_lines += 1
                        continue
                    if rid in seen or rid not in names:
                        self._dead_lines += 1  # pruned (or a duplicate line)
                        continue
                    seen.add(rid)
                    loaded.append(_Entry(rid, float(d.get("t", 0.0)), int(d.get("bytes", 0)),
                                         str(d.get("verdict", "")) in self.keep_longer))
            except OSError as e:
                log.error("recorder %s: cannot read index: %s", self.dir, e)
        orphans: list[tuple[_Entry, dict[str, Any]]] = []
        for name in sorted(names - seen):
            folder = self.dir / name
            meta_path = folder / META_NAME
            if not meta_path.is_file():
                continue  # not a record of ours
            try:
                doc = json.loads(meta_path.read_text("utf-8"))
                nbytes = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
                t = float(doc.get("recorded_at") or meta_path.stat().st_mtime)
            except (OSError, ValueError) as e:
                log.warning("recorder %s: skipping unreadable record %s: %s", self.dir, name, e)
                continue
            verdict = str(record_fields(doc)["verdict"] or "")
            e_ = _Entry(name, t, nbytes, verdict in self.keep_longer)
            orphans.append((e_, doc))
            loaded.append(e_)
        loaded.sort(key=lambda e: e.t)
        for e in loaded:
            self._add(e)
        try:
            if needs_newline:  # a crash cut the last line: do not glue the next one to it
                self._append_raw(b"\n")
            for e, doc in orphans:  # complete folders whose index line was never written
                self._append_index(json.dumps(self._index_line(e.rid, e.t, e.nbytes, doc),
                                              default=json_default, ensure_ascii=False))
            if orphans:
                log.warning("recorder %s: re-indexed %d record(s) missing from the index",
                            self.dir, len(orphans))
        except Exception as e:
            self._stats["index_failures"] += 1
            self._fail(f"index repair failed: {e}")
        self._ready = True
        if loaded:
            log.info("recorder %s: %d record(s), %.1f MB", self.dir, len(loaded),
                     self._total / 1e6)

    def _clean_staging(self) -> None:
        """Remove staging leftovers of dead processes (crashed writes, interrupted deletes)."""
        staging = self.dir / STAGING_NAME
        try:
            for p in staging.iterdir():
                pid = _pid_of(p.name)
                if pid is not None and pid != os.getpid() and _pid_alive(pid):
                    continue  # another live process (should not happen: one writer per folder)
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        except OSError as e:
            log.warning("recorder %s: cannot clean staging: %s", self.dir, e)

    def _unique_id(self, rid: str) -> str:
        def taken(r: str) -> bool:
            return r in self._entries or r in self._pending or (self.dir / r).exists()

        if not taken(rid):
            return rid
        n = 1
        while taken(f"{rid}-{n}"):
            n += 1
        return f"{rid}-{n}"

    def _write_file(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _append_raw(self, data: bytes) -> None:
        with open(self.dir / INDEX_NAME, "ab") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _append_index(self, line: str) -> None:
        self._append_raw((line + "\n").encode("utf-8"))

    def _add(self, e: _Entry) -> None:
        self._entries[e.rid] = e
        (self._kept if e.keep else self._normal).append(e)
        self._total += e.nbytes

    def _maybe_prune(self, now: float) -> None:
        """O(1) unless something is due: check the oldest of each class and the total."""
        due = (
            (self.max_bytes is not None and self._total > self.max_bytes)
            or (self.max_age_s is not None and self._normal
                and self._normal[0].t < now - self.max_age_s)
            or (self.defect_max_age_s is not None and self._kept
                and self._kept[0].t < now - self.defect_max_age_s)
        )
        if due:
            self._prune(now)

    def _prune(self, now: float) -> int:
        n = 0
        try:
            if self.max_age_s is not None:
                while self._normal and self._normal[0].t < now - self.max_age_s:
                    n += self._delete(self._normal.popleft())
            if self.defect_max_age_s is not None:
                while self._kept and self._kept[0].t < now - self.defect_max_age_s:
                    n += self._delete(self._kept.popleft())
            if self.max_bytes is not None:
                while self._total > self.max_bytes and self._normal:
                    n += self._delete(self._normal.popleft())
                while self._total > self.max_bytes and self._kept:
                    n += self._delete(self._kept.popleft())
            if self._dead_lines > max(1000, len(self._entries)):
                self._compact_index()
        except Exception as e:  # never raise into the loop
            self._stats["prune_failures"] += 1
            self._fail(f"prune failed: {type(e).__name__}: {e}")
        return n

    def _delete(self, e: _Entry) -> int:
        """Remove one record (already popped from its deque); 1 if it was removed."""
        self._entries.pop(e.rid, None)
        self._total -= e.nbytes
        self._dead_lines += 1
        src = self.dir / e.rid
        self._stage_n += 1
        trash = self.dir / STAGING_NAME / f"{os.getpid()}.{self._stage_n}.del.{e.rid}"
        try:
            os.rename(src, trash)  # vanishes from replay atomically
        except FileNotFoundError:
            return 0
        except OSError as err:
            self._stats["prune_failures"] += 1
            self._fail(f"cannot delete {src}: {err}")
            return 0
        shutil.rmtree(trash, ignore_errors=True)
        self._stats["pruned"] += 1
        return 1

    def _compact_index(self) -> None:
        """Rewrite the index without the lines of deleted records (tmp + rename)."""
        index = self.dir / INDEX_NAME
        tmp = self.dir / STAGING_NAME / f"{os.getpid()}.compact.{INDEX_NAME}"
        kept = 0
        with open(index, "rb") as src, open(tmp, "wb") as dst:
            for raw in src:
                try:
                    rid = str(json.loads(raw)["id"])
                except (ValueError, KeyError, TypeError):
                    continue
                if rid in self._entries:
                    dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    kept += 1
            if self.fsync:
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, index)
        self._dead_lines = 0
        log.info("recorder %s: index compacted to %d line(s)", self.dir, kept)


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


def _pid_of(name: str) -> int | None:
    """Staging names start with the writer's pid: ``<pid>.<n>.<rid>``."""
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

