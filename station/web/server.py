"""The operator page server (aiohttp): the page, ``/api/…``, the live feed (SSE), ``/metrics``.

Fed by an :class:`~station.client.EventSubscriber` on the station's PUB socket (gaps filled from
the catch-up socket; the last ``history`` results fetched from the journal at start), never by
the inspection thread.  A station with ``web.listen`` runs it as a child process
(:mod:`station.web.process`), ``station web`` as a process of its own (:meth:`WebServer.serve`);
:meth:`WebServer.start` serves it from a thread (tests, embedding).  Images come from the
recorder's folder (the event's ``frame`` recording id) or from the station's in-memory
:class:`~station.web.ring.ImageRing` (through :mod:`station.web.ring_link` in the page process).

Routes::

    GET /                                   the page (station/web/static: no CDN)
    GET /static/<file>                      its script and style sheet
    GET /api/status                         state, health, heartbeat age, yield, heat map, latest
    GET /api/parts?limit=N[&verdict=V]      newest results first (N 1–1000, V pass|defect|error)
    GET /api/parts/<part_id>/<kind>.png     kind: overlay | frame | metric (.jpg: what the page
                                            loads when the part was not recorded)
    GET /api/events[?since=SEQ]             SSE: ``part`` (id = seq), ``heartbeat``, ``state``,
                                            ``notice``; Last-Event-ID / since = catch-up point
    GET /metrics                            Prometheus text format

Every input is checked: a malformed ``limit``, ``since`` or part id is a 400, an unknown part or
image a 404, never a traceback; image paths are never built from what a client sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg
import zmq
from aiohttp import web

from pipeline.base.errors import StationError
from station.client import (
    CatchupClient,
    ClientError,
    CurveKeys,
    Event,
    EventSubscriber,
    Notice,
)
from station.client.request import connectable, derive_catchup
from station.config import listen_address
from station.events import RESULT_PREFIX, TOPIC_HEARTBEAT, decode
from station.web.live import VERDICTS, LiveState, summarize
from station.web.metrics import CONTENT_TYPE, StationMetrics
from station.web.ring import KINDS, ImageSource

log = logging.getLogger(__name__)

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript",
                "style.css": "text/css"}
LIMIT_MAX = 1000
CATCHUP_MAX = 5000        # results one reconnecting browser may fetch from the journal
MAX_CLIENTS = 64          # live feeds open at once
CLIENT_QUEUE = 1000       # messages a slow browser may lag behind before it is dropped
IMAGE_CACHE = 48
JPEG_QUALITY = 85
EXECUTOR_THREADS = 3
_RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


@dataclass(frozen=True)
class WebOptions:
    """Where the page server listens and what it follows.

    ``pub``/``catchup``: the station's endpoints (catch-up: the PUB port + 1 when None);
    ``recordings``: the recorder's folder (None: images only from ``ring``); ``history``: results
    fetched from the journal at start; ``shifts``: local shift start times; ``keys``: CURVE.
    """

    pub: str
    listen: str = "127.0.0.1:8080"
    catchup: str | None = None
    recordings: Path | None = None
    history: int = 500
    shifts: list[str] = field(default_factory=lambda: ["06:00", "14:00", "22:00"])
    keys: CurveKeys | None = None  # CURVE: the page's client keys and the station's public key


def valid_part_id(part_id: str) -> bool:
    """A part id as the station accepts them: 1–128 printable characters."""
    return 0 < len(part_id) <= 128 and part_id.isprintable()


def _int_arg(text: str | None, name: str, lo: int, hi: int, default: int | None) -> int | None:
    if text is None or text == "":
        return default
    if not re.fullmatch(r"\d{1,9}", text):
        raise web.HTTPBadRequest(text=f"{name} must be an integer in [{lo}, {hi}]")
    value = int(text)
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(text=f"{name} must be an integer in [{lo}, {hi}]")
    return value


def sse(kind: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.dropped = False


class WebServer:
    """The page server; see the module docstring."""

    def __init__(self, options: WebOptions, *, ring: ImageSource | None = None) -> None:
        self.options = options
        self.ring = ring
        self.host, self.port = listen_address(options.listen)
        self.state = LiveState(keep=max(2000, options.history), shifts=options.shifts)
        self.clients: set[_Client] = set()
        self.metrics = StationMetrics(self.state, lambda: len(self.clients))
        self.catchup_ep = options.catchup  # found at start when not given
        self.history_upto = 0  # results up to this seq were history: not counted in /metrics
        self._static = {name: resources.files("station.web").joinpath("static", name)
                        .read_bytes() for name in STATIC_FILES}
        self._img: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._img_pending: dict[tuple[str, str, str], asyncio.Future[bytes | None]] = {}
        self._ctx: zmq.Context | None = None
        self._sub: EventSubscriber | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._fetching: asyncio.Semaphore | None = None  # made in the server's loop
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._closing = threading.Event()  # read by the executor threads of the start-up
        self._error: BaseException | None = None
        self.url: str | None = None

    # ------------------------------------------------------------------ running
    def start(self, timeout: float = 15.0) -> str:
        """Serve from a thread of its own (the station process); returns the page's URL once
        it listens.  StationError when it cannot listen."""
        self._thread = threading.Thread(target=self._thread_main, name="web", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise StationError(f"the operator page did not start within {timeout:g} s")
        if self._error is not None:
            raise StationError(f"operator page on {self.options.listen}: {self._error}")
        assert self.url is not None
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """End :meth:`start`'s thread (browsers see the feed close)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported by start(); the station keeps inspecting
            self._error = exc
            self._started.set()

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Listen and follow the station until ``stop`` is set (or :meth:`stop` is called)."""
        self._loop = asyncio.get_running_loop()
        # a few threads for the blocking work (subscriber polls, catch-up, image encoding), so
        # the page never takes more of the machine than that from the inspection.  Priority is
        # set per process (station.web.process), never per thread here: served from a thread
        # of the station (start()), a low-priority thread preempted while it holds the GIL
        # would stall the inspection behind it.
        self._loop.set_default_executor(
            ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="web"))
        self._stop = stop or asyncio.Event()
        self._fetching = asyncio.Semaphore(1)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0]
            host = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
            self.url = f"http://{host}:{bound[1]}/"
            feed = asyncio.create_task(self._feed(), name="web-feed")
            self._started.set()
            log.info("operator page on %s (following %s)", self.url, self.options.pub)
            await self._stop.wait()
            self._closing.set()
            if self._sub is not None:
                self._sub.stop(timeout=0)
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(feed, 2.0)
            for c in list(self.clients):
                c.dropped = True
                with contextlib.suppress(asyncio.QueueFull):
                    c.queue.put_nowait(None)
        finally:
            await runner.cleanup()
            # the subscriber's socket is closed only once no executor thread polls it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._loop.shutdown_default_executor(), 5.0)
            if self._sub is not None:
                self._sub.close()
            if self._ctx is not None:
                self._ctx.destroy(linger=0)

    # ------------------------------------------------------------------ the station side
    def _history_since(self) -> int | None:
        """The ``seq`` to resume from so the last ``history`` results are fetched (None: the
        station did not answer: follow what comes)."""
        self.catchup_ep = self._discover_catchup()
        if self.catchup_ep is None:
            return None
        for _ in range(3):
            if self._closing.is_set():
                return None
            try:
                with CatchupClient(self.catchup_ep, timeout=1.0, retries=0,
                                   keys=self.options.keys, context=self._ctx) as c:
                    seq = int(c.status().get("seq") or 0)
                self.history_upto = seq
                return max(0, seq - self.options.history)
            except (ClientError, zmq.ZMQError, ValueError, TypeError) as exc:
                log.debug("status from %s: %s", self.catchup_ep, exc)
        log.warning("no status from %s: the page starts without history", self.catchup_ep)
        return None

    def _discover_catchup(self) -> str | None:
        """The catch-up endpoint: given, else the one the station announces in its heartbeats
        (waiting up to 3 s for one), else the PUB port + 1."""
        if self.options.catchup:
            return self.options.catchup
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            if self.options.keys is not None:
                self.options.keys.apply(sock)
            sock.setsockopt(zmq.SUBSCRIBE, TOPIC_HEARTBEAT.encode())
            sock.connect(self.options.pub)
            deadline = time.monotonic() + 3.0
            while (left := deadline - time.monotonic()) > 0 and not self._closing.is_set():
                if not sock.poll(min(left, 0.2) * 1000):
                    continue
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    _, hb = decode(sock.recv_multipart())
                    ep = (hb.get("endpoints") or {}).get("catchup")
                    if isinstance(ep, str):
                        return connectable(ep, self.options.pub)
        finally:
            sock.close(0)
        return derive_catchup(self.options.pub)

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        since = await loop.run_in_executor(None, self._history_since)
        self._sub = sub = EventSubscriber(self.options.pub, catchup=self.options.catchup,
                                          since=since, keys=self.options.keys,
                                          down_after=3.0, context=self._ctx)
        async for item in sub.aiter():
            try:
                if isinstance(item, Event):
                    self._on_event(item)
                elif isinstance(item, Notice):
                    self.state.add_notice(item.kind, item.message)
                    self._broadcast(sse("notice", {"kind": item.kind, "message": item.message}))
            except Exception:  # one odd event must not end the feed
                log.exception("operator page: cannot show %s", item)

    def _on_event(self, ev: Event) -> None:
        if ev.topic.startswith(RESULT_PREFIX):
            summary = self._with_image_kind(self.state.add_result(ev.data))
            seq = summary.get("seq")
            if isinstance(seq, int) and seq > self.history_upto:
                self.metrics.count(summary)
            self._broadcast(sse("part", summary, seq if isinstance(seq, int) else None))
        elif ev.topic == TOPIC_HEARTBEAT:
            self.state.add_heartbeat(ev.data)
            self._broadcast(sse("heartbeat", self._status()))
        else:
            self.state.add_status(ev.data)
            self._broadcast(sse("state", self._status()))

    def _with_image_kind(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Says what the page loads: the recorder's PNG as it is, else a JPEG of the ring's."""
        summary["image"] = "png" if self.options.recordings and summary["frame"] else "jpg"
        return summary

    def _broadcast(self, message: bytes) -> None:
        for c in list(self.clients):
            if c.dropped:
                continue
            try:
                c.queue.put_nowait(message)
            except asyncio.QueueFull:  # too slow: it reconnects and catches up (Last-Event-ID)
                c.dropped = True

    def _status(self) -> dict[str, Any]:
        snap = self.state.snapshot()
        snap["web"] = {"clients": len(self.clients),
                       "images": "recordings" if self.options.recordings else "memory",
                       "following": self.options.pub}
        return snap

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/parts", self._api_parts)
        app.router.add_get("/api/parts/{part_id}/{kind}.{ext}", self._api_image)
        app.router.add_get("/api/events", self._api_events)
        app.router.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("operator page: %s %s failed", request.method, request.path)
            raise web.HTTPInternalServerError(
                text="internal error (see the station's log)") from None
        if not resp.prepared:
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["index.html"], content_type="text/html",
                            charset="utf-8",
                            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES or name == "index.html":
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=self._static[name], content_type=STATIC_FILES[name],
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _api_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _api_parts(self, request: web.Request) -> web.Response:
        limit = _int_arg(request.query.get("limit"), "limit", 1, LIMIT_MAX, 50)
        verdict = request.query.get("verdict") or None
        if verdict is not None and verdict not in VERDICTS:
            raise web.HTTPBadRequest(text="verdict must be pass, defect or error")
        assert limit is not None
        return web.json_response({"ok": True, "parts": self.state.parts(limit, verdict)})

    async def _api_image(self, request: web.Request) -> web.StreamResponse:
        part_id, kind = request.match_info["part_id"], request.match_info["kind"]
        ext = request.match_info["ext"]
        if kind not in KINDS or ext not in ("png", "jpg"):
            raise web.HTTPNotFound(text="images: overlay, frame, metric as .png (lossless) "
                                        "or .jpg")
        if not valid_part_id(part_id):
            raise web.HTTPBadRequest(text="part_id must be 1-128 printable characters")
        summary = self.state.by_part.get(part_id)
        path = self._recorded(summary, kind) if summary is not None else None
        headers = {"Cache-Control": "max-age=3600"}
        if path is not None and ext == "png":  # the recorder's own file, sent as it is
            return web.FileResponse(path, headers={**headers, "Content-Type": "image/png"})
        body = await self._encoded(part_id, kind, ext, path)
        if body is None:
            what = "part" if summary is None else f"{kind} image of this part"
            raise web.HTTPNotFound(text=f"no such {what} (not recorded, or no longer kept)")
        return web.Response(body=body, content_type=f"image/{'png' if ext == 'png' else 'jpeg'}",
                            headers=headers)

    def _recorded(self, summary: dict[str, Any], kind: str) -> Path | None:
        """The recorded ``kind`` image of a part, only inside the recordings folder."""
        root, rid = self.options.recordings, summary.get("frame")
        if root is None or not isinstance(rid, str) or not _RECORD_ID.fullmatch(rid):
            return None
        base = root.resolve()
        path = (base / rid / f"{kind}.png").resolve()
        if base not in path.parents or not path.is_file():
            return None
        return path

    async def _encoded(self, part_id: str, kind: str, ext: str,
                       recorded: Path | None) -> bytes | None:
        """A part's image as PNG or JPEG, from the in-memory ring (or, for a JPEG of a recorded
        part, its PNG file); encoded once however many browsers ask at the same time."""
        key = (part_id, kind, ext)
        if key in self._img:
            self._img.move_to_end(key)
            return self._img[key]
        pending = self._img_pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if self.ring is None and recorded is None:
            return None
        fut = asyncio.get_running_loop().run_in_executor(None, _fetch_and_encode, self.ring,
                                                         part_id, kind, recorded, ext)
        self._img_pending[key] = fut
        try:
            body = await asyncio.shield(fut)
        finally:
            self._img_pending.pop(key, None)
        if body is not None:
            self._img[key] = body
            while len(self._img) > IMAGE_CACHE:
                self._img.popitem(last=False)
        return body

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _api_events(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Last-Event-ID")
        since = _int_arg(request.query.get("since", header), "since", 0, 10**12, None)
        backlog = _int_arg(request.query.get("backlog"), "backlog", 0, LIMIT_MAX, 50)
        # what this browser gets first, and its queue, in one step (no await in between)
        if since is None:
            held, missing = list(reversed(self.state.parts(backlog or 0))), None
        else:
            held, missing = self.state.after(since)
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_CLIENTS} live feeds are open already")
        client = _Client()
        self.clients.add(client)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 1000\n\n" + sse("snapshot", self._status()))
            sent = since or 0
            if since is not None and missing is not None:
                for s in await self._fetch(since, missing - 1):
                    await resp.write(sse("part", s, s["seq"]))
                    sent = s["seq"]
            for s in held:
                await resp.write(sse("part", s, s["seq"]))
                sent = max(sent, s["seq"])
            while not client.dropped:
                msg = await client.queue.get()
                if msg is None:
                    break
                if msg.startswith(b"id: ") and int(msg[4:msg.index(b"\n")]) <= sent:
                    continue  # already sent from the backlog
                await resp.write(msg)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(client)
        return resp

    async def _fetch(self, since: int, upto: int) -> list[dict[str, Any]]:
        """Results ``since < seq ≤ upto`` from the station's journal (a browser that was away
        longer than this server remembers), at most :data:`CATCHUP_MAX`."""
        ep = self._sub.catchup_endpoint if self._sub is not None else self.catchup_ep
        if ep is None or upto <= since:
            return []
        since = max(since, upto - CATCHUP_MAX)
        ctx = self._ctx

        def fetch() -> list[dict[str, Any]]:
            with CatchupClient(ep, timeout=2.0, retries=0, keys=self.options.keys,
                               context=ctx) as c:
                return [self._with_image_kind(summarize(ev)) for topic, ev in c.fetch(since, upto)
                        if topic.startswith(RESULT_PREFIX)]

        try:
            assert self._fetching is not None
            async with self._fetching:  # one journal read at a time, however many browsers
                return await asyncio.get_running_loop().run_in_executor(None, fetch)
        except (ClientError, zmq.ZMQError) as exc:
            log.warning("operator page catch-up %d..%d failed: %s", since + 1, upto, exc)
            return []


