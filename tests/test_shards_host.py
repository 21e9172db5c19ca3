"""Hosts of many shards and many bots in one process: what the managers of one app share
(one HTTP client, one token source, and for a sharded bot one limiter), and the
multi-tenant pattern of the README (three bots of two shards each, side by side)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import pytest

from qqconn import BotShards, ConnectionManager, FatalError, State
from qqconn.driver import apps
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, GATEWAY_SLACK_S, HB_MS, INTENTS

WINDOW_S = 0.4  # the client's identify_window_s
GATEWAY_WINDOW_S = WINDOW_S - GATEWAY_SLACK_S  # the fake's
POLICY = replace(FAST, identify_window_s=WINDOW_S)


async def _until(predicate: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _manager(gw: FakeGateway, shard: tuple[int, int], **kw: Any) -> ConnectionManager:
    return ConnectionManager(
        app_id=gw.app_id,
        client_secret=gw.client_secret,
        intents=INTENTS,
        shard=shard,
        policy=POLICY,
        api_base=gw.api_base,
        token_url=gw.token_url,
        **kw,
    )


def _two_shards(gw: FakeGateway, **kw: Any) -> BotShards:
    return BotShards(
        app_id=gw.app_id,
        client_secret=gw.client_secret,
        intents=INTENTS,
        shards=2,
        policy=POLICY,
        api_base=gw.api_base,
        token_url=gw.token_url,
        **kw,
    )


async def test_hand_built_managers_of_one_app_share_client_tokens_and_limiter() -> None:
    """Two managers the host built itself (shards 0/2 and 1/2): one HTTP client, one token
    source, one limiter, so one token request and Identifies a window apart; the client is
    closed when the last of them ends."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=21) as gw:
        gw.faults.enforce_session_limit = True
        gw.identify_window_s = GATEWAY_WINDOW_S
        one, two = _manager(gw, (0, 2)), _manager(gw, (1, 2))
        tasks = [asyncio.create_task(m.run()) for m in (one, two)]
        try:
            await _until(lambda: one.state is State.ALIVE and two.state is State.ALIVE, 15)
            assert one._tokens is two._tokens
            assert one.permits is two.permits
            links = apps._links[asyncio.get_running_loop()]
            (link,) = [x for k, x in links.items() if k[0] == gw.app_id]
            assert link.users == 2
            token_posts = [r for r in gw.http_requests if "AccessToken" in r.path]
            assert len(token_posts) == 1
            (t0, _), (t1, _) = gw.identify_log
            assert t1 - t0 >= GATEWAY_WINDOW_S and gw.refused_starts == []
        finally:
            for m in (one, two):
                await m.stop()
            await asyncio.gather(*tasks)
        assert link.users == 0 and link.http.is_closed
        assert not [k for k in links if k[0] == gw.app_id]


async def test_one_shard_bots_keep_their_own_limiter() -> None:
    """A manager with shard (0, 1) is a bot of its own: no limiter shared with another."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=22) as gw:
        one, two = _manager(gw, (0, 1)), _manager(gw, (0, 1))
        assert one.permits is not two.permits


async def test_three_bots_of_two_shards_in_one_process() -> None:
    """The multi-tenant pattern: one BotShards per bot in one TaskGroup. Every bot's shards
    come up; the bots never wait for one another (each app has its own limiter: their first
    Identifies fall in one window); one bot's FATAL ends that bot only."""
    async with contextlib.AsyncExitStack() as stack:
        gws = []
        for n in range(3):
            gw = await stack.enter_async_context(
                FakeGateway(app_id=f"10200000{n}", heartbeat_interval_ms=HB_MS, seed=30 + n)
            )
            gw.faults.enforce_session_limit = True
            gw.identify_window_s = GATEWAY_WINDOW_S
            gws.append(gw)
        bots = [_two_shards(gw) for gw in gws]
        outcome: dict[int, BaseException | None] = {}

        async def run(i: int) -> None:
            try:
                await bots[i].run()
                outcome[i] = None
            except FatalError as exc:
                outcome[i] = exc

        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(run(i))
            await _until(lambda: all(b.all_alive for b in bots), 20)
            firsts = [gw.identify_log[0][0] for gw in gws]
            assert max(firsts) - min(firsts) < WINDOW_S
            assert all(gw.refused_starts == [] for gw in gws)
            await gws[1].close(4915)  # bot 1 is banned: both its shards' sockets
            await _until(lambda: 1 in outcome, 15)
            assert all(b.all_alive for i, b in enumerate(bots) if i != 1)
            for b in (bots[0], bots[2]):
                await b.stop()
        assert isinstance(outcome[1], FatalError) and not outcome[1].retryable
        assert outcome[0] is None and outcome[2] is None


async def test_keep_others_one_shard_fatal_and_the_host_starts_it_again() -> None:
    """on_shard_fatal="keep_others": one shard's FATAL is reported once to on_fatal and the
    other shard carries on, untouched; the host starts the failed shard again as the README
    says (a BotShards of that one shard id, sharing the first one's limiter), which comes up
    without breaking the identify limit; run() raises the FATAL only once every shard ended."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=23) as gw:
        gw.faults.enforce_session_limit = True
        gw.identify_window_s = GATEWAY_WINDOW_S
        seen: list[tuple[int, bool]] = []

        bot = _two_shards(
            gw, on_shard_fatal="keep_others", on_fatal=lambda i, e: seen.append((i, e.retryable))
        )
        task = asyncio.create_task(bot.run())
        again: BotShards | None = None
        again_task: asyncio.Task[None] | None = None
        try:
            await _until(lambda: bot.all_alive, 15)
            first_session = gw.shard_session_id(0)
            (sock,) = [
                c.index
                for c in gw.connections
                if c.is_open and c.session_id == gw.shard_session_id(1)
            ]
            await gw.close(4915, index=sock)  # shard 1 alone is told "banned"
            await _until(lambda: bot.managers[1].state is State.FATAL, 15)
            await asyncio.sleep(WINDOW_S)  # the survivor is left alone meanwhile
            assert seen == [(1, False)] and set(bot.fatal) == {1}
            assert bot.managers[0].state is State.ALIVE and not task.done()
            assert gw.shard_session_id(0) == first_session
            again = _two_shards(gw, shard_ids=[1], permits=bot.permits)
            again_task = asyncio.create_task(again.run())
            await _until(lambda: again is not None and again.all_alive, 15)
            assert bot.managers[0].state is State.ALIVE
            assert gw.refused_starts == [] and [s for _, s in gw.identify_log] == [0, 1, 1]
        finally:
            if again is not None:
                await again.stop()
            await bot.stop()
            async with asyncio.timeout(10):
                if again_task is not None:
                    await again_task
                with contextlib.suppress(FatalError):
                    await task
        with pytest.raises(FatalError) as info:
            task.result()
        assert not info.value.retryable
