"""The station's in-memory images, handed to its page process over a private socket pair.

The page runs in a process of its own (:mod:`station.web.process`), so it never holds the
station's GIL.  Parts that are not recorded keep their images in the station's
:class:`~station.web.ring.ImageRing`; the page asks for one image when a browser wants it:

* request: 4-byte big-endian length, then ``{"part": part_id, "kind": kind}`` as JSON;
* reply: 4-byte length, then a JSON header ``{"shape": [...], "dtype": "uint8"}`` followed by
  the array's raw bytes, or ``{"missing": true}`` and nothing else.

The station's side (:func:`serve_ring`, a thread) sends the array the Inspector made as it is
(no copy, no encoding: the socket send releases the GIL); the page encodes.  The socket pair is
made by the station and inherited by the page process alone: nothing else can ask.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading

import numpy as np

from station.web.ring import KINDS, ImageRing

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_REQUEST = 4096  # a part id is ≤ 128 characters: anything longer is not the page
MAX_IMAGE = 512 * 1024 * 1024  # a header promising more is not believed


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the other side closed the image link")
        got += k
    return buf


def _send_msg(sock: socket.socket, head: dict, body: memoryview | None = None) -> None:
    data = json.dumps(head).encode()
    sock.sendall(_LEN.pack(len(data)) + data)
    if body is not None:
        sock.sendall(body)


def serve_ring(sock: socket.socket, ring: ImageRing) -> None:
    """Answer the page's image requests on ``sock`` until it closes (the page process ended)
    or sends something that is not a request (the link is then closed)."""
    with sock:
        while True:
            try:
                size = _LEN.unpack(_recv_exact(sock, _LEN.size))[0]
                if size > MAX_REQUEST:
                    log.warning("operator page image link: a %d-byte request; closed", size)
                    return
                req = json.loads(_recv_exact(sock, size))
                part, kind = req.get("part"), req.get("kind")
                image = (ring.get(part, kind) if isinstance(part, str) and kind in KINDS
                         else None)
                if image is None:
                    _send_msg(sock, {"missing": True})
                    continue
                image = np.ascontiguousarray(image)
                _send_msg(sock, {"shape": list(image.shape), "dtype": image.dtype.str},
                          memoryview(image).cast("B"))
            except (ConnectionError, OSError):
                return
            except (ValueError, AttributeError) as exc:  # not JSON, not an object
                log.warning("operator page image link: bad request (%s); closed", exc)
                return


def start_ring_server(ring: ImageRing) -> socket.socket:
    """A socket pair and a thread serving ``ring`` on one end (it ends when the other end
    closes); returns the other end (for the page process to inherit; close it here once the
    process has started)."""
    ours, theirs = socket.socketpair()
    threading.Thread(target=serve_ring, args=(ours, ring), name="web-images",
                     daemon=True).start()
    return theirs


class RemoteRing:
    """The page process's view of the station's ring: :meth:`get` like
    :meth:`ImageRing.get`, over the inherited socket (one request at a time)."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()
        self._broken = False

    @classmethod
    def from_fd(cls, fd: int) -> RemoteRing:
        """The link inherited as file descriptor ``fd``."""
        return cls(socket.socket(fileno=fd))

    def get(self, part_id: str, kind: str) -> np.ndarray | None:
        """The image ``kind`` of ``part_id`` from the station, or None (not there, or the link
        is gone: the page then shows the part without its image)."""
        with self._lock:
            if self._broken:
                return None
            try:
                _send_msg(self._sock, {"part": part_id, "kind": kind})
                head = json.loads(_recv_exact(self._sock,
                                              _LEN.unpack(_recv_exact(self._sock, _LEN.size))[0]))
                if head.get("missing"):
                    return None
                shape, dtype = tuple(int(d) for d in head["shape"]), np.dtype(head["dtype"])
                nbytes = int(np.prod(shape)) * dtype.itemsize
                if not 0 < nbytes <= MAX_IMAGE:
                    raise ValueError(f"an image of {nbytes} bytes")
                return np.frombuffer(_recv_exact(self._sock, nbytes), dtype).reshape(shape)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # a half-read reply cannot be resynchronised: the link is given up
                log.error("operator page: images of the station no longer available: %s", exc)
                self._broken = True
                return None

    def close(self) -> None:
        """Close the link."""
        self._sock.close()
