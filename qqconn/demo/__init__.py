"""``qqconn demo``: a guided tour of the failures qqconn exists for, against the embedded fake gateway.

No network, no credentials: every scenario starts a :class:`~qqconn.testing.FakeGateway` on
loopback and a real :class:`~qqconn.ConnectionManager` against it, injects one fault, and
watches. The live view is fed by the library's own ``qqconn.transition`` log events (structlog
is configured here, for the tour only), so each line is printed at the moment the machine
takes the edge, with the counters and the guard's reason read from the machine itself.

The verdict is computed, never assumed:

* lost / duplicated events compare the seqs the fake gateway accepted (``gw.accepted()``) with
  the seqs the host callback received;
* detection and recovery times come from the fake's records (op 7 sent, last ACK sent, sockets
  opened and closed) and the time each transition was logged, all on ``time.monotonic()``;
* the seed's loop must end in FATAL after exactly three sockets, notify the host once, and open
  no fourth socket.

Time is scaled down (a 1 s quick-drop threshold, 0.5 s heartbeats) so the tour takes seconds;
``--slow FACTOR`` stretches every duration, the policy's included, by FACTOR.

Modules: :mod:`~qqconn.demo.scenarios` (what each scenario does and checks),
:mod:`~qqconn.demo.stage` (a fake gateway and a manager per run),
:mod:`~qqconn.demo.timescale` (the tour's policy and durations),
:mod:`~qqconn.demo.explain` (the ``why`` lines, read from the machine),
:mod:`~qqconn.demo.view` and :mod:`~qqconn.demo.style` (the live view, colour and glyphs),
:mod:`~qqconn.demo.verdict` (records and pure judgements), :mod:`~qqconn.demo.report` (what is
printed after each scenario and at the end), :mod:`~qqconn.demo.tour` (:func:`run_demo`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qqconn.demo.scenarios import SCENARIOS, Scenario
    from qqconn.demo.timescale import demo_policy
    from qqconn.demo.tour import run_demo
    from qqconn.demo.verdict import (
        Check,
        Delivery,
        DemoReport,
        FaultTiming,
        ScenarioResult,
        Step,
        delivery_checks,
        judge_delivery,
    )
    from qqconn.demo.view import LiveView

#: Where each public name lives. Names are imported on first use, so that the pure modules
#: (verdict, explain, style, timescale) can be used without importing the driver.
_HOMES = {
    "SCENARIOS": "qqconn.demo.scenarios",
    "Scenario": "qqconn.demo.scenarios",
    "demo_policy": "qqconn.demo.timescale",
    "run_demo": "qqconn.demo.tour",
    "Check": "qqconn.demo.verdict",
    "DemoReport": "qqconn.demo.verdict",
    "Delivery": "qqconn.demo.verdict",
    "FaultTiming": "qqconn.demo.verdict",
    "ScenarioResult": "qqconn.demo.verdict",
    "Step": "qqconn.demo.verdict",
    "delivery_checks": "qqconn.demo.verdict",
    "judge_delivery": "qqconn.demo.verdict",
    "LiveView": "qqconn.demo.view",
}

__all__ = [
    "SCENARIOS",
    "Check",
    "Delivery",
    "DemoReport",
    "FaultTiming",
    "LiveView",
    "Scenario",
    "ScenarioResult",
    "Step",
    "delivery_checks",
    "demo_policy",
    "judge_delivery",
    "run_demo",
]
assert sorted(__all__) == sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'qqconn.demo' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
