"""``qqconn demo``: the tour runs in-process against the fake gateway and its verdict is real.

The scenarios here run at full speed (a few seconds each); a deliberately mis-configured manager
shows the verdict can fail (the pure verdict functions: test_demo_verdict.py; the terminal
styling: test_demo_style.py).
"""

from __future__ import annotations

import io
from dataclasses import fields, replace

import pytest
import structlog

from qqconn import cli
from qqconn import demo as demo_mod
from qqconn.cli.demo import SCENARIO_NAMES
from qqconn.demo import (
    Check,
    DemoReport,
    ScenarioResult,
    demo_policy,
    run_demo,
)
from qqconn.demo.timescale import UNSCALED


async def test_zombie_scenario_behaves_and_shows_the_tour() -> None:
    """Zombie scenario passes; the view shows transitions, reasons, summary and statechart path."""
    out = io.StringIO()
    before = structlog.get_config()
    report = await run_demo(["zombie"], out=out, color=False, show_path=True)
    text = out.getvalue()
    assert report.ok, report.failures()
    assert structlog.get_config() == before  # the tour's logging set-up is undone
    (result,) = report.results
    (fault,) = result.faults
    assert fault.detect_s is not None and fault.recover_s is not None
    assert result.delivery is not None and result.delivery.sent > 0
    assert not result.delivery.lost and not result.delivery.duplicated
    assert "ALIVE → BACKOFF" in text and "zombie: heartbeat not acknowledged" in text
    assert "why " in text and "quick 0/3" in text
    assert "summary" in text and "path:" in text and "statechart edges taken" in text
    assert "\033[" not in text  # no colour codes when asked for none


async def test_seeds_loop_scenario_ends_in_fatal_after_three_sockets() -> None:
    """The seed's loop (close frames, then drops): FATAL after exactly 3 sockets, host told once."""
    out = io.StringIO()
    report = await run_demo(["seeds-loop"], out=out, color=False)
    assert report.ok, report.failures()
    (result,) = report.results
    assert result.end_state == "fatal"
    assert [f.outcome for f in result.faults] == ["FATAL", "FATAL"]
    assert out.getvalue().count("QUICK_DROPPED → FATAL") == 2


async def test_verdict_fails_when_the_manager_allows_a_fourth_socket() -> None:
    """A manager configured to tolerate 4 quick drops opens a 4th socket: the verdict says so."""
    misbehaving = replace(demo_policy(), max_quick_disconnects=4)
    report = await run_demo(["seeds-loop"], out=io.StringIO(), color=False, policy=misbehaving)
    assert not report.ok
    failures = "\n".join(report.failures())
    assert "exactly 3 sockets opened, no 4th" in failures and "4 sockets" in failures


class _ClosingPipe(io.StringIO):
    """An output whose reader goes away after a few lines (`qqconn demo | head -5`)."""

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= 5:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


async def test_a_closed_output_never_reaches_the_manager() -> None:
    """A broken pipe in the live view never breaks the manager; the tour stops and says why."""
    report = await run_demo(["zombie", "seeds-loop"], out=_ClosingPipe(), color=False)
    assert report.output_closed
    assert [r.name for r in report.results] == ["zombie"]
    assert report.results[0].ok, report.results[0].failures()


def test_demo_command_exits_nonzero_and_says_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`qqconn demo` exits 1 and lists the failed checks when the verdict fails."""
    failing = DemoReport(
        [ScenarioResult("zombie", "t", checks=[Check("zombie detected", False, "never")])], 1.0
    )
    seen: dict[str, object] = {}

    async def fake_run_demo(scenarios: object, **kwargs: object) -> DemoReport:
        seen.update(kwargs, scenarios=scenarios)
        return failing

    monkeypatch.setattr(demo_mod, "run_demo", fake_run_demo)
    status = cli.main(["demo", "--scenario", "zombie", "--slow", "2", "--path", "--no-color"])
    err = capsys.readouterr().err
    assert status == 1
    assert "zombie: zombie detected (never)" in err
    assert seen == {"scenarios": ["zombie"], "slow": 2.0, "show_path": True, "color": False}


@pytest.mark.parametrize("argv", [["--slow", "0"], ["--slow", "x"], ["--scenario", "nope"]])
def test_demo_options_are_validated(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--slow must be a positive number and --scenario a known name: else exit 2."""
    assert cli.main(["demo", *argv]) == 2
    assert "qqconn demo" in capsys.readouterr().err


def test_the_command_line_offers_exactly_the_tour_scenarios() -> None:
    """`qqconn demo --scenario` choices are the demo's scenarios, in tour order."""
    assert list(SCENARIO_NAMES) == list(demo_mod.SCENARIOS)


def test_slow_stretches_every_duration_of_the_policy() -> None:
    """demo_policy(slow) multiplies every *_s field (tuples included) but the protocol-bound
    UNSCALED ones, and nothing else; the result is a valid Policy even at ×10."""
    base, slow = demo_policy(), demo_policy(3.0)
    names = {f.name for f in fields(base)}
    assert names >= UNSCALED  # the exceptions name real fields
    for name in sorted(names):
        was, now = getattr(base, name), getattr(slow, name)
        if name.endswith("_s") and name not in UNSCALED:
            want = tuple(3 * v for v in was) if isinstance(was, tuple) else 3 * was
            assert now == want, name
        else:
            assert now == was, name
    assert demo_policy(10.0).token_refresh_margin_s == base.token_refresh_margin_s


async def test_rotation_scenario_behaves() -> None:
    """op 7 then 4009 while events flow: resumed twice, nothing lost, qqconn closed the socket."""
    report = await run_demo(["rotation"], out=io.StringIO(), color=False)
    assert report.ok, report.failures()
