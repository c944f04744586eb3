"""ZeroMQ CURVE on the station's three sockets: who may trigger, read results and catch up.

With ``security: {curve: {server_secret: FILE, clients: DIR}}`` in the station config, the PUB,
trigger and catch-up sockets are CURVE servers with the station's key pair (``FILE``: a pyzmq
``*.key_secret`` certificate, as ``station keys generate`` writes it) and a ZAP handler
(:class:`zmq.auth.thread.ThreadAuthenticator`) admits only clients whose public ``*.key``
certificate lies in ``DIR``.  A client with another key, or without CURVE, never completes the
handshake: it gets no reply and no event.  The list of clients is read at start-up (restart the
station after adding or removing a key).

Without the section nothing changes: the sockets are plain, and the default endpoints listen on
127.0.0.1 only (another interface must be named in ``events:``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.base.errors import ConfigError

if TYPE_CHECKING:
    from station.config import StationConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class CurveServer:
    """The station's CURVE key pair and the folder of authorised client keys."""

    public: bytes
    secret: bytes
    clients_dir: Path
    clients: int  # how many client keys the folder held when loaded

    def __repr__(self) -> str:  # the secret never goes into a log
        return (f"CurveServer(public={self.public.decode()!r}, "
                f"clients_dir={str(self.clients_dir)!r}, clients={self.clients})")

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server with the station's keys (before it binds)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


def load_curve(cfg: StationConfig) -> CurveServer | None:
    """The CURVE settings of ``cfg`` (None without ``security.curve``); ConfigError naming the
    config's key and the file when the secret certificate or the clients folder is unusable."""
    curve = cfg.security.curve
    if curve is None:
        return None
    where = cfg.path or None
    secret_file = cfg.resolve(curve.server_secret)
    clients_dir = cfg.resolve(curve.clients)
    if not secret_file.is_file():
        raise ConfigError(f"security.curve.server_secret: {secret_file}: no such key file "
                          "(station keys generate DIR)", where)
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"security.curve.server_secret: {secret_file}: not a ZeroMQ "
                          f"certificate ({exc})", where) from None
    if not secret or len(secret) != 40 or not public or len(public) != 40:
        raise ConfigError(f"security.curve.server_secret: {secret_file} holds no secret key "
                          "(give the station's .key_secret file, not its public .key)", where)
    if not clients_dir.is_dir():
        raise ConfigError(f"security.curve.clients: {clients_dir}: no such folder (it holds the "
                          "authorised clients' public *.key files)", where)
    try:
        n = len(zmq.auth.load_certificates(clients_dir))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"security.curve.clients: {clients_dir}: a key file is not a ZeroMQ "
                          f"certificate ({exc})", where) from None
    if n == 0:
        log.warning("security.curve.clients: %s holds no *.key file: no client can connect",
                    clients_dir)
    return CurveServer(public=public, secret=secret, clients_dir=clients_dir, clients=n)


class _ZapLog:
    """The ZAP handler's logger: its ``DENIED`` lines (a CURVE key not in the clients folder)
    become warnings, one per key per ``every_s`` (a refused client reconnects many times a
    second); the rest stays at its level."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._log = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        if args and args[0] == "DENIED" and "CURVE" in msg:
            key = str(args[-1])
            now = time.monotonic()
            with self._lock:
                if now - self._last.get(key, -self.every_s) < self.every_s:
                    return
                self._last[key] = now
            self._log.warning("refused a client: its CURVE key %s is not in the clients folder "
                              "(next refusal of this key logged in %.0f s at the earliest)",
                              key.removeprefix("b'").removesuffix("'"), self.every_s)
            return
        self._log.debug(msg, *args, **kw)

    def __getattr__(self, name: str) -> Any:  # info, warning, error, …: as they are
        return getattr(self._log, name)


class StationAuth:
    """The ZAP handler of one ZeroMQ context: admits the listed client keys, refuses the rest
    (each refused key logged as a warning, at most once a minute)."""

    def __init__(self, ctx: zmq.Context, curve: CurveServer) -> None:
        self.curve = curve
        self._auth = ThreadAuthenticator(
            ctx, log=_ZapLog(logging.getLogger("station.security.zap")))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(curve.clients_dir))
        log.info("CURVE on: %d authorised client key(s) in %s", curve.clients, curve.clients_dir)

    def stop(self) -> None:
        """Stop the handler thread (before the context is destroyed)."""
        self._auth.stop()


def start_auth(ctx: zmq.Context, cfg: StationConfig) -> StationAuth | None:
    """Start the ZAP handler on ``ctx`` when ``cfg`` sets ``security.curve`` (call before the
    sockets bind); None otherwise."""
    curve = load_curve(cfg)
    return StationAuth(ctx, curve) if curve is not None else None


def generate_keys(folder: str | Path, name: str = "station", *,
                  force: bool = False) -> tuple[Path, Path]:
    """Write ``folder/NAME.key`` (public) and ``folder/NAME.key_secret`` (mode 0600) with
    :func:`zmq.auth.create_certificates`; returns both paths.  Refuses to overwrite existing
    files unless ``force`` (a station's key replaced by mistake locks every client out)."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r}: a plain file name, e.g. station or line-plc")
    folder = Path(folder)
    public = folder / f"{name}.key"
    secret = folder / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{', '.join(existing)} exist(s): not overwritten (--force replaces)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            pub_path, sec_path = zmq.auth.create_certificates(folder, name)
        finally:
            os.umask(old)
        os.chmod(pub_path, 0o644)
        os.chmod(sec_path, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write keys in {folder}: {exc}") from None
    return Path(pub_path), Path(sec_path)
