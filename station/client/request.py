"""One JSON request, one JSON reply, with a timeout and retries (the "lazy pirate" pattern).

Shared by the trigger and the catch-up clients.  A request that gets no reply in time is sent
again on a *fresh* DEALER socket: the old socket is closed, so a late reply to the first attempt
goes to a peer that no longer exists and can never be taken for the reply to a later request.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from station.client.keys import CurveKeys


class ClientError(Exception):
    """A client-side problem with the station's protocol (bad reply, bad key file…)."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply within the timeout, after every retry."""


def derive_catchup(pub_endpoint: str) -> str | None:
    """Default catch-up endpoint: the PUB endpoint's port + 1 (5556 → 5557); None for ipc://."""
    m = re.match(r"^(tcp://.+):(\d+)$", pub_endpoint)
    if not m:
        return None
    return f"{m.group(1)}:{int(m.group(2)) + 1}"


def connectable(bound: str, seen_at: str) -> str:
    """A station's bound endpoint (``tcp://0.0.0.0:5557``) as reachable from here: a wildcard
    host is replaced by the host of ``seen_at`` (the endpoint this client already uses)."""
    m = re.match(r"^tcp://(\*|0\.0\.0\.0|\[::\]|::):(\d+)$", bound)
    host = re.match(r"^tcp://(.+):\d+$", seen_at)
    if m and host:
        return f"tcp://{host.group(1)}:{m.group(2)}"
    return bound


class Requester:
    """JSON requests to one ROUTER endpoint of the station (trigger or catch-up).

    Not thread-safe: use one per thread.  ``timeout`` is per attempt, in seconds.
    """

    def __init__(self, endpoint: str, *, timeout: float = 2.0, keys: CurveKeys | None = None,
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.keys = keys
        self.ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.attempts = 0  # attempts of the last request

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            # queue nothing for a peer that is not there: an unanswered request is retried on a
            # fresh socket instead of being delivered twice when the station comes back
            s.setsockopt(zmq.IMMEDIATE, 1)
            if self.keys is not None:
                self.keys.apply(s)
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def request(self, body: dict[str, Any], *, timeout: float | None = None,
                retries: int = 0) -> dict[str, Any]:
        """Send ``body`` and return the reply object; up to ``retries`` more attempts with the
        same body after a timeout; :class:`RequestTimeout` when none is answered."""
        per_try = self.timeout if timeout is None else float(timeout)
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.attempts = 0
        for _ in range(max(0, retries) + 1):
            self.attempts += 1
            sock = self._socket()
            deadline = time.monotonic() + max(0.0, per_try)
            try:
                # with IMMEDIATE the send waits for a connection (at most the attempt's time)
                sock.setsockopt(zmq.SNDTIMEO, max(1, int(per_try * 1000)))
                sock.send_multipart([b"", raw])
            except zmq.Again:
                self._drop()
                continue
            if sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
                frames = sock.recv_multipart()
                try:
                    reply = json.loads(frames[-1])
                except ValueError as exc:
                    raise ClientError(f"{self.endpoint}: reply is not JSON") from exc
                if not isinstance(reply, dict):
                    raise ClientError(f"{self.endpoint}: reply is not a JSON object")
                return reply
            self._drop()
        raise RequestTimeout(f"no reply from {self.endpoint} within {per_try:g} s "
                             f"({self.attempts} attempt{'s' if self.attempts > 1 else ''})")

    def close(self) -> None:
        """Close the socket (the next request opens a new one)."""
        self._drop()
