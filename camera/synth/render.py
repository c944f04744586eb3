"""Rendering parts of the synthetic line: the golden, and parts with pose, drift, noise and
defects drawn from a random generator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from camera.synth.board import board_canvas
from camera.synth.canvas import SS, canvas_pad
from camera.synth.pins import PinState, apply_defect, draw_pin
from camera.synth.spec import DEFECT_MODES, LineSpec, SyntheticPart, parse_address, pin_centers
from pipeline.base.addresses import make_address


def _render_canvas(spec: LineSpec, states: dict[str, PinState],
                   rng: np.random.Generator) -> np.ndarray:
    pad = canvas_pad(spec)
    img = board_canvas(spec).copy()
    for addr, (cx, cy) in pin_centers(spec).items():
        draw_pin(img, spec, pad, cx, cy, states[addr], rng)
    # Anti-aliasing for the 2× → 1× resampling plus a touch of lens blur.
    return cv2.GaussianBlur(img, (0, 0), 0.5 * SS)


def _resample(spec: LineSpec, canvas: np.ndarray, warp: np.ndarray | None) -> np.ndarray:
    """Sample the canvas at the frame's pixels; ``warp`` maps golden → frame (None: identity)."""
    pad = canvas_pad(spec)
    w, h = spec.size
    if warp is None:
        inv = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    else:
        inv = cv2.invertAffineTransform(warp)  # frame → golden
    # golden → canvas: c = SS·(g + pad + 0.5) − 0.5
    to_canvas = np.array([[SS, 0, SS * (pad + 0.5) - 0.5], [0, SS, SS * (pad + 0.5) - 0.5]])
    m = np.hstack([to_canvas[:, :2] @ inv[:, :2], to_canvas[:, :2] @ inv[:, 2:] + to_canvas[:, 2:]])
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _finish(spec: LineSpec, img: np.ndarray) -> np.ndarray:
    """Float [0, 1] BGR → uint8 in the spec's format (grey or BGR)."""
    img = img * 255.0
    if not spec.color:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_golden(spec: LineSpec | None = None) -> np.ndarray:
    """The perfect part: no jitter, no drift, no noise, no pin scatter.  uint8 grey or BGR."""
    spec = spec or LineSpec()
    states = {a: PinState() for a in spec.addresses}
    canvas = _render_canvas(spec, states, np.random.default_rng(0))
    return _finish(spec, _resample(spec, canvas, None))


def _pose_warp(spec: LineSpec, dx: float, dy: float, angle_deg: float) -> np.ndarray:
    w, h = spec.size
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, 1.0)
    m[:, 2] += (dx, dy)
    return m


def make_part(spec: LineSpec, rng: np.random.Generator,
              defects: Iterable[tuple[str, str]] = ()) -> SyntheticPart:
    """Render one part with its pose, drift and noise drawn from ``rng``; full ground truth.

    ``defects`` are ``(address, mode)`` pairs; the same address may carry several modes (e.g.
    ``bent`` and ``scratch``), except ``missing`` which leaves nothing to scratch.
    """
    defects = [(a, m) for a, m in defects]
    states = {}
    for addr in spec.addresses:
        st = PinState()
        if spec.pin_shift_sigma > 0:
            st.jx, st.jy = (float(v) for v in rng.normal(0, spec.pin_shift_sigma, 2))
        if spec.pin_gain_sigma > 0:
            st.gain = float(1.0 + rng.normal(0, spec.pin_gain_sigma))
        states[addr] = st
    norm_defects = []
    for addr, mode in defects:
        col, row = parse_address(spec, addr)
        addr = make_address(col, row)
        apply_defect(states[addr], mode, spec, rng)
        norm_defects.append((addr, mode))

    canvas = _render_canvas(spec, states, rng)
    dx = float(rng.uniform(-spec.jitter_px, spec.jitter_px)) if spec.jitter_px > 0 else 0.0
    dy = float(rng.uniform(-spec.jitter_px, spec.jitter_px)) if spec.jitter_px > 0 else 0.0
    ang = float(rng.uniform(-spec.jitter_deg, spec.jitter_deg)) if spec.jitter_deg > 0 else 0.0
    warp = _pose_warp(spec, dx, dy, ang)
    identity = dx == 0.0 and dy == 0.0 and ang == 0.0
    img = _resample(spec, canvas, None if identity else warp)

    gain = float(rng.uniform(1 - spec.gain_drift, 1 + spec.gain_drift)) if spec.gain_drift else 1.0
    offset = float(rng.uniform(-spec.offset_drift, spec.offset_drift)) if spec.offset_drift else 0.0
    if gain != 1.0 or offset != 0.0 or spec.gradient_drift:
        w, h = spec.size
        field_ = np.float32(gain)
        if spec.gradient_drift:
            gx, gy = rng.uniform(-spec.gradient_drift, spec.gradient_drift, 2)
            xs = (np.arange(w, dtype=np.float32) / (w - 1) - 0.5) * np.float32(gx)
            ys = (np.arange(h, dtype=np.float32) / (h - 1) - 0.5) * np.float32(gy)
            field_ = np.float32(gain) * (1.0 + ys[:, None] + xs[None, :])
        img = img * (field_[..., None] if np.ndim(field_) else field_) + np.float32(offset / 255)
    out = img * 255.0
    if not spec.color:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    if spec.noise_sigma > 0:
        out = out + rng.normal(0, spec.noise_sigma, out.shape).astype(np.float32)
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return SyntheticPart(image=image, dx=dx, dy=dy, angle_deg=ang, gain=gain, offset=offset,
                         warp=warp, defects=norm_defects)


def render_part(spec: LineSpec, rng: np.random.Generator,
                defects: Iterable[tuple[str, str]] = ()) -> np.ndarray:
    """Render one part (uint8 grey or BGR); see :func:`make_part` for the ground truth."""
    return make_part(spec, rng, defects).image


def sample_defects(spec: LineSpec, rng: np.random.Generator, n: int = 1,
                   modes: Sequence[str] = DEFECT_MODES) -> list[tuple[str, str]]:
    """``n`` defects at ``n`` distinct random addresses with random modes."""
    addrs = spec.addresses
    idx = rng.choice(len(addrs), size=min(n, len(addrs)), replace=False)
    return [(addrs[int(i)], str(modes[int(rng.integers(len(modes)))])) for i in idx]
