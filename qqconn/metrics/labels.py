"""The label values of qqconn's metrics, fixed sets all, and how an ending gets its ``kind``."""

from __future__ import annotations

from collections.abc import Sequence

#: The values of the ``state`` label: :class:`qqconn.State` values, in the machine's order.
STATE_NAMES = (
    "awaiting_permit",
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
