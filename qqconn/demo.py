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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field, fields, replace
from typing import Any, NoReturn, TextIO

import structlog

from qqconn.driver import ConnectionManager
from qqconn.errors import FatalError
from qqconn.machine import TRANSITIONS, ConnectionMachine, State
from qqconn.policy import Delay, Policy
from qqconn.protocol import Dispatch, Intents, OpCode
from qqconn.testing import FakeGateway

__all__ = [
    "SCENARIOS",
    "Check",
    "Delivery",
    "DemoReport",
    "ScenarioResult",
    "delivery_checks",
    "demo_policy",
    "judge_delivery",
    "run_demo",
]

#: Hello interval of the demo gateway (seconds, before ``--slow``).
HEARTBEAT_S = 0.5
#: Allowance for event-loop scheduling on a busy machine, added to every timing rule.
SLACK_S = 0.5
#: Events per second the demo gateway pushes while a scenario runs (before ``--slow``).
EVENTS_PER_S = 25
#: A fake credential for the fake gateway; never a real one.
DEMO_SECRET = "demo-secret-0000"
INTENTS = int(Intents.PUBLIC_GUILD_MESSAGES | Intents.GROUP_AND_C2C_EVENT)


def demo_policy(slow: float = 1.0) -> Policy:
    """The tour's policy: behaviour.md's rules with every duration scaled down, then × ``slow``."""
    base = Policy(
        quick_disconnect_threshold_s=1.0,
        max_quick_disconnects=3,
        max_reconnect_attempts=10,
        backoff_s=(0.1, 0.2, 0.4),
        backoff_jitter=0.2,
        rate_limit_wait_s=1.0,
        connect_timeout_s=3.0,
        rotation_delay_s=(0.0, 0.05),
        invalid_session_delay_s=(0.1, 0.2),
        default_heartbeat_interval_s=HEARTBEAT_S,
        close_timeout_s=0.5,
    )
    if slow == 1:
        return base
    changes: dict[str, Any] = {}
    for f in fields(base):
        if f.name.endswith("_s"):
            value = getattr(base, f.name)
            changes[f.name] = (
                tuple(v * slow for v in value) if isinstance(value, tuple) else value * slow
            )
    return replace(base, **changes)


# -- the verdict: pure functions over what was recorded --------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of behaviour.md, checked against what happened."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events the gateway accepted versus events the host received."""

    sent: int
    delivered: int
    lost: tuple[int, ...]
    duplicated: tuple[int, ...]
    out_of_order: tuple[int, ...]


def judge_delivery(accepted: Sequence[int], received: Sequence[int | None]) -> Delivery:
    """Compare the gateway's accepted seqs with the seqs the host received (READY excluded).

    Lost: accepted, never received. Duplicated: received more than once. Out of order: a seq
    received after a larger one. A received ``None`` (an event without ``s``) counts as
    delivered but cannot be matched.
    """
    counts = Counter(s for s in received if s is not None)
    lost = tuple(s for s in accepted if counts[s] == 0)
    duplicated = tuple(sorted(s for s, n in counts.items() if n > 1))
    out_of_order: list[int] = []
    highest = -1
    for s in received:
        if s is None:
            continue
        if s < highest:
            out_of_order.append(s)
        highest = max(highest, s)
    return Delivery(len(accepted), len(received), lost, duplicated, tuple(out_of_order))


def _listed(seqs: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(s) for s in seqs[:limit])
    return shown + (f" … (+{len(seqs) - limit})" if len(seqs) > limit else "")


def delivery_checks(d: Delivery) -> list[Check]:
    """behaviour.md rule 10: each dispatch reaches the host once, in ``s`` order, none lost."""
    return [
        Check("no event lost", not d.lost, f"lost s = {_listed(d.lost)}" if d.lost else ""),
        Check(
            "no event duplicated",
            not d.duplicated,
            f"duplicated s = {_listed(d.duplicated)}" if d.duplicated else "",
        ),
        Check(
            "events in s order",
            not d.out_of_order,
            f"out of order: s = {_listed(d.out_of_order)}" if d.out_of_order else "",
        ),
    ]


