"""qqconn.machine: examples at every boundary of docs/behaviour.md, one rule or scenario per test."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import CapturingLogger

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.checkpoint import Resumable
from qqconn.endings import FATAL_CLOSE_CODES, EndingKind
from qqconn.errors import ConfigError, LocalProtocolError
from qqconn.events import Timer
from qqconn.machine import TRIGGERS, ConnectionMachine, State, build_rows
from qqconn.policy import Policy
from qqconn.testing.events import dispatch_received, one_of_each, ready_received

FATAL_CODES = sorted(FATAL_CLOSE_CODES)  # pinned literally in tests/test_endings.py
IDENTIFY_CODES = [4006, 4007, 4900, 4902, 4903, 4913, 4920, 4950]
INTERVAL_MS = 41250
INTERVAL_S = 41.25


class Run:
    """A scripted driver: feeds events at the times a test chooses and keeps every command."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        seed: int = 0,
        restored: Resumable | None = None,
        auto_permit: bool = True,
    ) -> None:
        self.log = CapturingLogger()
        self.m = ConnectionMachine(
            policy, rng=random.Random(seed), logger=self.log, restored=restored
        )
        self.out: list[cmd.Command] = []
        #: Grant every identify permit at once and hide the round trip (the request and the
        #: AWAITING_PERMIT announcements), so the other rules' scripts read as before; the
        #: permit rule's own tests (tests/test_permits.py) turn this off.
        self.auto_permit = auto_permit

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, event: ev.Event) -> list[cmd.Command]:
        got = self.m.handle(event)
        if self.auto_permit and cmd.RequestIdentifyPermit() in got:
            got = got + self.m.handle(ev.IdentifyPermitted(getattr(event, "at", 0.0)))
            got = [
                c
                for c in got
                if not isinstance(c, cmd.RequestIdentifyPermit)
                and not (
                    isinstance(c, cmd.AnnounceState)
                    and "awaiting_permit" in (c.state, c.previous.lower())
                )
            ]
        self.out.extend(got)
        return got

    @property
    def n(self) -> int:
        return self.m.attempt

    def start(self, at: float = 0.0) -> list[cmd.Command]:
        return self.feed(ev.Started(at))

    def open(self, at: float) -> list[cmd.Command]:
        return self.feed(ev.SocketOpened(self.n, at))

    def hello(self, at: float, interval: object = INTERVAL_MS) -> list[cmd.Command]:
        return self.feed(ev.HelloReceived(self.n, at, interval))

    def ready(self, at: float, sid: str = "sid-1", seq: int | None = 1) -> list[cmd.Command]:
        return self.feed(ready_received(self.n, at, sid, seq))

    def resumed(self, at: float, seq: int | None = None) -> list[cmd.Command]:
        return self.feed(ev.ResumedReceived(self.n, at, seq))

    def close(self, at: float, code: int | None) -> list[cmd.Command]:
        return self.feed(ev.SocketClosed(self.n, at, code))

    def connect_failed(self, at: float) -> list[cmd.Command]:
        return self.feed(ev.ConnectFailed(self.n, at, "token", "HTTP 502"))

    def fire(self, timer: Timer, at: float) -> list[cmd.Command]:
        return self.feed(ev.TimerFired(timer, self.n, at))

    def dispatch(self, at: float, seq: int | None) -> list[cmd.Command]:
        return self.feed(dispatch_received(self.n, at, seq))

    def connect(self, at: float, *, interval: object = INTERVAL_MS) -> list[cmd.Command]:
        """Socket opens at ``at``, Hello right after; returns Hello's commands."""
        self.open(at)
        return self.hello(at, interval)

    def alive(self, at: float = 0.0, seq: int | None = 1) -> None:
        """Cold start to ALIVE: Started, socket open, Hello, READY, all at ``at``."""
        self.start(at)
        self.connect(at)
        self.ready(at, seq=seq)
        assert self.m.state is State.ALIVE

    def backoff_delay(self, got: list[cmd.Command]) -> float:
        """The BACKOFF timer's delay among ``got`` (exactly one)."""
        delays = [
            c.delay_s for c in got if isinstance(c, cmd.StartTimer) and c.timer is Timer.BACKOFF
        ]
        assert len(delays) == 1, got
        return delays[0]

    def retry(self, at: float) -> list[cmd.Command]:
        """Fire the BACKOFF timer at ``at``: the next attempt starts."""
        assert self.m.state is State.BACKOFF
        got = self.fire(Timer.BACKOFF, at)
        assert [c.attempt for c in of(cmd.OpenSocket, got)] == [self.n]
        return got

    # -- reading ---------------------------------------------------------------------------

    def count(self, kind: type) -> int:
        return sum(isinstance(c, kind) for c in self.out)

    def opens(self) -> int:
        return self.count(cmd.OpenSocket)

    def logged(self, event: str, method: str | None = None) -> int:
        return sum(
            1
            for call in self.log.calls
            if call.args and call.args[0] == event and method in (None, call.method_name)
        )


def delivers(seq: int | None, session_id: str | None = "sid-1") -> cmd.DeliverDispatch:
    """The DeliverDispatch that ``Run.dispatch(at, seq)`` must produce: its payload, and
    the session it belongs to."""
    return cmd.DeliverDispatch(dispatch_received(0, 0.0, seq).dispatch, session_id)


def of(kind: type, got: list[cmd.Command]) -> list[Any]:
    """The commands of one type among ``got``."""
    return [c for c in got if isinstance(c, kind)]


def starts(timer: Timer, got: list[cmd.Command]) -> list[float]:
    """The delays of StartTimer(timer) among ``got``."""
    return [c.delay_s for c in got if isinstance(c, cmd.StartTimer) and c.timer is timer]


# -- cold start, seq tracking --------------------------------------------------------------------


def test_cold_start_identifies_and_ready_makes_alive() -> None:
    """Scenario 'Cold start': OpenSocket, Hello → heartbeat timer + Identify, READY → ALIVE."""
    r = Run()
    got = r.start(0.0)
    assert got == [
        cmd.OpenSocket(1, refresh_token=False),
        cmd.StartTimer(Timer.ATTEMPT_DEADLINE, 20.0, 1),
    ]
    assert r.open(0.3) == []
    got = r.hello(0.4)
    assert cmd.StartTimer(Timer.HEARTBEAT, INTERVAL_S, 1) in got
    assert cmd.SendIdentify(1) in got
    assert r.m.state is State.IDENTIFIED
    got = r.ready(0.5, "sess", 1)
    assert r.m.state is State.ALIVE
    assert cmd.CancelTimer(Timer.ATTEMPT_DEADLINE) in got
    assert r.m.session_id == "sess"
    assert r.m.last_seq == 1  # READY sets last_seq to its s


def test_status_says_alive_only_after_ready() -> None:
    """Rule 13: the announced state is 'alive' only after READY/RESUMED, never before."""
    r = Run()
    r.start(0.0)
    r.connect(0.1)
    assert [a.state for a in of(cmd.AnnounceState, r.out)] == ["identified"]
    r.ready(0.2)
    assert [a.state for a in of(cmd.AnnounceState, r.out)] == ["identified", "alive"]
    assert of(cmd.AnnounceState, r.out)[-1].trigger == "ready"


def test_seq_5_10_7_heartbeat_carries_10_and_7_is_dropped() -> None:
    """Scenario 'Seq tracking' / rule 10: s = 5, 10, 7 → last seq 10, 7 dropped, heartbeat d 10."""
    r = Run()
    r.alive(0.0)
    assert r.dispatch(1.0, 5) == [delivers(5)]
    assert r.dispatch(1.1, 10) == [delivers(10)]
    assert r.dispatch(1.2, 7) == [cmd.DropDispatch(7, 10)]
    assert r.dispatch(1.3, 10) == [cmd.DropDispatch(10, 10)]
    assert r.m.last_seq == 10
    got = r.fire(Timer.HEARTBEAT, INTERVAL_S)
    assert of(cmd.SendHeartbeat, got) == [cmd.SendHeartbeat(1, 10)]


def test_heartbeat_before_any_seq_carries_null() -> None:
    """Rule 4: a heartbeat before any s was received carries d = null (seq None)."""
    r = Run()
    r.start(0.0)
    r.connect(0.0)
    got = r.fire(Timer.HEARTBEAT, INTERVAL_S)
    assert of(cmd.SendHeartbeat, got) == [cmd.SendHeartbeat(1, None)]


def test_dispatch_without_seq_is_delivered_and_changes_nothing() -> None:
    """Rule 10: a dispatch without a usable s is still delivered; last seq is unchanged."""
    r = Run()
    r.alive(0.0, seq=3)
    assert r.dispatch(1.0, None) == [delivers(None)]
    assert r.m.last_seq == 3


def test_resumed_never_moves_last_seq_backwards() -> None:
    """Rule 10: RESUMED with an s below the last one keeps the last one (nothing replayed twice)."""
    r = Run()
    r.alive(0.0)
    r.dispatch(1.0, 9)
    r.close(10.0, 1006)
    r.retry(13.0)
    got = r.connect(13.5)
    assert cmd.SendResume(2, "sid-1", 9) in got
    r.resumed(14.0, seq=4)
    assert r.m.last_seq == 9
    assert r.dispatch(14.1, 9) == [cmd.DropDispatch(9, 9)]


