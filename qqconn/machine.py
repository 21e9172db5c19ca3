"""The connection machine: every decision a QQ gateway connection makes, as one table.

Theory of operation
===================

Rule 1: everything that decides what a connection does lives in this module. The driver
observes sockets and timers, feeds the facts in as :mod:`~qqconn.events`, and carries out the
:mod:`~qqconn.commands` that come back. Nothing else decides. There is one door:
:meth:`ConnectionMachine.handle`. Everything the host or a restart needs crosses it as an event
or a command: a delivered dispatch carries its payload, the host reports what it finished with,
a restored session is a constructor argument (``restored=``) and can enter no other way.

One engine for every connection: :func:`build_engine` builds the ``transitions`` machine
for the table with no model, and every :class:`ConnectionMachine` of the process is a small
model on the one :func:`shared_engine`, never registered with it and queueing its own triggers.

The states (docs/behaviour.md)::

    AWAITING_PERMIT  no socket yet: waiting for the identify limiter's permit (rule 17)
    CONNECTING     token, gateway URL, WebSocket, waiting for Hello
    IDENTIFIED     Hello seen, Identify/Resume sent, heartbeats running, waiting for READY/RESUMED
    ALIVE          READY or RESUMED seen: the session is live
    QUICK_DROPPED  the connection ended less than quick_disconnect_threshold_s after its socket opened
    BACKOFF        waiting before the next attempt
    FATAL          terminal: gave up; the host is told exactly once (on entry)
    STOPPED        terminal: the host asked to stop

Identify permits (docs/behaviour.md rule 17). A Resume needs no permit; an Identify does. An
attempt that will Identify (no session held) first asks the driver's limiter
(``RequestIdentifyPermit``) and waits in AWAITING_PERMIT, *before* its socket opens: the
gateway closes a socket that does not Identify soon after Hello (docs/protocol.md §7, the
"Identify in time" rule), and a wait for ``reset_after`` can last hours, so waiting with a
socket open would turn every long wait into a dropped connection. ``IdentifyPermitted`` opens
the attempt; ``IdentifyPermitDeferred`` says when to ask again (the bucket's window, or
``reset_after`` when ``session_start_limit.remaining`` is 0; the snapshot's
``identify_wait`` and the log line ``qqconn.identify_permit_deferred`` say so), or that the
limiter could not tell (its store is unreachable), in which case the ``backoff_s`` ladder
spaces the retries. The ``PERMIT`` timer asks again.

Identify refused (rule 18). Op 9 on a socket that sent Identify and saw no READY is its own
ending (``identify_refused``), classified before the quick-drop count the way a fatal close
code is: ``identify_refusals`` counts them in a row (READY resets it), and the
``max_identify_refusals``-th ends in FATAL, not retryable, naming the likely causes.

The two counters, and exactly when they move:

* ``quick_drops`` counts consecutive *quick* connection ends: a connection whose socket opened
  and which ended, for whatever reason, less than the threshold after opening. It goes back to
  zero only when a connection that lived at least the threshold ends. A socket merely opening,
  or READY, never resets it: a server that accepts, says READY and closes at once is exactly the
  loop this counter exists to stop. Op 7, a stop and a FATAL close are not counted.
* ``failed_attempts`` counts consecutive attempts that ended before READY/RESUMED (token or URL
  failure, handshake failure, a socket that closed early, no READY in time). Only READY or
  RESUMED reset it. Close 4008 consumes an attempt even from ALIVE.

Why QUICK_DROPPED is a state of its own: it is the one place the quick-drop limit is asked, so
the diagram shows the rule (``QUICK_DROPPED -> FATAL [quick_drops_exhausted]``) instead of hiding
it in a branch. BACKOFF likewise asks ``attempts_exhausted`` on entry, before any wait: a spent
budget ends at once, never after a pointless sleep. Both run through the ``assess`` trigger,
which the machine queues on entering those states.

How a connection ends. Every way is first an *observation* (:mod:`qqconn.endings`), and one
pure function, :func:`~qqconn.endings.classify`, says what it implies as an
:class:`~qqconn.endings.Ending` (session kept or forgotten, which delay, quick or not, fatal or
not, and its :class:`~qqconn.endings.EndingKind`). Two kinds of row end a connection:

* ends the driver reports (a close with the code received and the one qqconn sent, a connect
  failure by stage with ``refused``, op 9) are classified as they come in and fire
  ``connection_ended``, whose three rows choose FATAL ``[ending_is_fatal]``, QUICK_DROPPED
  ``[is_quick_drop]`` or BACKOFF;
* ends the machine detects itself are rows of their own trigger that lead straight to where
  the end goes, so the statechart shows them: ``heartbeat_due [ack_overdue]`` (zombie, rule 5),
  ``heartbeat_due [frames_stale]`` (stale, rule 6), ``ack_due [ack_overdue]``,
  ``heartbeat_failed [send_failures_exhausted]`` (rule 7), ``attempt_deadline_passed``
  (rule 2) go to QUICK_DROPPED when the ending ``[is_quick_drop]``, else BACKOFF;
  ``reconnect_requested`` (op 7, never a quick drop) goes to BACKOFF. Before a heartbeat
  timer may judge, ``[loop_stalled]`` asks whether it ran late (``TimerFired.late_s``, rule 21):
  then the machine re-arms both timers shortly instead (``recheck_after_stall``), once per beat. Such a row names its observation (``observe=``, a
  ``transitions`` *prepare* callback run before the guards): ``observe_zombie``,
  ``observe_stale``, ``observe_send_failures``, ``observe_deadline``, ``observe_op7``. It
  classifies the observation into the event's ``ending``, which the guards and actions read
  as they read a reported one. None of these ends is ever fatal by itself, so they have no
  FATAL row (the exploration proves every row they have fires). The ordinary heartbeat is the
  first ``heartbeat_due`` row, ``unless=[ack_overdue, frames_stale]``: one row to try on the
  path taken every interval.

Whatever ended, ``count_ending`` applies the counter rules and :func:`~qqconn.endings.next_delay`
(the one delay ladder) decides the wait in BACKOFF. ``AnnounceState`` carries the ending that
caused a state change (for ``assess``, the ending it assessed).

Attempts are epochs: each socket belongs to one attempt number, and an event of an attempt that
is not the current, open one is dropped (``qqconn.stale_event``) before the table sees it. A
late close from a socket the machine already gave up on (the 4009 after op 7) cannot act.

Every (state, trigger) pair has rows ending in an unguarded one, so no trigger ever quietly
returns False; pairs that mean nothing get an explicit ``ignore`` row, and a protocol oddity an
``ignore_unexpected`` row that logs a warning. ``tests/test_exploration.py`` checks all of this.

Two rows outside the table
==========================

Two events never change the state and may come thousands of times a second, so they do not go
through ``transitions``. They are rows of the machine all the same, decided here and tested
like the others (``tests/test_machine.py``); :meth:`~ConnectionMachine.handle` takes them like
any event, and a driver may call the methods directly to skip allocating the event:

``DispatchReceived`` → :meth:`~ConnectionMachine.handle_dispatch`
    stale attempt (or no socket opened): nothing. An ``s`` at or below the last one received:
    ``DropDispatch(seq, last_seq)`` (a replay the host already had). Otherwise
    ``DeliverDispatch(dispatch, session_id)`` and, with an ``s``, it becomes the last one
    received (what heartbeats and Resume carry). A dispatch without ``s`` is delivered and
    changes nothing. READY is delivered by its table row (``adopt_session``), only when adopted.

``DispatchHandled`` → :meth:`~ConnectionMachine.handle_dispatch_handled`
    the host lane finished with a dispatch it was given. For the session the machine holds,
    the resume checkpoint moves (a new session: it becomes the checkpoint's session; the same
    one: its ``s`` only goes up), and ``WriteCheckpoint`` follows for a new session, or when
    ``checkpoint_interval_s`` has passed since the last write; in FATAL and STOPPED the
    checkpoint moves silently (the driver writes it on its way out). A report for another
    session (one the machine forgot) changes nothing.

The resume checkpoint
=====================

A restarted process must resume from what the host *finished* with, never from what was merely
received, so the checkpoint (:attr:`~ConnectionMachine.checkpoint`, and ``session_id`` /
``last_seq`` of :meth:`~ConnectionMachine.snapshot_fields`) is kept apart from the session the
machine holds: it is the restored session, or the session whose READY the host reported
handled, with the last ``s`` reported. Forgetting the session clears it at once, so a snapshot
that says ``alive`` never names a forgotten session (between a new READY and the host's report
of it, the snapshot names none). ``WriteCheckpoint`` is also emitted for an acknowledged
heartbeat, at most once per ``checkpoint_interval_s``, which keeps a quiet connection's state
file fresh; every ``AnnounceState`` implies a rewrite and restarts that interval.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn._log import QuietLogger, get_logger
from qqconn.checkpoint import Resumable
from qqconn.endings import (
    REASON_CHARS,
    RECONNECT_CLOSE_CODE,
    Closed,
    ConnectFailure,
    DeadlinePassed,
    Delay,
    Ending,
    EndingKind,
    Observation,
    Op7,
    Op9,
    PoisonFrame,
    SendFailures,
    Session,
    Stale,
    Zombie,
    classify,
    next_delay,
)
from qqconn.errors import ConfigError, LocalProtocolError
from qqconn.events import Timer
from qqconn.policy import Policy
from qqconn.protocol import Dispatch

__all__ = [
    "RECONNECT_CLOSE_CODE",
    "TRANSITIONS",
    "ConnectionMachine",
    "Fatal",
    "State",
    "build_engine",
    "build_rows",
]


class State(enum.Enum):
    """The machine's states. ``value`` is the lower-case name used in status and state files."""

    #: no socket: waiting for the identify limiter's permit (docs/behaviour.md rule 17)
    AWAITING_PERMIT = "awaiting_permit"
    #: token, gateway URL, WebSocket handshake, waiting for Hello
    CONNECTING = "connecting"
    #: Identify or Resume sent, heartbeats running, waiting for READY/RESUMED
    IDENTIFIED = "identified"
    #: the session is live
    ALIVE = "alive"
    #: a connection ended within quick_disconnect_threshold_s of its socket opening
    QUICK_DROPPED = "quick_dropped"
    #: waiting before the next attempt
    BACKOFF = "backoff"
    #: terminal: gave up, host told once
    FATAL = "fatal"
    #: terminal: stopped by the host
    STOPPED = "stopped"


