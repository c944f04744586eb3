"""Decision policy (DESIGN §5.4): fail-safe combinations of the judges' verdicts, by judge name."""

from __future__ import annotations

import itertools

import pytest

from pipeline.decision import decide, validate_policy
from pipeline.verdicts import Defect, JudgeResult, Verdict

V = Verdict


def jr(judge: str, verdict: Verdict) -> JudgeResult:
    defects = [Defect("X:3, Y:C", "3", "C", 9.0, judge=judge)] if verdict is V.DEFECT else []
    return JudgeResult(judge, verdict, defects, reason="boom" if verdict is V.ERROR else None)


def two(m: Verdict, v: Verdict) -> dict[str, JudgeResult]:
    return {"metric": jr("metric", m), "vlm": jr("vlm", v)}


METRIC = (V.PASS, V.DEFECT, V.ERROR)
VLM = (V.PASS, V.DEFECT, V.ERROR, V.UNCERTAIN)


@pytest.mark.parametrize("policy", ("any", "all", "both", "metric", "vlm"))
@pytest.mark.parametrize(("m", "v"), list(itertools.product(METRIC, VLM)))
def test_never_pass_unless_judged_pass(policy: str, m: Verdict, v: Verdict) -> None:
    verdict, _, defects = decide(policy, two(m, v))
    assert verdict in (V.PASS, V.DEFECT, V.ERROR)  # uncertain is never a part verdict
    consulted = {"metric": [m], "vlm": [v]}.get(policy, [m, v])
    if verdict is V.PASS:
        assert V.ERROR not in consulted and V.UNCERTAIN not in consulted
        assert V.PASS in consulted
        assert defects == []
    if policy in ("any", "metric", "vlm"):
        assert (verdict is V.PASS) == all(c is V.PASS for c in consulted)


def test_any_table() -> None:
    assert decide("any", two(V.PASS, V.PASS))[0] is V.PASS
    assert decide("any", two(V.DEFECT, V.PASS))[0] is V.DEFECT
    assert decide("any", two(V.PASS, V.DEFECT))[0] is V.DEFECT
    verdict, reason, _ = decide("any", two(V.PASS, V.UNCERTAIN))
    assert verdict is V.DEFECT and "uncertain" in reason
    verdict, reason, _ = decide("any", two(V.PASS, V.ERROR))
    assert verdict is V.ERROR and "vlm: boom" in reason
    # a defect found by one judge rejects the part even when the other failed
    assert decide("any", two(V.DEFECT, V.ERROR))[0] is V.DEFECT
    assert decide("any", {"metric": jr("metric", V.PASS)})[0] is V.PASS
    assert decide("any", {"metric": jr("metric", V.ERROR)})[0] is V.ERROR


def test_any_over_three_named_judges() -> None:
    judges = {"metric": jr("metric", V.PASS), "variation": jr("variation", V.PASS),
              "toy": jr("toy", V.PASS)}
    assert decide("any", judges)[0] is V.PASS
    judges["variation"] = jr("variation", V.DEFECT)
    verdict, _, defects = decide("any", judges)
    assert verdict is V.DEFECT and [d.judge for d in defects] == ["variation"]
    judges["variation"] = jr("variation", V.UNCERTAIN)
    assert decide("any", judges)[:2] == (V.DEFECT, "variation: uncertain")


def test_one_judge_by_name_ignores_the_others() -> None:
    judges = {"metric": jr("metric", V.PASS), "toy": jr("toy", V.DEFECT)}
    assert decide("metric", judges) == (V.PASS, None, [])
    verdict, _, defects = decide("toy", judges)
    assert verdict is V.DEFECT and [d.judge for d in defects] == ["toy"]
    # the named judge's own error or uncertainty is never a pass
    assert decide("toy", {"metric": jr("metric", V.PASS), "toy": jr("toy", V.ERROR)})[0] \
        is V.ERROR
    assert decide("toy", {"metric": jr("metric", V.PASS),
                          "toy": jr("toy", V.UNCERTAIN)})[0] is V.DEFECT


def test_all_is_lenient_but_never_passes_errors() -> None:
    for policy in ("all", "both"):
        assert decide(policy, two(V.DEFECT, V.PASS))[0] is V.PASS
        assert decide(policy, two(V.DEFECT, V.DEFECT))[0] is V.DEFECT
        assert decide(policy, two(V.PASS, V.ERROR))[0] is V.ERROR
        assert decide(policy, two(V.PASS, V.UNCERTAIN))[0] is V.DEFECT


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="unknown policy 'majority'"):
        decide("majority", {"metric": jr("metric", V.PASS)})
    with pytest.raises(ValueError, match=r"unknown policy 'vlm'.*\(metric\)"):
        decide("vlm", {"metric": jr("metric", V.PASS)})
    with pytest.raises(ValueError, match="at least two judges"):
        validate_policy("both", ["metric"])
    with pytest.raises(ValueError, match="no judges"):
        validate_policy("any", [])
    assert validate_policy("toy", ["metric", "toy"]) == "toy"
    assert validate_policy("all", ["metric", "toy"]) == "all"