@dataclass(frozen=True, slots=True)
class Step:
    """One transition the machine took, as logged."""

    at: float
    source: str
    dest: str
    trigger: str
    why: str


@dataclass(slots=True)
class FaultTiming:
    """One injected fault, how long until qqconn noticed, and until it was live again."""

    fault: str
    injected_at: float
    detect_s: float | None = None
    recover_s: float | None = None
    outcome: str = ""


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario did and whether it behaved."""

    name: str
    title: str
    faults: list[FaultTiming] = field(default_factory=list)
    delivery: Delivery | None = None
    end_state: str = "?"
    checks: list[Check] = field(default_factory=list)
    paths: list[list[Step]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Did every check pass (and was there at least one)?"""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        """One line per failed check."""
        return [
            f"{self.name}: {c.name}" + (f" ({c.detail})" if c.detail else "")
            for c in self.checks
            if not c.ok
        ]


@dataclass(slots=True)
class DemoReport:
    """Every scenario's result, and the tour's wall time."""

    results: list[ScenarioResult]
    wall_s: float
    #: The output was closed before the end (``qqconn demo | head``): the tour stopped early.
    output_closed: bool = False

    @property
    def ok(self) -> bool:
        """Did every scenario behave as behaviour.md requires?"""
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[str]:
        """One line per failed check, across scenarios."""
        return [line for r in self.results for line in r.failures()]


# -- the live view ------------------------------------------------------------------------------


