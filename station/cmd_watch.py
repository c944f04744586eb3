"""``station watch ENDPOINT``: live operator feed with gap catch-up and heartbeat-loss warnings."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``watch`` to the CLI."""
    p = sub.add_parser("watch", help="live feed of a station's events (one line per part)")
    p.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5556",
                   help="the station's PUB endpoint (default tcp://127.0.0.1:5556)")
    p.add_argument("--catchup", help="catch-up endpoint (default: announced in heartbeats, "
                                     "else the PUB port + 1)")
    p.add_argument("--down-after", type=float, default=3.0,
                   help="seconds without a heartbeat before the station is reported down")
    p.add_argument("--since", type=int, help="first replay the journal from this seq")
    p.add_argument("--count", type=int, help="stop after this many parts")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true",
                   help="print every event as one JSON object per line on stdout (human "
                        "lines go to stderr)")
    p.add_argument("--client-key", help="CURVE: this client's secret certificate file "
                                        "(.key_secret); needs --server-key")
    p.add_argument("--server-key", help="CURVE: the station's public certificate file (.key)")
    color = p.add_mutually_exclusive_group()
    color.add_argument("--color", dest="color", action="store_true", default=None,
                       help="always colour")
    color.add_argument("--no-color", dest="color", action="store_false", help="never colour")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Watch until Ctrl-C / SIGTERM / --count / --duration, then print the summary."""
    from station.client import ClientError, CurveKeys
    from station.watch import Watcher

    keys = None
    if args.client_key or args.server_key:
        if not (args.client_key and args.server_key):
            print("station watch: --client-key and --server-key go together", file=sys.stderr)
            return 2
        try:
            keys = CurveKeys.load(args.client_key, args.server_key)
        except ClientError as exc:
            print(f"station watch: {exc}", file=sys.stderr)
            return 78
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watcher = Watcher(args.endpoint, catchup=args.catchup, down_after=args.down_after,
                      color=args.color, since=args.since, json_lines=args.json, keys=keys)
    watcher.run(duration=args.duration, count=args.count, stop=stop)
    return 0
