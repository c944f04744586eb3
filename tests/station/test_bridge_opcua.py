"""``station bridge opcua`` against real peers: ``station demo --serve`` on loopback and an
asyncua client that calls ``Trigger`` and follows ``LastResult`` through a subscription."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from station.bench.events import free_ports
from station.client import Event, EventSubscriber

from support.bridge_peers import DemoStation, bridge

asyncua = pytest.importorskip("asyncua", reason="the bridges extra is not installed "
                                                "(tests/run.sh installs it)")
NS = "urn:inspection-station:bridge"


class Changes:
    """Data-change notifications of a subscription, as (node name, value)."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {}
        self.names: dict[Any, str] = {}
        self.event = asyncio.Event()

    def status_change_notification(self, status: Any) -> None:
        pass  # the subscription's own state; nothing to check here

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.setdefault(self.names[node.nodeid], []).append(val)
        self.event.set()

    async def wait_for(self, name: str, value: Any, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while value not in self.values.get(name, []):
            assert time.monotonic() < end, (name, value, self.values.get(name))
            self.event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.event.wait(), 0.2)


async def plc(url: str, parts: list[str]) -> tuple[list[dict[str, Any]], Changes, list[Any]]:
    """Trigger each part, wait for its LastResult through the subscription, read it."""
    from asyncua import Client, ua

    async with Client(url, timeout=10) as c:
        idx = await c.get_namespace_index(NS)
        st = await c.nodes.objects.get_child(f"{idx}:InspectionStation")
        lr = await st.get_child(f"{idx}:LastResult")
        fields = ("PartId", "Verdict", "Accepted", "Addresses", "Seq", "Ts", "Count")
        nodes = {n: await lr.get_child(f"{idx}:{n}") for n in fields}
        ready = await st.get_child(f"{idx}:Ready")
        heartbeat = await st.get_child(f"{idx}:Heartbeat")
        changes = Changes()
        for n, node in [*nodes.items(), ("Ready", ready), ("Heartbeat", heartbeat)]:
            changes.names[node.nodeid] = n
        sub = await c.create_subscription(20, changes)
        await sub.subscribe_data_change([*nodes.values(), ready, heartbeat])
        await changes.wait_for("Ready", True, 20)
        count0 = await nodes["Count"].read_value()
        got, returned = [], []
        for i, pid in enumerate(parts):
            out = await st.call_method(f"{idx}:Trigger", ua.Variant(pid, ua.VariantType.String))
            returned.append(out)
            await changes.wait_for("Count", count0 + i + 1)  # LastResult written, Count last
            got.append({n: await node.read_value() for n, node in nodes.items()})
        await changes.wait_for("Heartbeat", max(changes.values["Heartbeat"]) + 1, 3)
        # an empty part id: the bridge makes one
        made = [v.Value for v in await st.call_method(
            f"{idx}:Trigger", ua.Variant("", ua.VariantType.String))]
        assert made[0].startswith("UA-") and made[1] in ("pass", "defect", "error"), made
        await sub.delete()
    return got, changes, returned


@pytest.mark.slow
def test_opcua_client_gets_the_stations_results_through_trigger_and_lastresult(
        tmp_path: Path) -> None:
    station = DemoStation(tmp_path / "station").start()
    port = free_ports(1)[0]
    br = bridge("opcua", [*station.station_args(), "--listen", f"127.0.0.1:{port}",
                          "--deadline", "5"], tmp_path / "bridge.log", port)
    truth: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def on_result(ev: Event) -> None:
        with lock:
            truth.setdefault(ev.data["part_id"], ev.data)

    sub = EventSubscriber(station.pub, topics=("insp.result.",), since=0)
    sub.start(on_result)
    parts = [f"UA-{i:03d}" for i in range(20)]
    try:
        got, changes, returned = asyncio.run(plc(f"opc.tcp://127.0.0.1:{port}/inspection-station/",
                                                 parts))
        deadline = time.monotonic() + 10
        while not all(p in truth for p in parts):
            assert time.monotonic() < deadline, sorted(truth)
            time.sleep(0.05)
    finally:
        sub.close()
        rc = br.stop()
        station.stop()
    assert rc == 0, br.text()[-3000:]
    assert [g["PartId"] for g in got] == parts
    for g, out in zip(got, returned, strict=True):
        ev = truth[g["PartId"]]
        assert g["Verdict"] == ev["verdict"] and g["Accepted"] == (ev["verdict"] == "pass")
        assert g["Seq"] == ev["seq"]
        assert g["Addresses"] == [d["address"] for d in ev["defects"]]
        assert g["Ts"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == ev["ts"]
        assert [v.Value for v in out] == [g["PartId"], g["Verdict"], g["Seq"]]
    assert {"pass", "defect"} <= {g["Verdict"] for g in got}
    # the subscription saw every result (Count 1..20 after the start value) and heartbeats
    counts = changes.values["Count"]
    assert counts[-20:] == list(range(counts[-20], counts[-20] + 20))
    assert len(set(changes.values["Heartbeat"])) >= 2