class _Style:
    """ANSI colours when writing to a terminal (and NO_COLOR is unset), plain text otherwise."""

    CODES: Mapping[str, str] = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }
    STATE_COLOURS: Mapping[str, str] = {
        "CONNECTING": "cyan",
        "IDENTIFIED": "cyan",
        "ALIVE": "green",
        "QUICK_DROPPED": "yellow",
        "BACKOFF": "yellow",
        "FATAL": "red",
        "STOPPED": "blue",
    }

    def __init__(self, enabled: bool, unicode: bool) -> None:
        self.enabled = enabled
        self.arrow = "→" if unicode else "->"
        self.ok = "✓" if unicode else "ok"
        self.bad = "✗" if unicode else "FAIL"
        self.dot = "·" if unicode else "-"
        self.rule = "━" if unicode else "="
        self.heart = "♥" if unicode else "hb"
        self.dash = "—" if unicode else "-"

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(self.CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def state(self, name: str, width: int = 0) -> str:
        return self(name.ljust(width), self.STATE_COLOURS.get(name, "bold"))


class LiveView:
    """Prints the tour as it happens. Its :meth:`observe` is a structlog processor."""

    def __init__(self, out: TextIO, *, color: bool | None = None) -> None:
        self.out = out
        if color is None:
            color = out.isatty() and "NO_COLOR" not in os.environ
        encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("_", "-")
        self.s = _Style(color, unicode=encoding.startswith("utf"))
        self.t0 = time.monotonic()
        self._run: _Run | None = None
        #: The output is gone (a closed pipe): nothing more is written, the tour ends early.
        self.closed = False
        #: Bugs of the view itself, caught so they never reach the library's logging call.
        self.errors: list[str] = []

    # -- output helpers

    def line(self, text: str = "") -> None:
        """Write one line; never raises (it runs inside the library's logging calls)."""
        if self.closed:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):  # the reader went away (`qqconn demo | head`)
            self.closed = True

    def stamp(self, at: float | None = None) -> str:
        t = (time.monotonic() if at is None else at) - self.t0
        return self.s(f"{t:+7.3f}", "dim")

    def say(self, tag: str, text: str, colour: str = "magenta") -> None:
        self.line(f"  {self.stamp()}  {self.s(tag.ljust(8), colour, 'bold')}{text}")

    def heading(self, number: int, total: int, name: str, title: str, story: str) -> None:
        s = self.s
        label = f" {number}/{total}  {name} {s.dash} {title} "
        self.line()
        self.line(s(s.rule * 2 + label + s.rule * max(4, 96 - len(label)), "bold"))
        for text in story.splitlines():
            self.line(s("   " + text, "dim"))
        self.line()

    # -- the structlog processor

    def observe(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> NoReturn:
        """Turn the library's log events into lines of the tour; drop them afterwards.

        This runs inside the machine's own logging calls, so it never raises anything but
        ``DropEvent``: a bug here is recorded (and fails the verdict), never passed on.
        """
        try:
            self._observe(method, event)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        raise structlog.DropEvent

    def _observe(self, method: str, event: MutableMapping[str, Any]) -> None:
        run = self._run
        name = str(event.get("event", ""))
        if run is None or not name.startswith("qqconn."):
            return
        run.log_events.append((name, method))
        if name == "qqconn.transition":
            self._transition(run, event)
        elif name == "qqconn.heartbeat":
            self.line(
                f"  {self.stamp()}  {self.s(self.s.heart, 'green')} "
                + self.s(
                    f"{event.get('acked')} heartbeats acknowledged {self.s.dot} "
                    f"last s={event.get('last_seq')} {self.s.dot} "
                    f"ACK after {event.get('latency_ms')} ms",
                    "dim",
                )
            )
        elif method in ("warning", "error", "exception", "critical") and name not in (
            "qqconn.connection_ended",
            "qqconn.fatal",
        ):
            detail = " ".join(
                f"{k}={v}"
                for k, v in event.items()
                if k not in ("event", "app_id", "shard", "level", "log_level")
            )
            self.say("library", f"{name} {detail}"[:160], "yellow")

    def _transition(self, run: _Run, event: Mapping[str, Any]) -> None:
        s = self.s
        m = run.mgr.machine
        source, dest, trigger = str(event["from"]), str(event["to"]), str(event["trigger"])
        now = time.monotonic()
        why = run.explain(source, dest, trigger)
        run.steps.append(Step(now, source, dest, trigger, why))
        p = m.policy
        counters = s(
            f"quick {m.quick_drops}/{p.max_quick_disconnects} {s.dot} "
            f"failed {m.failed_attempts}/{p.max_reconnect_attempts} {s.dot} attempt {m.attempt}",
            "dim",
        )
        self.line(
            f"  {self.stamp(now)}  {s.state(source)} {s.arrow} {s.state(dest, 14)}"
            f"{' ' * max(0, 14 - len(source))}{s(trigger.ljust(17), 'bold')}{counters}"
        )
        self.line(f"  {' ' * 7}  {s('why', 'dim')} {why}")


# -- one manager against one fake gateway --------------------------------------------------------


class ScenarioFailed(Exception):
    """A bounded wait ran out: the scenario cannot go on (recorded as a failed check)."""


@dataclass(eq=False)
class _Run:
    """One fake gateway, one manager, one host, and what they did."""

    stage: _Stage
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

    # the guard's reasons, read from the machine

    def explain(self, source: str, dest: str, trigger: str) -> str:
        m: ConnectionMachine = self.mgr.machine
        p = m.policy
        ending = m.last_ending
        lived = None if m.opened_at is None else m.now - m.opened_at
        threshold = p.quick_disconnect_threshold_s
        if dest == "BACKOFF":
            self.backoff_entered_at = time.monotonic()
        if trigger == "hello":
            beat = f"Hello: heartbeat every {m.heartbeat_interval_s:g} s"
            if m.sent_resume:
                return f"{beat}; session kept, so Resume from s={m.last_seq}"
            return f"{beat}; no session, so Identify"
        if trigger == "ready":
            return f"READY: new session {str(m.session_id)[:8]}…; failed attempts reset to 0"
        if trigger == "resumed":
            n = self.replayed_on_resume()
            missed = (
                "nothing was missed"
                if n == 0
                else f"the {n} event{'s' if n != 1 else ''} sent while we were away replayed first"
            )
            return f"RESUMED at s={m.last_seq}: {missed}; failed attempts reset to 0"
        if trigger == "connection_ended" and ending is not None:
            reason = ending.reason
            if dest == "FATAL":
                return f"{reason}: a close code that no retry can fix (ending_is_fatal)"
            if dest == "QUICK_DROPPED":
                return (
                    f"{reason} {self.stage.view.s.dot} lived {lived:.2f} s < {threshold:g} s: "
                    f"quick drop {m.quick_drops} of {p.max_quick_disconnects} (is_quick_drop)"
                )
            if not ending.counts_as_quick:
                return f"{reason} {self.stage.view.s.dot} our own close: neither a quick drop nor a failure"
            if lived is None:
                return (
                    f"{reason} {self.stage.view.s.dot} no socket opened: "
                    f"failed attempt {m.failed_attempts} of {p.max_reconnect_attempts}"
                )
            return (
                f"{reason} {self.stage.view.s.dot} lived {lived:.2f} s ≥ {threshold:g} s: "
                "not a quick drop, quick drops reset to 0"
            )
        if trigger == "assess" and source == "QUICK_DROPPED":
            if dest == "FATAL":
                return (
                    f"{m.quick_drops} quick drops in a row ≥ {p.max_quick_disconnects}: give up, "
                    "retryable (quick_drops_exhausted)"
                )
            return f"{m.quick_drops} < {p.max_quick_disconnects} quick drops in a row: back off and retry"
        if trigger == "assess" and dest == "FATAL":
            return (
                f"{m.failed_attempts} failed attempts ≥ {p.max_reconnect_attempts}: give up, "
                "retryable (attempts_exhausted)"
            )
        if trigger == "backoff_elapsed":
            waited = (
                "?"
                if self.backoff_entered_at is None
                else f"{time.monotonic() - self.backoff_entered_at:.2f}"
            )
            return f"waited {waited} s ({self._delay_kind()})"
        if trigger == "stop":
            return "the host asked the manager to stop"
        return trigger

    def _delay_kind(self) -> str:
        m = self.mgr.machine
        p = m.policy
        kind = m.last_ending.delay if m.last_ending is not None else Delay.BACKOFF
        if kind is Delay.NOW:
            return "op 7: reconnect at once"
        if kind is Delay.ROTATION:
            return f"4009 rotation: jitter in {p.rotation_delay_s[0]:g}–{p.rotation_delay_s[1]:g} s"
        if kind is Delay.RATE_LIMIT:
            return "4008: rate_limit_wait_s"
        if kind is Delay.INVALID_SESSION:
            return "op 9: invalid_session_delay_s"
        i = min(max(m.failed_attempts - 1, 0), len(p.backoff_s) - 1)
        return f"backoff_s[{i}] = {p.backoff_s[i]:g} s ± {p.backoff_jitter:.0%}"


@dataclass(eq=False)
class _Stage:
    """One scenario: its view, its timing factor, and the result being built."""

    view: LiveView
    slow: float
    policy: Policy
    result: ScenarioResult
    runs: list[_Run] = field(default_factory=list)

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

    def measure(self, run: _Run, timing: FaultTiming, *, since: float | None = None) -> None:
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
    ) -> AsyncIterator[_Run]:
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
            run = _Run(self, gw)
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
            self.view._run = run
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
                self.view._run = None

    async def _drain(self, run: _Run) -> None:
        """Give in-flight events time to reach the host (bounded), without failing here."""
        with contextlib.suppress(ScenarioFailed):
            await self.until(
                lambda: len(run.received) >= len(run.gw.accepted()), 2.0, "events delivered"
            )

    async def _stop(self, run: _Run) -> None:
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

    def _judge_run(self, run: _Run) -> None:
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


