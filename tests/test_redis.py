"""qqconn.redis against a real redis-server (started on a free loopback port, stopped after):
the identify limiter shared by processes, the resume checkpoints, and Redis going away.

"Two processes" are two redis-py clients here (each its own connections, as two processes
would have); tests/test_cli_shards.py runs two real ``qqconn run`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from qqconn import ConnectionManager, State
from qqconn.driver.permits import Deferred, Granted
from qqconn.errors import ConfigError
from qqconn.protocol import SessionStartLimit
from qqconn.redis import RedisCheckpoints, RedisIdentifyLimiter, check_url, redis_client
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, GATEWAY_SLACK_S, HB_MS, INTENTS, Host
from tests.redis_support import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, used by name below

WINDOW_S = 0.3  # the client's identify_window_s; the fake enforces GATEWAY_SLACK_S less


@contextlib.asynccontextmanager
async def _client(server: RedisServer) -> AsyncIterator[Any]:
    client = redis_client(server.url, timeout_s=0.5)
    try:
        yield client
    finally:
        await client.aclose()


async def _until(predicate: Any, timeout: float, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- the limiter ----------------------------------------------------------------------------


async def test_one_permit_per_bucket_across_processes(redis_server: RedisServer) -> None:
    """Two clients (two processes): a bucket's key lets one Identify through; the other
    waits the key's remaining life, then gets it; the send resets the window to one window."""
    async with _client(redis_server) as a, _client(redis_server) as b:
        one = RedisIdentifyLimiter(a, app_id="102", window_s=WINDOW_S, handshake_s=0.2)
        two = RedisIdentifyLimiter(b, app_id="102", window_s=WINDOW_S, handshake_s=0.2)
        assert await one.request(0) == Granted()
        answer = await two.request(1)
        assert isinstance(answer, Deferred) and answer.wait_s is not None
        assert 0 < answer.wait_s <= WINDOW_S * 1.02 + 0.2 + 0.01
        assert "held in Redis" in answer.reason
        await one.identify_sent(0)
        ttl_ms = await a.pttl(one.key(0))
        assert 0 < ttl_ms <= round(WINDOW_S * 1.02 * 1000)
        await asyncio.sleep(ttl_ms / 1000 + 0.02)
        assert await two.request(1) == Granted()
        assert one.granted == 1 and two.granted == 1


async def test_max_concurrency_two_gives_two_buckets(redis_server: RedisServer) -> None:
    """max_concurrency 2 (from /gateway/bot): shards 0 and 1 both go; 2 and 3 wait."""
    async with _client(redis_server) as a, _client(redis_server) as b:
        one = RedisIdentifyLimiter(a, app_id="102", window_s=WINDOW_S)
        two = RedisIdentifyLimiter(b, app_id="102", window_s=WINDOW_S)
        for lim in (one, two):
            lim.observe(SessionStartLimit(1000, 1000, 86_400_000, 2))
        assert await one.request(0) == Granted() and await two.request(1) == Granted()
        assert isinstance(await one.request(2), Deferred)
        assert isinstance(await two.request(3), Deferred)


async def test_other_apps_do_not_share_a_bucket(redis_server: RedisServer) -> None:
    """The key is per app: another bot on the same Redis never waits for this one."""
    async with _client(redis_server) as a:
        assert await RedisIdentifyLimiter(a, app_id="1", window_s=5).request(0) == Granted()
        assert await RedisIdentifyLimiter(a, app_id="2", window_s=5).request(0) == Granted()