def test_resumed_without_a_resume_is_ignored() -> None:
    """RESUMED answers only a Resume: after an Identify it is a protocol oddity, ignored."""
    r = Run()
    r.start(0.0)
    r.connect(0.5)
    assert r.resumed(0.6, seq=5) == []
    assert r.m.state is State.IDENTIFIED
    assert r.m.last_seq is None
    assert r.logged("qqconn.unexpected_frame", "warning") == 1


def test_restored_session_is_resumed_on_the_first_attempt() -> None:
    """A session restored before start (state file of a restarted process) is Resumed at once."""
    r = Run(restored=Resumable("old-sess", 41))
    r.start(0.0)
    got = r.connect(0.5)
    assert cmd.SendResume(1, "old-sess", 41) in got
    r.resumed(0.6, seq=44)
    assert r.m.state is State.ALIVE
    assert r.m.last_seq == 44


def test_restored_session_refused_falls_back_to_identify() -> None:
    """A restored session the server refuses (op 9 false) is forgotten: Identify next."""
    r = Run(restored=Resumable("old-sess", 41))
    r.start(0.0)
    r.connect(0.5)
    r.feed(ev.InvalidSessionReceived(1, 10.0, False))
    r.retry(15.0)
    assert cmd.SendIdentify(2) in r.connect(15.0)


@pytest.mark.parametrize("when", ["fresh", "connecting", "alive", "backoff", "stopped"])
def test_a_session_cannot_be_restored_after_construction(when: str) -> None:
    """The constructor is the one door for a restored session: no method restores one, and
    assigning the session raises in every state (CONNECTING right after start included),
    leaving the machine unchanged."""
    r = Run()
    if when == "connecting":
        r.start(0.0)
        assert r.m.state is State.CONNECTING
    elif when == "alive":
        r.alive(0.0)
    elif when == "backoff":
        r.alive(0.0)
        r.close(10.0, 1006)
    elif when == "stopped":
        r.feed(ev.StopRequested(0.0))
    before = r.m.snapshot_fields()
    assert not hasattr(r.m, "restore_session")
    with pytest.raises(AttributeError):
        r.m.session_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.m.last_seq = 1  # type: ignore[misc]
    assert r.m.snapshot_fields() == before
    if when == "backoff":  # the next attempt resumes what the server gave, nothing else
        r.retry(20.0)
        assert cmd.SendResume(2, "sid-1", 1) in r.connect(20.0)


@pytest.mark.parametrize(
    "restored",
    [Resumable("", 1), Resumable("s", -1), Resumable("s", True), ("s", 1), "s"],  # type: ignore[arg-type]
    ids=["empty-session", "negative-seq", "bool-seq", "tuple", "string"],
)
def test_a_bad_restored_session_is_a_config_error(restored: Any) -> None:
    """restored must be a Resumable with a session id and a sequence number (or None)."""
    with pytest.raises(ConfigError) as info:
        ConnectionMachine(restored=restored)
    assert info.value.field == "restored"


def test_a_restored_session_is_the_checkpoint_until_the_host_moves_it() -> None:
    """The restored (session, seq) is the resume checkpoint from the start (and the session
    the first attempt resumes: the driver, which knows where it came from, logs it)."""
    r = Run(restored=Resumable("old-sess", 41))
    assert r.m.checkpoint == Resumable("old-sess", 41)
    fields = r.m.snapshot_fields()
    assert (fields["session_id"], fields["last_seq"], fields["received_seq"]) == (
        "old-sess",
        41,
        41,
    )
    assert r.m.session_id == "old-sess" and r.m.last_seq == 41


# -- the quick-drop counter (rule 1) ---------------------------------------------------------------


@pytest.mark.parametrize(("lived", "quick"), [(4.99, 1), (5.0, 0), (4.0, 1), (6.0, 0)])
def test_quick_threshold_4_99_is_quick_5_00_is_not(lived: float, quick: int) -> None:
    """Rule 1: a connection that lived 4.99 s is a quick drop; 5.00 s is not."""
    r = Run()
    r.alive(1.0)
    r.close(1.0 + lived, 1006)
    assert r.m.quick_drops == quick
    assert r.m.state is State.BACKOFF


def test_a_long_connection_resets_the_quick_counter() -> None:
    """Rule 1: two quick drops, then a connection of exactly 5.00 s: the counter is back to 0."""
    r = Run()
    r.alive(0.0)
    r.close(1.0, 1006)
    r.retry(4.0)
    r.connect(4.0)
    r.ready(4.0)
    r.close(5.0, 1006)
    assert r.m.quick_drops == 2
    r.retry(8.0)
    r.connect(10.0)
    r.close(15.0, 4009)
    assert r.m.quick_drops == 0


def _end_by_close(code: int | None) -> Callable[[Run, float], None]:
    def end(r: Run, t: float) -> None:
        r.close(t + 1.0, code)

    return end


def _end_by_op9(resumable: bool) -> Callable[[Run, float], None]:
    def end(r: Run, t: float) -> None:
        r.feed(ev.InvalidSessionReceived(r.n, t + 1.0, resumable))

    return end


def _end_by_zombie(r: Run, t: float) -> None:
    r.fire(Timer.HEARTBEAT, t + 1.0)
    r.feed(ev.HeartbeatSent(r.n, t + 1.0))
    got = r.fire(Timer.ACK_DEADLINE, t + 1.5)
    assert of(cmd.CloseSocket, got)


def _end_by_stale(r: Run, t: float) -> None:
    got = r.fire(Timer.HEARTBEAT, t + 3.5)  # three 1 s intervals without a frame
    assert of(cmd.CloseSocket, got)


def _end_by_send_failures(r: Run, t: float) -> None:
    for k in (1, 2, 3):
        r.dispatch(t + k - 0.5, None)  # frames keep arriving: not stale
        r.fire(Timer.HEARTBEAT, t + k)
        r.feed(ev.HeartbeatSendFailed(r.n, t + k, "OSError"))


def _end_by_deadline(r: Run, t: float) -> None:
    r.fire(Timer.ATTEMPT_DEADLINE, t + 2.5)  # connect_timeout_s 3 s, socket opened at 0.5 s


ENDERS: dict[str, Callable[[Run, float], None]] = {
    "close-4009": _end_by_close(4009),
    "close-1000": _end_by_close(1000),
    "close-4006": _end_by_close(4006),
    "close-4008": _end_by_close(4008),
    "close-4004": _end_by_close(4004),
    "drop-no-close-frame": _end_by_close(None),
    "drop-1006": _end_by_close(1006),
    "op9-true": _end_by_op9(True),
    "op9-false": _end_by_op9(False),
    "zombie": _end_by_zombie,
    "stale": _end_by_stale,
    "send-failures": _end_by_send_failures,
    "attempt-deadline": _end_by_deadline,
}


@pytest.mark.parametrize("how", list(ENDERS))
def test_quick_drop_counts_whatever_ended_it(how: str) -> None:
    """Rule 1: a close frame, a drop, op 9 answering a Resume or a watchdog within 5 s of
    opening is a quick drop (op 9 answering an Identify is rule 18's: tests/test_permits.py)."""
    restored = Resumable("sid-0", 3) if how.startswith("op9") else None
    r = Run(Policy(connect_timeout_s=3.0), restored=restored)
    r.start(0.0)
    r.connect(0.5, interval=1000)
    ENDERS[how](r, 0.5)
    assert r.m.state is State.BACKOFF
    assert r.m.quick_drops == 1
    assert not r.m.attempt_open


def test_connect_failure_is_never_a_quick_drop() -> None:
    """Rule 1: an attempt whose socket never opened neither counts nor resets quick drops."""
    r = Run()
    r.alive(0.0)
    r.close(1.0, 1006)
    assert r.m.quick_drops == 1
    for k in range(5):
        r.retry(10.0 + 10 * k)
        r.connect_failed(10.5 + 10 * k)
        assert r.m.quick_drops == 1


def test_attempt_deadline_before_socket_is_not_quick() -> None:
    """Rule 1/2: no socket within connect_timeout_s consumes an attempt, is not a quick drop."""
    r = Run()
    r.start(0.0)
    got = r.fire(Timer.ATTEMPT_DEADLINE, 20.0)
    assert r.m.state is State.BACKOFF
    assert r.m.quick_drops == 0
    assert r.m.failed_attempts == 1
    assert of(cmd.CloseSocket, got)


