"""A flag a coroutine can wait for: :class:`asyncio.Event`'s ``set``/``clear``/``wait``, lighter.

Every running connection holds a few of these. An :class:`asyncio.Event` makes a
:class:`collections.deque` of waiters up front (over 600 bytes, empty); a :class:`Flag` keeps a
plain list, made only when someone waits, of one future per waiter.
"""

from __future__ import annotations

import asyncio

__all__ = ["Flag"]


class Flag:
    """Set, cleared, and waited for; ``set()`` wakes every waiter, as an Event's does."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """True once :meth:`set`, until :meth:`clear`."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        """Unset the flag (waiters from now on wait for the next :meth:`set`)."""
        self._set = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._set:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)
