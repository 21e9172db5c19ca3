"""The demo's ``why`` lines come from the machine: a real (sans-I/O) machine is driven into each
kind of ending, and the words name the machine's own ending kind and delay-ladder rung.
"""

from __future__ import annotations

import random

from structlog.testing import CapturingLogger

from qqconn import events as ev
from qqconn.demo.explain import describe_wait, explain
from qqconn.demo.timescale import demo_policy
from qqconn.endings import EndingKind
from qqconn.machine import ConnectionMachine, State
from qqconn.testing.events import ready_received

HELLO_MS = 500


def _alive() -> ConnectionMachine:
    """A machine with the tour's policy, ALIVE on attempt 1 at t = 0."""
    m = ConnectionMachine(demo_policy(), rng=random.Random(0), logger=CapturingLogger())
    m.handle(ev.Started(0.0))
    m.handle(ev.SocketOpened(1, 0.0))
    m.handle(ev.HelloReceived(1, 0.0, HELLO_MS))
    m.handle(ready_received(1, 0.0))
    assert m.state is State.ALIVE
    return m


def _why(m: ConnectionMachine, source: str, dest: str, trigger: str) -> str:
    return explain(m, source, dest, trigger, dot="|", replayed=lambda: 0, waited_s=0.1)


def test_a_zombie_is_named_by_the_machine_and_explained_with_its_lifetime() -> None:
    """Two heartbeats without an ACK: the machine's ending is a ZOMBIE; the why line gives its
    reason, how long the socket lived against the threshold, and the backoff rung."""
    m = _alive()
    m.handle(ev.TimerFired(ev.Timer.HEARTBEAT, 1, 0.5))
    m.handle(ev.TimerFired(ev.Timer.HEARTBEAT, 1, 1.5))
    assert m.state is State.BACKOFF
    assert m.last_ending is not None and m.last_ending.kind is EndingKind.ZOMBIE
    why = _why(m, "ALIVE", "BACKOFF", "connection_ended")
    assert why.startswith(m.last_ending.reason)
    assert "lived 1.50 s ≥ 1 s: not a quick drop" in why
    assert _why(m, "BACKOFF", "CONNECTING", "backoff_elapsed") == (
        "waited 0.10 s (backoff_s[0] = 0.1 s ± 20%)"
    )


def test_each_delay_rung_is_the_endings_own() -> None:
    """4009, 4008, op 7 on an old connection and op 9 (resumable) each name their own rung."""
    cases = [
        (ev.SocketClosed(1, 2.0, 4009, "Session timed out"), EndingKind.ROTATION, "4009 rotation"),
        (ev.SocketClosed(1, 2.0, 4008, "rate limited"), EndingKind.RATE_LIMITED, "4008: "),
        (ev.ReconnectRequested(1, 2.0), EndingKind.OP7, "op 7: reconnect at once"),
        (
            ev.InvalidSessionReceived(1, 2.0, True),
            EndingKind.INVALID_SESSION_RESUMABLE,
            "op 9: invalid_session_delay_s in 0.1–0.2 s",
        ),
    ]
    for event, kind, words in cases:
        m = _alive()
        m.handle(event)
        assert m.last_ending is not None and m.last_ending.kind is kind, event
        assert m.state is State.BACKOFF, event
        assert describe_wait(m).startswith(words), (event, describe_wait(m))


def test_the_backoff_rung_follows_the_failed_attempts_and_stays_on_the_last() -> None:
    """Connect failures in a row: backoff_s[0], [1], [2], then [2] again (the last repeats)."""
    m = ConnectionMachine(demo_policy(), rng=random.Random(0), logger=CapturingLogger())
    m.handle(ev.Started(0.0))
    seen = []
    for n in range(1, 5):
        m.handle(ev.ConnectFailed(n, float(n), "token", "HTTP 503"))
        assert m.state is State.BACKOFF and m.failed_attempts == n
        seen.append(describe_wait(m).split(" ±")[0])
        m.handle(ev.TimerFired(ev.Timer.BACKOFF, n, n + 0.5))
    assert seen == [
        "backoff_s[0] = 0.1 s",
        "backoff_s[1] = 0.2 s",
        "backoff_s[2] = 0.4 s",
        "backoff_s[2] = 0.4 s",
    ]


def test_a_quick_drop_is_explained_with_the_machines_count() -> None:
    """A socket that lived 0.3 s: QUICK_DROPPED, and the why line counts it 1 of 3."""
    m = _alive()
    m.handle(ev.SocketClosed(1, 0.3, 4009, ""))
    assert m.quick_drops == 1
    why = _why(m, "ALIVE", "QUICK_DROPPED", "connection_ended")
    assert "lived 0.30 s < 1 s: quick drop 1 of 3 (is_quick_drop)" in why
