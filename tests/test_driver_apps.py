"""The shared per-app HTTP client's gate (qqconn/driver/apps.py): at most
SHARED_HTTP_IN_FLIGHT requests in flight, and every permit given back, on success and on
failure, so a thousand managers of one app never queue inside httpx's pool."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from qqconn.driver.apps import SHARED_HTTP_IN_FLIGHT, GatedTransport, _GatedStream
from qqconn.testing import FakeGateway


class CountingTransport(httpx.AsyncBaseTransport):
    """Forwards to a real transport and records how many requests are inside it at once
    (from the request going in to its response body being closed)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.now = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException:
            self.now -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _GatedStream(response.stream, self._left)
        return response

    def _left(self) -> None:
        self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_gate_admits_at_most_its_limit_and_every_request_completes() -> None:
    """64 requests started together through the gate: never more than the limit inside the
    transport, and all 64 answered (without the gate all 64 would be inside at once)."""
    async with FakeGateway() as gw:
        counting = CountingTransport(httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(
            transport=GatedTransport(counting, SHARED_HTTP_IN_FLIGHT)
        ) as http:
            answers = await asyncio.wait_for(
                asyncio.gather(*(http.get(f"{gw.api_base}/gateway") for _ in range(64))), 30
            )
    assert len(answers) == 64
    assert all(a.status_code > 0 for a in answers)
    assert 1 < counting.most <= SHARED_HTTP_IN_FLIGHT, counting.most


async def test_failed_requests_give_their_permit_back() -> None:
    """Requests that fail to connect release their permit: after twice the limit of
    failures a request still gets through at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connections are refused
        async with (
            FakeGateway() as gw,
            httpx.AsyncClient(transport=GatedTransport(httpx.AsyncHTTPTransport(), 2)) as http,
        ):
            for _ in range(4):
                try:
                    await http.get(f"http://127.0.0.1:{dead}/")
                except httpx.ConnectError:
                    pass
                else:  # pragma: no cover - the port never listens
                    raise AssertionError("a refused port answered")
            answer = await asyncio.wait_for(http.get(f"{gw.api_base}/gateway"), 10)
    assert answer.status_code > 0


class HeldTransport(httpx.AsyncBaseTransport):
    """Answers each request only when ``release`` is set; records any cancellation that
    reached it (httpcore's pool, cancelled while opening a connection for a request, keeps
    that connection for ever)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.cancelled = 0
        self.finished = 0
        self.closed_bodies = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.entered += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        outer = self

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                yield b"{}"

            async def aclose(self) -> None:
                outer.closed_bodies += 1

        return httpx.Response(200, stream=Body())


async def test_a_cancelled_caller_abandons_its_request_instead_of_cancelling_it() -> None:
    """Callers cancelled (an attempt's deadline) while their requests are inside the transport:
    the transport never sees the cancellation; the requests end on their own, their bodies are
    closed and their permits come back, so the next request gets through."""
    held = HeldTransport()
    gated = GatedTransport(held, 2)
    async with httpx.AsyncClient(transport=gated) as http:
        callers = [asyncio.create_task(http.get("http://127.0.0.1:9/")) for _ in range(2)]
        for _ in range(100):  # bounded: until both are inside the transport
            if held.entered == 2:
                break
            await asyncio.sleep(0)
        assert held.entered == 2
        for c in callers:
            c.cancel()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert held.cancelled == 0  # the transport's requests were not cancelled
        held.release.set()
        answer = await asyncio.wait_for(http.get("http://127.0.0.1:9/"), 10)
        assert answer.status_code == 200
    assert held.cancelled == 0
    assert held.finished == 3
    assert held.closed_bodies == 3  # the two abandoned responses were closed too
