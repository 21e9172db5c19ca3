"""The actions that keep a connection going: permits, attempts, heartbeats, waits, logging.

Actions only record facts and emit commands (into ``_out``); what a connection's end does is
in :mod:`qqconn.machine.outcomes`.
"""

from __future__ import annotations

from typing import Any

from qqconn import commands as cmd
from qqconn.endings import Ending, next_delay
from qqconn.errors import LocalProtocolError
from qqconn.events import Timer
from qqconn.machine.constants import (
    _REQUEST_PERMIT,
    _WRITE_CHECKPOINT,
    DETAIL_CHARS,
    RAW_VALUE_CHARS,
    STALL_RECHECK_RATIO,
)
from qqconn.machine.fields import MachineFields
from qqconn.machine.table import State


class Actions(MachineFields):
    """What the rows do while a connection is starting, up, or waiting."""

    __slots__ = ()

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
