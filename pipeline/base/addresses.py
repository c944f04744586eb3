"""Cell addresses ``X:<column>, Y:<row>`` (DESIGN §4): one parser for the whole project."""

from __future__ import annotations

import re

# Case-insensitive on the "X"/"Y" keys; labels keep their case (a recipe may use lower case).
_ADDRESS_RE = re.compile(r"^\s*X\s*:\s*([^,;\s]+)\s*,\s*Y\s*:\s*([^,;\s]+)\s*$", re.IGNORECASE)


def make_address(column: str, row: str) -> str:
    """Address string of a cell: ``make_address("3", "C") == "X:3, Y:C"``."""
    return f"X:{column}, Y:{row}"


def parse_address(address: str) -> tuple[str, str]:
    """``"x:3,y:C"`` → ``("3", "C")``; ``ValueError`` if the string is not an address."""
    m = _ADDRESS_RE.match(str(address))
    if not m:
        raise ValueError(f"not an address: {address!r} is not a cell address "
                         "'X:<column>, Y:<row>'")
    return m.group(1), m.group(2)


def normalize_address(text: str) -> str:
    """``"x:3,y:c"`` → ``"X:3, Y:c"``: the canonical spacing; ``ValueError`` if not an address."""
    return make_address(*parse_address(text))