@pytest.mark.parametrize(
    "how", ["op7-alive", "op7-early", "fatal-4914", "stop", "second-4004"]
)  # fmt: skip
def test_quick_drop_exceptions_are_not_counted(how: str) -> None:
    """Rule 1: op 7, a close that goes straight to FATAL and a local stop are not quick drops."""
    r = Run()
    r.alive(0.0)
    r.close(1.0, 1006)
    r.retry(4.0)
    r.connect(4.0)
    assert r.m.quick_drops == 1
    if how == "op7-alive":
        r.ready(4.1)
        r.feed(ev.ReconnectRequested(r.n, 4.2))
    elif how == "op7-early":
        r.feed(ev.ReconnectRequested(r.n, 4.2))
    elif how == "fatal-4914":
        r.close(4.2, 4914)
    elif how == "stop":
        r.feed(ev.StopRequested(4.2))
    else:
        r.close(4.2, 4004)  # first 4004: a quick drop (2)
        r.retry(8.0)
        r.connect(8.0)
        r.close(8.2, 4004)  # second: FATAL, not counted
        assert r.m.quick_drops == 2
        return
    assert r.m.quick_drops == 1


@pytest.mark.parametrize("code", [4009, 1000, 4006, None, 1006, 4008])
def test_seed_loop_third_quick_drop_is_fatal(code: int | None) -> None:
    """Scenario 'the seed's loop': every socket closes 1 s after opening → FATAL after the 3rd."""
    r = Run()
    r.start(0.0)
    t = 0.0
    for _ in range(10):  # bounded: FATAL must come on the 3rd
        if r.m.is_terminal:
            break
        r.connect(t + 0.5)
        r.ready(t + 0.6)
        r.close(t + 1.5, code)
        if r.m.state is State.BACKOFF:
            t += 1.5 + r.backoff_delay(r.out[-4:])
            r.retry(t)
    assert r.m.state is State.FATAL
    assert r.opens() == 3
    notes = of(cmd.NotifyFatal, r.out)
    assert len(notes) == 1
    assert notes[0].retryable
    assert r.count(cmd.Finish) == 1
    assert r.m.fatal is not None
    assert r.m.fatal.retryable


def test_seed_loop_close_frames_then_drops_is_fatal_on_the_third() -> None:
    """Scenario 'the seed's loop': quick closes with a frame, then without, still FATAL on the 3rd."""
    r = Run()
    r.start(0.0)
    t = 0.0
    for code in (4009, 1000, None):
        r.connect(t + 0.5)
        r.close(t + 1.5, code)
        if r.m.state is State.BACKOFF:
            t += 10.0
            r.retry(t)
    assert r.m.state is State.FATAL
    assert r.count(cmd.NotifyFatal) == 1
    assert r.opens() == 3
    # Nothing opens a 4th socket, whatever the driver reports afterwards.
    r.fire(Timer.BACKOFF, 100.0)
    assert r.opens() == 3


def test_quick_quick_long_quick_quick_is_not_fatal_one_more_is() -> None:
    """Scenario: quick, quick, a 6 s connection, quick, quick → no FATAL; one more quick → FATAL."""
    r = Run()
    r.start(0.0)
    t = 0.0
    lifetimes = [1.0, 1.0, 6.0, 1.0, 1.0]
    expected = [1, 2, 0, 1, 2]
    for lived, quick in zip(lifetimes, expected, strict=True):
        r.connect(t)
        r.ready(t)
        r.close(t + lived, 1006)
        assert r.m.state is State.BACKOFF
        assert r.m.quick_drops == quick
        t += lived + 10.0
        r.retry(t)
    assert r.count(cmd.NotifyFatal) == 0
    r.connect(t)
    r.ready(t)
    r.close(t + 1.0, 1006)
    assert r.m.state is State.FATAL
    assert r.count(cmd.NotifyFatal) == 1


def test_ready_does_not_reset_quick_drops() -> None:
    """Rule 1: READY never resets the quick counter (accept, READY, close at once is the loop)."""
    r = Run()
    r.alive(0.0)
    r.close(1.0, 4009)
    r.retry(3.0)
    r.connect(3.0)
    r.resumed(3.1)
    r.close(4.0, 4009)
    assert r.m.quick_drops == 2
    r.retry(6.0)
    r.connect(6.0)
    r.resumed(6.1)
    assert r.m.quick_drops == 2
    assert r.m.failed_attempts == 0  # ... while READY/RESUMED do reset the attempts
    r.close(7.0, 4009)
    assert r.m.state is State.FATAL


def test_socket_opening_resets_nothing() -> None:
    """Rules 1 and 2: a socket merely opening resets neither quick drops nor failed attempts."""
    r = Run()
    r.start(0.0)
    r.connect(0.0)
    r.close(1.0, 1006)  # quick 1, failed 1
    r.retry(5.0)
    r.connect(5.0)
    r.close(6.0, 1006)  # quick 2, failed 2
    r.retry(15.0)
    r.connect_failed(15.5)  # failed 3
    r.retry(30.0)
    r.open(30.5)
    assert (r.m.quick_drops, r.m.failed_attempts) == (2, 3)
    r.hello(30.6)
    assert (r.m.quick_drops, r.m.failed_attempts) == (2, 3)


# -- the attempt counter (rule 2) -------------------------------------------------------------------


def test_token_endpoint_down_100th_attempt_is_fatal_with_backoff_delays() -> None:
    """Scenario 'Token endpoint down': FATAL (retryable) on the 100th failure, delays = backoff_s."""
    p = Policy()
    r = Run(p, seed=3)
    r.start(0.0)
    t = 0.0
    delays: list[float] = []
    for k in range(1, 101):  # bounded by max_reconnect_attempts
        assert r.n == k
        got = r.connect_failed(t + 0.1)
        assert r.m.failed_attempts == k
        if k == 100:
            break
        delay = r.backoff_delay(got)
        base = p.backoff_s[min(k - 1, len(p.backoff_s) - 1)]
        assert base * 0.8 <= delay <= base * 1.2
        delays.append(delay)
        t += 0.1 + delay
        r.retry(t)
    assert r.m.state is State.FATAL
    assert r.opens() == 100
    assert len(delays) == 99
    notes = of(cmd.NotifyFatal, r.out)
    assert len(notes) == 1
    assert notes[0].retryable
    assert "100" in notes[0].reason
    # The spent budget ends at once: no pointless last wait.
    assert starts(Timer.BACKOFF, got) == []


def test_attempt_limit_with_exact_backoff_table() -> None:
    """Backoff is indexed by consecutive failed attempts; the last value repeats (jitter 0)."""
    r = Run(Policy(backoff_jitter=0.0, max_reconnect_attempts=8))
    r.start(0.0)
    t = 0.0
    delays: list[float] = []
    for _ in range(8):
        got = r.connect_failed(t)
        if r.m.is_terminal:
            break
        delays.append(r.backoff_delay(got))
        t += delays[-1]
        r.retry(t)
    assert delays == [2.0, 5.0, 10.0, 30.0, 60.0, 60.0, 60.0]
    assert r.m.state is State.FATAL


@pytest.mark.parametrize("how", ["ready", "resumed"])
def test_ready_or_resumed_resets_attempts(how: str) -> None:
    """Rule 2: READY or RESUMED resets the failed-attempt counter."""
    r = Run()
    r.alive(0.0)
    r.close(10.0, 1006)  # not counted: READY was reached
    assert r.m.failed_attempts == 0
    t = 10.0
    for k in range(1, 4):
        t += 100.0
        r.retry(t)
        r.connect_failed(t)
        assert r.m.failed_attempts == k
    r.retry(t + 100.0)
    got = r.connect(t + 100.0)
    if how == "ready":
        r.ready(t + 100.1)
    else:
        assert of(cmd.SendResume, got)
        r.resumed(t + 100.1)
    assert r.m.failed_attempts == 0


def test_no_ready_in_time_consumes_an_attempt() -> None:
    """Rule 2: a socket that opens but gets no READY within connect_timeout_s is a failed attempt."""
    r = Run()
    r.start(0.0)
    r.connect(1.0)
    got = r.fire(Timer.ATTEMPT_DEADLINE, 20.0)
    assert r.m.failed_attempts == 1
    assert r.m.quick_drops == 0  # lived 19 s
    assert of(cmd.CloseSocket, got)


# -- 4004 ---------------------------------------------------------------------------------------


def test_4004_twice_is_fatal_not_retryable() -> None:
    """Scenario '4004 loop': 4004, fresh token, 4004 again before READY → FATAL, not retryable."""
    r = Run()
    r.start(0.0)
    t = 0.0
    for _ in range(5):  # bounded: never an endless loop
        if r.m.is_terminal:
            break
        r.connect(t + 0.5)
        r.close(t + 0.6, 4004)
        if r.m.state is State.BACKOFF:
            t += 10.0
            got = r.retry(t)
            assert cmd.OpenSocket(r.n, refresh_token=True) in got
    assert r.m.state is State.FATAL
    assert r.opens() == 2
    notes = of(cmd.NotifyFatal, r.out)
    assert len(notes) == 1
    assert not notes[0].retryable
    assert notes[0].close_code == 4004


def test_4004_then_ready_then_4004_is_not_fatal() -> None:
    """Close 4004: the retry budget is 'before any READY/RESUMED'; READY gives it back."""
    r = Run()
    r.start(0.0)
    r.connect(0.5)
    r.close(0.6, 4004)
    got = r.retry(10.0)
    assert cmd.OpenSocket(2, refresh_token=True) in got
    r.connect(10.5)
    r.ready(10.6)
    r.close(100.0, 4004)
    assert r.m.state is State.BACKOFF
    got = r.retry(110.0)
    assert cmd.OpenSocket(3, refresh_token=True) in got
    r.connect(110.5)
    r.ready(110.6)
    assert r.count(cmd.NotifyFatal) == 0


