"""The connection machine itself: the one door (:meth:`ConnectionMachine.handle`), the two
rows outside the table (dispatches and what the host finished with), and what can be read."""

from __future__ import annotations

import random
from typing import Any

from transitions import Machine

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.checkpoint import Resumable
from qqconn.endings import Closed, ConnectFailure, Op9, classify
from qqconn.events import Timer
from qqconn.machine.actions import Actions
from qqconn.machine.constants import _BETWEEN_ATTEMPTS, _FROM_SOCKET, _INBOUND, _WRITE_CHECKPOINT
from qqconn.machine.guards import Guards
from qqconn.machine.outcomes import Outcomes
from qqconn.machine.table import S, shared_engine
from qqconn.policy import Policy
from qqconn.protocol import Dispatch


class ConnectionMachine(Guards, Actions, Outcomes):
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

    __slots__ = ()

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        rng: random.Random | None = None,
        logger: Any = None,
        restored: Resumable | None = None,
        engine: Machine | None = None,
    ) -> None:
        super().__init__(policy, rng, logger, restored)
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
