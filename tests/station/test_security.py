"""Endpoints only the line can use (issue 8 item 7): loopback by default, CURVE on request.

Real parts: key files written by ``station keys generate`` (pyzmq certificates), a real
``station run`` process with ``security.curve``, real CURVE sockets of the event client library,
raw ZeroMQ sockets for the unlisted and plain clients, ``station watch`` with its key flags, and
the listening sockets of the station process read from the kernel (psutil).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from pipeline.recipe import Recipe
from station.bench.events import StationProcess, write_config
from station.client import CurveKeys, EventSubscriber, TriggerClient
from station.config import load_config

from support.cli import station

ROOT = Path(__file__).resolve().parents[2]
NO_ANSWER_S = 2.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The station's pair, a listed client ``line`` and an unlisted ``rogue``, by the CLI."""
    root = tmp_path_factory.mktemp("keys")
    out: dict[str, Path] = {"root": root}
    for name, folder in (("station", root), ("line", root / "clients"), ("rogue", root / "rogue")):
        r = station("keys", "generate", str(folder), *([] if name == "station" else
                                                       ["--name", name]), timeout=120)
        assert r.returncode == 0, r.stderr
        paths = json.loads(r.stdout)
        assert paths == {"public": str(folder / f"{name}.key"),
                         "secret": str(folder / f"{name}.key_secret")}
        out[name] = folder / f"{name}.key_secret"
        out[name + "_public"] = folder / f"{name}.key"
    # only public keys in the clients folder: the secret of "line" moves to the client's side
    secret = root / "line.key_secret"
    (root / "clients" / "line.key_secret").rename(secret)
    out["line"] = secret
    return out


def test_keys_generate_writes_standard_certificates(keys: dict[str, Path]) -> None:
    public, secret = zmq.auth.load_certificate(keys["station"])
    assert len(public) == 40 and len(secret) == 40
    assert zmq.auth.load_certificate(keys["station_public"]) == (public, None)
    assert stat.S_IMODE(os.stat(keys["station"]).st_mode) == 0o600
    # an existing pair is never overwritten by mistake (every client would be locked out)
    r = station("keys", "generate", str(keys["root"]), timeout=120)
    assert r.returncode == 78 and "not overwritten" in r.stderr
    assert zmq.auth.load_certificate(keys["station"]) == (public, secret)


def _secure_config(tmp_path: Path, recipe: Path, keys: dict[str, Path]) -> Path:
    cfg = write_config(tmp_path / "station.yaml", recipe=recipe, state_dir=tmp_path / "state",
                       heartbeat_s=0.2)
    data = json.loads(cfg.read_text())
    data["security"] = {"curve": {"server_secret": str(keys["station"]),
                                  "clients": str(keys["root"] / "clients")}}
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    return cfg


@contextlib.contextmanager
def secure_station(cfg: Path, state: Path, client: CurveKeys) -> Iterator[dict[str, Any]]:
    """``station run`` with CURVE; yields its endpoints once a listed client sees it ready."""
    state.mkdir(parents=True, exist_ok=True)
    log = open(state.parent / "station.log", "ab")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "-c", str(cfg)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 90
        ep: dict[str, Any] = {}
        while time.monotonic() < deadline and ep.get("pid") != proc.pid:
            assert proc.poll() is None, (state.parent / "station.log").read_text()[-2000:]
            with contextlib.suppress(FileNotFoundError, ValueError):
                ep = json.loads((state / "endpoints.json").read_text())
            time.sleep(0.05)
        assert ep.get("pid") == proc.pid, "the station did not bind in time"
        with TriggerClient(ep["trigger"], keys=client, retries=0) as tc:
            while time.monotonic() < deadline:
                if tc.status(timeout=5.0).get("state") == "ready":
                    break
                time.sleep(0.1)
        yield {**ep, "pid": proc.pid}
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def _dealer(ctx: zmq.Context, endpoint: str, curve: CurveKeys | None) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(s)
    s.connect(endpoint)
    return s


def _sub(ctx: zmq.Context, endpoint: str, curve: CurveKeys | None) -> zmq.Socket:
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(s)
    s.setsockopt(zmq.SUBSCRIBE, b"")  # heartbeats every 0.2 s would reach a listed client
    s.connect(endpoint)
    return s


