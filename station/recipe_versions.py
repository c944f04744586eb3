"""Recipe versions: the drift updates of one configured recipe, each a sealed recipe folder.

Version 0 is the configured recipe folder itself (never written to).  Each accepted drift update
(:mod:`station.drift`) writes version N as a complete recipe folder (``recipe.yaml``,
``golden.png``, ``unitspace.npz``, ``recipe.sha256``: its own content hash, sealed and loaded
back like any recipe) under ``<state_dir>/recipe-versions/<first 12 hex of the original's
hash>/vNNNN``; ``recipe.yaml``'s ``built.drift`` says which version it came from, after how
many parts, what moved and the expected photometry.  ``current.json`` there names the version
the station runs; ``station recipe rollback VERSION`` (or the config's ``drift.version``) moves
it back to any earlier one, and the next update continues from there (with a new number: no
version is ever overwritten).  A new configured recipe (another hash) starts a history of its
own.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.base.atomic import write_json_atomic
from pipeline.base.errors import ConfigError
from pipeline.nsoartc import UnitSpace
from pipeline.recipe import Recipe

VERSIONS_DIR = "recipe-versions"
CURRENT_FILE = "current.json"


class RecipeVersions:
    """The versions of ``original`` (the configured recipe, loaded) under ``state_dir``."""

    def __init__(self, state_dir: str | Path, original: Recipe) -> None:
        if not original.hash:
            raise ValueError("the original recipe must be loaded from its folder (no hash)")
        self.original = original
        self.root = Path(state_dir) / VERSIONS_DIR / original.short_hash

    def folder(self, version: int) -> Path:
        """Folder of ``version`` (the configured folder for 0)."""
        if version == 0:
            assert self.original.folder is not None
            return Path(self.original.folder)
        return self.root / f"v{version:04d}"

    def numbers(self) -> list[int]:
        """Versions on disk, ascending, 0 included."""
        found = []
        if self.root.is_dir():
            for p in self.root.glob("v[0-9][0-9][0-9][0-9]"):
                if p.is_dir() and (p / "recipe.sha256").is_file():
                    found.append(int(p.name[1:]))
        return [0, *sorted(found)]

    def current(self) -> int:
        """The version ``current.json`` names (0 when none, or when it is gone)."""
        try:
            v = int(json.loads((self.root / CURRENT_FILE).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return v if v in self.numbers() else 0

    def set_current(self, version: int) -> None:
        """Make ``version`` the one the station runs (next start, or at once in a running
        station's drift component); ConfigError for a version that does not exist."""
        if version not in self.numbers():
            raise ConfigError(f"recipe version {version} does not exist (versions: "
                              f"{', '.join(map(str, self.numbers()))})", str(self.root))
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / CURRENT_FILE, {"version": version,
                                                     "set": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                          time.gmtime())})

    def load(self, version: int) -> Recipe:
        """Load (seal and content verified) ``version``; ConfigError when it is broken."""
        if version == 0:
            return self.original
        if version not in self.numbers():
            raise ConfigError(f"recipe version {version} does not exist", str(self.root))
        return Recipe.load(self.folder(version))

    def save_next(self, base: Recipe, unit_space: UnitSpace, drift: dict[str, Any]) -> Recipe:
        """Write the next version: ``base`` with ``unit_space`` and ``built.drift = drift``
        (plus version and parent), sealed; returns it loaded back from disk."""
        version = self.numbers()[-1] + 1
        parent = self.version_of(base)
        built = dict(base.settings.built)
        built["drift"] = {"version": version, "parent": parent,
                          "original": self.original.hash,
                          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **drift}
        settings = dataclasses.replace(base.settings, built=built)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".v{version:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            Recipe(settings, base.golden, unit_space, base.grid).save(tmp)
            tmp.rename(self.folder(version))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Recipe.load(self.folder(version))

    def version_of(self, recipe: Recipe) -> int:
        """The version number ``recipe`` is (0 for the original)."""
        if recipe.hash == self.original.hash:
            return 0
        return int(recipe.settings.built.get("drift", {}).get("version", 0))

    def prune(self, keep: int, protect: int) -> list[int]:
        """Remove the oldest versions beyond ``keep`` (never 0 nor ``protect``); returns them."""
        numbers = [v for v in self.numbers() if v != 0]
        removed = []
        for v in numbers[: max(0, len(numbers) - keep)]:
            if v != protect:
                shutil.rmtree(self.folder(v), ignore_errors=True)
                removed.append(v)
        return removed

    def describe(self) -> list[dict[str, Any]]:
        """One entry per version: version, hash, parent, date, parts, folder, current."""
        cur = self.current()
        out = []
        for v in self.numbers():
            entry: dict[str, Any] = {"version": v, "folder": str(self.folder(v)),
                                     "current": v == cur}
            try:
                r = self.load(v)
            except ConfigError as exc:
                entry.update({"ok": False, "error": str(exc)})
                out.append(entry)
                continue
            d = r.settings.built.get("drift", {}) if v else {}
            entry.update({"ok": True, "hash": r.short_hash, "parent": d.get("parent"),
                          "date": d.get("date", r.settings.built.get("date")),
                          "parts": d.get("parts"), "moved": d.get("moved"),
                          "photometry": d.get("photometry")})
            out.append(entry)
        return out
