"""A loopback fault proxy: a small asyncio TCP relay between qqconn and the fake gateway that
misbehaves the way networks do (docs/behaviour.md rules 5, 6, 9; issue 14).

The fake gateway's faults are protocol-level (no ACK, op 7, a close code); this one is below
the protocol: it sees bytes only. Point a client at :attr:`FaultProxy.url` (or ``port``)
instead of the upstream and set a fault, globally or for one connection:

``latency_s``
    every chunk, each way, is held this long before it is forwarded (order kept).
``stall``
    bytes are accepted (read from the sender's socket) and none forwarded: a stalled TCP
    stream, writes succeed and nothing arrives. Lifting it forwards nothing held: a stall
    loses what it swallowed, as a dead path does.
``reset_after_bytes``
    after this many more bytes from upstream, the connection is reset (RST, no close frame),
    usually in the middle of a WebSocket frame: ``reset_after_bytes=3`` cuts the next frame.
``rate_bytes_s``
    a trickle: at most this many bytes a second, each way.
``half_close``
    the upstream → client direction ends (EOF to the client) while the client → upstream
    direction stays open.

Faults apply to what is read after they are set. :meth:`FaultProxy.set` sets them for every
connection (now and later), :meth:`ProxyConnection.set` for one; per-connection values win.
Everything is bounded: at most ``max_connections`` relays at once (more are refused), a held
chunk is at most ``CHUNK_BYTES``, the held queue at most ``max_buffered_bytes`` per direction
(the relay stops reading, so TCP pushes back), and :meth:`aclose` ends every relay within a
bound. Only loopback addresses are accepted for both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final, Self

from qqconn.testing.gateway import is_loopback

__all__ = ["CHUNK_BYTES", "FaultProxy", "ProxyConnection", "ProxyFaults"]

#: Bytes read at a time from either side.
CHUNK_BYTES: Final = 16 * 1024
#: How often a stalled or trickling relay looks again at its faults.
_POLL_S: Final = 0.01


@dataclass
class ProxyFaults:
    """What the proxy does to the bytes; the defaults forward them untouched."""

    latency_s: float = 0.0
    stall: bool = False
    reset_after_bytes: int | None = None
    rate_bytes_s: float | None = None
    half_close: bool = False

    def __post_init__(self) -> None:
        for name, value in (("latency_s", self.latency_s), ("rate_bytes_s", self.rate_bytes_s)):
            if value is not None and not value >= 0:
                raise ValueError(f"ProxyFaults.{name} must be >= 0, got {value!r}")
        if self.reset_after_bytes is not None and self.reset_after_bytes < 0:
            raise ValueError("ProxyFaults.reset_after_bytes must be >= 0")


@dataclass
class ProxyConnection:
    """One relayed TCP connection: its own fault overrides and what went through it."""

    index: int
    proxy: FaultProxy
    overrides: dict[str, Any] = field(default_factory=dict)
    #: bytes forwarded client → upstream, upstream → client
    up_bytes: int = 0
    down_bytes: int = 0
    #: bytes read and swallowed by a stall
    stalled_bytes: int = 0
    #: how it ended: None (open), "closed", "reset", "half_closed"
    ended: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list, repr=False)
    _down_budget: int | None = field(default=None, repr=False)

    def set(self, **faults: Any) -> None:
        """Set faults for this connection only (``conn.set(stall=True)``)."""
        replace(ProxyFaults(), **faults)  # validates names and values
        self.overrides.update(faults)
        if "reset_after_bytes" in faults:
            self._down_budget = faults["reset_after_bytes"]

    def faults(self) -> ProxyFaults:
        return replace(self.proxy.faults, **self.overrides)

    @property
    def finished(self) -> bool:
        """Ended, and both of its pumps with it."""
        return self.ended is not None and all(t.done() for t in self._tasks)

    def reset(self) -> None:
        """Reset the connection now (RST both ways, no close frame)."""
        self.ended = self.ended or "reset"
        for w in self._writers:
            transport = w.transport
            with contextlib.suppress(OSError):
                sock = transport.get_extra_info("socket")
                if sock is not None:  # linger 0: the close is an RST, not a FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        for t in self._tasks:
            t.cancel()


class FaultProxy:
    """A TCP relay on loopback from ``listen_port`` (0: any free one) to ``upstream``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        max_connections: int = 64,
        max_buffered_bytes: int = 1 << 20,
    ) -> None:
        if not is_loopback(upstream_host) or not is_loopback(host):
            raise ValueError("FaultProxy relays between loopback addresses only")
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.faults = ProxyFaults()
        self.connections: list[ProxyConnection] = []
        self.refused = 0
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self._server: asyncio.Server | None = None

    # -- control ----------------------------------------------------------------------------

    def set(self, **faults: Any) -> None:
        """Set faults for every connection, open or future (``proxy.set(latency_s=0.05)``)."""
        self.faults = replace(self.faults, **faults)
        if "reset_after_bytes" in faults:
            for c in self.live():
                if "reset_after_bytes" not in c.overrides:
                    c._down_budget = faults["reset_after_bytes"]

    def clear(self) -> None:
        """Back to forwarding untouched, for every connection."""
        self.faults = ProxyFaults()
        for c in self.connections:
            c.overrides.clear()
            c._down_budget = None

    def live(self) -> list[ProxyConnection]:
        return [c for c in self.connections if c.ended is None]

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop listening and end every relay (within ``timeout_s``)."""
        if self._server is not None:
            self._server.close()
        tasks = [t for c in self.connections for t in c._tasks]
        for c in self.connections:
            for w in c._writers:
                w.transport.abort()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout_s)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- relaying ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.live()) >= self.max_connections:
            self.refused += 1
            writer.transport.abort()
            return
        conn = ProxyConnection(len(self.connections), self)
        conn._down_budget = self.faults.reset_after_bytes
        self.connections.append(conn)
        try:
            async with asyncio.timeout(5.0):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            conn.ended = "reset"
            writer.transport.abort()
            return
        conn._writers = [writer, up_writer]
        conn._tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(conn, up_reader, writer, upstream=False)),
        ]
        await asyncio.wait(conn._tasks, return_when=asyncio.ALL_COMPLETED)
        conn.ended = conn.ended or "closed"
        for w in conn._writers:
            w.transport.abort()

    async def _pump(
        self,
        conn: ProxyConnection,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        held: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        buffered = [0]
        sender = asyncio.create_task(self._send(conn, held, dst, buffered, upstream=upstream))
        try:
            while True:
                while buffered[0] >= self.max_buffered_bytes and not sender.done():
                    await asyncio.sleep(_POLL_S)  # back-pressure: stop reading
                if sender.done():
                    # The sender died writing to a side that went away: nothing this side
                    # reads can be delivered, so the direction ends (and with both, the relay).
                    conn.ended = conn.ended or "reset"
                    return
                f = conn.faults()
                if not upstream and f.half_close:
                    conn.ended = conn.ended or "half_closed"
                    await held.put(None)
                    await sender
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                    return  # the client -> upstream direction lives on
                limit = CHUNK_BYTES
                if f.rate_bytes_s is not None:
                    limit = max(1, min(limit, int(f.rate_bytes_s * 0.05) or 1))
                if not upstream and conn._down_budget is not None:
                    if conn._down_budget <= 0:
                        # Let the partial frame reach the client first (bounded), then cut.
                        for _ in range(100):
                            if buffered[0] <= 0:
                                break
                            await asyncio.sleep(_POLL_S)
                        conn.reset()
                        return
                    limit = min(limit, conn._down_budget)
                data = await src.read(limit)
                if not data:
                    await held.put(None)
                    await sender
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                    return
                f = conn.faults()
                if f.stall:
                    conn.stalled_bytes += len(data)
                    continue
                if not upstream and conn._down_budget is not None:
                    # The budget may have been set while this read was waiting with a larger
                    # limit: forward only what is left of it, so the cut lands where asked.
                    data = data[: max(conn._down_budget, 0)]
                    conn._down_budget -= len(data)
                buffered[0] += len(data)
                await held.put((time.monotonic() + f.latency_s, data))
                if f.rate_bytes_s:
                    await asyncio.sleep(len(data) / f.rate_bytes_s)
        except (ConnectionError, OSError):
            # The side this direction reads from reset: close the side it writes to (after
            # what is buffered), as a direct connection would end. Else the other direction
            # waits forever reading from that side when it is silent (a gateway between
            # heartbeats), and its socket stays open.
            conn.ended = conn.ended or "reset"
            with contextlib.suppress(Exception):
                dst.close()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _send(
        self,
        conn: ProxyConnection,
        held: asyncio.Queue[tuple[float, bytes] | None],
        dst: asyncio.StreamWriter,
        buffered: list[int],
        *,
        upstream: bool,
    ) -> None:
        while True:
            item = await held.get()
            if item is None:
                return
            due, data = item
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            dst.write(data)
            await dst.drain()
            buffered[0] -= len(data)
            if upstream:
                conn.up_bytes += len(data)
            else:
                conn.down_bytes += len(data)
