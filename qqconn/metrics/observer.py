"""The interface a driver calls about one connection, and the do-nothing one."""

from __future__ import annotations

from typing import Protocol


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
