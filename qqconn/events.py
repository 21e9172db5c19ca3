"""Events: facts the I/O layer observed, fed to the machine. Past tense, frozen, time-stamped.

``at`` is a monotonic time in seconds supplied by the caller (the machine has no clock).
``attempt`` names the connection attempt (one per socket) an event belongs to; the machine
drops events of attempts other than the current one, so nothing a dead socket says can act.
Events report raw facts: what they mean (a close code's row of the table, an oversized frame,
refused credentials) is decided by the machine and :mod:`qqconn.endings`, never by the driver.

``qqconn.testing.events.one_of_each()`` builds one instance of every event type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qqconn.protocol import Dispatch

__all__ = [
    "ConnectFailed",
    "ConnectProgressed",
    "DispatchHandled",
    "DispatchReceived",
    "Event",
    "FrameRejected",
    "HeartbeatAcked",
    "HeartbeatRequested",
    "HeartbeatSendFailed",
    "HeartbeatSent",
    "HelloReceived",
    "IdentifyPermitDeferred",
    "IdentifyPermitted",
    "InvalidSessionReceived",
    "ReadyReceived",
    "ReconnectRequested",
    "ResumedReceived",
    "SocketClosed",
    "SocketOpened",
    "Started",
    "StopRequested",
    "Timer",
    "TimerFired",
]


class Timer(enum.Enum):
    """The machine's named timers. Per-socket timers die with their socket."""

    ATTEMPT_DEADLINE = "attempt_deadline"  #: READY/RESUMED due within connect_timeout_s
    HEARTBEAT = "heartbeat"  #: next heartbeat due (per socket)
    ACK_DEADLINE = "ack_deadline"  #: the last heartbeat's ACK is due (per socket)
    BACKOFF = "backoff"  #: the wait between attempts is over
    PERMIT = "permit"  #: time to ask the identify limiter again


@dataclass(frozen=True, slots=True)
class Started:
    """The host started the manager."""

    at: float


@dataclass(frozen=True, slots=True)
class StopRequested:
    """The host asked the manager to stop."""

    at: float


@dataclass(frozen=True, slots=True)
class IdentifyPermitted:
    """The identify limiter granted the permit the machine asked for: Identify may go."""

    at: float


@dataclass(frozen=True, slots=True)
class IdentifyPermitDeferred:
    """The identify limiter cannot grant a permit now. ``wait_s``: when to ask again (the
    bucket's window, ``reset_after`` when ``remaining`` is 0); None when the limiter could not
    tell (its store is unreachable): the machine backs off. ``reason`` says why, for logs."""

    at: float
    wait_s: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The attempt failed before its socket opened (token, gateway URL or WebSocket handshake)."""

    attempt: int
    at: float
    #: ``token``, ``gateway`` or ``handshake``
    stage: str
    detail: str
    #: The credentials were refused (the token endpoint said so): judged like close 4004.
    refused: bool = False
    #: The URL the failing stage asked (token URL, gateway URL, WebSocket URL); no secret.
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectProgressed:
    """The attempt began a stage of connecting: ``token``, ``gateway`` or ``handshake``, asking
    ``url``. A fact for the record: a deadline that passes names the stage it caught."""

    attempt: int
    at: float
    stage: str
    url: str


@dataclass(frozen=True, slots=True)
class SocketOpened:
    """The WebSocket handshake completed; the quick-drop clock starts now."""

    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """Op 10 arrived. ``interval_ms`` is the raw ``heartbeat_interval`` (validated by the machine)."""

    attempt: int
    at: float
    interval_ms: object


@dataclass(frozen=True, slots=True)
class ReadyReceived:
    """READY arrived: a new session. ``dispatch`` is the READY frame itself (type ``READY``,
    its data and event id), handed to the host if the machine adopts the session."""

    attempt: int
    at: float
    session_id: str
    seq: int | None
    dispatch: Dispatch


@dataclass(frozen=True, slots=True)
class ResumedReceived:
    """RESUMED arrived: the session lives on."""

    attempt: int
    at: float
    seq: int | None


@dataclass(frozen=True, slots=True)
class DispatchReceived:
    """A dispatch (op 0) arrived; its sequence number is ``dispatch.seq`` (None: the frame had
    no usable ``s``)."""

    attempt: int
    at: float
    dispatch: Dispatch


@dataclass(frozen=True, slots=True)
class DispatchHandled:
    """The host is done with a dispatch it was handed (its callback returned or raised).

    ``session_id`` is the one :class:`~qqconn.commands.DeliverDispatch` named; ``seq`` the
    dispatch's. The machine keeps the resume checkpoint from these reports; a report for a
    session it no longer holds changes nothing. No ``attempt``: the host lane outlives sockets.
    """

    at: float
    session_id: str | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class HeartbeatAcked:
    """Op 11 arrived."""

    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class HeartbeatRequested:
    """The server sent op 1: it wants a heartbeat now."""

    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class HeartbeatSent:
    """A heartbeat the machine asked for was written to the socket."""

    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class HeartbeatSendFailed:
    """Writing a heartbeat failed."""

    attempt: int
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class ReconnectRequested:
    """Op 7 arrived."""

    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class InvalidSessionReceived:
    """Op 9 arrived; ``resumable`` is its ``d`` (True only for a literal ``true``)."""

    attempt: int
    at: float
    resumable: bool


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame could not be used (not JSON, binary, unknown op, wrong shape). Already logged."""

    attempt: int
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """The socket ended. ``code`` is the close code received, None when no close frame was
    (1006, reset, EOF). ``sent_code`` is the close code the client's own WebSocket sent, if
    it closed first (websockets sends 1009 for a frame above ``max_frame_bytes``)."""

    attempt: int
    at: float
    code: int | None
    reason: str = ""
    sent_code: int | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the machine started has elapsed. ``late_s``: how long after its due time the
    loop ran it (a fact the driver measures in loop time; a stalled loop makes it large)."""

    timer: Timer
    attempt: int
    at: float
    late_s: float = 0.0


Event = (
    Started
    | StopRequested
    | IdentifyPermitted
    | IdentifyPermitDeferred
    | ConnectFailed
    | SocketOpened
    | HelloReceived
    | ReadyReceived
    | ResumedReceived
    | DispatchReceived
    | DispatchHandled
    | HeartbeatAcked
    | HeartbeatRequested
    | HeartbeatSent
    | HeartbeatSendFailed
    | ReconnectRequested
    | InvalidSessionReceived
    | FrameRejected
    | SocketClosed
    | TimerFired
    | ConnectProgressed
)
