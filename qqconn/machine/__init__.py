"""The connection machine: every decision a QQ gateway connection makes, as one table.

Theory of operation
===================

Rule 1: everything that decides what a connection does lives in this package. The driver
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

from qqconn.endings import RECONNECT_CLOSE_CODE
from qqconn.machine.constants import (
    DETAIL_CHARS,
    QUICK_GRACE_S,
    RAW_VALUE_CHARS,
    SKIPPED_KEPT,
    STALL_GRACE_S,
    STALL_RECHECK_RATIO,
)
from qqconn.machine.fields import Fatal
from qqconn.machine.model import ConnectionMachine
from qqconn.machine.table import (
    LIVE,
    NOT_TERMINAL,
    SOCKET_UP,
    STATES,
    TRANSITIONS,
    TRIGGERS,
    State,
    build_engine,
    build_rows,
    shared_engine,
)

__all__ = [
    "DETAIL_CHARS",
    "LIVE",
    "NOT_TERMINAL",
    "QUICK_GRACE_S",
    "RAW_VALUE_CHARS",
    "RECONNECT_CLOSE_CODE",
    "SKIPPED_KEPT",
    "SOCKET_UP",
    "STALL_GRACE_S",
    "STALL_RECHECK_RATIO",
    "STATES",
    "TRANSITIONS",
    "TRIGGERS",
    "ConnectionMachine",
    "Fatal",
    "State",
    "build_engine",
    "build_rows",
    "shared_engine",
]
