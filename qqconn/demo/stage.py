"""One scenario's stage: a fake gateway, a real manager against it, a host, and what they did.

:class:`Stage` is what a scenario plays on (pauses, bounded waits, checks, faults, and
:meth:`Stage.connection`: a fake gateway and a running manager, stopped and judged on exit).
:class:`Run` is one manager's life on it: the seqs its host received, the transitions it took,
the sockets the gateway saw close.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from qqconn.demo.explain import ends_connection, explain
from qqconn.demo.timescale import DEMO_SECRET, EVENTS_PER_S, HEARTBEAT_S, INTENTS, SLACK_S
from qqconn.demo.verdict import (
    Check,
    FaultTiming,
    ScenarioResult,
    Step,
    delivery_checks,
    judge_delivery,
)
from qqconn.demo.view import LiveView
from qqconn.driver import ConnectionManager
from qqconn.errors import FatalError
from qqconn.machine import State
from qqconn.policy import Policy
from qqconn.protocol import Dispatch, OpCode
from qqconn.testing import FakeGateway

__all__ = ["Run", "ScenarioFailed", "Stage"]


class ScenarioFailed(Exception):
    """A bounded wait ran out: the scenario cannot go on (recorded as a failed check)."""


@dataclass(eq=False)
class Run:
    """One fake gateway, one manager, one host, and what they did."""

    stage: Stage
    gw: FakeGateway
    mgr: ConnectionManager = field(init=False)
    task: asyncio.Task[None] | None = None
    received: list[int | None] = field(default_factory=list)
    fatals: list[FatalError] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    log_events: list[tuple[str, str]] = field(default_factory=list)
    backoff_entered_at: float | None = None
    pump: asyncio.Task[None] | None = None
    pumped: bool = False
    watcher: asyncio.Task[None] | None = None

    async def watch_sockets(self) -> None:
        """Tell the watcher, from the gateway's records, when each socket is gone and why."""
        view = self.stage.view
        reported = 0
        while True:
            conns = self.gw.connections
            while reported < len(conns) and conns[reported].closed_at is not None:
                c = conns[reported]
                assert c.closed_at is not None
                who = {"client": "qqconn closed it", "server": "the gateway closed it"}.get(
                    c.closed_by or "", "dropped, no close frame"
                )
                code = "" if c.closed_by == "drop" else f" with {c.close_code}"
                view.say(
                    "gateway",
                    view.s(
                        f"socket #{c.index} gone after {c.closed_at - c.opened_at:.2f} s: "
                        f"{who}{code}",
                        "dim",
                    ),
                    "blue",
                )
                reported += 1
            await asyncio.sleep(0.01)

    # host callbacks

    def on_dispatch(self, d: Dispatch) -> None:
        if d.type != "READY":
            self.received.append(d.seq)

    def on_fatal(self, error: FatalError) -> None:
        self.fatals.append(error)
        self.stage.view.say(
            "host", f"notified: {error.reason} (retryable: {'yes' if error.retryable else 'no'})"
        )

    # the events the gateway pushes

    def start_pump(self) -> None:
        self.pumped = True
        self.pump = asyncio.create_task(self._pump(), name="qqconn-demo-pump")

    async def _pump(self) -> None:
        n = 0
        while True:
            with contextlib.suppress(LookupError):  # no session yet
                n += 1
                self.gw.dispatch_nowait("GROUP_AT_MESSAGE_CREATE", {"content": f"message {n}"})
            await asyncio.sleep(self.stage.slow / EVENTS_PER_S)

    async def stop_pump(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
            self.pump = None

    # reading what happened

    def step_after(self, at: float, pred: Callable[[Step], bool]) -> Step | None:
        return next((st for st in self.steps if st.at >= at and pred(st)), None)

    def left_alive(self, after: float) -> Step | None:
        return self.step_after(after, lambda st: st.source == "ALIVE")

    def alive_again(self, after: float) -> Step | None:
        return self.step_after(after, lambda st: st.dest == "ALIVE")

    def last_ack_before(self, at: float) -> float | None:
        acks = [
            f.at
            for f in self.gw.frames
            if f.direction == "out" and f.op == OpCode.HEARTBEAT_ACK and f.at <= at
        ]
        return max(acks) if acks else None

    def replayed_on_resume(self) -> int:
        """Dispatches the gateway replayed on the newest socket before RESUMED."""
        if not self.gw.connections:
            return 0
        n = 0
        for frame in self.gw.connections[-1].sent(OpCode.DISPATCH):
            with contextlib.suppress(ValueError):
                if frame.json().get("t") == "RESUMED":
                    return n
            n += 1
        return n

    # what happened, as the tour records it

    def record_step(self, source: str, dest: str, trigger: str) -> Step:
        """Record the edge the machine has just taken, with its reason read from the machine."""
        now = time.monotonic()
        m = self.mgr.machine
        waited = None if self.backoff_entered_at is None else now - self.backoff_entered_at
        why = explain(
            m,
            source,
            dest,
            trigger,
            dot=self.stage.view.s.dot,
            replayed=self.replayed_on_resume,
            waited_s=waited,
        )
        if dest == "BACKOFF":
            self.backoff_entered_at = now
        ending = m.last_ending if ends_connection(source, dest) else None
        step = Step(now, source, dest, trigger, why, ending.kind if ending is not None else None)
        self.steps.append(step)
        return step


@dataclass(eq=False)
class Stage:
    """One scenario: its view, its timing factor, and the result being built."""

    view: LiveView
    slow: float
    policy: Policy
    result: ScenarioResult
    runs: list[Run] = field(default_factory=list)

    @property
    def interval_s(self) -> float:
        return HEARTBEAT_S * self.slow

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.slow)

    async def until(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        """Wait (bounded by timeout_s × slow) until predicate() holds; else fail the scenario."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s * self.slow + SLACK_S
        while not predicate():
            if loop.time() >= deadline:
                raise ScenarioFailed(f"{what}: not within {timeout_s * self.slow:g} s")
            await asyncio.sleep(0.01)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.result.checks.append(Check(name, ok, detail))
        return ok

    def fault(self, label: str, text: str, at: float | None = None) -> FaultTiming:
        timing = FaultTiming(label, time.monotonic() if at is None else at)
        self.result.faults.append(timing)
        self.view.say("fault", text, "red")
        return timing

    def measure(self, run: Run, timing: FaultTiming, *, since: float | None = None) -> None:
        """Fill timing.detect_s / recover_s from the steps: left ALIVE, then ALIVE again."""
        left = run.left_alive(timing.injected_at)
        if left is None:
            return
        timing.detect_s = left.at - (timing.injected_at if since is None else since)
        back = run.alive_again(left.at)
        if back is not None:
            timing.recover_s = back.at - left.at
            timing.outcome = f"{back.trigger.upper()}"

    @contextlib.asynccontextmanager
    async def connection(
        self, configure: Callable[[FakeGateway], None] | None = None
    ) -> AsyncIterator[Run]:
        """A fake gateway and a running manager; stopped (bounded) and judged on exit."""
        slow = self.slow
        async with FakeGateway(
            heartbeat_interval_ms=round(HEARTBEAT_S * 1000 * slow),
            client_secret=DEMO_SECRET,
            close_timeout_s=0.5 * slow,
            seed=len(self.runs) + 1,
        ) as gw:
            if configure is not None:
                configure(gw)
            run = Run(self, gw)
            mgr = ConnectionManager(
                app_id=gw.app_id,
                client_secret=DEMO_SECRET,
                intents=INTENTS,
                policy=self.policy,
                api_base=gw.api_base,
                token_url=gw.token_url,
                on_dispatch=run.on_dispatch,
                on_fatal=run.on_fatal,
                rng=random.Random(len(self.runs) + 7),
            )
            run.mgr = mgr
            self.runs.append(run)
            self.view.run = run
            run.task = asyncio.create_task(mgr.run(), name="qqconn-demo-run")
            run.watcher = asyncio.create_task(run.watch_sockets(), name="qqconn-demo-watch")
            try:
                yield run
            finally:
                await run.stop_pump()
                if run.pumped and not mgr.machine.is_terminal:
                    await self._drain(run)
                self.result.end_state = mgr.state.value
                await self._stop(run)
                self.result.paths.append(list(run.steps))
                self._judge_run(run)
                run.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run.watcher
                self.view.run = None

    async def _drain(self, run: Run) -> None:
        """Give in-flight events time to reach the host (bounded), without failing here."""
        with contextlib.suppress(ScenarioFailed):
            await self.until(
                lambda: len(run.received) >= len(run.gw.accepted()), 2.0, "events delivered"
            )

    async def _stop(self, run: Run) -> None:
        if run.mgr.state is State.ALIVE:
            self.view.say("demo", "scenario over: the host stops the manager", "blue")
        try:
            async with asyncio.timeout(3 * self.slow + 2):
                await run.mgr.stop()
                assert run.task is not None
                with contextlib.suppress(FatalError):
                    await run.task
        except TimeoutError:
            self.check("stop() returns within a bounded time", False, "stop() hung")

    def _judge_run(self, run: Run) -> None:
        if run.pumped:
            session = run.gw.current_session_id
            accepted = run.gw.accepted(session) if session is not None else []
            delivery = judge_delivery(accepted, run.received)
            self.result.delivery = delivery
            for c in delivery_checks(delivery):
                self.result.checks.append(c)
        bugs = [name for name, _ in run.log_events if name in _BUG_EVENTS]
        bugs += [f"live view: {e}" for e in self.view.errors]
        self.check(
            "no internal error or failed callback logged",
            not bugs,
            ", ".join(sorted(set(bugs))),
        )


_BUG_EVENTS = frozenset({"qqconn.internal_error", "qqconn.callback_failed"})
