"""A Hypothesis model of the connection machine, checked against a small reference of
docs/behaviour.md.

Each step draws only an event that can really happen in the current state (drawing among all
events misses deep bugs), on a simulated clock that tests choose, including lifetimes
straddling the 5 s quick-drop threshold. The reference model below is plain Python written from
docs/behaviour.md's rules; it never asks the machine's guards. After every step the machine and
the model must agree on the state, the counters, the session and the resume checkpoint, and on
what commands came out. Two facts come from the code base itself rather than being restated:
the fatal close-code set (``qqconn.endings.FATAL_CLOSE_CODES``, pinned literally in
tests/test_endings.py) and the backoff step (``backoff_index``, pinned there too).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from structlog.testing import CapturingLogger

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.checkpoint import Resumable
from qqconn.endings import FATAL_CLOSE_CODES, backoff_index
from qqconn.errors import LocalProtocolError
from qqconn.events import Timer
from qqconn.machine import ConnectionMachine
from qqconn.policy import Policy
from qqconn.testing.events import dispatch_received, one_of_each, ready_received

# -- docs/behaviour.md, restated ----------------------------------------------------------------

FATAL_CODES = FATAL_CLOSE_CODES
#: Non-fatal close codes a server may send (the common ones twice); fatal ones are drawn rarely.
CLOSE_CODES = [
    None, 1006, 4009, 1000, 1001, 1005, 1011, 4004, 4006, 4007, 4008, 4900, 4902, 4903,
    4913, 4920, 4000, None, 1006, 4009, 4009,
]  # fmt: skip
HELLO_INTERVALS: list[object] = [
    41250, 1000, 2000, 5000, 100, 600000, 0, -1, None, math.nan, "x", 99, 600001, True,
]  # fmt: skip
POLICIES = [
    Policy(),
    Policy(
        max_reconnect_attempts=4,
        max_quick_disconnects=2,
        connect_timeout_s=8.0,
        max_identify_refusals=2,
    ),
    Policy(
        max_reconnect_attempts=6,
        max_resume_failures=2,
        max_heartbeat_send_failures=2,
        backoff_jitter=0.0,
        stale_after_intervals=1.5,
        heartbeat_ack_timeout_ratio=1.0,
    ),
]


def reaction(code: int | None) -> str:
    """docs/behaviour.md's close-code table: what a close with ``code`` (None: no frame) calls for."""
    if code in FATAL_CODES:
        return "fatal"
    if code == 4009:
        return "rotation"
    if code == 4004:
        return "auth"
    if code == 4008:
        return "rate_limit"
    if code is not None and 4000 <= code <= 4999:
        return "identify"  # 4006, 4007, 49xx (and any 4xxx without a row)
    return "resume"  # 1000/1001/1005/1006, no close frame, other network errors


