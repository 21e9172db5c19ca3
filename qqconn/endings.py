"""How connections end, and how long to wait before the next one: one pure classifier.

Every way a connection can end is first an *observation*, a small frozen fact (the server
closed with a code, the token request failed, a heartbeat went unacknowledged...). One
function, :func:`classify`, turns any observation into an :class:`Ending`: what
docs/behaviour.md says that end implies (keep or forget the session, which delay, whether it
counts as a quick drop, whether it is fatal), with a :class:`EndingKind` that hosts, logs,
metrics and the demo can name without parsing the reason. One function, :func:`next_delay`,
owns the delay ladder. The machine (:mod:`qqconn.machine`) observes, asks these two, and
applies the counter rules; nothing else classifies an end or computes a delay.

The observations (:mod:`qqconn.observations`, re-exported here):

=====================  ===================================================================
:class:`Closed`        the socket ended: the close code received (None: no close frame),
                       its reason, and the code qqconn itself sent, if any (websockets sends
                       1009 for a frame above ``max_frame_bytes``)
:class:`ConnectFailure`  the attempt failed before its socket opened, by stage (token,
                       gateway, handshake); ``refused``: the credentials were refused
:class:`Zombie`        a heartbeat was not acknowledged in time (rule 5)
:class:`Stale`         no frame arrived for ``stale_after_intervals`` intervals (rule 6)
:class:`SendFailures`  ``max_heartbeat_send_failures`` heartbeat sends failed in a row (rule 7)
:class:`DeadlinePassed`  no READY/RESUMED within ``connect_timeout_s`` (rule 2)
:class:`Op7`           the server asked for a reconnect: before READY/RESUMED, on a young
                       connection, or on a live one
:class:`Op9`           invalid session, resumable or not
:class:`PoisonFrame`   an oversized frame came back at the same point of the stream after a
                       Resume (rule 19): the next ``s`` is skipped, or (after a skip) the
                       session is given up
=====================  ===================================================================

Nothing here touches a clock, a socket or the global random generator.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qqconn.observations import (
    Closed,
    ConnectFailure,
    DeadlinePassed,
    Observation,
    Op7,
    Op9,
    PoisonFrame,
    SendFailures,
    Stale,
    Zombie,
)

if TYPE_CHECKING:
    from qqconn.policy import Policy

__all__ = [
    "FATAL_CLOSE_CODES",
    "REASON_CHARS",
    "RECONNECT_CLOSE_CODE",
    "TOO_LARGE_CLOSE_CODE",
    "CloseClass",
    "Closed",
    "ConnectFailure",
    "DeadlinePassed",
    "Delay",
    "Ending",
    "EndingKind",
    "Observation",
    "Op7",
    "Op9",
    "PoisonFrame",
    "SendFailures",
    "Session",
    "Stale",
    "Zombie",
    "backoff_index",
    "classify",
    "classify_close",
    "close_class",
    "next_delay",
]

#: The close code qqconn sends when it ends a connection it wants to resume (zombie, stale,
#: op 7...): not 1000/1001, which end the session on Discord-like gateways; 4000 is in the
#: private range and leaves the session resumable.
RECONNECT_CLOSE_CODE = 4000

#: The close code a WebSocket client sends for a frame above its size limit ("message too big").
TOO_LARGE_CLOSE_CODE = 1009

#: A close reason from the server is kept for logs and CloseSocket, shortened to this many
#: characters (a hostile server may send 123 bytes of anything; logs stay one line).
REASON_CHARS = 120


class Session(enum.Enum):
    """What becomes of the session when a connection ends."""

    KEEP = "keep"  #: Resume next
    FORGET = "forget"  #: Identify next


class Delay(enum.Enum):
    """How long to wait before the next attempt (see :func:`next_delay`)."""

    NOW = "now"  #: at once (op 7 on a live connection)
    ROTATION = "rotation"  #: short jitter (close 4009)
    BACKOFF = "backoff"  #: backoff_s by consecutive failures
    RATE_LIMIT = "rate_limit"  #: rate_limit_wait_s (close 4008)
    INVALID_SESSION = "invalid_session"  #: invalid_session_delay_s (op 9 d: true)


class CloseClass(enum.Enum):
    """Rows of docs/behaviour.md's close-code table."""

    ROTATION = "rotation"
    TRANSIENT = "transient"
    IDENTIFY = "identify"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    FATAL = "fatal"


