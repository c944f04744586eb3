"""``station demo --serve``: the synthetic line as a live station, for trying a PLC bridge and
the operator page (on at http://127.0.0.1:8080/ unless ``--web-listen`` says otherwise)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from camera.synthetic import LineSpec, SyntheticOptions
from pipeline.base.errors import ConfigError
from pipeline.inspector import Inspector
from pipeline.recipe import Recipe
from station.config import (
    CameraSection,
    EventsSection,
    RecordingSection,
    StationConfig,
    StationSection,
    WebSection,
    listen_address,
    load_config,
)

DEMO_WEB_LISTEN = "127.0.0.1:8080"

if TYPE_CHECKING:
    from station.daemon import StationDaemon


def demo_camera(args: argparse.Namespace, spec: LineSpec) -> CameraSection:
    """The synthetic line's camera: parts of ``spec``, 80 % good, seeded by ``--seed``."""
    width, height = spec.size
    return CameraSection(type="synthetic", options=SyntheticOptions(
        width=width, height=height, seed=args.seed, p_good=0.8))


def demo_config(args: argparse.Namespace, recipe: Recipe, spec: LineSpec) -> StationConfig:
    """The demo station's configuration: trigger mode on the default endpoints, state in
    ``--state`` (journal and ``seq`` survive restarts there), or the user's ``--config``; the
    camera is always the synthetic line."""
    assert recipe.folder is not None
    state = Path(args.state).resolve() if args.state else recipe.folder.parent / "state"
    camera = demo_camera(args, spec)
    if args.config:
        cfg = load_config(args.config)
        return replace(cfg, recipe=str(recipe.folder), camera=camera,
                       events=_endpoints(args, cfg.events), web=_web(args, cfg.web))
    return StationConfig(
        recipe=str(recipe.folder),
        station=StationSection(id="demo-line", state_dir=str(state),
                               cache_dir=str(state / "cache")),
        mode="trigger",
        camera=camera,
        recording=RecordingSection(enabled=True, dir=str(state / "recordings"), max_bytes=2e8),
        policy=args.policy,
        events=_endpoints(args, EventsSection()),
        web=_web(args, WebSection()),
        path=str(state / "demo-station.yaml"),
    )


def _endpoints(args: argparse.Namespace, events: EventsSection) -> EventsSection:
    """``events`` with the endpoints given by ``--pub``/``--trigger``/``--catchup``."""
    given = {k: getattr(args, k, None) for k in ("pub", "trigger", "catchup")}
    out = replace(events, **{k: v for k, v in given.items() if v})
    try:
        out.validate()
    except ValueError as exc:  # FieldError too
        raise ConfigError(f"demo --serve endpoints: {exc}") from exc
    return out


def _web(args: argparse.Namespace, web: WebSection) -> WebSection:
    """The operator page: ``--web-listen`` (``off``: none), else the config's, else
    127.0.0.1:8080."""
    given = getattr(args, "web_listen", None)
    if given is not None and given.strip().lower() == "off":
        return replace(web, listen=None)
    listen = given or web.listen or DEMO_WEB_LISTEN
    try:
        listen_address(listen)
    except ValueError as exc:
        raise ConfigError(f"demo --serve --web-listen: {exc}") from None
    return replace(web, listen=listen)


def serve_demo(args: argparse.Namespace, recipe: Recipe, inspector: Inspector,
               spec: LineSpec) -> int:
    """Run until SIGTERM/SIGINT; every trigger shows the camera a random synthetic part."""
    from station.build import serve

    cfg = demo_config(args, recipe, spec)
    Path(cfg.station.state_dir).mkdir(parents=True, exist_ok=True)

    def ready(daemon: StationDaemon) -> None:
        e = cfg.events
        print(f"demo station ready: results on {e.pub}, triggers on {e.trigger}, catch-up on "
              f"{e.catchup}; state in {cfg.station.state_dir}\n"
              f"  watch it:    station watch {e.pub.replace('*', '127.0.0.1')}\n"
              f"  trigger:     send {{\"cmd\": \"trigger\", \"part_id\": \"P1\"}} to "
              f"{e.trigger.replace('*', '127.0.0.1')} (ZeroMQ DEALER/REQ)\n"
              f"  stop:        Ctrl-C", flush=True)
        if cfg.web.enabled:
            print(f"  operator page: http://{cfg.web.listen}/ (metrics: /metrics)", flush=True)

    # the inspector is the one the demo has just built (recipe + --vlm/--policy of this run)
    return serve(cfg, inspector=inspector, on_ready=ready)
