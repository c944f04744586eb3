"""The bridges as services: their systemd units, and the command line's clear refusals
(exit 78 for a wrong option, key file or station config) before anything listens."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from station.cli import main

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("modbus", "opcua", "mqtt")


def unit_path(kind: str) -> Path:
    return ROOT / "deploy" / f"inspection-station-bridge-{kind}.service"


def values(kind: str, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in unit_path(kind).read_text().splitlines()
            if line.startswith(key + "=")]


@pytest.mark.parametrize("kind", KINDS)
def test_unit_runs_the_bridge_after_the_station_hardened(kind: str) -> None:
    exec_start = values(kind, "ExecStart")[0]
    assert exec_start.startswith("/opt/inspection-station/venv/bin/station bridge " + kind)
    assert "-c /etc/inspection-station/station.yaml $BRIDGE_ARGS" in exec_start
    assert "inspection-station.service" in values(kind, "After")[0].split()
    assert "inspection-station.service" in values(kind, "Wants")[0].split()
    assert values(kind, "User") == ["inspection"] and values(kind, "Restart") == ["on-failure"]
    assert values(kind, "RestartPreventExitStatus") == ["78"]
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "SystemCallFilter", "RestrictAddressFamilies"):
        assert values(kind, key), key
    caps = values(kind, "AmbientCapabilities")
    assert caps == (["CAP_NET_BIND_SERVICE"] if kind == "modbus" else [""])  # port 502


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_unit_passes_systemd_analyze_verify(kind: str, tmp_path: Path) -> None:
    exe = shutil.which("station", path=str(Path(sys.executable).parent)) or "/bin/true"
    unit = tmp_path / unit_path(kind).name
    unit.write_text(unit_path(kind).read_text().replace(
        "/opt/inspection-station/venv/bin/station", exe))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if unit.name in line and "inspection-station.service" not in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_bad_options_exit_78_with_one_clear_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's own entry point, in this process (nothing is started before the refusal)."""

    def run(*argv: str) -> tuple[int, str]:
        rc = main(["bridge", *argv])
        return rc, capsys.readouterr().err

    rc, err = run("modbus", "--listen", "127.0.0.1:70000")
    assert rc == 78 and "port must be 1..65535" in err, err
    rc, err = run("opcua", "--client-key", str(tmp_path / "nope.key_secret"),
                  "--server-key", str(tmp_path / "station.key"))
    assert rc == 78 and "nope.key_secret: no such key file" in err, err
    pub, _ = zmq.auth.create_certificates(str(tmp_path), "station")
    rc, err = run("mqtt", "--client-key", pub, "--server-key", pub)
    assert rc == 78 and "no secret key" in err, err
    rc, err = run("modbus", "--client-key", pub)
    assert rc == 78 and "go together" in err, err
    rc, err = run("mqtt", "--prefix", "plant/#")
    assert rc == 78 and "--prefix" in err, err
    rc, err = run("modbus", "--deadline", "0")
    assert rc == 78 and "--deadline" in err, err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, err = run("mqtt", "--state", str(blocker / "state"))
    assert rc == 78 and "--state" in err and "cannot create" in err, err
    state = tmp_path / "state"
    state.mkdir()
    (state / "position.json").write_text('{"seq": 12')  # torn by hand: not guessed around
    rc, err = run("mqtt", "--state", str(state))
    assert rc == 78 and "unreadable position file" in err and "--since" in err, err
    rc, err = run("modbus", "-c", str(tmp_path / "missing.yaml"))
    assert rc == 78 and "missing.yaml" in err and "Traceback" not in err, err
