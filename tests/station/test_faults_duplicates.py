"""Fault injection: one part, one verdict.  A real station process (LiveCamera playing parts of the
synthetic line, the real Inspector), two real clients triggering the same part ids (a bridge's
retry, a second client), a restart in between."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from station.bench.events import StationClient, StationProcess, write_config
from station.demo.line import write_part_frames

from support.faults import journal_lines


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_part_frames(tmp_path_factory.mktemp("frames"), 8)


@pytest.mark.slow
def test_20_part_ids_triggered_twice_get_exactly_one_result_each(
        tmp_path: Path, recipe: Path, frames: str) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=state, camera=frames,
                       fps=30, loop=True, trigger_queue=32)
    ids = [f"dup-{i:02d}" for i in range(20)]
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as bridge, \
            StationClient(st.endpoints, subscribe=False) as other:
        bridge.wait_live()
        firsts = {}
        early = {}
        for i, pid in enumerate(ids):
            firsts[pid] = bridge.trigger(pid)
            if i % 2 == 0:  # the repeat arrives while the part is queued or in hand
                early[pid] = other.trigger(pid)
        results = bridge.results(20, 90)
        late = {pid: other.trigger(pid) for pid in ids[1::2]}  # after the result: a retry
        assert bridge.results(1, 2.0) == []  # no second verdict follows
        by_id = {r["part_id"]: r for r in results}
        assert all(a["ok"] for a in firsts.values())
        assert sorted(r["part_id"] for r in results) == ids  # exactly one result per part id
        for ack in early.values():
            assert ack["ok"] is False and ack["error"] == "duplicate", ack
        for pid, ack in late.items():
            assert ack == {"ok": False, "error": "duplicate", "part_id": pid,
                           "seq": by_id[pid]["seq"]}
        # a request naming a key twice is refused: which part_id would count is a guess
        bridge.send("trigger", [b'{"cmd": "trigger", "part_id": "x-1", "part_id": "x-2"}'])
        reply = bridge.reply("trigger")
        assert reply["ok"] is False and "duplicate key" in reply["error"]
        st.signal(signal.SIGTERM)
        assert st.wait(30) == 0

    # the index is rebuilt from the journal: a restarted station still knows every part
    with StationProcess(cfg, state) as st, StationClient(st.endpoints) as bridge:
        bridge.wait_live()
        again = {pid: bridge.trigger(pid) for pid in ids[:5]}
        for pid, ack in again.items():
            assert ack == {"ok": False, "error": "duplicate", "part_id": pid,
                           "seq": by_id[pid]["seq"]}
        assert bridge.trigger("dup-new")["ok"]
        assert [r["part_id"] for r in bridge.results(1, 30)] == ["dup-new"]
        assert bridge.results(1, 1.0) == []
    entries, bad = journal_lines(state)
    assert not bad
    judged = [ev["part_id"] for _, t, ev in entries if t.startswith("insp.result.")]
    assert sorted(judged) == sorted([*ids, "dup-new"])
