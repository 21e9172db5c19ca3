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

A shared client is also a shared queue. httpx's pool, asked for more requests than it has
connections, queues the rest and re-scans that whole queue against every connection each
time a request starts or ends: with a thousand managers of one app starting together that
is quadratic work on the event loop (whole seconds at a time), which starved heartbeats and
handshakes until nothing came up. So the shared client admits at most
:data:`SHARED_HTTP_IN_FLIGHT` requests at a time (an ``asyncio.Semaphore`` in front of the
transport, whose waiters cost nothing per wake), and its pool keeps that many connections
alive, so a ramp neither queues inside httpx nor reopens sockets.

The identify limiter (docs/behaviour.md rule 17) is shared among managers of one app whose
``shard`` count is above one (the shards of one bot); a manager with ``shard=(0, 1)`` is a
bot of its own and keeps its own limiter unless one is passed in (``permits=``).
:class:`~qqconn.driver.shards.BotShards` passes its own, and ``qqconn.redis`` offers one that
spans processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from qqconn.driver.permits import LocalIdentifyLimiter
from qqconn.driver.tokens import Secret, TokenSource, tls_context

__all__ = [
    "SHARED_HTTP_IN_FLIGHT",
    "AppLink",
    "GatedTransport",
    "SharedAppUse",
    "shared_app",
    "shared_limiter",
]

#: Requests one app's shared client has in flight at once (and connections it keeps alive).
#: On loopback a request takes about a millisecond; against QQ tens: either way hundreds of
#: managers a second get their token and gateway URL, far more than QQ lets Identify.
SHARED_HTTP_IN_FLIGHT = 16


class _GatedStream(httpx.AsyncByteStream):
    """A response body that gives its permit back when it is closed (or fails)."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class GatedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that lets at most ``limit`` requests in at a time; a permit is held
    from sending the request until its response body is closed (httpx closes it once read).

    A request is never cancelled inside the inner transport: it runs on a task of its own, and
    a caller cancelled while waiting for it (an attempt's deadline, a stop) abandons it there.
    httpcore's pool, cancelled while it hands a request a connection that is still being
    opened, keeps that connection for ever (neither usable nor reaped): enough of them and
    every later request of the app ends in ``PoolTimeout`` against a healthy server, which a
    thousand managers ramping on a loaded machine reached. An abandoned request ends by the
    client's own timeouts; its response is then closed and its permit given back.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._gate = asyncio.Semaphore(limit)
        #: requests whose caller left: kept referenced until they end (then closed)
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._gate.acquire()
        task = asyncio.ensure_future(self._inner.handle_async_request(request))
        try:
            response = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                self._settle(task)
            else:
                self._abandoned.add(task)
                task.add_done_callback(self._settle)
            raise
        except BaseException:
            self._gate.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _GatedStream(response.stream, self._gate.release)
        return response

    def _settle(self, task: asyncio.Task[httpx.Response]) -> None:
        """An abandoned request ended: close its response (if any), then free its permit."""
        self._abandoned.discard(task)
        if task.cancelled() or task.exception() is not None:
            self._gate.release()
            return
        closing = asyncio.ensure_future(_close_then(task.result(), self._gate.release))
        self._abandoned.add(closing)
        closing.add_done_callback(self._abandoned.discard)

    async def aclose(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        await self._inner.aclose()


async def _close_then(response: httpx.Response, release: Callable[[], None]) -> None:
    try:
        await response.aclose()
    except Exception:  # the connection is gone already: nothing more to free
        pass
    finally:
        release()


def _shared_client(timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=SHARED_HTTP_IN_FLIGHT, max_keepalive_connections=SHARED_HTTP_IN_FLIGHT
    )
    inner = httpx.AsyncHTTPTransport(verify=tls_context(), limits=limits)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s), transport=GatedTransport(inner, SHARED_HTTP_IN_FLIGHT)
    )


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


def shared_app(
    *,
    app_id: str,
    secret: Secret,
    token_url: str,
    clock: Callable[[], float],
    margin_s: float,
    timeout_s: float,
) -> SharedAppUse:
    """``async with shared_app(...) as link``: the app's shared client and token source for
    as long as the block runs; the last user to leave closes the client."""
    return SharedAppUse(app_id, secret, token_url, clock, margin_s, timeout_s)


class SharedAppUse:
    """One use of an app's shared link (what :func:`shared_app` returns). A class, not a
    generator-based context manager: every running manager holds one for its whole run, and
    a suspended async generator with its context manager costs about 1 KiB."""

    __slots__ = ("_app", "_key", "_link", "_links")

    def __init__(
        self,
        app_id: str,
        secret: Secret,
        token_url: str,
        clock: Callable[[], float],
        margin_s: float,
        timeout_s: float,
    ) -> None:
        self._app = (app_id, secret, token_url, clock, margin_s, timeout_s)
        self._key = _key(app_id, secret, token_url, clock, margin_s, timeout_s)
        self._links: dict[_Key, AppLink] | None = None
        self._link: AppLink | None = None

    async def __aenter__(self) -> AppLink:
        links = self._links = _links.setdefault(asyncio.get_running_loop(), {})
        key = self._key
        link = links.get(key)
        if link is None:
            app_id, secret, token_url, clock, margin_s, timeout_s = self._app
            http = _shared_client(timeout_s)
            link = links[key] = AppLink(
                http, TokenSource(http, token_url, app_id, secret, clock, margin_s)
            )
        link.users += 1
        self._link = link
        return link

    async def __aexit__(self, *exc: object) -> None:
        link, links = self._link, self._links
        assert link is not None and links is not None
        self._link = None
        link.users -= 1
        if link.users == 0:
            if links.get(self._key) is link:
                del links[self._key]
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