def test_4004_keeps_the_session_and_refreshes_once() -> None:
    """Close 4004 keeps the session (Resume next) and refreshes the token for one attempt only."""
    r = Run()
    r.alive(0.0)
    r.close(100.0, 4004)
    got = r.retry(110.0)
    assert cmd.OpenSocket(2, refresh_token=True) in got
    r.connect_failed(110.5)  # e.g. the gateway URL request failed
    got = r.retry(120.0)
    assert cmd.OpenSocket(3, refresh_token=False) in got
    got = r.connect(120.5)
    assert cmd.SendResume(3, "sid-1", 1) in got


# -- op 7 ---------------------------------------------------------------------------------------


def test_op7_in_alive_reconnects_at_once_uncounted_and_drops_the_following_4009() -> None:
    """op 7: close ourselves, reconnect at once, Resume; not counted; the 4009 after is dropped."""
    r = Run()
    r.alive(0.0)
    r.dispatch(0.5, 2)
    got = r.feed(ev.ReconnectRequested(1, 1800.0))  # the ~30 min rotation
    closes = of(cmd.CloseSocket, got)
    assert len(closes) == 1
    assert closes[0].code not in (1000, 1001)
    assert r.backoff_delay(got) == 0.0
    assert (r.m.quick_drops, r.m.failed_attempts) == (0, 0)
    assert r.feed(ev.SocketClosed(1, 1800.1, 4009, "Session timed out")) == []
    r.retry(1800.0)
    assert r.feed(ev.SocketClosed(1, 1800.2, 4009)) == []
    assert r.m.state is State.CONNECTING
    got = r.connect(1800.5)
    assert cmd.SendResume(2, "sid-1", 2) in got
    assert r.count(cmd.NotifyFatal) == 0


def test_op7_on_a_young_connection_is_uncounted_but_not_at_once() -> None:
    """op 7 within 5 s of opening: not a quick drop nor a failure, but waits a backoff delay."""
    r = Run()
    r.alive(0.0)
    r.close(1.0, 1006)  # one quick drop, to see that op 7 neither adds nor resets it
    r.retry(3.0)
    r.connect(3.0)
    r.resumed(3.1)
    got = r.feed(ev.ReconnectRequested(2, 4.0))
    assert (r.m.quick_drops, r.m.failed_attempts) == (1, 0)
    assert 2.0 * 0.8 <= r.backoff_delay(got) <= 2.0 * 1.2
    assert r.feed(ev.SocketClosed(2, 4.1, 4009)) == []
    r.retry(6.0)
    assert cmd.SendResume(3, "sid-1", 1) in r.connect(6.0)


def test_op7_then_4009_while_events_flow_loses_and_duplicates_nothing() -> None:
    """Scenario 'op 7 then 4009 while events keep flowing': Resume, no event lost or duplicated."""
    r = Run()
    r.alive(0.0, seq=1)
    delivered: list[int | None] = []

    def deliver(got: list[cmd.Command]) -> None:
        delivered.extend(c.dispatch.seq for c in of(cmd.DeliverDispatch, got))

    for s in (2, 3, 4):
        deliver(r.dispatch(100.0, s))
    assert r.backoff_delay(r.feed(ev.ReconnectRequested(1, 1800.0))) == 0.0
    deliver(r.dispatch(1800.1, 5))  # arrived on the socket we already gave up: dropped...
    r.feed(ev.SocketClosed(1, 1800.2, 4009))
    r.retry(1800.0)
    got = r.connect(1800.5)
    assert cmd.SendResume(2, "sid-1", 4) in got  # ... so Resume asks for everything after 4
    for s in (3, 4, 5, 6):  # the server replays from its own idea of our seq
        deliver(r.dispatch(1800.6, s))
    r.resumed(1800.7, seq=6)
    deliver(r.dispatch(1800.8, 7))
    assert delivered == [2, 3, 4, 5, 6, 7]
    assert r.m.state is State.ALIVE


def test_op7_before_ready_counts_as_failed_attempt_not_quick() -> None:
    """Design: op 7 before READY/RESUMED consumes an attempt (with backoff), is not a quick drop."""
    r = Run()
    r.start(0.0)
    r.connect(0.5)
    got = r.feed(ev.ReconnectRequested(1, 0.6))
    assert r.m.failed_attempts == 1
    assert r.m.quick_drops == 0
    assert 2.0 * 0.8 <= r.backoff_delay(got) <= 2.0 * 1.2


# -- op 9 and the close codes that forget the session ---------------------------------------------


@pytest.mark.parametrize("where", ["alive", "identified-after-resume"])
def test_op9_true_resumes_after_1_to_5_s(where: str) -> None:
    """op 9 d: true → Resume after 1–5 s."""
    r = Run()
    r.alive(0.0)
    if where == "identified-after-resume":
        r.close(10.0, 1006)
        r.retry(15.0)
        r.connect(15.0)
    got = r.feed(ev.InvalidSessionReceived(r.n, 20.0, True))
    assert 1.0 <= r.backoff_delay(got) <= 5.0
    r.retry(25.0)
    got = r.connect(25.0)
    assert cmd.SendResume(r.n, "sid-1", 1) in got


def test_op9_true_delays_spread_over_1_to_5_s() -> None:
    """op 9 d: true: the delay is jittered within [1, 5] s."""
    delays = []
    for seed in range(40):
        r = Run(seed=seed)
        r.alive(0.0)
        delays.append(r.backoff_delay(r.feed(ev.InvalidSessionReceived(1, 20.0, True))))
    assert all(1.0 <= d <= 5.0 for d in delays)
    assert max(delays) - min(delays) > 2.0


def test_op9_false_forgets_the_session_and_identifies() -> None:
    """op 9 d: false (or no d) → forget the session, Identify next, with backoff."""
    r = Run()
    r.alive(0.0)
    got = r.feed(ev.InvalidSessionReceived(1, 20.0, False))
    assert 2.0 * 0.8 <= r.backoff_delay(got) <= 2.0 * 1.2
    assert r.m.session_id is None
    r.retry(23.0)
    got = r.connect(23.0)
    assert cmd.SendIdentify(2) in got
    assert not of(cmd.SendResume, got)


@pytest.mark.parametrize("code", IDENTIFY_CODES)
def test_identify_codes_forget_the_session(code: int) -> None:
    """Close 4006, 4007, 4900–4913 and other 49xx → forget the session, Identify next."""
    r = Run()
    r.alive(0.0)
    got = r.close(20.0, code)
    assert r.m.state is State.BACKOFF
    assert r.m.session_id is None
    assert starts(Timer.BACKOFF, got)
    r.retry(30.0)
    assert cmd.SendIdentify(2) in r.connect(30.0)


@pytest.mark.parametrize("code", [None, 1000, 1001, 1005, 1006, 1011, 4009])
def test_transport_closes_keep_the_session_and_resume(code: int | None) -> None:
    """Close 1000/1001/1005/1006/4009 or no close frame → Resume (session kept)."""
    r = Run()
    r.alive(0.0)
    got = r.close(20.0, code)
    delay = r.backoff_delay(got)
    if code == 4009:
        assert 0.0 <= delay <= 1.0  # short jittered delay
    else:
        assert 2.0 * 0.8 <= delay <= 2.0 * 1.2  # backoff
    r.retry(30.0)
    assert cmd.SendResume(2, "sid-1", 1) in r.connect(30.0)


def test_three_failed_resumes_forget_the_session() -> None:
    """Resume fails 3 times in a row (socket dies before RESUMED) → forget the session, Identify."""
    r = Run()
    r.alive(0.0)
    r.close(100.0, 1006)
    t = 100.0
    for k in (1, 2, 3):
        t += 100.0
        r.retry(t)
        got = r.connect(t)
        assert cmd.SendResume(r.n, "sid-1", 1) in got
        r.close(t + 6.0, 1006)  # lived 6 s: not quick
        assert r.m.failed_attempts == k
        if k < 3:
            assert r.m.session_id == "sid-1"
    assert r.m.session_id is None
    r.retry(t + 100.0)
    assert cmd.SendIdentify(r.n) in r.connect(t + 100.0)


def test_4902_after_resume_forgets_the_session_at_once() -> None:
    """Close 4902 (reset by resume) → forget the session and Identify on the next attempt."""
    r = Run()
    r.alive(0.0)
    r.close(100.0, 1006)
    r.retry(110.0)
    r.connect(110.0)
    r.close(110.5, 4902)
    assert r.m.session_id is None
    r.retry(120.0)
    assert cmd.SendIdentify(r.n) in r.connect(120.0)


