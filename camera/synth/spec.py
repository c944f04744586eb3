"""The synthetic line's geometry and ground truth: :class:`LineSpec`, :class:`SyntheticPart`,
the pin centres and the address grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camera.synth.canvas import REF_H, REF_W
from pipeline.base.addresses import make_address
from pipeline.base.addresses import parse_address as split_address

DEFECT_MODES: tuple[str, ...] = ("missing", "bent", "short", "particle", "scratch")


@dataclass(frozen=True)
class LineSpec:
    """Geometry, nuisances and format of the synthetic line.

    Sizes left at ``None`` scale with the frame: at 640×480 the pitch is 60 px and the pin radius
    16 px; at 1280×1024 they are 120 px and 32 px.  ``severity`` scales every defect (1.0 = clearly
    visible to a person at the default size; < 1 makes harder cases).
    """

    size: tuple[int, int] = (640, 480)  # (width, height)
    columns: tuple[str, ...] = tuple(str(i) for i in range(1, 10))
    rows: tuple[str, ...] = ("U", "C", "D")
    pitch: tuple[int, int] | None = None  # (x, y) pin pitch in px
    pin_radius: float | None = None  # px
    color: bool = True  # BGR (H, W, 3) when True, grey (H, W) when False
    jitter_px: float = 10.0  # max shift in x and in y
    jitter_deg: float = 2.0  # max rotation about the frame centre
    gain_drift: float = 0.08  # gain in [1 - g, 1 + g]
    offset_drift: float = 8.0  # offset in [-o, o] grey levels
    gradient_drift: float = 0.04  # illumination slope across the frame, ± fraction
    noise_sigma: float = 2.0  # Gaussian sensor noise, grey levels
    pin_shift_sigma: float = 0.25  # per-pin position scatter of good parts, px
    pin_gain_sigma: float = 0.02  # per-pin brightness scatter of good parts
    severity: float = 1.0
    board_seed: int = 7  # the board's texture: the same for every part of the line

    def __post_init__(self) -> None:
        # lists from YAML/JSON would make the spec unhashable (it keys the board cache)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(str(r) for r in self.rows))
        if self.pitch is not None:
            object.__setattr__(self, "pitch", (int(self.pitch[0]), int(self.pitch[1])))
        w, h = self.size
        if w < 160 or h < 120:
            raise ValueError(f"LineSpec.size {self.size} too small (min 160×120)")
        if not self.columns or not self.rows:
            raise ValueError("LineSpec needs at least one column and one row")
        px, py = self.cell_pitch
        if px * len(self.columns) > w or py * len(self.rows) > h:
            raise ValueError(f"pin array {len(self.columns)}×{len(self.rows)} at pitch "
                             f"{(px, py)} does not fit in {self.size}")
        if self.radius >= 0.45 * min(px, py):
            raise ValueError(f"pin radius {self.radius} too large for pitch {(px, py)}")

    @property
    def scale(self) -> float:
        """Size factor against the 640×480 reference."""
        return min(self.size[0] / REF_W, self.size[1] / REF_H)

    @property
    def cell_pitch(self) -> tuple[int, int]:
        """Pin pitch (x, y) in px."""
        if self.pitch is not None:
            return int(self.pitch[0]), int(self.pitch[1])
        p = round(60 * self.scale)
        return p, p

    @property
    def radius(self) -> float:
        """Pin radius in px."""
        if self.pin_radius is not None:
            return float(self.pin_radius)
        return 16.0 * self.scale

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """The pin array's rectangle ``(x, y, w, h)`` in golden coordinates; one pin per cell."""
        px, py = self.cell_pitch
        w, h = len(self.columns) * px, len(self.rows) * py
        return (self.size[0] - w) // 2, (self.size[1] - h) // 2, w, h

    @property
    def addresses(self) -> list[str]:
        """All cell addresses, row by row."""
        return [make_address(c, r) for r in self.rows for c in self.columns]


@dataclass
class SyntheticPart:
    """One rendered part with its ground truth.

    ``warp`` is the 2×3 affine matrix mapping golden coordinates to frame coordinates (rotation
    by ``angle_deg`` about the frame centre, then the shift ``(dx, dy)``).  ``defects`` holds
    ``(address, mode)`` pairs.
    """

    image: np.ndarray
    dx: float
    dy: float
    angle_deg: float
    gain: float
    offset: float
    warp: np.ndarray
    defects: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``"defect"`` when the part has a defect, else ``"pass"``."""
        return "defect" if self.defects else "pass"

    @property
    def addresses(self) -> list[str]:
        """The defect addresses, in the order given (no duplicates)."""
        return list(dict.fromkeys(a for a, _ in self.defects))


# ---------------------------------------------------------------------------------------------
# geometry


def parse_address(spec: LineSpec, address: str) -> tuple[str, str]:
    """Split ``"X:3, Y:C"`` into ``("3", "C")``; ValueError when it is not a cell of ``spec``."""
    col, row = split_address(address)
    if col not in spec.columns or row not in spec.rows:
        raise ValueError(f"address {address!r} is not a cell of the line "
                         f"(columns {list(spec.columns)}, rows {list(spec.rows)})")
    return col, row


def pin_centers(spec: LineSpec) -> dict[str, tuple[float, float]]:
    """Pin centre ``(x, y)`` in golden coordinates for every address."""
    x0, y0, _, _ = spec.roi
    px, py = spec.cell_pitch
    out = {}
    for j, row in enumerate(spec.rows):
        for i, col in enumerate(spec.columns):
            out[make_address(col, row)] = (x0 + (i + 0.5) * px, y0 + (j + 0.5) * py)
    return out


def grid_config(spec: LineSpec) -> dict[str, Any]:
    """The address grid in golden coordinates: ``{"roi": [x, y, w, h], "columns", "rows"}``.

    Equal cells, one pin centred in each (the config ``pipeline.grid.AddressGrid`` reads).
    """
    return {"roi": list(spec.roi), "columns": list(spec.columns), "rows": list(spec.rows)}
