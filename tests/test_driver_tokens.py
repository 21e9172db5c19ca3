"""Access tokens (qqconn/driver/tokens.py) against the fake gateway's token endpoint: cached
while they have more than the refresh margin left, fetched again inside it, and scrubbed from
messages."""

from __future__ import annotations

import asyncio

import httpx

from qqconn.driver.tokens import Secret, TokenSource
from qqconn.policy import Policy
from qqconn.testing import FakeGateway

MARGIN_S = Policy().token_refresh_margin_s


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_requests(gw: FakeGateway) -> int:
    return len([h for h in gw.http_requests if "AccessToken" in h.path])


async def test_a_token_is_cached_until_the_refresh_margin_then_fetched_again() -> None:
    """A token is reused while more than token_refresh_margin_s of its life is left, and
    fetched again once less is left, or when a refresh is asked for."""
    clock = FakeClock()
    async with FakeGateway() as gw, httpx.AsyncClient() as http:
        tokens = TokenSource(http, gw.token_url, gw.app_id, Secret("s3cret"), clock, MARGIN_S)
        first = await tokens.get()
        assert token_requests(gw) == 1 and first.reveal() == gw.valid_token()
        clock.now += gw.token_ttl_s - MARGIN_S - 5.0  # the fake says expires_in in whole seconds
        assert (await tokens.get()) is first and token_requests(gw) == 1
        clock.now += 10.0
        await tokens.get()
        assert token_requests(gw) == 2
        await tokens.get(refresh=True)
        assert token_requests(gw) == 3


async def test_concurrent_callers_share_one_token_request() -> None:
    """Ten callers asking at once cause one request to the token endpoint."""
    async with FakeGateway() as gw, httpx.AsyncClient() as http:
        tokens = TokenSource(http, gw.token_url, gw.app_id, Secret("s3cret"), FakeClock(), MARGIN_S)
        got = await asyncio.gather(*(tokens.get() for _ in range(10)))
        assert len({t.reveal() for t in got}) == 1 and token_requests(gw) == 1


async def test_scrub_hides_the_secret_and_the_current_token() -> None:
    """scrub() replaces the client secret and the cached token in a message with ***."""
    async with FakeGateway() as gw, httpx.AsyncClient() as http:
        tokens = TokenSource(http, gw.token_url, gw.app_id, Secret("s3cret"), FakeClock(), MARGIN_S)
        assert tokens.scrub("secret s3cret") == "secret ***"
        token = (await tokens.get()).reveal()
        assert tokens.scrub(f"QQBot {token} / s3cret") == "QQBot *** / ***"