@pytest.mark.slow
def test_curve_station_answers_listed_clients_only(tmp_path: Path, keys: dict[str, Path],
                                                   synthetic_recipe: Recipe) -> None:
    assert synthetic_recipe.folder is not None
    listed = CurveKeys.load(keys["line"], keys["station_public"])
    rogue = CurveKeys.load(keys["rogue"], keys["station_public"])
    cfg = _secure_config(tmp_path, synthetic_recipe.folder, keys)
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 0 and '"curve": true' in r.stdout, r.stderr
    with secure_station(cfg, tmp_path / "state", listed) as ep:
        ctx = zmq.Context()
        try:
            # unlisted key, and no CURVE at all: no reply on either request socket, no event,
            # all asked at once and watched for NO_ANSWER_S
            probes: list[tuple[str, zmq.Socket]] = []
            for who, curve in (("rogue", rogue), ("plain", None)):
                for which, body in (("trigger", {"cmd": "trigger", "part_id": f"{who}-1"}),
                                    ("trigger", {"cmd": "status"}),
                                    ("catchup", {"cmd": "catchup", "since": 0})):
                    s = _dealer(ctx, ep[which], curve)
                    s.send_multipart([b"", json.dumps(body).encode()])
                    probes.append((f"{who} {which} {body['cmd']}", s))
                probes.append((f"{who} sub", _sub(ctx, ep["pub"], curve)))
            poller = zmq.Poller()
            for _, s in probes:
                poller.register(s, zmq.POLLIN)
            answered: list[str] = []
            deadline = time.monotonic() + NO_ANSWER_S
            while time.monotonic() < deadline:
                ready = dict(poller.poll(max(1, int((deadline - time.monotonic()) * 1000))))
                answered += [name for name, s in probes if s in ready]
                if answered:
                    break
            assert answered == [], answered
            for _, s in probes:
                s.close(0)
            # the station says whom it refused: the rogue's key, as a warning, once
            rogue_key = zmq.auth.load_certificate(keys["rogue_public"])[0].decode()
            log_text = (tmp_path / "station.log").read_text()
            assert log_text.count(f"refused a client: its CURVE key {rogue_key}") == 1, (
                log_text[-3000:])
            # a listed client: events (EventSubscriber), a trigger and its result, catch-up
            with EventSubscriber(ep["pub"], keys=listed, catchup=ep["catchup"],
                                 since=0) as sub, \
                    TriggerClient(ep["trigger"], keys=listed, retries=0) as tc:
                ack = tc.trigger("line-1", timeout=10.0)
                assert ack.ok, ack.reply
                result = None
                deadline = time.monotonic() + 60
                while result is None and time.monotonic() < deadline:
                    for item in sub.poll(0.5):
                        if getattr(item, "is_result", False) and item.data["part_id"] == "line-1":
                            result = item
                # the listed client's part was judged (the verdict is the camera's business)
                assert result is not None and result.data["station"] == "bench-st1"
                # the rogue's trigger above never reached the station
                assert not any(getattr(i, "is_result", False) and
                               i.data["part_id"].startswith(("rogue", "plain"))
                               for i in sub.poll(0.5))
            # station watch with the listed client's keys sees the station
            w = station("watch", ep["pub"], "--catchup", ep["catchup"], "--since", "0",
                        "--count", "1", "--duration", "60", "--json",
                        "--client-key", str(keys["line"]),
                        "--server-key", str(keys["station_public"]), timeout=120)
            assert w.returncode == 0, w.stderr
            parts = [json.loads(x) for x in w.stdout.splitlines() if x.startswith("{")]
            assert any(p["event"].get("part_id") == "line-1" for p in parts), w.stdout[-2000:]
            # what the kernel says the station listens on: loopback only
            listening = [c.laddr for c in psutil.Process(ep["pid"]).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN]
            assert len(listening) == 3 and {a.ip for a in listening} == {"127.0.0.1"}
        finally:
            ctx.destroy(0)


def test_default_endpoints_are_loopback_and_bound_that_way(tmp_path: Path,
                                                           synthetic_recipe: Recipe) -> None:
    """Without ``events:`` the config names 127.0.0.1 only; a real station bound on the
    config's endpoints listens on nothing else (no CURVE: the sockets are plain)."""
    assert synthetic_recipe.folder is not None
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"recipe: {synthetic_recipe.folder}\n")
    ev = load_config(plain).events
    assert {ev.pub, ev.trigger, ev.catchup} == {
        "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5557"}
    cfg = write_config(tmp_path / "station.yaml", recipe=synthetic_recipe.folder,
                       state_dir=tmp_path / "state")
    with StationProcess(cfg, tmp_path / "state") as st:
        listening = [c.laddr for c in psutil.Process(st.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
    assert len(listening) == 3 and {a.ip for a in listening} == {"127.0.0.1"}


def test_security_config_errors_name_the_key(tmp_path: Path, keys: dict[str, Path],
                                             synthetic_recipe: Recipe) -> None:
    assert synthetic_recipe.folder is not None
    cfg = _secure_config(tmp_path, synthetic_recipe.folder, keys)
    data = json.loads(cfg.read_text())
    data["security"]["curve"]["server_secret"] = str(keys["station_public"])  # public, no secret
    cfg.write_text(json.dumps(data) + "\n")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78 and "holds no secret key" in r.stderr, r.stderr
    data["security"]["curve"]["clients"] = str(tmp_path / "nowhere")
    cfg.write_text(json.dumps(data, indent=1) + "\n")
    r = station("check-config", str(cfg), timeout=300)
    assert r.returncode == 78 and "security.curve.clients" in r.stderr and "no such folder" in (
        r.stderr), r.stderr