def hello_interval_s(p: Policy, raw: object) -> float:
    """Rule 4: a Hello interval (ms) missing, not finite, < 100 ms or > 10 min → the default."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return p.default_heartbeat_interval_s
    seconds = raw / 1000.0
    if not p.min_heartbeat_interval_s <= seconds <= p.max_heartbeat_interval_s:
        return p.default_heartbeat_interval_s
    return seconds


@dataclass
class Expect:
    """What one step must emit, according to the reference."""

    open: cmd.OpenSocket | None = None
    greeting: cmd.Command | None = None
    heartbeat: bool = False
    backoff: tuple[float, float] | None = None
    fatal: bool | None = None  # the retryable flag of a NotifyFatal, None: no notify
    close: bool = False
    dispatch: cmd.Command | None = None
    checkpoint: bool = False  # a WriteCheckpoint
    permit: bool = False  # a RequestIdentifyPermit (rule 17)
    permit_wait: tuple[float, float] | None = None  # a PERMIT timer's delay bounds


@dataclass
class Reference:
    """The reference model: counters, session and outcome, from docs/behaviour.md's rules only."""

    p: Policy
    state: str = "connecting"
    started: bool = False
    attempt: int = 0
    attempt_open: bool = False
    opened_at: float | None = None
    hello: bool = False
    sent: str | None = None  # "identify" or "resume"
    reached: bool = False  # READY/RESUMED on this attempt
    session: str | None = None
    last_seq: int | None = None
    #: the resume checkpoint: the session and s the host finished with
    handled: tuple[str, int | None] | None = None
    checkpoint_at: float = -math.inf
    quick: int = 0
    failed: int = 0
    resume_failures: int = 0
    #: rule 18: Identifies answered with op 9 in a row (READY/RESUMED resets it)
    identify_refusals: int = 0
    #: rule 17: the limiter was asked and has not answered; deferrals in a row
    permit_asked: bool = False
    permit_deferrals: int = 0
    auth_retry_used: bool = False
    refresh_next: bool = False
    interval: float | None = None
    awaiting_ack: bool = False
    last_frame: float | None = None
    send_failures: int = 0
    fatal_retryable: bool | None = None
    #: rule 19: where the last oversized ending happened, where the last skip left the
    #: stream, an s to fold into the checkpoint once the one before it is handled
    oversized_at: tuple[str, int | None] | None = None
    skipped_at: tuple[str, int] | None = None
    skip_pending: int = -1
    skipped: list[int] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in ("fatal", "stopped")

    def next_attempt(self, x: Expect) -> None:
        """Rule 17: an attempt that will Identify (no session) first waits for a permit; one
        that will Resume opens at once."""
        if self.session is None:
            self.state = "awaiting_permit"
            self.ask_permit(x)
        else:
            self.begin_attempt(x)

    def ask_permit(self, x: Expect) -> None:
        self.permit_asked = True
        x.permit = True

    def permit_deferred(self, wait_s: float | None, x: Expect) -> None:
        """The limiter said not now: wait ``wait_s`` (None: it cannot tell, so the backoff
        ladder spaces the asking) and ask again; the state file says so."""
        self.permit_asked = False
        self.permit_deferrals += 1
        if wait_s is None:
            base = self.p.backoff_s[backoff_index(self.permit_deferrals, self.p)]
            j = self.p.backoff_jitter
            x.permit_wait = (base * (1 - j), base * (1 + j))
        else:
            x.permit_wait = (wait_s, wait_s)
        x.checkpoint = True

    def begin_attempt(self, x: Expect) -> None:
        self.permit_asked = False
        self.permit_deferrals = 0
        self.attempt += 1
        self.attempt_open = True
        self.state = "connecting"
        self.opened_at = None
        self.hello = False
        self.sent = None
        self.reached = False
        self.interval = None
        self.awaiting_ack = False
        self.send_failures = 0
        x.open = cmd.OpenSocket(self.attempt, refresh_token=self.refresh_next)
        self.refresh_next = False

    def _close(self, x: Expect) -> None:
        if self.attempt_open:
            x.close = True
            self.attempt_open = False

    def to_fatal(self, x: Expect, retryable: bool) -> None:
        event(f"FATAL (retryable={retryable})")
        self._close(x)
        self.state = "fatal"
        self.fatal_retryable = retryable
        x.fatal = retryable

    def stop(self, x: Expect) -> None:
        self._close(x)
        self.state = "stopped"

    def oversized(self, now: float, x: Expect) -> None:
        """Rule 19: a frame above max_frame_bytes ended the connection (qqconn sent 1009).
        Again at the same point (same session, same last s) after a Resume: skip the next s,
        and once that was skipped, give the session up; neither is a quick drop."""
        session = self.session
        point = (session, self.last_seq)
        if session is None or point != self.oversized_at:
            self.end(now, "resume", x)
            if session is not None and self.session is not None:
                self.oversized_at = (session, self.last_seq)
            return
        if point == self.skipped_at:
            event("poison frame: session given up")
            self.end(now, "identify", x, quick=False)
            return
        self.end(now, "resume", x, quick=False)
        if self.session is None:
            return
        seq = (self.last_seq or 0) + 1
        event("poison frame: one s skipped")
        self.last_seq = seq
        self.oversized_at = self.skipped_at = (session, seq)
        self.skipped.append(seq)
        if self.handled == (session, seq - 1):
            self.handled = (session, seq)
            x.checkpoint = True
        else:
            self.skip_pending = seq

    def end(self, now: float, how: str, x: Expect, *, quick: bool = True) -> None:
        """A connection ended: ``how`` is a reaction() value, or op7 / invalid_true /
        refused (op 9 answering an Identify, rule 18)."""
        if how == "fatal" or (how == "auth" and self.auth_retry_used):
            self.to_fatal(x, retryable=False)
            return
        if how == "refused":  # rule 18: its own budget, not a quick drop
            self.identify_refusals += 1
            if self.identify_refusals >= self.p.max_identify_refusals:
                event("identify refused: FATAL")
                self.to_fatal(x, retryable=False)
                return
            quick = False
        # Rule 1: every end after the socket opened counts, except op 7 (and fatal, stop).
        if quick and how != "op7" and self.opened_at is not None:
            lived = round(now - self.opened_at, 6)  # the drawn lifetime, without float noise
            self.quick = self.quick + 1 if lived < self.p.quick_disconnect_threshold_s else 0
        # Rule 2: an attempt that ended before READY/RESUMED failed; 4008 always consumes one.
        if not self.reached or how == "rate_limit":
            self.failed += 1
        if self.sent == "resume" and not self.reached:
            self.resume_failures += 1
        if how == "auth":
            self.auth_retry_used = True
            self.refresh_next = True
        forget = how in ("identify", "refused")
        if forget or self.resume_failures >= self.p.max_resume_failures:
            if not forget and self.session is not None:
                event("session forgotten after failed resumes")
            if self.session is not None:
                self.handled = None  # a forgotten session is nobody's checkpoint
                self.oversized_at = self.skipped_at = None
                self.skip_pending = -1
            self.session = None
            self.resume_failures = 0
        self._close(x)
        # Rule 3: exhausting either limit ends in FATAL (retryable).
        if (
            self.quick >= self.p.max_quick_disconnects
            or self.failed >= self.p.max_reconnect_attempts
        ):
            self.to_fatal(x, retryable=True)
            return
        self.state = "backoff"
        if how == "op7" and self.reached and not self._young(now):
            x.backoff = (0.0, 0.0)  # op 7 on a live session: at once (young: backoff, design)
        elif how == "rotation":
            x.backoff = self.p.rotation_delay_s
        elif how == "invalid_true":
            x.backoff = self.p.invalid_session_delay_s
        elif how == "rate_limit":
            x.backoff = (self.p.rate_limit_wait_s, self.p.rate_limit_wait_s)
        else:
            base = self.p.backoff_s[backoff_index(self.failed, self.p)]
            j = self.p.backoff_jitter
            x.backoff = (base * (1 - j), base * (1 + j))

    def _young(self, now: float) -> bool:
        assert self.opened_at is not None
        return round(now - self.opened_at, 6) < self.p.quick_disconnect_threshold_s

    def greet(self, now: float, raw: object, x: Expect) -> None:
        self.hello = True
        self.state = "identified"
        self.interval = hello_interval_s(self.p, raw)
        if self.session is not None:
            self.sent = "resume"
            x.greeting = cmd.SendResume(self.attempt, self.session, self.last_seq)
        else:
            self.sent = "identify"
            x.greeting = cmd.SendIdentify(self.attempt)

    def session_reached(self) -> None:
        self.state = "alive"
        self.reached = True
        self.failed = 0
        self.resume_failures = 0
        self.identify_refusals = 0
        self.auth_retry_used = False

    def heartbeat_due(self, now: float, x: Expect) -> None:
        assert self.interval is not None and self.last_frame is not None
        zombie = self.awaiting_ack  # rule 5
        stale = now - self.last_frame >= self.p.stale_after_intervals * self.interval  # rule 6
        if zombie or stale:
            event("zombie" if zombie else "stale")
            self.end(now, "resume", x)
        else:
            self.beat(x)

    def beat(self, x: Expect) -> None:
        self.awaiting_ack = True
        x.heartbeat = True


