"""The ``station`` command: one sub-command per module, each module registers its own parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pipeline.base.errors import StationError
from station import __version__

# Each module defines ``register(subparsers)``; its parser sets ``func(args) -> int``.
COMMAND_MODULES = [
    "station.cmd_run",
    "station.cmd_replay",
    "station.cmd_eval",
    "station.cmd_golden",
    "station.cmd_watch",
    "station.cmd_check_config",
    "station.cmd_camera",
    "station.cmd_model",
    "station.cmd_demo",
    "station.cmd_bench",
    "station.cmd_bridge",
    "station.cmd_web",
    "station.cmd_keys",
    "station.cmd_recipe",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command that can be imported."""
    parser = argparse.ArgumentParser(
        prog="station",
        description="Edge inspection station: aligns every part to its golden, judges it with "
                    "the NSOARTC metric (and optionally a 4-bit VLM), publishes pass/defect "
                    "events over ZeroMQ. Start with `station demo`.")
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``station`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StationError as exc:
        print(f"station {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