# -- the scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One stop of the tour."""

    name: str
    title: str
    story: str
    play: Callable[[_Stage], Awaitable[None]]


async def _until_alive(stage: _Stage, run: _Run, what: str = "ALIVE") -> None:
    await stage.until(lambda: run.mgr.state is State.ALIVE, 5.0, what)


async def _recovered(stage: _Stage, run: _Run, after: float, what: str) -> None:
    """Wait until the manager left ALIVE after `after` and came back by RESUMED."""
    await stage.until(lambda: run.left_alive(after) is not None, 5.0, f"{what}: detected")
    left = run.left_alive(after)
    assert left is not None
    await stage.until(lambda: run.alive_again(left.at) is not None, 5.0, f"{what}: ALIVE again")


def _resumed_checks(stage: _Stage, run: _Run, resumes: int) -> None:
    gw, m = run.gw, run.mgr.machine
    stage.check(
        "the session was resumed, never re-identified",
        gw.identifies == 1 and gw.resumes == resumes,
        f"identifies={gw.identifies}, resumes={gw.resumes} (wanted 1 and {resumes})",
    )
    stage.check(
        "counters back to zero (no quick drop, no failed attempt)",
        m.quick_drops == 0 and m.failed_attempts == 0,
        f"quick_drops={m.quick_drops}, failed_attempts={m.failed_attempts}",
    )
    stage.check("the host was never told FATAL", not run.fatals, f"{len(run.fatals)} notify")


