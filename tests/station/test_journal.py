"""Journal: durability, torn writes after kill -9, rotation, seq persistence, catch-up reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from station.journal import Journal, JournalLocked, decode_line, encode_line

ROOT = Path(__file__).resolve().parents[2]


def _ev(seq: int, **kw: object) -> str:
    return json.dumps({"seq": seq, "x": "y" * 40, **kw}, separators=(",", ":"))


def _fill(j: Journal, n: int, topic: str = "insp.result.pass") -> None:
    for _ in range(n):
        s = j.last_seq + 1
        j.append(s, topic, _ev(s))


def test_line_roundtrip_and_corruption() -> None:
    line = encode_line(7, "insp.status", '{"a":1}')
    e = decode_line(line)
    assert e is not None and (e.seq, e.topic, e.json) == (7, "insp.status", '{"a":1}')
    assert decode_line(line[:-1]) is None  # no newline: torn
    bad = bytearray(line)
    bad[-3] ^= 1
    assert decode_line(bytes(bad)) is None  # CRC mismatch
    assert decode_line(b"garbage\n") is None
    with pytest.raises(ValueError):
        encode_line(1, "a b", "{}")
    with pytest.raises(ValueError):
        encode_line(1, "t", "{\n}")


def test_seq_continues_across_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        assert j.last_seq == 0 and j.oldest_seq is None
        _fill(j, 10)
        with pytest.raises(ValueError):
            j.append(10, "t", "{}")  # not above the last seq
    with Journal(tmp_path) as j:
        assert j.last_seq == 10 and j.oldest_seq == 1
        _fill(j, 5)
        assert [e.seq for e in j.entries()] == list(range(1, 16))


def test_second_journal_on_same_dir_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path), pytest.raises(JournalLocked):
        Journal(tmp_path)


def test_torn_last_line_is_cut_and_ignored(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        _fill(j, 5)
    seg = sorted(tmp_path.glob("events-*.log"))[-1]
    whole = encode_line(6, "insp.result.pass", _ev(6))
    with open(seg, "ab") as f:
        f.write(whole[: len(whole) // 2])  # what kill -9 in the middle of a write leaves
    with Journal(tmp_path) as j:
        assert j.last_seq == 5 and j.torn_bytes == len(whole) // 2
        _fill(j, 1)
    lines = seg.read_bytes().splitlines(keepends=True)
    assert [decode_line(x).seq for x in lines] == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr]


def test_bad_crc_in_last_line_is_ignored(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        _fill(j, 3)
    seg = sorted(tmp_path.glob("events-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0x20
    seg.write_bytes(bytes(data))
    (tmp_path / "SEQ").unlink()  # as after a crash: SEQ is written at roll and at close only
    with Journal(tmp_path) as j:
        assert j.last_seq == 2
        _fill(j, 1)
        assert [e.seq for e in j.entries()] == [1, 2, 3]


def test_seq_file_wins_over_a_shorter_journal(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        _fill(j, 3)
    seg = sorted(tmp_path.glob("events-*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0x20  # seq 3 was used (SEQ says so) but its line is unreadable
    seg.write_bytes(bytes(data))
    with Journal(tmp_path) as j:
        assert j.last_seq == 3
        _fill(j, 1)
        assert [e.seq for e in j.entries()] == [1, 2, 4]


def test_rotation_keeps_seq_even_when_all_segments_are_gone(tmp_path: Path) -> None:
    with Journal(tmp_path, segment_bytes=4096, max_bytes=3 * 4096, memory_events=10) as j:
        _fill(j, 400)
        segs = sorted(tmp_path.glob("events-*.log"))
        assert 2 <= len(segs) <= 4
        assert sum(p.stat().st_size for p in segs) <= 4 * 4096 + 200
        oldest = j.oldest_seq
        assert oldest is not None and oldest > 1
        # catch-up older than what is kept starts at the oldest kept event
        got, more = j.since(0, 5)
        assert [e.seq for e in got] == list(range(oldest, oldest + 5)) and more
        # catch-up from disk (memory holds only 10) is complete and ordered
        got, more = j.since(oldest + 3, 10_000)
        assert [e.seq for e in got] == list(range(oldest + 4, 401)) and not more
    for p in tmp_path.glob("events-*.log"):
        p.unlink()  # an operator wiping the journal must not make seqs go back
    with Journal(tmp_path) as j:
        assert j.last_seq == 400
        _fill(j, 1)
        assert [e.seq for e in j.entries()] == [401]


def test_since_from_memory_and_bounds(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        _fill(j, 50)
        got, more = j.since(40, 100)
        assert [e.seq for e in got] == list(range(41, 51)) and not more
        got, more = j.since(40, 3)
        assert [e.seq for e in got] == [41, 42, 43] and more
        assert j.since(50, 10) == ([], False)
        assert j.since(10**12, 10) == ([], False)
        assert json.loads(got[0].json)["seq"] == 41


_WRITER = textwrap.dedent("""
    import sys
    from station.journal import Journal
    j = Journal(sys.argv[1])
    print(j.last_seq, flush=True)
    while True:
        s = j.last_seq + 1
        j.append(s, "insp.result.pass", '{"seq":%d,"pad":"%s"}' % (s, "p" * 300))
        print(s, flush=True)
