"""The PLC bridges' fail-safe core (:class:`StationLink`) against a CURVE station on loopback
made of the station's own event parts (journal, EventPublisher, RequestServer) whose trigger
answers and verdicts the test chooses: late passes, refusals, duplicates, silence."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from station.bridges.link import LinkSettings, StationLink
from station.client import CurveKeys

from support.bridge_peers import ScriptedStation


@pytest.fixture()
def curve(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    st_pub, st_sec = zmq.auth.create_certificates(str(keys), "station")
    _, br_sec = zmq.auth.create_certificates(str(keys), "bridge")
    return {"station_pub": Path(st_pub), "station_sec": Path(st_sec),
            "bridge_sec": Path(br_sec)}


def wait_for(pred: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end
        time.sleep(0.02)


def test_link_is_fail_safe_over_curve(tmp_path: Path, curve: dict[str, Path]) -> None:
    public, secret = zmq.auth.load_certificate(curve["station_sec"])
    st = ScriptedStation(tmp_path / "journal", secret, public)
    keys = CurveKeys.load(curve["bridge_sec"], curve["station_pub"])
    link = StationLink(LinkSettings(endpoints=st.endpoints, deadline_s=0.4, keys=keys,
                                    down_after=1.0, ack_timeout_s=0.2)).start()
    plain = StationLink(LinkSettings(endpoints=st.endpoints, deadline_s=0.4,
                                     down_after=1.0)).start()
    try:
        wait_for(lambda: link.ready, 5)
        ok = link.inspect("pass-1")
        assert ok.accepted and ok.verdict == "pass" and ok.seq is not None
        bad = link.inspect("defect-1")
        assert not bad.accepted and bad.verdict == "defect" and bad.addresses == ["X:3, Y:C"]
        err = link.inspect("error-1")
        assert not err.accepted and err.verdict == "error" and "alignment_failed" in err.why
        late = link.inspect("late-1")  # the pass comes after the 0.4 s deadline
        assert not late.accepted and late.why.startswith("no result") and late.seq is None
        busy = link.inspect("busy-1")
        assert not busy.accepted and busy.refused and "busy" in busy.why
        dup = link.inspect("dup-1")  # the station knew this id before: never its old verdict
        assert not dup.accepted and dup.refused and "duplicate" in dup.why
        again = link.inspect("pass-1")  # the PLC reused an id: refused by the bridge itself
        assert not again.accepted and again.refused
        generated = link.inspect(None)
        assert generated.part_id.startswith("BR-") and generated.accepted
        # without the keys nothing gets through: never ready, every part rejected at once
        assert not plain.ready and not plain.inspect("pass-2").accepted
        # silence: ready drops after down_after; the part in hand is rejected then
        hb = link.heartbeat_count
        assert hb >= 1
        st.silent.set()
        t0 = time.monotonic()
        pending = threading.Thread(target=lambda: setattr(st, "held", link.inspect("late-2")))
        pending.start()
        wait_for(lambda: not link.ready, 2.0)
        pending.join(2)
        down_s = time.monotonic() - t0
        assert not st.held.accepted  # its pass came after the deadline anyway
        refused = link.inspect("pass-3")
        assert not refused.accepted and refused.why == "station down" and refused.elapsed_s < 0.05
        count = link.heartbeat_count
        time.sleep(1.2)
        assert link.heartbeat_count == count  # stopped counting
        assert down_s <= 1.5
        # heartbeats again: ready, parts pass again
        st.silent.clear()
        wait_for(lambda: link.ready, 3)
        assert link.inspect("pass-4").accepted
    finally:
        link.close()
        plain.close()
        st.close()
