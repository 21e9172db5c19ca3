"""The registry side: qqconn's metric families, as one table, and one connection's children.

:data:`FAMILIES` lists every family qqconn registers (name, type, help, labels), in the order
they are registered; :class:`Metrics` builds them from it, and :class:`ConnectionMetrics`
resolves one connection's label children once. ``qqconn_last_frame_age_seconds`` is computed
when scraped (:class:`_FrameAgeCollector`), so it is not in the table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qqconn.metrics.labels import (
    ACK_LATENCY_BUCKETS_S,
    ENDING_KINDS,
    STATE_NAMES,
    MetricsUnavailable,
    shard_label,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: The labels every per-connection family has, before its own.
CONNECTION_LABELS = ("app_id", "shard")


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: ``key`` names it in :class:`Metrics`; ``kind`` is ``gauge``,
    ``counter`` or ``histogram``; ``labels`` come after :data:`CONNECTION_LABELS` (for a
    per-connection family); a counter's name is given without ``_total``."""

    key: str
    kind: str
    name: str
    help: str
    labels: tuple[str, ...] = ()
    per_connection: bool = True
    buckets: tuple[float, ...] | None = None


#: Every family qqconn registers, in registration order.
FAMILIES: tuple[Family, ...] = (
    Family(
        "state",
        "gauge",
        "qqconn_connection_state",
        "1 for the state the connection machine is in, 0 for the others.",
        ("state",),
    ),
    Family(
        "opened",
        "counter",
        "qqconn_connections_opened",
        "WebSocket connections opened to the gateway.",
    ),
    Family(
        "endings",
        "counter",
        "qqconn_connection_endings",
        "Connections that ended, by kind of ending.",
        ("kind",),
    ),
    Family(
        "quick",
        "gauge",
        "qqconn_consecutive_quick_drops",
        "Connections in a row that ended within quick_disconnect_threshold_s of opening.",
    ),
    Family(
        "failed",
        "gauge",
        "qqconn_consecutive_failed_attempts",
        "Connection attempts in a row that failed before READY/RESUMED.",
    ),
    Family(
        "ack",
        "histogram",
        "qqconn_heartbeat_ack_latency_seconds",
        "Time from sending a heartbeat to receiving its ACK.",
        buckets=ACK_LATENCY_BUCKETS_S,
    ),
    Family(
        "delivered",
        "counter",
        "qqconn_dispatches_delivered",
        "Dispatches (events) handed to the host.",
    ),
    Family(
        "replayed",
        "counter",
        "qqconn_dispatches_replayed",
        "Dispatches dropped because the host already had their sequence number.",
    ),
    Family(
        "fatal",
        "counter",
        "qqconn_fatal",
        "Times the connection manager gave up (FATAL), by whether a restart can help.",
        ("retryable",),
    ),
    Family(
        "loop_lag",
        "gauge",
        "qqconn_event_loop_lag_seconds",
        "How late the event loop ran the ops server's last probe (0 when idle and healthy).",
        per_connection=False,
    ),
)


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
        family = metrics.families
        self._states = {name: family["state"].labels(*labels, name) for name in STATE_NAMES}
        self._current: str | None = None
        self._opened = family["opened"].labels(*labels)
        self._endings = {kind: family["endings"].labels(*labels, kind) for kind in ENDING_KINDS}
        self._quick = family["quick"].labels(*labels)
        self._failed = family["failed"].labels(*labels)
        self._ack = family["ack"].labels(*labels)
        self._delivered = family["delivered"].labels(*labels)
        self._replayed = family["replayed"].labels(*labels)
        self._fatal = {
            flag: family["fatal"].labels(*labels, str(flag).lower()) for flag in (True, False)
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
        types: dict[str, Any] = {
            "gauge": prom.Gauge,
            "counter": prom.Counter,
            "histogram": prom.Histogram,
        }
        #: The families of :data:`FAMILIES`, by key, as registered here.
        self.families: dict[str, Any] = {}
        for f in FAMILIES:
            labels = (*CONNECTION_LABELS, *f.labels) if f.per_connection else f.labels
            extra = {} if f.buckets is None else {"buckets": f.buckets}
            self.families[f.key] = types[f.kind](
                f.name, f.help, labels, registry=self.registry, **extra
            )
        self._loop_lag = self.families["loop_lag"]
        self.registry.register(_FrameAgeCollector(self))

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