S = State
LIVE = [S.CONNECTING, S.IDENTIFIED, S.ALIVE]  # a socket (or an attempt at one) exists
SOCKET_UP = [S.IDENTIFIED, S.ALIVE]  # Hello seen, heartbeats running
NOT_TERMINAL = [S.AWAITING_PERMIT, S.CONNECTING, S.IDENTIFIED, S.ALIVE, S.QUICK_DROPPED, S.BACKOFF]

TRIGGERS = (
    "start",
    "identify_permitted",
    "permit_deferred",
    "permit_due",
    "socket_opened",
    "hello",
    "ready",
    "resumed",
    "heartbeat_due",
    "ack_due",
    "heartbeat_acked",
    "heartbeat_requested",
    "heartbeat_sent",
    "heartbeat_failed",
    "frame_rejected",
    "reconnect_requested",
    "attempt_deadline_passed",
    "connection_ended",
    "assess",
    "backoff_elapsed",
    "stop",
)


def _row(
    trigger: str,
    source: State | list[State],
    dest: State | None,
    *,
    when: str | list[str] | None = None,
    unless: list[str] | None = None,
    observe: str | None = None,
    before: str | None = None,
    then: str | None = None,
) -> dict[str, Any]:
    """One row: on ``trigger`` in ``source``, if guard(s) ``when`` hold (and none of
    ``unless``), go to ``dest`` (None: stay, an internal transition) running ``before`` ahead
    of the change and ``then`` after it. ``observe`` names what ends the connection on this
    row: it runs before the guards and leaves the classified :class:`~qqconn.endings.Ending`
    in the event's ``ending`` for them (and the actions) to read."""
    row: dict[str, Any] = {"trigger": trigger, "source": source, "dest": dest}
    if when is not None:
        row["conditions"] = when
    if unless is not None:
        row["unless"] = unless
    if observe is not None:
        row["prepare"] = observe
    if before is not None:
        row["before"] = before
    if then is not None:
        row["after"] = then
    return row


def _ends(
    trigger: str,
    source: State | list[State],
    dest: State,
    *,
    when: str | list[str] | None = None,
    observe: str | None = None,
) -> dict[str, Any]:
    """A row that ends the connection and goes to ``dest`` (FATAL, QUICK_DROPPED or BACKOFF):
    into FATAL it records why; elsewhere it applies the counter rules (``count_ending``)."""
    action = "record_fatal_ending" if dest is S.FATAL else "count_ending"
    return _row(trigger, source, dest, when=when, observe=observe, before=action)


