"""``station camera``: commissioning a camera.

``station camera list`` prints the GenICam cameras Aravis finds (GigE Vision, USB3 Vision) and the
OpenCV devices (``/dev/video*``), with the ``SOURCE`` to give ``grab`` or the station config.

``station camera grab SOURCE -n N -o DIR`` writes N frames of any source as PNG files into DIR
(``frame_0001.png`` …), ready for ``station golden build DIR``.  ``SOURCE`` is
``genicam://<device id>``, a device index or ``/dev/videoN``, a stream URL, a video, an image
folder or pattern, or ``synthetic``; the camera is opened through the same registry as the
station's ``camera:`` section, so what ``grab`` sees is what the station will see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2

from camera.registry import SourceOptions, open_source, source_type
from pipeline.base.errors import ConfigError, SourceError, StationError

GENICAM_SCHEME = "genicam://"
_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``camera list`` and ``camera grab`` to the CLI."""
    p = sub.add_parser("camera", help="list cameras, grab frames for a recipe (commissioning)")
    csub = p.add_subparsers(dest="camera_command", metavar="ACTION", required=True)

    ls = csub.add_parser("list", help="GenICam cameras (Aravis) and OpenCV devices (/dev/video*)")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.add_argument("--probe", action="store_true",
                    help="open each /dev/video* device with OpenCV and report its frame size")
    ls.add_argument("--simulated", action="store_true",
                    help="also list Aravis's built-in simulated camera (Fake_1)")
    ls.set_defaults(func=run_list)

    g = csub.add_parser("grab", help="write N frames of a source as PNG files (for golden build)")
    g.add_argument("source", help="genicam://ID, device index or /dev/videoN, stream URL, video, "
                                  "image folder or pattern, or 'synthetic'")
    g.add_argument("-n", type=int, default=10, help="number of frames (default 10)")
    g.add_argument("-o", "--out", required=True, help="folder to write (created)")
    g.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the camera and for each frame (default 10)")
    g.add_argument("--interval", type=float, default=0.0,
                   help="seconds between frames (default 0: every new frame)")
    g.add_argument("--trigger", choices=("free_run", "software", "hardware"),
                   help="GenICam trigger mode (default free_run)")
    g.add_argument("--exposure-us", type=float, help="GenICam exposure time in µs")
    g.add_argument("--gain-db", type=float, help="GenICam gain in dB")
    g.add_argument("--pixel-format", help="GenICam pixel format (Mono8, Mono12, BayerRG8, …)")
    g.set_defaults(func=run_grab)


# ------------------------------------------------------------------------------------ list
def opencv_devices(probe: bool = False) -> list[dict[str, Any]]:
    """``/dev/video*`` devices with their V4L2 names (``probe``: opened, frame size read)."""
    out = []
    for dev in sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
        entry: dict[str, Any] = {"source": str(dev)}
        name = Path("/sys/class/video4linux") / dev.name / "name"
        if name.exists():
            entry["name"] = name.read_text(errors="replace").strip()
        if probe:
            cap = cv2.VideoCapture(str(dev), cv2.CAP_V4L2)
            try:
                entry["opens"] = bool(cap.isOpened())
                if cap.isOpened():
                    ok, img = cap.read()
                    entry["frame"] = f"{img.shape[1]}x{img.shape[0]}" if ok else None
            finally:
                cap.release()
        out.append(entry)
    return out


