"""Shared fixtures: a small synthetic line and a recipe built from its good parts."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

import pytest

from camera.synth import LineSpec, write_line
from pipeline.recipe import Recipe
from station.demo.line import build_demo_recipe


def pytest_configure(config: pytest.Config) -> None:
    """A native library's fatal error (GLib's ``g_error``, in Aravis's threads too) ends a test
    process with SIGTRAP and no word of where: dump every thread's stack to the real stderr
    first (duplicated now, while the tests' output capture is off), then die as before."""
    if not hasattr(signal, "SIGTRAP"):
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError):  # an xdist worker's stderr is not a file
        fd = sys.__stderr__.fileno()
    faulthandler.register(signal.SIGTRAP, file=os.dup(fd), all_threads=True, chain=True)


@pytest.fixture(scope="session")
def line_spec() -> LineSpec:
    """The demo's synthetic line at 640×480."""
    return LineSpec()


@pytest.fixture(scope="session")
def synthetic_line(tmp_path_factory: pytest.TempPathFactory, line_spec: LineSpec) -> Path:
    """A labelled line: 14 good + 7 defective parts (manifest.csv), seed 3."""
    out = tmp_path_factory.mktemp("line")
    return write_line(out, 14, 7, seed=3, spec=line_spec, n_train=0)


@pytest.fixture(scope="session")
def synthetic_recipe(tmp_path_factory: pytest.TempPathFactory, line_spec: LineSpec) -> Recipe:
    """A recipe built from good parts exactly as the demo builds it (saved, then loaded)."""
    return build_demo_recipe(tmp_path_factory.mktemp("recipe"), line_spec, seed=3, n_train=24)