# The table. Rows of one (source, trigger) are tried in order; the first whose guards hold
# fires. Guards are questions; actions only record facts and emit commands.
# fmt: off
TRANSITIONS: list[dict[str, Any]] = [
    # -- starting ---------------------------------------------------------------------------------
    _row("start", S.CONNECTING, S.AWAITING_PERMIT, when=["not_started", "needs_permit"], then="ask_permit"),
    _row("start", S.CONNECTING, None, when="not_started", then="begin_attempt"),
    # -- AWAITING_PERMIT: an Identify waits for the limiter (rule 17); a Resume never comes here --
    _row("identify_permitted", S.AWAITING_PERMIT, S.CONNECTING, then="begin_attempt"),
    _row("permit_deferred", S.AWAITING_PERMIT, None, then="wait_for_permit"),
    _row("permit_due", S.AWAITING_PERMIT, None, then="ask_permit"),
    # -- CONNECTING -------------------------------------------------------------------------------
    _row("socket_opened", S.CONNECTING, None, then="note_socket_opened"),
    _row("hello", S.CONNECTING, S.IDENTIFIED, then="greet"),
    # -- IDENTIFIED -------------------------------------------------------------------------------
    _row("ready", S.IDENTIFIED, S.ALIVE, before="adopt_session"),
    _row("resumed", S.IDENTIFIED, S.ALIVE, when="awaits_resumed", before="keep_session"),
    # -- no READY/RESUMED in time (rule 2) ---------------------------------------------------------
    _ends("attempt_deadline_passed", [S.CONNECTING, S.IDENTIFIED], S.QUICK_DROPPED, when="is_quick_drop", observe="observe_deadline"),
    _ends("attempt_deadline_passed", [S.CONNECTING, S.IDENTIFIED], S.BACKOFF, observe="observe_deadline"),
    # -- heartbeats, while a socket is up (IDENTIFIED, ALIVE): rules 4-7 ----------------------------
    _row("heartbeat_due", SOCKET_UP, None, unless=["ack_overdue", "frames_stale"], then="beat"),
    _row("heartbeat_due", SOCKET_UP, None, when="loop_stalled", then="recheck_after_stall"),
    _ends("heartbeat_due", SOCKET_UP, S.QUICK_DROPPED, when=["ack_overdue", "is_quick_drop"], observe="observe_zombie"),
    _ends("heartbeat_due", SOCKET_UP, S.BACKOFF, when="ack_overdue", observe="observe_zombie"),
    _ends("heartbeat_due", SOCKET_UP, S.QUICK_DROPPED, when=["frames_stale", "is_quick_drop"], observe="observe_stale"),
    _ends("heartbeat_due", SOCKET_UP, S.BACKOFF, when="frames_stale", observe="observe_stale"),
    _row("ack_due", SOCKET_UP, None, when=["loop_stalled", "ack_overdue"], then="recheck_after_stall"),
    _ends("ack_due", SOCKET_UP, S.QUICK_DROPPED, when=["ack_overdue", "is_quick_drop"], observe="observe_zombie"),
    _ends("ack_due", SOCKET_UP, S.BACKOFF, when="ack_overdue", observe="observe_zombie"),
    _row("heartbeat_acked", SOCKET_UP, None, then="note_ack"),
    _row("heartbeat_requested", SOCKET_UP, None, then="beat_now"),
    _row("heartbeat_sent", SOCKET_UP, None, then="note_beat_sent"),
    _ends("heartbeat_failed", SOCKET_UP, S.QUICK_DROPPED, when=["send_failures_exhausted", "is_quick_drop"], observe="observe_send_failures"),
    _ends("heartbeat_failed", SOCKET_UP, S.BACKOFF, when="send_failures_exhausted", observe="observe_send_failures"),
    _row("heartbeat_failed", SOCKET_UP, None, then="note_beat_failed"),
    # -- op 7: never a quick drop, never fatal by itself ------------------------------------------
    _ends("reconnect_requested", LIVE, S.BACKOFF, observe="observe_op7"),
    # -- frames qqconn could not use --------------------------------------------------------------
    _row("frame_rejected", LIVE, None, then="note_rejected"),
    # -- an end the driver reported (close, connect failure, op 9), already classified -----------
    _ends("connection_ended", LIVE, S.FATAL, when="ending_is_fatal"),
    _row("connection_ended", S.IDENTIFIED, S.FATAL, when="identify_refusals_exhausted", before="record_refusals_fatal"),
    # -- the same oversized frame after a Resume (rule 19): asked before the quick-drop count ---
    _row("connection_ended", LIVE, S.BACKOFF, when="frame_came_back_after_skip", observe="observe_poison", before="count_ending"),
    _row("connection_ended", LIVE, S.BACKOFF, when="frame_came_back", observe="observe_poison", before="skip_poison_frame"),
    _ends("connection_ended", LIVE, S.QUICK_DROPPED, when="is_quick_drop"),
    _ends("connection_ended", LIVE, S.BACKOFF),
    # -- QUICK_DROPPED ----------------------------------------------------------------------------
    _row("assess", S.QUICK_DROPPED, S.FATAL, when="quick_drops_exhausted", before="record_quick_fatal"),
    _row("assess", S.QUICK_DROPPED, S.BACKOFF),
    # -- BACKOFF ----------------------------------------------------------------------------------
    _row("assess", S.BACKOFF, S.FATAL, when="attempts_exhausted", before="record_attempts_fatal"),
    _row("assess", S.BACKOFF, None, then="wait_before_attempt"),
    _row("backoff_elapsed", S.BACKOFF, S.AWAITING_PERMIT, when="needs_permit", then="ask_permit"),
    _row("backoff_elapsed", S.BACKOFF, S.CONNECTING, then="begin_attempt"),
    # -- stopping ---------------------------------------------------------------------------------
    _row("stop", NOT_TERMINAL, S.STOPPED),
    # -- protocol oddities: logged at WARNING, otherwise ignored ----------------------------------
    _row("hello", SOCKET_UP, None, then="ignore_unexpected"),
    _row("ready", [S.CONNECTING, S.ALIVE], None, then="ignore_unexpected"),
    _row("resumed", LIVE, None, then="ignore_unexpected"),
    # -- misuse by the host: raises LocalProtocolError, state unchanged ----------------------------
    _row("start", list(State), None, then="refuse_start"),
]
# fmt: on

STATES: list[dict[str, Any]] = [
    {"name": S.CONNECTING},
    {"name": S.AWAITING_PERMIT},
    {"name": S.IDENTIFIED},
    {"name": S.ALIVE},
    {"name": S.QUICK_DROPPED, "on_enter": "queue_assess"},
    {"name": S.BACKOFF, "on_enter": "queue_assess"},
    {"name": S.FATAL, "on_enter": "give_up", "final": True},
    {"name": S.STOPPED, "on_enter": "halt", "final": True},
]


def _has_catch_all(rows: list[dict[str, Any]], state: State, trigger: str) -> bool:
    for row in rows:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        guarded = "conditions" in row or "unless" in row
        if row["trigger"] == trigger and state in sources and not guarded:
            return True
    return False


def build_rows() -> list[dict[str, Any]]:
    """The full table: :data:`TRANSITIONS` plus an explicit ``ignore`` row for every
    (state, trigger) pair that has no unguarded row, so that no trigger is ever a silent no-op."""
    rows = list(TRANSITIONS)
    for state in State:
        for trigger in TRIGGERS:
            if not _has_catch_all(rows, state, trigger):
                rows.append({"trigger": trigger, "source": state, "dest": None, "after": "ignore"})
    return rows


def build_engine(rows: list[dict[str, Any]] | None = None) -> Machine:
    """A ``transitions`` engine for the table (:func:`build_rows` unless ``rows``), with no model.

    The process runs every :class:`ConnectionMachine` on one such engine
    (:func:`shared_engine`): the table, events, conditions and callbacks exist once, and each
    connection is a small model holding only its own state and counters (the pattern the
    ``transitions`` FAQ recommends for many models). Models are never registered with the
    engine (``add_model`` would bind a trigger per event on every model and keep it in
    ``Machine.models``, a list scanned on every add and holding a strong reference): a
    machine fires its rows itself, ``engine.events[trigger].trigger(model)``, which is what
    the bound triggers do. So the engine holds no reference to any connection, nothing has to
    leave it on FATAL or STOPPED, and starting a connection costs the same at the 10,000th.

    The engine is built with ``queued=False`` and is never given a queue to hold: in
    transitions 0.9.3 a queue is machine-wide (``queued="model"`` is not supported there), so
    one connection's queued ``assess`` could run inside another's trigger, or on another
    thread. Each machine keeps its own queue instead (:meth:`ConnectionMachine.handle`), which
    gives the same order a queued machine gives: the queued trigger runs after the one that
    queued it has finished, before :meth:`~ConnectionMachine.handle` returns.
    """
    return Machine(
        model=None,
        states=STATES,
        transitions=build_rows() if rows is None else rows,
        initial=S.CONNECTING,
        auto_transitions=False,
        send_event=True,
        queued=False,
        after_state_change="announce",
    )


_SHARED: Machine | None = None


