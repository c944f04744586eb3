"""The station's YAML configuration: typed, validated, errors with file:line (exit code 78)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from camera.registry import SourceOptions, parse_camera, source_type
from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import FieldError, Overrides, YamlDoc, build_dataclass, load_yaml
from pipeline.drift import DriftSettings
from pipeline.vlm.settings import VlmSettings, effective_vlm_settings


@dataclass(frozen=True)
class StationSection:
    """Identity and folders of this station."""

    id: str = "station-1"
    state_dir: str = "./state"
    cache_dir: str = "./cache"


def _default_camera_options() -> SourceOptions:
    return source_type("opencv").options()


@dataclass(frozen=True)
class CameraSection:
    """Where frames come from: a camera type of :mod:`camera.registry` chosen by ``type:``
    (``opencv``, ``files``, ``synthetic``, …) and that type's typed options, e.g.
    ``camera: {type: files, source: frames/, fps: 10, loop: true}``.

    A section without ``type:`` keeps the layout of configs written before the registry (the
    ``opencv`` keys): ``source: synthetic`` selects the synthetic camera, anything else OpenCV.
    """

    type: str = "opencv"
    options: SourceOptions = field(default_factory=_default_camera_options)
    where: str = ""  # file:line of the section, for errors when the camera is created

    @property
    def open_timeout_s(self) -> float:
        """Time the camera has to deliver a first frame at start-up."""
        return self.options.open_timeout_s

    @property
    def read_timeout_s(self) -> float:
        """How long a trigger waits for a frame captured after it."""
        return self.options.read_timeout_s

    @classmethod
    def from_yaml(cls, data: Any, doc: YamlDoc) -> CameraSection:
        """The ``camera:`` mapping of ``doc``, validated by its type's options (file:line)."""
        kind, options = parse_camera(data, doc, ("camera",))
        return cls(type=kind, options=options, where=doc.where(("camera",)))


@dataclass(frozen=True)
class FreeRun:
    """Inspection rate in free_run mode."""

    rate_hz: float = 2.0

    def validate(self) -> None:
        if not 0 < self.rate_hz <= 1000:
            raise ValueError("rate_hz must be in (0, 1000]")


_TCP_ENDPOINT = re.compile(r"tcp://(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>[^:/]+)")


def endpoint_problem(ep: str) -> str | None:
    """Why ``ep`` cannot be bound as a ZeroMQ endpoint (None when it can): ``tcp://HOST:PORT``
    with PORT 1–65535 (or ``*`` / ``0`` for one the system picks), ``ipc://PATH``,
    ``inproc://NAME``.  libzmq would silently wrap a port above 65535 onto another one."""
    scheme, sep, rest = ep.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        return f"{ep!r} is not a ZeroMQ endpoint (tcp://host:port, ipc://path)"
    if scheme != "tcp":
        return None
    m = _TCP_ENDPOINT.fullmatch(ep)
    if m is None:
        return f"{ep!r} is not a tcp endpoint (tcp://host:port, e.g. tcp://127.0.0.1:5556)"
    port = m.group("port")
    if port in ("*", "0"):
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} of {ep!r} is outside 1-65535"
    return None


@dataclass(frozen=True)
class EventsSection:
    """ZeroMQ endpoints and rates.  The defaults listen on the loopback interface only: another
    interface must be named here (e.g. ``tcp://192.168.10.5:5556``, or ``tcp://*:5556`` for all)."""

    pub: str = "tcp://127.0.0.1:5556"
    trigger: str = "tcp://127.0.0.1:5555"
    catchup: str = "tcp://127.0.0.1:5557"
    heartbeat_s: float = 1.0
    catchup_batch: int = 500
    trigger_queue: int = 16
    # the on-disk journal behind catch-up: segments of this size, oldest dropped past the total
    journal_segment_mb: float = 16.0
    journal_max_mb: float = 256.0

    def validate(self) -> None:
        seen: dict[str, str] = {}
        for name in ("pub", "trigger", "catchup"):
            ep = getattr(self, name)
            problem = endpoint_problem(ep)
            if problem:
                raise FieldError(name, problem)
            if ep.endswith((":0", ":*")):  # ephemeral ports may repeat
                continue
            if ep in seen:
                raise FieldError(name, f"pub, trigger and catchup must be different endpoints "
                                       f"({ep} is also {seen[ep]})")
            seen[ep] = name
        if not 0.05 <= self.heartbeat_s <= 10:
            raise ValueError("heartbeat_s must be in [0.05, 10]")
        if self.catchup_batch < 1 or self.trigger_queue < 1:
            raise ValueError("catchup_batch and trigger_queue must be >= 1")
        if not 0.01 <= self.journal_segment_mb <= self.journal_max_mb:
            raise ValueError("need 0.01 <= journal_segment_mb <= journal_max_mb")