async def _play_rotation(stage: _Stage) -> None:
    async with stage.connection() as run:
        await _until_alive(stage, run)
        run.start_pump()
        await stage.pause(1.5)  # past the quick-drop threshold: op 7 on an old socket
        op7 = stage.fault("op 7 Reconnect", "the gateway sends op 7 Reconnect; events keep flowing")
        await run.gw.send_reconnect(close_after_s=0.5 * stage.slow)
        await _recovered(stage, run, op7.injected_at, "op 7")
        sent = [
            f.at for f in run.gw.connections[0].sent(OpCode.RECONNECT) if f.at >= op7.injected_at
        ]
        stage.measure(run, op7, since=sent[0] if sent else None)
        first = run.gw.connections[0]
        stage.check(
            "op 7: qqconn closed the socket itself, not a 1000/1001",
            first.closed_by == "client" and first.close_code not in (1000, 1001),
            f"closed_by={first.closed_by}, code={first.close_code}",
        )
        await stage.pause(1.5)  # lives past the quick-drop threshold: the 4009 is no quick drop
        rot = stage.fault("close 4009", "the gateway closes the socket: 4009 Session timed out")
        await run.gw.close(4009, "Session timed out")
        await _recovered(stage, run, rot.injected_at, "4009")
        stage.measure(run, rot)
        left = run.left_alive(rot.injected_at)
        back = run.alive_again(rot.injected_at)
        bound = stage.policy.rotation_delay_s[1] + SLACK_S + 1.0
        stage.check(
            f"4009: resumed within the rotation jitter (≤ {bound:.2f} s incl. slack)",
            left is not None and back is not None and back.at - left.at <= bound,
            "" if rot.recover_s is None else f"took {rot.recover_s:.2f} s",
        )
        await stage.pause(0.8)
        _resumed_checks(stage, run, resumes=2)


