"""ZeroMQ sockets of the station: the PUB socket and the request ``ROUTER`` loop.

One thread (:class:`RequestServer`) owns both ROUTER sockets (trigger, catch-up), answers every
request — valid or not — with one JSON frame, and runs the heartbeat timer.  Nothing a client
sends can raise out of the loop: every request is parsed defensively and every handler failure
becomes ``{"ok": false, "error": …}``.

Accepted envelopes: a ``REQ`` client (``[identity, "", body]`` at the ROUTER) or a ``DEALER``
client (``[identity, body]``); ``body`` is exactly one frame of UTF-8 JSON, an object, at most
:data:`MAX_REQUEST_BYTES`.  Frames above :data:`MAX_MESSAGE_BYTES` are refused by ZeroMQ itself
(``ZMQ_MAXMSGSIZE``: the peer is disconnected without an answer) so a hostile client cannot make
the station allocate unbounded memory.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from pipeline.base.errors import ConfigError, StationError
from station.events import dumps
from station.security import CurveServer

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_DRAIN = 64  # requests taken from one socket per poll round, so neither socket starves
# Per-peer queue bounds (messages): ROUTER replies (each at most MAX_CATCHUP_REPLY_BYTES of
# station.requests), incoming requests, and events for a subscriber that lags (it fills the gap
# from the catch-up socket).
ROUTER_SNDHWM = 1000   # trigger/status replies: a few hundred bytes each
CATCHUP_SNDHWM = 8     # catch-up replies: up to MAX_CATCHUP_REPLY_BYTES each
ROUTER_RCVHWM = 100
PUB_HWM = 10_000
# Replies that did not fit a peer's pipe wait in the station, bounded in bytes per peer and in
# all; past that they are dropped (a client that never reads gets nothing more, and costs at
# most this much).
PEER_BACKLOG_BYTES = 1024 * 1024
TOTAL_BACKLOG_BYTES = 16 * 1024 * 1024


class RequestError(Exception):
    """A request that is understood to be wrong; its message goes back as ``error``."""


Handler = Callable[[dict[str, Any]], "Mapping[str, Any] | bytes"]


@dataclass
class ParsedRequest:
    """A request split into the routing envelope (echoed in the reply) and its body."""

    envelope: list[bytes]
    body: dict[str, Any] | None
    error: str | None


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (which value counts would be a guess)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def parse_request(frames: list[bytes]) -> ParsedRequest:
    """Split a ROUTER message; ``error`` is set (and ``body`` None) for anything malformed."""
    if not frames:
        return ParsedRequest([], None, "empty message")
    if len(frames) >= 2 and frames[1] == b"":
        envelope, body_frames = frames[:2], frames[2:]
    else:
        envelope, body_frames = frames[:1], frames[1:]
    if len(body_frames) != 1:
        return ParsedRequest(envelope, None,
                             f"expected one JSON frame, got {len(body_frames)} frames")
    raw = body_frames[0]
    if len(raw) > MAX_REQUEST_BYTES:
        return ParsedRequest(envelope, None,
                             f"request too large ({len(raw)} bytes > {MAX_REQUEST_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ParsedRequest(envelope, None, "request is not UTF-8")
    try:
        body = json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        return ParsedRequest(envelope, None, f"request has a duplicate key {str(exc)[:40]!r}")
    except (ValueError, RecursionError):
        return ParsedRequest(envelope, None, "request is not JSON")
    if not isinstance(body, dict):
        return ParsedRequest(envelope, None, "request must be a JSON object")
    return ParsedRequest(envelope, body, None)


def error_reply(message: str) -> bytes:
    """``{"ok": false, "error": message}`` as one frame."""
    return json.dumps({"ok": False, "error": message}).encode()


def encode_reply(reply: Mapping[str, Any] | bytes) -> bytes:
    """A handler's reply as one JSON frame (bytes pass through: pre-encoded catch-up batches)."""
    if isinstance(reply, bytes):
        return reply
    return dumps(reply).encode()


