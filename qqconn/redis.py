"""Shards of one bot across processes and machines: the identify limiter and the resume
checkpoints on Redis (redis-py's asyncio API; ``pip install 'qqconn[redis]'``).

:class:`RedisIdentifyLimiter` answers the question a
:class:`~qqconn.driver.permits.LocalIdentifyLimiter` answers (may this shard Identify now?),
for every process that shares the Redis: a permit is the key
``<prefix>:<app_id>:identify:<bucket>`` (bucket ``shard_id % max_concurrency``), taken with
``SET NX PX``: whoever sets it may Identify, and nobody else of that bucket until it expires.
The grant holds the bucket for the window plus ``handshake_s`` (the token, ``/gateway/bot``
and the WebSocket handshake lie between a grant and the Identify); once the Identify is sent
(:meth:`~RedisIdentifyLimiter.identify_sent`) the key is set to expire one window (and the
:data:`~qqconn.driver.permits.SEND_MARGIN`) from then, as the gateway counts. A shard that is
told "not now" gets the key's remaining lifetime as its wait; shards waiting on one bucket
race for it when it expires (Redis decides, atomically), so across processes the order is
first come, first served, not shard order.

:class:`RedisCheckpoints` keeps each shard's state-file document (``session_id``,
``last_seq`` and the rest of :data:`qqconn.checkpoint.SCHEMA_KEYS`; never a secret) under
``<prefix>:<app_id>:checkpoint:<shard_id>``, so a shard started on another machine, with no
state file, Resumes within ``resume_window_s`` (``ConnectionManager(checkpoints=...)``).

Redis going away never ends a live connection: a checkpoint save is written in the
background, retried with backoff and logged (``qqconn.redis_unavailable``, then
``qqconn.redis_recovered``); a limiter that cannot reach Redis raises, which the driver turns
into a deferred permit with no known wait: the shard stays AWAITING_PERMIT (state, snapshot
``identify_wait`` and the log say why) and asks again by the backoff ladder. Nothing is
skipped: an Identify happens only with a permit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from qqconn._log import get_logger
from qqconn.driver.permits import SEND_MARGIN, Deferred, Granted, PermitAnswer
from qqconn.errors import ConfigError
from qqconn.protocol import SessionStartLimit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("qqconn.redis needs redis-py: pip install 'qqconn[redis]'") from exc

__all__ = [
    "DEFAULT_PREFIX",
    "RedisCheckpoints",
    "RedisIdentifyLimiter",
    "check_url",
    "redis_client",
]

#: The first part of every key qqconn writes.
DEFAULT_PREFIX: Final = "qqconn"
#: A Redis call gives up after this long (the driver's own backoff does the retrying).
CALL_TIMEOUT_S: Final = 2.0
_SCHEMES: Final = ("redis", "rediss", "unix")

# Extend the grant to one window from the send, if it is still ours; claim it if it lapsed.
_SENT_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
"""


