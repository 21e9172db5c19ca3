"""A tiny HTTP/1.1 server: h11 (sans-I/O) over ``asyncio.start_server``, loopback only.

It parses requests, hands each to one async handler and writes the answer; keep-alive works
(httpx reuses connections). The handler may return None to never answer: the connection then
sits reading until the client gives up, or until :meth:`H11Server.aclose` cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h11

__all__ = ["H11Server", "HttpReply", "HttpRequest"]

_MAX_BODY = 1 << 20
_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    #: Request target without the query string.
    path: str
    #: Header names lower-cased.
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    #: Extra response headers (``Retry-After``, a trace id, ...).
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpReply | None]]


class _TooLarge(Exception):
    pass


class H11Server:
    """Serve ``handler`` on loopback; :meth:`start` returns the port (ephemeral by default)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def aclose(self, timeout_s: float = 1.0) -> None:
        """Stop listening and cut every connection, answered or hanging; bounded by timeout_s."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            # One request per turn; ends when the client closes or asks to close.
            while True:
                try:
                    request = await self._read_request(conn, reader)
                except (h11.RemoteProtocolError, _TooLarge):
                    # h11 lets a server still answer a request it could not parse.
                    bad = HttpReply(400, b"bad request\n", "text/plain")
                    with contextlib.suppress(h11.LocalProtocolError):
                        await self._write(conn, writer, bad)
                    return
                if request is None:
                    return
                reply = await self._handler(request)
                if reply is None:
                    await self._wait_for_client_to_leave(reader)
                    return
                await self._write(conn, writer, reply)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, OSError, h11.LocalProtocolError):
            return
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> HttpRequest | None:
        request: h11.Request | None = None
        body = bytearray()
        # Each turn either consumes a parsed event or reads more bytes; EOF ends it.
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_CHUNK))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return HttpRequest(
                    method=request.method.decode("ascii", "replace"),
                    path=request.target.decode("ascii", "replace").split("?", 1)[0],
                    headers={
                        name.decode("latin-1").lower(): value.decode("latin-1")
                        for name, value in request.headers
                    },
                    body=bytes(body),
                )
            else:  # ConnectionClosed, PAUSED
                return None

    @staticmethod
    async def _write(conn: h11.Connection, writer: asyncio.StreamWriter, reply: HttpReply) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            *reply.headers,
        ]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
        data += conn.send(h11.Data(data=reply.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        await writer.drain()

    @staticmethod
    async def _wait_for_client_to_leave(reader: asyncio.StreamReader) -> None:
        # Read and discard until EOF: the client timing out closes the connection.
        while await reader.read(_READ_CHUNK):
            pass
