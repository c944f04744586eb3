"""Real peers for the bridge tests: ``station demo --serve`` on free loopback ports, a
``station bridge …`` process, Debian's mosquitto broker on loopback, and a Modbus TCP client
playing the PLC."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from station.bench.events import free_ports
from station.bridges import registers as R
from station.bridges.link import Endpoints
from station.client import TriggerClient
from station.events import EventPublisher, catchup_reply
from station.journal import Journal
from station.servers import RequestServer

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Proc:
    """A child process with its output in a log file; killed by :meth:`stop` / on exit."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv, self.log = argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, env=_env(), cwd=str(ROOT))
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the child and wait for it (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class DemoStation(Proc):
    """``station demo --serve`` (trigger mode, journal in ``folder/state``, 320×240 frames) on
    fixed free ports, so a restarted station is found where it was."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pub, trig, catchup = free_ports(3)
        self.pub = f"tcp://127.0.0.1:{pub}"
        self.trigger = f"tcp://127.0.0.1:{trig}"
        self.catchup = f"tcp://127.0.0.1:{catchup}"
        super().__init__([sys.executable, "-m", "station.cli", "demo", "--serve", "--train", "8",
                          "--size", "320x240",  # half the work of the default 640x480
                          "--state", str(folder / "state"),
                          "--pub", self.pub, "--trigger", self.trigger,
                          "--catchup", self.catchup], folder / "station.log")

    def start(self, timeout: float = 90.0) -> DemoStation:
        """Start and wait until the station answers ``ready``."""
        super().start()
        deadline = time.monotonic() + timeout
        with TriggerClient(self.trigger, timeout=1.0, retries=0) as tc:
            while time.monotonic() < deadline:
                assert self.running, self.text()[-3000:]
                try:
                    if tc.status().get("state") == "ready":
                        return self
                except Exception:
                    pass
                time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"demo station not ready in {timeout} s: {self.text()[-3000:]}")

    def station_args(self) -> list[str]:
        return ["--pub", self.pub, "--trigger", self.trigger, "--catchup", self.catchup]


def bridge(kind: str, args: list[str], log: Path, port: int | None = None) -> Proc:
    """``station bridge KIND ARGS…`` as a child process (started; with ``port``: once it
    accepts connections there)."""
    p = Proc([sys.executable, "-m", "station.cli", "bridge", kind, *args], log).start()
    if port is not None:
        wait_listening(port, 30.0, p)
    return p


def wait_listening(port: int, timeout: float, proc: Proc) -> None:
    """Wait until ``127.0.0.1:port`` accepts a TCP connection (``proc`` must keep running)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        assert proc.running, proc.text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}: {proc.text()}"
            time.sleep(0.05)


class Mosquitto(Proc):
    """Debian's mosquitto on 127.0.0.1, a free port, persistence in ``folder`` (a stop with
    SIGTERM saves what it holds for persistent sessions, as a plant broker does)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_ports(1)[0]
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence true\npersistence_location {folder}/\n")
        super().__init__([exe, "-c", str(conf)], folder / "mosquitto.log")

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start and wait until the port accepts connections."""
        super().start()
        wait_listening(self.port, timeout, self)
        return self