def other_events(n: int, t: float) -> list[ev.Event]:
    """Every event type but Started (``qqconn.testing.events.one_of_each``), plus a fatal
    close and the other timers: what a terminal machine or an old attempt may be fed."""
    return [
        *(e for e in one_of_each(n, t, session_id="s-x", seq=10**6) if type(e) is not ev.Started),
        ev.SocketClosed(n, t, 4914),
        ev.TimerFired(Timer.ACK_DEADLINE, n, t),
        ev.TimerFired(Timer.ATTEMPT_DEADLINE, n, t),
        ev.TimerFired(Timer.BACKOFF, n, t),
        ev.TimerFired(Timer.PERMIT, n, t),
    ]


OTHER_EVENTS = len(other_events(0, 0.0))
SOCKET_TIMERS = (Timer.HEARTBEAT, Timer.ACK_DEADLINE, Timer.ATTEMPT_DEADLINE)


class ConnectionModel(RuleBasedStateMachine):
    """Drives the real machine with events valid for its state and compares it with Reference."""

    def __init__(self) -> None:
        super().__init__()
        self.m: ConnectionMachine
        self.ref: Reference
        self.now = 0.0
        self.timers: dict[Timer, tuple[float, int]] = {}
        self.pending_sends = 0
        self.notifies = 0
        self.finishes = 0
        #: what the host lane was handed and has not finished with: (session_id, seq)
        self.host_lane: deque[tuple[str | None, int | None]] = deque()
        self.state_before = "connecting"

    @initialize(
        policy=st.sampled_from(POLICIES),
        seed=st.integers(0, 2**16),
        restored=st.sampled_from([None, None, ("saved", 40), ("saved", None)]),
    )
    def setup(self, policy: Policy, seed: int, restored: tuple[str, int | None] | None) -> None:
        """A fresh machine with one of the policies, a seeded RNG, maybe a restored session."""
        self.ref = Reference(policy)
        saved = None if restored is None else Resumable(*restored)
        self.m = ConnectionMachine(
            policy, rng=random.Random(seed), logger=CapturingLogger(), restored=saved
        )
        if restored is not None:
            self.ref.session, self.ref.last_seq = restored
            self.ref.handled = restored

    # -- which events can happen now ---------------------------------------------------------

    def enabled(self) -> list[str]:
        """The events that can happen now, each repeated by how often it should be drawn.

        Endings are weighted low so that connections live long enough to go deep; stopping and
        misuse are drawn separately and rarely (see :meth:`step`).
        """
        r = self.ref
        handled = ["handled"] * 3 if self.host_lane else []
        if r.terminal:
            return ["poke_terminal", *handled]
        if not r.started:
            return ["start"]
        weights: dict[str, int] = {"advance": 4, "old_attempt": 1 if r.attempt > 1 else 0}
        weights["handled"] = 3 if self.host_lane else 0
        if r.state == "backoff":
            weights["fire_backoff"] = 8
        elif r.state == "awaiting_permit":
            if r.permit_asked:
                weights |= {"permit_granted": 6, "permit_deferred": 3}
            else:
                weights["fire_permit"] = 8
        elif r.opened_at is None:
            weights |= {"socket_opened": 8, "connect_failed": 1}
        else:
            weights |= {"close": 1, "close_near_threshold": 1, "op9": 1, "op7": 1}
            if r.state == "identified" and r.sent == "identify":
                weights["op9"] = 3  # rule 18's refusals, often enough to reach their limit
            again = r.oversized_at is not None and r.oversized_at == (r.session, r.last_seq)
            weights |= {"oversized": 6 if again else 1}
            weights |= {"frame_rejected": 1}
            if not r.hello:
                weights["hello"] = 8
            else:
                weights |= {"dispatch": 6, "op1": 1, "oddity": 1}
                if r.state == "identified":
                    weights["ready" if r.sent == "identify" else "resumed"] = 6
                weights["fire_heartbeat"] = 3 if Timer.HEARTBEAT in self.timers else 0
                weights["fire_ack"] = 1 if Timer.ACK_DEADLINE in self.timers else 0
                weights["ack"] = 4 if r.awaiting_ack else 0
                if self.pending_sends:
                    weights |= {"beat_sent": 2, "beat_failed": 2}
        if r.state in ("connecting", "identified") and Timer.ATTEMPT_DEADLINE in self.timers:
            weights["fire_deadline"] = 1
        return [kind for kind, weight in weights.items() for _ in range(weight)]

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One event that can happen in the current state, checked against the reference."""
        # Hypothesis favours the ends of a range, so the rare values sit in its middle.
        rare = data.draw(st.integers(0, 299), label="rare")
        if rare == 137 and self.ref.started and not self.ref.terminal:
            kind = "stop"
        elif rare == 151 and self.ref.started:
            kind = "start_again"
        else:
            kind = data.draw(st.sampled_from(self.enabled()), label="event")
        self.state_before = self.ref.state
        getattr(self, f"_{kind}")(data)

    # -- feeding and checking ----------------------------------------------------------------

    def feed(self, event: ev.Event, x: Expect) -> list[cmd.Command]:
        got = self.m.handle(event)
        if self.ref.state != self.state_before:
            self.ref.checkpoint_at = self.now  # every state change rewrites the state file
        self.apply(got)
        self.check(got, x)
        return got

    def apply(self, got: list[cmd.Command]) -> None:
        """Carry out the commands the way a driver would (timers, pending sends, terminal)."""
        for c in got:
            # After FATAL/STOPPED (Finish) no socket is ever opened again.
            assert not (self.finishes and isinstance(c, cmd.OpenSocket)), got
            match c:
                case cmd.StartTimer(timer=timer, delay_s=delay, attempt=n):
                    assert delay >= 0 and math.isfinite(delay)
                    self.timers[timer] = (self.now + delay, n)
                case cmd.CancelTimer(timer=timer):
                    self.timers.pop(timer, None)
                case cmd.CloseSocket(attempt=n):
                    for timer in SOCKET_TIMERS:
                        if timer in self.timers and self.timers[timer][1] == n:
                            del self.timers[timer]
                    self.pending_sends = 0
                case cmd.SendHeartbeat():
                    self.pending_sends += 1
                case cmd.NotifyFatal():
                    self.notifies += 1
                case cmd.Finish():
                    self.finishes += 1
                case cmd.DeliverDispatch(dispatch=d, session_id=sid):
                    self.host_lane.append((sid, d.seq))

    def check(self, got: list[cmd.Command], x: Expect) -> None:
        """The commands of one step are the ones the reference expects."""
        kinds = [type(c) for c in got]
        opens = [c for c in got if isinstance(c, cmd.OpenSocket)]
        assert opens == ([x.open] if x.open else []), got
        greetings = [c for c in got if isinstance(c, cmd.SendIdentify | cmd.SendResume)]
        assert greetings == ([x.greeting] if x.greeting else []), got
        beats = [c for c in got if isinstance(c, cmd.SendHeartbeat)]
        assert len(beats) == (1 if x.heartbeat else 0), got
        for beat in beats:  # rule 4: d = the last s received
            assert beat.seq == self.ref.last_seq
            assert beat.attempt == self.ref.attempt
        waits = [
            c.delay_s for c in got if isinstance(c, cmd.StartTimer) and c.timer is Timer.BACKOFF
        ]
        if x.backoff is None:
            assert waits == [], got
        else:
            low, high = x.backoff
            assert len(waits) == 1, got
            assert low - 1e-9 <= waits[0] <= high + 1e-9, (waits, x.backoff)
        notes = [c for c in got if isinstance(c, cmd.NotifyFatal)]
        if x.fatal is None:
            assert notes == [], got
        else:
            assert len(notes) == 1
            assert notes[0].retryable == x.fatal
            assert cmd.Finish in kinds
        closes = [c for c in got if isinstance(c, cmd.CloseSocket)]
        assert len(closes) == (1 if x.close else 0), got
        if closes and self.ref.state == "backoff":  # a reconnect never closes with 1000/1001
            assert closes[0].code not in (1000, 1001)
        deliveries = [c for c in got if isinstance(c, cmd.DeliverDispatch | cmd.DropDispatch)]
        assert deliveries == ([x.dispatch] if x.dispatch else []), got
        writes = [c for c in got if isinstance(c, cmd.WriteCheckpoint)]
        assert len(writes) == (1 if x.checkpoint else 0), got
        asks = [c for c in got if isinstance(c, cmd.RequestIdentifyPermit)]
        assert len(asks) == (1 if x.permit else 0), got
        permit_waits = [
            c.delay_s for c in got if isinstance(c, cmd.StartTimer) and c.timer is Timer.PERMIT
        ]
        if x.permit_wait is None:
            assert permit_waits == [], got
        else:
            low, high = x.permit_wait
            assert len(permit_waits) == 1, got
            assert low - 1e-9 <= permit_waits[0] <= high + 1e-9, (permit_waits, x.permit_wait)
        for a in (c for c in got if isinstance(c, cmd.AnnounceState)):
            if a.state == "alive":  # rule 13: alive only after READY/RESUMED
                assert a.trigger in ("ready", "resumed")
        announced = [c.state for c in got if isinstance(c, cmd.AnnounceState)]
        if announced:
            assert announced[-1] == self.ref.state

    # -- the events ------------------------------------------------------------------------

    def _start(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.started = True
        self.ref.next_attempt(x)
        self.feed(ev.Started(self.now), x)

    def _stop(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.stop(x)
        self.feed(ev.StopRequested(self.now), x)

    def _start_again(self, data: st.DataObject) -> None:
        before = (self.m.state, self.m.snapshot_fields())
        with pytest.raises(LocalProtocolError):
            self.m.handle(ev.Started(self.now))
        assert (self.m.state, self.m.snapshot_fields()) == before

    def _poke_terminal(self, data: st.DataObject) -> None:
        pick = data.draw(st.integers(0, OTHER_EVENTS - 1), label="terminal event")
        n = self.ref.attempt + data.draw(st.sampled_from([-1, 0, 1]), label="attempt offset")
        before = self.m.snapshot_fields()
        assert self.m.handle(other_events(n, self.now)[pick]) == []
        assert self.m.snapshot_fields() == before

    def _old_attempt(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(0, self.ref.attempt - 1), label="old attempt")
        events = [e for e in other_events(n, self.now) if getattr(e, "attempt", None) is not None]
        event = events[data.draw(st.integers(0, len(events) - 1), label="old event")]
        before = (self.m.state, self.m.snapshot_fields())
        assert self.m.handle(event) == []
        assert (self.m.state, self.m.snapshot_fields()) == before

    def _handled(self, data: st.DataObject) -> None:
        """The host lane finishes with the oldest dispatch it was handed (in order)."""
        sid, seq = self.host_lane.popleft()
        r, x = self.ref, Expect()
        if sid is not None and sid == r.session:
            new = r.handled is None or r.handled[0] != sid
            moved = (
                r.handled is not None
                and seq is not None
                and (r.handled[1] is None or seq > r.handled[1])
            )
            if moved and seq is not None and seq + 1 == r.skip_pending:
                seq += 1  # the s after it was skipped (rule 19)
            if new or moved:
                r.handled = (sid, seq)
            if not r.terminal and (new or self.now - r.checkpoint_at >= r.p.checkpoint_interval_s):
                r.checkpoint_at = self.now
                x.checkpoint = True
        self.feed(ev.DispatchHandled(self.now, sid, seq), x)

    def _advance(self, data: st.DataObject) -> None:
        dt = data.draw(
            st.sampled_from([0.001, 0.5, 1.0, 2.0, 4.99, 5.0, 10.0, 30.0])
            | st.floats(min_value=0.0, max_value=60.0),
            label="advance",
        )
        self.now += dt

    def _fire(self, timer: Timer) -> ev.TimerFired:
        due, n = self.timers.pop(timer)
        self.now = max(self.now, due)
        return ev.TimerFired(timer, n, self.now)

    def _fire_backoff(self, data: st.DataObject) -> None:
        x = Expect()
        event = self._fire(Timer.BACKOFF)
        self.ref.next_attempt(x)
        self.feed(event, x)

    def _fire_permit(self, data: st.DataObject) -> None:
        x = Expect()
        event = self._fire(Timer.PERMIT)
        self.ref.ask_permit(x)
        self.feed(event, x)

    def _permit_granted(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.begin_attempt(x)
        self.feed(ev.IdentifyPermitted(self.now), x)

    def _permit_deferred(self, data: st.DataObject) -> None:
        wait = data.draw(st.sampled_from([None, 0.0, 5.1, 30.0, 3600.0]), label="permit wait")
        x = Expect()
        self.ref.permit_deferred(wait, x)
        self.feed(ev.IdentifyPermitDeferred(self.now, wait, "bucket busy"), x)

    def _fire_deadline(self, data: st.DataObject) -> None:
        x = Expect()
        event = self._fire(Timer.ATTEMPT_DEADLINE)
        self.ref.end(self.now, "resume", x)
        self.feed(event, x)

    def _fire_heartbeat(self, data: st.DataObject) -> None:
        x = Expect()
        event = self._fire(Timer.HEARTBEAT)
        self.ref.heartbeat_due(self.now, x)
        self.feed(event, x)

    def _fire_ack(self, data: st.DataObject) -> None:
        x = Expect()
        event = self._fire(Timer.ACK_DEADLINE)
        if self.ref.awaiting_ack:  # rule 5: zombie
            self.ref.end(self.now, "resume", x)
        self.feed(event, x)

    def _socket_opened(self, data: st.DataObject) -> None:
        self.ref.opened_at = self.ref.last_frame = self.now
        self.feed(ev.SocketOpened(self.ref.attempt, self.now), Expect())

    def _connect_failed(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.end(self.now, "resume", x)
        self.feed(ev.ConnectFailed(self.ref.attempt, self.now, "gateway", "timeout"), x)

    def _hello(self, data: st.DataObject) -> None:
        x = Expect()
        raw = data.draw(st.sampled_from(HELLO_INTERVALS), label="interval_ms")
        self.ref.last_frame = self.now
        self.ref.greet(self.now, raw, x)
        self.feed(ev.HelloReceived(self.ref.attempt, self.now, raw), x)

    def _ready(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(["sess-a", "sess-b"]), label="session_id")
        seq = data.draw(st.sampled_from([1, None, 0, 7]), label="ready s")
        self.ref.last_frame = self.now
        self.ref.session = sid
        self.ref.last_seq = seq  # READY sets last seq to its s
        self.ref.session_reached()
        # An adopted READY is itself handed to the host (and only an adopted one).
        event = ready_received(self.ref.attempt, self.now, sid, seq)
        x = Expect(dispatch=cmd.DeliverDispatch(event.dispatch, sid))
        self.feed(event, x)

    def _resumed(self, data: st.DataObject) -> None:
        last = self.ref.last_seq
        seq = data.draw(st.sampled_from([None, last, (last or 0) + 2, 0]), label="resumed s")
        self.ref.last_frame = self.now
        if seq is not None and (last is None or seq > last):
            self.ref.last_seq = seq
        self.ref.session_reached()
        self.feed(ev.ResumedReceived(self.ref.attempt, self.now, seq), Expect())

    def _dispatch(self, data: st.DataObject) -> None:
        last = self.ref.last_seq
        base = last if last is not None else 0
        seq = data.draw(
            st.sampled_from([None, base - 1, base, base + 1, base + 1, base + 3, 0, 1]),
            label="dispatch s",
        )
        if seq is not None and seq < 0:
            seq = None
        x = Expect()
        self.ref.last_frame = self.now
        event = dispatch_received(self.ref.attempt, self.now, seq)
        if seq is None:
            x.dispatch = cmd.DeliverDispatch(event.dispatch, self.ref.session)
        elif last is not None and seq <= last:
            x.dispatch = cmd.DropDispatch(seq, last)
        else:
            self.ref.last_seq = seq
            x.dispatch = cmd.DeliverDispatch(event.dispatch, self.ref.session)
        self.feed(event, x)

    def _close(self, data: st.DataObject) -> None:
        fatal = data.draw(st.integers(0, 19), label="fatal close?") == 19
        codes = sorted(FATAL_CODES) if fatal else CLOSE_CODES
        code = data.draw(st.sampled_from(codes), label="close code")
        x = Expect()
        self.ref.end(self.now, reaction(code), x)
        self.feed(ev.SocketClosed(self.ref.attempt, self.now, code), x)

    def _oversized(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.oversized(self.now, x)
        self.feed(ev.SocketClosed(self.ref.attempt, self.now, None, "", sent_code=1009), x)

    def _close_near_threshold(self, data: st.DataObject) -> None:
        assert self.ref.opened_at is not None
        lived = data.draw(st.sampled_from([4.99, 4.999999, 5.0, 5.000001]), label="lived")
        self.now = max(self.now, self.ref.opened_at + lived)
        self._close(data)

    def _frame_rejected(self, data: st.DataObject) -> None:
        self.ref.last_frame = self.now
        self.feed(ev.FrameRejected(self.ref.attempt, self.now, "not JSON"), Expect())

    def _op9(self, data: st.DataObject) -> None:
        resumable = data.draw(st.booleans(), label="op 9 d")
        x = Expect()
        r = self.ref
        r.last_frame = self.now
        if r.state == "identified" and r.sent == "identify":  # it answered our Identify
            r.end(self.now, "refused", x)
        else:
            r.end(self.now, "invalid_true" if resumable else "identify", x)
        self.feed(ev.InvalidSessionReceived(self.ref.attempt, self.now, resumable), x)

    def _op7(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.last_frame = self.now
        self.ref.end(self.now, "op7", x)
        self.feed(ev.ReconnectRequested(self.ref.attempt, self.now), x)

    def _op1(self, data: st.DataObject) -> None:
        x = Expect()
        self.ref.last_frame = self.now
        self.ref.beat(x)
        self.feed(ev.HeartbeatRequested(self.ref.attempt, self.now), x)

    def _oddity(self, data: st.DataObject) -> None:
        n = self.ref.attempt
        odd: list[ev.Event] = [ev.HelloReceived(n, self.now, 1000)]
        if self.ref.sent == "identify":  # RESUMED answers only a Resume
            odd.append(ev.ResumedReceived(n, self.now, 99))
        if self.ref.state == "alive":
            odd += [
                ready_received(n, self.now, "sess-z", 99),
                ev.ResumedReceived(n, self.now, 99),
            ]
        event = data.draw(st.sampled_from(odd), label="oddity")
        self.ref.last_frame = self.now
        self.feed(event, Expect())

    def _ack(self, data: st.DataObject) -> None:
        r, x = self.ref, Expect()
        r.last_frame = self.now
        r.awaiting_ack = False
        # An acknowledged heartbeat rewrites the state file, at most once per interval.
        if self.now - r.checkpoint_at >= r.p.checkpoint_interval_s:
            r.checkpoint_at = self.now
            x.checkpoint = True
        self.feed(ev.HeartbeatAcked(r.attempt, self.now), x)

    def _beat_sent(self, data: st.DataObject) -> None:
        self.pending_sends -= 1
        self.ref.send_failures = 0
        self.feed(ev.HeartbeatSent(self.ref.attempt, self.now), Expect())

    def _beat_failed(self, data: st.DataObject) -> None:
        self.pending_sends -= 1
        x = Expect()
        self.ref.send_failures += 1
        if self.ref.send_failures >= self.ref.p.max_heartbeat_send_failures:  # rule 7
            event("heartbeat send failures ended the connection")
            self.ref.end(self.now, "resume", x)
        else:
            self.ref.awaiting_ack = False  # it never left: nothing to acknowledge
        self.feed(ev.HeartbeatSendFailed(self.ref.attempt, self.now, "OSError"), x)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def states_agree(self) -> None:
        """The machine's state is the reference's (QUICK_DROPPED is never a resting state)."""
        if hasattr(self, "m"):
            assert self.m.state.value == self.ref.state

    @invariant()
    def counters_agree_and_stay_within_limits(self) -> None:
        """Quick drops, failed attempts, resume failures, the session and last seq agree."""
        if not hasattr(self, "m"):
            return
        m, r, p = self.m, self.ref, self.ref.p
        assert m.quick_drops == r.quick
        assert m.failed_attempts == r.failed
        assert m.resume_failures == r.resume_failures
        assert m.identify_refusals == r.identify_refusals
        assert m.permit_deferrals == r.permit_deferrals
        assert m.session_id == r.session
        assert m.last_seq == r.last_seq
        assert list(m.snapshot_fields()["skipped"]["seqs"]) == r.skipped[-20:]
        assert m.checkpoint == (None if r.handled is None else Resumable(*r.handled))
        fields = m.snapshot_fields()
        assert (fields["session_id"], fields["last_seq"]) == (r.handled or (None, None))
        assert fields["received_seq"] == r.last_seq
        # The race of issue 9: a snapshot never names a session the machine has forgotten.
        assert fields["session_id"] in (None, m.session_id)
        assert m.attempt == r.attempt
        assert 0 <= m.quick_drops <= p.max_quick_disconnects
        assert 0 <= m.failed_attempts <= p.max_reconnect_attempts
        assert 0 <= m.resume_failures < p.max_resume_failures
        assert 0 <= m.identify_refusals <= p.max_identify_refusals

    @invariant()
    def fatal_is_notified_exactly_once(self) -> None:
        """NotifyFatal at most once, and exactly once iff FATAL; Finish once iff terminal."""
        if not hasattr(self, "m"):
            return
        assert self.notifies <= 1
        assert (self.notifies == 1) == (self.ref.state == "fatal")
        assert (self.finishes == 1) == self.ref.terminal
        if self.ref.state == "fatal":
            assert self.m.fatal is not None
            assert self.m.fatal.retryable == self.ref.fatal_retryable

    @invariant()
    def timers_match_the_state(self) -> None:
        """One heartbeat timer per live socket (rule 4), none after it; terminal: no timers."""
        if not hasattr(self, "m"):
            return
        r = self.ref
        socket_up = r.state in ("identified", "alive")
        heartbeat = self.timers.get(Timer.HEARTBEAT)
        # A fired heartbeat timer is re-armed in the same step, so it is always there.
        assert (heartbeat is not None) == socket_up
        if heartbeat is not None:
            assert heartbeat[1] == r.attempt
        assert (Timer.ACK_DEADLINE in self.timers) == (socket_up and r.awaiting_ack)
        assert (Timer.BACKOFF in self.timers) == (r.state == "backoff")
        # Rule 17: a PERMIT timer exactly while a deferred permit is awaited.
        waiting = r.state == "awaiting_permit" and not r.permit_asked
        assert (Timer.PERMIT in self.timers) == waiting
        if Timer.ATTEMPT_DEADLINE in self.timers:
            assert r.state in ("connecting", "identified")
        if r.terminal:
            assert self.timers == {}


TestConnectionModel = ConnectionModel.TestCase
TestConnectionModel.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No explain phase: it replays a failure for minutes; the shrunk program is explanation enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
