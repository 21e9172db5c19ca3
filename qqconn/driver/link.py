"""The HTTP client and token source one run of a manager uses.

The host's own (a :class:`~qqconn.driver.shards.BotShards` gives its shards one client, and
closes it), else the app's shared ones (:func:`~qqconn.driver.apps.shared_app`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from qqconn.driver.apps import SharedAppUse, shared_app
from qqconn.driver.tokens import Secret
from qqconn.policy import Policy

__all__ = ["AppLinkUse", "app_link"]


def app_link(
    shared_http: httpx.AsyncClient | None,
    tokens: Any,
    *,
    app_id: str,
    secret: Secret,
    token_url: str,
    clock: Callable[[], float],
    policy: Policy,
) -> AppLinkUse:
    """``async with app_link(...) as (http, tokens)``: ``shared_http`` with ``tokens`` (the
    host's: it closes the client, not us), else the app's shared client and token source
    (``tokens`` wins if given)."""
    if shared_http is not None:
        assert tokens is not None  # the manager builds one for a shared client
        return AppLinkUse(shared_http, tokens, None)
    use = shared_app(
        app_id=app_id,
        secret=secret,
        token_url=token_url,
        clock=clock,
        margin_s=policy.token_refresh_margin_s,
        timeout_s=policy.connect_timeout_s,
    )
    return AppLinkUse(None, tokens, use)


class AppLinkUse:
    """What :func:`app_link` returns: a class, not a generator-based context manager, since
    every running manager holds one for its whole run (see :class:`SharedAppUse`)."""

    __slots__ = ("_http", "_tokens", "_use")

    def __init__(
        self, http: httpx.AsyncClient | None, tokens: Any, use: SharedAppUse | None
    ) -> None:
        self._http, self._tokens, self._use = http, tokens, use

    async def __aenter__(self) -> tuple[httpx.AsyncClient, Any]:
        if self._use is None:
            assert self._http is not None
            return self._http, self._tokens
        link = await self._use.__aenter__()
        return link.http, self._tokens or link.tokens

    async def __aexit__(self, *exc: object) -> None:
        if self._use is not None:
            await self._use.__aexit__(*exc)
