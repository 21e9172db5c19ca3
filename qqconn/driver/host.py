"""The host lanes: the host's callbacks run here, off the socket's reader, each lane in order.

Two lanes, so a slow or raising callback never delays a heartbeat, and a slow ``on_dispatch``
never delays news about the connection:

* the **dispatch lane**: ``on_dispatch``, once per event, in ``s`` order, each finished before
  the next;
* the **control lane**: ``on_state_change``, every state change in order, each finished before
  the next. It never waits behind a dispatch: a change reaches the host as soon as the lane is
  free, even while ``on_dispatch`` is busy. Its place among the dispatches is stated, not
  implied: :attr:`StateChange.after_dispatches` dispatches had been handed to the dispatch lane
  before it (the last of them had ``s`` = :attr:`StateChange.after_seq`); a handler may still
  be working on some of them when the change arrives.

How a lane runs its callback (docs/behaviour.md rule 22):

* a **plain function** (or no callback) runs *inline*: the reader appends the item to the
  lane's deque and, if no run is scheduled, schedules one with ``loop.call_soon``. That run
  (a loop callback of its own, never inside the reader's frame) calls the callback for the
  waiting items in order, for at most :data:`SLICE_S` of loop time, then gives the loop back
  and schedules the rest: no task, no coroutine and no queue per event, and a backlog of slow
  plain callbacks lets the reader, timers and heartbeats run between slices;
* a **coroutine function** runs on a task of the lane's own that awaits each call in turn (and
  yields to the loop after :data:`SLICE_S` when the calls never suspend);
* a plain function that turns out to return an awaitable moves its lane to the task for good:
  that awaitable is awaited first, then the rest, in order.

``on_fatal`` runs on a task outside the manager's task group, so a host that calls ``stop()``
from inside it does not cancel itself; ``run()`` waits for it to finish before raising. A
callback's exception is logged, never raised.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qqconn import commands as cmd
from qqconn import protocol as proto
from qqconn._log import QuietLogger
from qqconn.endings import Ending
from qqconn.errors import FatalError
from qqconn.machine import State

__all__ = [
    "SLICE_S",
    "DispatchCallback",
    "FatalCallback",
    "HostLane",
    "StateCallback",
    "StateChange",
]

#: The longest a lane calls the host's callbacks back to back (loop time, seconds) before it
#: lets the loop run the reader, timers and heartbeats (a backlog is worked off in slices).
SLICE_S = 0.005

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StateChange:
    """What ``on_state_change`` receives: the new state, the previous one, and why.

    ``ending`` is the end of a connection that caused the change, if one did (its ``kind``,
    ``reason`` and ``close_code`` name it without parsing strings; :attr:`reason` and
    :attr:`close_code` repeat them). ``quick_drop`` / ``failed_attempt``: that ending counted as
    a quick drop / a failed attempt (docs/behaviour.md rules 2-4). ``after_dispatches`` /
    ``after_seq``: how many dispatches had been handed to ``on_dispatch``'s lane before this
    change, and the ``s`` of the last of them (None: none yet, or it had no ``s``).
    ``snapshot`` is :meth:`ConnectionManager.snapshot` at the change.
    """

    state: State
    previous: State
    trigger: str
    snapshot: dict[str, Any]
    ending: Ending | None = None
    quick_drop: bool = False
    failed_attempt: bool = False
    after_dispatches: int = 0
    after_seq: int | None = None

    @property
    def reason(self) -> str | None:
        """Why the connection ended (``ending.reason``), or None if no ending caused this."""
        return self.ending.reason if self.ending is not None else None

    @property
    def close_code(self) -> int | None:
        """The close code of the ending (received, or the one qqconn closed with), if any."""
        return self.ending.close_code if self.ending is not None else None


DispatchCallback = Callable[[proto.Dispatch], Awaitable[None] | None]
StateCallback = Callable[[StateChange], Awaitable[None] | None]
FatalCallback = Callable[[FatalError], Awaitable[None] | None]


def is_async_callback(fn: object) -> bool:
    """True if calling ``fn`` makes a coroutine: an ``async def`` function, a partial of one,
    or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    if fn is None or inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    return inspect.iscoroutinefunction(inspect.getattr_static(fn, "__call__", None))


