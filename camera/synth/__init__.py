"""Synthetic pin line (the generator): top views of a 9 × 3 pin array with known defects.

The demo, the tests and the benchmarks need parts whose truth is known.  This module renders
them the way the source documents show them: cylinders (pins) seen from above, i.e. bright metal
discs with a chamfered rim and a specular highlight, standing in a dark connector housing on a
textured board, with fiducials, mounting holes, traces and silkscreen around it so that alignment
has texture to hold on to.

Rendering is done once in *golden coordinates*: the scene is drawn on a 2× supersampled canvas
with a padding border, low-pass filtered (anti-aliasing plus a little lens blur) and resampled to
the frame through the part's pose.  The golden image is the same path with the identity pose and
no photometric drift or noise, so a good part with all nuisances switched off renders to exactly
the golden.

Nuisances of a good part: pose jitter (shift ±``jitter_px``, rotation ±``jitter_deg`` about the
frame centre), lighting drift (gain, offset and a mild illumination gradient), a little
pin-to-pin variation (sub-pixel position, brightness) and Gaussian sensor noise.

Defect modes (``DEFECT_MODES``), each drawn at one address ``X:<column>, Y:<row>``:

- ``missing``  — no pin: the empty plated hole is seen instead of a bright disc.
- ``bent``     — the pin top is shifted by ~0.5 radius and elongated; the tilted shaft shows.
- ``short``    — broken pin: a smaller, darker, rough fracture surface sits lower in its well.
- ``particle`` — an irregular foreign particle on the rim of the pin or next to it.
- ``scratch``  — a dark line across the pin top.

Everything is deterministic: the board is drawn from ``LineSpec.board_seed``, each part from the
``numpy.random.Generator`` given to :func:`render_part`.
"""

from __future__ import annotations

from camera.synth.render import make_part, render_golden, render_part, sample_defects
from camera.synth.spec import (
    DEFECT_MODES,
    LineSpec,
    SyntheticPart,
    grid_config,
    parse_address,
    pin_centers,
)
from camera.synth.writer import write_line

__all__ = [
    "DEFECT_MODES",
    "LineSpec",
    "SyntheticPart",
    "grid_config",
    "make_part",
    "parse_address",
    "pin_centers",
    "render_golden",
    "render_part",
    "sample_defects",
    "write_line",
]
