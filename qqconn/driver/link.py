"""The HTTP client and token source one run of a manager uses.

The host's own (a :class:`~qqconn.driver.shards.BotShards` gives its shards one client, and
closes it), else the app's shared ones (:func:`~qqconn.driver.apps.shared_app`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from qqconn.driver.apps import shared_app
from qqconn.driver.tokens import Secret
from qqconn.policy import Policy

__all__ = ["app_link"]


@contextlib.asynccontextmanager
async def app_link(
    shared_http: httpx.AsyncClient | None,
    tokens: Any,
    *,
    app_id: str,
    secret: Secret,
    token_url: str,
    clock: Callable[[], float],
    policy: Policy,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """Yield ``(http, tokens)``: ``shared_http`` with ``tokens`` (the host's: it closes the
    client, not us), else the app's shared client and token source (``tokens`` wins if given)."""
    if shared_http is not None:
        assert tokens is not None  # the manager builds one for a shared client
        yield shared_http, tokens
        return
    async with shared_app(
        app_id=app_id,
        secret=secret,
        token_url=token_url,
        clock=clock,
        margin_s=policy.token_refresh_margin_s,
        timeout_s=policy.connect_timeout_s,
    ) as link:
        yield link.http, tokens or link.tokens
