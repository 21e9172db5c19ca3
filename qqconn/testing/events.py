"""Events for tests: one of every event type, and the two that carry a payload.

For qqconn's own tests and for authors of other drivers (an adapter feeding
:class:`~qqconn.machine.ConnectionMachine` from another I/O library): feed
:func:`one_of_each` in every state to check that nothing raises and terminal states stay
silent; build READY and dispatch events with :func:`ready_received` and
:func:`dispatch_received`, which give them a well-formed :class:`~qqconn.protocol.Dispatch`.

Pure and cheap to import (no asyncio, no sockets).
"""

from __future__ import annotations

from typing import get_args

from qqconn import events as ev
from qqconn.protocol import Dispatch

__all__ = ["EVENT_TYPES", "dispatch_received", "one_of_each", "ready_received"]

#: Every event type, in the order of :data:`qqconn.events.Event`.
EVENT_TYPES: tuple[type, ...] = get_args(ev.Event)

#: The Hello interval :func:`one_of_each` uses (QQ's usual one, in milliseconds).
HELLO_INTERVAL_MS = 41_250


def ready_received(
    attempt: int, at: float, session_id: str = "session-1", seq: int | None = 1
) -> ev.ReadyReceived:
    """READY for ``session_id`` with ``s = seq``, carrying the READY frame itself."""
    frame = Dispatch(seq, "READY", {"session_id": session_id, "version": 1}, None)
    return ev.ReadyReceived(attempt, at, session_id, seq, frame)


def dispatch_received(
    attempt: int, at: float, seq: int | None, event_type: str = "AT_MESSAGE_CREATE"
) -> ev.DispatchReceived:
    """A dispatch of ``event_type`` with ``s = seq`` (None: the frame had no usable ``s``)."""
    event_id = f"{event_type}:{seq}" if seq is not None else None
    return ev.DispatchReceived(attempt, at, Dispatch(seq, event_type, {"seq": seq}, event_id))


def one_of_each(
    attempt: int = 1, at: float = 0.0, *, session_id: str = "session-x", seq: int = 99
) -> list[ev.Event]:
    """One instance of every event type (:data:`EVENT_TYPES`, in that order), for ``attempt``
    at time ``at``. The attempt-less ones (Started, StopRequested, DispatchHandled) ignore
    ``attempt``; DispatchHandled reports ``session_id`` and ``seq``. Closes carry no close
    frame, op 9 says not resumable, the timer is the heartbeat's."""
    events: list[ev.Event] = [
        ev.Started(at),
        ev.StopRequested(at),
        ev.IdentifyPermitted(at),
        ev.IdentifyPermitDeferred(at, 5.0, "bucket busy"),
        ev.ConnectFailed(attempt, at, "token", "HTTP 503"),
        ev.SocketOpened(attempt, at),
        ev.HelloReceived(attempt, at, HELLO_INTERVAL_MS),
        ready_received(attempt, at, session_id, seq),
        ev.ResumedReceived(attempt, at, seq),
        dispatch_received(attempt, at, seq),
        ev.DispatchHandled(at, session_id, seq),
        ev.HeartbeatAcked(attempt, at),
        ev.HeartbeatRequested(attempt, at),
        ev.HeartbeatSent(attempt, at),
        ev.HeartbeatSendFailed(attempt, at, "broken pipe"),
        ev.ReconnectRequested(attempt, at),
        ev.InvalidSessionReceived(attempt, at, False),
        ev.FrameRejected(attempt, at, "not JSON"),
        ev.SocketClosed(attempt, at, None),
        ev.TimerFired(ev.Timer.HEARTBEAT, attempt, at),
        ev.ConnectProgressed(attempt, at, "token", "https://bots.example/token"),
    ]
    assert tuple(type(e) for e in events) == EVENT_TYPES, "one_of_each misses an event type"
    return events
