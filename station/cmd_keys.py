"""``station keys generate DIR [--name NAME]``: a CURVE key pair as pyzmq certificate files.

Writes ``DIR/NAME.key`` (public: give it to the other side) and ``DIR/NAME.key_secret``
(secret, mode 0600: stays on this machine).  The station's pair goes to its ``security.curve.
server_secret``; each client's public ``.key`` goes into the ``security.curve.clients`` folder.
See "Authentication (CURVE)" in docs/EVENTS.md.
"""

from __future__ import annotations

import argparse
import json

from station.security import generate_keys


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``keys`` to the CLI."""
    p = sub.add_parser("keys", help="CURVE key pairs for the station and its clients")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ksub.add_parser("generate", help="write DIR/NAME.key and DIR/NAME.key_secret")
    g.add_argument("dir", help="folder for the two files (created if missing)")
    g.add_argument("--name", default="station",
                   help="file name without extension (default station; a client: its name)")
    g.add_argument("--force", action="store_true", help="replace existing files")
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Write the pair; print both paths as one JSON line; ConfigError (78) when it cannot."""
    public, secret = generate_keys(args.dir, args.name, force=args.force)
    print(json.dumps({"public": str(public), "secret": str(secret)}))
    return 0
