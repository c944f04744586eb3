"""A bridge in front of a station that requires CURVE: a real ``station run`` with
``security.curve`` (ZAP: listed client keys only), ``station bridge modbus`` with a listed key
and one with an unlisted key, a pymodbus client as the PLC on each."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import zmq.auth

from pipeline.recipe import Recipe
from station.bench.events import free_ports, write_config
from station.bridges import registers as R

from support.bridge_peers import Plc, Proc, bridge

pytest.importorskip("pymodbus.client", reason="the bridges extra is not installed "
                                              "(tests/run.sh installs it)")


def _keys(root: Path) -> dict[str, Path]:
    """The station's pair, a listed bridge (public key in ``clients/``), an unlisted one."""
    root.mkdir(parents=True)
    out = {}
    for name in ("station", "bridge", "rogue"):
        pub, sec = zmq.auth.create_certificates(str(root), name)
        out[name], out[name + "_public"] = Path(sec), Path(pub)
    (root / "clients").mkdir()
    shutil.copy(out["bridge_public"], root / "clients" / "bridge.key")
    return out


@pytest.mark.slow
def test_modbus_bridge_with_a_listed_key_works_an_unlisted_one_is_never_ready(
        tmp_path: Path, synthetic_recipe: Recipe) -> None:
    keys = _keys(tmp_path / "keys")
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder,
                       state_dir=state, heartbeat_s=0.5)
    data = json.loads(cfg.read_text())
    data["security"] = {"curve": {"server_secret": str(keys["station"]),
                                  "clients": str(tmp_path / "keys" / "clients")}}
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    station = Proc([sys.executable, "-m", "station.cli", "run", "-c", str(cfg)],
                   tmp_path / "station.log").start()
    port, rogue_port = free_ports(2)
    common = ["-c", str(cfg), "--server-key", str(keys["station_public"])]
    good = bridge("modbus", [*common, "--client-key", str(keys["bridge"]), "--deadline", "5",
                             "--listen", f"127.0.0.1:{port}"], tmp_path / "bridge.log", port)
    rogue = bridge("modbus", [*common, "--client-key", str(keys["rogue"]),
                              "--listen", f"127.0.0.1:{rogue_port}"], tmp_path / "rogue.log",
                   rogue_port)
    plcs: list[Plc] = []
    try:
        plc, rogue_plc = Plc(port), Plc(rogue_port)
        plcs += [plc, rogue_plc]
        plc.wait(lambda r: r[R.HR_STATUS] & R.BIT_READY, 60)
        for i in range(3):
            regs = plc.cycle(f"CURVE-{i}")
            # the station's own result came back through CURVE (its seq; any verdict: a loaded
            # machine may make it a stale_trigger error)
            assert regs[R.HR_SEQ] > 0 and not regs[R.HR_STATUS] & R.BIT_REFUSED, regs
        # the unlisted key never completes the handshake: never ready, every part rejected
        assert not rogue_plc.regs()[R.HR_STATUS] & R.BIT_READY
        assert rogue_plc.regs()[R.HR_HEARTBEAT] == 0
        t0 = time.monotonic()
        regs = rogue_plc.cycle("ROGUE-0", timeout=3.0)
        assert regs[R.HR_STATUS] & (R.BIT_PASS | R.BIT_ERROR) == R.BIT_ERROR
        assert time.monotonic() - t0 < 1.0
        # the bridge says why it hears nothing (once): at the refused handshake, at the latest
        # when no heartbeat came within down_after; its log is written by another process
        end = time.monotonic() + 15.0
        while "CURVE keys" not in rogue.text() and time.monotonic() < end:
            time.sleep(0.1)
        assert rogue.text().count("CURVE keys") == 1, rogue.text()[-3000:]
    finally:
        for p in plcs:
            with contextlib.suppress(Exception):
                p.close()
        rogue.stop()
        rc = good.stop()
        station.stop()
    assert rc == 0, good.text()[-3000:]
