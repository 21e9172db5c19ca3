"""The guards (questions a row asks) and the observations (what ended a connection).

Guards only read; an ``observe_*`` callback runs before a row's guards (a ``transitions``
*prepare*) and leaves the classified :class:`~qqconn.endings.Ending` in the event's
``ending`` for the guards and actions to read.
"""

from __future__ import annotations

from typing import Any

from qqconn.endings import (
    DeadlinePassed,
    Ending,
    EndingKind,
    Observation,
    Op7,
    PoisonFrame,
    SendFailures,
    Stale,
    Zombie,
    classify,
)
from qqconn.machine.constants import STALL_GRACE_S
from qqconn.machine.fields import MachineFields


class Guards(MachineFields):
    """The questions of the table's rows, and the observations run before them."""

    __slots__ = ()

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
