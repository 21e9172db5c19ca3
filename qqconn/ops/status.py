"""What the ops endpoints report: one :class:`Watch` per connection, gathered on a :class:`Board`.

Everything here is read from the managers' public surface: ``manager.state`` and
``manager.snapshot()`` (read when asked, so ``/readyz`` and the page never lag the machine),
and the ``on_state_change`` callback (every transition, with its trigger and reason, kept in a
bounded ring). It decides nothing about a connection; it only reports.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from qqconn._log import get_logger
from qqconn.metrics import (
    ENDING_KINDS,
    ConnectionObserver,
    ManagerFeed,
    Metrics,
    ending_of,
    shard_label,
)

__all__ = ["DEFAULT_RING_SIZE", "Board", "Transition", "Watch"]

#: Transitions kept per connection (the page shows the newest first).
DEFAULT_RING_SIZE = 64

#: What a transition means when no ending caused it, by trigger.
_TRIGGER_REASONS = {
    "hello": "Hello received: Identify or Resume sent",
    "ready": "READY: a new session",
    "resumed": "RESUMED: the session goes on",
    "backoff_elapsed": "waited; next attempt",
    "assess": "quick drop counted; back off",
    "stop": "stop requested by the host",
    # Only when the machine had moved on to a later attempt before the callback ran.
    "connection_ended": "connection ended (its reason was superseded before it was reported)",
}

#: Snapshot keys shown as counters (nothing that could be a secret; the session id is cut).
_COUNTER_KEYS = (
    "attempt",
    "reconnect_attempts",
    "quick_disconnects",
    "resume_failures",
    "last_seq",
    "received_seq",
    "heartbeat_interval_s",
    "last_ack_latency_s",
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change as the page lists it."""

    at_unix: float
    app_id: str
    shard: str
    previous: str
    state: str
    trigger: str
    reason: str | None
    kind: str | None
    quick_drops: int | None
    failed_attempts: int | None
    attempt: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tally:
    """The counters the page shows without Prometheus: a :class:`ConnectionObserver`."""

    def __init__(self) -> None:
        self.opened = 0
        self.endings: Counter[str] = Counter()
        self.fatals = 0

    def state_changed(
        self, state: str, *, quick_drops: int | None = None, failed_attempts: int | None = None
    ) -> None:
        pass

    def connection_opened(self) -> None:
        self.opened += 1

    def connection_ended(self, kind: str, quick_drops: int, failed_attempts: int) -> None:
        self.endings[kind if kind in ENDING_KINDS else "other"] += 1

    def heartbeat_acked(self, latency_s: float) -> None:
        pass

    def dispatch_delivered(self, count: int = 1) -> None:
        pass

    def dispatch_replayed(self, count: int = 1) -> None:
        pass

    def fatal(self, retryable: bool) -> None:
        self.fatals += 1

    def frame_received(self, monotonic_now: float) -> None:
        pass


def _short(session_id: object) -> str | None:
    return f"{session_id[:8]}…" if isinstance(session_id, str) and session_id else None


