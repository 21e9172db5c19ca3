"""Feeding the machine and carrying out its commands.

:class:`Feeder` is the one place the driver talks to the
:class:`~qqconn.machine.ConnectionMachine`: ``feed(event)`` hands it an observation (stamped by
whoever observed it) and carries out every command that comes back, in order. An event fed
while a command is being carried out waits its turn, so the machine never sees re-entrant
calls. Each command is done by the concern that owns it: an :class:`~.attempt.Attempt` (sockets,
sends), :class:`Timers` (loop timers), the :class:`~.host.HostLane` (callbacks), the manager
(state announcements, the state file, finishing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn._log import QuietLogger
from qqconn.driver.attempt import Attempt, RunContext
from qqconn.driver.host import HostLane
from qqconn.driver.permits import Granted
from qqconn.errors import FatalError
from qqconn.machine import ConnectionMachine
from qqconn.metrics import NO_METRICS, ConnectionObserver, ending_kind

__all__ = ["Feeder", "Timers", "observe_change"]


class Timers:
    """The machine's loop timers, one per name: starting a name replaces its running timer.

    Each timer belongs to an attempt; ``cancel_attempt`` cancels the ones of an attempt whose
    socket is closing, so none of them can fire into a newer socket.
    """

    def __init__(self, fired: Callable[[ev.Timer, int, float], None]) -> None:
        self._fired = fired
        self._handles: dict[ev.Timer, tuple[int, asyncio.TimerHandle]] = {}

    def pending(self) -> dict[ev.Timer, int]:
        """The running timers and the attempt each belongs to."""
        return {timer: owner for timer, (owner, _) in self._handles.items()}

    def start(self, timer: ev.Timer, delay_s: float, attempt: int) -> None:
        self.cancel(timer)
        handle = asyncio.get_running_loop().call_later(delay_s, self._fire, timer, attempt)
        self._handles[timer] = (attempt, handle)

    def cancel(self, timer: ev.Timer) -> None:
        entry = self._handles.pop(timer, None)
        if entry is not None:
            entry[1].cancel()

    def cancel_attempt(self, attempt: int) -> None:
        for timer, (owner, handle) in list(self._handles.items()):
            if owner == attempt:
                handle.cancel()
                del self._handles[timer]

    def cancel_all(self) -> None:
        for _, handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _fire(self, timer: ev.Timer, attempt: int) -> None:
        current = self._handles.get(timer)
        late = 0.0
        if current is not None and current[0] == attempt:
            del self._handles[timer]
            # How late the loop ran this timer: a fact in loop time (rule 21), judged by the machine.
            late = max(0.0, asyncio.get_running_loop().time() - current[1].when())
        self._fired(timer, attempt, late)


class Feeder:
    """Feeds events to the machine, one at a time, and carries out the commands it returns."""

    def __init__(
        self,
        machine: ConnectionMachine,
        *,
        clock: Callable[[], float],
        log: QuietLogger,
        host: HostLane,
        announce: Callable[[cmd.AnnounceState], None],
        checkpoint: Callable[[], None],
        finish: Callable[[], None],
        obs: ConnectionObserver = NO_METRICS,
    ) -> None:
        self.machine = machine
        #: The metrics hooks (:mod:`qqconn.metrics`); NO_METRICS does nothing.
        self.obs = obs
        self.clock = clock
        self.log = log
        self.host = host
        self._announce = announce
        self._checkpoint = checkpoint
        self._finish = finish
        self.timers = Timers(self._timer_fired)
        self.attempts: dict[int, Attempt] = {}
        self.dropped = 0
        self._run: RunContext | None = None
        self._feeding = False
        self._pending: list[ev.Event] = []

    def start(self, run: RunContext) -> None:
        """Attempts opened from now on belong to ``run``."""
        self._run = run

    def feed(self, event: ev.Event) -> None:
        """Hand ``event`` to the machine and carry out what it says."""
        if self._feeding:  # a command's effect fed an event: keep order, no re-entrancy
            self._pending.append(event)
            return
        self._feeding = True
        try:
            self._execute_all(self.machine.handle(event))
            while self._pending:
                self._execute_all(self.machine.handle(self._pending.pop(0)))
        finally:
            self._feeding = False

    def internal_error(self, attempt: int) -> None:
        """A bug in qqconn itself: log it and treat the connection as broken (it resumes)."""
        self.log.exception("qqconn.internal_error", attempt=attempt)
        self.feed(ev.SocketClosed(attempt, self.clock(), None, "internal error"))

    def forget(self, attempt: Attempt) -> None:
        """``attempt``'s task has ended and its socket is closed."""
        self.attempts.pop(attempt.number, None)

    def _execute_all(self, commands: list[cmd.Command]) -> None:
        for command in commands:
            self.execute(command)

    def execute(self, command: cmd.Command) -> None:
        """Carry out one command (the reader's fast path calls this with the machine's answer
        to a dispatch)."""
        match command:
            case cmd.RequestIdentifyPermit():
                assert self._run is not None
                self._run.tg.create_task(self._ask_permit(), name="qqconn-permit")
            case cmd.OpenSocket(attempt=n, refresh_token=refresh):
                assert self._run is not None
                opened = self.attempts[n] = Attempt(n, refresh, self._run, self)
                opened.start()
            case cmd.SendIdentify(attempt=n):
                if (att := self.attempts.get(n)) is not None:
                    att.send_identify()
            case cmd.SendResume(attempt=n, session_id=sid, seq=seq):
                if (att := self.attempts.get(n)) is not None:
                    att.send_resume(sid, seq)
            case cmd.SendHeartbeat(attempt=n, seq=seq):
                if (att := self.attempts.get(n)) is not None:
                    att.send_heartbeat(seq)
            case cmd.StartTimer(timer=timer, delay_s=delay, attempt=n):
                self.timers.start(timer, delay, n)
            case cmd.CancelTimer(timer=timer):
                self.timers.cancel(timer)
            case cmd.CloseSocket(attempt=n, code=code, reason=reason):
                self.timers.cancel_attempt(n)
                if (att := self.attempts.get(n)) is not None:
                    att.close(code, reason)
            case cmd.DeliverDispatch():
                self.host.deliver(command)
            case cmd.DropDispatch(seq=seq, last_seq=last_seq):
                self.dropped += 1
                self.obs.dispatch_replayed()
                self.log.debug("qqconn.dispatch_replayed", seq=seq, last_seq=last_seq)
            case cmd.WriteCheckpoint():
                self._checkpoint()
            case cmd.AnnounceState():
                self._announce(command)
            case cmd.NotifyFatal(reason=reason, close_code=code, retryable=retryable):
                self.obs.fatal(retryable)
                self.host.notify_fatal(FatalError(reason, close_code=code, retryable=retryable))
            case cmd.Finish():
                self._finish()

    async def _ask_permit(self) -> None:
        """Ask the limiter once and report its answer; a limiter that fails is "cannot tell"
        (the machine backs off and asks again: nothing is skipped)."""
        assert self._run is not None
        run = self._run
        try:
            async with asyncio.timeout(run.policy.connect_timeout_s):
                answer = await run.permits.request(run.shard[0])
        except Exception as exc:
            detail = f"identify limiter unavailable: {type(exc).__name__}: {exc}"
            self.log.warning("qqconn.identify_limiter_unavailable", error=detail[:200])
            self.feed(ev.IdentifyPermitDeferred(self.clock(), None, detail[:200]))
            return
        if isinstance(answer, Granted):
            self.feed(ev.IdentifyPermitted(self.clock()))
        else:
            self.feed(ev.IdentifyPermitDeferred(self.clock(), answer.wait_s, answer.reason))

    def _timer_fired(self, timer: ev.Timer, attempt: int, late_s: float = 0.0) -> None:
        try:
            self.feed(ev.TimerFired(timer, attempt, self.clock(), late_s))
        except Exception:  # a bug here ends this connection, never the host
            self.internal_error(attempt)


def observe_change(
    obs: ConnectionObserver, machine: ConnectionMachine, change: cmd.AnnounceState
) -> None:
    """The metrics hooks for a state change (NO_METRICS: nothing). An ``assess`` change
    carries the ending it assessed, already counted when that connection ended."""
    m = machine
    if change.ending is not None and change.trigger != "assess":
        obs.connection_ended(ending_kind(change.ending.kind), m.quick_drops, m.failed_attempts)
    obs.state_changed(change.state, quick_drops=m.quick_drops, failed_attempts=m.failed_attempts)
