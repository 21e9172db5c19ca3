"""The demo's verdict: pure judgements over fabricated records, so each rule is seen to fail."""

from __future__ import annotations

from qqconn.demo import Check, DemoReport, ScenarioResult, delivery_checks, judge_delivery


def test_judge_delivery_finds_lost_duplicated_and_reordered_events() -> None:
    """Fabricated deliveries: a lost, a duplicated and an out-of-order seq each fail a check."""
    accepted = [2, 3, 4, 5, 6]
    assert all(c.ok for c in delivery_checks(judge_delivery(accepted, [2, 3, 4, 5, 6])))
    lost = judge_delivery(accepted, [2, 3, 5, 6])
    assert lost.lost == (4,)
    dup = judge_delivery(accepted, [2, 3, 4, 4, 5, 6])
    assert dup.duplicated == (4,)
    reordered = judge_delivery(accepted, [2, 4, 3, 5, 6])
    assert reordered.out_of_order == (3,)
    for d, name in (
        (lost, "no event lost"),
        (dup, "no event duplicated"),
        (reordered, "events in s order"),
    ):
        failed = [c for c in delivery_checks(d) if not c.ok]
        assert [c.name for c in failed] == [name]


def test_a_single_failed_check_fails_the_report() -> None:
    """One failed check in one scenario makes the whole report fail, and names it."""
    good = ScenarioResult("zombie", "t", checks=[Check("a", True)])
    bad = ScenarioResult(
        "rotation", "t", checks=[Check("a", True), Check("no event lost", False, "lost s = 7")]
    )
    assert DemoReport([good], 1.0).ok
    report = DemoReport([good, bad], 1.0)
    assert not report.ok
    assert report.failures() == ["rotation: no event lost (lost s = 7)"]
    assert not DemoReport([ScenarioResult("empty", "t")], 1.0).ok  # no checks is no verdict
