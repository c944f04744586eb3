"""ZeroMQ CURVE keys of an event client, loaded from standard pyzmq certificate files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from station.client.request import ClientError


@dataclass(frozen=True, repr=False)
class CurveKeys:
    """The client's key pair and the station's public key (Z85, as pyzmq stores them).

    ``repr`` leaves the secret out, so keys can be logged safely.
    """

    client_public: bytes
    client_secret: bytes
    server_public: bytes

    def __repr__(self) -> str:
        return (f"CurveKeys(client_public={self.client_public.decode()!r}, "
                f"server_public={self.server_public.decode()!r})")

    @classmethod
    def load(cls, client_secret_file: str | Path, server_public_file: str | Path) -> CurveKeys:
        """Keys from ``zmq.auth.create_certificates`` files: the client's ``*.key_secret``
        (holds both of its keys) and the station's public ``*.key``; :class:`ClientError`
        naming the file when one is missing or holds no usable key."""
        client_public, client_secret = _load(client_secret_file)
        if not client_secret:
            raise ClientError(f"{client_secret_file}: no secret key in this file "
                              "(give the client's .key_secret file, not its public .key)")
        server_public, _ = _load(server_public_file)
        return cls(client_public, client_secret, server_public)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the station (before it connects)."""
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise ClientError(f"{p}: no such key file")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (ValueError, OSError) as exc:
        raise ClientError(f"{p}: not a ZeroMQ certificate file ({exc})") from exc
    if not public or len(public) != 40:
        raise ClientError(f"{p}: no valid public-key line")
    return public, secret