def test_4008_waits_rate_limit_resumes_and_consumes_an_attempt_from_alive() -> None:
    """Close 4008: keep the session, wait rate_limit_wait_s, Resume; consumes an attempt (ALIVE)."""
    r = Run()
    r.alive(0.0)
    got = r.close(100.0, 4008)
    assert r.backoff_delay(got) == 60.0
    assert r.m.failed_attempts == 1
    r.retry(160.0)
    assert cmd.SendResume(2, "sid-1", 1) in r.connect(160.0)


def test_4008_from_alive_counts_towards_the_attempt_limit() -> None:
    """Close 4008 consumes an attempt even from ALIVE: with a limit of 3, two more failures end."""
    r = Run(Policy(max_reconnect_attempts=3, rate_limit_wait_s=1.0))
    r.alive(0.0)
    r.close(10.0, 4008)
    t = 10.0
    for _ in range(5):  # bounded: the limit is 3
        if r.m.is_terminal:
            break
        t += 100.0
        r.retry(t)
        r.connect_failed(t + 0.1)
    assert r.m.state is State.FATAL
    assert r.opens() == 3  # the first socket, then two failed attempts
    assert of(cmd.NotifyFatal, r.out)[0].retryable


# -- fatal close codes ----------------------------------------------------------------------------


def every_event(n: int, t: float) -> list[ev.Event]:
    """One of every event type but Started (``qqconn.testing.events.one_of_each``) for attempt
    ``n`` at ``t``, plus the variants other rows answer: op 9 true, a close of each row of
    the close-code table, an oversized frame, refused credentials, every other timer."""
    return [
        *(e for e in one_of_each(n, t, session_id="sid-x", seq=99) if type(e) is not ev.Started),
        ev.InvalidSessionReceived(n, t, True),
        ev.SocketClosed(n, t, 4009),
        ev.SocketClosed(n, t, 4004),
        ev.SocketClosed(n, t, 4008),
        ev.SocketClosed(n, t, 4006),
        ev.SocketClosed(n, t, 4914),
        ev.SocketClosed(n, t, None, "", sent_code=1009),
        ev.ConnectFailed(n, t, "token", "refused", refused=True),
        ev.TimerFired(Timer.ACK_DEADLINE, n, t),
        ev.TimerFired(Timer.ATTEMPT_DEADLINE, n, t),
        ev.TimerFired(Timer.BACKOFF, n, t),
    ]


def _assert_absorbs_everything(r: Run, t: float) -> None:
    """A terminal machine does nothing for any event of any attempt (Started raises)."""
    state, counters = r.m.state, r.m.snapshot_fields()
    for n in (r.n - 1, r.n, r.n + 1):
        for event in every_event(n, t):
            assert r.feed(event) == []
            assert r.m.state is state
    with pytest.raises(LocalProtocolError):
        r.feed(ev.Started(t))
    assert r.m.state is state
    assert r.m.snapshot_fields() == counters


@pytest.mark.parametrize("code", FATAL_CODES)
@pytest.mark.parametrize("where", ["alive", "identified", "connecting"])
def test_fatal_codes_end_at_once_and_open_nothing_ever(code: int, where: str) -> None:
    """Close 4001, 4002, 4010–4014, 4914, 4915, 4924 → FATAL at once, not retryable, no socket."""
    r = Run()
    r.start(0.0)
    r.open(0.5)
    if where != "connecting":
        r.hello(0.6)
    if where == "alive":
        r.ready(0.7)
    got = r.close(0.8, code)
    assert r.m.state is State.FATAL
    assert of(cmd.NotifyFatal, got) == [of(cmd.NotifyFatal, got)[0]]
    note = of(cmd.NotifyFatal, got)[0]
    assert not note.retryable
    assert note.close_code == code
    assert cmd.Finish() in got
    assert starts(Timer.BACKOFF, got) == []
    assert r.m.quick_drops == 0
    _assert_absorbs_everything(r, 1000.0)
    assert r.opens() == 1
    assert r.count(cmd.NotifyFatal) == 1


# -- liveness: zombie, stale, send failures --------------------------------------------------------


def test_zombie_via_ack_deadline_closes_not_1000_and_resumes() -> None:
    """Rule 5: a heartbeat never acknowledged → close (not 1000/1001), Resume next."""
    r = Run()
    r.alive(0.0)
    got = r.fire(Timer.HEARTBEAT, INTERVAL_S)
    ack_deadlines = starts(Timer.ACK_DEADLINE, got)
    assert len(ack_deadlines) == 1
    assert ack_deadlines[0] <= INTERVAL_S  # detected within two intervals of the last ACK
    r.feed(ev.HeartbeatSent(1, INTERVAL_S))
    got = r.fire(Timer.ACK_DEADLINE, INTERVAL_S + ack_deadlines[0])
    closes = of(cmd.CloseSocket, got)
    assert len(closes) == 1
    assert closes[0].code not in (1000, 1001)
    assert r.m.state is State.BACKOFF
    r.retry(100.0)
    assert cmd.SendResume(2, "sid-1", 1) in r.connect(100.0)


def test_zombie_via_heartbeat_due() -> None:
    """Rule 5: a heartbeat falls due while the previous one is unacknowledged → zombie, Resume."""
    r = Run(Policy(heartbeat_ack_timeout_ratio=1.0))
    r.alive(0.0)
    r.fire(Timer.HEARTBEAT, INTERVAL_S)
    r.feed(ev.HeartbeatSent(1, INTERVAL_S))
    r.dispatch(50.0, 2)  # frames still arrive, only ACKs are missing
    got = r.fire(Timer.HEARTBEAT, 2 * INTERVAL_S)
    assert not of(cmd.SendHeartbeat, got)
    closes = of(cmd.CloseSocket, got)
    assert len(closes) == 1
    assert closes[0].code not in (1000, 1001)
    assert r.m.state is State.BACKOFF
    assert r.m.session_id == "sid-1"


def test_acknowledged_heartbeats_keep_the_connection() -> None:
    """Rule 5: heartbeats that are acknowledged never end the connection."""
    r = Run()
    r.alive(0.0)
    t = 0.0
    for _ in range(20):
        t += INTERVAL_S
        got = r.fire(Timer.HEARTBEAT, t)
        assert of(cmd.SendHeartbeat, got)
        r.feed(ev.HeartbeatSent(1, t))
        got = r.feed(ev.HeartbeatAcked(1, t + 0.05))
        assert cmd.CancelTimer(Timer.ACK_DEADLINE) in got
        assert r.fire(Timer.ACK_DEADLINE, t + 1.0) == []  # a late ACK timer does nothing
    assert r.m.state is State.ALIVE
    assert r.count(cmd.CloseSocket) == 0


def test_one_heartbeat_timer_per_socket_across_ten_reconnects() -> None:
    """Rule 4: after ten reconnects exactly one heartbeat timer runs, for the current socket."""
    r = Run()
    armed: dict[Timer, int] = {}

    def track(got: list[cmd.Command]) -> None:
        for c in got:
            if isinstance(c, cmd.StartTimer):
                armed[c.timer] = c.attempt
            elif isinstance(c, cmd.CancelTimer):
                armed.pop(c.timer, None)
            elif isinstance(c, cmd.CloseSocket):
                for timer in (Timer.HEARTBEAT, Timer.ACK_DEADLINE, Timer.ATTEMPT_DEADLINE):
                    if armed.get(timer) == c.attempt:
                        del armed[timer]

    track(r.start(0.0))
    t = 0.0
    for k in range(10):
        track(r.connect(t))
        track(r.ready(t) if k == 0 else r.resumed(t))
        track(r.fire(Timer.HEARTBEAT, t + INTERVAL_S))  # a heartbeat in flight when it ends
        assert armed.get(Timer.HEARTBEAT) == r.n
        track(r.close(t + 60.0, 4009 if k % 2 else None))
        assert Timer.HEARTBEAT not in armed  # never outlives its socket
        t += 100.0
        track(r.retry(t))
    track(r.connect(t))
    assert r.n == 11
    assert armed.get(Timer.HEARTBEAT) == 11  # never missing after a reconnect


def test_every_5th_ack_logs_one_info_line() -> None:
    """Rule 8: every 5th acknowledged heartbeat logs one INFO line with count, seq and latency."""
    r = Run()
    r.alive(0.0)
    t = 0.0
    for _ in range(12):
        t += INTERVAL_S
        r.fire(Timer.HEARTBEAT, t)
        r.feed(ev.HeartbeatAcked(1, t + 0.05))
    infos = [c for c in r.log.calls if c.args and c.args[0] == "qqconn.heartbeat"]
    assert len(infos) == 2
    assert all(c.method_name == "info" for c in infos)
    assert {"acked", "last_seq", "latency_ms"} <= set(infos[0].kwargs)


def test_stale_connection_ends_without_frames_for_three_intervals() -> None:
    """Rule 6: no inbound frame for three heartbeat intervals ends the connection (Resume next)."""
    r = Run()
    r.alive(0.0)
    got = r.fire(Timer.HEARTBEAT, 3 * INTERVAL_S)  # the loop was blocked; nothing arrived
    assert not of(cmd.SendHeartbeat, got)
    assert len(of(cmd.CloseSocket, got)) == 1
    assert of(cmd.CloseSocket, got)[0].code not in (1000, 1001)
    assert r.m.state is State.BACKOFF
    assert r.m.session_id == "sid-1"