def shared_engine() -> Machine:
    """The process's one engine, built on first use."""
    global _SHARED
    if _SHARED is None:
        _SHARED = build_engine()
    return _SHARED


@dataclass(frozen=True, slots=True)
class Fatal:
    """Why the machine gave up."""

    reason: str
    close_code: int | None
    retryable: bool


_INBOUND = (
    ev.HelloReceived,
    ev.ReadyReceived,
    ev.ResumedReceived,
    ev.HeartbeatAcked,
    ev.HeartbeatRequested,
    ev.ReconnectRequested,
    ev.InvalidSessionReceived,
    ev.FrameRejected,
)

#: Events only an opened socket can produce.
_FROM_SOCKET = (*_INBOUND, ev.SocketClosed, ev.HeartbeatSent, ev.HeartbeatSendFailed)

#: Expected ends (the server asked for them) are logged at INFO, the others at WARNING.
_EXPECTED_DELAYS = (Delay.NOW, Delay.ROTATION)

_NEVER = float("-inf")
_WRITE_CHECKPOINT = cmd.WriteCheckpoint()  # no fields: one instance serves every write
_REQUEST_PERMIT = cmd.RequestIdentifyPermit()
#: Timers that run while no attempt is open (between attempts).
_BETWEEN_ATTEMPTS = (Timer.BACKOFF, Timer.PERMIT)

#: Monotonic clocks are floats: a socket opened at 12345.678 and ended 5.00 s later may
#: subtract to 4.9999999999. This much grace keeps "5.00 s is not quick" true.
QUICK_GRACE_S = 5e-7
#: A heartbeat or ACK-deadline timer this late means our own loop was stalled (rule 21).
STALL_GRACE_S = 0.1
#: After a stall, judge again this fraction of the heartbeat interval later (once per beat).
STALL_RECHECK_RATIO = 0.1
#: Details the driver reports (a send error, a rejected frame) are logged shortened to this.
DETAIL_CHARS = 200
#: A raw Hello interval that was replaced is logged shortened to this (it may be anything).
RAW_VALUE_CHARS = 40
#: The snapshot lists this many of the last seqs skipped as poison frames (rule 19).
SKIPPED_KEPT = 20


def _check_restored(restored: object) -> Resumable | None:
    if restored is None:
        return None
    if (
        not isinstance(restored, Resumable)
        or not isinstance(restored.session_id, str)
        or not restored.session_id
        or not (
            restored.last_seq is None or (type(restored.last_seq) is int and restored.last_seq >= 0)
        )
    ):
        raise ConfigError(
            "restored", f"must be a Resumable(session_id, last_seq), got {restored!r}"
        )
    return restored


