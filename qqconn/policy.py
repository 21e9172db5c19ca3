"""Pure policy: every number the machine and the driver decide by, validated once.

Nothing here touches a clock, a socket or the global random generator. The close-code table,
the classification of endings and the delay ladder live in :mod:`qqconn.endings`; their names
are re-exported here (``from qqconn.policy import Ending`` keeps working).

Besides the :class:`Policy` fields, two named constants bound how long closing and stopping
take (the driver holds no literal of its own): :data:`CLOSE_GRACE_S` and :data:`STOP_SLACK_S`,
combined by :attr:`Policy.close_bound_s` and :attr:`Policy.stop_bound_s`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from qqconn.endings import (
    CloseClass,
    Delay,
    Ending,
    EndingKind,
    Session,
    classify_close,
    close_class,
    next_delay,
)
from qqconn.errors import ConfigError

__all__ = [
    "CLOSE_GRACE_S",
    "STOP_SLACK_S",
    "CloseClass",
    "Delay",
    "Ending",
    "EndingKind",
    "Policy",
    "Session",
    "backoff_delay",
    "classify_close",
    "close_class",
]

#: How much longer than ``close_timeout_s`` the driver waits for a socket's closing handshake
#: (which the WebSocket library itself bounds by ``close_timeout_s``) before it aborts the
#: transport: the library's own timeout fires first, so this one only catches a library that
#: overran it.
CLOSE_GRACE_S = 0.5
#: Slack added to what stopping may take (the socket's close, then the host queue's drain,
#: each bounded by ``close_timeout_s``) before ``stop()`` returns anyway.
STOP_SLACK_S = 1.0


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(name, f"must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, f"must be {'≥ 0' if allow_zero else '> 0'}, got {value!r}")


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a whole number ≥ 1, got {value!r}")


def _range(name: str, value: object) -> None:
    if not isinstance(value, tuple) or len(value) != 2:
        raise ConfigError(name, f"must be a (low, high) pair, got {value!r}")
    for bound in value:
        _positive(name, bound, allow_zero=True)
    if value[0] > value[1]:
        raise ConfigError(name, f"low must not exceed high, got {value!r}")


@dataclass(frozen=True, slots=True)
class Policy:
    """Every number the machine decides by. Frozen and validated at construction.

    Defaults are docs/behaviour.md's; tests scale them down. An invalid value raises
    :class:`~qqconn.errors.ConfigError` naming the field. Every field can be set from a
    ``[policy]`` TOML table (:meth:`from_mapping`).
    """

    #: A connection that ended less than this long after its socket opened is a quick drop.
    quick_disconnect_threshold_s: float = 5.0
    #: This many quick drops in a row end in FATAL (retryable).
    max_quick_disconnects: int = 3
    #: This many consecutive attempts failing before READY/RESUMED end in FATAL (retryable).
    max_reconnect_attempts: int = 100
    #: Delay before attempt n+1 after n consecutive failures; the last value repeats.
    backoff_s: tuple[float, ...] = (2.0, 5.0, 10.0, 30.0, 60.0)
    #: Each backoff delay is drawn uniformly from ``d × [1 − j, 1 + j]``.
    backoff_jitter: float = 0.2
    #: Wait after close 4008 (rate limited) before resuming.
    rate_limit_wait_s: float = 60.0
    #: An attempt (token, gateway URL, socket, Hello, READY/RESUMED) must finish within this.
    connect_timeout_s: float = 20.0
    #: Delay range before resuming after close 4009 (the normal rotation).
    rotation_delay_s: tuple[float, float] = (0.0, 1.0)
    #: Delay range before resuming after op 9 ``d: true``.
    invalid_session_delay_s: tuple[float, float] = (1.0, 5.0)
    #: Resumes that fail in a row before the session is forgotten and Identify used.
    max_resume_failures: int = 3
    #: Hello interval used when the server's is missing or absurd (seconds).
    default_heartbeat_interval_s: float = 41.25
    #: Hello intervals outside [min, max] are absurd.
    min_heartbeat_interval_s: float = 0.1
    max_heartbeat_interval_s: float = 600.0
    #: A heartbeat not acknowledged within this fraction of the interval marks a zombie.
    #: 0.45 puts detection under 1.5 intervals after the last ACK even with late timers.
    heartbeat_ack_timeout_ratio: float = 0.45
    #: No inbound frame for this many heartbeat intervals marks a stale connection.
    stale_after_intervals: float = 3.0
    #: This many failed heartbeat sends in a row end the connection.
    max_heartbeat_send_failures: int = 3
    #: One INFO line every this many acknowledged heartbeats.
    heartbeat_log_every: int = 5
    #: Closing a socket never takes longer than this.
    close_timeout_s: float = 2.0
    #: Largest inbound frame accepted (bytes); larger frames end the connection.
    max_frame_bytes: int = 4 * 1024 * 1024
    #: A state file younger than this (same app id and shard) lets a restarted process Resume.
    resume_window_s: float = 300.0
    #: While events are handled or heartbeats acknowledged, the state file is rewritten at
    #: most once per this many seconds (besides every state change and every new session).
    checkpoint_interval_s: float = 1.0
    #: At most ``max_concurrency`` Identifies per this many seconds per app, per bucket
    #: ``shard_id % max_concurrency`` (docs/behaviour.md rule 17; docs/protocol.md §3.2).
    identify_window_s: float = 5.0
    #: This many Identifies answered with op 9 in a row end in FATAL, not retryable (rule 18).
    max_identify_refusals: int = 5
    #: Fetch a new access token when the cached one has less than this left. The endpoint
    #: hands out a new token only in the last 60 s of the old one's life (docs/protocol.md
    #: §3.1), so a margin above 60 s only makes fetches that return the same token.
    token_refresh_margin_s: float = 50.0
    #: While attempts keep failing, one ``qqconn.retrying`` INFO line (attempt k of n, the next
    #: try's delay, the last reason) at the first wait, then at most once per this many
    #: seconds (0: at every wait).
    progress_log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "quick_disconnect_threshold_s",
            "rate_limit_wait_s",
            "connect_timeout_s",
            "default_heartbeat_interval_s",
            "min_heartbeat_interval_s",
            "max_heartbeat_interval_s",
            "heartbeat_ack_timeout_ratio",
            "stale_after_intervals",
            "close_timeout_s",
            "resume_window_s",
            "checkpoint_interval_s",
            "identify_window_s",
        ):
            _positive(name, getattr(self, name))
        _positive("token_refresh_margin_s", self.token_refresh_margin_s, allow_zero=True)
        _positive("progress_log_interval_s", self.progress_log_interval_s, allow_zero=True)
        for name in (
            "max_quick_disconnects",
            "max_reconnect_attempts",
            "max_resume_failures",
            "max_heartbeat_send_failures",
            "heartbeat_log_every",
            "max_frame_bytes",
            "max_identify_refusals",
        ):
            _count(name, getattr(self, name))
        if not isinstance(self.backoff_s, tuple) or not self.backoff_s:
            raise ConfigError("backoff_s", f"must be a non-empty tuple, got {self.backoff_s!r}")
        for delay in self.backoff_s:
            _positive("backoff_s", delay, allow_zero=True)
        _positive("backoff_jitter", self.backoff_jitter, allow_zero=True)
        if self.backoff_jitter >= 1:
            raise ConfigError("backoff_jitter", f"must be below 1, got {self.backoff_jitter!r}")
        _range("rotation_delay_s", self.rotation_delay_s)
        _range("invalid_session_delay_s", self.invalid_session_delay_s)
        if self.min_heartbeat_interval_s > self.max_heartbeat_interval_s:
            raise ConfigError(
                "min_heartbeat_interval_s", "must not exceed max_heartbeat_interval_s"
            )
        if not (
            self.min_heartbeat_interval_s
            <= self.default_heartbeat_interval_s
            <= self.max_heartbeat_interval_s
        ):
            raise ConfigError("default_heartbeat_interval_s", "must lie within [min, max]")
        if self.heartbeat_ack_timeout_ratio > 1:
            raise ConfigError("heartbeat_ack_timeout_ratio", "must be at most 1 (one interval)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build a policy from a ``[policy]`` table (TOML). Unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(key, "unknown policy field")
            if isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    @property
    def close_bound_s(self) -> float:
        """The longest closing one socket may take before its transport is aborted:
        ``close_timeout_s + CLOSE_GRACE_S``."""
        return self.close_timeout_s + CLOSE_GRACE_S

    @property
    def stop_bound_s(self) -> float:
        """The longest ``stop()`` waits for the run to end: the socket's close and the host
        queue's drain (``close_timeout_s`` each), plus ``STOP_SLACK_S``."""
        return self.close_timeout_s * 2 + STOP_SLACK_S

    def heartbeat_interval(self, raw_ms: object) -> tuple[float, bool]:
        """Turn Hello's raw ``heartbeat_interval`` (ms) into seconds.

        Returns ``(seconds, used_default)``. Missing, non-numeric, non-finite, or outside
        ``[min, max]`` gives the default.
        """
        if isinstance(raw_ms, bool) or not isinstance(raw_ms, (int, float)):
            return self.default_heartbeat_interval_s, True
        try:
            seconds = raw_ms / 1000.0
        except OverflowError:  # a JSON integer too large for a float (hostile Hello)
            return self.default_heartbeat_interval_s, True
        if not math.isfinite(seconds) or not (
            self.min_heartbeat_interval_s <= seconds <= self.max_heartbeat_interval_s
        ):
            return self.default_heartbeat_interval_s, True
        return seconds, False


def backoff_delay(policy: Policy, failures: int, rng: random.Random) -> float:
    """The backoff delay after ``failures`` consecutive failed attempts: what
    :func:`qqconn.endings.next_delay` gives for an ending that waits the ``backoff_s`` ladder."""
    return next_delay(None, failures, policy, rng)
