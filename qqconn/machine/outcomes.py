"""The outcomes: what the machine does when a connection is over, and in FATAL and STOPPED.

``count_ending`` applies docs/behaviour.md's counter rules to every non-fatal end; the
``record_*`` actions say why the machine gives up; ``give_up`` and ``halt`` run on entering
the terminal states.
"""

from __future__ import annotations

from typing import Any

from qqconn import commands as cmd
from qqconn.endings import REASON_CHARS, RECONNECT_CLOSE_CODE, Ending, EndingKind, Session
from qqconn.events import Timer
from qqconn.machine.constants import _EXPECTED_DELAYS, _WRITE_CHECKPOINT, SKIPPED_KEPT
from qqconn.machine.fields import Fatal, MachineFields


class Outcomes(MachineFields):
    """What the rows do when a connection ends, and when the machine stops or gives up."""

    __slots__ = ()

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
