"""docs/migration.md's "after" adapter, run as written on the fake gateway: it connects, hands a
group message to its handler, replies through the message API, survives a drop by resuming,
and says when qqconn gives up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qqconn.testing import FakeGateway, fast_policy

DOC = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text("utf-8")


def _after_adapter() -> Any:
    section = DOC.split("## After", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace: dict[str, Any] = {"__name__": "migration_after"}
    exec(compile(code, "docs/migration.md", "exec"), namespace)
    return namespace["QQAdapter"]


async def test_after_adapter_replies_and_resumes_after_a_drop() -> None:
    """The migrated adapter replies to each message once, including after a drop (Resume)."""
    adapter_cls = _after_adapter()
    heard: list[str] = []

    async def on_message(text: str, reply: Any) -> None:
        heard.append(text)
        await reply(f"you said {text}")

    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        adapter = adapter_cls(
            gw.app_id,
            gw.client_secret,
            on_message,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=fast_policy(),
        )
        try:
            await adapter.start()
            assert adapter.connected
            await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {**_group(), "content": " one"})
            await gw.wait_for(lambda: len(gw.replies("group")) == 1, timeout=10)
            await gw.drop()
            await gw.wait_for(lambda: gw.resumes == 1 and adapter.connected, timeout=10)
            await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {**_group(), "content": " two"})
            await gw.wait_for(lambda: len(gw.replies("group")) == 2, timeout=10)
        finally:
            await adapter.stop()
    assert heard == ["one", "two"]
    first, second = gw.replies("group")
    assert first.content == "you said one" and second.content == "you said two"
    assert first.body["msg_id"] == "m-1" and first.target == "g-1"
    assert first.headers["authorization"] == "QQBot ***"
    assert first.headers["x-union-appid"] == gw.app_id
    assert adapter.failure is None


async def test_after_adapter_reports_a_banned_bot_instead_of_spinning() -> None:
    """A fatal close reaches the adapter's on_fatal once; no more connections are opened."""
    adapter_cls = _after_adapter()

    async def on_message(text: str, reply: Any) -> None:
        raise AssertionError("no message expected")

    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        gw.faults.identify_close = 4914
        adapter = adapter_cls(
            gw.app_id,
            gw.client_secret,
            on_message,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=fast_policy(),
        )
        try:
            try:
                await adapter.start()
            except Exception as exc:
                assert type(exc).__name__ == "FatalError"
            await gw.wait_for(lambda: adapter.failure is not None, timeout=10)
        finally:
            await adapter.stop()
        assert adapter.failure.close_code == 4914 and not adapter.failure.retryable
        assert len(gw.connections) == 1


def _group() -> dict[str, Any]:
    return {
        "id": "m-1",
        "group_openid": "g-1",
        "author": {"member_openid": "u-1"},
        "timestamp": "2026-01-01T00:00:00+08:00",
    }