def bind(sock: zmq.Socket, endpoint: str, what: str) -> str:
    """Bind and return the actual endpoint (port 0 / ``*`` resolved); ConfigError on failure."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            # Not a config error: usually the previous instance is still going away; let
            # systemd's Restart= try again.
            raise StationError(f"{what} endpoint {endpoint}: address already in use") from exc
        raise ConfigError(f"{what} endpoint {endpoint!r}: {exc}") from exc
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def make_pub(ctx: zmq.Context, endpoint: str, *,
             curve: CurveServer | None = None) -> tuple[zmq.Socket, str]:
    """The PUB socket, bound; returns it and its actual endpoint.  ``curve``: a CURVE server
    (the context's ZAP handler admits the listed clients; :mod:`station.security`)."""
    sock = ctx.socket(zmq.PUB)
    if curve is not None:
        curve.apply(sock)
    sock.setsockopt(zmq.SNDHWM, PUB_HWM)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    return sock, bind(sock, endpoint, "events.pub")


def make_router(ctx: zmq.Context, endpoint: str, what: str, *,
                sndhwm: int = ROUTER_SNDHWM,
                curve: CurveServer | None = None) -> tuple[zmq.Socket, str]:
    """A request ROUTER socket, bound, with the limits that protect the station (``sndhwm``:
    replies kept per peer that does not read them; more are dropped).  ``curve``: a CURVE
    server, as for :func:`make_pub`."""
    sock = ctx.socket(zmq.ROUTER)
    if curve is not None:
        curve.apply(sock)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
    # Replies a peer does not read wait in its pipe, at most this many; a full pipe makes the
    # non-blocking send fail (ROUTER_MANDATORY) and the reply waits in the request server's
    # byte-bounded backlog instead, or is dropped.
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    return sock, bind(sock, endpoint, what)


class RequestServer(threading.Thread):
    """Answers requests on ROUTER sockets and calls ``tick`` every ``tick_s`` (heartbeats).

    ``handlers`` maps each ROUTER socket to the function that turns a request dict into a reply;
    a handler raises :class:`RequestError` for a bad request.  The thread closes the sockets it
    was given when it ends.
    """

    def __init__(
        self,
        handlers: Mapping[zmq.Socket, Handler],
        *,
        tick: Callable[[], None] | None = None,
        tick_s: float = 1.0,
        name: str = "station-requests",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.handlers = dict(handlers)
        self.tick = tick
        self.tick_s = max(0.05, float(tick_s))
        self._stop_evt = threading.Event()
        self.requests = 0
        self.rejected = 0
        self.dropped_replies = 0
        self.last_loop = time.monotonic()
        # replies waiting for a full peer pipe: socket → peer identity → frames, in order
        self._backlog: dict[zmq.Socket, dict[bytes, collections.deque[list[bytes]]]] = {
            sock: {} for sock in self.handlers}
        self._backlog_bytes: dict[bytes, int] = {}
        self.backlog_bytes = 0

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the loop to end and wait for it."""
        self._stop_evt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in self.handlers:
            poller.register(sock, zmq.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self._stop_evt.is_set():
                now = time.monotonic()
                self.last_loop = now
                if self.tick is not None and now >= next_tick:
                    try:
                        self.tick()
                    except Exception:
                        log.exception("heartbeat failed")
                    next_tick += self.tick_s
                    if next_tick < now:  # fell behind (suspend, long GC): don't burst
                        next_tick = now + self.tick_s
                self._flush_backlog()
                wait = min(0.01 if self.backlog_bytes else 0.1,
                           max(0.0, next_tick - time.monotonic()))
                try:
                    ready = dict(poller.poll(wait * 1000))
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM:
                        break
                    log.warning("poll: %s", exc)
                    continue
                for sock in ready:
                    self._drain(sock)
        finally:
            for sock in self.handlers:
                sock.close(linger=200)

    def _drain(self, sock: zmq.Socket) -> None:
        handler = self.handlers[sock]
        for _ in range(MAX_DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("recv: %s", exc)
                return
            self.requests += 1
            req = parse_request(frames)
            if req.error is not None or req.body is None:
                self.rejected += 1
                reply = error_reply(req.error or "bad request")
            else:
                try:
                    reply = encode_reply(handler(req.body))
                except RequestError as exc:
                    self.rejected += 1
                    reply = error_reply(str(exc))
                except Exception as exc:  # a bug in a handler must not stop the station
                    log.exception("request handler failed")
                    self.rejected += 1
                    reply = error_reply(f"internal error: {type(exc).__name__}")
            if not req.envelope:
                continue
            self._reply(sock, [*req.envelope, reply])

    def _reply(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send without blocking; a full peer pipe → the byte-bounded backlog (in order)."""
        peer = frames[0]
        queue = self._backlog[sock].get(peer)
        if not queue:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:  # peer gone (EHOSTUNREACH): nobody to answer
                log.debug("reply dropped: %s", exc)
                return
        size = sum(len(f) for f in frames)
        key = id(sock).to_bytes(8, "little") + peer
        held = self._backlog_bytes.get(key, 0)
        if held + size > PEER_BACKLOG_BYTES or self.backlog_bytes + size > TOTAL_BACKLOG_BYTES:
            self.dropped_replies += 1  # the peer does not read: never block, never grow
            return
        self._backlog[sock].setdefault(peer, collections.deque()).append(frames)
        self._backlog_bytes[key] = held + size
        self.backlog_bytes += size

    def _flush_backlog(self) -> None:
        """Send what waits for peers whose pipes have room again."""
        if not self.backlog_bytes:
            return
        for sock, peers in self._backlog.items():
            for peer in list(peers):
                queue = peers[peer]
                key = id(sock).to_bytes(8, "little") + peer
                while queue:
                    frames = queue[0]
                    try:
                        sock.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except zmq.ZMQError:  # peer gone: drop all it had waiting
                        pass
                    queue.popleft()
                    size = sum(len(f) for f in frames)
                    self._backlog_bytes[key] -= size
                    self.backlog_bytes -= size
                if not queue:
                    del peers[peer]
                    self._backlog_bytes.pop(key, None)
