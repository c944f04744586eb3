"""``station bridge modbus``: a Modbus TCP server (pymodbus) a PLC polls, in front of a station.

The register map is in :mod:`station.bridges.registers` and docs/BRIDGES.md.  The PLC writes a
part id into holding registers 100–115, raises coil 0 (trigger), waits for status bit 1 (result
valid), reads the verdict bits and cell codes, and raises coil 1 (ack).  Result valid is only
ever set for the part of the latest trigger (a trigger while a part is pending supersedes it:
the earlier part's result is dropped, the PLC has moved on).  Pass is set only for a ``pass`` of
that part id within the deadline (:class:`~station.bridges.link.StationLink`).

Registers are filled when a request reads them, so heartbeat and ready are as fresh as the
PLC's poll.  All register work runs in the asyncio loop; triggers wait in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from station.bridges import registers as R
from station.bridges.link import PartResult, StationLink, now_iso
from station.shutdown import stop_on_signals

log = logging.getLogger(__name__)

BIT_FUNCTIONS = (1, 2, 5, 15)  # coils and discrete inputs


class ModbusBridge:
    """The register model and its Modbus TCP server for one :class:`StationLink`."""

    def __init__(self, link: StationLink, host: str, port: int) -> None:
        self.link = link
        self.host, self.port = host, port
        self.hr = [0] * R.N_REGISTERS  # the PLC's view; 0 and bit 0 of 1 filled at read time
        self.coils = [False] * R.N_COILS
        self.result_bits = 0  # status bits 1..5 of the current result
        self.generation = 0  # bumped by every trigger: only the newest part's result is shown
        self.pending: str | None = None
        self.results = 0
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="modbus-part")
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: ModbusTcpServer | None = None

    # ------------------------------------------------------------------------------ server
    def device(self) -> SimDevice:
        """The pymodbus device: coils 0–15, holding registers 0–115, input registers 0–11
        (mirror of holding registers 0–11); every access goes through :meth:`_action`."""
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=0,  # answer every unit id
            simdata=(bits, [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                     [SimData(0, count=R.N_REGISTERS, values=0, datatype=DataType.REGISTERS)],
                     [SimData(0, count=R.HR_CELLS + R.N_CELL_CODES, values=0,
                              datatype=DataType.REGISTERS)]),
            action=self._action)

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set."""
        self.server = ModbusTcpServer(self.device(), address=(self.host, self.port))
        await self.server.serve_forever(background=True)
        log.info("Modbus TCP bridge listening on %s:%d (station %s)", self.host, self.port,
                 self.link.settings.endpoints.pub)
        try:
            await stop.wait()
        finally:
            await self.server.shutdown()
            for t in list(self._tasks):
                t.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------ registers
    def status_word(self) -> int:
        """Holding register 1: ready from the link, the rest from the current result."""
        return self.result_bits | (R.BIT_READY if self.link.ready else 0)

    def snapshot(self) -> list[int]:
        """All holding registers as the PLC reads them now."""
        regs = list(self.hr)
        regs[R.HR_HEARTBEAT] = self.link.heartbeat_count & 0xFFFF
        regs[R.HR_STATUS] = self.status_word()
        return regs

    async def _action(self, fc: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        if values is None:  # a read (pymodbus also reads back after a write)
            if fc not in BIT_FUNCTIONS:
                snap = self.snapshot()
                n = min(len(snap), len(registers) - 1) - start  # the block ends in a guard cell
                registers[0:n] = snap[start:start + n]
            return None
        count = len(values)  # (pymodbus passes the number of 16-bit cells for coils)
        if fc in BIT_FUNCTIONS:
            if address + count > R.N_COILS:
                return ExcCodes.ILLEGAL_ADDRESS
            for i, v in enumerate(values):
                self._set_coil(address + i, bool(v))
            return None
        first, last = R.HR_PART_ID, R.HR_PART_ID + R.N_PART_ID
        if fc not in (6, 16) or not first <= address <= last - count:
            return ExcCodes.ILLEGAL_ADDRESS  # only the part id registers are writable
        self.hr[address:address + count] = [int(v) & 0xFFFF for v in values]
        return None

    def _set_coil(self, coil: int, on: bool) -> None:
        rising = on and not self.coils[coil]
        self.coils[coil] = on
        if not rising:
            return
        if coil == R.COIL_TRIGGER:
            self._trigger()
        elif coil == R.COIL_ACK:
            self._clear_result()

    def _clear_result(self) -> None:
        self.result_bits = 0
        self.hr[R.HR_N_DEFECTS:R.HR_CELLS + R.N_CELL_CODES] = [0] * (1 + R.N_CELL_CODES)

    def _trigger(self) -> None:
        self.generation += 1
        gen = self.generation
        self._clear_result()
        try:
            pid = R.part_id_from_registers(self.hr[R.HR_PART_ID:R.HR_PART_ID + R.N_PART_ID])
        except R.PartIdError as exc:
            self._show(PartResult("?", False, "error", f"refused: {exc}", refused=True,
                                  ts=now_iso()), gen)
            return
        self.pending = pid
        task = asyncio.get_running_loop().create_task(self._inspect(pid, gen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _inspect(self, pid: str | None, gen: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, self.link.inspect, pid)
        except Exception as exc:  # never leave the PLC without an answer
            log.exception("part %s: bridge failure", pid)
            result = PartResult(pid or "?", False, "error", f"bridge error: {exc}",
                                ts=now_iso())
        self._show(result, gen)

    def _show(self, result: PartResult, gen: int) -> None:
        if gen != self.generation:
            log.warning("part %s: %s after a newer trigger: not shown", result.part_id,
                        result.why)
            return
        regs = R.result_registers(result)
        self.result_bits = regs[0] & ~R.BIT_READY
        self.hr[R.HR_SEQ:R.HR_CELLS + R.N_CELL_CODES] = regs[1:]
        self.pending = None
        self.results += 1


def parse_listen(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``[v6]:PORT`` or ``:PORT`` → (host, port); ValueError if bad."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be 1..65535")
    return host or "0.0.0.0", int(port)


def run_modbus(link: StationLink, host: str, port: int) -> int:
    """Run the bridge until SIGTERM/SIGINT."""

    async def main() -> None:
        stop = stop_on_signals()
        bridge = ModbusBridge(link, host, port)
        link.start()
        try:
            await bridge.serve(stop)
        finally:
            link.close()

    try:
        asyncio.run(main())
    except (OSError, RuntimeError) as exc:  # pymodbus: "Could not start listen"
        log.error("cannot serve Modbus TCP on %s:%d: %s", host, port, exc)
        print(f"station bridge modbus: cannot listen on {host}:{port} ({exc})", file=sys.stderr)
        return 1
    return 0
