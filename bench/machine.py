"""How fast is the connection machine? µs per event through ``ConnectionMachine.handle``.

Two workloads, each against a baseline measured in the same run:

* **lifecycle**: a live session's steady heartbeat cycle, ``TimerFired(HEARTBEAT)`` then
  ``HeartbeatAcked``, through the ``transitions`` table. Baseline: a plain class that finds the
  handler in a dict keyed by event type and does the same bookkeeping and the same commands.
* **dispatch**: ``DispatchReceived`` with a rising ``s``, the fast path that bypasses the
  table. Baseline: the same dict lookup plus the same epoch check and ``s`` bookkeeping.

Each figure is the median of ``REPEATS`` runs of ``EVENTS`` events (min–max alongside). The
machine logs to a logger that drops everything, so the figures are the machine's own cost, not
the host's logging configuration. Also reported: the size and time of the exhaustive
exploration of ``tests/explore.py``.

Run ``python bench/machine.py`` (``--json FILE`` also writes the result as JSON);
``bench/run.py`` may call :func:`measure` and :func:`markdown`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for `tests.explore` when run as a script

from qqconn import commands as cmd  # noqa: E402
from qqconn import events as ev  # noqa: E402
from qqconn.events import Timer  # noqa: E402
from qqconn.machine import ConnectionMachine  # noqa: E402
from qqconn.testing.events import dispatch_received, ready_received  # noqa: E402
from tests import explore  # noqa: E402

REPEATS = 7
EVENTS = 20_000
HELLO_INTERVAL_MS = 41_250


def _live_machine() -> ConnectionMachine:
    """A machine with a live session on attempt 1 (READY seen), logging nowhere."""
    machine = explore.new_machine(explore.POLICY)
    for event in (
        ev.Started(0.0),
        ev.IdentifyPermitted(0.05),
        ev.SocketOpened(1, 0.1),
        ev.HelloReceived(1, 0.2, HELLO_INTERVAL_MS),
        ready_received(1, 0.3, "session", 0),
    ):
        machine.handle(event)
    return machine


def _lifecycle_events(n: int, start: float) -> list[ev.Event]:
    out: list[ev.Event] = []
    t = start
    for _ in range(n // 2):
        t += 1.0
        out.append(ev.TimerFired(Timer.HEARTBEAT, 1, t))
        out.append(ev.HeartbeatAcked(1, t + 0.05))
    return out


def _dispatch_events(n: int, start: float, first_seq: int) -> list[ev.Event]:
    return [dispatch_received(1, start + i * 1e-3, first_seq + i) for i in range(n)]


class Baseline:
    """The least a hand-written connection object could do for the same events: a dict from
    event type to handler, the same bookkeeping, the same commands returned."""

    def __init__(self) -> None:
        self.attempt = 1
        self.attempt_open = True
        self.interval_s = HELLO_INTERVAL_MS / 1000
        self.awaiting_ack = False
        self.beat_sent_at = 0.0
        self.last_frame_at = 0.0
        self.last_seq: int | None = 0
        self.session_id = "session"
        self.acks = 0
        self.latency_s = 0.0
        self.now = 0.0
        self._handlers: dict[type, Callable[[Any], list[cmd.Command]]] = {
            ev.TimerFired: self._on_timer,
            ev.HeartbeatAcked: self._on_ack,
            ev.DispatchReceived: self._on_dispatch,
        }

    def handle(self, event: Any) -> list[cmd.Command]:
        self.now = event.at
        return self._handlers[type(event)](event)

    def _on_timer(self, event: ev.TimerFired) -> list[cmd.Command]:
        if event.attempt != self.attempt or not self.attempt_open:
            return []
        if event.timer is not Timer.HEARTBEAT:
            return []
        if self.awaiting_ack or self.now - self.last_frame_at >= 3 * self.interval_s:
            return []  # the machine would end the connection; never reached here
        self.awaiting_ack = True
        self.beat_sent_at = self.now
        return [
            cmd.StartTimer(Timer.HEARTBEAT, self.interval_s, self.attempt),
            cmd.SendHeartbeat(self.attempt, self.last_seq),
            cmd.StartTimer(Timer.ACK_DEADLINE, self.interval_s / 2, self.attempt),
        ]

    def _on_ack(self, event: ev.HeartbeatAcked) -> list[cmd.Command]:
        if event.attempt != self.attempt or not self.attempt_open:
            return []
        self.last_frame_at = event.at
        self.awaiting_ack = False
        self.acks += 1
        self.latency_s = self.now - self.beat_sent_at
        return [cmd.CancelTimer(Timer.ACK_DEADLINE)]

    def _on_dispatch(self, event: ev.DispatchReceived) -> list[cmd.Command]:
        if event.attempt != self.attempt or not self.attempt_open:
            return []
        self.last_frame_at = event.at
        seq = event.dispatch.seq
        if seq is None:
            return [cmd.DeliverDispatch(event.dispatch, self.session_id)]
        last = self.last_seq
        if last is not None and seq <= last:
            return [cmd.DropDispatch(seq, last)]
        self.last_seq = seq
        return [cmd.DeliverDispatch(event.dispatch, self.session_id)]


def _time_us(handle: Callable[[Any], list[cmd.Command]], events: list[ev.Event]) -> float:
    """µs per event for feeding ``events`` to ``handle`` once."""
    started = time.perf_counter_ns()
    for event in events:
        handle(event)
    return (time.perf_counter_ns() - started) / len(events) / 1000


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
    }


def _workload(
    name: str, make_events: Callable[[int], list[ev.Event]], repeats: int, events: int
) -> dict[str, Any]:
    machine_us: list[float] = []
    baseline_us: list[float] = []
    for r in range(repeats):
        machine = _live_machine()
        baseline = Baseline()
        batch = make_events(events)
        # Alternate which goes first, so drift on a noisy machine favours neither.
        order = [("machine", machine.handle), ("baseline", baseline.handle)]
        for label, handle in order if r % 2 == 0 else order[::-1]:
            (machine_us if label == "machine" else baseline_us).append(_time_us(handle, batch))
        if machine.state.name != "ALIVE" or not machine.attempt_open:  # pragma: no cover
            raise RuntimeError(f"{name}: the machine left ALIVE ({machine.state.name})")
    m, b = _stats(machine_us), _stats(baseline_us)
    return {
        "workload": name,
        "events_per_repeat": events,
        "repeats": repeats,
        "machine_us": m,
        "baseline_us": b,
        "ratio": round(m["median"] / b["median"], 1),
    }


def _exploration() -> dict[str, Any]:
    out = explore.explore()
    if out.violations:  # pragma: no cover - tests/test_exploration.py says which
        raise RuntimeError(f"the exploration found {len(out.violations)} violation(s)")
    return out.summary()


def measure(repeats: int = REPEATS, events: int = EVENTS) -> dict[str, Any]:
    """Run both workloads and the exploration; return a JSON-able dict."""
    lifecycle = _workload(
        "lifecycle (heartbeat due + ACK)", lambda n: _lifecycle_events(n, 1.0), repeats, events
    )
    dispatch = _workload(
        "dispatch fast path", lambda n: _dispatch_events(n, 1.0, 1), repeats, events
    )
    return {
        "benchmark": "machine",
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "transitions": version("transitions"),
        },
        "workloads": [lifecycle, dispatch],
        "exploration": _exploration(),
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as a small markdown table (and one line for the exploration)."""
    lines = [
        "| workload | machine µs/event (min–max) | baseline µs/event (min–max) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for w in result["workloads"]:
        m, b = w["machine_us"], w["baseline_us"]
        lines.append(
            f"| {w['workload']} | {m['median']:.2f} ({m['min']:.2f}–{m['max']:.2f}) "
            f"| {b['median']:.2f} ({b['min']:.2f}–{b['max']:.2f}) | {w['ratio']}× |"
        )
    x = result["exploration"]
    w0 = result["workloads"][0]
    env = result["environment"]
    lines += [
        "",
        f"Medians of {w0['repeats']} repeats of {w0['events_per_repeat']:,} events; "
        f"Python {env['python']}, transitions {env['transitions']}; logging to a no-op logger.",
        "",
        f"Exhaustive exploration (tests/explore.py): {x['nodes']:,} abstract states, "
        f"{x['edges']:,} edges (+{x['off_contract_edges']:,} off-contract), "
        f"{x['events_fired']:,} events fired, depth {x['depth']}, {x['seconds']:.2f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, print the markdown table, write JSON if asked; return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args(argv)
    result = measure(repeats=max(args.repeats, 5), events=args.events)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
