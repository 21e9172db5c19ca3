"""The loopback fault proxy itself (qqconn/testing/proxy.py) over a plain TCP echo server:
untouched forwarding, stall, latency, reset mid-stream, half-close, its bounds and its stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from qqconn.testing.proxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def echo_behind_proxy(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] = _echo,
    **options: int,
) -> AsyncIterator[FaultProxy]:
    """A loopback server (an echo unless ``handler`` is given) and a FaultProxy in front."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FaultProxy("127.0.0.1", port, **options) as proxy:
            yield proxy
    finally:
        server.close()
        await server.wait_closed()


async def _open(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_bytes_pass_untouched_by_default() -> None:
    """With no fault the proxy is transparent, both ways, and counts what it forwarded."""
    async with echo_behind_proxy() as proxy:
        reader, writer = await _open(proxy)
        writer.write(b"hello")
        async with asyncio.timeout(2):
            assert await reader.readexactly(5) == b"hello"
        assert proxy.connections[0].up_bytes == 5 and proxy.connections[0].down_bytes == 5
        writer.close()


async def test_stall_accepts_bytes_and_forwards_none() -> None:
    """A stall reads what is sent (the write succeeds) and forwards nothing."""
    async with echo_behind_proxy() as proxy:
        reader, writer = await _open(proxy)
        async with asyncio.timeout(2):
            while not proxy.live():
                await asyncio.sleep(0.01)
        proxy.set(stall=True)
        writer.write(b"into the void")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(1)
        assert proxy.connections[0].stalled_bytes == len(b"into the void")
        writer.close()


async def test_latency_delays_each_direction() -> None:
    """latency_s=0.1 each way: an echo takes at least 0.2 s."""
    async with echo_behind_proxy() as proxy:
        proxy.set(latency_s=0.1)
        reader, writer = await _open(proxy)
        started = time.monotonic()
        writer.write(b"x")
        async with asyncio.timeout(3):
            assert await reader.readexactly(1) == b"x"
        assert time.monotonic() - started >= 0.19
        writer.close()


async def _read_until_cut(reader: asyncio.StreamReader) -> bytes:
    """Everything the client reads until the proxy's reset (or EOF) ends the stream (≤ 2 s)."""
    got = b""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        async with asyncio.timeout(2):
            while chunk := await reader.read(10):
                got += chunk
    return got


async def test_reset_after_bytes_cuts_the_stream_with_a_reset() -> None:
    """reset_after_bytes=3: three bytes reach the client, then the connection is reset."""
    async with echo_behind_proxy() as proxy:
        reader, writer = await _open(proxy)
        async with asyncio.timeout(2):
            while not proxy.live():
                await asyncio.sleep(0.01)
        proxy.live()[0].set(reset_after_bytes=3)
        writer.write(b"abcdef")
        got = await _read_until_cut(reader)
        assert got == b"abc" and proxy.connections[0].ended == "reset"
        writer.close()


async def test_half_close_ends_one_direction_only() -> None:
    """half_close: the client reads EOF while its own writes still reach upstream."""
    async with echo_behind_proxy() as proxy:
        reader, writer = await _open(proxy)
        async with asyncio.timeout(2):
            while not proxy.live():
                await asyncio.sleep(0.01)
        proxy.set(half_close=True)
        writer.write(b"still going up")
        async with asyncio.timeout(2):
            assert await reader.read(100) == b""
            while proxy.connections[0].up_bytes < len(b"still going up"):
                await asyncio.sleep(0.01)
        writer.close()


async def test_connections_beyond_the_bound_are_refused() -> None:
    """max_connections=1: a second client is refused (closed at once) and counted."""
    async with echo_behind_proxy(max_connections=1) as proxy:
        _, w1 = await _open(proxy)
        async with asyncio.timeout(2):
            while not proxy.live():
                await asyncio.sleep(0.01)
        r2, w2 = await _open(proxy)
        async with asyncio.timeout(2):
            with contextlib.suppress(ConnectionError):
                assert await r2.read(1) == b""
        assert proxy.refused == 1
        w1.close()
        w2.close()


def test_only_loopback_is_relayed() -> None:
    """A non-loopback upstream is refused at construction."""
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("192.0.2.1", 80)


async def test_aclose_ends_every_relay_within_its_bound() -> None:
    """aclose() with a stalled relay still open returns within the bound and ends it."""
    async with echo_behind_proxy() as proxy:
        _, writer = await _open(proxy)
        async with asyncio.timeout(2):
            while not proxy.live():
                await asyncio.sleep(0.01)
        proxy.set(stall=True)
        started = time.monotonic()
        await proxy.aclose(timeout_s=1.0)
        assert time.monotonic() - started < 2.0
        assert all(t.done() for c in proxy.connections for t in c._tasks)
        writer.close()


async def test_reset_after_bytes_set_while_a_read_waits_still_cuts_where_asked() -> None:
    """reset_after_bytes set on a relay already waiting for data (as in the soak: the relay
    is idle between frames) forwards exactly that many bytes of the next chunk, then resets."""
    async with echo_behind_proxy() as proxy:
        reader, writer = await _open(proxy)
        writer.write(b"warm")
        async with asyncio.timeout(2):
            assert await reader.readexactly(4) == b"warm"  # both pumps now wait in a read
        proxy.live()[0].set(reset_after_bytes=3)
        writer.write(b"abcdef")
        got = await _read_until_cut(reader)
        assert got == b"abc" and proxy.connections[0].ended == "reset"
        writer.close()


async def test_a_relay_ends_when_its_client_goes_while_the_upstream_keeps_sending() -> None:
    """The client resets its socket while the upstream floods it: the downstream sender dies on
    its write, and the relay ends instead of waiting forever in back-pressure for a sender that
    is gone (which kept the upstream's socket open: the soak's "sockets gone after FATAL").
    Broken version: the back-pressure wait does not look at the sender."""
    chunk = b"x" * 65536

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(2000):  # bounded: at most 128 MiB
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async with echo_behind_proxy(flood, max_buffered_bytes=1 << 16) as proxy:
        reader, writer = await _open(proxy)
        await reader.readexactly(1024)  # the flood reaches the client
        writer.transport.abort()  # RST: the proxy's next writes to it fail
        async with asyncio.timeout(10):
            while not proxy.connections or proxy.connections[0].ended is None:
                await asyncio.sleep(0.01)
        conn = proxy.connections[0]
        assert conn.ended == "reset"
        async with asyncio.timeout(10):
            await asyncio.gather(*conn._tasks)


async def test_a_client_reset_reaches_an_upstream_that_is_silent() -> None:
    """The client resets its socket while the upstream has nothing to send (a gateway waiting
    for the next heartbeat): the upstream's connection is closed too, as a direct connection's
    would be, and the relay ends. Broken version: only the direction reading from the client
    ended; the other waited forever reading from the silent upstream, keeping its socket open
    (the hour soak's abort at 2,703 s: ALIVE, but the fake still held the old socket)."""
    upstream_closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(4096):  # reads until the proxy's side of it goes away
                pass
        upstream_closed.set()
        writer.close()

    async with echo_behind_proxy(silent) as proxy:
        _, writer = await _open(proxy)
        writer.write(b"hello")
        await writer.drain()
        async with asyncio.timeout(10):
            while not proxy.connections or proxy.connections[0].up_bytes < 5:
                await asyncio.sleep(0.01)
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN: the proxy's read from the client fails
        async with asyncio.timeout(10):
            await upstream_closed.wait()
        conn = proxy.connections[0]
        async with asyncio.timeout(10):
            await asyncio.gather(*conn._tasks)
        assert conn.ended == "reset"