async def _kill_and_recover(
    stage: _Stage,
    run: Any,
    *,
    fault: str,
    story: str,
    switch: str,
    kind: str,
    lifted: str,
) -> Any:
    """Shared by the zombie and half-open tours: on a healthy connection with events flowing,
    turn on the gateway fault ``switch``, wait until qqconn leaves ALIVE, lift the fault, wait
    for recovery, and check detection came within 2 heartbeat intervals of the last ACK.
    Returns the transition that left ALIVE."""
    await _until_alive(stage, run)
    run.start_pump()
    await stage.until(lambda: run.mgr.machine.acks >= 2, 3.0, "two heartbeats acknowledged")
    await stage.pause(0.6)
    injected = stage.fault(fault, story)
    setattr(run.gw.faults, switch, switch != "ack")  # ack=False / silent=True
    await stage.until(
        lambda: run.left_alive(injected.injected_at) is not None, 4.0, f"{kind} detected"
    )
    setattr(run.gw.faults, switch, switch == "ack")
    stage.view.say("demo", lifted, "blue")
    await _recovered(stage, run, injected.injected_at, kind)
    stage.measure(run, injected)
    left = run.left_alive(injected.injected_at)
    assert left is not None
    last_ack = run.last_ack_before(left.at)
    since_ack = None if last_ack is None else left.at - last_ack
    bound = 2 * stage.interval_s
    stage.check(
        f"{kind} detected within 2 heartbeat intervals of the last ACK "
        f"(≤ {bound:g} s + {SLACK_S:g} s slack)",
        since_ack is not None and since_ack <= bound + SLACK_S,
        "no ACK ever" if since_ack is None else f"{since_ack:.2f} s after the last ACK",
    )
    return left


async def _play_zombie(stage: _Stage) -> None:
    async with stage.connection() as run:
        left = await _kill_and_recover(
            stage,
            run,
            fault="ACKs stop, socket open",
            story="the gateway stops acknowledging heartbeats; the socket stays open, events still flow",
            switch="ack",
            kind="zombie",
            lifted="the next connection will be healthy (ACKs on again)",
        )
        stage.check("detected as a zombie (missing ACK)", "zombie" in left.why, left.why)
        first = run.gw.connections[0]
        stage.check(
            "the zombie socket was closed by qqconn, not with 1000/1001",
            first.closed_by == "client" and first.close_code not in (1000, 1001),
            f"closed_by={first.closed_by}, code={first.close_code}",
        )
        await stage.pause(0.6)
        _resumed_checks(stage, run, resumes=1)


async def _play_half_open(stage: _Stage) -> None:
    async with stage.connection() as run:
        left = await _kill_and_recover(
            stage,
            run,
            fault="server silent",
            story="the gateway goes silent: no ACK, no event, not even a pong or a close reply",
            switch="silent",
            kind="half-open",
            lifted="the server answers again (a fresh connection would reach it)",
        )
        first = run.gw.connections[0]
        await stage.until(lambda: first.closed_at is not None, 3.0, "old socket gone")
        assert first.closed_at is not None
        limit = stage.policy.close_timeout_s + 0.5 * stage.slow + SLACK_S
        stage.check(
            f"the silent socket was gone within close_timeout_s (≤ {limit:.2f} s incl. slack)",
            first.closed_at - left.at <= limit,
            f"{first.closed_at - left.at:.2f} s after detection",
        )
        await stage.pause(0.6)
        _resumed_checks(stage, run, resumes=1)


async def _seeds_loop_act(
    stage: _Stage, code: int | None, label: str, text: str, variant: str
) -> None:
    after_s = 0.3 * stage.slow

    def configure(gw: FakeGateway) -> None:
        gw.faults.close_new_sockets(after_s, 50, code=code)

    async with stage.connection(configure) as run:
        fault = stage.fault(label, text)
        await stage.until(lambda: run.mgr.machine.is_terminal, 8.0, "FATAL")
        gw = run.gw
        opened = gw.connections[0].opened_at if gw.connections else fault.injected_at
        fatal = run.step_after(fault.injected_at, lambda st: st.dest == "FATAL")
        if fatal is not None:
            fault.detect_s = fatal.at - opened
            fault.outcome = "FATAL"
        await stage.until(lambda: bool(run.fatals), 2.0, "the host notified")
        stage.view.say("demo", "watching for a fourth socket …", "blue")
        await stage.pause(1.0)
        m = run.mgr.machine
        stage.check(
            f"FATAL (retryable) after the 3rd quick drop ({variant})",
            m.state is State.FATAL and m.fatal is not None and m.fatal.retryable,
            f"state={m.state.name}, fatal={m.fatal}",
        )
        stage.check(
            f"exactly 3 sockets opened, no 4th ({variant})",
            len(gw.connections) == 3,
            f"{len(gw.connections)} sockets",
        )
        quick = [st for st in run.steps if st.dest == "QUICK_DROPPED"]
        stage.check(
            f"all 3 counted as quick drops ({variant})",
            len(quick) == 3,
            f"{len(quick)} quick drops",
        )
        stage.check(
            f"the host was notified exactly once ({variant})",
            len(run.fatals) == 1,
            f"{len(run.fatals)}",
        )
        error = run.task.exception() if run.task is not None and run.task.done() else None
        stage.check(
            f"run() raised FatalError(retryable=True) ({variant})",
            isinstance(error, FatalError) and error.retryable,
            repr(error),
        )


