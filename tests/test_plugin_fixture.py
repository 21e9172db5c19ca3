"""The README's adapter-author example, run as written against the plugin's `fake_gateway` fixture."""

from __future__ import annotations

import asyncio
from typing import Any

import qqconn
import qqconn.testing


async def test_my_adapter_survives_a_rotation(fake_gateway: Any) -> None:
    """The pytest plugin's fixture works as the README shows: op 7 + 4009, one Resume, no loss."""
    seen: list[qqconn.Dispatch] = []
    manager = qqconn.ConnectionManager(
        app_id=fake_gateway.app_id,
        client_secret="s3cret",
        intents=1,
        api_base=fake_gateway.api_base,
        token_url=fake_gateway.token_url,
        on_dispatch=seen.append,
    )
    task = asyncio.create_task(manager.run())
    await fake_gateway.wait_for(lambda: manager.state is qqconn.State.ALIVE)
    await fake_gateway.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": "hi"})
    await fake_gateway.send_reconnect()  # op 7, then 4009
    await fake_gateway.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": "again"})
    await fake_gateway.wait_for(lambda: len(seen) == 3)  # READY + both messages, once each
    assert fake_gateway.resumes == 1
    assert [d.type for d in seen] == ["READY", "GROUP_AT_MESSAGE_CREATE", "GROUP_AT_MESSAGE_CREATE"]
    await manager.stop()
    await task


async def test_fixture_offers_the_secret_and_a_fast_policy(fake_gateway: Any) -> None:
    """The fixture names its credentials and a fast Policy: a manager needs no literal from us."""
    assert fake_gateway.client_secret == qqconn.testing.DEFAULT_CLIENT_SECRET
    assert fake_gateway.app_id == qqconn.testing.DEFAULT_APP_ID
    assert fake_gateway.fast_policy == qqconn.testing.fast_policy()
    seen: list[qqconn.Dispatch] = []
    manager = qqconn.ConnectionManager(
        app_id=fake_gateway.app_id,
        client_secret=fake_gateway.client_secret,
        intents=1,
        api_base=fake_gateway.api_base,
        token_url=fake_gateway.token_url,
        policy=fake_gateway.fast_policy,
        on_dispatch=seen.append,
    )
    task = asyncio.create_task(manager.run())
    try:
        await fake_gateway.wait_for(lambda: manager.state is qqconn.State.ALIVE)
        await fake_gateway.drop()  # a drop: the fast policy's backoff brings it back at once
        await fake_gateway.wait_for(lambda: fake_gateway.resumes == 1, timeout=5.0)
        await fake_gateway.dispatch("C2C_MESSAGE_CREATE")
        await fake_gateway.wait_for(lambda: len(seen) == 2)
        assert seen[1].data["author"]["user_openid"]
    finally:
        await manager.stop()
        async with asyncio.timeout(5):
            await task