@dataclass(frozen=True)
class TriggerSection:
    """What a trigger is judged on, and how long a part id stays taken.

    ``max_wait_ms``: a triggered part is judged on the first frame captured after its trigger
    arrived; when none is captured within this time the part gets ``error`` ``stale_trigger``.
    ``duplicate_window_h``: a second trigger for a part id accepted within this many hours
    (kept across restarts through the journal) is answered ``duplicate`` and not judged again.
    """

    max_wait_ms: float = 1000.0
    duplicate_window_h: float = 24.0

    def validate(self) -> None:
        if not 1 <= self.max_wait_ms <= 60_000:
            raise FieldError("max_wait_ms", "must be in [1, 60000] ms")
        if not 0 <= self.duplicate_window_h <= 24 * 365:
            raise FieldError("duplicate_window_h", "must be in [0, 8760] hours")


@dataclass(frozen=True)
class CurveSection:
    """``security.curve``: the station's secret certificate (``station keys generate``) and the
    folder of authorised clients' public ``*.key`` files (relative paths: to this YAML)."""

    server_secret: str
    clients: str

    def validate(self) -> None:
        for name in ("server_secret", "clients"):
            if not getattr(self, name).strip():
                raise FieldError(name, "must name a file / folder")


@dataclass(frozen=True)
class SecuritySection:
    """Who may use the endpoints: with ``curve`` every socket requires a listed client key
    (ZeroMQ CURVE + ZAP, :mod:`station.security`); without it the sockets are plain (and the
    default endpoints loopback only)."""

    curve: CurveSection | None = None


@dataclass(frozen=True)
class RecordingSection:
    """What the recorder keeps, and for how long."""

    enabled: bool = True
    dir: str = "./recordings"
    max_bytes: float = 5e9
    max_age_days: float = 7.0
    defect_max_age_days: float = 30.0

    def validate(self) -> None:
        if self.max_bytes <= 0 or self.max_age_days <= 0 or self.defect_max_age_days <= 0:
            raise ValueError("limits must be > 0")


_LISTEN = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>\d+)")
_SHIFT_START = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``127.0.0.1:8080``, ``[::1]:8080``, ``0.0.0.0:8080``; port 0: the system
    picks one) as ``(host, port)``; ValueError saying why when it is not one."""
    m = _LISTEN.fullmatch(str(text).strip())
    if m is None:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    port = int(m.group("port"))
    if port > 65535:
        raise ValueError(f"port {port} of {text!r} is outside 0-65535")
    return m.group("host").strip("[]"), port


@dataclass(frozen=True)
class WebSection:
    """The live operator page and ``/metrics`` (:mod:`station.web`), served by a child process
    of the station; off unless ``listen`` is given.  ``listen``: ``HOST:PORT`` (loopback unless an
    interface is named).  ``history``: results fetched from the journal when the page server
    starts (feed, counters, heat map).  ``image_ring``: overlays of the last parts kept in memory
    when they are not recorded; ``shifts``: local start times of the shifts (yield per shift).
    """

    listen: str | None = None
    history: int = 500
    image_ring: int = 8
    shifts: list[str] = field(default_factory=lambda: ["06:00", "14:00", "22:00"])
    # with security.curve: the page's own client certificate (.key_secret; its public .key must
    # be in security.curve.clients), so the page can subscribe to its station
    client_key: str | None = None

    @property
    def enabled(self) -> bool:
        """True when the page is served."""
        return bool(self.listen)

    def validate(self) -> None:
        if self.listen:
            try:
                listen_address(self.listen)
            except ValueError as exc:
                raise FieldError("listen", str(exc)) from None
        if not 0 <= self.history <= 100_000:
            raise FieldError("history", "must be in [0, 100000]")
        if not 0 <= self.image_ring <= 256:
            raise FieldError("image_ring", "must be in [0, 256]")
        if not self.shifts or any(not _SHIFT_START.fullmatch(str(s)) for s in self.shifts):
            raise FieldError("shifts", "must be a non-empty list of HH:MM start times")


@dataclass(frozen=True)
class StationConfig:
    """The whole station configuration; ``path`` is the YAML file it came from."""

    recipe: str
    station: StationSection = field(default_factory=StationSection)
    mode: Literal["trigger", "free_run"] = "trigger"
    free_run: FreeRun = field(default_factory=FreeRun)
    camera: CameraSection = field(default_factory=CameraSection)
    events: EventsSection = field(default_factory=EventsSection)
    trigger: TriggerSection = field(default_factory=TriggerSection)
    recording: RecordingSection = field(default_factory=RecordingSection)
    web: WebSection = field(default_factory=WebSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    # decision policy: any, all (alias both) or a judge's name (checked against the judges when
    # the inspector is built)
    policy: str = "any"
    # judges to run instead of the recipe's ``judges:`` (``vlm`` is added when enabled)
    judges: list[str] | None = None
    # Overrides of the recipe's ``vlm:`` section, key by key (checked when loaded; merged by
    # pipeline.vlm.settings.effective_vlm_settings)
    vlm: Overrides[VlmSettings] = field(default_factory=lambda: Overrides(VlmSettings))
    # line drift: the heartbeat's drift figure, the recipe_drift status, and (adapt: true, off by
    # default) bounded recipe updates from parts passed with margin (pipeline.drift,
    # station.drift)
    drift: DriftSettings = field(default_factory=DriftSettings)
    path: str = ""

    def resolve(self, p: str) -> Path:
        """A path from the config, relative paths taken relative to the config file."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (Path(self.path).parent / q).resolve()