async def _play_seeds_loop(stage: _Stage) -> None:
    await _seeds_loop_act(
        stage,
        4009,
        "new sockets closed (4009)",
        "every new socket is closed 0.3 s after it opens, with a close frame (4009)",
        "close frames",
    )
    await _seeds_loop_act(
        stage,
        None,
        "new sockets dropped",
        "the same, but each socket is dropped without a close frame",
        "drops",
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "rotation",
            "the normal op 7 + 4009 rotation",
            "About every 30 min the gateway sends op 7 Reconnect, or closes with 4009.\n"
            "qqconn must Resume the same session: no event lost, none twice, while events flow.",
            _play_rotation,
        ),
        Scenario(
            "zombie",
            "a zombie connection (ACKs stop)",
            "The socket stays open and events still arrive, but heartbeats are no longer\n"
            "acknowledged. qqconn must notice within two heartbeat intervals, close, and Resume.",
            _play_zombie,
        ),
        Scenario(
            "half-open",
            "a half-open connection (server silent)",
            "The server went away without a word: nothing arrives, not even a close reply.\n"
            "qqconn must notice, close the socket in bounded time, and Resume.",
            _play_half_open,
        ),
        Scenario(
            "seeds-loop",
            "the seed's loop (every new socket closed at once)",
            "Every socket the client opens is closed within a second. Reconnecting forever is\n"
            "the bug this project exists for: FATAL after exactly 3 sockets, the host told once.",
            _play_seeds_loop,
        ),
    )
}


# -- the tour ----------------------------------------------------------------------------------


def _print_result(view: LiveView, result: ScenarioResult) -> None:
    s = view.s
    view.line()
    for timing in result.faults:
        detect = (
            "not detected" if timing.detect_s is None else f"detected in {timing.detect_s:.3f} s"
        )
        if timing.outcome == "FATAL":
            recover = "gave up: FATAL, host notified"
        elif timing.recover_s is None:
            recover = "not recovered"
        else:
            recover = f"live again in {timing.recover_s:.3f} s ({timing.outcome})"
        view.line(f"   {s(timing.fault, 'bold')}: {detect}, {recover}")
    d = result.delivery
    if d is not None:
        view.line(
            f"   events: {d.sent} sent, {d.delivered} delivered, {len(d.lost)} lost, "
            f"{len(d.duplicated)} duplicated"
        )
    for c in result.checks:
        mark = s(s.ok, "green") if c.ok else s(s.bad, "red", "bold")
        detail = s(f"  ({c.detail})", "dim") if c.detail and not c.ok else ""
        view.line(f"   {mark} {c.name}{detail}")


def _wrapped(
    view: LiveView, label: str, parts: Sequence[tuple[str, str]], width: int = 100
) -> None:
    """Print (plain, styled) parts after ``label``, wrapped at ``width`` plain characters."""
    indent = " " * (3 + len(label) + 2)
    line, used = f"   {view.s(label, 'bold')}: ", 3 + len(label) + 2
    for plain, styled in parts:
        if used + len(plain) > width and used > len(indent):
            view.line(line.rstrip())
            line, used = indent, len(indent)
            plain, styled = plain.lstrip(), styled.lstrip()
        line += styled
        used += len(plain)
    view.line(line.rstrip())