def _fetch_and_encode(ring: ImageSource | None, part_id: str, kind: str, recorded: Path | None,
                      ext: str) -> bytes | None:
    """The ring's image of the part (asked for off the event loop: the station's ring is in
    another process), else the recorded PNG, encoded."""
    image = ring.get(part_id, kind) if ring is not None else None
    return _encode(image, recorded, ext)


def _encode(image: np.ndarray | None, recorded: Path | None, ext: str) -> bytes | None:
    """PNG (lossless, level 1) or JPEG (quality 85: what the page shows; libjpeg-turbo encodes
    a 640×480 overlay in ~2 ms where PNG takes tens) of ``image`` or of the PNG at ``recorded``."""
    if image is None and recorded is not None:
        image = cv2.imread(str(recorded), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if ext == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError("image could not be encoded")
        return buf.tobytes()
    img = np.ascontiguousarray(image)
    if img.ndim == 2:
        return simplejpeg.encode_jpeg(img[:, :, None], quality=JPEG_QUALITY, colorspace="GRAY")
    if img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])
    return simplejpeg.encode_jpeg(img, quality=JPEG_QUALITY, colorspace="BGR")


def options_for_station(config: Any, pub: str, catchup: str) -> WebOptions:
    """The page server of a station's own config (``web:``), following the endpoints the
    daemon bound (``tcp://0.0.0.0:…`` made reachable on loopback)."""
    here = "tcp://127.0.0.1:1"
    rec = config.resolve(config.recording.dir) if config.recording.enabled else None
    keys = None
    curve = getattr(getattr(config, "security", None), "curve", None)
    if curve is not None and config.web.client_key:
        # the station's .key_secret holds its public key too
        keys = CurveKeys.load(config.resolve(config.web.client_key),
                              config.resolve(curve.server_secret))
    return WebOptions(pub=connectable(pub, here), catchup=connectable(catchup, here),
                      listen=str(config.web.listen), recordings=rec,
                      history=int(config.web.history), shifts=list(config.web.shifts),
                      keys=keys)
