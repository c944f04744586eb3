"""``station run -c station.yaml``: the live station (systemd's ExecStart)."""

from __future__ import annotations

import argparse

from station.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` to the CLI."""
    p = sub.add_parser("run", help="run the inspection station (daemon; systemd Type=notify)")
    p.add_argument("-c", "--config", required=True, help="station YAML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config (ConfigError → exit 78) and serve until SIGTERM (exit 0)."""
    from station.build import serve  # deferred: keeps `station --help` light

    return serve(load_config(args.config, check_paths=True))