def redis_client(url: str, *, timeout_s: float = CALL_TIMEOUT_S) -> aioredis.Redis:
    """A redis-py asyncio client for ``url`` (``redis://host:port/db``, ``rediss://``,
    ``unix://``) whose calls fail within ``timeout_s`` and never retry on their own.
    Raises :class:`~qqconn.errors.ConfigError` for a URL it cannot use. Connects lazily."""
    check_url(url)
    try:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
    except ValueError as exc:
        raise ConfigError("redis", f"{url!r}: {exc}") from None


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL :func:`redis_client` can use, else
    :class:`~qqconn.errors.ConfigError` (field ``redis``) saying why."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("redis", f"{url!r}: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError("redis", f"must be a redis://, rediss:// or unix:// URL, got {url!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("redis", f"{url!r} names no host (e.g. redis://127.0.0.1:6379/0)")
    if port == 0:
        raise ConfigError("redis", f"{url!r}: port 0 is no port")
    return url


def _check_app(app_id: object) -> str:
    if not isinstance(app_id, str) or not app_id.strip() or any(c in app_id for c in " \n:"):
        raise ConfigError("app_id", f"must be a non-empty id without spaces or ':', got {app_id!r}")
    return app_id


class RedisIdentifyLimiter:
    """The identify limiter of every process sharing one Redis (docs/behaviour.md rule 17).

    ``client``: a redis-py asyncio client (:func:`redis_client`); the limiter does not close
    it. ``window_s`` is the policy's ``identify_window_s``; ``max_concurrency`` the starting
    value until ``/gateway/bot`` reports one (:meth:`observe`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        app_id: str,
        window_s: float = 5.0,
        max_concurrency: int = 1,
        handshake_s: float | None = None,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window_s > 0:
            raise ConfigError("window_s", f"must be positive, got {window_s!r}")
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ConfigError("max_concurrency", f"must be ≥ 1, got {max_concurrency!r}")
        self._r = client
        self.app_id = _check_app(app_id)
        self.window_s = float(window_s)
        self.max_concurrency = max_concurrency
        self.handshake_s = self.window_s if handshake_s is None else float(handshake_s)
        self.prefix = prefix
        self._clock = clock
        self._sent = client.register_script(_SENT_LUA)
        # One token per grant: identify_sent only ever extends a key this process set.
        self._tokens: dict[int, str] = {}
        self._remaining: int | None = None
        self._reset_at = float("-inf")
        #: Permits granted by this process (what a test or the bench reads).
        self.granted = 0

    def __repr__(self) -> str:
        return (
            f"<RedisIdentifyLimiter app_id={self.app_id!r} window_s={self.window_s:g} "
            f"max_concurrency={self.max_concurrency}>"
        )

    def key(self, shard_id: int) -> str:
        """The Redis key of ``shard_id``'s bucket."""
        return f"{self.prefix}:{self.app_id}:identify:{shard_id % self.max_concurrency}"

    def _window_ms(self) -> int:
        return max(1, round(self.window_s * (1 + SEND_MARGIN) * 1000))

    def observe(self, limit: SessionStartLimit) -> None:
        self.max_concurrency = limit.max_concurrency
        self._remaining = limit.remaining
        self._reset_at = self._clock() + limit.reset_after_ms / 1000.0

    async def request(self, shard_id: int) -> PermitAnswer:
        """May ``shard_id`` Identify now? Raises a redis error when Redis cannot answer."""
        if self._remaining is not None and self._remaining <= 0:
            wait = self._reset_at - self._clock()
            if wait > 0:
                return Deferred(
                    wait, "session_start_limit.remaining is 0: no Identify until reset_after"
                )
            self._remaining = None
        key = self.key(shard_id)
        token = f"{uuid.uuid4().hex}:{shard_id}"
        hold_ms = self._window_ms() + max(0, round(self.handshake_s * 1000))
        if await self._r.set(key, token, nx=True, px=hold_ms):
            self._tokens[shard_id] = token
            if self._remaining is not None:
                self._remaining -= 1
            self.granted += 1
            return Granted()
        ttl_ms = await self._r.pttl(key)
        wait = ttl_ms / 1000.0 if isinstance(ttl_ms, int) and ttl_ms > 0 else 0.05
        return Deferred(
            wait,
            f"identify bucket {shard_id % self.max_concurrency} is held in Redis "
            f"({self.max_concurrency} per {self.window_s:g} s): waiting for it",
        )

    async def identify_sent(self, shard_id: int) -> None:
        token = self._tokens.pop(shard_id, None) or f"{uuid.uuid4().hex}:{shard_id}"
        await self._sent(keys=[self.key(shard_id)], args=[token, self._window_ms()])

    def withdraw(self, shard_id: int) -> None:
        # A grant that was never used still holds its bucket until the key expires (at most
        # window + handshake_s): safer than guessing whether its Identify left.
        self._tokens.pop(shard_id, None)


class RedisCheckpoints:
    """Resume checkpoints on Redis: one key per app and shard, the latest document wins.

    ``client``: a redis-py asyncio client (:func:`redis_client`), not closed here. ``ttl_s``:
    a key nobody rewrote for this long disappears (the document's own age is judged against
    ``resume_window_s`` when it is loaded, whatever the TTL).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = 3600.0,
        retry_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        if not ttl_s > 0:
            raise ConfigError("ttl_s", f"must be positive, got {ttl_s!r}")
        self._r = client
        self.prefix = prefix
        self.ttl_s = float(ttl_s)
        self._retry_s = retry_s
        self._pending: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing: str | None = None
        self._log = get_logger("qqconn")
        #: Documents written, and writes that failed (then retried).
        self.written = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<RedisCheckpoints prefix={self.prefix!r} pending={len(self._pending)}>"

    def key(self, app_id: str, shard_id: int) -> str:
        """The Redis key of one shard's checkpoint."""
        return f"{self.prefix}:{_check_app(app_id)}:checkpoint:{shard_id}"

    @property
    def available(self) -> bool:
        """False while the last write failed (Redis unreachable)."""
        return self._failing is None

    async def load(self, app_id: str, shard: tuple[int, int]) -> object:
        text = await self._r.get(self.key(app_id, shard[0]))
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return "unreadable"  # judged as "not a JSON object", never resumed from

    def save(self, snapshot: dict[str, Any]) -> None:
        app_id, shard = snapshot.get("app_id"), snapshot.get("shard")
        if not isinstance(app_id, str) or not isinstance(shard, list) or not shard:
            return
        self._pending[self.key(app_id, int(shard[0]))] = json.dumps(snapshot, sort_keys=True)
        self._idle.clear()
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # written by the next save made on a loop (or flush)
            self._task = loop.create_task(self._write_all(), name="qqconn-redis-checkpoints")

    async def flush(self, timeout_s: float) -> None:
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._write_all(), name="qqconn-redis-checkpoints"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()

    async def aclose(self) -> None:
        """Stop writing (what is still pending is dropped, and logged)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            self._log.warning("qqconn.redis_checkpoints_unwritten", keys=len(self._pending))
            self._pending.clear()
        self._idle.set()

    async def _write_all(self) -> None:
        delay, most = self._retry_s
        ttl_ms = max(1, round(self.ttl_s * 1000))
        while self._pending:
            key, text = next(iter(self._pending.items()))
            try:
                await self._r.set(key, text, px=ttl_ms)
            except Exception as exc:  # Redis away: keep the newest document, try again later
                self.failures += 1
                detail = f"{type(exc).__name__}: {exc}"[:200]
                if self._failing is None:
                    self._log.warning(
                        "qqconn.redis_unavailable", what="checkpoint", error=detail, then="retry"
                    )
                self._failing = detail
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)
                continue
            if self._pending.get(key) is text:
                del self._pending[key]
            self.written += 1
            delay = self._retry_s[0]
            if self._failing is not None:
                self._log.info("qqconn.redis_recovered", what="checkpoint")
                self._failing = None
        self._idle.set()
