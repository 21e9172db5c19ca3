"""The shared per-app HTTP client's gate (qqconn/driver/apps.py): at most
SHARED_HTTP_IN_FLIGHT requests in flight, and every permit given back, on success and on
failure, so a thousand managers of one app never queue inside httpx's pool."""

from __future__ import annotations

import asyncio
import socket

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
