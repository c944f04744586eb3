"""Exceptions with the exit codes a service manager understands."""

from __future__ import annotations

# EX_CONFIG; the unit sets RestartPreventExitStatus=78 so bad config stops restart loops.
EXIT_CONFIG = 78


class StationError(Exception):
    """An error the CLI reports as one line and turns into an exit code."""

    exit_code = 1


class ConfigError(StationError):
    """Bad configuration: wrong value, missing file, missing or unusable model.

    ``where`` is ``file:line`` when the error points into a YAML file.
    """

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class SourceError(StationError):
    """A frame source cannot be opened or read: missing path, unopenable video or device,
    malformed manifest."""
