"""The subscriber side of the event protocol: every ``seq`` once, in order, gaps filled.

:class:`EventSubscriber` connects a SUB socket to the station's PUB endpoint and turns what
arrives into a stream of :class:`Event` (in ``seq`` order, each ``seq`` exactly once, missing
ones fetched from the catch-up socket) and :class:`Notice` (connected, gap, lost, down, up,
restart).  It follows the bridge contract of ``docs/EVENTS.md``:

* a ``seq`` jump, or a heartbeat whose ``last_seq`` is ahead, is filled from the catch-up socket
  in bounded batches before the newer event is delivered;
* no heartbeat for ``down_after`` seconds (default 3) is a ``down`` notice, the next heartbeat an
  ``up``; a new ``boot`` is a ``restart`` notice;
* ``since`` resumes from a persisted position: everything after it is fetched first.

The socket always subscribes to every topic (``insp.``): a subscriber that received only some
topics would see a ``seq`` gap at every event of another topic.  ``topics`` only filters what is
delivered.  One thread at a time drives a subscriber (:meth:`poll`, iteration, :meth:`run`,
:meth:`start`, or :meth:`aiter` from asyncio); :meth:`expect` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from station.client.catchup import CatchupClient
from station.client.request import ClientError, connectable, derive_catchup
from station.events import RESULT_PREFIX, TOPIC_HEARTBEAT, decode

if TYPE_CHECKING:
    from station.client.keys import CurveKeys

ALL_TOPICS = ("insp.",)
BACKLOG_MAX = 10_000
DRAIN_BUDGET_S = 0.0005


@dataclass(frozen=True)
class Event:
    """One message of the station: ``topic`` and its JSON ``data``; ``caught_up`` when it came
    from the catch-up socket instead of the live stream."""

    topic: str
    data: dict[str, Any]
    caught_up: bool = False

    @property
    def seq(self) -> int | None:
        """The event's ``seq`` (``None`` for heartbeats)."""
        s = self.data.get("seq")
        return s if isinstance(s, int) else None

    @property
    def is_result(self) -> bool:
        """A part's verdict (``insp.result.*``)."""
        return self.topic.startswith(RESULT_PREFIX)

    @property
    def is_heartbeat(self) -> bool:
        """A heartbeat (no ``seq``; carries ``last_seq``)."""
        return self.topic == TOPIC_HEARTBEAT


@dataclass(frozen=True)
class Notice:
    """Something the subscriber noticed about the stream.

    ``kind``: ``connected`` (first heartbeat), ``resume`` (catching up from ``since``), ``gap``
    (missed ``seq``s, being fetched), ``lost`` (some could not be fetched: rotated out of the
    journal or the station did not answer), ``down`` (no heartbeat for ``down_after`` s),
    ``up`` (heartbeats again), ``restart`` (a new ``boot``), ``seq_reset`` (the station's ``seq``
    went back: its state directory was replaced; positions are re-based).  ``message`` is a
    sentence for people, ``data`` the figures.
    """

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


Item = Event | Notice


@dataclass
class SubscriberStats:
    """Counters since the subscriber was made."""

    delivered: int = 0
    gaps: int = 0
    missed: int = 0
    recovered: int = 0
    lost: int = 0
    heartbeat_losses: int = 0
    restarts: int = 0
    malformed: int = 0
    duplicates: int = 0


class ResultWaiter:
    """The first result for one ``part_id`` (see :meth:`EventSubscriber.expect`)."""

    def __init__(self, part_id: str) -> None:
        self.part_id = part_id
        self.event: Event | None = None
        self.failure: str | None = None  # station down while waiting
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        """A result (or a failure) is there."""
        return self._done.is_set()

    def _resolve(self, event: Event | None, failure: str | None = None) -> None:
        if not self._done.is_set():
            self.event, self.failure = event, failure
            self._done.set()


