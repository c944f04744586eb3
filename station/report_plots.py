"""Score distributions against thresholds as PNG plots for the reports (matplotlib, Agg).

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot: no global state, no display, safe in any thread.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter

COLORS = {"pass": "#2e7d32", "defect": "#c62828", "verdict pass": "#2e7d32",
          "verdict defect": "#c62828"}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def ratio_plot(groups: dict[str, list[float]]) -> bytes | None:
    """Histogram of each part's worst cell score / threshold per group (truth label, or verdict
    when unlabelled), log scale, the threshold (ratio 1) marked; None when there is no data."""
    groups = {k: [v for v in vs if math.isfinite(v) and v > 0] for k, vs in groups.items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    allv = np.concatenate([np.asarray(v) for v in groups.values()])
    lo, hi = max(allv.min() * 0.8, 1e-3), max(allv.max() * 1.25, 2.0)
    bins = np.geomspace(lo, hi, 40)
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.add_subplot()
    for label, values in sorted(groups.items()):
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (n={len(values)})",
                color=COLORS.get(label))
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.2, label="threshold")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("worst cell score / its threshold (per part)")
    ax.set_ylabel("parts")
    ax.legend(fontsize=8)
    return _png(fig)


def cell_score_plot(scores: dict[str, list[float]],
                    thresholds: dict[str, list[float]]) -> bytes | None:
    """Every part's score per cell (dots) against the cell's threshold (red bar: the median
    threshold the parts were judged with); None when there is no data."""
    cells = [c for c, v in scores.items() if v]
    if not cells:
        return None
    fig = Figure(figsize=(max(7.0, 0.22 * len(cells)), 3.6))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for i, c in enumerate(cells):
        v = np.asarray(scores[c])
        ax.scatter(i + rng.uniform(-0.25, 0.25, len(v)), v, s=5, color="#1565c0", alpha=0.5,
                   linewidths=0)
        t = [x for x in thresholds.get(c, []) if math.isfinite(x)]
        if t:
            ax.hlines(float(np.median(t)), i - 0.4, i + 0.4, color="#c62828", linewidth=2)
    ax.set_yscale("symlog", linthresh=1.0)
    step = max(1, len(cells) // 40)
    ax.set_xticks(range(0, len(cells), step))
    ax.set_xticklabels(cells[::step], rotation=90, fontsize=6)
    ax.set_xlim(-1, len(cells))
    ax.set_ylabel("cell score (red: threshold)")
    return _png(fig)
