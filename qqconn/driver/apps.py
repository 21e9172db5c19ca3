"""What the managers of one app share in a process: one HTTP client, one token source, and,
for the shards of a sharded bot, one identify limiter.

QQ hands out one access token per app: a thousand managers of one app each fetching and
refreshing their own, each with a connection pool of its own, is waste (issue 10). So a
:class:`~qqconn.driver.manager.ConnectionManager` that was not handed ``http=`` / ``tokens=``
takes them from this registry when its run starts, and gives them back when it ends: the
first manager of an app on an event loop opens the client, the last one closes it. Nothing
to set up; a host that builds its managers itself shares without knowing.

The key is everything that shapes those objects: the event loop, the app id, the secret (a
manager given another secret is another credential, not a sharer), the token URL, the clock,
the token refresh margin and the connect timeout. Managers that differ in any of them do not
share, which is always safe.

The identify limiter (docs/behaviour.md rule 17) is shared among managers of one app whose
``shard`` count is above one (the shards of one bot); a manager with ``shard=(0, 1)`` is a
bot of its own and keeps its own limiter unless one is passed in (``permits=``).
:class:`~qqconn.driver.shards.BotShards` passes its own, and ``qqconn.redis`` offers one that
spans processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from qqconn.driver.permits import LocalIdentifyLimiter
from qqconn.driver.tokens import Secret, TokenSource, tls_context

__all__ = ["AppLink", "shared_app", "shared_limiter"]


@dataclass(eq=False, slots=True)
class AppLink:
    """One app's HTTP client and token source on one event loop, and how many use them."""

    http: httpx.AsyncClient
    tokens: TokenSource
    users: int = 0
    limiters: dict[tuple[int, float], LocalIdentifyLimiter] = field(default_factory=dict)


_Key = tuple[str, str, str, int, float, float]
_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, AppLink]] = (
    weakref.WeakKeyDictionary()
)
# Limiters outlive a run (a manager reruns with the same one), so they live beside the links.
_limiters: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int, float, int], LocalIdentifyLimiter]
] = weakref.WeakKeyDictionary()


def _key(
    app_id: str,
    secret: Secret,
    token_url: str,
    clock: Callable[[], float],
    margin_s: float,
    timeout_s: float,
) -> _Key:
    # The secret enters the key as a digest, so the registry holds no second copy of it.
    digest = hashlib.sha256(secret.reveal().encode("utf-8")).hexdigest()
    return (app_id, digest, token_url, id(clock), margin_s, timeout_s)


@contextlib.asynccontextmanager
async def shared_app(
    *,
    app_id: str,
    secret: Secret,
    token_url: str,
    clock: Callable[[], float],
    margin_s: float,
    timeout_s: float,
) -> AsyncIterator[AppLink]:
    """The app's shared client and token source for as long as the block runs; the last
    user to leave closes the client."""
    loop = asyncio.get_running_loop()
    links = _links.setdefault(loop, {})
    key = _key(app_id, secret, token_url, clock, margin_s, timeout_s)
    link = links.get(key)
    if link is None:
        http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), verify=tls_context())
        link = links[key] = AppLink(
            http, TokenSource(http, token_url, app_id, secret, clock, margin_s)
        )
    link.users += 1
    try:
        yield link
    finally:
        link.users -= 1
        if link.users == 0:
            if links.get(key) is link:
                del links[key]
            await link.http.aclose()


def shared_limiter(
    *, app_id: str, shard_count: int, window_s: float, clock: Callable[[], float]
) -> LocalIdentifyLimiter:
    """The identify limiter the shards of one sharded bot share on this event loop."""
    loop = asyncio.get_running_loop()
    table = _limiters.setdefault(loop, {})
    key = (app_id, shard_count, window_s, id(clock))
    limiter = table.get(key)
    if limiter is None:
        limiter = table[key] = LocalIdentifyLimiter(window_s=window_s, clock=clock)
    return limiter
