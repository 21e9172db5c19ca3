"""Pure policy: the limits, the backoff delays and the close-code table.

Nothing here touches a clock, a socket or the global random generator. The machine
(:mod:`qqconn.machine`) asks these functions; tests call them directly.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from qqconn.errors import ConfigError

__all__ = [
    "CloseClass",
    "Delay",
    "Ending",
    "Policy",
    "Session",
    "backoff_delay",
    "classify_close",
]


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

    Defaults are ``shared/behaviour.md``'s; tests scale them down. An invalid value raises
    :class:`~qqconn.errors.ConfigError` naming the field.
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
        ):
            _positive(name, getattr(self, name))
        for name in (
            "max_quick_disconnects",
            "max_reconnect_attempts",
            "max_resume_failures",
            "max_heartbeat_send_failures",
            "heartbeat_log_every",
            "max_frame_bytes",
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


# -- what a connection's end means ---------------------------------------------------------


class Session(enum.Enum):
    """What becomes of the session when a connection ends."""

    KEEP = "keep"  #: Resume next
    FORGET = "forget"  #: Identify next


class Delay(enum.Enum):
    """How long to wait before the next attempt."""

    NOW = "now"  #: at once (op 7)
    ROTATION = "rotation"  #: short jitter (close 4009)
    BACKOFF = "backoff"  #: backoff_s by consecutive failures
    RATE_LIMIT = "rate_limit"  #: rate_limit_wait_s (close 4008)
    INVALID_SESSION = "invalid_session"  #: invalid_session_delay_s (op 9 d: true)


class CloseClass(enum.Enum):
    """Rows of behaviour.md's close-code table."""

    ROTATION = "rotation"
    TRANSIENT = "transient"
    IDENTIFY = "identify"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a connection ended, and what behaviour.md says that implies.

    ``counts_as_quick``: the quick-drop rule applies (False for op 7, a local stop, FATAL).
    ``always_consumes_attempt``: counts as a failed attempt even after READY (close 4008).
    ``fatal``: go to FATAL at once (not retryable).
    """

    reason: str
    close_code: int | None = None
    session: Session = Session.KEEP
    delay: Delay = Delay.BACKOFF
    counts_as_quick: bool = True
    always_consumes_attempt: bool = False
    fatal: bool = False
    auth_failure: bool = False
    #: True when the failure happened before the socket opened (token, URL, handshake).
    before_socket: bool = False


_FATAL_CODES = frozenset({4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924})
_FATAL_REASONS = {
    4001: "invalid opcode",
    4002: "invalid payload",
    4010: "invalid shard",
    4011: "too many guilds for one connection: shard the bot",
    4012: "invalid version",
    4013: "invalid intent",
    4014: "intent not permitted",
    4914: "bot taken down (sandbox only)",
    4915: "bot banned",
    4924: "session ip forbidden (IP not on the bot's allow-list)",
}


def close_class(code: int | None) -> CloseClass:
    """The row of behaviour.md's close-code table that ``code`` falls in (None: no close frame)."""
    if code is None or code in (1000, 1001, 1005, 1006):
        return CloseClass.TRANSIENT
    if code in _FATAL_CODES:
        return CloseClass.FATAL
    if code == 4009:
        return CloseClass.ROTATION
    if code == 4004:
        return CloseClass.AUTH
    if code == 4008:
        return CloseClass.RATE_LIMITED
    if 4000 <= code <= 4999:
        # 4006, 4007, 4900–4913, other 49xx, and any 4xxx qqconn has no row for.
        return CloseClass.IDENTIFY
    # Other WebSocket codes (1002, 1009, 1011, 3xxx …): the transport failed, the session may live.
    return CloseClass.TRANSIENT


def classify_close(code: int | None, reason: str = "") -> Ending:
    """Map a close code (None = the socket died without a close frame) to its :class:`Ending`."""
    cls = close_class(code)
    label = f"closed {code}" if code is not None else "connection lost without a close frame"
    if reason:
        label = f"{label}: {reason[:120]}"
    if cls is CloseClass.FATAL:
        assert code is not None
        return Ending(
            f"close {code}: {_FATAL_REASONS[code]}",
            code,
            session=Session.FORGET,
            counts_as_quick=False,
            fatal=True,
        )
    if cls is CloseClass.ROTATION:
        return Ending(label, code, delay=Delay.ROTATION)
    if cls is CloseClass.AUTH:
        return Ending(label, code, auth_failure=True)
    if cls is CloseClass.RATE_LIMITED:
        return Ending(label, code, delay=Delay.RATE_LIMIT, always_consumes_attempt=True)
    if cls is CloseClass.IDENTIFY:
        return Ending(label, code, session=Session.FORGET)
    return Ending(label, code)


def backoff_delay(policy: Policy, failures: int, rng: random.Random) -> float:
    """Delay before the next attempt after ``failures`` consecutive failed attempts.

    ``backoff_s[failures - 1]`` (the last value repeats; 0 failures uses the first), scaled by
    a uniform factor in ``[1 − backoff_jitter, 1 + backoff_jitter]`` so that many connections
    do not reconnect in step.
    """
    index = min(max(failures - 1, 0), len(policy.backoff_s) - 1)
    base = policy.backoff_s[index]
    j = policy.backoff_jitter
    return base * rng.uniform(1 - j, 1 + j) if j else base
