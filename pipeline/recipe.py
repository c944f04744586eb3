"""Recipes: everything the station needs to inspect one product, in one folder.

A recipe folder holds ``recipe.yaml`` (settings, grid, per-cell thresholds, VLM prompt settings),
``golden.png`` (the golden reference) and ``unitspace.npz`` (the NSOARTC unit space).  Its content
hash (over those three files) goes into every event, so a result can always be traced to the exact
recipe that produced it.

``recipe.sha256`` seals the folder: its first line is that content hash, the next lines each
file's own SHA-256 (``<hex>  <name>``, as ``sha256sum`` writes them).  :meth:`Recipe.load`
refuses a recipe whose files do not match their seal (naming the file that changed), whose unit
space is not finite and positive definite with the golden's window shape, or whose thresholds
are not finite and > 0: every such problem is a ConfigError naming the file (exit 78).  After a
deliberate edit (thresholds tuned by hand), :func:`seal_recipe` (``station recipe seal DIR``)
writes the seal again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml

from pipeline.align import Aligner
from pipeline.base.atomic import write_bytes_atomic
from pipeline.base.errors import ConfigError
from pipeline.base.imageio import FrameReadError
from pipeline.base.imageio import read_image as read_frame_image
from pipeline.base.yamlconf import Overrides, YamlDoc, build_dataclass, load_yaml
from pipeline.cell_scoring import CellScorer
from pipeline.grid import AddressGrid
from pipeline.judges.metric import fit_thresholds
from pipeline.nsoartc import (  # the golden-side sums are computed once per recipe build
    NsoartcTransform,
    UnitSpace,
    _GoldenSums,
    _split_channels,
    synth_good_frames,
    windows_shape,
)
from pipeline.photometric import PhotometricNormalizer
from pipeline.variation import VariationSettings
from pipeline.vlm.settings import VlmSettings

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
GOLDEN_FILE = "golden.png"
UNIT_SPACE_FILE = "unitspace.npz"
SEAL_FILE = "recipe.sha256"
_CONTENT_FILES = (RECIPE_FILE, GOLDEN_FILE, UNIT_SPACE_FILE)
# Judges that use neither the NSOARTC distance D nor the metric thresholds: a recipe whose judges
# are all of these has no unit space (build_recipe skips the fit and the calibration).
NO_DISTANCE_JUDGES: frozenset[str] = frozenset({"variation"})


def needs_unit_space(judges: Sequence[str]) -> bool:
    """Whether a recipe with these judges needs the NSOARTC unit space and metric thresholds
    (any judge other than the variation judge: ``metric``, ``vlm`` (golden metric image), a
    plug-in that may read ``D``)."""
    return not judges or not set(judges) <= NO_DISTANCE_JUDGES


def _content_files(folder: Path) -> tuple[str, ...]:
    """The recipe files the content hash covers: the unit space only where the folder has one
    (a variation-only recipe has none; deleting a metric recipe's changes the hash)."""
    return tuple(n for n in _CONTENT_FILES
                 if n != UNIT_SPACE_FILE or (folder / n).exists())


@dataclass(frozen=True)
class AlignSettings:
    """How frames are registered to the golden (see pipeline.align.Aligner)."""

    motion: Literal["translation", "euclidean", "affine", "homography"] = "euclidean"
    min_score: float = 0.8
    max_shift_px: float = 40.0
    max_rotation_deg: float = 5.0
    scale: float = 0.5
    enabled: bool = True
    # lighting drift removed after geometric alignment (pipeline.photometric)
    photometric: Literal["none", "gain_offset", "plane"] = "gain_offset"

    def validate(self) -> None:
        if not -1.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must be an ECC correlation in [-1, 1]")
        if not 0 < self.scale <= 1:
            raise ValueError("scale must be in (0, 1]")


@dataclass(frozen=True)
class NsoartcSettings:
    """The metric transform (DESIGN §3)."""

    window: int = 9
    stride: int = 1
    channels: Literal["grey", "bgr"] = "grey"
    d_vis: float = 8.0

    def validate(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError("window must be odd and >= 3")
        if not 1 <= self.stride <= self.window:
            raise ValueError("stride must be in [1, window]")
        if self.d_vis <= 0:
            raise ValueError("d_vis must be > 0")


@dataclass(frozen=True)
class UnitSpaceSettings:
    """How the unit space is built from good frames, and how good frames are synthesised from
    the golden when real ones are few (pipeline.nsoartc.synth_good_frames)."""

    synth: int = 24  # frames synthesised from the golden, added to the real good frames
    seed: int = 0
    shrink: float | None = None  # covariance shrinkage λ; default 2 / (M + 1)
    shift: float = 0.5  # sub-pixel shift ± px
    morph: int = 1  # edges eroded / dilated by this many px
    morph_shape: Literal["cross", "rect"] = "cross"
    morph_amount: float = 1.0  # share of the erosion/dilation blended in (0.5: half a pixel)
    gain: float = 0.03
    noise: float = 2.0

    def synth_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of synth_good_frames."""
        return {"shift": self.shift, "morph": self.morph, "morph_shape": self.morph_shape,
                "morph_amount": self.morph_amount, "gain": self.gain, "noise": self.noise}


@dataclass(frozen=True)
class ThresholdSettings:
    """How per-cell thresholds are derived from good frames' cell scores."""

    statistic: Literal["max", "quantile"] = "max"  # cell score = max of D, or a quantile
    quantile: float = 0.99
    inset: int | None = None  # px of each cell's border left to its windows (default k // 2)
    support: int = 1  # D eroded support×support before the cell max (removes thin edge lines)
    pooled: bool = False  # one threshold for all cells (from all cells' good scores)
    margin: float = 1.3
    floor: float = 3.0
    calibration_synth: int = 16  # synthesised calibration frames when real ones are few

    def validate(self) -> None:
        if not 0.5 <= self.quantile <= 1.0:
            raise ValueError("quantile must be in [0.5, 1]")
        if self.margin < 1.0 or self.floor < 0:
            raise ValueError("margin must be >= 1 and floor >= 0")
        if not 1 <= self.support <= 15:
            raise ValueError("support must be in [1, 15]")


@dataclass(frozen=True)
class RecipeSettings:
    """The content of ``recipe.yaml``."""

    name: str
    grid: dict[str, Any]
    thresholds: dict[str, float] = field(default_factory=dict)
    align: AlignSettings = field(default_factory=AlignSettings)
    nsoartc: NsoartcSettings = field(default_factory=NsoartcSettings)
    unit_space: UnitSpaceSettings = field(default_factory=UnitSpaceSettings)
    cells: ThresholdSettings = field(default_factory=ThresholdSettings)
    # judges run on every part, in order, by registered name (pipeline.judges); ``vlm`` is
    # appended when the VLM is enabled
    judges: list[str] = field(default_factory=lambda: ["metric"])
    # the variation judge (pipeline.judges.variation), when listed in ``judges``
    variation: VariationSettings = field(default_factory=VariationSettings)
    # the keys of the recipe's ``vlm:`` section as given (checked when loaded); the station config
    # and command line override them key by key (pipeline.vlm.settings.effective_vlm_settings)
    vlm: Overrides[VlmSettings] = field(default_factory=lambda: Overrides(VlmSettings))
    built: dict[str, Any] = field(default_factory=dict)  # provenance: date, frames, version
    version: int = 1


def _recipe_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for name in _content_files(folder):
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def seal_recipe(folder: str | Path) -> str:
    """Write ``recipe.sha256`` for the folder's current files (the content hash, then each
    file's SHA-256); returns the content hash.  Used when a recipe is saved, and after a
    deliberate hand edit (``station recipe seal``)."""
    folder = Path(folder)
    try:
        digest = _recipe_hash(folder)
    except OSError as exc:
        raise ConfigError(f"cannot seal the recipe: {exc}", str(folder)) from None
    lines = [digest] + [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}"
                        for n in _content_files(folder)]
    write_bytes_atomic(folder / SEAL_FILE, ("\n".join(lines) + "\n").encode())
    return digest


def verify_seal(folder: str | Path) -> str:
    """The content hash of the folder when it matches ``recipe.sha256``; ConfigError naming
    the seal and the file that changed (or the missing seal) otherwise."""
    folder = Path(folder)
    seal = folder / SEAL_FILE
    try:
        lines = seal.read_text(encoding="ascii").split("\n")
    except FileNotFoundError:
        raise ConfigError(f"{SEAL_FILE} is missing: the recipe's integrity cannot be checked "
                          "(rebuild it, or seal it with `station recipe seal DIR`)",
                          str(seal)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{SEAL_FILE} unreadable: {exc}", str(seal)) from None
    expected = lines[0].strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"{SEAL_FILE} line 1 is not a SHA-256 hex digest", f"{seal}:1")
    digest = _recipe_hash(folder)
    if digest == expected:
        return digest
    changed = []
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") in _CONTENT_FILES:
            name = parts[1].lstrip("*")
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != parts[0].lower():
                changed.append(f"{name} (line {i})")
    what = (f"{', '.join(changed)} changed" if changed
            else f"{', '.join(_CONTENT_FILES)} changed")
    raise ConfigError(f"content hash mismatch: {what} since the recipe was sealed (sealed "
                      f"{expected[:12]}, found {digest[:12]}); a tampered or damaged recipe is "
                      "not run (rebuild it, or `station recipe seal DIR` after a deliberate edit)",
                      str(seal))


def read_image(path: str | Path, *, grey: bool = False) -> np.ndarray:
    """Read an image file (camera.replay.read_image: uint8 grey or BGR, 16 bit and alpha
    normalised) as grey when ``grey``; ValueError naming the path when it cannot be read."""
    try:
        img = read_frame_image(path)
    except FrameReadError as exc:
        raise ValueError(str(exc)) from None
    return to_channels(img, "grey") if grey else img


def to_channels(image: np.ndarray, channels: str) -> np.ndarray:
    """Convert a uint8 grey/BGR/BGRA image to the recipe's channel layout (grey or BGR)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == "grey":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


@dataclass
class Recipe:
    """A loaded recipe: settings plus the golden, unit space, grid and derived objects."""

    settings: RecipeSettings
    golden: np.ndarray
    unit_space: UnitSpace | None  # None: no listed judge uses D (see ``has_metric``)
    grid: AddressGrid
    folder: Path | None = None
    hash: str = ""

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the content hash (what events carry)."""
        return self.hash[:12]

    def make_aligner(self) -> Aligner:
        """An Aligner for this recipe's golden and alignment settings."""
        return make_aligner(self.golden, self.settings.align)

    def make_photometric(self) -> PhotometricNormalizer:
        """The lighting-drift normaliser for this recipe's golden."""
        return PhotometricNormalizer(self.golden, self.settings.align.photometric)

    def make_cell_scorer(self) -> CellScorer:
        """The cell scorer of this recipe (grid, frame size, inset, statistic)."""
        return _cell_scorer(self.grid, self.golden.shape[:2], self.settings)

    @property
    def has_metric(self) -> bool:
        """Whether the recipe has a unit space (NSOARTC distance, metric thresholds); False for
        a recipe whose judges all do without (``built.unit_space`` says so)."""
        return self.unit_space is not None

    def make_transform(self) -> NsoartcTransform:
        """The NSOARTC transform for this recipe's golden and unit space (ValueError for a
        recipe without one)."""
        n = self.settings.nsoartc
        if self.unit_space is None:
            raise ValueError(f"recipe {self.settings.name!r} has no unit space (judges "
                             f"{self.settings.judges}): it cannot compute the NSOARTC distance")
        return NsoartcTransform(
            to_channels(self.golden, n.channels),
            self.unit_space,
            k=n.window,
            stride=n.stride,
            channels=n.channels,
            d_vis=n.d_vis,
        )

    @classmethod
    def load(cls, folder: str | Path) -> Recipe:
        """Load and validate a recipe folder; ConfigError (file:line) on any problem."""
        folder = Path(folder)
        doc: YamlDoc = load_yaml(folder / RECIPE_FILE)
        settings = build_dataclass(RecipeSettings, doc.data, doc)
        try:
            grid = AddressGrid.from_config(settings.grid)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"grid: {exc}", doc.where(("grid",))) from None
        missing = sorted(set(grid.cells) - set(settings.thresholds))
        if missing:
            raise ConfigError(
                f"thresholds missing for {len(missing)} cell(s), e.g. {missing[0]!r}",
                doc.where(("thresholds",)),
            )
        extra = sorted(set(settings.thresholds) - set(grid.cells))
        if extra:
            where = doc.where(("thresholds", extra[0]))
            raise ConfigError(f"threshold for unknown cell {extra[0]!r}", where)
        _check_thresholds(settings.thresholds, doc)
        try:
            golden = read_image(folder / GOLDEN_FILE)
        except ValueError as exc:
            raise ConfigError(f"golden unreadable: {exc}", str(folder / GOLDEN_FILE)) from None
        golden = to_channels(golden, settings.nsoartc.channels)
        _check_grid_inside(grid, golden.shape[:2], doc)
        us_path = folder / UNIT_SPACE_FILE
        if not needs_unit_space(settings.judges) and not us_path.exists():
            return cls(settings, golden, None, grid, folder, verify_seal(folder))
        try:
            unit_space = UnitSpace.load(us_path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            why = str(exc) or type(exc).__name__
            raise ConfigError(f"unit space unreadable (truncated or not a unit-space file): "
                              f"{why}", str(us_path)) from None
        _check_unit_space(unit_space, golden.shape[:2], settings.nsoartc, us_path)
        return cls(settings, golden, unit_space, grid, folder, verify_seal(folder))

    def save(self, folder: str | Path) -> Path:
        """Write the recipe folder (atomic per file) and set ``hash``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", self.golden)
        if not ok:
            raise ValueError("cannot encode golden image")
        write_bytes_atomic(folder / GOLDEN_FILE, png.tobytes())
        if self.unit_space is not None:
            tmp = folder / (UNIT_SPACE_FILE + ".tmp.npz")
            self.unit_space.save(tmp)
            tmp.replace(folder / UNIT_SPACE_FILE)
        else:
            (folder / UNIT_SPACE_FILE).unlink(missing_ok=True)
        data = asdict(self.settings)
        data["vlm"] = self.settings.vlm.to_data()  # the keys the recipe sets, as it set them
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        write_bytes_atomic(folder / RECIPE_FILE, text.encode())
        self.folder = folder
        self.hash = seal_recipe(folder)
        return folder


def _cell_scorer(grid: AddressGrid, shape: tuple[int, int],
                 settings: RecipeSettings) -> CellScorer:
    c = settings.cells
    inset = settings.nsoartc.window // 2 if c.inset is None else c.inset
    return CellScorer(grid, shape, inset=inset, support=c.support,
                      quantile=1.0 if c.statistic == "max" else c.quantile)


def _check_thresholds(thresholds: Mapping[str, Any], doc: YamlDoc) -> None:
    """Every threshold a finite number > 0 (NaN, inf, 0 or negative would pass or fail every
    part); ConfigError at its line."""
    for address, t in thresholds.items():
        ok = isinstance(t, int | float) and not isinstance(t, bool)
        if not ok or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"threshold for {address!r} must be a finite number > 0, not {t!r}",
                              doc.where(("thresholds", address)))


def _check_unit_space(us: UnitSpace, golden_shape: tuple[int, int], n: NsoartcSettings,
                      path: Path) -> None:
    """The unit space fits the golden (its window shape for the recipe's stride and channels,
    its k/stride) and is usable: every value finite, every window's inverse covariance
    ``[[a, b], [b, c]]`` positive definite (a zeroed or negated inverse would pass any part)."""
    want: tuple[int, ...] = windows_shape(golden_shape, n.stride)
    if n.channels == "bgr":
        want = (3, *want)
    h, w = golden_shape
    if us.shape != want:
        raise ConfigError(f"unit space shape {us.shape} does not fit the golden ({w}x{h}, "
                          f"{n.channels}, stride {n.stride}: expected {want}); the golden or the "
                          "unit space is of another recipe", str(path))
    for key, val in (("k", n.window), ("stride", n.stride)):
        if key in us.meta and int(us.meta[key]) != val:
            raise ConfigError(f"unit space was built with {key}={us.meta[key]}, the recipe says "
                              f"{val}", str(path))
    arrays = {"mu1": us.mu1, "mu2": us.mu2, "inv_a": us.inv_a, "inv_b": us.inv_b,
              "inv_c": us.inv_c}
    for name, arr in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ConfigError(f"unit space {name}: {bad} value(s) not finite", str(path))
    a = us.inv_a.astype(np.float64)
    b = us.inv_b.astype(np.float64)
    c = us.inv_c.astype(np.float64)
    not_pd = (a <= 0) | (c <= 0) | (a * c - b * b <= 0)
    bad = int(np.count_nonzero(not_pd))
    if bad:
        raise ConfigError(f"unit space inverse covariance not positive definite in {bad} of "
                          f"{not_pd.size} window(s)", str(path))


def _check_grid_inside(grid: AddressGrid, shape: tuple[int, int], doc: YamlDoc) -> None:
    h, w = shape
    for address, (x, y, cw, ch) in grid.cells.items():
        if x < 0 or y < 0 or x + cw > w or y + ch > h:
            raise ConfigError(
                f"cell {address!r} {[x, y, cw, ch]} lies outside the golden image ({w}x{h})",
                doc.where(("grid",)),
            )


def make_aligner(golden: np.ndarray, settings: AlignSettings) -> Aligner:
    """An Aligner on the grey version of ``golden`` with the recipe's alignment settings."""
    return Aligner(
        to_channels(golden, "grey"),
        motion=settings.motion,
        min_score=settings.min_score,
        max_shift_px=settings.max_shift_px,
        max_rotation_deg=settings.max_rotation_deg,
        scale=settings.scale,
    )


def _median_golden(frames: Sequence[np.ndarray], settings: AlignSettings) -> np.ndarray:
    """Golden = per-pixel median of the good frames aligned to the first (less noise than one)."""
    ref = frames[0]
    aligner = make_aligner(ref, settings)
    stack = [ref]
    for f in frames[1:]:
        a = aligner.align(f)
        if a.ok and a.image is not None:
            stack.append(a.image)
    if len(stack) < 3:
        return ref
    return np.median(np.stack(stack), axis=0).astype(np.uint8)


def build_recipe(
    good_frames: Sequence[np.ndarray],
    grid_config: dict[str, Any],
    *,
    name: str = "recipe",
    golden: np.ndarray | None = None,
    settings: RecipeSettings | None = None,
    vlm: Mapping[str, Any] | None = None,
    source: str = "",
) -> Recipe:
    """Build a recipe from good frames (and optionally an explicit golden).

    Golden: the given one, else the median of the good frames aligned to the first.  Unit space:
    fitted on the aligned good frames, topped up with frames synthesised from the golden while
    fewer than ``unit_space.min_real`` real ones exist (DESIGN §3; with one golden only, all are
    synthesised).  Thresholds: each cell's largest score on good frames held out of the unit-space
    fit (synthesised ones when too few), times ``margin``, at least ``floor``.

    A recipe whose judges need no NSOARTC distance (only ``variation``, see
    :func:`needs_unit_space`) gets no unit space and no calibration: ``unit_space`` is None,
    ``built.unit_space`` says why, and its per-cell thresholds are the variation judge's ``k``
    (what reports divide its cell scores by).
    """
    if golden is None and not good_frames:
        raise ValueError("need at least one good frame or a golden image")
    base = settings or RecipeSettings(name=name, grid=grid_config)
    grid = AddressGrid.from_config(grid_config)
    channels = base.nsoartc.channels
    if golden is None:
        golden = _median_golden([to_channels(f, channels) for f in good_frames], base.align)
    golden = to_channels(golden, channels)
    aligner = make_aligner(golden, base.align)
    photometric = PhotometricNormalizer(golden, base.align.photometric)
    aligned: list[tuple[np.ndarray, np.ndarray | None]] = []
    for f in good_frames:
        f = to_channels(f, channels)
        if not base.align.enabled:
            aligned.append((photometric.apply(f), None))
            continue
        a = aligner.align(f)
        if a.ok and a.image is not None:
            aligned.append((photometric.apply(a.image, a.valid), a.valid))
        else:
            log.warning("good frame skipped: %s", a.reason)
    if needs_unit_space(base.judges):
        unit_space, thresholds, n_fit, n_cal_used = _fit_unit_space(golden, grid, aligned, base)
        us_note = None
    else:
        unit_space, n_fit, n_cal_used = None, 0, 0
        thresholds = dict.fromkeys(grid.cells, float(base.variation.k))
        us_note = (f"none: judges {list(base.judges)} do not use the NSOARTC distance; "
                   "thresholds are the variation judge's k")
    built = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "good_frames": len(good_frames),
        "aligned": len(aligned),
        "fit_frames": n_fit,
        "calibration_frames": n_cal_used,
        "source": source,
    }
    if us_note is not None:
        built["unit_space"] = us_note
    final = RecipeSettings(
        name=name if settings is None else base.name,
        grid=grid.to_config(),
        thresholds={k: round(float(v), 4) for k, v in thresholds.items()},
        align=base.align,
        nsoartc=base.nsoartc,
        unit_space=base.unit_space,
        cells=base.cells,
        judges=list(base.judges),
        variation=base.variation,
        vlm=base.vlm if vlm is None else Overrides.from_mapping(
            VlmSettings, vlm, "build_recipe(vlm=...)", key_path=("vlm",)),
        built=built,
    )
    return Recipe(final, golden, unit_space, grid)


