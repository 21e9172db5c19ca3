"""One server socket of the fake gateway: its websockets connection, its ordered outbox and writer.

Each socket has one **writer task** draining an ordered outbox, so frames, replays and the close
frames that follow them (op 9 then 4903, op 7 then 4009) always leave in the order they were
decided. Nothing here decides what to send: :mod:`qqconn.testing.ws` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from qqconn.testing.records import ConnectionRecord
from qqconn.testing.sessions import Session

__all__ = ["FakeServerConnection", "Outgoing", "Socket", "wait_closed"]


def _never() -> bool:
    return False


class FakeServerConnection(ServerConnection):
    """A websockets server connection that can go mute (the ``silent`` fault).

    While ``is_muted()`` is true every byte websockets would write is discarded, including the
    pongs and close-frame replies it sends on its own, so the client faces a half-open server.
    """

    #: Every TCP connection of one gateway, handshake done or not (set by a per-gateway
    #: subclass, see :meth:`connection_class`), so shutdown can cut them all.
    registry: ClassVar[set[ServerConnection]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_muted: Callable[[], bool] = _never

    @classmethod
    def connection_class(cls, registry: set[ServerConnection]) -> type[FakeServerConnection]:
        """A subclass whose registry is ``registry`` (one per gateway)."""
        return type("_Connection", (cls,), {"registry": registry})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        super().connection_lost(exc)

    def send_data(self) -> None:
        if self.is_muted():
            for _ in self.protocol.data_to_send():
                pass
            return
        super().send_data()


@dataclass(slots=True)
class Outgoing:
    """One item of a socket's outbox: a message, or a close frame."""

    kind: Literal["frame", "close"]
    data: str | bytes = ""
    op: int | None = None
    #: True for the gateway's own traffic (suppressed while silent); False for fault actions.
    auto: bool = True
    code: int = 1000
    reason: str = ""
    done: asyncio.Future[bool] | None = None


@dataclass(eq=False, slots=True)
class Socket:
    ws: FakeServerConnection
    record: ConnectionRecord
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    session: Session[Socket] | None = None
    attached_at: float | None = None
    last_beat_at: float = 0.0
    hello_sent: bool = False
    #: A close or drop was decided: later client frames are recorded, not acted on.
    closing: bool = False
    #: >0 while a fault action writes through a silent gateway.
    bypass: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.record.index

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN and not self.closed.is_set()

    def enqueue_frame(
        self, data: str | bytes, op: int | None, *, auto: bool = True
    ) -> asyncio.Future[bool]:
        """Queue a message; the future says whether it was written."""
        done = asyncio.get_running_loop().create_future()
        self.outbox.put_nowait(Outgoing("frame", data, op, auto, done=done))
        return done

    def enqueue_close(self, code: int, reason: str, *, auto: bool = True) -> asyncio.Future[bool]:
        """Queue a close frame; from now on client frames are recorded, not acted on."""
        self.closing = True
        done = asyncio.get_running_loop().create_future()
        self.outbox.put_nowait(Outgoing("close", code=code, reason=reason, auto=auto, done=done))
        return done

    def abort(self) -> None:
        """Cut the TCP connection without a close frame (the client sees 1006)."""
        self.closing = True
        self.ws.transport.abort()

    def fail_pending(self) -> None:
        """Resolve what the outbox still holds as not written (the socket is gone)."""
        while not self.outbox.empty():
            item = self.outbox.get_nowait()
            if item.done is not None and not item.done.done():
                item.done.set_result(False)


async def wait_closed(socks: list[Socket], timeout: float) -> None:
    """Wait until every socket's TCP connection is gone, at most ``timeout`` seconds."""
    waiters = [asyncio.create_task(s.closed.wait()) for s in socks if not s.closed.is_set()]
    if not waiters:
        return
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.ALL_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