def test_stale_half_open_with_failing_sends() -> None:
    """Scenario 'half-open (server silent)': sends fail, no frame for 3 intervals → ended."""
    r = Run()
    r.alive(0.0)
    for k in (1, 2):
        r.fire(Timer.HEARTBEAT, k * INTERVAL_S)
        r.feed(ev.HeartbeatSendFailed(1, k * INTERVAL_S, "timeout"))
    got = r.fire(Timer.HEARTBEAT, 3 * INTERVAL_S)
    assert of(cmd.CloseSocket, got)
    assert r.m.state is State.BACKOFF


def test_silence_below_three_intervals_is_not_stale() -> None:
    """Rule 6: a frame within three intervals keeps the connection (boundary just below)."""
    r = Run()
    r.alive(0.0)
    got = r.fire(Timer.HEARTBEAT, 3 * INTERVAL_S - 0.01)
    assert of(cmd.SendHeartbeat, got)
    assert r.m.state is State.ALIVE


def test_three_heartbeat_send_failures_end_the_connection() -> None:
    """Rule 7: three heartbeat sends failing in a row end the connection."""
    r = Run()
    r.alive(0.0)
    t = 0.0
    for k in (1, 2, 3):
        t += INTERVAL_S
        r.dispatch(t - 1.0, None)  # frames keep arriving: not stale
        got = r.fire(Timer.HEARTBEAT, t)
        assert of(cmd.SendHeartbeat, got)
        got = r.feed(ev.HeartbeatSendFailed(1, t, "BrokenPipe"))
        if k < 3:
            assert r.m.state is State.ALIVE
            assert not of(cmd.CloseSocket, got)
            # A heartbeat that never left cannot be acknowledged: no zombie at its deadline.
            assert r.fire(Timer.ACK_DEADLINE, t + INTERVAL_S / 2) == []
    assert len(of(cmd.CloseSocket, got)) == 1
    assert r.m.state is State.BACKOFF
    assert r.logged("qqconn.heartbeat_send_failed", "warning") == 2


def test_heartbeat_send_success_resets_the_failure_count() -> None:
    """Rule 7: a successful send resets the failure count (fail, fail, ok, fail, fail: alive)."""
    r = Run()
    r.alive(0.0)
    t = 0.0
    for ok in (False, False, True, False, False):
        t += INTERVAL_S
        r.dispatch(t - 1.0, None)
        r.fire(Timer.HEARTBEAT, t)
        if ok:
            r.feed(ev.HeartbeatSent(1, t))
            r.feed(ev.HeartbeatAcked(1, t + 0.1))
        else:
            r.feed(ev.HeartbeatSendFailed(1, t, "x"))
    assert r.m.state is State.ALIVE
    assert r.count(cmd.CloseSocket) == 0


@pytest.mark.parametrize(
    "interval", [0, -1, None, math.nan, math.inf, "x", True, 99, 600001, 10**400]
)  # fmt: skip
def test_absurd_hello_interval_uses_default_without_churn(interval: object) -> None:
    """Scenario 'Hello interval 0, -1, missing, NaN': default 41.25 s used, logged, no churn."""
    r = Run()
    r.start(0.0)
    got = r.connect(0.5, interval=interval)
    assert cmd.StartTimer(Timer.HEARTBEAT, 41.25, 1) in got
    assert r.logged("qqconn.hello_interval_replaced", "warning") == 1
    r.ready(0.6)
    t = 0.5
    for _ in range(5):
        t += 41.25
        got = r.fire(Timer.HEARTBEAT, t)
        assert cmd.StartTimer(Timer.HEARTBEAT, 41.25, 1) in got
        r.feed(ev.HeartbeatAcked(1, t + 0.1))
    assert r.m.state is State.ALIVE
    assert r.opens() == 1


def test_valid_hello_interval_is_used() -> None:
    """Rule 4: heartbeats go at the Hello interval (ms → s)."""
    r = Run()
    r.start(0.0)
    got = r.connect(0.5, interval=2000)
    assert cmd.StartTimer(Timer.HEARTBEAT, 2.0, 1) in got
    assert r.logged("qqconn.hello_interval_replaced") == 0


# -- the one door: payloads in, the resume checkpoint, WriteCheckpoint -------------------------------


def handled(r: Run, at: float, seq: int | None, sid: str | None = "sid-1") -> list[cmd.Command]:
    """The host lane reports that it finished with the dispatch ``seq`` of session ``sid``."""
    return r.feed(ev.DispatchHandled(at, sid, seq))


def test_ready_is_delivered_with_its_frame_and_session() -> None:
    """An adopted READY is handed to the host as itself (type READY, data, id) with its session."""
    r = Run()
    r.start(0.0)
    r.connect(0.1)
    got = r.ready(0.2, "sess", 7)
    assert of(cmd.DeliverDispatch, got) == [
        cmd.DeliverDispatch(ready_received(1, 0.2, "sess", 7).dispatch, "sess")
    ]
    assert of(cmd.DeliverDispatch, got)[0].dispatch.type == "READY"


def test_a_ready_the_machine_ignores_is_not_delivered() -> None:
    """READY in ALIVE is an oddity: ignored, never handed to the host (nor a checkpoint)."""
    r = Run()
    r.alive(0.0)
    got = r.ready(1.0, "other", 50)
    assert of(cmd.DeliverDispatch, got) == []
    assert r.m.session_id == "sid-1"
    assert r.logged("qqconn.unexpected_frame", "warning") == 1


def test_handle_dispatch_is_the_row_handle_runs_for_dispatch_received() -> None:
    """handle_dispatch(attempt, at, dispatch) answers exactly what handle(DispatchReceived)
    does, and leaves the machine in the same state, for fresh, replayed, seq-less and stale
    dispatches."""
    a, b = Run(), Run()
    for r in (a, b):
        r.alive(0.0, seq=3)
    script = [(1, 1.0, 5), (1, 1.1, 5), (1, 1.2, 2), (1, 1.3, None), (1, 1.4, 9), (0, 1.5, 10)]
    script += [(2, 1.6, 11)]
    for attempt, at, seq in script:
        event = dispatch_received(attempt, at, seq)
        via_handle = a.feed(event)
        direct = b.m.handle_dispatch(attempt, at, event.dispatch)
        assert via_handle == ([] if direct is None else [direct])
        assert a.m.snapshot_fields() == b.m.snapshot_fields()
        assert (a.m.now, a.m.last_frame_at) == (b.m.now, b.m.last_frame_at)
    assert a.m.last_seq == 9
    for r in (a, b):
        r.close(2.0, 1006)
        assert r.m.handle_dispatch(1, 2.1, dispatch_received(1, 2.1, 50).dispatch) is None


def test_dispatch_after_the_socket_closed_is_not_delivered() -> None:
    """A dispatch read from a socket the machine gave up on is dropped silently (not delivered,
    not counted as a replay): its seq stays un-received, so Resume asks for it again."""
    r = Run()
    r.alive(0.0, seq=3)
    r.feed(ev.ReconnectRequested(1, 10.0))
    assert r.dispatch(10.1, 4) == []
    assert r.m.last_seq == 3


def test_dispatch_handled_moves_the_checkpoint_and_asks_for_writes() -> None:
    """The checkpoint names the session once the host handled its READY (a write at once);
    later reports move its s, writing at most once per checkpoint_interval_s (the boundary
    itself writes); s never goes back; a report without s changes nothing."""
    r = Run()
    r.alive(10.0, seq=1)
    assert r.m.checkpoint is None  # READY is still with the host
    assert handled(r, 10.2, 1) == [cmd.WriteCheckpoint()]  # a new session: at once
    assert r.m.checkpoint == Resumable("sid-1", 1)
    for s in (2, 3, 4):
        r.dispatch(10.3, s)
    assert handled(r, 10.5, 2) == []
    assert handled(r, 11.19, 3) == []  # 0.99 s after the last write
    assert r.m.checkpoint == Resumable("sid-1", 3)
    assert handled(r, 11.2, 4) == [cmd.WriteCheckpoint()]  # exactly 1.0 s after
    assert handled(r, 11.3, 2) == []
    assert handled(r, 11.4, None) == []
    assert r.m.checkpoint == Resumable("sid-1", 4)
    fields = r.m.snapshot_fields()
    assert (fields["session_id"], fields["last_seq"], fields["received_seq"]) == ("sid-1", 4, 4)


def test_checkpoint_interval_is_the_policys() -> None:
    """A longer checkpoint_interval_s writes less often; an announcement restarts the wait."""
    r = Run(Policy(checkpoint_interval_s=5.0))
    r.alive(0.0)
    assert handled(r, 1.0, 1) == [cmd.WriteCheckpoint()]
    r.dispatch(1.0, 2)
    assert handled(r, 5.9, 2) == []
    assert handled(r, 6.0, 2) == [cmd.WriteCheckpoint()]


