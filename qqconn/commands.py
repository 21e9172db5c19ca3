"""Commands: what the machine tells the driver to do. Imperative, frozen, carry no secrets.

The driver carries each out and reports what happened as an event; it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from qqconn.endings import Ending
from qqconn.events import Timer
from qqconn.protocol import Dispatch

__all__ = [
    "AnnounceState",
    "CancelTimer",
    "CloseSocket",
    "Command",
    "DeliverDispatch",
    "DropDispatch",
    "Finish",
    "NotifyFatal",
    "OpenSocket",
    "RequestIdentifyPermit",
    "SendHeartbeat",
    "SendIdentify",
    "SendResume",
    "StartTimer",
    "WriteCheckpoint",
]


@dataclass(frozen=True, slots=True)
class RequestIdentifyPermit:
    """Ask the identify limiter for a permit to Identify (docs/behaviour.md rule 17). Report
    IdentifyPermitted or IdentifyPermitDeferred; never wait inside the limiter."""


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Start attempt ``attempt``: get a token (a fresh one if ``refresh_token``), the gateway
    URL, and open the WebSocket. Report SocketOpened or ConnectFailed."""

    attempt: int
    refresh_token: bool


@dataclass(frozen=True, slots=True)
class SendIdentify:
    """Send op 2 Identify (token, intents and shard are the driver's)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class SendResume:
    """Send op 6 Resume for ``session_id`` from ``seq``."""

    attempt: int
    session_id: str
    seq: int | None


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """Send op 1 with ``d = seq``. Report HeartbeatSent or HeartbeatSendFailed."""

    attempt: int
    seq: int | None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """(Re)start ``timer``: fire TimerFired after ``delay_s``. A running timer of that name is
    replaced. Timers of an attempt (``attempt`` set) die with that attempt's socket."""

    timer: Timer
    delay_s: float
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Cancel ``timer`` if it is running."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """End attempt ``attempt``: close its socket with ``code`` (bounded by close_timeout_s) and
    cancel everything that belongs to it. Its later events are stale and will be dropped."""

    attempt: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class DeliverDispatch:
    """Hand ``dispatch`` (READY included) to the host, in order with the others. When the
    host is done with it, report :class:`~qqconn.events.DispatchHandled` with
    ``session_id`` and ``dispatch.seq``."""

    dispatch: Dispatch
    session_id: str | None


@dataclass(frozen=True, slots=True)
class DropDispatch:
    """Do not hand this dispatch to the host: the host already had ``seq`` (``last_seq`` is
    the highest ``s`` received). Count it; log it at DEBUG."""

    seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class WriteCheckpoint:
    """Rewrite the state file now (a new session was handled, or the resume checkpoint or the
    connection's freshness moved and ``checkpoint_interval_s`` has passed since the last
    write). No-op without a state file."""


@dataclass(frozen=True, slots=True)
class AnnounceState:
    """The state changed: tell the host and rewrite the state file. ``ending`` is the end of
    a connection that caused the change, if one did; ``quick_drop`` / ``failed_attempt``: that
    ending counted as a quick drop / a failed attempt (docs/behaviour.md's counters)."""

    state: str
    previous: str
    trigger: str
    ending: Ending | None = None
    quick_drop: bool = False
    failed_attempt: bool = False


@dataclass(frozen=True, slots=True)
class NotifyFatal:
    """Call the host's fatal callback, once, from a task of its own."""

    reason: str
    close_code: int | None
    retryable: bool


@dataclass(frozen=True, slots=True)
class Finish:
    """The machine is terminal: end the manager's run."""


Command = (
    RequestIdentifyPermit
    | OpenSocket
    | SendIdentify
    | SendResume
    | SendHeartbeat
    | StartTimer
    | CancelTimer
    | CloseSocket
    | DeliverDispatch
    | DropDispatch
    | WriteCheckpoint
    | AnnounceState
    | NotifyFatal
    | Finish
)
