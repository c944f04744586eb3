"""Inspection station: daemon, configuration, CLI, events, journal, recorder."""

__version__ = "0.1.0"
