"""Prometheus metrics for qqconn connections (the optional ``qqconn[metrics]`` extra).

What is measured, per connection (labels ``app_id`` and ``shard``, e.g. ``"0/1"``; never a
session id, a seq or a reason string, so the number of series stays small and fixed):

==============================================  =========  ====================================
name                                            type       meaning
==============================================  =========  ====================================
``qqconn_connection_state``                     gauge      1 for the current state (label
                                                           ``state``), 0 for the six others
``qqconn_connections_opened_total``             counter    sockets opened
``qqconn_connection_endings_total``             counter    connections that ended, by ``kind``
                                                           (:data:`ENDING_KINDS`)
``qqconn_consecutive_quick_drops``              gauge      quick drops in a row
``qqconn_consecutive_failed_attempts``          gauge      attempts in a row that failed before
                                                           READY/RESUMED
``qqconn_heartbeat_ack_latency_seconds``        histogram  heartbeat sent → ACK received
``qqconn_dispatches_delivered_total``           counter    dispatches handed to the host
``qqconn_dispatches_replayed_total``            counter    dispatches dropped as already seen
``qqconn_fatal_total``                          counter    FATAL, by ``retryable`` (true/false)
``qqconn_last_frame_age_seconds``               gauge      seconds since the last inbound frame,
                                                           computed when scraped
==============================================  =========  ====================================

and one for the process: ``qqconn_event_loop_lag_seconds`` (gauge, set by the ops server's
loop probe, :mod:`qqconn.ops`).

The library never starts a server of its own and never touches the global registry unless told
to: each :class:`Metrics` gets a private :class:`prometheus_client.CollectorRegistry` by
default; pass ``registry=prometheus_client.REGISTRY`` to add qqconn's metrics to the process's
global one (then one :class:`Metrics` per registry: a second one would register the same names
and ``prometheus_client`` refuses that with ``ValueError``). Serve it with :mod:`qqconn.ops`,
or with any of ``prometheus_client``'s own exporters.

The interface a driver calls is :class:`ConnectionMetrics` (``Metrics.for_connection``); the
do-nothing :data:`NO_METRICS` has the same methods, so a driver can hold one or the other and
call without a branch. ``ConnectionManager(..., metrics=Metrics())`` calls those hooks itself,
from the driver (every socket opened, every ACK, every dispatch). For a manager built without
``metrics=``, :class:`ManagerFeed` feeds them from what it already shows: its
``on_state_change`` callback and its ``snapshot()`` (coarser: see its docstring).

Only :class:`Metrics` needs ``prometheus_client``; it is imported when one is built, so this
module, :data:`NO_METRICS` and :class:`ManagerFeed` import without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "ACK_LATENCY_BUCKETS_S",
    "CONTENT_TYPE",
    "ENDING_KINDS",
    "NO_METRICS",
    "STATE_NAMES",
    "ConnectionMetrics",
    "ConnectionObserver",
    "ManagerFeed",
    "Metrics",
    "MetricsUnavailable",
    "NullConnectionMetrics",
    "ending_kind",
    "ending_of",
    "shard_label",
]

#: The values of the ``state`` label: :class:`qqconn.State` values, in the machine's order.
STATE_NAMES = (
    "connecting",
    "identified",
    "alive",
    "quick_dropped",
    "backoff",
    "fatal",
    "stopped",
)

#: The values of the ``kind`` label of ``qqconn_connection_endings_total``: a fixed set, so a
#: peer that invents close reasons cannot grow the number of series.
ENDING_KINDS = (
    "close",  # a close frame arrived (any code, fatal ones included)
    "drop",  # the socket died without a close frame
    "zombie",  # a heartbeat was not acknowledged in time
    "stale",  # no inbound frame for stale_after_intervals heartbeat intervals
    "op7",  # the gateway asked for a reconnect (op 7)
    "op9",  # the gateway said the session is invalid (op 9)
    "connect_failed",  # token, gateway URL or WebSocket handshake failed
    "deadline",  # no READY/RESUMED within connect_timeout_s
    "heartbeat_send_failed",  # heartbeat sends failed in a row
    "other",  # anything else (a kind this version does not know)
)

#: ``qqconn_heartbeat_ack_latency_seconds`` buckets: loopback milliseconds up to the ACK
#: deadline of the default policy (0.45 × 41.25 s ≈ 18.6 s).
ACK_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)

#: The Content-Type of :meth:`Metrics.exposition` (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Machine ending-kind names (:class:`qqconn.endings.EndingKind` values) that are spelled
# differently from ours; tests/test_metrics.py checks that every EndingKind maps to a label
# other than "other".
_KIND_ALIASES = {
    "rotation": "close",
    "auth_failed": "close",
    "session_rejected": "close",
    "frame_too_large": "close",
    "poison_frame_skipped": "close",  # an oversized frame came back: one s skipped
    "poison_frame_session_lost": "close",  # it came back again: the session given up
    "identify_refused": "op9",  # op 9 answering an Identify
    "dropped": "drop",
    "credentials_refused": "connect_failed",
    "send_failed": "heartbeat_send_failed",
    "invalid_session_resumable": "op9",
    "closed": "close",
    "close_frame": "close",
    "fatal_close": "close",
    "rate_limited": "close",
    "lost": "drop",
    "no_close_frame": "drop",
    "internal_error": "drop",
    "reconnect": "op7",
    "op7_young": "op7",
    "op7_early": "op7",
    "op7_before_session": "op7",
    "invalid_session": "op9",
    "op9_resumable": "op9",
    "connect_failure": "connect_failed",
    "token_failed": "connect_failed",
    "gateway_failed": "connect_failed",
    "handshake_failed": "connect_failed",
    "attempt_deadline": "deadline",
    "timeout": "deadline",
    "no_session": "deadline",
    "send_failures": "heartbeat_send_failed",
    "heartbeat_send_failures": "heartbeat_send_failed",
    "heartbeat_failed": "heartbeat_send_failed",
}

# Reason texts (:class:`qqconn.policy.Ending.reason`) by how they start, for machines whose
# endings carry no ``kind`` yet.
_REASON_PREFIXES = (
    ("zombie", "zombie"),
    ("stale", "stale"),
    ("op 7", "op7"),
    ("op 9", "op9"),
    ("no ready/resumed", "deadline"),
    ("connection lost without a close frame", "drop"),
    ("closed ", "close"),
    ("close ", "close"),
    ("token failed", "connect_failed"),
    ("gateway failed", "connect_failed"),
    ("handshake failed", "connect_failed"),
)


class MetricsUnavailable(ImportError):
    """:class:`Metrics` was built but ``prometheus_client`` is not installed."""


def shard_label(shard: Sequence[int] | str) -> str:
    """``(0, 1)`` or ``[0, 1]`` → ``"0/1"`` (a string is returned as it is)."""
    if isinstance(shard, str):
        return shard
    shard_id, count = shard
    return f"{shard_id}/{count}"


def ending_kind(kind: object = None, reason: str | None = None) -> str:
    """The ``kind`` label for an ending: one of :data:`ENDING_KINDS`, never anything else.

    ``kind`` may be one of those names, an enum whose value or name is one (or a known alias),
    or None; then ``reason`` (the ending's reason text) is read instead. Unknown → ``"other"``.
    """
    for candidate in (getattr(kind, "value", None), getattr(kind, "name", None), kind):
        if isinstance(candidate, str):
            name = candidate.strip().lower().replace("-", "_").replace(" ", "_")
            if name in ENDING_KINDS:
                return name
            if name in _KIND_ALIASES:
                return _KIND_ALIASES[name]
    if isinstance(reason, str):
        text = reason.strip().lower()
        for prefix, found in _REASON_PREFIXES:
            if text.startswith(prefix):
                return found
        if "heartbeat sends failed" in text:
            return "heartbeat_send_failed"
    return "other"


class ConnectionObserver(Protocol):
    """What a driver tells about one connection. Every method is cheap and never raises.

    Call them from the event loop that runs the connection (they take no lock of their own
    beyond what ``prometheus_client`` takes for a counter).
    """

    def state_changed(
        self, state: str, *, quick_drops: int | None = None, failed_attempts: int | None = None
    ) -> None:
        """The machine entered ``state`` (a :class:`qqconn.State` value, e.g. ``"alive"``);
        the counters, when given, are those after the transition."""

    def connection_opened(self) -> None:
        """A socket opened (the WebSocket handshake completed)."""

    def connection_ended(self, kind: str, quick_drops: int, failed_attempts: int) -> None:
        """A connection ended; ``kind`` as :func:`ending_kind` names it, counters after it."""

    def heartbeat_acked(self, latency_s: float) -> None:
        """A heartbeat was acknowledged ``latency_s`` seconds after it was sent."""

    def dispatch_delivered(self, count: int = 1) -> None:
        """``count`` dispatches were handed to the host."""

    def dispatch_replayed(self, count: int = 1) -> None:
        """``count`` dispatches were dropped: the host already had their ``s``."""

    def fatal(self, retryable: bool) -> None:
        """The manager gave up (entered FATAL)."""

    def frame_received(self, monotonic_now: float) -> None:
        """A frame arrived at ``monotonic_now`` (the manager's clock, ``time.monotonic``)."""


class NullConnectionMetrics:
    """A :class:`ConnectionObserver` that does nothing (each call is one empty method call)."""

    __slots__ = ()

    def state_changed(
        self, state: str, *, quick_drops: int | None = None, failed_attempts: int | None = None
    ) -> None:
        pass

    def connection_opened(self) -> None:
        pass

    def connection_ended(self, kind: str, quick_drops: int, failed_attempts: int) -> None:
        pass

    def heartbeat_acked(self, latency_s: float) -> None:
        pass

    def dispatch_delivered(self, count: int = 1) -> None:
        pass

    def dispatch_replayed(self, count: int = 1) -> None:
        pass

    def fatal(self, retryable: bool) -> None:
        pass

    def frame_received(self, monotonic_now: float) -> None:
        pass

    def __repr__(self) -> str:
        return "NO_METRICS"


#: The one do-nothing observer: what a driver holds when it was given no :class:`Metrics`.
NO_METRICS = NullConnectionMetrics()


class ConnectionMetrics:
    """One connection's metrics (from :meth:`Metrics.for_connection`): a :class:`ConnectionObserver`.

    The label children are resolved once, here, so each call is a counter increment or a gauge
    set; :meth:`frame_received` only stores the time (the age is computed when scraped).
    """

    def __init__(self, metrics: Metrics, app_id: str, shard: str) -> None:
        self.app_id = app_id
        self.shard = shard
        self._clock = metrics.clock
        labels = (app_id, shard)
        self._states = {name: metrics._state.labels(*labels, name) for name in STATE_NAMES}
        self._current: str | None = None
        self._opened = metrics._opened.labels(*labels)
        self._endings = {kind: metrics._endings.labels(*labels, kind) for kind in ENDING_KINDS}
        self._quick = metrics._quick.labels(*labels)
        self._failed = metrics._failed.labels(*labels)
        self._ack = metrics._ack.labels(*labels)
        self._delivered = metrics._delivered.labels(*labels)
        self._replayed = metrics._replayed.labels(*labels)
        self._fatal = {
            flag: metrics._fatal.labels(*labels, str(flag).lower()) for flag in (True, False)
        }
        #: The manager-clock time of the last inbound frame, or None before the first.
        self.last_frame_at: float | None = None

    def __repr__(self) -> str:
        return f"<ConnectionMetrics app_id={self.app_id!r} shard={self.shard!r}>"

    def state_changed(
        self, state: str, *, quick_drops: int | None = None, failed_attempts: int | None = None
    ) -> None:
        gauge = self._states.get(state)
        if gauge is not None and state != self._current:
            if self._current is not None:
                self._states[self._current].set(0)
            gauge.set(1)
            self._current = state
        if quick_drops is not None:
            self._quick.set(quick_drops)
        if failed_attempts is not None:
            self._failed.set(failed_attempts)

    def connection_opened(self) -> None:
        self._opened.inc()

    def connection_ended(self, kind: str, quick_drops: int, failed_attempts: int) -> None:
        counter = self._endings.get(kind)
        (counter if counter is not None else self._endings["other"]).inc()
        self._quick.set(quick_drops)
        self._failed.set(failed_attempts)

    def heartbeat_acked(self, latency_s: float) -> None:
        if latency_s >= 0:
            self._ack.observe(latency_s)

    def dispatch_delivered(self, count: int = 1) -> None:
        if count > 0:
            self._delivered.inc(count)

    def dispatch_replayed(self, count: int = 1) -> None:
        if count > 0:
            self._replayed.inc(count)

    def fatal(self, retryable: bool) -> None:
        self._fatal[bool(retryable)].inc()

    def frame_received(self, monotonic_now: float) -> None:
        self.last_frame_at = monotonic_now

    def last_frame_age_s(self) -> float | None:
        """Seconds since the last inbound frame (None before the first one)."""
        at = self.last_frame_at
        return None if at is None else max(0.0, self._clock() - at)


class Metrics:
    """qqconn's metric families in one registry, and one :class:`ConnectionMetrics` per shard.

    ``registry``: where the families are registered; default a private ``CollectorRegistry``
    of this object's own (read it as :attr:`registry`). ``clock``: the monotonic clock the
    managers stamp frames with (``time.monotonic``, theirs by default too), for
    ``qqconn_last_frame_age_seconds``. Raises :class:`MetricsUnavailable` without
    ``prometheus_client`` (``pip install 'qqconn[metrics]'``).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MetricsUnavailable(
                "qqconn.metrics needs prometheus_client: pip install 'qqconn[metrics]'"
            ) from exc
        self.registry: CollectorRegistry = (
            registry if registry is not None else prom.CollectorRegistry()
        )
        self.clock = clock
        self._lock = threading.Lock()
        self._connections: dict[tuple[str, str], ConnectionMetrics] = {}
        labels = ("app_id", "shard")
        reg = self.registry
        self._state = prom.Gauge(
            "qqconn_connection_state",
            "1 for the state the connection machine is in, 0 for the others.",
            (*labels, "state"),
            registry=reg,
        )
        self._opened = prom.Counter(
            "qqconn_connections_opened",
            "WebSocket connections opened to the gateway.",
            labels,
            registry=reg,
        )
        self._endings = prom.Counter(
            "qqconn_connection_endings",
            "Connections that ended, by kind of ending.",
            (*labels, "kind"),
            registry=reg,
        )
        self._quick = prom.Gauge(
            "qqconn_consecutive_quick_drops",
            "Connections in a row that ended within quick_disconnect_threshold_s of opening.",
            labels,
            registry=reg,
        )
        self._failed = prom.Gauge(
            "qqconn_consecutive_failed_attempts",
            "Connection attempts in a row that failed before READY/RESUMED.",
            labels,
            registry=reg,
        )
        self._ack = prom.Histogram(
            "qqconn_heartbeat_ack_latency_seconds",
            "Time from sending a heartbeat to receiving its ACK.",
            labels,
            buckets=ACK_LATENCY_BUCKETS_S,
            registry=reg,
        )
        self._delivered = prom.Counter(
            "qqconn_dispatches_delivered",
            "Dispatches (events) handed to the host.",
            labels,
            registry=reg,
        )
        self._replayed = prom.Counter(
            "qqconn_dispatches_replayed",
            "Dispatches dropped because the host already had their sequence number.",
            labels,
            registry=reg,
        )
        self._fatal = prom.Counter(
            "qqconn_fatal",
            "Times the connection manager gave up (FATAL), by whether a restart can help.",
            (*labels, "retryable"),
            registry=reg,
        )
        self._loop_lag = prom.Gauge(
            "qqconn_event_loop_lag_seconds",
            "How late the event loop ran the ops server's last probe (0 when idle and healthy).",
            registry=reg,
        )
        reg.register(_FrameAgeCollector(self))

    def __repr__(self) -> str:
        return f"<Metrics connections={len(self._connections)}>"

    def for_connection(self, app_id: str, shard: Sequence[int] | str) -> ConnectionMetrics:
        """The metrics of one connection (created on first use; the same object after)."""
        key = (str(app_id), shard_label(shard))
        with self._lock:
            found = self._connections.get(key)
            if found is None:
                found = self._connections[key] = ConnectionMetrics(self, *key)
            return found

    def connections(self) -> list[ConnectionMetrics]:
        """Every connection's metrics, in the order they were first asked for."""
        with self._lock:
            return list(self._connections.values())

    def loop_lag(self, lag_s: float) -> None:
        """Set ``qqconn_event_loop_lag_seconds`` (the ops server's probe calls this)."""
        self._loop_lag.set(max(0.0, lag_s))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _FrameAgeCollector:
    """``qqconn_last_frame_age_seconds``, computed at scrape time from each connection's
    last frame; a connection that has seen no frame yet has no sample."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for conn in self._metrics.connections():
            age = conn.last_frame_age_s()
            if age is not None:
                family.add_metric([conn.app_id, conn.shard], age)
        yield family

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            "qqconn_last_frame_age_seconds",
            "Seconds since the last frame arrived from the gateway (computed when scraped).",
            labels=["app_id", "shard"],
        )


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