def _print_path(view: LiveView, result: ScenarioResult) -> None:
    s = view.s
    for i, steps in enumerate(result.paths):
        if not steps:
            continue
        parts = [(steps[0].source, s.state(steps[0].source))]
        for st in steps:
            edge = f" {s.arrow}{st.trigger}{s.arrow} "
            parts.append((edge + st.dest, s(edge, "dim") + s.state(st.dest)))
        _wrapped(view, "path" if len(result.paths) == 1 else f"path {i + 1}", parts)


def _diagram_edges() -> set[tuple[str, str, str]]:
    edges: set[tuple[str, str, str]] = set()
    for row in TRANSITIONS:
        dest = row["dest"]
        if dest is None:
            continue
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for src in sources:
            edges.add((src.name, row["trigger"], dest.name))
    return edges


def _print_summary(view: LiveView, report: DemoReport, show_path: bool) -> None:
    s = view.s
    view.line()
    label = " summary "
    view.line(s(s.rule * 2 + label + s.rule * (96 - len(label)), "bold"))
    header = (
        f"   {'scenario':<11} {'fault injected':<27} {'detect':>8} {'recover':>8}  "
        f"{'sent':>4} {'deliv':>5} {'lost':>4} {'dup':>3}  {'end state':<10} ok"
    )
    view.line(s(header, "bold"))
    for r in report.results:
        d = r.delivery
        events = (
            f"{d.sent:>4} {d.delivered:>5} {len(d.lost):>4} {len(d.duplicated):>3}"
            if d is not None
            else f"{'—':>4} {'—':>5} {'—':>4} {'—':>3}"
        )
        mark = s(s.ok, "green") if r.ok else s(s.bad, "red", "bold")
        for i, t in enumerate(r.faults or [FaultTiming("(none)", 0.0)]):
            detect = "—" if t.detect_s is None else f"{t.detect_s:.3f}s"
            recover = (
                "FATAL"
                if t.outcome == "FATAL"
                else ("—" if t.recover_s is None else f"{t.recover_s:.3f}s")
            )
            name = r.name if i == 0 else ""
            tail = f"  {events}  {s.state(r.end_state.upper(), 10)} {mark}" if i == 0 else ""
            view.line(f"   {name:<11} {t.fault[:27]:<27} {detect:>8} {recover:>8}{tail}")
    if show_path:
        used = {
            (st.source, st.trigger, st.dest)
            for r in report.results
            for steps in r.paths
            for st in steps
        }
        edges = _diagram_edges()
        view.line()
        view.line(f"   statechart edges taken: {len(used & edges)} of {len(edges)}")
        missing = sorted(edges - used)
        if missing:
            parts = [
                (text, text)
                for text in (
                    f"{a} {s.arrow}{t}{s.arrow} {b}" + (", " if i < len(missing) - 1 else "")
                    for i, (a, t, b) in enumerate(missing)
                )
            ]
            _wrapped(view, "never taken here", parts)
    view.line()
    checks = sum(len(r.checks) for r in report.results)
    if report.ok:
        view.line(
            s(
                f"   {s.ok} {_plural(len(report.results), 'scenario')} behaved as behaviour.md "
                f"requires ({checks} checks passed) in {report.wall_s:.1f} s",
                "green",
                "bold",
            )
        )
    else:
        view.line(s(f"   {s.bad} qqconn misbehaved:", "red", "bold"))
        for line in report.failures():
            view.line(s(f"     - {line}", "red"))


def _plural(n: int, noun: str) -> str:
    return f"{'all ' if n > 1 else ''}{n} {noun}{'s' if n != 1 else ''}"


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
            stage = _Stage(view, slow, policy if policy is not None else demo_policy(slow), result)
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
            _print_result(view, result)
            if show_path:
                _print_path(view, result)
            results.append(result)
        report = DemoReport(results, time.monotonic() - started, output_closed=view.closed)
        _print_summary(view, report, show_path)
        return report
    finally:
        structlog.configure(**previous)