def genicam_devices(simulated: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """GenICam cameras as dicts, and why none could be listed (Aravis missing) or None."""
    try:
        from camera.genicam import list_devices

        found = list_devices(include_simulated=simulated)
    except SourceError as exc:
        return [], str(exc)
    return [{"source": GENICAM_SCHEME + d.id, **d.__dict__} for d in found], None


def run_list(args: argparse.Namespace) -> int:
    """Print every camera found; exit 0 even when there is none."""
    genicam, why = genicam_devices(args.simulated)
    opencv = opencv_devices(args.probe)
    if args.json:
        print(json.dumps({"genicam": genicam, "genicam_error": why, "opencv": opencv}))
        return 0
    print("GenICam (Aravis):")
    if why:
        print(f"  unavailable: {why}")
    elif not genicam:
        print("  none found")
    for d in genicam:
        print(f"  {d['source']:40s} {d['vendor']} {d['model']} serial {d['serial']} "
              f"({d['protocol']} {d['address']})")
    print("OpenCV devices:")
    if not opencv:
        print("  none found")
    for d in opencv:
        extra = f" {d['frame']}" if d.get("frame") else (" (cannot open)" if
                                                           d.get("opens") is False else "")
        print(f"  {d['source']:40s} {d.get('name', '')}{extra}")
    return 0


# ------------------------------------------------------------------------------------ grab
def source_options(source: str, args: argparse.Namespace | None = None
                   ) -> tuple[str, SourceOptions]:
    """``SOURCE`` of ``grab`` → ``(camera type, typed options)`` of the registry."""
    text = source.strip()
    timeouts: dict[str, Any] = {}
    if args is not None:
        timeouts = {"open_timeout_s": args.timeout, "read_timeout_s": args.timeout}
    if text.startswith(GENICAM_SCHEME):
        kind = "genicam"
        opts: dict[str, Any] = {"device_id": text[len(GENICAM_SCHEME):]}
        if args is not None:
            for name in ("trigger", "exposure_us", "gain_db", "pixel_format"):
                if getattr(args, name, None) is not None:
                    opts[name] = getattr(args, name)
    elif text.lower() == "synthetic":
        kind, opts = "synthetic", {}
    elif text.isdigit() or text.startswith("/dev/") or (
            "://" in text and text.split("://", 1)[0].lower() in _STREAM_SCHEMES):
        kind, opts = "opencv", {"source": int(text) if text.isdigit() else text}
    else:
        kind, opts = "files", {"source": text}
    options_cls = source_type(kind).options
    try:
        options = options_cls(**opts)
        options = replace(options, **timeouts)
        options.validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"camera grab {source}: {exc}") from None
    return kind, options


def grab(source: str, n: int, out: Path, args: argparse.Namespace | None = None,
         *, timeout: float = 10.0, interval: float = 0.0) -> list[Path]:
    """Write ``n`` frames of ``source`` into ``out`` as PNG files; the paths written.

    StationError when the camera delivers fewer frames (the ones written stay)."""
    kind, options = source_options(source, args)
    cam = open_source(kind, options, base_dir=Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cam.start()
    try:
        deadline = time.monotonic() + timeout
        while not cam.is_up and time.monotonic() < deadline:
            time.sleep(0.05)
        if not cam.is_up:
            raise StationError(f"{source}: no frame within {timeout:g} s: {cam.reason}")
        while len(written) < n:
            frame = cam.read_latest(timeout, after_ts=time.time())
            if not frame.ok:
                raise StationError(f"{source}: {len(written)} of {n} frames written to {out}: "
                                   f"{frame.error}")
            path = out / f"frame_{len(written) + 1:04d}.png"
            if not cv2.imwrite(str(path), frame.image):
                raise StationError(f"cannot write {path}")
            written.append(path)
            if interval > 0:
                time.sleep(interval)
    finally:
        cam.close()
    return written


def run_grab(args: argparse.Namespace) -> int:
    """``station camera grab``: frames to PNG files, one line per file, a summary on stderr."""
    if args.n < 1:
        raise ConfigError("-n must be >= 1")
    t0 = time.monotonic()
    paths = grab(args.source, args.n, Path(args.out), args, timeout=args.timeout,
                 interval=args.interval)
    for p in paths:
        print(p)
    print(f"{len(paths)} frames from {args.source} in {time.monotonic() - t0:.1f} s; next: "
          f"station golden build {args.out} -o RECIPE --grid grid.yaml", file=sys.stderr)
    return 0
