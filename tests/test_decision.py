"""Decision policy (DESIGN §5.4): fail-safe combinations of the metric and VLM verdicts."""

from __future__ import annotations

import itertools

import pytest

from pipeline.decision import POLICIES, decide
from pipeline.verdicts import Defect, JudgeResult, Verdict

V = Verdict


def jr(judge: str, verdict: Verdict) -> JudgeResult:
    defects = [Defect("X:3, Y:C", "3", "C", 9.0, judge=judge)] if verdict is V.DEFECT else []
    return JudgeResult(judge, verdict, defects, reason="boom" if verdict is V.ERROR else None)


METRIC = (V.PASS, V.DEFECT, V.ERROR)
VLM = (V.PASS, V.DEFECT, V.ERROR, V.UNCERTAIN)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("m", "v"), list(itertools.product(METRIC, VLM)))
def test_never_pass_unless_judged_pass(policy: str, m: Verdict, v: Verdict) -> None:
    verdict, _, defects = decide(policy, jr("metric", m), jr("vlm", v))
    assert verdict in (V.PASS, V.DEFECT, V.ERROR)  # uncertain is never a part verdict
    consulted = {"metric": [m], "vlm": [v], "any": [m, v], "both": [m, v]}[policy]
    if verdict is V.PASS:
        assert V.ERROR not in consulted and V.UNCERTAIN not in consulted
        assert V.PASS in consulted
        assert defects == []
    if policy in ("any", "metric", "vlm"):
        assert (verdict is V.PASS) == all(c is V.PASS for c in consulted)


def test_any_table() -> None:
    assert decide("any", jr("metric", V.PASS), jr("vlm", V.PASS))[0] is V.PASS
    assert decide("any", jr("metric", V.DEFECT), jr("vlm", V.PASS))[0] is V.DEFECT
    assert decide("any", jr("metric", V.PASS), jr("vlm", V.DEFECT))[0] is V.DEFECT
    verdict, reason, _ = decide("any", jr("metric", V.PASS), jr("vlm", V.UNCERTAIN))
    assert verdict is V.DEFECT and "uncertain" in reason
    verdict, reason, _ = decide("any", jr("metric", V.PASS), jr("vlm", V.ERROR))
    assert verdict is V.ERROR and "vlm: boom" in reason
    # a defect found by one judge rejects the part even when the other failed
    assert decide("any", jr("metric", V.DEFECT), jr("vlm", V.ERROR))[0] is V.DEFECT
    assert decide("any", jr("metric", V.PASS), None)[0] is V.PASS
    assert decide("any", jr("metric", V.ERROR), None)[0] is V.ERROR


def test_both_is_lenient_but_never_passes_errors() -> None:
    assert decide("both", jr("metric", V.DEFECT), jr("vlm", V.PASS))[0] is V.PASS
    assert decide("both", jr("metric", V.DEFECT), jr("vlm", V.DEFECT))[0] is V.DEFECT
    assert decide("both", jr("metric", V.PASS), jr("vlm", V.ERROR))[0] is V.ERROR


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        decide("majority", jr("metric", V.PASS), None)
    with pytest.raises(ValueError, match="needs the VLM"):
        decide("vlm", jr("metric", V.PASS), None)
