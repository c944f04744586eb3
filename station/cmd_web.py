"""``station web``: the operator page and ``/metrics`` as a process of its own.

The same server the station runs in its process when ``web.listen`` is configured
(:mod:`station.web.server`), following a station over its event endpoints::

    station web --station tcp://10.0.0.5:5556 --recordings /var/lib/inspection-station/recordings \\
        --listen 0.0.0.0:8080
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pipeline.base.errors import ConfigError
from station.config import endpoint_problem, listen_address
from station.shutdown import stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``web`` to the CLI."""
    p = sub.add_parser("web", help="serve the live operator page and /metrics for a station")
    p.add_argument("--station", required=True, metavar="PUB",
                   help="the station's PUB endpoint, e.g. tcp://127.0.0.1:5556")
    p.add_argument("--catchup", metavar="ENDPOINT",
                   help="the catch-up endpoint (default: announced by the station, else PUB "
                        "port + 1)")
    p.add_argument("--recordings", metavar="DIR",
                   help="the station's recording folder (images of the parts); without it "
                        "the page shows verdicts and figures only")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where the page listens (default 127.0.0.1:8080)")
    p.add_argument("--history", type=int, default=500,
                   help="results fetched from the station's journal at start (default 500)")
    p.add_argument("--shifts", default="06:00,14:00,22:00",
                   help="local shift start times, comma-separated (default 06:00,14:00,22:00)")
    p.add_argument("--client-key", help="CURVE: this page's secret certificate file "
                                        "(.key_secret); needs --server-key")
    p.add_argument("--server-key", help="CURVE: the station's public certificate file (.key)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    from station.web.server import WebOptions, WebServer

    for name in ("station", "catchup"):
        ep = getattr(args, name)
        if ep and (problem := endpoint_problem(ep)):
            raise ConfigError(f"--{name}: {problem}")
    try:
        listen_address(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    rec = Path(args.recordings) if args.recordings else None
    if rec is not None and not rec.is_dir():
        raise ConfigError(f"--recordings: {rec} is not a folder")
    shifts = [s.strip() for s in args.shifts.split(",") if s.strip()]
    if not 0 <= args.history <= 100_000:
        raise ConfigError("--history must be in [0, 100000]")
    from station.config import WebSection

    try:
        WebSection(listen=args.listen, history=args.history, shifts=shifts).validate()
    except ValueError as exc:
        raise ConfigError(f"--shifts: {exc}") from None
    keys = None
    if bool(args.client_key) != bool(args.server_key):
        raise ConfigError("--client-key and --server-key go together")
    if args.client_key:
        from station.client import ClientError, CurveKeys

        try:
            keys = CurveKeys.load(args.client_key, args.server_key)
        except ClientError as exc:
            raise ConfigError(f"CURVE keys: {exc}") from None
    server = WebServer(WebOptions(pub=args.station, catchup=args.catchup, listen=args.listen,
                                  recordings=rec, history=args.history, shifts=shifts,
                                  keys=keys))

    async def main() -> None:
        stop = stop_on_signals()
        task = asyncio.create_task(server.serve(stop))
        while server.url is None and not task.done():
            await asyncio.sleep(0.05)
        if server.url is not None:
            print(f"operator page on {server.url} (metrics: {server.url}metrics), following "
                  f"{args.station}", file=sys.stderr, flush=True)
        await task

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"station web: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0
