"""Why the machine took an edge, in words, read from the machine at the moment it took it.

The tour prints a ``why`` line under each transition. Everything in it comes from the machine
(its counters, its policy, the :class:`~qqconn.endings.Ending` it recorded): this module words
it, it decides nothing. What kind of ending it was is the ending's own
:class:`~qqconn.endings.EndingKind`; which rung of the delay ladder the machine waited on is the
ending's :class:`~qqconn.endings.Delay` and, for a backoff, :func:`~qqconn.endings.backoff_index`,
the one owner of the backoff step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qqconn.endings import Delay, backoff_index
from qqconn.machine import State

if TYPE_CHECKING:
    from qqconn.machine import ConnectionMachine

__all__ = ["describe_wait", "ends_connection", "explain"]

#: The states a connection is in (being made, identified, live) and those it ends into.
_CONNECTED = frozenset({State.CONNECTING.name, State.IDENTIFIED.name, State.ALIVE.name})
_ENDED = frozenset({State.BACKOFF.name, State.QUICK_DROPPED.name, State.FATAL.name})


def ends_connection(source: str, dest: str) -> bool:
    """Is ``source -> dest`` one of the machine's rows that end a connection (whatever its
    trigger: a close, a missed ACK, a silent socket, op 7, a deadline...)? On such an edge the
    machine has just recorded the ending as its ``last_ending``."""
    return source in _CONNECTED and dest in _ENDED


def describe_wait(m: ConnectionMachine) -> str:
    """The rung of the delay ladder the machine waited on before this attempt, in words."""
    p = m.policy
    kind = m.last_ending.delay if m.last_ending is not None else Delay.BACKOFF
    if kind is Delay.NOW:
        return "op 7: reconnect at once"
    if kind is Delay.ROTATION:
        return f"4009 rotation: jitter in {p.rotation_delay_s[0]:g}–{p.rotation_delay_s[1]:g} s"
    if kind is Delay.RATE_LIMIT:
        return f"4008: rate_limit_wait_s = {p.rate_limit_wait_s:g} s"
    if kind is Delay.INVALID_SESSION:
        low, high = p.invalid_session_delay_s
        return f"op 9: invalid_session_delay_s in {low:g}–{high:g} s"
    i = backoff_index(m.failed_attempts, p)
    return f"backoff_s[{i}] = {p.backoff_s[i]:g} s ± {p.backoff_jitter:.0%}"


def explain(
    m: ConnectionMachine,
    source: str,
    dest: str,
    trigger: str,
    *,
    dot: str,
    replayed: Callable[[], int],
    waited_s: float | None,
) -> str:
    """The ``why`` line for ``source --trigger--> dest``, which ``m`` has just taken.

    ``replayed()`` counts the events the gateway replayed before RESUMED; ``waited_s`` is how
    long the tour saw the machine in BACKOFF; ``dot`` separates clauses.
    """
    p = m.policy
    ending = m.last_ending
    lived = None if m.opened_at is None else m.now - m.opened_at
    threshold = p.quick_disconnect_threshold_s
    if trigger == "hello":
        beat = f"Hello: heartbeat every {m.heartbeat_interval_s:g} s"
        if m.sent_resume:
            return f"{beat}; session kept, so Resume from s={m.last_seq}"
        return f"{beat}; no session, so Identify"
    if trigger == "ready":
        return f"READY: new session {str(m.session_id)[:8]}…; failed attempts reset to 0"
    if trigger == "resumed":
        n = replayed()
        missed = (
            "nothing was missed"
            if n == 0
            else f"the {n} event{'s' if n != 1 else ''} sent while we were away replayed first"
        )
        return f"RESUMED at s={m.last_seq}: {missed}; failed attempts reset to 0"
    if ends_connection(source, dest) and ending is not None:
        reason = ending.reason
        if dest == "FATAL":
            return f"{reason}: no retry can fix this (ending_is_fatal)"
        if dest == "QUICK_DROPPED":
            return (
                f"{reason} {dot} lived {lived:.2f} s < {threshold:g} s: "
                f"quick drop {m.quick_drops} of {p.max_quick_disconnects} (is_quick_drop)"
            )
        if not ending.counts_as_quick:
            return f"{reason} {dot} our own close: neither a quick drop nor a failure"
        if lived is None:
            return (
                f"{reason} {dot} no socket opened: "
                f"failed attempt {m.failed_attempts} of {p.max_reconnect_attempts}"
            )
        return (
            f"{reason} {dot} lived {lived:.2f} s ≥ {threshold:g} s: "
            "not a quick drop, quick drops reset to 0"
        )
    if trigger == "assess" and source == "QUICK_DROPPED":
        if dest == "FATAL":
            return (
                f"{m.quick_drops} quick drops in a row ≥ {p.max_quick_disconnects}: give up, "
                "retryable (quick_drops_exhausted)"
            )
        return (
            f"{m.quick_drops} < {p.max_quick_disconnects} quick drops in a row: back off and retry"
        )
    if trigger == "assess" and dest == "FATAL":
        return (
            f"{m.failed_attempts} failed attempts ≥ {p.max_reconnect_attempts}: give up, "
            "retryable (attempts_exhausted)"
        )
    if trigger == "backoff_elapsed":
        waited = "?" if waited_s is None else f"{waited_s:.2f}"
        return f"waited {waited} s ({describe_wait(m)})"
    if trigger == "stop":
        return "the host asked the manager to stop"
    return trigger