class Watch:
    """One connection: its manager (once known), its transitions, its tallies."""

    def __init__(
        self,
        app_id: str,
        shard: str,
        *,
        metrics: Metrics | None,
        ring_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.app_id = app_id
        self.shard = shard
        self.manager: Any = None
        self.transitions: deque[Transition] = deque(maxlen=ring_size)
        self.tally = _Tally()
        self._clock = clock
        self._metrics = metrics.for_connection(app_id, shard) if metrics is not None else None
        observers: list[ConnectionObserver] = [self.tally]
        if self._metrics is not None:
            observers.append(self._metrics)
        self.feed = ManagerFeed(None, *observers)
        self.hooked = False
        self._seen_state: str | None = None
        self._since = clock()

    def attach(self, manager: Any, *, feed_metrics: bool) -> None:
        self.manager = manager
        self.feed.manager = manager
        if not feed_metrics:
            self.feed.observers = (self.tally,)

    @property
    def state(self) -> str:
        """The manager's state now (``"unknown"`` before a manager is attached)."""
        state = getattr(self.manager, "state", None)
        return str(getattr(state, "value", "unknown"))

    def on_state_change(self, change: Any) -> None:
        self.hooked = True
        if str(change.state.value) == self.state and str(change.state.value) != self._seen_state:
            self._seen_state = str(change.state.value)
            self._since = self._clock()
        snap = change.snapshot if isinstance(change.snapshot, dict) else {}
        kind, reason = ending_of(change, self.manager)
        self.transitions.append(
            Transition(
                at_unix=time.time(),
                app_id=self.app_id,
                shard=self.shard,
                previous=str(getattr(change.previous, "value", change.previous)),
                state=str(change.state.value),
                trigger=str(change.trigger),
                reason=reason if reason is not None else _TRIGGER_REASONS.get(change.trigger),
                kind=kind,
                quick_drops=_int(snap.get("quick_disconnects")),
                failed_attempts=_int(snap.get("reconnect_attempts")),
                attempt=_int(snap.get("attempt")),
            )
        )
        self.feed.on_state_change(change)

    def poll(self) -> None:
        """Read the manager's counters (and its state, for the time-in-state clock)."""
        state = self.state
        if state != self._seen_state:
            self._seen_state = state
            self._since = self._clock()
            if self._metrics is not None and self.manager is not None:
                self._metrics.state_changed(state)
        if self.manager is not None:
            self.feed.poll()

    def status(self) -> dict[str, Any]:
        """This connection for ``/status.json``: no secret, the session id shortened."""
        self.poll()
        mgr = self.manager
        snap: dict[str, Any] = mgr.snapshot() if mgr is not None else {}
        fatal = snap.get("fatal")
        machine = getattr(mgr, "machine", None)
        frame_at = getattr(machine, "last_frame_at", None)
        return {
            "app_id": self.app_id,
            "shard": self.shard,
            "state": self.state,
            "in_state_s": round(self._clock() - self._since, 3),
            "session": _short(snap.get("session_id")),
            "counters": {key: snap.get(key) for key in _COUNTER_KEYS},
            "dispatches_delivered": _int(getattr(mgr, "dispatches_delivered", None)),
            "dispatches_replayed": _int(getattr(mgr, "dispatches_dropped", None)),
            "connections_opened": self.tally.opened,
            "endings": dict(self.tally.endings),
            "last_frame_age_s": (
                round(max(0.0, self._clock() - frame_at), 3)
                if isinstance(frame_at, float)
                else None
            ),
            "fatal": (
                {
                    "reason": fatal.get("reason"),
                    "close_code": fatal.get("close_code"),
                    "retryable": fatal.get("retryable"),
                }
                if isinstance(fatal, dict)
                else None
            ),
            "transitions_reported": self.hooked,
        }


class Board:
    """Every watched connection; what ``/readyz``, ``/status.json`` and the page read."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        ring_size: int = DEFAULT_RING_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ring_size < 1:
            raise ValueError(f"ring_size must be at least 1, got {ring_size!r}")
        self.metrics = metrics
        self.ring_size = ring_size
        self._clock = clock
        self._watches: dict[tuple[str, str], Watch] = {}
        self._log = get_logger("qqconn.ops")

    def _watch_for(self, app_id: str, shard: str) -> Watch:
        key = (app_id, shard)
        found = self._watches.get(key)
        if found is None:
            found = self._watches[key] = Watch(
                app_id, shard, metrics=self.metrics, ring_size=self.ring_size, clock=self._clock
            )
        return found

    def watch(self, manager: Any, *, feed_metrics: bool | None = None) -> Watch:
        """Report on ``manager`` (a :class:`~qqconn.ConnectionManager`).

        ``feed_metrics``: feed the board's metrics from the manager's surface. The default
        (None) feeds them unless the manager feeds these very metrics itself
        (``ConnectionManager(metrics=...)``), so nothing is ever counted twice."""
        if feed_metrics is None:
            feed_metrics = getattr(manager, "metrics", None) is not self.metrics
        watch = self._watch_for(str(manager.app_id), shard_label(manager.shard))
        watch.attach(manager, feed_metrics=feed_metrics)
        watch.poll()
        return watch

    def on_state_change(self, change: Any) -> None:
        """The ``on_state_change`` callback to give each manager (routes by app id and shard).

        It never raises: a change it cannot read is logged (``qqconn.ops.change_unreadable``)."""
        try:
            snap = change.snapshot if isinstance(change.snapshot, dict) else {}
            shard = snap.get("shard")
            if not isinstance(shard, list | tuple) or len(shard) != 2:
                raise ValueError("the snapshot names no shard")
            self._watch_for(str(snap.get("app_id")), shard_label(shard)).on_state_change(change)
        except Exception as exc:
            self._log.warning(
                "qqconn.ops.change_unreadable", error=f"{type(exc).__name__}: {exc}"[:200]
            )

    @property
    def watches(self) -> list[Watch]:
        """The watches that have a manager, in the order they were added."""
        return [w for w in self._watches.values() if w.manager is not None]

    def poll(self) -> None:
        for watch in self.watches:
            watch.poll()

    def readiness(self) -> tuple[bool, list[dict[str, str]]]:
        """``(ready, not_ready)``: ready when every watched connection is ALIVE (and there is
        at least one); ``not_ready`` names the others."""
        watches = self.watches
        not_ready = [
            {"app_id": w.app_id, "shard": w.shard, "state": w.state}
            for w in watches
            if w.state != "alive"
        ]
        return bool(watches) and not not_ready, not_ready

    def verdict(self) -> str:
        """One line: ``ready`` or what is not."""
        ready, not_ready = self.readiness()
        if ready:
            n = len(self.watches)
            return f"ready: {n} connection{'s' if n != 1 else ''} alive"
        if not self.watches:
            return "not ready: no connection is watched"
        names = ", ".join(f"{w['shard']} {w['state']}" for w in not_ready)
        return f"not ready: {names}"

    def transitions(self, limit: int | None = None) -> list[Transition]:
        """Every watched connection's transitions, newest first."""
        merged = sorted(
            (t for w in self._watches.values() for t in w.transitions),
            key=lambda t: t.at_unix,
            reverse=True,
        )
        return merged if limit is None else merged[:limit]

    def status(self, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``/status.json`` document."""
        ready, not_ready = self.readiness()
        doc: dict[str, Any] = {
            "healthy": ready,
            "verdict": self.verdict(),
            "not_ready": not_ready,
            "now_unix": time.time(),
            "connections": [w.status() for w in self.watches],
            "transitions": [t.as_dict() for t in self.transitions(self.ring_size)],
        }
        if extra:
            doc.update(extra)
        return doc


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