def test_a_report_for_a_session_the_machine_does_not_hold_changes_nothing() -> None:
    """DispatchHandled for another session (or none) is ignored: no write, no checkpoint."""
    r = Run()
    r.alive(0.0)
    handled(r, 0.1, 1)
    before = r.m.snapshot_fields()
    assert handled(r, 5.0, 99, sid="another") == []
    assert handled(r, 6.0, 99, sid=None) == []
    assert r.m.snapshot_fields() == before


@pytest.mark.parametrize("how", ["op9-false", "close-4006", "failed-resumes"])
def test_snapshot_never_names_a_forgotten_session(how: str) -> None:
    """The state-file race of issue 9: after the session is forgotten, and through the new
    Identify and READY, no snapshot names the old session (let alone with 'alive'); late
    reports for the old one are ignored; the new one is named once its READY was handled."""
    r = Run(Policy(max_resume_failures=2))
    seen: list[tuple[str, str | None]] = []

    def look() -> None:
        f = r.m.snapshot_fields()
        assert f["session_id"] in (None, r.m.session_id), (f, r.m.session_id)
        seen.append((f["state"], f["session_id"]))

    r.alive(0.0)
    handled(r, 0.1, 1)
    for s in (2, 3, 4, 5):
        r.dispatch(1.0, s)
    handled(r, 1.1, 2)
    look()
    assert seen[-1] == ("alive", "sid-1")
    if how == "op9-false":
        r.feed(ev.InvalidSessionReceived(1, 20.0, False))
    elif how == "close-4006":
        r.close(20.0, 4006)
    else:
        t = 20.0
        r.close(t, 1006)
        for _ in range(2):  # two resumes fail before RESUMED: the session is forgotten
            look()
            t += 100.0
            r.retry(t)
            r.connect(t)
            r.close(t + 6.0, 1006)
    look()
    assert r.m.session_id is None
    assert seen[-1][1] is None
    forgotten_at = len(seen) - 1
    assert handled(r, 300.0, 3) == []  # the host lane still finishing the old session's events
    look()
    r.retry(400.0)
    got = r.connect(400.0)
    assert cmd.SendIdentify(r.n) in got
    look()
    got = r.ready(400.5, "sid-2", 1)
    assert of(cmd.AnnounceState, got)[-1].state == "alive"
    look()
    assert seen[-1] == ("alive", None)  # READY not handled yet: no session named
    assert handled(r, 400.6, 4) == []  # still the old session's: ignored
    look()
    assert handled(r, 400.7, 1, sid="sid-2") == [cmd.WriteCheckpoint()]
    look()
    assert seen[-1] == ("alive", "sid-2")
    assert all(sid != "sid-1" for _, sid in seen[forgotten_at:]), seen
    assert r.m.checkpoint == Resumable("sid-2", 1)


@pytest.mark.parametrize("how", ["stop", "fatal"])
def test_terminal_states_still_move_the_checkpoint_silently(how: str) -> None:
    """After STOPPED or FATAL the host lane drains: its reports move the checkpoint (the driver
    writes it on the way out) but the machine emits nothing."""
    r = Run()
    r.alive(0.0)
    handled(r, 0.1, 1)
    for s in (2, 3):
        r.dispatch(0.2, s)
    if how == "stop":
        r.feed(ev.StopRequested(1.0))
    else:
        r.close(1.0, 4915)
    assert r.m.is_terminal
    assert handled(r, 5.0, 3) == []
    assert r.m.checkpoint == Resumable("sid-1", 3)
    assert r.m.snapshot_fields()["last_seq"] == 3


def test_acknowledged_heartbeats_write_the_checkpoint_at_most_once_per_interval() -> None:
    """A heartbeat ACK asks for a state-file rewrite (fresh updated_at on a quiet connection),
    at most once per checkpoint_interval_s; an unsolicited ACK asks for nothing."""
    r = Run(Policy(checkpoint_interval_s=60.0))
    r.alive(0.0)
    t = INTERVAL_S
    writes = []
    for _ in range(4):
        r.fire(Timer.HEARTBEAT, t)
        got = r.feed(ev.HeartbeatAcked(1, t + 0.05))
        writes.append(of(cmd.WriteCheckpoint, got) != [])
        t += INTERVAL_S
    assert writes == [False, True, False, True]  # 41.3 s: too soon; 82.55 s: due; ...
    assert r.feed(ev.HeartbeatAcked(1, t + 500.0)) == []  # nothing was awaited


def test_announcements_carry_the_ending_that_caused_them() -> None:
    """AnnounceState names the ending behind a change: the close for connection_ended, the
    same ending for the assess that follows, none for a retry or a stop."""
    r = Run()
    r.alive(0.0)
    got = r.close(1.0, 4009)  # a quick drop
    changes = of(cmd.AnnounceState, got)
    assert [(a.state, a.trigger) for a in changes] == [
        ("quick_dropped", "connection_ended"),
        ("backoff", "assess"),
    ]
    assert all(a.ending is not None and a.ending.kind is EndingKind.ROTATION for a in changes)
    assert changes[0].ending == r.m.last_ending
    got = r.retry(3.0)
    assert of(cmd.AnnounceState, got)[0].ending is None
    got = r.feed(ev.StopRequested(4.0))
    assert of(cmd.AnnounceState, got) == [cmd.AnnounceState("stopped", "CONNECTING", "stop")]


def test_the_fatal_announcement_carries_the_ending() -> None:
    """Into FATAL, the announcement carries the fatal close (kind, code, reason)."""
    r = Run()
    r.alive(0.0)
    (fatal,) = [a for a in of(cmd.AnnounceState, r.close(10.0, 4915)) if a.state == "fatal"]
    assert fatal.ending is not None
    assert (fatal.ending.kind, fatal.ending.close_code) == (EndingKind.FATAL_CLOSE, 4915)


@pytest.mark.parametrize(
    ("how", "kind", "trigger"),
    [
        ("zombie", EndingKind.ZOMBIE, "ack_due"),
        ("stale", EndingKind.STALE, "heartbeat_due"),
        ("send-failures", EndingKind.SEND_FAILED, "heartbeat_failed"),
        ("attempt-deadline", EndingKind.DEADLINE, "attempt_deadline_passed"),
    ],
)
def test_detected_ends_lead_to_quick_dropped_then_backoff_when_young(
    how: str, kind: EndingKind, trigger: str
) -> None:
    """Zombie, stale, failed sends and the attempt deadline are rows that lead where the end
    goes: a young connection passes QUICK_DROPPED on its way to BACKOFF."""
    r = Run(Policy(connect_timeout_s=3.0))
    r.start(0.0)
    r.connect(0.5, interval=1000)
    ENDERS[how](r, 0.5)
    changes = [(a.state, a.trigger) for a in of(cmd.AnnounceState, r.out)][1:]
    assert changes == [("quick_dropped", trigger), ("backoff", "assess")]
    assert r.m.last_ending is not None and r.m.last_ending.kind is kind


@pytest.mark.parametrize("how", ["zombie", "stale"])
def test_detected_ends_of_an_old_connection_go_straight_to_backoff(how: str) -> None:
    """A zombie or stale connection that lived past the threshold goes straight to BACKOFF."""
    r = Run()
    r.alive(0.0)
    t = 100 * INTERVAL_S
    r.dispatch(t - 1.0, None)
    r.fire(Timer.HEARTBEAT, t)
    if how == "zombie":  # no ACK: the next heartbeat finds it unanswered
        got = r.fire(Timer.HEARTBEAT, t + INTERVAL_S)
    else:  # answered, then silence for three intervals
        r.feed(ev.HeartbeatAcked(1, t + 0.05))
        got = r.fire(Timer.HEARTBEAT, t + 0.05 + 3 * INTERVAL_S)
    changes = [(a.state, a.trigger) for a in of(cmd.AnnounceState, got)]
    assert changes == [("backoff", "heartbeat_due")]
    kind = EndingKind.ZOMBIE if how == "zombie" else EndingKind.STALE
    assert r.m.last_ending is not None and r.m.last_ending.kind is kind
    assert r.m.quick_drops == 0


def test_an_oversized_frame_resumes_with_backoff_and_is_logged() -> None:
    """qqconn's own WebSocket closed 1009 (frame above max_frame_bytes): a transport failure,
    classified by the machine from the raw fact; logged with the limit; Resume with backoff."""
    r = Run()
    r.alive(0.0)
    got = r.feed(ev.SocketClosed(1, 100.0, None, "", sent_code=1009))
    assert r.m.state is State.BACKOFF
    assert 2.0 * 0.8 <= r.backoff_delay(got) <= 2.0 * 1.2
    ending = r.m.last_ending
    assert ending is not None and ending.kind is EndingKind.FRAME_TOO_LARGE
    assert ending.close_code == 1009 and ending.reason == "closed 1009: frame too large"
    (line,) = [c for c in r.log.calls if c.args and c.args[0] == "qqconn.frame_too_large"]
    assert line.method_name == "warning" and line.kwargs["max_bytes"] == 4 * 1024 * 1024
    r.retry(110.0)
    assert cmd.SendResume(2, "sid-1", 1) in r.connect(110.0)


