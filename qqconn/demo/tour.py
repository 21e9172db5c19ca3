"""The tour: play the scenarios in order on the live view, then judge and summarise.

structlog is configured for the tour only (the view is a processor fed by the library's own log
events) and restored afterwards, whatever happens.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

from qqconn.demo.report import print_path, print_result, print_summary
from qqconn.demo.scenarios import SCENARIOS
from qqconn.demo.stage import ScenarioFailed, Stage
from qqconn.demo.timescale import HEARTBEAT_S, demo_policy
from qqconn.demo.verdict import Check, DemoReport, ScenarioResult
from qqconn.demo.view import LiveView
from qqconn.policy import Policy

__all__ = ["run_demo"]


def _configure_structlog(view: LiveView) -> dict[str, Any]:
    previous = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, view.observe],
        wrapper_class=structlog.make_filtering_bound_logger(20),  # INFO
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    return previous


async def run_demo(
    scenarios: Iterable[str] | None = None,
    *,
    slow: float = 1.0,
    show_path: bool = False,
    out: TextIO | None = None,
    color: bool | None = None,
    policy: Policy | None = None,
) -> DemoReport:
    """Play the tour (all scenarios, or the named ones, in tour order) and judge it.

    ``policy`` replaces the tour's policy (tests use it to make qqconn misbehave on purpose).
    structlog is configured for the tour and restored afterwards.
    """
    names = list(SCENARIOS) if scenarios is None else list(scenarios)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {list(SCENARIOS)}"
        )
    if not slow > 0:
        raise ValueError(f"slow must be > 0, got {slow!r}")
    names = [n for n in SCENARIOS if n in names]
    view = LiveView(out if out is not None else sys.stdout, color=color)
    previous = _configure_structlog(view)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    try:
        scaled = "scaled down" if slow == 1 else f"scaled down, then stretched ×{slow:g}"
        view.line(
            view.s("qqconn demo", "bold")
            + ": the real ConnectionManager against the embedded fake QQ gateway (loopback only)"
        )
        view.line(
            view.s(
                f"time is {scaled}: heartbeat every {HEARTBEAT_S * slow:g} s, quick-drop "
                f"threshold {demo_policy(slow).quick_disconnect_threshold_s:g} s",
                "dim",
            )
        )
        for number, name in enumerate(names, 1):
            if view.closed:
                break
            scenario = SCENARIOS[name]
            result = ScenarioResult(name, scenario.title)
            stage = Stage(view, slow, policy if policy is not None else demo_policy(slow), result)
            view.heading(number, len(names), name, scenario.title, scenario.story)
            t = time.monotonic()
            try:
                await scenario.play(stage)
            except ScenarioFailed as exc:
                result.checks.append(Check("the scenario ran to its end", False, str(exc)))
            except Exception as exc:  # a bug of the tour itself: say so, play the rest
                detail = f"{type(exc).__name__}: {exc}"[:300]
                result.checks.append(Check("the scenario ran to its end", False, detail))
            result.wall_s = time.monotonic() - t
            print_result(view, result)
            if show_path:
                print_path(view, result)
            results.append(result)
        report = DemoReport(results, time.monotonic() - started, output_closed=view.closed)
        print_summary(view, report, show_path)
        return report
    finally:
        structlog.configure(**previous)