class _Lane(Generic[_T]):
    """One host callback's lane: its items in order, each finished before the next; inline
    (loop callbacks, for a plain function) or on a task of its own (for a coroutine function).

    Subclasses say how an item is handed to the callback (:meth:`_invoke`), what follows once
    it finished (:meth:`_finished`) and how a failure is logged (:meth:`_failed`).
    """

    def __init__(self, log: QuietLogger, task_name: str, inline: bool) -> None:
        self._log = log
        self._task_name = task_name
        self.inline = inline
        # The items waiting, in order; None while none wait (a deque is 760 bytes even empty,
        # and a lane whose host keeps up has none waiting almost all the time).
        self._pending: deque[_T] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._scheduled: asyncio.Handle | None = None
        self.task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        #: An item whose callback is running (awaited by the task, or returned an awaitable).
        self._current: tuple[_T, Awaitable[Any] | None] | None = None

    # -- what subclasses say --------------------------------------------------------------

    def _invoke(self, item: _T) -> Awaitable[None] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finished(self, item: _T) -> None:
        """The callback is done with ``item`` (returned or raised)."""

    def _failed(self, item: _T) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the lane -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items handed to the lane whose callback has not started."""
        return 0 if self._pending is None else len(self._pending)

    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        return not self._pending and self._current is None

    def put(self, item: _T) -> None:
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        pending.append(item)
        loop = self._loop
        if loop is None:  # not running: kept for the next start()
            return
        if self.inline:
            if self._scheduled is None:
                self._scheduled = loop.call_soon(self._run_inline)
        else:
            wakeup = self._wakeup
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(None)

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._loop = asyncio.get_running_loop()
        self._tg = tg
        if not self.inline:
            self._start_task()
        elif self._pending and self._scheduled is None:
            self._scheduled = self._loop.call_soon(self._run_inline)

    def cancel(self) -> None:
        """Stop running callbacks; what is waiting stays for a next start()."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._loop = self._tg = None
        self._current = None  # its callback was cut short (logged by the drain)
        self._notify_idle()

    async def wait_idle(self) -> None:
        """Return once nothing is waiting and nothing is running."""
        while not self.idle() and self._loop is not None:
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def _notify_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _finish(self, item: _T) -> None:
        try:
            self._finished(item)
        except Exception:  # a bug in qqconn: logged; the lane goes on
            self._log.exception("qqconn.internal_error", lane=self._task_name)

    def _run_inline(self) -> None:
        """A loop callback: the waiting items, in order, for at most one slice."""
        self._scheduled = None
        loop, pending = self._loop, self._pending
        if loop is None:
            return
        if pending is None:
            self._notify_idle()
            return
        deadline = loop.time() + SLICE_S
        while pending:
            item = pending.popleft()
            try:
                result = self._invoke(item)
            except Exception:
                self._failed(item)
                result = None
            if result is not None and inspect.isawaitable(result):
                # Not a plain function after all: this one and the rest go to a task, in order.
                self.inline = False
                self._current = (item, result)
                self._start_task()
                return
            self._finish(item)
            if loop.time() >= deadline:
                break
        if pending:
            self._scheduled = loop.call_soon(self._run_inline)
        else:
            self._pending = None
            self._notify_idle()

    def _start_task(self) -> None:
        if self.task is None and self._tg is not None:
            self.task = self._tg.create_task(self._run_task(), name=self._task_name)

    async def _run_task(self) -> None:
        loop = asyncio.get_running_loop()
        current = self._current
        if current is not None:  # handed over by the inline run, its awaitable not yet awaited
            await self._await(current[0], current[1])
        deadline = loop.time() + SLICE_S
        while True:
            pending = self._pending
            if not pending:
                self._pending = None
                self._notify_idle()
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                deadline = loop.time() + SLICE_S
                continue
            item = pending.popleft()
            self._current = (item, None)
            try:
                result = self._invoke(item)
            except Exception:
                self._failed(item)
                result = None
            await self._await(item, result)
            if loop.time() >= deadline:  # calls that never suspend: let the loop run
                await asyncio.sleep(0)
                deadline = loop.time() + SLICE_S

    async def _await(self, item: _T, result: Awaitable[Any] | None) -> None:
        if result is not None and inspect.isawaitable(result):
            try:
                await result
            except Exception:
                self._failed(item)
        self._current = None
        self._finish(item)


class _DispatchLane(_Lane[cmd.DeliverDispatch]):
    def __init__(
        self,
        on_dispatch: DispatchCallback | None,
        handled: Callable[[cmd.DeliverDispatch], None],
        log: QuietLogger,
    ) -> None:
        super().__init__(log, "qqconn-host", not is_async_callback(on_dispatch))
        self._call = on_dispatch
        self._handled = handled
        self.delivered = 0

    def _invoke(self, item: cmd.DeliverDispatch) -> Awaitable[None] | None:
        call = self._call
        return None if call is None else call(item.dispatch)

    def _finished(self, item: cmd.DeliverDispatch) -> None:
        self.delivered += 1
        self._handled(item)

    def _failed(self, item: cmd.DeliverDispatch) -> None:
        # The host had the event; its own bug is no reason to replay it.
        d = item.dispatch
        self._log.exception("qqconn.callback_failed", callback="on_dispatch", seq=d.seq, t=d.type)


