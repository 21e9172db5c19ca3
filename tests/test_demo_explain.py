"""The demo's ``why`` lines come from the machine: a real (sans-I/O) machine is driven into each
kind of ending, and the words name the machine's own ending kind and delay-ladder rung.
"""

from __future__ import annotations

import random

from structlog.testing import CapturingLogger

from qqconn import events as ev
from qqconn.demo.explain import describe_wait, ends_connection, explain
from qqconn.demo.timescale import demo_policy
from qqconn.endings import EndingKind
from qqconn.machine import ConnectionMachine, State
from qqconn.testing.events import ready_received

HELLO_MS = 500


def _alive() -> tuple[ConnectionMachine, CapturingLogger]:
    """A machine with the tour's policy, ALIVE on attempt 1 at t = 0, and its log."""
    log = CapturingLogger()
    m = ConnectionMachine(demo_policy(), rng=random.Random(0), logger=log)
    m.handle(ev.Started(0.0))
    m.handle(ev.IdentifyPermitted(0.0))  # no session: the Identify waits for a permit
    m.handle(ev.SocketOpened(1, 0.0))
    m.handle(ev.HelloReceived(1, 0.0, HELLO_MS))
    m.handle(ready_received(1, 0.0))
    assert m.state is State.ALIVE
    return m, log


def _edges(log: CapturingLogger) -> list[tuple[str, str, str]]:
    """Every (from, to, trigger) the machine logged as qqconn.transition, in order."""
    return [
        (c.kwargs["from"], c.kwargs["to"], c.kwargs["trigger"])
        for c in log.calls
        if c.args and c.args[0] == "qqconn.transition"
    ]


def _why(m: ConnectionMachine, edge: tuple[str, str, str]) -> str:
    source, dest, trigger = edge
    return explain(m, source, dest, trigger, dot="|", replayed=lambda: 0, waited_s=0.1)


def test_a_zombie_is_named_by_the_machine_and_explained_with_its_lifetime() -> None:
    """Two heartbeats without an ACK: the edge the machine logs ends a connection, its ending is
    a ZOMBIE, and the why line gives the reason, the lifetime against the threshold and the
    backoff rung."""
    m, log = _alive()
    m.handle(ev.TimerFired(ev.Timer.HEARTBEAT, 1, 0.5))
    m.handle(ev.TimerFired(ev.Timer.HEARTBEAT, 1, 1.5))
    assert m.state is State.BACKOFF
    assert m.last_ending is not None and m.last_ending.kind is EndingKind.ZOMBIE
    edge = _edges(log)[-1]
    assert edge[:2] == ("ALIVE", "BACKOFF") and ends_connection(*edge[:2])
    why = _why(m, edge)
    assert why.startswith(m.last_ending.reason)
    assert "lived 1.50 s ≥ 1 s: not a quick drop" in why
    assert _why(m, ("BACKOFF", "CONNECTING", "backoff_elapsed")) == (
        "waited 0.10 s (backoff_s[0] = 0.1 s ± 20%)"
    )


def test_only_edges_out_of_a_connection_are_endings() -> None:
    """ends_connection: from CONNECTING/IDENTIFIED/ALIVE into BACKOFF/QUICK_DROPPED/FATAL only."""
    assert ends_connection("IDENTIFIED", "FATAL") and ends_connection("CONNECTING", "BACKOFF")
    assert not ends_connection("QUICK_DROPPED", "FATAL")  # assess: the ending was earlier
    assert not ends_connection("ALIVE", "STOPPED") and not ends_connection("BACKOFF", "CONNECTING")


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
        m, _ = _alive()
        m.handle(event)
        assert m.last_ending is not None and m.last_ending.kind is kind, event
        assert m.state is State.BACKOFF, event
        assert describe_wait(m).startswith(words), (event, describe_wait(m))


def test_the_backoff_rung_follows_the_failed_attempts_and_stays_on_the_last() -> None:
    """Connect failures in a row: backoff_s[0], [1], [2], then [2] again (the last repeats)."""
    m = ConnectionMachine(demo_policy(), rng=random.Random(0), logger=CapturingLogger())
    m.handle(ev.Started(0.0))
    m.handle(ev.IdentifyPermitted(0.0))
    seen = []
    for n in range(1, 5):
        m.handle(ev.ConnectFailed(n, float(n), "token", "HTTP 503"))
        assert m.state is State.BACKOFF and m.failed_attempts == n
        seen.append(describe_wait(m).split(" ±")[0])
        m.handle(ev.TimerFired(ev.Timer.BACKOFF, n, n + 0.5))
        assert m.state is State.AWAITING_PERMIT  # still no session: each retry Identifies
        m.handle(ev.IdentifyPermitted(n + 0.5))
    assert seen == [
        "backoff_s[0] = 0.1 s",
        "backoff_s[1] = 0.2 s",
        "backoff_s[2] = 0.4 s",
        "backoff_s[2] = 0.4 s",
    ]


def test_a_quick_drop_is_explained_with_the_machines_count() -> None:
    """A socket that lived 0.3 s: QUICK_DROPPED, and the why line counts it 1 of 3."""
    m, log = _alive()
    m.handle(ev.SocketClosed(1, 0.3, 4009, ""))
    assert m.quick_drops == 1
    edge = next(e for e in _edges(log) if e[1] == "QUICK_DROPPED")
    assert "lived 0.30 s < 1 s: quick drop 1 of 3 (is_quick_drop)" in _why(m, edge)