def load_config(path: str | Path, *, check_paths: bool = False) -> StationConfig:
    """Load and validate a station YAML; ConfigError (exit 78) names file:line of any mistake.

    ``check_paths`` (``station run`` and ``check-config``): the folders the station writes
    (``station.state_dir``, ``recording.dir`` when recording) must be writable or creatable."""
    doc: YamlDoc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError("the station config must be a mapping", str(doc.path))
    if "path" in data:
        raise ConfigError("unknown key 'path'", doc.where(("path",)))
    cfg = build_dataclass(StationConfig, {k: v for k, v in data.items() if k != "camera"}, doc)
    camera = CameraSection.from_yaml(data["camera"], doc) if "camera" in data else cfg.camera
    cfg = StationConfig(**{**cfg.__dict__, "camera": camera, "path": str(Path(path).resolve())})
    recipe_dir = cfg.resolve(cfg.recipe)
    if not (recipe_dir / "recipe.yaml").is_file():
        raise ConfigError(f"recipe folder {recipe_dir} has no recipe.yaml", doc.where(("recipe",)))
    if check_paths:
        _check_writable(cfg, doc)
        _check_security(cfg, doc)
        _check_web(cfg, doc)
    _check_policy(cfg, doc, recipe_dir)
    return cfg


def _check_policy(cfg: StationConfig, doc: YamlDoc, recipe_dir: Path) -> None:
    """The policy must be any/all/both or the name of a judge the station runs (the config's
    ``judges:`` or the recipe's, + ``vlm`` when enabled); ConfigError at its line if not."""
    from pipeline.decision import validate_policy
    from pipeline.judges.selection import judge_names
    from pipeline.recipe import RecipeSettings

    rdoc = load_yaml(recipe_dir / "recipe.yaml")
    settings = build_dataclass(RecipeSettings, rdoc.data, rdoc)
    try:
        vlm = effective_vlm_settings(settings, cfg, check_model=False)
        names = judge_names(settings.judges, cfg.judges, vlm_settings=vlm)
    except ValueError as exc:
        raise ConfigError(str(exc), doc.where(("judges",) if cfg.judges else ("vlm",))) from None
    try:
        validate_policy(cfg.policy, names)
    except ValueError as exc:
        raise ConfigError(str(exc), doc.where(("policy",))) from None


def _check_security(cfg: StationConfig, doc: YamlDoc) -> None:
    """ConfigError at the key's line when a ``security.curve`` file or folder does not exist
    (its content is checked by :func:`station.security.load_curve`)."""
    curve = cfg.security.curve
    if curve is None:
        return
    for key, value, want_dir in (("server_secret", curve.server_secret, False),
                                 ("clients", curve.clients, True)):
        p = cfg.resolve(value)
        if not (p.is_dir() if want_dir else p.is_file()):
            what = "no such folder" if want_dir else "no such key file"
            raise ConfigError(f"security.curve.{key}: {p}: {what}",
                              doc.where(("security", "curve", key)))


def _check_web(cfg: StationConfig, doc: YamlDoc) -> None:
    """With ``security.curve`` the page needs its own client key (``web.client_key``) to follow
    the station; ConfigError at the key's line when it is missing or not a file."""
    web = cfg.web
    if not web.enabled or cfg.security.curve is None:
        return
    if not web.client_key:
        raise ConfigError("web.client_key: with security.curve the page needs its own client "
                          "certificate (station keys generate DIR --name web; its public .key "
                          "in security.curve.clients)", doc.where(("web",)))
    p = cfg.resolve(web.client_key)
    if not p.is_file():
        raise ConfigError(f"web.client_key: {p}: no such key file",
                          doc.where(("web", "client_key")))


def _check_writable(cfg: StationConfig, doc: YamlDoc) -> None:
    """ConfigError at the key's line when a folder the station writes cannot be written."""
    folders = [(("station", "state_dir"), cfg.station.state_dir)]
    if cfg.recording.enabled:
        folders.append((("recording", "dir"), cfg.recording.dir))
    for key_path, value in folders:
        problem = _unwritable(cfg.resolve(value))
        if problem:
            raise ConfigError(f"{'.'.join(key_path)}: {problem}", doc.where(key_path))


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be written (or created: its nearest existing parent), or None."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{folder} cannot be a folder: {probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == folder:
            return f"{folder} is not writable"
        return f"{folder} cannot be created: {probe} is not writable"
    return None
