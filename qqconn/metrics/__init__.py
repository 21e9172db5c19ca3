"""Prometheus metrics for qqconn connections (the optional ``qqconn[metrics]`` extra).

What is measured, per connection (labels ``app_id`` and ``shard``, e.g. ``"0/1"``; never a
session id, a seq or a reason string, so the number of series stays small and fixed):

==============================================  =========  ====================================
name                                            type       meaning
==============================================  =========  ====================================
``qqconn_connection_state``                     gauge      1 for the current state (label
                                                           ``state``), 0 for the seven others
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

from qqconn.metrics.feed import ManagerFeed, ending_of
from qqconn.metrics.labels import (
    ACK_LATENCY_BUCKETS_S,
    CONTENT_TYPE,
    ENDING_KINDS,
    STATE_NAMES,
    MetricsUnavailable,
    ending_kind,
    shard_label,
)
from qqconn.metrics.observer import NO_METRICS, ConnectionObserver, NullConnectionMetrics
from qqconn.metrics.registry import FAMILIES, ConnectionMetrics, Family, Metrics

__all__ = [
    "ACK_LATENCY_BUCKETS_S",
    "CONTENT_TYPE",
    "ENDING_KINDS",
    "FAMILIES",
    "NO_METRICS",
    "STATE_NAMES",
    "ConnectionMetrics",
    "ConnectionObserver",
    "Family",
    "ManagerFeed",
    "Metrics",
    "MetricsUnavailable",
    "NullConnectionMetrics",
    "ending_kind",
    "ending_of",
    "shard_label",
]
