"""Build a station from its configuration: the one place that wires the parts together.

``station run``, ``station demo --serve`` and the tests go through here:

* the camera: the type named by ``camera.type`` in :mod:`camera.registry`, with its options;
* the Inspector with its judges: the recipe, the judges it (or the config) lists, the policy
  (:func:`station.recipe_tools.build_inspector`, shared with replay and eval);
* the recorder, when ``recording.enabled``;
* the operator page, when ``web.listen`` is set (:func:`start_page`, :mod:`station.web`);
* the daemon that runs them (:class:`station.daemon.StationDaemon`), which owns the event side
  (journal, PUB socket, request sockets) because those live and die with one run.

A part given to :func:`build_parts` / :func:`build_daemon` / :func:`serve` pre-built replaces
the one the config describes (the demo reuses the inspector it has just built; tests hand in a
camera whose outage they control).
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import signal
import threading
from collections.abc import Callable

from camera.registry import open_source
from camera.source import LiveSource
from pipeline.base.errors import StationError
from pipeline.inspector import Inspector
from station import recipe_tools
from station.config import StationConfig
from station.daemon import StationDaemon
from station.notify import Notifier
from station.parts import StationParts
from station.recorder import Recorder

log = logging.getLogger(__name__)


def build_camera(config: StationConfig) -> LiveSource:
    """The camera of ``config.camera`` (created, not started); ConfigError with the section's
    file:line when it cannot be created (unknown type, missing folder, bad value)."""
    cam = config.camera
    return open_source(cam.type, cam.options, base_dir=config.resolve("."),
                       where=cam.where or config.path or None)


def build_inspector(config: StationConfig) -> Inspector:
    """The Inspector of ``config``: its recipe, its judges and its decision policy."""
    return recipe_tools.build_inspector(config)


def build_recorder(config: StationConfig) -> Recorder | None:
    """The recorder of ``config.recording``, or None when recording is off."""
    if not config.recording.enabled:
        return None
    return Recorder.from_config(config)


def build_parts(config: StationConfig, *, camera: LiveSource | None = None,
                inspector: Inspector | None = None,
                recorder: Recorder | None = None) -> StationParts:
    """Camera, Inspector (judges) and recorder of ``config``; parts given are used as they are."""
    built_inspector = inspector if inspector is not None else build_inspector(config)
    built_recorder = recorder if recorder is not None else build_recorder(config)
    built_camera = camera if camera is not None else build_camera(config)
    return StationParts(camera=built_camera, inspector=built_inspector, recorder=built_recorder)


def build_daemon(config: StationConfig, *, camera: LiveSource | None = None,
                 inspector: Inspector | None = None,
                 recorder: Recorder | None = None,
                 notifier: Notifier | None = None) -> StationDaemon:
    """The daemon of ``config``; its parts are built when it starts (after its sockets are up,
    so a broken recipe is announced to subscribers before the exit with 78)."""
    assemble = functools.partial(build_parts, config, camera=camera, inspector=inspector,
                                 recorder=recorder)
    return StationDaemon(config, assemble, notifier=notifier)


def start_page(config: StationConfig, daemon: StationDaemon) -> Callable[[], None]:
    """Serve the operator page of ``config.web`` once the daemon has bound its sockets: a
    process of its own (:mod:`station.web.process`, never sharing the inspection's GIL) that
    follows the daemon's PUB socket; parts that are not recorded hand their images to an
    in-memory ring the page process reads over a private socket pair.  A page that cannot
    start or dies is logged (and started again) while the station goes on inspecting.
    Returns the function that stops the page."""
    from station.web.ring import ImageRing

    daemon.images = ImageRing(config.web.image_ring)
    stopped = threading.Event()
    holder: list = []

    def _start() -> None:
        from station.web.process import PageProcess
        from station.web.server import options_for_station

        while not stopped.is_set() and not daemon.stop_requested():
            eps = daemon.endpoints
            if eps.get("pub") and eps.get("catchup"):
                break
            stopped.wait(0.05)
        else:
            return
        try:
            page = PageProcess(options_for_station(config, eps["pub"], eps["catchup"]),
                               daemon.images)
        except Exception as exc:  # the station goes on inspecting without its page
            log.error("operator page not served: %s", exc)
            return
        holder.append(page)
        if not stopped.is_set():
            page.start()

    threading.Thread(target=_start, name="web-start", daemon=True).start()

    def stop() -> None:
        stopped.set()
        for page in holder:
            page.stop()

    return stop


def enable_crash_dumps() -> None:
    """Every thread's Python stack to stderr (the journal) when the station dies of a native
    fault, of systemd's watchdog (SIGABRT on a hung station), or of a native library's fatal
    breakpoint: GLib ends a fatal error (``g_error``, in Aravis's threads too) with SIGTRAP, whose
    default action then still ends the process."""
    if not faulthandler.is_enabled():
        faulthandler.enable()
    if hasattr(signal, "SIGTRAP"):
        # chain: GLib continues after its breakpoint when a handler returns; the default
        # action, raised again after the dump, is what ends the process
        faulthandler.register(signal.SIGTRAP, all_threads=True, chain=True)


def serve(config: StationConfig, *, camera: LiveSource | None = None,
          inspector: Inspector | None = None, recorder: Recorder | None = None,
          notifier: Notifier | None = None,
          on_ready: Callable[[StationDaemon], None] | None = None) -> int:
    """Run the station of ``config`` until SIGTERM/SIGINT; returns the exit code (0 after a
    clean stop, 78 on bad configuration, 1 on other start-up failures).

    ``on_ready`` is called from a helper thread once the station is ready (the demo prints its
    endpoints).
    """
    enable_crash_dumps()
    daemon = build_daemon(config, camera=camera, inspector=inspector, recorder=recorder,
                          notifier=notifier)
    if on_ready is not None:
        def _wait() -> None:
            while not daemon.stop_requested():
                if daemon.wait_ready(0.2):
                    on_ready(daemon)
                    return

        threading.Thread(target=_wait, name="on-ready", daemon=True).start()
    stop_page = start_page(config, daemon) if config.web.enabled else None
    try:
        return daemon.run()
    except StationError as exc:
        log.error("station %s: %s", daemon.station_id, exc)
        return exc.exit_code
    except Exception:  # anything else at start-up: logged with its traceback, systemd restarts
        log.exception("station %s failed", daemon.station_id)
        return 1
    finally:
        if stop_page is not None:
            stop_page()
