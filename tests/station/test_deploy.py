"""systemd unit, install script, example config, sd_notify and the exit code for bad config."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from station.config import load_config
from station.notify import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "inspection-station.service"
INSTALL = ROOT / "deploy" / "install.sh"
EXAMPLE = ROOT / "deploy" / "station.example.yaml"


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
            if line.startswith(key + "=")]


def test_unit_has_the_supervision_contract() -> None:
    assert _unit_values("Type") == ["notify"]
    assert _unit_values("Restart") == ["on-failure"]
    assert _unit_values("RestartPreventExitStatus") == ["78"]
    assert _unit_values("WatchdogSec") and _unit_values("NotifyAccess") == ["main"]
    exec_start = _unit_values("ExecStart")[0]
    assert exec_start.endswith("station run -c /etc/inspection-station/station.yaml")
    assert "video" in _unit_values("SupplementaryGroups")[0].split()
    allowed = " ".join(_unit_values("DeviceAllow"))
    for dev in ("char-video4linux", "char-nvidia ", "char-nvidia-uvm", "/dev/nvidiactl"):
        assert dev in allowed + " "
    assert _unit_values("DevicePolicy") == ["closed"]
    assert not _unit_values("PrivateDevices")  # would hide /dev/video* and /dev/nvidia*
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert _unit_values(key), key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` with every message treated as fatal (it only warns about
    unknown keys).  ExecStart must exist for verify, so it points at this checkout's script."""
    station = shutil.which("station", path=str(Path(sys.executable).parent)) or "/bin/true"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/inspection-station/venv/bin/station", station))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if UNIT.name in line or str(unit) in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_example_config_follows_the_schema(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "pins"
    recipe.mkdir(parents=True)
    (recipe / "recipe.yaml").write_text("name: pins\ngrid: {}\n")  # read for judges and vlm
    cfg_path = tmp_path / "station.yaml"
    cfg_path.write_text(EXAMPLE.read_text().replace("/etc/inspection-station/recipes/pins",
                                                    str(recipe)))
    cfg = load_config(cfg_path)
    assert cfg.mode == "trigger" and cfg.events.pub == "tcp://127.0.0.1:5556"
    assert cfg.events.trigger == "tcp://127.0.0.1:5555"
    assert cfg.events.catchup == "tcp://127.0.0.1:5557"
    assert cfg.station.state_dir == "/var/lib/inspection-station"
    assert cfg.recording.max_bytes == 5e9 and cfg.policy == "any"


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        mode = stat.S_IMODE(p.stat().st_mode)
        out[str(p.relative_to(root))] = (mode, p.read_bytes() if p.is_file() else None)
    return out