class _ChangeLane(_Lane[StateChange]):
    def __init__(self, on_state_change: StateCallback, log: QuietLogger) -> None:
        super().__init__(log, "qqconn-host-control", not is_async_callback(on_state_change))
        self._call = on_state_change

    def _invoke(self, item: StateChange) -> Awaitable[None] | None:
        return self._call(item)

    def _failed(self, item: StateChange) -> None:
        self._log.exception("qqconn.callback_failed", callback="on_state_change")


class HostLane:
    """The dispatch lane and the control lane (and the fatal notify's task).

    ``handled(delivery)`` is called once ``on_dispatch`` has finished with the delivery's
    dispatch (returned or raised): from then on a restart may skip it.
    """

    def __init__(
        self,
        *,
        on_dispatch: DispatchCallback | None,
        on_state_change: StateCallback | None,
        on_fatal: FatalCallback | None,
        handled: Callable[[cmd.DeliverDispatch], None],
        log: QuietLogger,
    ) -> None:
        self._on_fatal = on_fatal
        self._log = log
        self._dispatches = _DispatchLane(on_dispatch, handled, log)
        self._changes = None if on_state_change is None else _ChangeLane(on_state_change, log)
        #: Dispatches handed to the dispatch lane, and the s of the last one.
        self.handed_out = 0
        self.last_handed_seq: int | None = None
        self._fatal_task: asyncio.Task[None] | None = None
        #: The d of the last READY handed out (or restored from a state file).
        self.ready: dict[str, Any] | None = None

    @property
    def delivered(self) -> int:
        """Dispatches ``on_dispatch`` has finished with."""
        return self._dispatches.delivered

    @property
    def inline(self) -> bool:
        """``on_dispatch`` runs inline (loop callbacks), not on a task (rule 22)."""
        return self._dispatches.inline

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The lanes' tasks running now (none for a lane that runs inline)."""
        lanes = (self._dispatches, self._changes)
        return tuple(lane.task for lane in lanes if lane is not None and lane.task is not None)

    def deliver(self, delivery: cmd.DeliverDispatch) -> None:
        """Hand a dispatch the machine said to deliver to the dispatch lane (the reader's fast
        path calls this); the lane calls ``on_dispatch`` later, never in this frame."""
        dispatch = delivery.dispatch
        self.handed_out += 1
        self.last_handed_seq = dispatch.seq
        if dispatch.type == "READY" and isinstance(dispatch.data, dict):
            self.ready = dispatch.data
        self._dispatches.put(delivery)

    def announce(self, change: cmd.AnnounceState, snapshot: dict[str, Any]) -> StateChange:
        """Hand the state change to ``on_state_change``'s lane (if the host gave one); return it."""
        announced = StateChange(
            State(change.state),
            State[change.previous],
            change.trigger,
            snapshot,
            change.ending,
            change.quick_drop,
            change.failed_attempt,
            self.handed_out,
            self.last_handed_seq,
        )
        if self._changes is not None:
            self._changes.put(announced)
        return announced

    def notify_fatal(self, error: FatalError) -> None:
        """Call ``on_fatal(error)`` on a task of its own (outside the manager's task group)."""
        self._fatal_task = asyncio.get_running_loop().create_task(
            self._notify_fatal(error), name="qqconn-fatal-notify"
        )

    def reset_fatal(self) -> None:
        """A new run: the last run's fatal notify is not this one's."""
        self._fatal_task = None

    async def fatal_notified(self) -> None:
        """Wait until ``on_fatal`` has finished (returned or raised), if it was called."""
        task = self._fatal_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Start both lanes (a task in ``tg`` for a coroutine callback; the manager cancels
        them when it ends)."""
        self._dispatches.start(tg)
        if self._changes is not None:
            self._changes.start(tg)

    def cancel(self) -> None:
        self._dispatches.cancel()
        if self._changes is not None:
            self._changes.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Let the host see what it was already given, within ``timeout_s``."""
        changes, dispatches = self._changes, self._dispatches
        if dispatches.idle() and (changes is None or changes.idle()):
            return
        try:
            async with asyncio.timeout(timeout_s):
                if changes is not None:
                    await changes.wait_idle()
                await dispatches.wait_idle()
        except TimeoutError:
            self._log.warning(
                "qqconn.undelivered_on_exit",
                pending=dispatches.pending,
                pending_changes=0 if changes is None else changes.pending,
            )

    async def _notify_fatal(self, error: FatalError) -> None:
        if self._on_fatal is None:
            return
        try:
            result = self._on_fatal(error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("qqconn.callback_failed", callback="on_fatal")
