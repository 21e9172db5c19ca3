"""The host lanes: the host's callbacks run here, off the socket's reader, each lane in order.

Two lanes, each a queue and a task of its own, so a slow or raising callback never delays a
heartbeat, and a slow ``on_dispatch`` never delays news about the connection:

* the **dispatch lane**: ``on_dispatch``, once per event, in ``s`` order, each awaited before
  the next;
* the **control lane**: ``on_state_change``, every state change in order, each awaited before the
  next. It never waits behind a dispatch: a change reaches the host as soon as the lane is free,
  even while ``on_dispatch`` is busy. Its place among the dispatches is stated, not implied:
  :attr:`StateChange.after_dispatches` dispatches had been handed to the dispatch lane before it
  (the last of them had ``s`` = :attr:`StateChange.after_seq`); a handler may still be working
  on some of them when the change arrives.

``on_fatal`` runs on a task outside the manager's task group, so a host that calls ``stop()``
from inside it does not cancel itself; ``run()`` waits for it to finish before raising. A
callback's exception is logged, never raised.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qqconn import commands as cmd
from qqconn import protocol as proto
from qqconn._log import QuietLogger
from qqconn.endings import Ending
from qqconn.errors import FatalError
from qqconn.machine import State

__all__ = ["DispatchCallback", "FatalCallback", "HostLane", "StateCallback", "StateChange"]


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


class HostLane:
    """Two queues, two tasks: dispatches in order on one, state changes in order on the other.

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
        self._on_dispatch = on_dispatch
        self._on_state_change = on_state_change
        self._on_fatal = on_fatal
        self._handled = handled
        self._log = log
        self._queue: asyncio.Queue[cmd.DeliverDispatch] = asyncio.Queue()
        self._changes: asyncio.Queue[StateChange] = asyncio.Queue()
        self.delivered = 0
        #: Dispatches handed to the dispatch lane, and the s of the last one.
        self.handed_out = 0
        self.last_handed_seq: int | None = None
        self._fatal_task: asyncio.Task[None] | None = None
        self.tasks: tuple[asyncio.Task[None], ...] = ()
        #: The d of the last READY handed out (or restored from a state file).
        self.ready: dict[str, Any] | None = None

    def deliver(self, delivery: cmd.DeliverDispatch) -> None:
        """Queue a dispatch the machine said to deliver (the reader's fast path calls this)."""
        dispatch = delivery.dispatch
        self.handed_out += 1
        self.last_handed_seq = dispatch.seq
        if dispatch.type == "READY" and isinstance(dispatch.data, dict):
            self.ready = dispatch.data
        self._queue.put_nowait(delivery)

    def announce(self, change: cmd.AnnounceState, snapshot: dict[str, Any]) -> StateChange:
        """Queue the state change for ``on_state_change`` (if the host gave one); return it."""
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
        if self._on_state_change is not None:
            self._changes.put_nowait(announced)
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
        """Start both lanes' tasks in ``tg`` (the manager cancels them when it ends)."""
        self.tasks = (
            tg.create_task(self._run_dispatches(), name="qqconn-host"),
            tg.create_task(self._run_changes(), name="qqconn-host-control"),
        )

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def _run_dispatches(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            try:
                await self._deliver(item)
            finally:
                queue.task_done()

    async def _run_changes(self) -> None:
        queue = self._changes
        while True:
            item = await queue.get()
            try:
                if self._on_state_change is not None:
                    result = self._on_state_change(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # a host callback's failure is logged, never raised
                self._log.exception("qqconn.callback_failed", callback="on_state_change")
            finally:
                queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        """Let the host see what it was already given, within ``timeout_s``."""
        if self._queue.empty() and self._changes.empty():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._changes.join()
                await self._queue.join()
        except TimeoutError:
            self._log.warning(
                "qqconn.undelivered_on_exit",
                pending=self._queue.qsize(),
                pending_changes=self._changes.qsize(),
            )

    async def _deliver(self, delivery: cmd.DeliverDispatch) -> None:
        dispatch = delivery.dispatch
        try:
            if self._on_dispatch is not None:
                result = self._on_dispatch(dispatch)
                if inspect.isawaitable(result):
                    await result
        except Exception:  # the host had the event; its own bug is no reason to replay it
            self._log.exception(
                "qqconn.callback_failed", callback="on_dispatch", seq=dispatch.seq, t=dispatch.type
            )
        self.delivered += 1
        self._handled(delivery)

    async def _notify_fatal(self, error: FatalError) -> None:
        if self._on_fatal is None:
            return
        try:
            result = self._on_fatal(error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("qqconn.callback_failed", callback="on_fatal")