class EventSubscriber:
    """Subscriber with gap catch-up, heartbeat-loss and restart detection.

    ``endpoint``: the PUB endpoint.  ``catchup``: the catch-up endpoint (default: announced in
    heartbeats, else the PUB port + 1).  ``topics``: prefixes of the topics to deliver.
    ``since``: deliver every event after this ``seq`` first (``None``: only what comes from now
    on).  ``down_after``: seconds without a heartbeat before a ``down`` notice.  ``timeout``: per
    catch-up request; ``batch``: events per catch-up request.  ``keys``: CURVE keys.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        topics: Iterable[str] = ALL_TOPICS,
        catchup: str | None = None,
        since: int | None = None,
        down_after: float = 3.0,
        timeout: float = 2.0,
        batch: int = 500,
        keys: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.down_after = float(down_after)
        self.timeout = float(timeout)
        self.batch = int(batch)
        self.keys = keys
        self.ctx = context or zmq.Context.instance()
        self._catchup_given = catchup
        self._catchup_announced: str | None = None
        self._catchup: CatchupClient | None = None
        self.last_seq: int | None = since
        self._resuming = since is not None
        self.boot: str | None = None
        self.station: str | None = None
        self.last_heartbeat: dict[str, Any] | None = None
        self.down = False
        self.stats = SubscriberStats()
        self._t0 = time.monotonic()
        self._last_hb: float | None = None
        self._connected = threading.Event()
        # items met while waiting (wait_connected, wait_result) for the next poll; bounded so a
        # client that only calls trigger_and_wait does not grow without end
        self._backlog: deque[Item] = deque(maxlen=BACKLOG_MAX)
        self._waiters: dict[str, list[ResultWaiter]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._sock = self.ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        if keys is not None:
            keys.apply(self._sock)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"insp.")
        self._sock.connect(endpoint)

    # ------------------------------------------------------------------------------ public
    @property
    def socket(self) -> zmq.Socket:
        """The SUB socket (for monitoring; do not receive from it)."""
        return self._sock

    @property
    def catchup_endpoint(self) -> str | None:
        """Where missing events are fetched from: given, announced, or PUB port + 1."""
        return (self._catchup_given or self._catchup_announced
                or derive_catchup(self.endpoint))

    @property
    def connected(self) -> bool:
        """A heartbeat has been received (the subscription has reached the station)."""
        return self._connected.is_set()

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat (``None`` before the first)."""
        return None if self._last_hb is None else time.monotonic() - self._last_hb

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block until the first heartbeat (ZeroMQ drops messages until the subscription has
        reached the station: trigger only after this).  Items met on the way stay queued for
        the next :meth:`poll` (the newest :data:`BACKLOG_MAX`).  False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._driven_elsewhere():
                self._connected.wait(left)
            else:
                self._backlog.extend(self._pump(min(left, 0.1)))
        return True

    def poll(self, timeout: float = 0.1) -> list[Item]:
        """Wait up to ``timeout`` seconds for items; returns those ready (maybe none)."""
        if self._backlog:
            out = list(self._backlog)
            self._backlog.clear()
            return out + self._pump(0.0)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            out = self._pump(max(0.0, deadline - time.monotonic()))
            if out or time.monotonic() >= deadline or self._closed:
                return out

    def __iter__(self) -> Iterator[Item]:
        """Items forever (until :meth:`close` or :meth:`stop`)."""
        while not self._closed and not self._stop.is_set():
            yield from self.poll(0.1)

    def run(self, on_event: Callable[[Event], Any],
            on_notice: Callable[[Notice], Any] | None = None, *,
            stop: threading.Event | None = None, duration: float | None = None) -> None:
        """Call ``on_event``/``on_notice`` for every item until ``stop`` is set, :meth:`stop`
        is called or ``duration`` seconds passed."""
        end = None if duration is None else time.monotonic() + duration
        while not self._closed and not self._stop.is_set() and not (stop and stop.is_set()):
            if end is not None and time.monotonic() >= end:
                return
            for item in self.poll(0.1 if end is None else min(0.1, end - time.monotonic())):
                if isinstance(item, Event):
                    on_event(item)
                elif on_notice is not None:
                    on_notice(item)

    def start(self, on_event: Callable[[Event], Any],
              on_notice: Callable[[Notice], Any] | None = None) -> threading.Thread:
        """:meth:`run` in a daemon thread; :meth:`stop` ends it."""
        if self._thread is not None and self._thread.is_alive():
            raise ClientError("this subscriber already runs in a thread")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(on_event, on_notice),
                                        name="event-subscriber", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 2.0) -> None:
        """End :meth:`run` / iteration / the thread of :meth:`start`."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    async def aiter(self, poll_s: float = 0.1) -> AsyncIterator[Item]:
        """Items for asyncio code (``async for item in sub.aiter()``); the blocking socket work
        runs in the loop's default executor, one call at a time."""
        loop = asyncio.get_running_loop()
        while not self._closed and not self._stop.is_set():
            for item in await loop.run_in_executor(None, self.poll, poll_s):
                yield item

    def expect(self, part_id: str) -> ResultWaiter:
        """Register interest in the first result for ``part_id`` delivered from now on (call it
        *before* triggering); resolved as the subscriber delivers it, or failed while the
        station is down (bridge rule 2: reject every part until heartbeats resume)."""
        w = ResultWaiter(part_id)
        if self.down:
            w._resolve(None, "station down")
            return w
        with self._lock:
            self._waiters.setdefault(part_id, []).append(w)
        return w

    def forget(self, waiter: ResultWaiter) -> None:
        """Drop a waiter registered by :meth:`expect`."""
        with self._lock:
            lst = self._waiters.get(waiter.part_id, [])
            if waiter in lst:
                lst.remove(waiter)
            if not lst:
                self._waiters.pop(waiter.part_id, None)

    def wait_result(self, waiter: ResultWaiter, timeout: float) -> Event | None:
        """Wait for ``waiter``; drives the subscriber itself unless a thread of :meth:`start`
        does (items met on the way stay queued for the next :meth:`poll`, the newest
        :data:`BACKLOG_MAX`)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not waiter.done:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._driven_elsewhere():
                waiter._done.wait(left)
            else:
                self._backlog.extend(self._pump(min(left, 0.1)))
        return waiter.event

    def fetch(self, since: int, upto: int | None = None) -> list[Event]:
        """Journaled events after ``since`` (up to ``upto``) straight from the catch-up socket,
        outside the stream (nothing is delivered or counted)."""
        return [Event(t, e, caught_up=True) for t, e in self._catchup_client().fetch(since, upto)]

    def close(self) -> None:
        """Stop and close the sockets."""
        self.stop()
        self._closed = True
        with self._lock:
            for lst in self._waiters.values():
                for w in lst:
                    w._resolve(None, "subscriber closed")
            self._waiters.clear()
        self._sock.close(linger=0)
        if self._catchup is not None:
            self._catchup.close()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ inside
    def _driven_elsewhere(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive() and t is not threading.current_thread()

    def _catchup_client(self) -> CatchupClient:
        ep = self.catchup_endpoint
        if ep is None:
            raise ClientError("no catch-up endpoint known (give catchup=…)")
        if self._catchup is None or self._catchup.endpoint != ep:
            if self._catchup is not None:
                self._catchup.close()
            # no retry: while a request waits, heartbeat loss cannot be noticed
            self._catchup = CatchupClient(ep, timeout=self.timeout, batch=self.batch,
                                          retries=0, keys=self.keys, context=self.ctx)
        return self._catchup

    def _pump(self, wait: float) -> list[Item]:
        """Receive for at most ``wait`` seconds (less when the heartbeat deadline comes first),
        process what came; returns the items produced."""
        out: list[Item] = []
        if self._closed:
            return out
        self._check_heartbeat(out)
        if not self.down:
            ref = self._last_hb if self._last_hb is not None else self._t0
            wait = min(wait, max(0.0, ref + self.down_after - time.monotonic()))
        if self._sock.poll(wait * 1000):
            # drain what is queued, but hand items out within DRAIN_BUDGET_S: under a burst the
            # first events must not wait for the last ones to be decoded
            t_end = time.monotonic() + DRAIN_BUDGET_S
            for _ in range(1000):
                if out and time.monotonic() >= t_end:
                    break
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    topic, event = decode(frames)
                except (ValueError, UnicodeDecodeError):
                    self.stats.malformed += 1
                    continue
                self._on_live(topic, event, out)
        self._check_heartbeat(out)
        return out

    def _check_heartbeat(self, out: list[Item]) -> None:
        if self.down:
            return
        now = time.monotonic()
        ref = self._last_hb if self._last_hb is not None else self._t0
        if now - ref < self.down_after:
            return
        self.down = True
        self.stats.heartbeat_losses += 1
        what = (f"no heartbeat for {now - ref:.1f} s" if self._last_hb is not None
                else f"no heartbeat within {self.down_after:g} s of connecting")
        out.append(Notice("down", f"station down: {what} from {self.endpoint}",
                          {"silent_s": round(now - ref, 3), "last_seq": self.last_seq}))
        with self._lock:
            waiters = [w for lst in self._waiters.values() for w in lst]
        for w in waiters:
            w._resolve(None, "station down")

    def _on_live(self, topic: str, event: dict[str, Any], out: list[Item]) -> None:
        boot = event.get("boot")
        if isinstance(boot, str) and boot != self.boot:
            if self.boot is not None:
                self.stats.restarts += 1
                out.append(Notice("restart", f"station restarted: boot {self.boot} → {boot}",
                                  {"old_boot": self.boot, "boot": boot}))
                self._check_seq_reset(topic, event, out)
            self.boot = boot
        if topic == TOPIC_HEARTBEAT:
            self._on_heartbeat(event, out)
            return
        seq = event.get("seq")
        if isinstance(seq, int) and self.last_seq is not None:
            if seq <= self.last_seq:
                self.stats.duplicates += 1  # already delivered (caught up before it came live)
                return
            if seq > self.last_seq + 1:
                self._fill(self.last_seq, seq - 1, "seq gap", out)
        self._deliver(Event(topic, event), out)

    def _check_seq_reset(self, topic: str, event: dict[str, Any], out: list[Item]) -> None:
        now = event.get("last_seq") if topic == TOPIC_HEARTBEAT else event.get("seq")
        if not isinstance(now, int) or self.last_seq is None:
            return
        newest = now if topic == TOPIC_HEARTBEAT else now - 1
        if newest < self.last_seq:
            out.append(Notice("seq_reset", f"the station's seq went back from {self.last_seq} "
                                           f"to {newest} (new state directory?): following it",
                              {"old_seq": self.last_seq, "seq": newest}))
            self.last_seq = newest

    def _on_heartbeat(self, event: dict[str, Any], out: list[Item]) -> None:
        self._last_hb = time.monotonic()
        self.last_heartbeat = event
        if isinstance(event.get("station"), str):
            self.station = event["station"]
        eps = event.get("endpoints")
        if isinstance(eps, dict) and isinstance(eps.get("catchup"), str):
            self._catchup_announced = connectable(eps["catchup"], self.endpoint)
        last = event.get("last_seq")
        if self.down:
            self.down = False
            out.append(Notice("up", f"station {self.station} is back (state "
                                    f"{event.get('state')}, seq {last})",
                              {"state": event.get("state"), "last_seq": last}))
        if not self._connected.is_set():
            self._connected.set()
            out.append(Notice("connected", f"connected to {self.station} at {self.endpoint} "
                                           f"(boot {self.boot}, state {event.get('state')}, "
                                           f"seq {last})",
                              {"station": self.station, "boot": self.boot,
                               "state": event.get("state"), "last_seq": last}))
        if isinstance(last, int):
            if self.last_seq is None:
                self.last_seq = last  # baseline: history before we came is not news
            elif last > self.last_seq:
                self._fill(self.last_seq, last, "heartbeat is ahead", out)
        self._resuming = False
        self._deliver(Event(TOPIC_HEARTBEAT, event), out)

    def _fill(self, after: int, upto: int, why: str, out: list[Item]) -> None:
        """Fetch ``after < seq ≤ upto`` from the catch-up socket and deliver it."""
        missing = upto - after
        resume = self._resuming
        ep = self.catchup_endpoint
        if resume:
            out.append(Notice("resume", f"catching up seq {after + 1}..{upto} ({missing}) "
                                        f"from {ep}", {"first": after + 1, "last": upto}))
        else:
            self.stats.gaps += 1
            self.stats.missed += missing
            out.append(Notice("gap", f"{why}: missed seq {after + 1}..{upto} ({missing}), "
                                     f"catching up from {ep}",
                              {"first": after + 1, "last": upto, "missing": missing,
                               "why": why}))
        got, error = 0, None
        try:
            for topic, ev in self._catchup_client().fetch(after, upto):
                if self.last_seq is not None and ev["seq"] <= self.last_seq:
                    continue
                self._deliver(Event(topic, ev, caught_up=True), out)
                got += 1
        except (ClientError, zmq.ZMQError) as exc:
            error = str(exc)
        if not resume:
            self.stats.recovered += got
        if got < missing and (self.last_seq is None or self.last_seq < upto):
            lost = missing - got
            if not resume:
                self.stats.lost += lost
            cause = error or "rotated out of the journal"
            out.append(Notice("lost", f"{lost} event(s) up to seq {upto} could not be "
                                      f"recovered ({cause})",
                              {"lost": lost, "last": upto, "error": error}))
            self.last_seq = upto  # never wait for them again: their parts are rejected
        self._resuming = False

    def _deliver(self, ev: Event, out: list[Item]) -> None:
        seq = ev.seq
        if seq is not None:
            self.last_seq = seq
            self._resuming = False
        if ev.is_result:
            pid = ev.data.get("part_id")
            with self._lock:
                waiters = self._waiters.pop(pid, []) if isinstance(pid, str) else []
            for w in waiters:
                w._resolve(ev)
        if ev.topic.startswith(self.topics):
            self.stats.delivered += 1
            out.append(ev)
