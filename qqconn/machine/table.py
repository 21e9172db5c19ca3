"""The table: the machine's states, triggers and rows, the one source of the statecharts.

Rows of one (source, trigger) are tried in order; the first whose guards hold fires. Guards
(:mod:`qqconn.machine.guards`) are questions; actions (:mod:`qqconn.machine.actions`,
:mod:`qqconn.machine.outcomes`) only record facts and emit commands. :func:`build_rows` adds
an explicit ``ignore`` row for every pair with no unguarded row; :func:`build_engine` builds
the ``transitions`` engine for it, and :func:`shared_engine` is the process's one engine.
"""

from __future__ import annotations

import enum
from typing import Any

from transitions import Machine


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
