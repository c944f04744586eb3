"""Progress bars for the commands that run longer than a few seconds (eval, replay, golden build,
demo's recipe build, bench): tqdm on stderr, off when stderr is not a terminal (pipes, logs,
tests), so machine output on stdout is never touched."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, *, unit: str = "part", **kw: Any) -> tqdm:
    """A tqdm bar on stderr (a context manager; ``update()`` per step), disabled when stderr is
    not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty(), dynamic_ncols=True, **kw)
