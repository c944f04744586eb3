"""Bridges from the station's ZeroMQ events to the plant: Modbus TCP and OPC UA servers a PLC
polls, and an MQTT publisher for the plant's IT.

Each bridge is its own process (``station bridge modbus|opcua|mqtt``, a systemd unit each) on the
event client library (:mod:`station.client`); the PLC bridges share :class:`StationLink`, which
applies the bridge contract of ``docs/EVENTS.md`` (reject unless a ``pass`` of the part arrives
within the deadline; a station silent for 3 s rejects everything).  The register map and the
node layout are documented in ``docs/BRIDGES.md``.
"""

from station.bridges.link import LinkSettings, PartResult, StationLink

__all__ = ["LinkSettings", "PartResult", "StationLink"]