def _fit_unit_space(golden: np.ndarray, grid: AddressGrid,
                    aligned: list[tuple[np.ndarray, np.ndarray | None]],
                    base: RecipeSettings) -> tuple[UnitSpace, dict[str, float], int, int]:
    """The unit space fitted on ``aligned`` good frames (plus synthesised ones) and the per-cell
    thresholds calibrated on held-out ones; also the numbers of fit and calibration frames."""
    channels = base.nsoartc.channels
    # hold out a third of the real frames for threshold calibration (in-sample scores are too low)
    n_cal = len(aligned) // 3 if len(aligned) >= 6 else 0
    fit_frames, cal_frames = aligned[n_cal:], aligned[:n_cal]
    us = base.unit_space
    n = base.nsoartc
    n_synth = us.synth
    fit_images = [f for f, _ in fit_frames]
    synth_frames = synth_good_frames(golden, n=n_synth, seed=us.seed, **us.synth_kwargs())
    fit_images += list(synth_frames)
    sums = [_GoldenSums(c, n.window, n.stride, 1e-6) for c in _split_channels(golden, channels)]

    def features(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per = [g.features(c) for g, c in zip(sums, _split_channels(frame, channels), strict=True)]
        if len(per) == 1:
            return per[0]
        return np.stack([b for b, _ in per]), np.stack([s for _, s in per])

    unit_space = UnitSpace.fit(
        (features(f) for f in fit_images),
        shrink=us.shrink,
        meta={"k": n.window, "stride": n.stride, "channels": channels,
              "real_frames": len(fit_frames), "synth_frames": n_synth},
    )
    transform = NsoartcTransform(golden, unit_space, k=n.window, stride=n.stride, channels=channels,
                                 d_vis=n.d_vis)
    cal_images = [f for f, _ in cal_frames]
    cal_valid = [v for _, v in cal_frames]
    t = base.cells
    if len(cal_images) < t.calibration_synth // 2:
        synth = list(synth_good_frames(golden, n=t.calibration_synth, seed=us.seed + 1,
                                       **us.synth_kwargs()))
        cal_images += synth
        cal_valid += [None] * len(synth)
    scorer = _cell_scorer(grid, golden.shape[:2], base)
    good_scores = [scorer(transform.distance(img, valid))
                   for img, valid in zip(cal_images, cal_valid, strict=True)]
    thresholds = fit_thresholds(good_scores, margin=t.margin, floor=t.floor,
                                per_cell=not t.pooled)
    return unit_space, thresholds, len(fit_frames), len(cal_images)
