"""Fault injection: clients that ask for catch-up and never read the replies cannot grow the
station's memory.  A real station process with a journal of 3000 result-sized events (written by
the station's own journal and publisher), real DEALER clients on loopback, the resident set size
of the station process read from /proc."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import zmq

from pipeline.recipe import Recipe
from station.bench.events import StationClient, StationProcess, write_config
from station.demo.line import write_part_frames
from station.events import EventPublisher
from station.journal import Journal

from support.faults import rss_bytes

MB = 1024 * 1024


def _journal_of_results(state: Path, n: int) -> None:
    """``n`` result events as the station journals them (about 2 KB each: 27 cells)."""
    cells = {f"X:{c}, Y:{r}": 1.0 + i / 100 for i, (c, r) in
             enumerate((c, r) for c in "123456789" for r in "UCD")}
    with Journal(state / "journal", fsync=False) as journal:
        pub = EventPublisher(journal, station="bench-st1", boot="earlier-boot")
        for i in range(n):
            pub.publish_result({
                "part_id": f"old-{i:06d}", "verdict": "pass", "reason": None, "defects": [],
                "judges": {"metric": {"verdict": "pass", "reason": None, "max_score": 1.2,
                                      "align_score": 0.99, "cells": cells}},
                "timings_ms": {"align": 9.1, "nsoartc": 4.2, "cells": 0.4, "overlay": 1.1,
                               "total": 15.0, "queue": 0.1, "grab": 30.0},
                "recipe": "0123456789ab", "model": None,
                "trigger_ts": "2026-12-01T20:00:00.000Z", "frame_ts": "2026-12-01T20:00:00.030Z"})


@pytest.mark.slow
def test_clients_that_never_read_catch_up_replies_cost_at_most_64_mb(
        tmp_path: Path, synthetic_recipe: Recipe) -> None:
    assert synthetic_recipe.folder is not None
    state = tmp_path / "state"
    _journal_of_results(state, 3000)
    frames = write_part_frames(tmp_path / "frames", 4)
    cfg = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder,
                       state_dir=state, camera=frames, fps=10, loop=True)
    ctx = zmq.Context()
    hogs: list[zmq.Socket] = []
    try:
        with StationProcess(cfg, state) as st, StationClient(st.endpoints) as c:
            c.wait_live()
            assert len(c.catchup(0)) >= 3000  # a client that reads gets everything
            time.sleep(1.0)
            base = rss_bytes(st.pid)
            request = json.dumps({"since": 0}).encode()
            for _ in range(6):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, 0)
                s.setsockopt(zmq.RCVBUF, 4096)  # and the kernel buffers little for it
                s.connect(st.endpoints["catchup"])
                hogs.append(s)
                for _ in range(60):  # each asks for the 500 oldest events (~1 MB unbounded)
                    s.send_multipart([b"", request])
            peak = base
            t0 = time.monotonic()
            while time.monotonic() - t0 < 8:
                peak = max(peak, rss_bytes(st.pid))
                time.sleep(0.1)
            t = time.monotonic()
            status = c.status(timeout=5)
            answer_s = time.monotonic() - t
            assert status["state"] == "ready"
            caught = c.catchup(2990)  # the station still serves a client that reads
            assert [ev["seq"] for _, ev in caught][:10] == list(range(2991, 3001))
    finally:
        for s in hogs:
            s.close(0)
        ctx.term()
    grown = peak - base
    print(f"\nRSS {base / MB:.0f} MB -> peak {peak / MB:.0f} MB (+{grown / MB:.1f} MB) with 6 "
          f"clients x 60 unread catch-up replies; status answered in {answer_s * 1000:.0f} ms")
    assert grown <= 64 * MB
