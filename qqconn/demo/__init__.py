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
:mod:`~qqconn.demo.stage` (a fake gateway and a manager per run, the tour's policy),
:mod:`~qqconn.demo.explain` (the ``why`` lines, read from the machine),
:mod:`~qqconn.demo.view` and :mod:`~qqconn.demo.style` (the live view, colour and glyphs),
:mod:`~qqconn.demo.verdict` (records and pure judgements), :mod:`~qqconn.demo.report` (what is
printed after each scenario and at the end), :mod:`~qqconn.demo.tour` (:func:`run_demo`).
"""

from __future__ import annotations

from qqconn.demo.scenarios import SCENARIOS, Scenario
from qqconn.demo.stage import demo_policy
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