def test_install_script_is_idempotent_and_keeps_the_operators_config(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    run = [str(INSTALL), "--root", str(stage), "--no-venv"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    tree1 = _tree(stage)
    for d in ("etc/inspection-station/recipes", "var/lib/inspection-station/recordings",
              "var/cache/inspection-station", "opt/inspection-station"):
        assert (stage / d).is_dir(), d
    assert tree1["etc/inspection-station"][0] == 0o750
    assert tree1["etc/inspection-station/station.yaml"][0] == 0o640
    unit = stage / "etc/systemd/system/inspection-station.service"
    assert unit.read_text() == UNIT.read_text()

    second = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and _tree(stage) == tree1
    assert "kept" in second.stdout and "== unit" not in second.stdout  # nothing rewritten

    cfg = stage / "etc/inspection-station/station.yaml"
    cfg.write_text(cfg.read_text().replace("line1-st1", "line7-st3"))
    third = subprocess.run([*run, "--prefix", "/opt/other"], capture_output=True, text=True,
                           timeout=60)
    assert third.returncode == 0
    assert "line7-st3" in cfg.read_text()
    assert "ExecStart=/opt/other/venv/bin/station run" in unit.read_text()
    # the PLC bridges' units come along (left disabled), the docs they name beside the venv
    bridges = sorted(p.name for p in (ROOT / "deploy").glob("inspection-station-bridge-*.service"))
    for name in bridges:
        text = (stage / "etc/systemd/system" / name).read_text()
        assert "/opt/other/venv/bin/station bridge" in text and "/opt/inspection" not in text
        assert f"systemctl enable --now {name.removesuffix('.service')}" in third.stdout
    assert (stage / "opt/other/docs/CAMERAS.md").read_text() == (ROOT / "docs/CAMERAS.md"
                                                                 ).read_text()
    assert (stage / "opt/inspection-station/docs/EVENTS.md").is_file()
    bad = subprocess.run([*run, "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def _show_pip(*extras: str) -> str:
    args = [str(INSTALL), "--show-pip"] + (["--extras", ",".join(extras)] if extras else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_gpu_install_drops_the_cpu_torch_pin_and_cpu_installs_keep_it() -> None:
    """The constraints pip gets: the same versions everywhere, torch's ``+cpu`` build (and the
    PyTorch CPU index) only where no GPU is wanted."""
    pinned = {line.split("==")[0]: line.split("==")[1]
              for line in (ROOT / "constraints.txt").read_text().split() if "==" in line}
    assert pinned["torch"].endswith("+cpu")

    gpu = _show_pip("gpu")
    gpu_pins = [line.strip() for line in gpu.splitlines()[2:]]
    assert "torch==" + pinned["torch"].removesuffix("+cpu") in gpu_pins
    assert not any("+cpu" in line for line in gpu_pins)
    assert "download.pytorch.org/whl/cpu" not in gpu and "[gpu]" in gpu.splitlines()[0]
    assert len(gpu_pins) == len(pinned)  # every other pin kept

    vlm = _show_pip("vlm")
    assert f"-c {ROOT / 'constraints.txt'}" in vlm.splitlines()[0]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in vlm.splitlines()[0]
    assert f"torch=={pinned['torch']}" in vlm
    plain = _show_pip()
    assert "download.pytorch.org" not in plain  # no torch in a metric-only install
    cu = subprocess.run([str(INSTALL), "--show-pip", "--extras", "gpu", "--torch-index",
                         "https://download.pytorch.org/whl/cu128"], capture_output=True,
                        text=True, timeout=60)
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in cu.stdout


def test_start_is_refused_until_check_config_passes(tmp_path: Path,
                                                    synthetic_recipe: Any) -> None:
    """``--start`` runs ``station check-config`` on the installed station.yaml first: the
    example names a recipe that does not exist yet, so it is refused (exit 78, the error with
    file:line); once the config points at a real recipe it passes."""
    stage = tmp_path / "root"
    station_bin = shutil.which("station", path=str(Path(sys.executable).parent))
    assert station_bin, "the venv's station script"
    env = {**os.environ, "STATION_BIN": station_bin}
    run = [str(INSTALL), "--root", str(stage), "--no-venv", "--start"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    cfg = stage / "etc/inspection-station/station.yaml"
    assert f"{cfg}:" in refused.stderr and "recipe" in refused.stderr  # check-config's file:line
    assert "not starting" in refused.stderr
    assert "Next steps" in refused.stdout and "camera grab" in refused.stdout

    recipe = tmp_path / "pins"
    shutil.copytree(synthetic_recipe.folder, recipe)
    cfg.write_text(cfg.read_text().replace("/etc/inspection-station/recipes/pins", str(recipe)))
    ok = subprocess.run(run, capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "not starting" not in ok.stderr and ok.stdout.rstrip().endswith("== done")


def test_license_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the inspection-station authors" in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("args", [["model", "tiny", "{tmp}/tiny"],
                                  ["model", "check", "{tmp}"]])
def test_model_commands_without_torch_print_one_line(tmp_path: Path, args: list[str]) -> None:
    """A venv without the vlm extra: ``import torch`` fails (here: blocked in sys.modules, as
    Python does for a missing module); one line on stderr, exit 78, no traceback."""
    (tmp_path / "config.json").write_text("{}")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from station.cli import main\nsys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *[a.format(tmp=tmp_path) for a in args]],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "needs torch" in lines[0] and "pip install torch==2.13.0" in lines[0]


def test_bad_config_exits_78(tmp_path: Path) -> None:
    """systemd's RestartPreventExitStatus=78 relies on it: a config mistake is not restarted."""
    cfg = tmp_path / "station.yaml"
    cfg.write_text("recipe: ./nowhere\nmode: sideways\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "station.cli", "run", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 78, proc.stderr
    assert "station.yaml" in proc.stderr


# ------------------------------------------------------------------------------------ sd_notify
def _listen(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_notify_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    srv = _listen(path)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_interval == 1.0
        assert n.ready("up")
        assert srv.recv(4096) == b"READY=1\nSTATUS=up"
        assert n.status("a\nb") and srv.recv(4096) == b"STATUS=a b"
        assert n.watchdog() and srv.recv(4096) == b"WATCHDOG=1"
        assert not n.watchdog()  # rate-limited to a quarter of the timeout
        assert n.watchdog(force=True) and srv.recv(4096) == b"WATCHDOG=1"
        assert n.stopping() and srv.recv(4096) == b"STOPPING=1"
        n.close()
    finally:
        srv.close()


def test_notify_abstract_socket() -> None:
    name = f"station-notify-test-{os.getpid()}"
    srv = _listen("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready() and srv.recv(4096) == b"READY=1"
        assert n.watchdog_interval is None and not n.watchdog()  # no WATCHDOG_USEC
    finally:
        srv.close()


def test_notify_without_systemd_and_foreign_watchdog_pid() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog(force=True)
    other = Notifier({"NOTIFY_SOCKET": "/nonexistent/sock", "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_usec == 0  # the watchdog is meant for another process
    assert not other.ready()  # unreachable socket: False, no exception


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("STATION_TEST_INSTALL_VENV") != "1",
                    reason="set STATION_TEST_INSTALL_VENV=1 (pip installs the package and its "
                           "dependencies into a fresh venv: network or a pip cache needed)")
def test_install_script_builds_a_working_venv(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    for _ in range(2):  # the second run updates in place
        proc = subprocess.run([str(INSTALL), "--root", str(stage)], capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
    station = stage / "opt/inspection-station/venv/bin/station"
    out = subprocess.run([str(station), "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "station 0.1.0"
    # no vlm extra in this venv: `station model` says so in one line
    tiny = subprocess.run([str(station), "model", "tiny", str(tmp_path / "tiny")],
                          capture_output=True, text=True, timeout=120)
    assert tiny.returncode == 78 and "Traceback" not in tiny.stderr, tiny.stderr
    assert len(tiny.stderr.strip().splitlines()) == 1 and "needs torch" in tiny.stderr
    assert not (ROOT / "build").exists()  # nothing written into the source tree
