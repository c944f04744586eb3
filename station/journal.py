"""Append-only, fsync'd event journal with a sequence number that survives restarts.

On disk (``<state_dir>/journal/``)::

    events-0000000000000001.log   segments, named by the seq of their first event
    events-0000000000004711.log
    SEQ                           high-water mark, rewritten atomically at every segment roll
    LOCK                          flock: one station per state directory

One line per event::

    <crc32 of the rest, 8 hex> <seq> <topic> <event JSON>\\n

The CRC covers ``"<seq> <topic> <json>"``.  A line without its newline or with a wrong CRC is torn
(``kill -9`` or power loss in the middle of a write); on open the torn tail of the newest segment
is cut off, so the next append starts on a clean line.  A bad line in the middle of a segment
(media corruption) is skipped with a warning.

The sequence number is the larger of the newest valid line and ``SEQ``.  ``SEQ`` is written before
a new segment is started and before old segments are deleted, so even a journal rotated down to
nothing cannot hand out a seq twice.  Every line is ``fdatasync``'d before :meth:`Journal.append`
returns: whatever a subscriber has seen is on disk.

An append is all or nothing: when the write or the ``fdatasync`` fails (a full disk, an I/O
error) the segment is truncated back to its last complete line and :class:`JournalWriteError` is
raised; the seq is not used, so nothing half-written can glue onto the next event.  ``RESERVE``
is a preallocated file (``reserve_bytes``) that :meth:`Journal.release_reserve` gives back to the
file system when the disk is full, so the station can still journal that it is out of space (and
the parts it must refuse), and :meth:`Journal.restore_reserve` takes again once space returns.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.base.atomic import fsync_dir, write_bytes_atomic
from pipeline.base.errors import StationError

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"^events-(\d{16})\.log$")
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MEMORY_EVENTS = 4096
DEFAULT_RESERVE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One journaled event: its seq, topic and the exact JSON text that was published."""

    seq: int
    topic: str
    json: str

    def event(self) -> dict:
        """The event as a dict."""
        return json.loads(self.json)


class JournalLocked(StationError):
    """Another process holds the journal of this state directory."""