async def test_remaining_zero_waits_reset_after_without_asking_redis() -> None:
    """remaining 0: every Identify waits reset_after (no Redis needed to say so)."""
    client = redis_client("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens there
    try:
        lim = RedisIdentifyLimiter(client, app_id="102", window_s=WINDOW_S)
        lim.observe(SessionStartLimit(1000, 0, 30_000, 1))
        answer = await lim.request(0)
        assert isinstance(answer, Deferred) and answer.wait_s == pytest.approx(30.0, abs=0.5)
        assert "remaining is 0" in answer.reason
    finally:
        await client.aclose()


def test_bad_urls_and_ids_are_config_errors() -> None:
    for url in ("http://x", "redis://", "redis://h:0/0", "redis://h:notaport"):
        with pytest.raises(ConfigError):
            check_url(url)
    assert check_url("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError):
        RedisCheckpoints(object(), ttl_s=0)  # type: ignore[arg-type]


# -- against the fake gateway ---------------------------------------------------------------


def _policy(**kw: Any) -> Any:
    return replace(FAST, identify_window_s=WINDOW_S, **kw)


def _manager(gw: FakeGateway, host: Host, **kw: Any) -> ConnectionManager:
    return ConnectionManager(
        app_id=gw.app_id,
        client_secret=gw.client_secret,
        intents=INTENTS,
        policy=kw.pop("policy", _policy()),
        api_base=gw.api_base,
        token_url=gw.token_url,
        on_dispatch=host.on_dispatch,
        on_state_change=host.on_state_change,
        **kw,
    )


@contextlib.asynccontextmanager
async def _running(mgr: ConnectionManager) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(mgr.run())
    try:
        yield task
    finally:
        async with asyncio.timeout(10):
            await mgr.stop()
            await task


async def test_redis_away_an_identify_waits_visibly_then_goes(
    redis_server: RedisServer,
) -> None:
    """No Redis when a shard starts: it stays AWAITING_PERMIT (snapshot says why), sends no
    Identify, asks again by the backoff ladder; Redis back: it Identifies, once."""
    redis_server.stop()
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=5) as gw:
        gw.faults.enforce_session_limit = True
        gw.identify_window_s = WINDOW_S - GATEWAY_SLACK_S
        async with _client(redis_server) as client:
            lim = RedisIdentifyLimiter(client, app_id=gw.app_id, window_s=WINDOW_S)
            host = Host()
            mgr = _manager(gw, host, permits=lim, policy=_policy(backoff_s=(0.05, 0.1)))
            async with _running(mgr):
                await _until(lambda: (mgr.snapshot()["identify_wait"] or {}).get("reason"), 5)
                assert mgr.state is State.AWAITING_PERMIT
                assert "unavailable" in mgr.snapshot()["identify_wait"]["reason"]
                await asyncio.sleep(0.5)  # several asks, all refused by a missing Redis
                assert gw.identifies == 0 and mgr.state is State.AWAITING_PERMIT
                redis_server.start()
                await _until(lambda: mgr.state is State.ALIVE, 10)
            assert gw.identifies == 1 and lim.granted == 1 and gw.refused_starts == []


async def test_a_new_process_resumes_from_the_redis_checkpoint(
    redis_server: RedisServer,
) -> None:
    """A manager with no state file and no session of its own Resumes the one the store
    holds, and gets exactly the events it missed."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=6) as gw, _client(redis_server) as c:
        store = RedisCheckpoints(c)
        first = Host()
        mgr = _manager(gw, first, checkpoints=store)
        async with _running(mgr):
            await _until(lambda: mgr.state is State.ALIVE, 10)
            for n in range(3):
                await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": f"a{n}"})
            await _until(lambda: len(first.seqs()) == 3, 5)
        doc = json.loads(await c.get(store.key(gw.app_id, 0)))
        assert doc["session_id"] == gw.current_session_id and doc["last_seq"] == gw.session_seq()
        missed = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": "b"}) for _ in "xy"]

        second = Host()
        again = _manager(gw, second, checkpoints=RedisCheckpoints(c))
        async with _running(again):
            await _until(lambda: again.state is State.ALIVE, 10)
            await _until(lambda: len(second.seqs()) == 2, 5)
        assert second.seqs() == missed
        assert gw.identifies == 1 and gw.resumes == 1


async def test_redis_stopped_mid_run_never_ends_a_live_connection(
    redis_server: RedisServer,
) -> None:
    """Redis goes away while ALIVE: no new socket, every event delivered, the failed writes
    are logged and retried; Redis back: the newest checkpoint is written."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=7) as gw, _client(redis_server) as c:
        store = RedisCheckpoints(c, retry_s=(0.05, 0.2))
        lim = RedisIdentifyLimiter(c, app_id=gw.app_id, window_s=WINDOW_S)
        host = Host()
        mgr = _manager(gw, host, checkpoints=store, permits=lim)
        async with _running(mgr):
            await _until(lambda: mgr.state is State.ALIVE, 10)
            redis_server.stop()
            seqs = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE") for _ in range(5)]
            await _until(lambda: host.seqs() == seqs, 5)
            await _until(lambda: not store.available, 5)
            await asyncio.sleep(1.0)  # > 3 heartbeats with Redis gone
            assert mgr.state is State.ALIVE and len(gw.connections) == 1
            redis_server.start()
            await _until(lambda: store.available, 10)
            key = store.key(gw.app_id, 0)
            raw: list[Any] = [None]

            async def stored_seq() -> Any:
                raw[0] = await c.get(key)
                return raw[0] and json.loads(raw[0])["last_seq"]

            async with asyncio.timeout(10):
                while await stored_seq() != seqs[-1]:
                    await asyncio.sleep(0.05)
            assert store.failures >= 1
        assert gw.identifies == 1
