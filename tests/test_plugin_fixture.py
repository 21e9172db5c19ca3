"""The README's adapter-author example, run as written against the plugin's `fake_gateway` fixture."""

from __future__ import annotations

import asyncio
from typing import Any

import qqconn


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
