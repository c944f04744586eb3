"""How the station's asyncio processes (operator page, PLC bridges, ``station web``) learn that
they are asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_on_signals() -> asyncio.Event:
    """An event of the running loop that SIGTERM and SIGINT set.  Where the loop cannot take
    signal handlers (not the main thread, not Unix) only its owner sets it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop
