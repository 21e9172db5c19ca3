"""Every ConnectionMachine of a process runs on one transitions engine (issue 10)."""

from __future__ import annotations

import gc
import random
import threading
import weakref
from typing import Any

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.events import Timer
from qqconn.machine import ConnectionMachine, State, shared_engine
from qqconn.machine.fields import machine_fields
from qqconn.policy import Policy


class _Quiet:
    """A logger that drops everything."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _backoff_commands(out: list[cmd.Command]) -> list[cmd.StartTimer]:
    return [c for c in out if isinstance(c, cmd.StartTimer) and c.timer is Timer.BACKOFF]


def test_machines_share_one_engine_that_holds_none_of_them() -> None:
    """A thousand machines use one engine; it keeps no reference to any, so a dropped (never
    run, or finished) machine is collected and the engine's model list stays empty."""
    engine = shared_engine()
    machines = [ConnectionMachine(logger=_Quiet()) for _ in range(1000)]
    assert all(m._machine is engine for m in machines)
    finished = machines[0]
    finished.handle(ev.Started(0.0))
    finished.handle(ev.StopRequested(1.0))
    assert finished.state is State.STOPPED
    refs = [weakref.ref(m) for m in machines]
    del machines, finished
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert engine.models == []


def test_a_machines_queued_assess_never_runs_inside_another_machines_trigger() -> None:
    """Machine B is fed while machine A's transition into BACKOFF is running (from A's log
    call): B's queued assess runs to its end inside B's handle, A's runs inside A's, and each
    gets its own BACKOFF timer for its own attempt."""
    b = ConnectionMachine(rng=random.Random(1), logger=_Quiet())
    b.handle(ev.Started(0.0))
    b.handle(ev.IdentifyPermitted(0.0))  # no session: attempt 1 Identifies, after a permit
    inner: list[list[cmd.Command]] = []

    class Reentrant:
        """Feeds B from inside the log line of A's transition into BACKOFF."""

        def __getattr__(self, name: str) -> Any:
            def log(event: str, **kw: Any) -> None:
                if event == "qqconn.transition" and kw.get("to") == "BACKOFF" and not inner:
                    inner.append(
                        b.handle(ev.ConnectFailed(1, 0.5, "token", "refused", refused=False))
                    )

            return log

    a = ConnectionMachine(rng=random.Random(2), logger=Reentrant())
    a.handle(ev.Started(0.0))
    a.handle(ev.IdentifyPermitted(0.0))
    assert not inner and a.state is State.CONNECTING
    outer = a.handle(ev.ConnectFailed(1, 0.5, "token", "refused", refused=False))
    assert b.state is State.BACKOFF and a.state is State.BACKOFF
    assert len(_backoff_commands(inner[0])) == 1  # B's assess ran before B.handle returned
    assert len(_backoff_commands(outer)) == 1  # A's ran in A's handle, not in B's
    announced = [c.state for c in outer if isinstance(c, cmd.AnnounceState)]
    assert announced == ["backoff"]


def test_machines_on_threads_do_not_interleave() -> None:
    """Eight threads each drive their own machine through forty failed attempts to FATAL on
    the shared engine: every one ends exactly as a machine driven alone does."""

    def drive(seed: int) -> tuple[State, int, int]:
        m = ConnectionMachine(
            Policy(max_reconnect_attempts=30), rng=random.Random(seed), logger=_Quiet()
        )
        m.handle(ev.Started(0.0))
        m.handle(ev.IdentifyPermitted(0.0))
        t = 0.0
        timers = 0
        for _ in range(40):  # bounded: max_reconnect_attempts is far below this
            if m.is_terminal:
                break
            t += 1.0
            out = m.handle(ev.ConnectFailed(m.attempt, t, "gateway", "boom", refused=False))
            timers += len(_backoff_commands(out))
            if m.state is State.BACKOFF:
                m.handle(ev.TimerFired(Timer.BACKOFF, m.attempt, t + 0.5))
                m.handle(ev.IdentifyPermitted(t + 0.5))  # each attempt Identifies: a permit
        return m.state, m.failed_attempts, timers

    alone = drive(7)
    results: list[tuple[State, int, int]] = []
    lock = threading.Lock()

    def run() -> None:
        r = drive(7)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert alone[0] is State.FATAL
    assert results == [alone] * 8


def test_a_machine_has_slots_and_its_fields_are_all_of_its_state() -> None:
    """No per-machine __dict__ (fifty fields overflow CPython's shared-key dicts: issue 10's
    per-connection cost), and :func:`machine_fields` is the whole state: a fresh machine given
    a running one's fields answers the next events exactly as the running one does."""
    running = ConnectionMachine(rng=random.Random(3), logger=_Quiet())
    assert not hasattr(running, "__dict__")
    running.handle(ev.Started(0.0))
    running.handle(ev.IdentifyPermitted(0.0))
    running.handle(ev.SocketOpened(1, 0.1))
    running.handle(ev.HelloReceived(1, 0.2, interval_ms=41250))
    fields = machine_fields(running)
    assert {"state", "attempt", "quick_drops", "_session_id", "opened_at"} <= fields.keys()
    copy = ConnectionMachine(rng=random.Random(3), logger=_Quiet())
    for name, value in fields.items():
        if name not in ("_out", "_queue", "_rng"):  # its own generator, seeded alike
            setattr(copy, name, value)
    assert copy.state is running.state is State.IDENTIFIED
    event = ev.SocketClosed(1, 1.0, code=4009, reason="", sent_code=None)
    assert copy.handle(event) == running.handle(event) != []
    assert copy.state is running.state
    assert machine_fields(copy).keys() == fields.keys()