class EndingKind(enum.Enum):
    """What ended a connection, by name. ``value`` is what logs, metrics and files show."""

    #: close 4009: the normal session rotation
    ROTATION = "rotation"
    #: a close frame the session survives (1000, 1001, 1011, 3xxx, other transport codes)
    CLOSED = "closed"
    #: the socket died without a close frame (1006, reset, EOF)
    DROPPED = "dropped"
    #: an inbound frame exceeded max_frame_bytes; qqconn closed with 1009
    FRAME_TOO_LARGE = "frame_too_large"
    #: close 4004: authentication failed (the token is refreshed once)
    AUTH_FAILED = "auth_failed"
    #: close 4008: rate limited
    RATE_LIMITED = "rate_limited"
    #: close 4006, 4007, 49xx...: the session is gone, Identify next
    SESSION_REJECTED = "session_rejected"
    #: a fatal close code (banned, bad intents, bad shard...)
    FATAL_CLOSE = "fatal_close"
    #: token, gateway URL or WebSocket handshake failed
    CONNECT_FAILED = "connect_failed"
    #: the token endpoint refused the app id or secret
    CREDENTIALS_REFUSED = "credentials_refused"
    #: a heartbeat was not acknowledged (rule 5)
    ZOMBIE = "zombie"
    #: no frame for stale_after_intervals intervals (rule 6)
    STALE = "stale"
    #: heartbeat sends failed max_heartbeat_send_failures times in a row (rule 7)
    SEND_FAILED = "send_failed"
    #: no READY/RESUMED within connect_timeout_s
    DEADLINE = "deadline"
    #: op 7 on a live connection: reconnect at once
    OP7 = "op7"
    #: op 7 on a connection younger than quick_disconnect_threshold_s
    OP7_YOUNG = "op7_young"
    #: op 7 before READY/RESUMED
    OP7_EARLY = "op7_early"
    #: op 9 with d: true
    INVALID_SESSION_RESUMABLE = "invalid_session_resumable"
    #: op 9 with d: false (or no d)
    INVALID_SESSION = "invalid_session"
    #: op 9 answering an Identify (before READY): the gateway refused to start a session
    IDENTIFY_REFUSED = "identify_refused"
    #: an oversized frame came back at the same point after a Resume: its s was skipped (rule 19)
    POISON_FRAME_SKIPPED = "poison_frame_skipped"
    #: an oversized frame came back even after a skip: the session was given up (rule 19)
    POISON_FRAME_SESSION_LOST = "poison_frame_session_lost"


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a connection ended, and what docs/behaviour.md says that implies.

    ``close_code``: the code received, or the one qqconn closes with (None: none).
    ``counts_as_quick``: the quick-drop rule applies (False for op 7, FATAL, a connect failure).
    ``always_consumes_attempt``: counts as a failed attempt even after READY (close 4008).
    ``fatal``: go to FATAL at once (not retryable).
    ``auth_failure``: the credentials were refused (4004, token endpoint): refresh once.
    ``before_socket``: the failure happened before the socket opened.
    ``skipped_seq``: the ``s`` qqconn gave up on (rule 19's poison frame), never delivered.
    """

    kind: EndingKind
    reason: str
    close_code: int | None = None
    session: Session = Session.KEEP
    delay: Delay = Delay.BACKOFF
    counts_as_quick: bool = True
    always_consumes_attempt: bool = False
    fatal: bool = False
    auth_failure: bool = False
    before_socket: bool = False
    skipped_seq: int | None = None


#: How a deadline that caught an attempt in a stage says so (``{url}`` filled in).
_STAGE_HANGS = {
    "token": "the token request to {url} got no answer",
    "gateway": "the gateway URL request to {url} got no answer",
    "handshake": "the WebSocket handshake with {url} did not complete",
    "hello": "the socket opened but no Hello came",
    "identify": "Identify was sent, no READY came",
    "resume": "Resume was sent, no RESUMED came",
}


# -- the close-code table -----------------------------------------------------------------------

#: The close codes after which no connection is opened again (docs/behaviour.md's table).
FATAL_CLOSE_CODES = frozenset({4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924})
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
assert set(_FATAL_REASONS) == FATAL_CLOSE_CODES


def close_class(code: int | None) -> CloseClass:
    """The row of the close-code table that ``code`` falls in (None: no close frame)."""
    if code is None or code in (1000, 1001, 1005, 1006):
        return CloseClass.TRANSIENT
    if code in FATAL_CLOSE_CODES:
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
    """A close code received (None: the socket died without a close frame) → its Ending.
    The same as ``classify(Closed(code, reason))``."""
    cls = close_class(code)
    label = f"closed {code}" if code is not None else "connection lost without a close frame"
    if reason:
        label = f"{label}: {reason[:REASON_CHARS]}"
    if cls is CloseClass.FATAL:
        assert code is not None
        return Ending(
            EndingKind.FATAL_CLOSE,
            f"close {code}: {_FATAL_REASONS[code]}",
            code,
            session=Session.FORGET,
            counts_as_quick=False,
            fatal=True,
        )
    if cls is CloseClass.ROTATION:
        return Ending(EndingKind.ROTATION, label, code, delay=Delay.ROTATION)
    if cls is CloseClass.AUTH:
        return Ending(EndingKind.AUTH_FAILED, label, code, auth_failure=True)
    if cls is CloseClass.RATE_LIMITED:
        return Ending(
            EndingKind.RATE_LIMITED,
            label,
            code,
            delay=Delay.RATE_LIMIT,
            always_consumes_attempt=True,
        )
    if cls is CloseClass.IDENTIFY:
        return Ending(EndingKind.SESSION_REJECTED, label, code, session=Session.FORGET)
    kind = EndingKind.DROPPED if code is None else EndingKind.CLOSED
    return Ending(kind, label, code)


# -- the classifier -----------------------------------------------------------------------------


def classify(observation: Observation) -> Ending:
    """Every way a connection ends → what it implies. Pure and total over :data:`Observation`."""
    match observation:
        case Closed(sent_code=sent) if sent == TOO_LARGE_CLOSE_CODE:
            # qqconn's own WebSocket closed: a frame above max_frame_bytes. A transport failure;
            # the session lives on (Resume with backoff).
            return Ending(
                EndingKind.FRAME_TOO_LARGE,
                f"closed {TOO_LARGE_CLOSE_CODE}: frame too large",
                TOO_LARGE_CLOSE_CODE,
            )
        case Closed(code=code, reason=reason):
            return classify_close(code, reason)
        case PoisonFrame(seq=seq, skipped_before=False):
            # Not the network: the same frame, every time. Skip that one event (Resume from
            # it), never a quick drop; the host is told which s it lost.
            return Ending(
                EndingKind.POISON_FRAME_SKIPPED,
                f"frame too large again after s={seq - 1}: s={seq} skipped",
                TOO_LARGE_CLOSE_CODE,
                counts_as_quick=False,
                skipped_seq=seq,
            )
        case PoisonFrame(seq=seq):
            # Skipping one s did not get past it: give up the session, never more.
            return Ending(
                EndingKind.POISON_FRAME_SESSION_LOST,
                f"frame too large again after skipping s={seq}: session given up",
                TOO_LARGE_CLOSE_CODE,
                session=Session.FORGET,
                counts_as_quick=False,
            )
        case ConnectFailure(stage=stage, detail=detail, refused=refused, url=url):
            where = f" ({url})" if url else ""
            return Ending(
                EndingKind.CREDENTIALS_REFUSED if refused else EndingKind.CONNECT_FAILED,
                f"{stage} failed{where}: {detail}",
                before_socket=True,
                auth_failure=refused,
            )
        case Zombie():
            return Ending(
                EndingKind.ZOMBIE, "zombie: heartbeat not acknowledged", RECONNECT_CLOSE_CODE
            )
        case Stale(silent_s=silent):
            return Ending(
                EndingKind.STALE, f"stale: no frame for {silent:g} s", RECONNECT_CLOSE_CODE
            )
        case SendFailures(failures=n):
            return Ending(EndingKind.SEND_FAILED, f"{n} heartbeat sends failed in a row")
        case DeadlinePassed(timeout_s=timeout, before_socket=before, stage=stage, url=url):
            hang = _STAGE_HANGS.get(stage or "")
            where = f": {hang.format(url=url or 'its URL')}" if hang else ""
            return Ending(
                EndingKind.DEADLINE,
                f"no READY/RESUMED within {timeout:g} s{where}",
                before_socket=before,
            )
        case Op7(reached_session=False):
            # This attempt failed to reach a session: counted as a failed attempt (by the
            # machine's rule 2), so a server that answers every Hello with op 7 cannot loop
            # us at full speed.
            return Ending(
                EndingKind.OP7_EARLY,
                "op 7 before READY/RESUMED",
                RECONNECT_CLOSE_CODE,
                counts_as_quick=False,
            )
        case Op7(young=True):
            # Not counted (docs/behaviour.md), but not at once either: a server that answers
            # every RESUMED with op 7 would otherwise have us reconnect in a tight loop.
            return Ending(
                EndingKind.OP7_YOUNG,
                "op 7 reconnect requested on a young connection",
                RECONNECT_CLOSE_CODE,
                counts_as_quick=False,
            )
        case Op7():
            return Ending(
                EndingKind.OP7,
                "op 7 reconnect requested",
                RECONNECT_CLOSE_CODE,
                delay=Delay.NOW,
                counts_as_quick=False,
            )
        case Op9(after_identify=True):
            # Rule 18: not a network problem, and not a quick drop; its own budget counts it.
            return Ending(
                EndingKind.IDENTIFY_REFUSED,
                "op 9: the gateway refused the Identify",
                session=Session.FORGET,
                counts_as_quick=False,
            )
        case Op9(resumable=True):
            return Ending(
                EndingKind.INVALID_SESSION_RESUMABLE,
                "op 9 invalid session (resumable)",
                delay=Delay.INVALID_SESSION,
            )
        case Op9():
            return Ending(
                EndingKind.INVALID_SESSION, "op 9 invalid session", session=Session.FORGET
            )
    raise TypeError(f"not an observation: {observation!r}")  # pragma: no cover


# -- the delay ladder ---------------------------------------------------------------------------


def backoff_index(failures: int, policy: Policy) -> int:
    """Which ``backoff_s`` step applies after ``failures`` consecutive failed attempts:
    ``failures - 1``, 0 for none, and the last step repeats."""
    return min(max(failures - 1, 0), len(policy.backoff_s) - 1)


def next_delay(ending: Ending | None, failures: int, policy: Policy, rng: random.Random) -> float:
    """Seconds to wait before the next attempt, after ``ending`` (None: no ending yet) and
    ``failures`` consecutive failed attempts. ``rng`` draws every jitter.

    * ``Delay.NOW``: 0.
    * ``Delay.ROTATION``: uniform over ``rotation_delay_s``.
    * ``Delay.RATE_LIMIT``: ``rate_limit_wait_s``.
    * ``Delay.INVALID_SESSION``: uniform over ``invalid_session_delay_s``.
    * ``Delay.BACKOFF`` (and no ending): ``backoff_s[backoff_index(failures)]`` scaled by a
      uniform factor in ``[1 − backoff_jitter, 1 + backoff_jitter]``, so that many
      connections do not reconnect in step.
    """
    kind = ending.delay if ending is not None else Delay.BACKOFF
    if kind is Delay.NOW:
        return 0.0
    if kind is Delay.ROTATION:
        return rng.uniform(*policy.rotation_delay_s)
    if kind is Delay.RATE_LIMIT:
        return policy.rate_limit_wait_s
    if kind is Delay.INVALID_SESSION:
        return rng.uniform(*policy.invalid_session_delay_s)
    base = policy.backoff_s[backoff_index(failures, policy)]
    j = policy.backoff_jitter
    return base * rng.uniform(1 - j, 1 + j) if j else base
