"""``station bridge modbus`` against real peers: ``station demo --serve`` on loopback and a
pymodbus client playing the PLC (write part id, raise trigger, wait for result valid, read
verdict and cell codes, ack); plus the register map's encoding on its own."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from station.bench.events import free_ports
from station.bridges import registers as R
from station.bridges.link import LinkSettings, PartResult, StationLink
from station.client import Event, EventSubscriber

from support.bridge_peers import DemoStation, Plc, ScriptedStation, bridge

pytest.importorskip("pymodbus.client", reason="the bridges extra is not installed "
                                              "(tests/run.sh installs it)")


# ------------------------------------------------------------------------------ register map
def test_part_id_registers_round_trip_and_refuse_garbage() -> None:
    regs = R.part_id_to_registers("L1-20261201-000123")
    assert len(regs) == 16 and regs[0] == (ord("L") << 8) | ord("1") and regs[-1] == 0
    assert R.part_id_from_registers(regs) == "L1-20261201-000123"
    assert R.part_id_from_registers(R.part_id_to_registers("X" * 32)) == "X" * 32
    assert R.part_id_from_registers([0] * 16) is None  # empty: the bridge makes one
    assert R.part_id_from_registers(R.part_id_to_registers("  P7 ")) == "P7"
    with pytest.raises(R.PartIdError):
        R.part_id_from_registers([0x4101, 0] + [0] * 14)  # "A\x01"
    with pytest.raises(ValueError):
        R.part_id_to_registers("X" * 33)


def test_cell_codes_on_the_pin_grid_and_on_other_grids() -> None:
    assert R.cell_code({"address": "X:3, Y:C", "column": "3", "row": "C"}, None) == 32
    assert R.cell_code({"address": "X:9, Y:D", "column": "9", "row": "D"}, None) == 93
    assert R.cell_code({"address": "X:1, Y:U", "column": "1", "row": "U"}, None) == 11
    cells = ["X:A, Y:1", "X:B, Y:1", "X:A, Y:2", "X:B, Y:2"]  # row by row, as the grid orders
    assert R.cell_code({"address": "X:A, Y:2", "column": "A", "row": "2"}, cells) == 3
    assert R.cell_code({"address": "X:Q, Y:9", "column": "Q", "row": "9"}, cells) == 0xFFFF


def test_result_registers_are_fail_safe() -> None:
    ev = {"judges": {"metric": {"cells": {f"X:{c}, Y:{r}": 0.0 for r in "UCD"
                                          for c in range(1, 10)}}}}
    defects = [{"address": f"X:{c}, Y:U", "column": str(c), "row": "U"} for c in range(1, 10)]
    ok = R.result_registers(PartResult("P1", True, "pass", "pass", seq=70001))
    assert ok[:4] == [R.BIT_VALID | R.BIT_PASS, 70001 & 0xFFFF, 0, 0]
    bad = R.result_registers(PartResult("P2", False, "defect", "defect", seq=5,
                                        defects=defects, event=ev))
    assert bad[0] == R.BIT_VALID | R.BIT_DEFECT and bad[2] == 9
    assert bad[3:] == [11, 21, 31, 41, 51, 61, 71, 81]  # 8 codes; the count says 9
    late = R.result_registers(PartResult("P3", False, "error", "no result within 0.5 s"))
    assert late[0] == R.BIT_VALID | R.BIT_ERROR
    busy = R.result_registers(PartResult("P4", False, "error", "refused: busy", refused=True))
    assert busy[0] == R.BIT_VALID | R.BIT_ERROR | R.BIT_REFUSED


# ------------------------------------------------------------------------------ the map, live
@pytest.fixture()
def scripted_plc(tmp_path: Path):
    """``ModbusBridge`` serving in a thread in front of a scripted station, and a PLC on it."""
    from station.bridges.modbus import ModbusBridge

    st = ScriptedStation(tmp_path / "journal")
    link = StationLink(LinkSettings(endpoints=st.endpoints, deadline_s=1.0, id_prefix="MB"))
    port = free_ports(1)[0]
    bridge_obj = ModbusBridge(link, "127.0.0.1", port)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        link.start()
        try:
            await bridge_obj.serve(stop)
        finally:
            link.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    plc = Plc(port)
    try:
        plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_READY, 10)
        yield plc, st, bridge_obj
    finally:
        plc.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        st.close()


def test_register_semantics_live(scripted_plc: tuple[Plc, ScriptedStation, Any]) -> None:
    """Ack, generated ids, bad ids, supersession, read-only registers, input register mirror."""
    plc, st, br = scripted_plc
    regs = plc.cycle("defect-1")  # cycle() also checks that the ack clears the result
    assert regs[R.HR_STATUS] == R.BIT_READY | R.BIT_VALID | R.BIT_DEFECT
    assert regs[R.HR_N_DEFECTS] == 1 and regs[R.HR_CELLS] == 32  # X:3, Y:C
    ir = plc.c.read_input_registers(0, count=12)
    assert not ir.isError() and ir.registers[R.HR_SEQ] == regs[R.HR_SEQ]  # mirror of 0-11
    # all-zero part id registers: the bridge makes one (and the scripted station passes it)
    plc.c.write_registers(R.HR_PART_ID, [0] * R.N_PART_ID)
    plc.c.write_coil(R.COIL_TRIGGER, True)
    regs = plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_VALID, 5)
    assert regs[R.HR_STATUS] & R.BIT_PASS
    plc.c.write_coil(R.COIL_ACK, True)
    plc.c.write_coil(R.COIL_TRIGGER, False)
    plc.c.write_coil(R.COIL_ACK, False)
    # non-printable bytes in the part id: refused at once, nothing sent to the station
    before = st.journal.last_seq
    plc.c.write_registers(R.HR_PART_ID, [0x5007] + [0] * (R.N_PART_ID - 1))  # "P\x07"
    plc.c.write_coil(R.COIL_TRIGGER, True)
    regs = plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_VALID, 5)
    assert regs[R.HR_STATUS] & (R.BIT_ERROR | R.BIT_REFUSED) == R.BIT_ERROR | R.BIT_REFUSED
    plc.c.write_coil(R.COIL_TRIGGER, False)
    # a trigger while a part is pending supersedes it: only the newer part's result shows
    plc.c.write_registers(R.HR_PART_ID, R.part_id_to_registers("late-1"))
    plc.c.write_coil(R.COIL_TRIGGER, True)
    plc.c.write_coil(R.COIL_TRIGGER, False)
    time.sleep(0.1)
    assert not plc.regs()[R.HR_STATUS] & R.BIT_VALID  # pending
    plc.c.write_registers(R.HR_PART_ID, R.part_id_to_registers("defect-2"))
    plc.c.write_coil(R.COIL_TRIGGER, True)
    regs = plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_VALID, 5)
    assert regs[R.HR_STATUS] & R.BIT_DEFECT
    time.sleep(1.2)  # late-1's outcome (rejected: after the deadline) comes and is not shown
    assert plc.regs()[1:] == regs[1:]  # (register 0, the heartbeat, counts on)
    assert st.journal.last_seq == before + 2  # late-1 and defect-2 were triggered
    # only the part id registers are writable; coils past 1 do not exist
    assert plc.c.write_register(R.HR_SEQ, 7).isError()
    assert plc.c.write_registers(R.HR_PART_ID + 15, [1, 2]).isError()  # runs past 115
    assert plc.c.write_coil(2, True).isError()
    assert br.results >= 4


# ------------------------------------------------------------------------------ real peers
class Results:
    """The station's own result events, by part id (the ground truth for the PLC's view)."""

    def __init__(self, pub: str) -> None:
        self.by_part: dict[str, dict[str, Any]] = {}
        self.sub = EventSubscriber(pub, topics=("insp.result.",), since=0)
        self.lock = threading.Lock()
        self.sub.start(self._on)

    def _on(self, ev: Event) -> None:
        with self.lock:
            self.by_part.setdefault(ev.data["part_id"], ev.data)

    def get(self, part_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while part_id not in self.by_part:
            assert time.monotonic() < deadline, f"no station event for {part_id}"
            time.sleep(0.02)
        return self.by_part[part_id]


def expected_registers(ev: dict[str, Any]) -> tuple[int, int, int, list[int]]:
    """Verdict bit, seq, defect count and codes the PLC must see for a station result."""
    bit = {"pass": R.BIT_PASS, "defect": R.BIT_DEFECT}.get(ev["verdict"], R.BIT_ERROR)
    codes = [int(d["column"]) * 10 + "UCD".index(d["row"]) + 1 for d in ev["defects"]][:8]
    return bit, ev["seq"] & 0xFFFF, len(ev["defects"]), codes + [0] * (8 - len(codes))


@pytest.mark.slow
def test_plc_cycles_station_kill_and_restart(tmp_path: Path) -> None:
    """20 PLC cycles match the station's events; kill -9 → heartbeat register stops and ready
    drops within 3 s, a trigger meanwhile is rejected at once; restarted → cycles resume."""
    station = DemoStation(tmp_path / "station").start()
    port = free_ports(1)[0]
    br = bridge("modbus", [*station.station_args(), "--listen", f"127.0.0.1:{port}",
                           "--deadline", "5"], tmp_path / "bridge.log")
    truth = Results(station.pub)
    plc = None
    try:
        plc = Plc(port)
        plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_READY, 20)
        hb0 = plc.regs()[R.HR_HEARTBEAT]
        seen: list[str] = []
        for i in range(20):
            pid = f"PLC-{i:03d}"
            regs = plc.cycle(pid)
            bit, seq, n, codes = expected_registers(truth.get(pid))
            status = regs[R.HR_STATUS]
            assert status & (R.BIT_PASS | R.BIT_DEFECT | R.BIT_ERROR) == bit, (pid, status)
            assert not status & R.BIT_REFUSED
            assert (regs[R.HR_SEQ], regs[R.HR_N_DEFECTS], regs[4:12]) == (seq, n, codes), pid
            seen.append(truth.get(pid)["verdict"])
        assert {"pass", "defect"} <= set(seen), seen
        assert plc.regs()[R.HR_HEARTBEAT] > hb0  # counts while heartbeats arrive
        # the same part id again is a new physical part: refused, never the old verdict
        regs = plc.cycle("PLC-000")
        assert regs[R.HR_STATUS] & (R.BIT_ERROR | R.BIT_REFUSED) == R.BIT_ERROR | R.BIT_REFUSED
        # only the part id registers are writable
        assert plc.c.write_register(R.HR_STATUS, 4).isError()

        # kill -9: heartbeat register stops, ready drops within 3 s
        t_kill = time.monotonic()
        station.stop(signal.SIGKILL)
        hb_last, t_hb_change, t_ready_drop = plc.regs()[R.HR_HEARTBEAT], t_kill, None
        while time.monotonic() < t_kill + 5.0:
            regs = plc.regs()
            if regs[R.HR_HEARTBEAT] != hb_last:
                hb_last, t_hb_change = regs[R.HR_HEARTBEAT], time.monotonic()
            if t_ready_drop is None and not regs[R.HR_STATUS] & R.BIT_READY:
                t_ready_drop = time.monotonic()
            time.sleep(0.05)
        assert t_ready_drop is not None and t_ready_drop - t_kill <= 3.0, t_ready_drop
        assert t_hb_change - t_kill <= 2.5  # the counter stopped (no change for the last 2.5 s)
        t0 = time.monotonic()
        regs = plc.cycle("WHILE-DOWN", timeout=2.0)
        assert regs[R.HR_STATUS] & (R.BIT_PASS | R.BIT_ERROR) == R.BIT_ERROR
        assert time.monotonic() - t0 < 1.0  # rejected at once, not after the deadline
        print(f"\nready dropped {t_ready_drop - t_kill:.2f} s after kill -9; heartbeat register "
              f"last changed {t_hb_change - t_kill:.2f} s after")

        # restart on the same ports and state: cycles resume, seq continues
        last_seq = max(ev["seq"] for ev in truth.by_part.values())
        station.start()
        plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_READY, 30)
        for i in range(3):
            pid = f"AFTER-{i}"
            regs = plc.cycle(pid)
            ev = truth.get(pid)
            bit, seq, n, codes = expected_registers(ev)
            assert ev["seq"] > last_seq
            assert regs[R.HR_STATUS] & (R.BIT_PASS | R.BIT_DEFECT | R.BIT_ERROR) == bit
            assert (regs[R.HR_SEQ], regs[R.HR_N_DEFECTS], regs[4:12]) == (seq, n, codes)
    finally:
        if plc is not None:
            plc.close()
        truth.sub.close()
        assert br.stop() == 0, br.text()[-3000:]
        station.stop()
