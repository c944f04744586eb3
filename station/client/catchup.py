"""Client of the catch-up ``ROUTER``: journaled events after a ``seq``, in bounded batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from station.client.request import ClientError, Requester

if TYPE_CHECKING:
    from station.client.keys import CurveKeys


class CatchupRefused(ClientError):
    """The station answered ``{"ok": false, ...}`` to a catch-up request."""


@dataclass
class CatchupBatch:
    """One reply: ``events`` as ``(topic, event)`` oldest first, the station's newest ``seq``,
    the oldest ``seq`` still journaled, and whether more follow."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seq: int | None = None
    oldest: int | None = None
    more: bool = False


class CatchupClient:
    """Fetches journaled events from the catch-up socket.

    ``batch`` bounds every request (the station caps it at its own ``events.catchup_batch``);
    :meth:`fetch` repeats requests until the wanted range is complete or the station has no more.
    """

    def __init__(self, endpoint: str, *, timeout: float = 2.0, batch: int = 500,
                 retries: int = 1, max_batches: int = 1000, keys: CurveKeys | None = None,
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.batch = max(1, int(batch))
        self.retries = retries
        self.max_batches = max_batches
        self._req = Requester(endpoint, timeout=timeout, keys=keys, context=context)

    def batch_after(self, since: int, limit: int | None = None) -> CatchupBatch:
        """One request ``{"since": since, "limit": …}``; :class:`CatchupRefused` on a refusal,
        :class:`~station.client.request.RequestTimeout` when the station does not answer."""
        n = self.batch if limit is None else max(1, min(self.batch, int(limit)))
        reply = self._req.request({"since": int(since), "limit": n}, retries=self.retries)
        if not reply.get("ok"):
            raise CatchupRefused(f"catch-up refused by {self.endpoint}: {reply.get('error')}")
        events: list[tuple[str, dict[str, Any]]] = []
        for item in reply.get("events") or []:
            ev = item.get("event") if isinstance(item, dict) else None
            if isinstance(ev, dict) and isinstance(ev.get("seq"), int):
                events.append((str(item.get("topic")), ev))
        seq, oldest = reply.get("seq"), reply.get("oldest")
        return CatchupBatch(events, seq if isinstance(seq, int) else None,
                            oldest if isinstance(oldest, int) else None, bool(reply.get("more")))

    def fetch(self, since: int, upto: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every journaled event with ``since < seq`` (``≤ upto`` when given), oldest first,
        requested batch by batch as the caller consumes them."""
        last = int(since)
        for _ in range(self.max_batches):
            if upto is not None and last >= upto:
                return
            b = self.batch_after(last, None if upto is None else upto - last)
            for topic, ev in b.events:
                if ev["seq"] <= last:
                    continue
                if upto is not None and ev["seq"] > upto:
                    return
                last = ev["seq"]
                yield topic, ev
            if not b.more or not b.events:
                return

    def status(self) -> dict[str, Any]:
        """``{"cmd": "status"}`` (the catch-up socket answers it too)."""
        return self._req.request({"cmd": "status"}, retries=self.retries)

    def close(self) -> None:
        """Close the socket."""
        self._req.close()

    def __enter__(self) -> CatchupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