""")


def test_kill_9_while_appending_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """A real writer process is killed -9 mid-stream, three times; every seq it reported as
    written is on disk, seqs stay consecutive, and appending resumes after the last one."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acked = 0
    for _round in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            start = int(proc.stdout.readline())  # type: ignore[union-attr]
            assert start >= acked  # never goes back
            deadline = time.monotonic() + 10
            last = start
            while last < start + 200 and time.monotonic() < deadline:
                last = int(proc.stdout.readline())  # type: ignore[union-attr]
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            acked = last
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            proc.stdout.close()  # type: ignore[union-attr]
    with Journal(tmp_path) as j:
        seqs = [e.seq for e in j.entries()]
        assert j.last_seq >= acked
        assert seqs == list(range(1, j.last_seq + 1))


_FAILING_APPEND = textwrap.dedent("""
    import json, os, resource, signal, sys
    from station.journal import Journal, JournalWriteError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG, not a signal
    j = Journal(sys.argv[1], reserve_bytes=0)
    j.append(1, "insp.status", json.dumps({"seq": 1, "pad": "a" * 100}))
    seg = sorted(p for p in os.listdir(sys.argv[1]) if p.startswith("events-"))[-1]
    seg = os.path.join(sys.argv[1], seg)
    size = os.path.getsize(seg)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 60, resource.RLIM_INFINITY))
    out = []
    try:
        j.append(2, "insp.result.pass", json.dumps({"seq": 2, "pad": "b" * 300}))
    except JournalWriteError as exc:
        out.append(["failed", exc.code, j.last_seq, os.path.getsize(seg)])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    j.append(2, "insp.result.pass", json.dumps({"seq": 2, "pad": "c" * 30}))
    out.append(["then", j.last_seq, size])
    print(json.dumps(out))
""")


def test_a_failed_append_leaves_nothing_and_its_seq_stays_free(tmp_path: Path) -> None:
    """A write the OS cuts short (the file size limit: EFBIG after a partial write, as a full disk
    gives ENOSPC) is truncated back: no half line glued onto the next event, seq not used."""
    d = tmp_path / "j"
    proc = subprocess.run([sys.executable, "-c", _FAILING_APPEND, str(d)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    failed, then = json.loads(proc.stdout)
    assert failed[0] == "failed" and failed[2] == 1 and failed[3] == then[2]  # cut back
    assert then[1] == 2
    with Journal(d) as j:
        entries = list(j.entries())
        assert [(e.seq, json.loads(e.json)["pad"][0]) for e in entries] == [(1, "a"), (2, "c")]
        assert j.torn_bytes == 0
    raw = b"".join(p.read_bytes() for p in sorted(d.glob("events-*.log")))
    assert all(decode_line(line) for line in raw.splitlines(keepends=True))


def test_since_caps_a_batch_in_bytes(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as j:
        _fill(j, 50)
        one = len(_ev(1)) + len("insp.result.pass") + 32
        got, more = j.since(0, 500, max_bytes=10 * one + 5)  # seq 10 has one more digit
        assert [e.seq for e in got] == list(range(1, 11)) and more is True
        got, more = j.since(0, 500, max_bytes=1)  # at least one event, whatever its size
        assert [e.seq for e in got] == [1] and more is True
        got, more = j.since(40, 500, max_bytes=10**6)
        assert [e.seq for e in got] == list(range(41, 51)) and more is False


def test_reserve_is_held_released_and_restored(tmp_path: Path) -> None:
    with Journal(tmp_path / "j", reserve_bytes=256 * 1024) as j:
        reserve = tmp_path / "j" / "RESERVE"
        assert j.reserve_held and reserve.stat().st_blocks * 512 >= 256 * 1024
        assert j.release_reserve() == 256 * 1024 and reserve.stat().st_size == 0
        assert not j.reserve_held and j.release_reserve() == 0
        assert j.restore_reserve() and j.reserve_held
        assert j.free_bytes() > 0
