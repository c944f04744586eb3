"""The event client library: the one client side of the station's event protocol.

For bridges, the operator page, ``station watch``, the benches and the tests::

    from station.client import CurveKeys, EventSubscriber, TriggerClient

* :class:`EventSubscriber` — SUB with gap catch-up, heartbeat-loss and restart detection,
  every ``seq`` delivered once and in order; callback, iterator, thread and asyncio use.
* :class:`TriggerClient` — triggers with timeouts and retries that reuse the ``part_id``,
  ``status()``, and ``trigger_and_wait()`` (the bridge contract's accept rule).
* :class:`CatchupClient` — the catch-up socket on its own.
* :class:`CurveKeys` — optional CURVE keys from pyzmq certificate files.

See "Client library" in ``docs/EVENTS.md``.
"""

from station.client.catchup import CatchupBatch, CatchupClient, CatchupRefused
from station.client.keys import CurveKeys
from station.client.request import ClientError, RequestTimeout, connectable, derive_catchup
from station.client.subscriber import (
    Event,
    EventSubscriber,
    Notice,
    ResultWaiter,
    SubscriberStats,
)
from station.client.trigger import PartOutcome, TriggerAck, TriggerClient, TriggerTimeout

__all__ = [
    "CatchupBatch",
    "CatchupClient",
    "CatchupRefused",
    "ClientError",
    "CurveKeys",
    "Event",
    "EventSubscriber",
    "Notice",
    "PartOutcome",
    "RequestTimeout",
    "ResultWaiter",
    "SubscriberStats",
    "TriggerAck",
    "TriggerClient",
    "TriggerTimeout",
    "connectable",
    "derive_catchup",
]
