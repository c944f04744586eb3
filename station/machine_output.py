"""Clean machine output: JSON alone on stdout, everything else on stderr.

:func:`machine_stdout` hands the command a stream to the real stdout and, while the command runs,
points both ``sys.stdout`` and file descriptor 1 at stderr, so nothing a library prints (a
``print`` in a model loader, a C library writing to fd 1) can slip a line in between the JSON
objects.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def machine_stdout(enabled: bool = True) -> Iterator[TextIO]:
    """Yield a line-buffered text stream on the real stdout; inside the block ``sys.stdout``
    and fd 1 write to stderr.  ``enabled=False`` yields ``sys.stdout`` and changes nothing."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    real = os.dup(1)
    out = os.fdopen(os.dup(real), "w", buffering=1, encoding="utf-8")
    old = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield out
    finally:
        try:
            sys.stderr.flush()
            out.flush()
        finally:
            os.dup2(real, 1)
            os.close(real)
            sys.stdout = old
            out.close()


def print_json_line(obj: object, out: TextIO) -> None:
    """One JSON object on one line of ``out``, flushed."""
    import json

    out.write(json.dumps(obj, default=str) + "\n")
    out.flush()
