"""The trigger side of the event protocol: triggers that survive a lost reply, and the bridge rule.

:meth:`TriggerClient.trigger` retries a trigger that got no ack with the SAME ``part_id`` on a
fresh socket: if the first request did reach the station, the station answers the repeat
``duplicate`` (one part, one verdict), which this client reports as accepted.  A refusal
(``busy``, ``starting``…) is never retried: the bridge must reject that part.

:meth:`TriggerClient.trigger_and_wait` is rule 1 of the bridge contract in ``docs/EVENTS.md``:
accept a part only when a ``pass`` for its ``part_id`` arrives before the deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from station.client.catchup import CatchupClient
from station.client.request import ClientError, Requester, RequestTimeout
from station.client.subscriber import Event, EventSubscriber, ResultWaiter

if TYPE_CHECKING:
    from station.client.keys import CurveKeys


class TriggerTimeout(RequestTimeout):
    """A trigger got no ack, after every retry."""


@dataclass(frozen=True)
class TriggerAck:
    """The station's answer to a trigger.

    ``ok``: the part is accepted for inspection, now or by an earlier attempt (``duplicate``;
    ``seq`` is then the first result's ``seq`` when the station knows it).  Otherwise ``error``
    says why (``busy``, ``starting``, ``stopping``, ``unavailable: disk_full``…).
    """

    ok: bool
    part_id: str | None
    duplicate: bool = False
    seq: int | None = None
    queued: int | None = None
    error: str | None = None
    attempts: int = 1
    reply: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartOutcome:
    """What the bridge does with one part: ``accepted`` only for a ``pass`` in time.

    ``why`` is ``pass``, ``defect``, ``error: <reason>``, ``refused: <error>``, ``no ack``,
    ``no result within <s> s`` or ``station down``.
    """

    part_id: str
    accepted: bool
    why: str
    verdict: str | None = None
    event: dict[str, Any] | None = None
    ack: TriggerAck | None = None
    elapsed_s: float = 0.0


class TriggerClient:
    """Requests to the station's trigger ``ROUTER``.

    ``timeout``: seconds to wait for one ack; ``retries``: further attempts after a timeout
    (same ``part_id``).  ``keys``: CURVE keys.  Not thread-safe: one per thread.
    """

    def __init__(self, endpoint: str, *, timeout: float = 1.0, retries: int = 2,
                 keys: CurveKeys | None = None, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.keys = keys
        self.ctx = context or zmq.Context.instance()
        self._req = Requester(endpoint, timeout=timeout, keys=keys, context=self.ctx)

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``{"cmd": "status"}`` → the station's status reply (retried: it changes nothing)."""
        return self._req.request({"cmd": "status"}, timeout=timeout, retries=self.retries)

    def trigger(self, part_id: str | None, *, timeout: float | None = None,
                retries: int | None = None) -> TriggerAck:
        """Trigger one part; :class:`TriggerTimeout` when no attempt is answered.

        Without a ``part_id`` the station makes one; such a trigger is never retried (a repeat
        would be a second part).
        """
        body: dict[str, Any] = {"cmd": "trigger"}
        if part_id is not None:
            body["part_id"] = part_id
        n = 0 if part_id is None else (self.retries if retries is None else retries)
        try:
            reply = self._req.request(body, timeout=timeout, retries=n)
        except RequestTimeout as exc:
            raise TriggerTimeout(f"trigger {part_id!r}: {exc}") from exc
        attempts = self._req.attempts
        if reply.get("ok"):
            queued = reply.get("queued")
            return TriggerAck(True, reply.get("part_id", part_id), queued=queued
                              if isinstance(queued, int) else None, attempts=attempts,
                              reply=reply)
        error = str(reply.get("error"))
        if error == "duplicate":
            seq = reply.get("seq")
            return TriggerAck(True, part_id, duplicate=True,
                              seq=seq if isinstance(seq, int) else None, attempts=attempts,
                              reply=reply)
        if reply.get("reason"):
            error = f"{error}: {reply['reason']}"
        return TriggerAck(False, part_id, error=error, attempts=attempts, reply=reply)

    def trigger_and_wait(self, part_id: str, deadline_s: float,
                         subscriber: EventSubscriber) -> PartOutcome:
        """Trigger ``part_id`` and wait for its result on ``subscriber`` for at most
        ``deadline_s`` seconds in all (the line's takt budget); accepted only for a ``pass`` in
        time.  Ack retries share the budget.  A ``duplicate`` ack takes the part's first result
        (from the catch-up socket when it was published before)."""
        t0 = time.monotonic()
        end = t0 + max(0.0, deadline_s)

        def out(accepted: bool, why: str, **kw: Any) -> PartOutcome:
            return PartOutcome(part_id, accepted, why, elapsed_s=time.monotonic() - t0, **kw)

        if not subscriber.connected and not subscriber.wait_connected(end - time.monotonic()):
            return out(False, "station down")
        if subscriber.down:
            return out(False, "station down")
        waiter = subscriber.expect(part_id)
        try:
            left = end - time.monotonic()
            per_try = min(self.timeout, left / (self.retries + 1))
            try:
                ack = self.trigger(part_id, timeout=max(0.001, per_try))
            except TriggerTimeout:
                return out(False, "no ack")
            if not ack.ok:
                return out(False, f"refused: {ack.error}", ack=ack)
            if ack.duplicate and ack.seq is not None and not waiter.done:
                self._earlier_result(subscriber, part_id, ack.seq, waiter)
            ev = subscriber.wait_result(waiter, end - time.monotonic())
            if ev is None:
                if waiter.failure:
                    return out(False, waiter.failure, ack=ack)
                return out(False, f"no result within {deadline_s:g} s", ack=ack)
            verdict = str(ev.data.get("verdict"))
            why = verdict if verdict != "error" else f"error: {ev.data.get('reason')}"
            return out(verdict == "pass", why, verdict=verdict, event=ev.data, ack=ack)
        finally:
            subscriber.forget(waiter)

    def _earlier_result(self, subscriber: EventSubscriber, part_id: str, seq: int,
                        waiter: ResultWaiter) -> None:
        """The first result of a duplicate part, fetched by its ``seq`` (own socket: the
        subscriber may be driven by another thread)."""
        ep = subscriber.catchup_endpoint
        if ep is None:
            return
        try:
            with CatchupClient(ep, timeout=self.timeout, retries=0, keys=self.keys,
                               context=self.ctx) as c:
                for topic, ev in c.fetch(seq - 1, seq):
                    if ev.get("part_id") == part_id and topic.startswith("insp.result."):
                        waiter._resolve(Event(topic, ev, caught_up=True))
        except ClientError:
            pass  # the live stream may still bring it; otherwise the deadline rejects

    def close(self) -> None:
        """Close the socket."""
        self._req.close()

    def __enter__(self) -> TriggerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