class ConnectionMachine:
    """The sans-I/O connection machine. Feed it events with :meth:`handle`; do what it returns.

    The caller's obligations: stamp every event with a monotonic time; call :meth:`handle`
    from one thread, one event at a time; carry out every returned command in order; report
    the outcome of OpenSocket and SendHeartbeat as events, and report DispatchHandled for
    every DeliverDispatch once the host is done with it. ``rng`` decides jitter (inject a
    seeded one in tests); secrets never enter the machine. ``restored`` is a session an
    earlier process saved (:func:`qqconn.checkpoint.judge_resume`): the first attempt
    Resumes it. It can only be given here: a running machine never adopts a session it was
    not told by the server.
    """

    # Set by the engine (transitions) on the model.
    state: State
    #: The engine this machine's rows run on: the process's shared one unless a test gave one.
    _machine: Machine

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        rng: random.Random | None = None,
        logger: Any = None,
        restored: Resumable | None = None,
        engine: Machine | None = None,
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        self._rng = rng if rng is not None else random.Random()
        self._log = QuietLogger(logger) if logger is not None else get_logger("qqconn")
        restored = _check_restored(restored)
        # The session, and the last s received on it (what Resume and heartbeats carry).
        self._session_id: str | None = restored.session_id if restored else None
        self._last_seq: int | None = restored.last_seq if restored else None
        # The resume checkpoint: the session and the last s the host finished with.
        self._handled_session: str | None = self._session_id
        self._handled_seq: int | None = self._last_seq
        self._checkpoint_at = _NEVER
        self._checkpoint_interval_s = self.policy.checkpoint_interval_s
        self._progress_interval_s = self.policy.progress_log_interval_s
        # The counters of docs/behaviour.md.
        self.quick_drops = 0
        self.failed_attempts = 0
        self._counted: tuple[Ending | None, bool, bool] = (None, False, False)
        self.resume_failures = 0
        self.auth_failures = 0
        self.identify_refusals = 0
        # Identify permits (rule 17): deferrals in a row, and the last one's wait and reason.
        self.permit_deferrals = 0
        self.identify_wait: dict[str, Any] | None = None
        # The current attempt (one socket each).
        self.attempt = 0
        self.attempt_open = False
        self.opened_at: float | None = None
        self.reached_session = False
        self.sent_resume = False
        self.refresh_token = False
        # Heartbeats on the current socket.
        self.heartbeat_interval_s: float | None = None
        self.awaiting_ack = False
        self.beat_sent_at: float | None = None
        self.acks = 0
        self.last_ack_latency_s: float | None = None
        self.send_failures = 0
        self.last_frame_at: float | None = None
        self.stall_excused = False  # a stalled loop excused since the last heartbeat
        # Rule 19 (poison frames): where the last oversized ending happened (session, last s
        # received), the point the last skip left, an s to fold into the checkpoint once the
        # host finished the one before it, and what was given up so far.
        self._oversized_at: tuple[str, int | None] | None = None
        self._skipped_at: tuple[str, int] | None = None
        self._skip_pending = -1
        self.skipped_seqs: tuple[int, ...] = ()
        self.sessions_given_up = 0
        # Where the current attempt is (ConnectProgressed, then the socket's own steps), and
        # the URL that stage asked: a deadline that passes names them.
        self.connect_stage: str | None = None
        self.connect_url: str | None = None
        # When qqconn.retrying was last logged (at most once per progress_log_interval_s).
        self._progress_at = _NEVER
        # Bookkeeping for the next wait and the end.
        self.last_ending: Ending | None = None
        self.fatal: Fatal | None = None
        self.next_delay_s: float | None = None
        self.now = 0.0
        self._out: list[cmd.Command] = []
        self._queue: list[str] = []  # triggers queued by a callback (this machine's only)
        self.state = S.CONNECTING
        self._machine = engine if engine is not None else shared_engine()

    # -- the one entry point ---------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Feed one event; return the commands to carry out, in order.

        Raises :class:`LocalProtocolError` (state unchanged) for host misuse, such as starting
        twice. Events of an attempt that is not the current open one are dropped.
        """
        if type(event) is ev.DispatchReceived:
            command: cmd.Command | None = self.handle_dispatch(
                event.attempt, event.at, event.dispatch
            )
            return [] if command is None else [command]
        if type(event) is ev.DispatchHandled:
            command = self.handle_dispatch_handled(event.at, event.session_id, event.seq)
            return [] if command is None else [command]
        self.now = event.at
        if not self._is_current(event):
            self._log.debug("qqconn.stale_event", kind=type(event).__name__, state=self.state.name)
            return []
        if type(event) is ev.ConnectProgressed:  # a fact for the record: no row, no command
            self.connect_stage, self.connect_url = event.stage, event.url
            return []
        if isinstance(event, _INBOUND):
            self.last_frame_at = event.at
        trigger, kwargs = self._route(event)
        self._out = []
        events = self._machine.events
        try:
            events[trigger].trigger(self, **kwargs)
            queue = self._queue
            while queue:
                events[queue.pop(0)].trigger(self)
        finally:
            self._queue.clear()
        out, self._out = self._out, []
        return out

    def _is_current(self, event: ev.Event) -> bool:
        attempt = getattr(event, "attempt", None)
        if attempt is None:
            return True  # Started, StopRequested
        if attempt != self.attempt:
            return False
        if isinstance(event, ev.TimerFired) and event.timer in _BETWEEN_ATTEMPTS:
            return True
        if isinstance(event, _FROM_SOCKET) and self.opened_at is None:
            return False  # off contract: no socket of this attempt has opened
        return self.attempt_open

    def _route(self, event: ev.Event) -> tuple[str, dict[str, Any]]:
        """Name the trigger an event fires. An end the driver reports is classified here, by
        :func:`qqconn.endings.classify`; the table decides what follows."""
        match event:
            case ev.Started():
                return "start", {}
            case ev.StopRequested():
                return "stop", {}
            case ev.IdentifyPermitted():
                return "identify_permitted", {}
            case ev.IdentifyPermitDeferred(wait_s=wait_s, reason=reason):
                return "permit_deferred", {"wait_s": wait_s, "reason": reason}
            case ev.SocketOpened():
                return "socket_opened", {}
            case ev.HelloReceived(interval_ms=raw):
                return "hello", {"interval_ms": raw}
            case ev.ReadyReceived(session_id=sid, seq=seq, dispatch=dispatch):
                return "ready", {"session_id": sid, "seq": seq, "dispatch": dispatch}
            case ev.ResumedReceived(seq=seq):
                return "resumed", {"seq": seq}
            case ev.HeartbeatAcked():
                return "heartbeat_acked", {}
            case ev.HeartbeatRequested():
                return "heartbeat_requested", {}
            case ev.HeartbeatSent():
                return "heartbeat_sent", {}
            case ev.HeartbeatSendFailed(detail=detail):
                return "heartbeat_failed", {"detail": detail}
            case ev.ReconnectRequested():
                return "reconnect_requested", {}
            case ev.FrameRejected(detail=detail):
                return "frame_rejected", {"detail": detail}
            case ev.SocketClosed(code=code, reason=reason, sent_code=sent):
                return "connection_ended", {"ending": classify(Closed(code, reason, sent))}
            case ev.ConnectFailed(stage=stage, detail=detail, refused=refused, url=url):
                ending = classify(ConnectFailure(stage, detail, refused, url))
                return "connection_ended", {"ending": ending}
            case ev.InvalidSessionReceived(resumable=resumable):
                # Rule 18: op 9 answering this socket's Identify (sent on Hello; no READY yet).
                refused = self.state is S.IDENTIFIED and not self.sent_resume
                ending = classify(Op9(resumable, after_identify=refused))
                return "connection_ended", {"ending": ending}
            case ev.TimerFired(timer=Timer.HEARTBEAT, late_s=late):
                return "heartbeat_due", {"late_s": late}
            case ev.TimerFired(timer=Timer.ACK_DEADLINE, late_s=late):
                return "ack_due", {"late_s": late}
            case ev.TimerFired(timer=Timer.BACKOFF):
                return "backoff_elapsed", {}
            case ev.TimerFired(timer=Timer.PERMIT):
                return "permit_due", {}
            case ev.TimerFired(timer=Timer.ATTEMPT_DEADLINE):
                return "attempt_deadline_passed", {}
        raise TypeError(f"not a qqconn event: {event!r}")  # pragma: no cover

    # -- the two rows outside the table: dispatches and what the host finished with -----------

    def handle_dispatch(
        self, attempt: int, at: float, dispatch: Dispatch
    ) -> cmd.DeliverDispatch | cmd.DropDispatch | None:
        """What :meth:`handle` does for ``DispatchReceived(attempt, at, dispatch)``, without
        allocating the event or a list: for a driver reading thousands of events a second.

        DeliverDispatch: hand it to the host (``dispatch.seq`` None: no usable ``s``; delivered,
        not tracked). DropDispatch: the host already had that ``s``. None: the attempt is over.
        """
        self.now = at
        if attempt != self.attempt or not self.attempt_open or self.opened_at is None:
            return None
        self.last_frame_at = at
        seq = dispatch.seq
        if seq is not None:
            last = self._last_seq
            if last is not None and seq <= last:
                return cmd.DropDispatch(seq, last)
            self._last_seq = seq
        return cmd.DeliverDispatch(dispatch, self._session_id)

    def handle_dispatch_handled(
        self, at: float, session_id: str | None, seq: int | None
    ) -> cmd.WriteCheckpoint | None:
        """What :meth:`handle` does for ``DispatchHandled(at, session_id, seq)``.

        The report moves the resume checkpoint if ``session_id`` is the session the machine
        holds (a report for a forgotten session changes nothing). WriteCheckpoint: a new
        session was handled, or ``checkpoint_interval_s`` passed since the last write. In
        FATAL and STOPPED the checkpoint still moves (the driver writes it on its way out),
        but nothing is emitted.
        """
        self.now = at
        if session_id is None or session_id != self._session_id:
            return None
        if session_id == self._handled_session:
            last = self._handled_seq
            if seq is not None and (last is None or seq > last):
                # The s after it was skipped (rule 19): a restart must not ask for it again.
                self._handled_seq = seq + 1 if seq + 1 == self._skip_pending else seq
            if at - self._checkpoint_at < self._checkpoint_interval_s:
                return None  # the common case: one report among thousands a second
        else:  # the host finished with this session's READY: it becomes the checkpoint's
            self._handled_session, self._handled_seq = session_id, seq
        if self.state is S.FATAL or self.state is S.STOPPED:
            return None
        self._checkpoint_at = at
        return _WRITE_CHECKPOINT

    # -- guards ----------------------------------------------------------------------------

    def not_started(self, _: Any) -> bool:
        """Has the machine never been started?"""
        return self.attempt == 0

    def needs_permit(self, _: Any) -> bool:
        """Will the next attempt Identify (no session held), so that it needs a permit?"""
        return self._session_id is None

    def identify_refusals_exhausted(self, event: Any) -> bool:
        """Is this the max_identify_refusals-th Identify in a row answered with op 9?"""
        ending: Ending = event.kwargs["ending"]
        return (
            ending.kind is EndingKind.IDENTIFY_REFUSED
            and self.identify_refusals + 1 >= self.policy.max_identify_refusals
        )

    def awaits_resumed(self, _: Any) -> bool:
        """Did this attempt send Resume, so that RESUMED answers it?"""
        return self.sent_resume

    def ack_overdue(self, _: Any) -> bool:
        """Was the last heartbeat never acknowledged?"""
        return self.awaiting_ack

    def frames_stale(self, _: Any) -> bool:
        """Has no frame arrived for stale_after_intervals heartbeat intervals?"""
        assert self.heartbeat_interval_s is not None and self.last_frame_at is not None
        silent = self.now - self.last_frame_at
        return silent >= self.policy.stale_after_intervals * self.heartbeat_interval_s

    def loop_stalled(self, event: Any) -> bool:
        """Did this timer run more than STALL_GRACE_S late (our own loop was stalled, so an
        acknowledgement or frame may be waiting unread), with no stall excused yet since the
        last heartbeat? (docs/behaviour.md rule 21)"""
        return event.kwargs["late_s"] > STALL_GRACE_S and not self.stall_excused

    def send_failures_exhausted(self, _: Any) -> bool:
        """Is this the max_heartbeat_send_failures-th failed heartbeat send in a row?"""
        return self.send_failures + 1 >= self.policy.max_heartbeat_send_failures

    def ending_is_fatal(self, event: Any) -> bool:
        """Does this ending go straight to FATAL (a fatal code, or credentials refused again
        before READY/RESUMED after a token refresh)?"""
        ending: Ending = event.kwargs["ending"]
        return ending.fatal or (ending.auth_failure and self.auth_failures >= 1)

    def frame_came_back(self, event: Any) -> bool:
        """Did an oversized frame end the connection again at the same point of the stream
        (same session, same last s) as the previous oversized ending?"""
        ending: Ending = event.kwargs["ending"]
        return ending.kind is EndingKind.POISON_FRAME_SKIPPED

    def frame_came_back_after_skip(self, event: Any) -> bool:
        """Did it come back even after the s at that point was skipped?"""
        ending: Ending = event.kwargs["ending"]
        return ending.kind is EndingKind.POISON_FRAME_SESSION_LOST

    def is_quick_drop(self, event: Any) -> bool:
        """Does this ending count as quick, its socket having opened less than
        quick_disconnect_threshold_s ago?"""
        ending: Ending = event.kwargs["ending"]
        if not ending.counts_as_quick or self.opened_at is None:
            return False
        return self._lived_less_than_threshold()

    def _lived_less_than_threshold(self) -> bool:
        assert self.opened_at is not None
        lived = self.now - self.opened_at
        return lived + QUICK_GRACE_S < self.policy.quick_disconnect_threshold_s

    def quick_drops_exhausted(self, _: Any) -> bool:
        """Have max_quick_disconnects quick drops happened in a row?"""
        return self.quick_drops >= self.policy.max_quick_disconnects

    def attempts_exhausted(self, _: Any) -> bool:
        """Have max_reconnect_attempts attempts failed in a row?"""
        return self.failed_attempts >= self.policy.max_reconnect_attempts

    # -- observing what ends a connection (run before a row's guards) ----------------------------

    def _observe(self, event: Any, observation: Observation) -> None:
        event.kwargs["ending"] = classify(observation)

    def observe_zombie(self, event: Any) -> None:
        self._observe(event, Zombie())

    def observe_stale(self, event: Any) -> None:
        assert self.heartbeat_interval_s is not None
        self._observe(event, Stale(self.policy.stale_after_intervals * self.heartbeat_interval_s))

    def observe_send_failures(self, event: Any) -> None:
        self._observe(event, SendFailures(self.send_failures + 1))

    def observe_deadline(self, event: Any) -> None:
        timeout = self.policy.connect_timeout_s
        before = self.opened_at is None
        stage, url = self.connect_stage, self.connect_url
        self._observe(event, DeadlinePassed(timeout, before_socket=before, stage=stage, url=url))

    def observe_poison(self, event: Any) -> None:
        # An oversized frame at the point of the previous one is a PoisonFrame; anything else
        # stays what the driver reported (so this may run for both rows, in order).
        ending: Ending = event.kwargs["ending"]
        sid = self._session_id
        if ending.kind is not EndingKind.FRAME_TOO_LARGE or sid is None:
            return
        point = (sid, self._last_seq)
        if point != self._oversized_at:
            return
        last = self._last_seq if self._last_seq is not None else 0
        if point == self._skipped_at:
            self._observe(event, PoisonFrame(last, skipped_before=True))
        else:
            self._observe(event, PoisonFrame(last + 1, skipped_before=False))

    def observe_op7(self, event: Any) -> None:
        # Frames only arrive on an opened socket, so opened_at is set here.
        young = self._lived_less_than_threshold()
        self._observe(event, Op7(reached_session=self.reached_session, young=young))

    # -- actions: identify permits (rule 17) ---------------------------------------------------

    def ask_permit(self, _: Any) -> None:
        self._out.append(_REQUEST_PERMIT)

    def wait_for_permit(self, event: Any) -> None:
        wait_s: float | None = event.kwargs["wait_s"]
        reason = str(event.kwargs["reason"])[:DETAIL_CHARS]
        self.permit_deferrals += 1
        if wait_s is None:  # the limiter could not tell: back off, spaced by the ladder
            wait_s = next_delay(None, self.permit_deferrals, self.policy, self._rng)
        wait_s = max(0.0, float(wait_s))
        self.identify_wait = {"wait_s": round(wait_s, 3), "reason": reason}
        self._log.info(
            "qqconn.identify_permit_deferred",
            wait_s=round(wait_s, 3),
            reason=reason,
            deferrals=self.permit_deferrals,
        )
        self._out.append(cmd.StartTimer(Timer.PERMIT, wait_s, self.attempt))
        self._out.append(_WRITE_CHECKPOINT)

    # -- actions: attempts -----------------------------------------------------------------

    def begin_attempt(self, _: Any) -> None:
        self.permit_deferrals = 0
        self.identify_wait = None
        self.attempt += 1
        self.attempt_open = True
        self.opened_at = None
        self.reached_session = False
        self.sent_resume = False
        self.heartbeat_interval_s = None
        self.awaiting_ack = False
        self.stall_excused = False
        self.send_failures = 0
        self.acks = 0
        self.connect_stage = self.connect_url = None
        refresh, self.refresh_token = self.refresh_token, False
        self._out.append(cmd.OpenSocket(self.attempt, refresh_token=refresh))
        self._out.append(
            cmd.StartTimer(Timer.ATTEMPT_DEADLINE, self.policy.connect_timeout_s, self.attempt)
        )

    def note_socket_opened(self, _: Any) -> None:
        self.opened_at = self.now
        self.last_frame_at = self.now
        self.connect_stage = "hello"

    def greet(self, event: Any) -> None:
        raw = event.kwargs["interval_ms"]
        interval, defaulted = self.policy.heartbeat_interval(raw)
        if defaulted:
            self._log.warning(
                "qqconn.hello_interval_replaced",
                received=repr(raw)[:RAW_VALUE_CHARS],
                used_s=interval,
            )
        self.heartbeat_interval_s = interval
        self._out.append(cmd.StartTimer(Timer.HEARTBEAT, interval, self.attempt))
        self.connect_stage = "resume" if self._session_id is not None else "identify"
        if self._session_id is not None:
            self.sent_resume = True
            self._out.append(cmd.SendResume(self.attempt, self._session_id, self._last_seq))
        else:
            self._out.append(cmd.SendIdentify(self.attempt))

    def adopt_session(self, event: Any) -> None:
        self._session_id = event.kwargs["session_id"]
        self._last_seq = event.kwargs["seq"]
        self._session_reached()
        # READY is an event too (adapters read the bot's user from it); only an adopted one
        # reaches the host. The checkpoint names the new session once the host reports it
        # handled READY (DispatchHandled), never before.
        self._out.append(cmd.DeliverDispatch(event.kwargs["dispatch"], self._session_id))

    def keep_session(self, event: Any) -> None:
        seq = event.kwargs["seq"]
        if seq is not None and (self._last_seq is None or seq > self._last_seq):
            self._last_seq = seq
        self._session_reached()

    def _session_reached(self) -> None:
        self.reached_session = True
        self.failed_attempts = 0
        self.resume_failures = 0
        self.auth_failures = 0
        self.identify_refusals = 0
        self._out.append(cmd.CancelTimer(Timer.ATTEMPT_DEADLINE))

    # -- actions: heartbeats ---------------------------------------------------------------

    def beat(self, _: Any) -> None:
        assert self.heartbeat_interval_s is not None
        self._out.append(cmd.StartTimer(Timer.HEARTBEAT, self.heartbeat_interval_s, self.attempt))
        self.beat_now(_)

    def beat_now(self, _: Any) -> None:
        assert self.heartbeat_interval_s is not None
        self.awaiting_ack = True
        self.stall_excused = False
        self.beat_sent_at = self.now
        self._out.append(cmd.SendHeartbeat(self.attempt, self._last_seq))
        deadline = self.heartbeat_interval_s * self.policy.heartbeat_ack_timeout_ratio
        self._out.append(cmd.StartTimer(Timer.ACK_DEADLINE, deadline, self.attempt))

    def recheck_after_stall(self, event: Any) -> None:
        # The loop was stalled: what the peer sent meanwhile may sit unread behind this timer.
        # Judge again shortly, in loop time, once per heartbeat: a dead peer is still found.
        # Both heartbeat timers are re-armed: the other one is as late (the same stall), and
        # restarting it cancels its run that may already be waiting behind this one.
        assert self.heartbeat_interval_s is not None
        self.stall_excused = True
        delay = self.heartbeat_interval_s * STALL_RECHECK_RATIO
        self._out.append(cmd.StartTimer(Timer.HEARTBEAT, delay, self.attempt))
        if self.awaiting_ack:
            self._out.append(cmd.StartTimer(Timer.ACK_DEADLINE, delay, self.attempt))
        self._log.warning(
            "qqconn.loop_stalled",
            trigger=event.event.name,
            late_ms=round(event.kwargs["late_s"] * 1000),
        )

    def note_ack(self, _: Any) -> None:
        if not self.awaiting_ack:
            self._log.debug("qqconn.unsolicited_ack")
            return
        self.awaiting_ack = False
        self.acks += 1
        assert self.beat_sent_at is not None
        self.last_ack_latency_s = self.now - self.beat_sent_at
        self._out.append(cmd.CancelTimer(Timer.ACK_DEADLINE))
        # An acknowledged heartbeat keeps the state file's updated_at fresh on a quiet
        # connection, at most once per checkpoint_interval_s.
        if self.now - self._checkpoint_at >= self._checkpoint_interval_s:
            self._checkpoint_at = self.now
            self._out.append(_WRITE_CHECKPOINT)
        if self.acks % self.policy.heartbeat_log_every == 0:
            self._log.info(
                "qqconn.heartbeat",
                acked=self.acks,
                last_seq=self._last_seq,
                latency_ms=round(self.last_ack_latency_s * 1000, 1),
                state=self.state.name,
            )

    def note_beat_sent(self, _: Any) -> None:
        self.send_failures = 0

    def note_beat_failed(self, event: Any) -> None:
        # A heartbeat that never left cannot be acknowledged: the send-failure count, not the
        # zombie rule, judges this socket.
        self.awaiting_ack = False
        self._out.append(cmd.CancelTimer(Timer.ACK_DEADLINE))
        self.send_failures += 1
        self._log.warning(
            "qqconn.heartbeat_send_failed",
            failures=self.send_failures,
            detail=str(event.kwargs.get("detail", ""))[:DETAIL_CHARS],
        )

    def note_rejected(self, event: Any) -> None:
        # The driver logged the frame (shortened); the machine records that it was ignored.
        detail = str(event.kwargs.get("detail", ""))[:DETAIL_CHARS]
        self._log.debug("qqconn.frame_ignored", detail=detail)

    # -- actions: a connection is over ------------------------------------------------------

    def _close_current(self, code: int, reason: str) -> None:
        if self.attempt_open:
            self.attempt_open = False
            self._out.append(cmd.CancelTimer(Timer.ATTEMPT_DEADLINE))
            self._out.append(cmd.CloseSocket(self.attempt, code, reason[:REASON_CHARS]))

    def _forget_session(self, reason: str) -> None:
        # last_seq stays: READY sets it for the next session (heartbeats until then carry it).
        self._session_id = None
        self._handled_session = None
        self._handled_seq = None
        self.resume_failures = 0
        self._oversized_at = self._skipped_at = None
        self._skip_pending = -1
        self._log.info("qqconn.session_forgotten", reason=reason)

    def count_ending(self, event: Any) -> None:
        """Apply docs/behaviour.md's counter rules to a connection that ended (not fatally)."""
        ending: Ending = event.kwargs["ending"]
        self.last_ending = ending
        session_before = self._session_id
        quick = failed = False
        if ending.counts_as_quick and self.opened_at is not None:
            if self._lived_less_than_threshold():
                self.quick_drops += 1
                quick = True
            else:
                self.quick_drops = 0
        if not self.reached_session or ending.always_consumes_attempt:
            self.failed_attempts += 1
            failed = True
        self._counted = (ending, quick, failed)  # what the announcement of this ending says
        if self.sent_resume and not self.reached_session:
            self.resume_failures += 1
        if ending.kind is EndingKind.IDENTIFY_REFUSED:
            self.identify_refusals += 1
        if ending.auth_failure:
            self.auth_failures += 1
            self.refresh_token = True
        forget = ending.session is Session.FORGET or (
            self.resume_failures >= self.policy.max_resume_failures
        )
        if forget and self._session_id is not None:
            self._forget_session(ending.reason)
        self._close_current(RECONNECT_CLOSE_CODE, ending.reason)
        if ending.kind is EndingKind.FRAME_TOO_LARGE:
            self._log.warning("qqconn.frame_too_large", max_bytes=self.policy.max_frame_bytes)
            if self._session_id is not None:
                self._oversized_at = (self._session_id, self._last_seq)
        elif ending.kind is EndingKind.POISON_FRAME_SESSION_LOST:
            self.sessions_given_up += 1
            self._log.warning(
                "qqconn.poison_frame_skipped",
                lost="session",
                seq=self._last_seq,
                session_id=session_before,
                max_bytes=self.policy.max_frame_bytes,
            )
        (self._log.info if ending.delay in _EXPECTED_DELAYS else self._log.warning)(
            "qqconn.connection_ended",
            kind=ending.kind.value,
            reason=ending.reason,
            close_code=ending.close_code,
            lived_s=None if self.opened_at is None else round(self.now - self.opened_at, 3),
            quick_drops=self.quick_drops,
            failed_attempts=self.failed_attempts,
        )

    def skip_poison_frame(self, event: Any) -> None:
        """Rule 19: the frame after the last s came back oversized after a Resume. Give up
        that one s: the next Resume (and heartbeat) carries it, the checkpoint moves past it
        once the host finished the one before, and the host is told."""
        self.count_ending(event)
        ending: Ending = event.kwargs["ending"]
        seq = ending.skipped_seq
        sid = self._session_id
        assert seq is not None
        if sid is None:  # the failed-resume rule gave the session up already
            return
        self._last_seq = seq
        self._oversized_at = self._skipped_at = (sid, seq)
        self.skipped_seqs = (*self.skipped_seqs, seq)[-SKIPPED_KEPT:]
        self._log.warning(
            "qqconn.poison_frame_skipped",
            lost="event",
            seq=seq,
            session_id=sid,
            max_bytes=self.policy.max_frame_bytes,
        )
        if self._handled_session == sid and self._handled_seq == seq - 1:
            self._handled_seq = seq
            self._out.append(_WRITE_CHECKPOINT)
        else:
            self._skip_pending = seq

    # -- actions: QUICK_DROPPED and BACKOFF ---------------------------------------------------

    def queue_assess(self, _: Any) -> None:
        self._queue.append("assess")

    def wait_before_attempt(self, _: Any) -> None:
        delay = next_delay(self.last_ending, self.failed_attempts, self.policy, self._rng)
        self.next_delay_s = delay
        self._out.append(cmd.StartTimer(Timer.BACKOFF, delay, self.attempt))
        # A run of failed attempts says how it goes: the first wait, then at most one line
        # per progress_log_interval_s (docs/behaviour.md rule 8).
        if self.failed_attempts and self.now - self._progress_at >= self._progress_interval_s:
            self._progress_at = self.now
            last = self.last_ending
            self._log.info(
                "qqconn.retrying",
                failed_attempts=self.failed_attempts,
                max_reconnect_attempts=self.policy.max_reconnect_attempts,
                next_attempt=self.attempt + 1,
                next_try_in_s=round(delay, 1),
                last_reason=last.reason if last is not None else None,
            )

    # -- actions: the terminal states --------------------------------------------------------

    def record_fatal_ending(self, event: Any) -> None:
        ending: Ending = event.kwargs["ending"]
        self.last_ending = ending
        if ending.fatal:
            self.fatal = Fatal(ending.reason, ending.close_code, retryable=False)
        else:
            self.fatal = Fatal(
                f"authentication failed again after a token refresh ({ending.reason})",
                ending.close_code,
                retryable=False,
            )

    def record_refusals_fatal(self, event: Any) -> None:
        ending: Ending = event.kwargs["ending"]
        self.last_ending = ending
        self.identify_refusals += 1
        self.fatal = Fatal(
            f"{self.identify_refusals} Identifies in a row were refused with op 9: the gateway "
            "will not start a session for this bot as configured. Likely causes: intents the "
            "bot is not granted, this host's IP not on the bot's IP allow-list, or a "
            "sandbox-only bot connecting to the production gateway (or the reverse)",
            ending.close_code,
            retryable=False,
        )

    def record_quick_fatal(self, _: Any) -> None:
        last = self.last_ending
        self.fatal = Fatal(
            f"{self.quick_drops} connections in a row ended within "
            f"{self.policy.quick_disconnect_threshold_s:g} s of opening"
            + (f" (last: {last.reason})" if last else ""),
            last.close_code if last else None,
            retryable=True,
        )

    def record_attempts_fatal(self, _: Any) -> None:
        last = self.last_ending
        self.fatal = Fatal(
            f"{self.failed_attempts} connection attempts in a row failed"
            + (f" (last: {last.reason})" if last else ""),
            last.close_code if last else None,
            retryable=True,
        )

    def give_up(self, _: Any) -> None:
        assert self.fatal is not None
        self._close_current(1000, "qqconn: giving up")
        self._cancel_all_timers()
        f = self.fatal
        self._log.error(
            "qqconn.fatal", reason=f.reason, close_code=f.close_code, retryable=f.retryable
        )
        self._out.append(cmd.NotifyFatal(f.reason, f.close_code, f.retryable))
        self._out.append(cmd.Finish())

    def halt(self, _: Any) -> None:
        # Not 1000/1001: those end the session on gateways of this family, and a process that
        # stops is usually restarted, resuming from its state file (docs/behaviour.md rule 14).
        self._close_current(RECONNECT_CLOSE_CODE, "qqconn: stopping")
        self._cancel_all_timers()
        self._out.append(cmd.Finish())

    def _cancel_all_timers(self) -> None:
        self._out.extend(cmd.CancelTimer(t) for t in Timer)

    # -- actions: logging and refusals ---------------------------------------------------------

    def announce(self, event: Any) -> None:
        src = event.transition.source
        if event.transition.dest is None:
            return
        previous = src.name if isinstance(src, State) else str(src)  # transitions keeps names
        trigger = event.event.name
        # The end that caused the change: the row's own, or (assess) the one assessed.
        ending: Ending | None = event.kwargs.get("ending")
        if ending is None and trigger == "assess":
            ending = self.last_ending
        self._log.info(
            "qqconn.transition",
            **{"from": previous, "to": self.state.name, "trigger": trigger},
            reason=ending.reason if ending is not None else None,
            quick_drops=self.quick_drops,
            failed_attempts=self.failed_attempts,
            attempt=self.attempt,
        )
        self._checkpoint_at = self.now  # an announcement rewrites the state file
        counted = self._counted
        quick, failed = (
            counted[1:] if ending is not None and counted[0] is ending else (False, False)
        )
        self._out.append(
            cmd.AnnounceState(self.state.value, previous, trigger, ending, quick, failed)
        )

    def ignore(self, event: Any) -> None:
        self._log.debug("qqconn.ignored", trigger=event.event.name, state=self.state.name)

    def ignore_unexpected(self, event: Any) -> None:
        self._log.warning(
            "qqconn.unexpected_frame", trigger=event.event.name, state=self.state.name
        )

    def refuse_start(self, event: Any) -> None:
        raise LocalProtocolError(
            "the machine can be started once, before anything else",
            state=self.state.name,
            event="Started",
        )

    # -- reading -------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The session the machine holds (Resume uses it); None: Identify next. Read-only:
        only the server (READY) or the constructor (``restored``) gives a session."""
        return self._session_id

    @property
    def last_seq(self) -> int | None:
        """The last ``s`` received on the session (heartbeats and Resume carry it)."""
        return self._last_seq

    @property
    def checkpoint(self) -> Resumable | None:
        """The resume checkpoint: the session, and the last ``s`` the host finished with
        (DispatchHandled). None when no session is held, or the host has not yet finished
        with the READY of the one held."""
        if self._handled_session is None:
            return None
        return Resumable(self._handled_session, self._handled_seq)

    @property
    def is_terminal(self) -> bool:
        """Is the machine in FATAL or STOPPED?"""
        return self.state in (S.FATAL, S.STOPPED)

    def snapshot_fields(self) -> dict[str, Any]:
        """The machine's part of a state-file document (:mod:`qqconn.checkpoint`): JSON-able,
        no secrets. ``session_id``/``last_seq`` are the resume checkpoint (both None while no
        handled session is held, so ``alive`` never names a forgotten session);
        ``received_seq`` is the last ``s`` received."""
        fatal = self.fatal
        ending = self.last_ending
        return {
            "state": self.state.value,
            "session_id": self._handled_session,
            "last_seq": self._handled_seq,
            "received_seq": self._last_seq,
            "reconnect_attempts": self.failed_attempts,
            "quick_disconnects": self.quick_drops,
            "resume_failures": self.resume_failures,
            "identify_refusals": self.identify_refusals,
            "identify_wait": self.identify_wait,
            "attempt": self.attempt,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "last_ack_latency_s": self.last_ack_latency_s,
            "skipped": {"seqs": list(self.skipped_seqs), "sessions": self.sessions_given_up},
            "fatal": None
            if fatal is None
            else {
                "reason": fatal.reason,
                "close_code": fatal.close_code,
                "retryable": fatal.retryable,
            },
            "last_ending": None
            if ending is None
            else {
                "kind": ending.kind.value,
                "reason": ending.reason,
                "close_code": ending.close_code,
            },
        }
