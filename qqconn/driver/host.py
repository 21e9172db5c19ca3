"""The host lane: the host's callbacks run here, in order, off the socket's reader.

Dispatches and state changes wait in one queue and reach ``on_dispatch`` / ``on_state_change``
in the order the machine produced them, on a task of their own, so a slow or raising callback
never delays a heartbeat. ``on_fatal`` runs on a task outside the manager's task group, so a host
that calls ``stop()`` from inside it does not cancel itself. A callback's exception is logged,
never raised.
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
    ``reason`` and ``close_code`` name it without parsing strings).
    """

    state: State
    previous: State
    trigger: str
    snapshot: dict[str, Any]
    ending: Ending | None = None


DispatchCallback = Callable[[proto.Dispatch], Awaitable[None] | None]
StateCallback = Callable[[StateChange], Awaitable[None] | None]
FatalCallback = Callable[[FatalError], Awaitable[None] | None]


class HostLane:
    """One queue, one task: the host's callbacks, in order, each awaited before the next.

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
        self._queue: asyncio.Queue[cmd.DeliverDispatch | StateChange] = asyncio.Queue()
        #: Queue a dispatch the machine said to deliver (the reader's fast path calls this).
        self.deliver = self._queue.put_nowait
        self.delivered = 0
        self._fatal_task: asyncio.Task[None] | None = None

    def announce(self, change: StateChange) -> None:
        """Queue a state change for ``on_state_change`` (if the host gave one)."""
        if self._on_state_change is not None:
            self._queue.put_nowait(change)

    def notify_fatal(self, error: FatalError) -> None:
        """Call ``on_fatal(error)`` on a task of its own (outside the manager's task group)."""
        self._fatal_task = asyncio.get_running_loop().create_task(
            self._notify_fatal(error), name="qqconn-fatal-notify"
        )

    async def run(self) -> None:
        """Deliver what is queued, forever (the manager cancels this task)."""
        queue = self._queue
        while True:
            item = await queue.get()
            try:
                if isinstance(item, cmd.DeliverDispatch):
                    await self._deliver(item)
                elif self._on_state_change is not None:
                    result = self._on_state_change(item)
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # a host callback's failure is logged, never raised
                self._log.exception("qqconn.callback_failed", callback="on_state_change")
            finally:
                queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        """Let the host see what it was already given, within ``timeout_s``."""
        if self._queue.empty():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            self._log.warning("qqconn.undelivered_on_exit", pending=self._queue.qsize())

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
