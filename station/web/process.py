"""The station's operator page as a child process of the station.

The page server (:mod:`station.web.server`) does real work per part and per browser: it follows
the event feed, fans it out over SSE, encodes images.  In a thread of the station it shares the
station's GIL with the inspection, and a browser's request then delays a part (measured: p99
trigger → result +37 % with five browsers).  So the station runs it as a process of its own,
started once the daemon's sockets are bound and supervised for as long as the station runs:

* it follows the station over the event endpoints like any subscriber (CURVE keys included);
* images of parts that are not recorded come from the station's in-memory ring over a private
  socket pair (:mod:`station.web.ring_link`), recorded ones from the recording folder;
* it runs at the lowest CPU priority (``SCHED_IDLE``; where that is refused, ``nice`` +10): the
  page gets the CPU only when the inspection does not want it, and being another process a
  preempted page never holds a lock the inspection waits for;
* it ends with the station (``PR_SET_PDEATHSIG``, and a check of its parent), and a page that
  dies is started again after a pause (1 s, doubling to 30 s) while the station inspects on.

``python -m station.web.process FD`` is the child's entry point: it reads its
:class:`~station.web.server.WebOptions` as JSON on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from station.shutdown import stop_on_signals
from station.web.ring import ImageRing
from station.web.ring_link import RemoteRing, start_ring_server

log = logging.getLogger(__name__)

PAGE_NICE = 10  # where SCHED_IDLE is refused
RESTART_PAUSE_S = (1.0, 30.0)
_PR_SET_PDEATHSIG = 1


def options_to_json(options: Any) -> str:
    """:class:`WebOptions` as the JSON the child reads (CURVE keys as their Z85 text)."""
    data = asdict(options)
    data["recordings"] = str(options.recordings) if options.recordings else None
    keys = options.keys
    data["keys"] = None if keys is None else {
        "client_public": keys.client_public.decode(), "client_secret": keys.client_secret.decode(),
        "server_public": keys.server_public.decode()}
    return json.dumps(data)


def options_from_json(text: str) -> Any:
    """The child's :class:`WebOptions` from :func:`options_to_json`'s text."""
    from station.client import CurveKeys
    from station.web.server import WebOptions

    data = json.loads(text)
    keys = data.pop("keys")
    rec = data.pop("recordings")
    return WebOptions(**data, recordings=Path(rec) if rec else None,
                      keys=None if keys is None else CurveKeys(
                          keys["client_public"].encode(), keys["client_secret"].encode(),
                          keys["server_public"].encode()))


class PageProcess:
    """Runs and supervises the page process of one station (see the module docstring)."""

    def __init__(self, options: Any, ring: ImageRing) -> None:
        self.options_json = options_to_json(options)
        self.listen = options.listen
        self.ring = ring
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the page process and its supervisor thread."""
        self._thread = threading.Thread(target=self._supervise, name="web-supervisor",
                                        daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        link = start_ring_server(self.ring)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "station.web.process", str(link.fileno())],
                stdin=subprocess.PIPE, pass_fds=(link.fileno(),), close_fds=True)
        finally:
            link.close()  # the child has its copy; the serving thread ends when it exits
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(self.options_json.encode())
            proc.stdin.close()
        return proc

    def _supervise(self) -> None:
        pause = RESTART_PAUSE_S[0]
        while not self._stop.is_set():
            try:
                self.proc = proc = self._spawn()
            except OSError as exc:
                log.error("operator page process not started: %s", exc)
            else:
                log.info("operator page on http://%s/ (process %d)", self.listen, proc.pid)
                rc = proc.wait()
                if self._stop.is_set():
                    return
                log.error("operator page process ended (exit %s); started again in %.0f s",
                          rc, pause)
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, RESTART_PAUSE_S[1])

    def stop(self, timeout: float = 5.0) -> None:
        """End the page process (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)


# ----------------------------------------------------------------------------------- the child
def _die_with_parent() -> Callable[[], bool]:
    """Ask the kernel for SIGTERM when the station ends; returns a check of the parent for
    where that is not available."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return lambda: os.getppid() == parent


def lowest_priority() -> str:
    """Put this process (and the threads it starts later) at the lowest CPU priority:
    ``SCHED_IDLE``, else ``nice`` +:data:`PAGE_NICE`; returns which."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(PAGE_NICE)
        return f"nice {PAGE_NICE}"


def child_main(argv: list[str]) -> int:
    """The page process: serve until SIGTERM or the station's end."""
    from station.web.server import WebServer

    logging.basicConfig(level=logging.INFO, format="operator page: %(levelname)s %(message)s")
    parent_alive = _die_with_parent()
    if not parent_alive():
        return 0
    log.info("CPU priority: %s", lowest_priority())
    ring = RemoteRing.from_fd(int(argv[0]))
    server = WebServer(options_from_json(sys.stdin.read()), ring=ring)

    async def main() -> None:
        stop = stop_on_signals()

        async def watch_parent() -> None:
            while not stop.is_set():
                if not parent_alive():
                    stop.set()
                await asyncio.sleep(1.0)

        watcher = asyncio.create_task(watch_parent())
        try:
            await server.serve(stop)
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    except OSError as exc:
        log.error("cannot listen on %s: %s", server.options.listen, exc)
        return 1
    finally:
        ring.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
