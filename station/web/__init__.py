"""The live operator page and Prometheus metrics of a station.

* :mod:`station.web.ring` — the in-memory ring of the last parts' images (the daemon hands them
  over without blocking when they are not recorded); imports nothing heavy.
* :mod:`station.web.live` — what the page shows (latest part, feed, yield per hour and shift, heat
  map, health), built from the station's events.
* :mod:`station.web.metrics` — ``/metrics`` in the Prometheus text format.
* :mod:`station.web.server` — the aiohttp server: the page, ``/api/…``, SSE, ``/metrics``; fed by
  an :class:`~station.client.EventSubscriber` (the station's own PUB + catch-up), never by the
  inspection thread.
* :mod:`station.web.process` — the page as a child process of the station (lowest CPU priority,
  supervised, ends with the station); ``station web`` runs the same server on its own.
* :mod:`station.web.ring_link` — the station's in-memory images handed to that process over a
  private socket pair.
"""