def test_refused_credentials_refresh_once_then_fatal() -> None:
    """ConnectFailed(refused=True): judged like close 4004: a fresh token for the next attempt;
    refused again before READY → FATAL, not retryable, saying so."""
    r = Run()
    r.start(0.0)
    r.feed(ev.ConnectFailed(1, 0.1, "token", "token endpoint refused", refused=True))
    assert r.m.state is State.BACKOFF
    assert r.m.last_ending is not None
    assert r.m.last_ending.kind is EndingKind.CREDENTIALS_REFUSED
    got = r.retry(10.0)
    assert cmd.OpenSocket(2, refresh_token=True) in got
    got = r.feed(ev.ConnectFailed(2, 10.1, "token", "token endpoint refused", refused=True))
    assert r.m.state is State.FATAL
    (note,) = of(cmd.NotifyFatal, got)
    assert not note.retryable
    assert note.reason.startswith("authentication failed again after a token refresh")


def test_snapshot_fields_are_the_state_files_and_json_able() -> None:
    """snapshot_fields() holds only state-file keys, is JSON-able, and names the last ending
    and the fatal reason once there are some."""
    import json

    from qqconn.checkpoint import SCHEMA_KEYS

    r = Run()
    fields = r.m.snapshot_fields()
    assert set(fields) <= SCHEMA_KEYS
    assert fields["last_ending"] is None and fields["fatal"] is None
    r.alive(0.0)
    r.close(1.0, 4009)
    fields = r.m.snapshot_fields()
    assert fields["last_ending"] == {
        "kind": "rotation",
        "reason": "closed 4009",
        "close_code": 4009,
    }
    r.retry(2.0)
    r.connect(2.0)
    r.close(2.5, 4915)
    fields = r.m.snapshot_fields()
    assert fields["fatal"] == {
        "reason": "close 4915: bot banned",
        "close_code": 4915,
        "retryable": False,
    }
    assert json.loads(json.dumps(fields)) == fields
    assert set(SCHEMA_KEYS) - set(fields) == {
        "ready",
        "app_id",
        "shard",
        "updated_at",
        "updated_at_unix",
    }


# -- stop, terminal states, misuse ------------------------------------------------------------------


def _fresh(r: Run) -> None:
    pass


def _token_fetch(r: Run) -> None:
    r.start(0.0)


def _handshake(r: Run) -> None:
    r.start(0.0)
    r.open(0.5)


def _identified(r: Run) -> None:
    r.start(0.0)
    r.connect(0.5)


def _identified_resume(r: Run) -> None:
    r.alive(0.0)
    r.close(10.0, 1006)
    r.retry(15.0)
    r.connect(15.0)


def _alive(r: Run) -> None:
    r.alive(0.0)


def _alive_awaiting_ack(r: Run) -> None:
    r.alive(0.0)
    r.fire(Timer.HEARTBEAT, INTERVAL_S)


def _backoff(r: Run) -> None:
    r.alive(0.0)
    r.close(10.0, 1006)


def _fatal(r: Run) -> None:
    r.alive(0.0)
    r.close(10.0, 4915)


def _stopped(r: Run) -> None:
    r.alive(0.0)
    r.feed(ev.StopRequested(10.0))


CONFIGS: dict[str, tuple[Callable[[Run], None], State]] = {
    "fresh": (_fresh, State.CONNECTING),
    "token-fetch": (_token_fetch, State.CONNECTING),
    "handshake": (_handshake, State.CONNECTING),
    "identified": (_identified, State.IDENTIFIED),
    "identified-resume": (_identified_resume, State.IDENTIFIED),
    "alive": (_alive, State.ALIVE),
    "alive-awaiting-ack": (_alive_awaiting_ack, State.ALIVE),
    "backoff": (_backoff, State.BACKOFF),
    "fatal": (_fatal, State.FATAL),
    "stopped": (_stopped, State.STOPPED),
}
LIVE_CONFIGS = [k for k, (_, s) in CONFIGS.items() if s not in (State.FATAL, State.STOPPED)]


def _configured(name: str) -> Run:
    r = Run()
    script, state = CONFIGS[name]
    script(r)
    assert r.m.state is state
    return r


@pytest.mark.parametrize("name", LIVE_CONFIGS)
def test_stop_from_every_state_is_final_and_quiet(name: str) -> None:
    """Rule 14 / scenario 'stop()': STOPPED, Finish, every timer cancelled, no notify, no socket."""
    r = _configured(name)
    opens = r.opens()
    had_socket = r.m.attempt_open
    got = r.feed(ev.StopRequested(500.0))
    assert r.m.state is State.STOPPED
    assert cmd.Finish() in got
    assert not of(cmd.NotifyFatal, got)
    assert {c.timer for c in of(cmd.CancelTimer, got)} == set(Timer)
    assert len(of(cmd.CloseSocket, got)) == (1 if had_socket else 0)
    _assert_absorbs_everything(r, 600.0)
    assert r.opens() == opens
    assert r.count(cmd.NotifyFatal) == 0


@pytest.mark.parametrize("name", ["fatal", "stopped"])
def test_terminal_states_absorb_every_event(name: str) -> None:
    """FATAL and STOPPED have no way out: every event does nothing; Started is refused."""
    r = _configured(name)
    notes = r.count(cmd.NotifyFatal)
    _assert_absorbs_everything(r, 1000.0)
    assert r.count(cmd.NotifyFatal) == notes


@pytest.mark.parametrize("name", [k for k in CONFIGS if k != "fresh"])
def test_started_twice_raises_with_state_unchanged(name: str) -> None:
    """Host misuse: Started twice raises LocalProtocolError and leaves the machine unchanged."""
    r = _configured(name)
    state, counters = r.m.state, r.m.snapshot_fields()
    with pytest.raises(LocalProtocolError) as info:
        r.feed(ev.Started(700.0))
    assert info.value.state == state.name
    assert r.m.state is state
    assert r.m.snapshot_fields() == counters
    # The machine still works after the refusal.
    if state is State.ALIVE:
        assert r.dispatch(800.0, 50) == [delivers(50)]
    if state is State.BACKOFF:
        r.retry(800.0)
        assert r.m.state is State.CONNECTING


@pytest.mark.parametrize("name", ["identified", "alive", "backoff", "identified-resume"])
def test_events_from_an_old_attempt_are_dropped(name: str) -> None:
    """Attempts are epochs: every event of an earlier (or unknown later) attempt is dropped."""
    r = _configured(name)
    if r.n < 2:
        if r.m.attempt_open:
            r.close(100.0, 1006)
        if r.m.state is State.BACKOFF:
            r.retry(110.0)
        r.connect(110.0)
    state, counters = r.m.state, r.m.snapshot_fields()
    for n in (r.n - 1, r.n + 1, 0):
        for event in every_event(n, 120.0):
            if getattr(event, "attempt", None) is None:
                continue  # StopRequested, DispatchHandled: no attempt to be old
            assert r.feed(event) == []
            assert r.m.state is state
            assert r.m.snapshot_fields() == counters


# -- the table itself ---------------------------------------------------------------------------


def test_every_state_trigger_pair_has_an_unguarded_row() -> None:
    """Style rule 3: every (state, trigger) pair ends in an unguarded row: never a silent no-op."""
    rows = build_rows()
    for state in State:
        for trigger in TRIGGERS:
            unguarded = [
                row
                for row in rows
                if row["trigger"] == trigger
                and state in (row["source"] if isinstance(row["source"], list) else [row["source"]])
                and "conditions" not in row
                and "unless" not in row
            ]
            assert unguarded, (state, trigger)


def test_terminal_states_have_no_way_out() -> None:
    """FATAL and STOPPED have no row leading to another state."""
    for row in build_rows():
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for terminal in (State.FATAL, State.STOPPED):
            if terminal in sources:
                assert row["dest"] in (None, terminal), row


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_reachable_state_event_pair_has_a_defined_outcome(name: str) -> None:
    """Every event in every reachable state yields commands or nothing, never a MachineError."""
    _, expected = CONFIGS[name]
    for i in range(len(every_event(0, 0.0)) + 1):
        r = _configured(name)
        event = [ev.Started(900.0), *every_event(r.n, 900.0)][i]
        try:
            r.feed(event)
        except LocalProtocolError:
            assert isinstance(event, ev.Started)
            assert r.m.state is expected
            continue
        assert r.m.state is not State.QUICK_DROPPED  # a passing state, never a resting one
        assert r.m.state in State
        if r.m.state is State.FATAL:
            assert r.count(cmd.NotifyFatal) == 1


@pytest.mark.parametrize("base", [7.3, 3.0000001, 12345.678, 98765.4321, 1e6 + 0.1])
def test_quick_boundary_survives_float_clock_values(base: float) -> None:
    """5.00 s is not quick and 4.99 s is, at any monotonic clock value (float rounding)."""
    for lived, quick in ((5.0, 0), (4.99, 1)):
        m = ConnectionMachine(Policy(), rng=random.Random(0))
        m.handle(ev.Started(base))
        m.handle(ev.IdentifyPermitted(base))
        m.handle(ev.SocketOpened(1, base))
        m.handle(ev.SocketClosed(1, base + lived, 1000))
        assert m.quick_drops == quick