class Plc:
    """The PLC's side of the handshake, over a real Modbus TCP connection."""

    def __init__(self, port: int) -> None:
        from pymodbus.client import ModbusTcpClient

        self.c = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        deadline = time.monotonic() + 20
        while not self.c.connect():
            assert time.monotonic() < deadline, "bridge does not listen"
            time.sleep(0.1)

    def regs(self) -> list[int]:
        r = self.c.read_holding_registers(0, count=12)
        assert not r.isError(), r
        return list(r.registers)

    def wait(self, pred: Any, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            regs = self.regs()
            if pred(regs):
                return regs
            assert time.monotonic() < deadline, regs
            time.sleep(0.02)

    def cycle(self, part_id: str, timeout: float = 15.0) -> list[int]:
        """One part: id, trigger, result valid, read, ack; returns HR 0–11 at result valid."""
        assert not self.c.write_registers(R.HR_PART_ID, R.part_id_to_registers(part_id)).isError()
        assert not self.c.write_coil(R.COIL_TRIGGER, True).isError()
        regs = self.wait(lambda r: r[R.HR_STATUS] & R.BIT_VALID, timeout)
        assert not self.c.write_coil(R.COIL_ACK, True).isError()
        after = self.regs()
        assert after[R.HR_STATUS] & ~R.BIT_READY == 0 and after[3:12] == [0] * 9  # ack clears
        self.c.write_coil(R.COIL_TRIGGER, False)
        self.c.write_coil(R.COIL_ACK, False)
        return regs

    def close(self) -> None:
        self.c.close()


class ScriptedStation:
    """A station made of the station's own event parts (journal, EventPublisher,
    RequestServer; a CURVE server given ``secret``/``public``) whose verdict comes from the part
    id: ``defect-…``/``error-…`` after 0.05 s, ``late-…`` a pass after 0.6 s, anything else a
    pass after 0.05 s; ``busy-…`` is refused, ``dup-…`` answered ``duplicate``.  Heartbeats
    every 0.2 s until :attr:`silent` is set."""

    def __init__(self, folder: Path, secret: bytes | None = None,
                 public: bytes | None = None) -> None:
        self.ctx = zmq.Context()
        self.pub_sock = self.ctx.socket(zmq.PUB)
        trigger, catchup = self.ctx.socket(zmq.ROUTER), self.ctx.socket(zmq.ROUTER)
        eps = []
        for s in (self.pub_sock, trigger, catchup):
            if secret is not None and public is not None:  # a CURVE server
                s.curve_server = True
                s.curve_secretkey, s.curve_publickey = secret, public
            s.setsockopt(zmq.LINGER, 0)
            s.bind("tcp://127.0.0.1:0")
            eps.append(s.getsockopt(zmq.LAST_ENDPOINT).decode())
        self.endpoints = Endpoints(*eps)
        self.journal = Journal(folder)
        self.publisher = EventPublisher(self.journal, station="scripted", boot="b1",
                                        send=self.pub_sock.send_multipart)
        self.silent = threading.Event()
        self.due: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self._beat_at = 0.0
        self.server = RequestServer({trigger: self._trigger, catchup: self._catchup},
                                    tick=self._tick, tick_s=0.05)
        self.server.start()

    def _trigger(self, req: dict[str, Any]) -> dict[str, Any]:
        pid = str(req.get("part_id"))
        kind = pid.split("-", 1)[0]
        if kind == "busy":
            return {"ok": False, "error": "busy"}
        if kind == "dup":
            return {"ok": False, "error": "duplicate", "seq": 1}
        verdict = kind if kind in ("pass", "defect", "error") else "pass"
        delay = 0.6 if kind == "late" else 0.05
        with self.lock:
            self.due.append((time.monotonic() + delay, pid, verdict))
        return {"ok": True, "part_id": pid, "queued": 1}

    def _catchup(self, req: dict[str, Any]) -> bytes:
        entries, more = self.journal.since(int(req["since"]), int(req.get("limit", 500)))
        return catchup_reply(entries, seq=self.journal.last_seq, more=more,
                             oldest=self.journal.oldest_seq)

    def _tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            ready = [d for d in self.due if d[0] <= now]
            self.due = [d for d in self.due if d[0] > now]
        for _, pid, verdict in ready:
            defects = ([{"address": "X:3, Y:C", "column": "3", "row": "C", "score": 9.0,
                         "mode": None, "judge": "metric"}] if verdict == "defect" else [])
            self.publisher.publish_result({"part_id": pid, "verdict": verdict,
                                           "reason": "alignment_failed" if verdict == "error"
                                           else None, "defects": defects})
        if not self.silent.is_set() and now >= self._beat_at:
            self._beat_at = now + 0.2
            self.publisher.publish_heartbeat({"state": "ready", "interval_s": 0.2})

    def close(self) -> None:
        self.server.stop()
        self.pub_sock.close(0)
        self.journal.close()
        self.ctx.term()
