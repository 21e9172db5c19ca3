"""Metrics fed from a manager's public surface: its state changes and its snapshot."""

from __future__ import annotations

from typing import Any

from qqconn.metrics.labels import ending_kind
from qqconn.metrics.observer import ConnectionObserver


def ending_of(change: Any, manager: Any = None) -> tuple[str | None, str | None]:
    """``(kind, reason)`` of the ending behind a state change, or ``(None, None)`` if it was none.

    Reads, in this order, what the change or the manager offers: a ``reason``/``kind`` the
    change carries itself, the snapshot's ``last_ending``, the FATAL reason, and (today's
    driver) the machine's ``last_ending``, trusted only while the machine is still on the
    attempt the change was announced in, so a later ending is never attributed to it.
    """
    snap = getattr(change, "snapshot", None)
    snap = snap if isinstance(snap, dict) else {}
    trigger = getattr(change, "trigger", None)
    state = getattr(getattr(change, "state", None), "value", None)
    reason = getattr(change, "reason", None)
    kind = getattr(change, "kind", None)
    if isinstance(reason, str) or kind is not None:
        return ending_kind(kind, reason), reason if isinstance(reason, str) else None
    last = snap.get("last_ending")
    ended = trigger == "connection_ended"
    if ended and isinstance(last, dict) and isinstance(last.get("reason"), str):
        return ending_kind(last.get("kind"), last["reason"]), last["reason"]
    fatal = snap.get("fatal")
    fatal_reason = fatal.get("reason") if isinstance(fatal, dict) else None
    machine = getattr(manager, "machine", None)
    ending = getattr(machine, "last_ending", None)
    same_attempt = machine is not None and getattr(machine, "attempt", None) == snap.get("attempt")
    if ended:
        if ending is not None and same_attempt:
            text = getattr(ending, "reason", None)
            return ending_kind(getattr(ending, "kind", None), text), text
        return "other", fatal_reason
    if state == "fatal" and isinstance(fatal_reason, str):
        return None, fatal_reason
    return None, None


class ManagerFeed:
    """Feeds :class:`ConnectionObserver` s from a manager's public surface (no driver hooks).

    Give :meth:`on_state_change` to the manager as (or inside) its ``on_state_change``
    callback, and call :meth:`poll` now and then (the ops server does both, at most once a
    second and on every scrape). What each metric is fed from:

    * state, counters, endings (kind from :func:`ending_of`), FATAL: every state change, exact;
    * connections opened: counted at Hello (CONNECTING → IDENTIFIED); a socket that closed
      before Hello is not counted (the driver hook counts every socket);
    * dispatches delivered and replayed: the manager's counters, as deltas at each poll;
    * heartbeat ACK latency: the last ACK's latency, observed once per poll that saw a new ACK
      (a sample; the driver hook observes every ACK);
    * last frame: the machine's ``last_frame_at`` at each poll.

    Attributes a manager does not have are skipped, never guessed.
    """

    def __init__(self, manager: Any, *observers: ConnectionObserver) -> None:
        self.manager = manager
        self.observers = observers
        self._delivered = int(getattr(manager, "dispatches_delivered", 0) or 0)
        self._replayed = int(getattr(manager, "dispatches_dropped", 0) or 0)
        self._ack_mark: tuple[object, object] | None = None

    def on_state_change(self, change: Any) -> None:
        """Feed one :class:`~qqconn.StateChange` (call it from the manager's callback)."""
        snap = change.snapshot if isinstance(change.snapshot, dict) else {}
        state = change.state.value
        quick = _int_or_none(snap.get("quick_disconnects"))
        failed = _int_or_none(snap.get("reconnect_attempts"))
        ended = change.trigger == "connection_ended"
        kind = ending_of(change, self.manager)[0] if ended else None
        for obs in self.observers:
            if change.trigger == "hello":
                obs.connection_opened()
            if kind is not None:
                obs.connection_ended(kind, quick or 0, failed or 0)
            obs.state_changed(state, quick_drops=quick, failed_attempts=failed)
            if state == "fatal":
                fatal = snap.get("fatal")
                obs.fatal(bool(fatal.get("retryable")) if isinstance(fatal, dict) else False)

    def poll(self) -> None:
        """Feed what the manager's counters moved since the last poll."""
        mgr = self.manager
        delivered = int(getattr(mgr, "dispatches_delivered", 0) or 0)
        replayed = int(getattr(mgr, "dispatches_dropped", 0) or 0)
        machine = getattr(mgr, "machine", None)
        frame_at = getattr(machine, "last_frame_at", None)
        latency = getattr(machine, "last_ack_latency_s", None)
        mark = (getattr(machine, "attempt", None), getattr(machine, "acks", None))
        new_ack = isinstance(latency, float) and mark[1] and mark != self._ack_mark
        for obs in self.observers:
            obs.dispatch_delivered(delivered - self._delivered)
            obs.dispatch_replayed(replayed - self._replayed)
            if isinstance(frame_at, float):
                obs.frame_received(frame_at)
            if new_ack:
                assert isinstance(latency, float)
                obs.heartbeat_acked(latency)
        self._delivered, self._replayed = delivered, replayed
        if new_ack:
            self._ack_mark = mark


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
