"""``station bridge opcua``: an OPC UA server (asyncua) exposing the station to a PLC or SCADA.

Address space (namespace ``urn:inspection-station:bridge``), under Objects/InspectionStation:

* ``Ready`` (Boolean), ``Heartbeat`` (UInt32, +1 a second while the station's heartbeats
  arrive), ``State`` (String, the station's state, empty while it is down);
* ``LastResult`` {``PartId``, ``Verdict`` (``pass`` only for a pass in time, else ``defect`` or
  ``error``), ``Accepted``, ``Reason``, ``Addresses`` (String[]), ``Seq`` (Int64, -1 without a
  station result), ``Ts`` (DateTime), ``Count`` (UInt32, written last: subscribe to it)};
* ``Trigger(partId: String) → (PartId, Verdict, Seq)``: inspects one part (an empty id makes
  one) and returns once its fate is known (at most the deadline); LastResult follows.

Values change in the server's asyncio loop; a client subscription sees every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from asyncua import Server, ua
from asyncua.common.methods import uamethod
from asyncua.common.node import Node

from station.bridges.link import PartResult, StationLink
from station.shutdown import stop_on_signals

log = logging.getLogger(__name__)

NAMESPACE = "urn:inspection-station:bridge"
STATUS_PERIOD_S = 0.1


def _ts(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)


class OpcUaBridge:
    """The OPC UA address space of one :class:`StationLink`."""

    def __init__(self, link: StationLink, host: str, port: int) -> None:
        self.link = link
        self.url = f"opc.tcp://{host}:{port}/inspection-station/"
        self.server = Server()
        self.nodes: dict[str, Node] = {}
        self.count = 0
        self._write_lock = asyncio.Lock()

    async def setup(self) -> None:
        """Create the server and its nodes."""
        await self.server.init()
        self.server.set_endpoint(self.url)
        self.server.set_server_name("Inspection station bridge")
        self.server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await self.server.register_namespace(NAMESPACE)
        st = await self.server.nodes.objects.add_object(idx, "InspectionStation")
        lr = await st.add_object(idx, "LastResult")
        V = ua.VariantType
        for parent, name, value, vtype in (
                (st, "Ready", False, V.Boolean), (st, "Heartbeat", 0, V.UInt32),
                (st, "State", "", V.String),
                (lr, "PartId", "", V.String), (lr, "Verdict", "", V.String),
                (lr, "Accepted", False, V.Boolean), (lr, "Reason", "", V.String),
                (lr, "Addresses", [], V.String), (lr, "Seq", -1, V.Int64),
                (lr, "Ts", datetime.now(timezone.utc), V.DateTime),
                (lr, "Count", 0, V.UInt32)):
            self.nodes[name] = await parent.add_variable(idx, name, ua.Variant(value, vtype))
        arg = ua.Argument()
        arg.Name, arg.DataType, arg.ValueRank = "partId", ua.NodeId(ua.ObjectIds.String), -1
        outs = []
        for name, oid in (("PartId", ua.ObjectIds.String), ("Verdict", ua.ObjectIds.String),
                          ("Seq", ua.ObjectIds.Int64)):
            a = ua.Argument()
            a.Name, a.DataType, a.ValueRank = name, ua.NodeId(oid), -1
            outs.append(a)
        await st.add_method(idx, "Trigger", uamethod(self._trigger), [arg], outs)

    async def _write(self, name: str, value: Any, vtype: ua.VariantType) -> None:
        await self.nodes[name].write_value(ua.Variant(value, vtype))

    async def _trigger(self, parent: ua.NodeId, part_id: str | None) -> list[ua.Variant]:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, self.link.inspect, part_id or None)
        except Exception as exc:  # the caller gets a reject, never an exception
            log.exception("part %s: bridge failure", part_id)
            result = PartResult(part_id or "?", False, "error", f"bridge error: {exc}")
        await self.show(result)
        return [ua.Variant(result.part_id, ua.VariantType.String),
                ua.Variant(result.verdict, ua.VariantType.String),
                ua.Variant(-1 if result.seq is None else result.seq, ua.VariantType.Int64)]

    async def show(self, r: PartResult) -> None:
        """Write one part's outcome to LastResult (Count last)."""
        V = ua.VariantType
        async with self._write_lock:
            self.count += 1
            await self._write("PartId", r.part_id, V.String)
            await self._write("Verdict", r.verdict, V.String)
            await self._write("Accepted", r.accepted, V.Boolean)
            await self._write("Reason", r.why, V.String)
            await self._write("Addresses", r.addresses, V.String)
            await self._write("Seq", -1 if r.seq is None else r.seq, V.Int64)
            await self._write("Ts", _ts(r.ts), V.DateTime)
            await self._write("Count", self.count, V.UInt32)

    async def follow_link(self, stop: asyncio.Event) -> None:
        """Keep Ready, Heartbeat and State up to date (written only when they change)."""
        last: tuple[Any, ...] = ()
        V = ua.VariantType
        while not stop.is_set():
            now = (self.link.ready, self.link.heartbeat_count & 0xFFFFFFFF,
                   (self.link.state or "") if self.link.up else "")
            if now != last:
                await self._write("Ready", now[0], V.Boolean)
                await self._write("Heartbeat", now[1], V.UInt32)
                await self._write("State", now[2], V.String)
                last = now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_PERIOD_S)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        await self.setup()
        async with self.server:
            log.info("OPC UA bridge listening on %s (station %s)", self.url,
                     self.link.settings.endpoints.pub)
            await self.follow_link(stop)


def run_opcua(link: StationLink, host: str, port: int) -> int:
    """Run the bridge until SIGTERM/SIGINT."""

    async def main() -> None:
        stop = stop_on_signals()
        link.start()
        try:
            await OpcUaBridge(link, host, port).serve(stop)
        finally:
            link.close()

    logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO is one line per request
    try:
        asyncio.run(main())
    except OSError as exc:  # the port is taken or the address is not this host's
        print(f"station bridge opcua: cannot listen on {host}:{port} ({exc})", file=sys.stderr)
        return 1
    return 0
