"""``station bridge modbus|opcua|mqtt``: PLC and plant bridges, each its own process.

By default a bridge talks to the station on this PC at its default endpoints; ``-c
station.yaml`` takes the endpoints from a station config, ``--pub/--trigger/--catchup`` name them
explicitly (they win over the config).  ``--client-key/--server-key``: CURVE, when the station
requires it.  See docs/BRIDGES.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.base.errors import ConfigError

DEFAULT_LISTEN = {"modbus": "127.0.0.1:5020", "opcua": "127.0.0.1:4840"}
EXTRA_HINT = "pip install 'inspection-station[bridges]' (pymodbus, asyncua, paho-mqtt)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bridge`` (with ``modbus``, ``opcua``, ``mqtt``) to the CLI."""
    p = sub.add_parser("bridge", help="PLC and plant bridges: Modbus TCP, OPC UA, MQTT")
    kinds = p.add_subparsers(dest="bridge", metavar="KIND")
    for kind, help_text in (
            ("modbus", "Modbus TCP server a PLC polls (register map in docs/BRIDGES.md)"),
            ("opcua", "OPC UA server: Ready, Heartbeat, LastResult, Trigger(partId)"),
            ("mqtt", "every event to an MQTT broker, resuming from the journal")):
        k = kinds.add_parser(kind, help=help_text, description=help_text)
        _station_options(k, trigger=kind != "mqtt")
        if kind == "mqtt":
            _mqtt_options(k)
        else:
            k.add_argument("--listen", default=DEFAULT_LISTEN[kind], metavar="HOST:PORT",
                           help=f"where the PLC connects (default {DEFAULT_LISTEN[kind]}; "
                                "0.0.0.0 for every interface)")
            k.add_argument("--deadline", type=float, default=2.0, metavar="S",
                           help="takt budget from trigger to result: no pass within it is a "
                                "reject (default 2.0)")
            k.add_argument("--id-prefix", default="MB" if kind == "modbus" else "UA",
                           help="prefix of generated part ids")
        k.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _station_options(p: argparse.ArgumentParser, *, trigger: bool) -> None:
    p.add_argument("-c", "--config", metavar="YAML",
                   help="take the station's endpoints from this station config")
    p.add_argument("--pub", metavar="ENDPOINT", help="the station's PUB endpoint "
                                                     "(default tcp://127.0.0.1:5556)")
    if trigger:
        p.add_argument("--trigger", metavar="ENDPOINT", help="the station's trigger endpoint "
                                                             "(default tcp://127.0.0.1:5555)")
    p.add_argument("--catchup", metavar="ENDPOINT",
                   help="the station's catch-up endpoint (default: announced in heartbeats)")
    p.add_argument("--down-after", type=float, default=3.0, metavar="S",
                   help="seconds without a heartbeat before the station is down (default 3)")
    p.add_argument("--client-key", help="CURVE: this bridge's secret certificate file "
                                        "(.key_secret); needs --server-key")
    p.add_argument("--server-key", help="CURVE: the station's public certificate file (.key)")


def _mqtt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                   help="the MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--prefix", default="inspection",
                   help="topic prefix (default inspection): <prefix>/result/<verdict>, "
                        "<prefix>/status, …")
    p.add_argument("--state", default="./bridge-mqtt-state", metavar="DIR",
                   help="where the last delivered seq is kept (default ./bridge-mqtt-state)")
    p.add_argument("--since", type=int, metavar="SEQ",
                   help="first run: publish the journal after this seq (default: from now on)")
    p.add_argument("--client-id", help="MQTT client id (default inspection-bridge-<prefix>)")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    p.add_argument("--tls-ca", metavar="FILE", help="TLS to the broker, trusting this CA file")
    p.add_argument("--keepalive", type=int, default=10, metavar="S",
                   help="MQTT keep-alive in seconds (default 10)")


def station_endpoints(args: argparse.Namespace):  # -> Endpoints
    """The station's endpoints from defaults, ``-c`` and the explicit options."""
    from station.bridges.link import Endpoints
    from station.client import connectable

    ep = Endpoints()
    if args.config:
        from station.config import load_config

        ev = load_config(args.config).events
        ep = Endpoints(pub=connectable(ev.pub, "tcp://127.0.0.1:0"),
                       trigger=connectable(ev.trigger, "tcp://127.0.0.1:0"),
                       catchup=connectable(ev.catchup, "tcp://127.0.0.1:0"))
    return Endpoints(pub=args.pub or ep.pub,
                     trigger=getattr(args, "trigger", None) or ep.trigger,
                     catchup=args.catchup or (ep.catchup if args.config else None))


def curve_keys(args: argparse.Namespace):  # -> CurveKeys | None
    """CURVE keys from ``--client-key``/``--server-key`` (ConfigError, exit 78, when wrong)."""
    from station.client import ClientError, CurveKeys

    if not (args.client_key or args.server_key):
        return None
    if not (args.client_key and args.server_key):
        raise ConfigError("--client-key and --server-key go together")
    try:
        return CurveKeys.load(args.client_key, args.server_key)
    except ClientError as exc:
        raise ConfigError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    """Run the chosen bridge until SIGTERM/SIGINT."""
    try:
        if args.bridge == "modbus":
            import pymodbus  # noqa: F401
        elif args.bridge == "opcua":
            import asyncua  # noqa: F401
        else:
            import paho.mqtt  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"station bridge {args.bridge} needs the bridges extra: "
                          f"{EXTRA_HINT} ({exc})") from exc
    endpoints, keys = station_endpoints(args), curve_keys(args)
    if args.bridge == "mqtt":
        from station.bridges.mqtt import MqttSettings, run_mqtt

        password = None
        if args.password_file:
            try:
                password = Path(args.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"--password-file: {exc}") from exc
        settings = MqttSettings.from_args(args, endpoints, keys, password)
        return run_mqtt(settings)
    from station.bridges.link import LinkSettings, StationLink
    from station.bridges.modbus import parse_listen

    if args.deadline <= 0:
        raise ConfigError("--deadline must be > 0 seconds")
    try:
        host, port = parse_listen(args.listen, 502 if args.bridge == "modbus" else 4840)
    except ValueError as exc:
        raise ConfigError(f"--listen {exc}") from exc
    link = StationLink(LinkSettings(endpoints=endpoints, deadline_s=args.deadline,
                                    down_after=args.down_after, keys=keys,
                                    id_prefix=args.id_prefix))
    if args.bridge == "modbus":
        from station.bridges.modbus import run_modbus

        return run_modbus(link, host, port)
    from station.bridges.opcua import run_opcua

    return run_opcua(link, host, port)