class JournalWriteError(StationError):
    """An event could not be made durable; nothing of it was left on disk and its seq is free."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def disk_full(self) -> bool:
        """True when the file system is out of space (or quota)."""
        return self.code in (errno.ENOSPC, errno.EDQUOT)


def encode_line(seq: int, topic: str, text: str) -> bytes:
    """One journal line (with its CRC and newline) for an event."""
    if " " in topic or "\n" in topic or not topic:
        raise ValueError(f"bad topic {topic!r}")
    if "\n" in text:
        raise ValueError("event JSON must be one line")
    body = f"{seq} {topic} {text}".encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode_line(line: bytes) -> Entry | None:
    """The entry of one complete line (newline included), or ``None`` if it is torn or corrupt."""
    if len(line) < 12 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        seq_s, topic, text = body.decode().split(" ", 2)
        return Entry(int(seq_s), topic, text)
    except ValueError:  # bad hex, bad UTF-8, too few fields
        return None


class Journal:
    """The station's event journal.  Thread-safe; one instance per state directory.

    ``append`` is called with strictly increasing ``seq`` (the publisher takes ``last_seq + 1``
    under its own lock); ``since`` serves catch-up from memory for recent events and from the
    segments for older ones.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        memory_events: int = DEFAULT_MEMORY_EVENTS,
        fsync: bool = True,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        self.dir = Path(directory)
        self.segment_bytes = max(4096, int(segment_bytes))
        self.max_bytes = max(self.segment_bytes, int(max_bytes))
        self.fsync = fsync
        self._lock = threading.RLock()
        self._recent: collections.deque[Entry] = collections.deque(maxlen=max(1, memory_events))
        self._fd: int | None = None
        self._fd_size = 0
        self._closed = False
        self.torn_bytes = 0  # bytes cut off the newest segment at open (a torn last write)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLocked(
                f"journal {self.dir} is in use by another station process"
            ) from None
        self._last_seq = max(self._read_seq_file(), self._recover())
        self._oldest = self._find_oldest()
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.reserve_held = False
        self.restore_reserve()

    # ----------------------------------------------------------------------------- state
    @property
    def last_seq(self) -> int:
        """Highest seq ever journaled (or reserved by ``SEQ``); 0 for a new journal."""
        return self._last_seq

    @property
    def oldest_seq(self) -> int | None:
        """Seq of the first event still on disk, ``None`` when the journal is empty."""
        return self._oldest

    def _find_oldest(self) -> int | None:
        for path in self._segments():
            for entry in self._read_segment(path):
                return entry.seq
        return None

    def _segments(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if SEGMENT_RE.match(p.name))

    @staticmethod
    def _first_seq(path: Path) -> int:
        m = SEGMENT_RE.match(path.name)
        assert m
        return int(m.group(1))

    def _read_seq_file(self) -> int:
        path = self.dir / "SEQ"
        try:
            return int(json.loads(path.read_text())["seq"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("journal: ignoring unreadable %s: %s", path, exc)
            return 0

    def _write_seq_file(self) -> None:
        write_bytes_atomic(self.dir / "SEQ", json.dumps({"seq": self._last_seq}).encode() + b"\n")

    def _recover(self) -> int:
        """Cut a torn tail off the newest segment; load recent events; return the last seq."""
        last = 0
        segments = self._segments()
        # Newest segment first: a segment whose only line was torn holds nothing, look further back.
        for path in reversed(segments):
            data = path.read_bytes()
            good_end, entries = 0, []
            pos = 0
            while pos < len(data):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                entry = decode_line(data[pos : nl + 1])
                if entry is not None and entry.seq > (entries[-1].seq if entries else 0):
                    entries.append(entry)
                    good_end = nl + 1
                elif entry is None:
                    log.warning("journal: %s: corrupt line at byte %d skipped", path.name, pos)
                pos = nl + 1
            if good_end < len(data) and path == segments[-1]:
                self.torn_bytes = len(data) - good_end
                log.warning(
                    "journal: %s: cutting %d bytes of a torn last write", path.name, self.torn_bytes
                )
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
            if entries:
                last = entries[-1].seq
                self._recent.extend(entries[-self._recent.maxlen :])  # type: ignore[misc]
                if len(self._recent) < (self._recent.maxlen or 0):
                    self._prepend_older(segments[: segments.index(path)])
                break
        return last

    def _prepend_older(self, older: list[Path]) -> None:
        need = (self._recent.maxlen or 0) - len(self._recent)
        for path in reversed(older):
            if need <= 0:
                return
            entries = list(self._read_segment(path))[-need:]
            self._recent.extendleft(reversed(entries))
            need -= len(entries)

    # ----------------------------------------------------------------------------- writing
    def append(self, seq: int, topic: str, text: str) -> Entry:
        """Append one event and make it durable (``fdatasync``) before returning.

        ``seq`` must be greater than :attr:`last_seq`; ``text`` is the event's one-line JSON.
        """
        line = encode_line(seq, topic, text)
        with self._lock:
            if self._closed:
                raise StationError("journal is closed")
            if seq <= self._last_seq:
                raise ValueError(f"seq {seq} is not above the last seq {self._last_seq}")
            try:
                if self._fd is None or self._fd_size >= self.segment_bytes:
                    self._roll(seq)
                assert self._fd is not None
                view = memoryview(line)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                if self.fsync:
                    os.fdatasync(self._fd)
            except OSError as exc:
                self._undo_partial()
                raise JournalWriteError(f"journal append of seq {seq} failed: {exc}",
                                        exc.errno) from exc
            self._fd_size += len(line)
            self._last_seq = seq
            if self._oldest is None:
                self._oldest = seq
            entry = Entry(seq, topic, text)
            self._recent.append(entry)
            return entry

    def _undo_partial(self) -> None:
        """Cut what a failed append left after the last complete line (all or nothing)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._fd_size)
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:  # the file is cut at the next start (torn tail) in the worst case
            log.error("journal: cannot cut a failed append back: %s", exc)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # ----------------------------------------------------------------------------- space
    def free_bytes(self) -> int:
        """Bytes available to this process on the journal's file system."""
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def release_reserve(self) -> int:
        """Give the preallocated ``RESERVE`` back to the file system (the disk is full);
        returns the bytes freed."""
        with self._lock:
            if not self.reserve_held:
                return 0
            try:
                os.truncate(self.dir / "RESERVE", 0)
            except OSError as exc:
                log.error("journal: cannot release the reserve: %s", exc)
                return 0
            self.reserve_held = False
            return self.reserve_bytes

    def restore_reserve(self) -> bool:
        """Preallocate ``RESERVE`` again; False (nothing held) when the space is not there."""
        with self._lock:
            if self.reserve_held or self.reserve_bytes == 0:
                return True
            path = self.dir / "RESERVE"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
            except OSError as exc:
                log.warning("journal: no reserve: %s", exc)
                return False
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                self.reserve_held = True
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    # a file system that cannot preallocate: go on without a reserve
                    log.warning("journal: no reserve (cannot preallocate: %s)", exc)
                    self.reserve_bytes = 0
                    return True
            finally:
                os.close(fd)
            return self.reserve_held

    def _roll(self, first_seq: int) -> None:
        """Start a new segment (or reopen the newest one if it still has room)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        segments = self._segments()
        if segments and segments[-1].stat().st_size < self.segment_bytes:
            path = segments[-1]
        else:
            # SEQ first: if everything older is rotated away, the seq still cannot go back.
            self._write_seq_file()
            path = self.dir / f"events-{first_seq:016d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._fd_size = os.fstat(self._fd).st_size
        if self._fd_size == 0:
            fsync_dir(self.dir)
        self._rotate()

    def _rotate(self) -> None:
        segments = self._segments()
        total = sum(p.stat().st_size for p in segments)
        for path in segments[:-1]:
            if total <= self.max_bytes:
                break
            size = path.stat().st_size
            path.unlink()
            total -= size
            log.info("journal: rotated away %s (%d bytes)", path.name, size)
        if len(segments) > 1:
            self._oldest = self._find_oldest()

    def close(self) -> None:
        """Flush and close; writes ``SEQ`` so the next run starts above everything used."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            with contextlib.suppress(OSError):
                self._write_seq_file()
            os.close(self._lock_fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- reading
    def _read_segment(self, path: Path) -> Iterator[Entry]:
        try:
            with open(path, "rb") as f:
                for line in f:
                    entry = decode_line(line)
                    if entry is not None:
                        yield entry
        except FileNotFoundError:  # rotated away while we read
            return

    def since(self, seq: int, limit: int, *,
              max_bytes: int | None = None) -> tuple[list[Entry], bool]:
        """Events with ``seq`` above the given one, oldest first, at most ``limit`` of them and,
        with ``max_bytes``, no more than that many bytes of JSON (but at least one event).

        Returns ``(entries, more)``; ``more`` is True when further events follow the batch.
        """
        entries, more = self._since(seq, limit)
        if max_bytes is None or not entries:
            return entries, more
        total = 0
        for i, e in enumerate(entries):
            total += len(e.json) + len(e.topic) + 32
            if total > max_bytes and i > 0:
                return entries[:i], True
        return entries, more

    def _since(self, seq: int, limit: int) -> tuple[list[Entry], bool]:
        limit = max(0, int(limit))
        with self._lock:
            last = self._last_seq
            recent = list(self._recent) if self._recent and self._recent[0].seq <= seq + 1 else None
        if seq >= last or limit == 0:
            return [], seq < last
        if recent is not None:
            out = [e for e in recent if e.seq > seq]
            return out[:limit], len(out) > limit
        out: list[Entry] = []
        segments = self._segments()
        start = 0
        for i, path in enumerate(segments):
            if self._first_seq(path) <= seq + 1:
                start = i
        for path in segments[start:]:
            for entry in self._read_segment(path):
                if entry.seq <= seq:
                    continue
                if len(out) == limit:
                    return out, True
                out.append(entry)
        return out, False

    def entries(self) -> Iterator[Entry]:
        """Every valid event on disk, oldest first (for tools and tests)."""
        for path in self._segments():
            yield from self._read_segment(path)
