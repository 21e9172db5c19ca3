"""The observations: every way a connection can end, as a small frozen fact.

The machine (:mod:`qqconn.machine`) or the driver reports one; :func:`qqconn.endings.classify`
turns it into an :class:`~qqconn.endings.Ending` (the table of observations is in
:mod:`qqconn.endings`, which re-exports every name here). Nothing here decides.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Closed",
    "ConnectFailure",
    "DeadlinePassed",
    "Observation",
    "Op7",
    "Op9",
    "PoisonFrame",
    "SendFailures",
    "Stale",
    "Zombie",
]


@dataclass(frozen=True, slots=True)
class Closed:
    """The socket ended. ``code``: the close code received (None: no close frame);
    ``sent_code``: the close code qqconn's own WebSocket sent, if it closed first."""

    code: int | None
    reason: str = ""
    sent_code: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """The attempt failed before its socket opened. ``stage``: ``token``, ``gateway`` or
    ``handshake``; ``refused``: the token endpoint refused the credentials."""

    stage: str
    detail: str
    refused: bool = False
    #: The URL that stage asked (None: not reported).
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Zombie:
    """The last heartbeat was not acknowledged in time."""


@dataclass(frozen=True, slots=True)
class Stale:
    """No inbound frame for ``silent_s`` seconds (stale_after_intervals heartbeat intervals)."""

    silent_s: float


@dataclass(frozen=True, slots=True)
class SendFailures:
    """``failures`` heartbeat sends failed in a row."""

    failures: int


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    """No READY/RESUMED within ``timeout_s``; ``before_socket``: no socket had opened.
    ``stage``: where the attempt was (``token``, ``gateway``, ``handshake``: the driver's
    report; ``hello``: socket open, no Hello; ``identify``/``resume``: sent, no answer),
    ``url`` the URL that stage asked, if any."""

    timeout_s: float
    before_socket: bool
    stage: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Op7:
    """Op 7 arrived. ``reached_session``: READY/RESUMED had been seen on this socket;
    ``young``: the socket opened less than quick_disconnect_threshold_s ago."""

    reached_session: bool
    young: bool


@dataclass(frozen=True, slots=True)
class Op9:
    """Op 9 arrived; ``resumable`` is its ``d``; ``after_identify``: it answered this
    socket's Identify (no READY yet), so the gateway refused to start a session."""

    resumable: bool
    after_identify: bool = False


@dataclass(frozen=True, slots=True)
class PoisonFrame:
    """An oversized frame ended the connection again at the same point of the stream (the last
    ``s`` received unchanged since the previous oversized ending, rule 19). ``seq``: the ``s``
    it must be (the one after the last received); ``skipped_before``: that ``s`` was already
    skipped and the frame still comes back."""

    seq: int
    skipped_before: bool


Observation = (
    Closed
    | ConnectFailure
    | Zombie
    | Stale
    | SendFailures
    | DeadlinePassed
    | Op7
    | Op9
    | PoisonFrame
)
