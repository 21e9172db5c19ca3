"""Identify permits and refusals (docs/behaviour.md rules 17 and 18): the machine's rows, the
in-process limiter, and shards against the fake gateway that enforces session_start_limit."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from typing import Any

import pytest

from qqconn import BotShards, ConnectionManager
from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.checkpoint import Resumable
from qqconn.driver.permits import Deferred, Granted, LocalIdentifyLimiter
from qqconn.endings import EndingKind
from qqconn.errors import FatalError
from qqconn.machine import ConnectionMachine, State
from qqconn.policy import Policy
from qqconn.protocol import SessionStartLimit, parse_gateway_bot
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, GATEWAY_SLACK_S, HB_MS, INTENTS

# -- the machine ------------------------------------------------------------------------------


def test_identify_waits_for_a_permit_before_its_socket_opens() -> None:
    """A fresh machine asks for a permit and opens no socket until it is granted."""
    m = ConnectionMachine(Policy(), rng=random.Random(0))
    out = m.handle(ev.Started(0.0))
    assert cmd.RequestIdentifyPermit() in out
    assert not [c for c in out if isinstance(c, cmd.OpenSocket)]
    assert m.state is State.AWAITING_PERMIT
    out = m.handle(ev.IdentifyPermitted(0.1))
    assert cmd.OpenSocket(1, refresh_token=False) in out
    assert m.state is State.CONNECTING


def test_resume_takes_no_permit() -> None:
    """A machine holding a session opens its socket at once: a Resume needs no permit."""
    m = ConnectionMachine(Policy(), rng=random.Random(0), restored=Resumable("sid", 4))
    out = m.handle(ev.Started(0.0))
    assert cmd.OpenSocket(1, refresh_token=False) in out
    assert cmd.RequestIdentifyPermit() not in out
    assert m.state is State.CONNECTING


def test_deferred_permit_waits_visibly_then_asks_again() -> None:
    """A deferral starts the PERMIT timer for the limiter's wait, shows in the snapshot, and
    the timer asks again; an unknown wait backs off by the ladder."""
    m = ConnectionMachine(Policy(), rng=random.Random(0))
    m.handle(ev.Started(0.0))
    out = m.handle(ev.IdentifyPermitDeferred(0.0, 3600.0, "remaining is 0"))
    assert cmd.StartTimer(ev.Timer.PERMIT, 3600.0, 0) in out
    snap = m.snapshot_fields()
    assert snap["state"] == "awaiting_permit"
    assert snap["identify_wait"] == {"wait_s": 3600.0, "reason": "remaining is 0"}
    assert cmd.RequestIdentifyPermit() in m.handle(ev.TimerFired(ev.Timer.PERMIT, 0, 3600.0))
    out = m.handle(ev.IdentifyPermitDeferred(3600.0, None, "store unreachable"))
    timers = [c for c in out if isinstance(c, cmd.StartTimer)]
    assert timers and 0 < timers[0].delay_s <= max(Policy().backoff_s) * 1.2
    m.handle(ev.IdentifyPermitted(3700.0))
    assert m.snapshot_fields()["identify_wait"] is None


def _refuse_once(m: ConnectionMachine, t: float) -> list[cmd.Command]:
    if m.state is State.BACKOFF:
        m.handle(ev.TimerFired(ev.Timer.BACKOFF, m.attempt, t))
    m.handle(ev.IdentifyPermitted(t))
    m.handle(ev.SocketOpened(m.attempt, t))
    m.handle(ev.HelloReceived(m.attempt, t, 1000))
    return m.handle(ev.InvalidSessionReceived(m.attempt, t + 0.1, False))


def test_identify_refused_five_times_is_fatal_not_retryable() -> None:
    """Op 9 answering an Identify is its own ending, never a quick drop; the fifth in a row is
    FATAL, not retryable, naming intents, the IP allow-list and the sandbox."""
    m = ConnectionMachine(Policy(), rng=random.Random(0))
    m.handle(ev.Started(0.0))
    for k in range(4):
        _refuse_once(m, 10.0 * k)
        assert m.state is State.BACKOFF
        assert m.last_ending is not None and m.last_ending.kind is EndingKind.IDENTIFY_REFUSED
        assert m.quick_drops == 0 and m.identify_refusals == k + 1
    out = _refuse_once(m, 50.0)
    assert m.state is State.FATAL and m.fatal is not None and not m.fatal.retryable
    for word in ("intents", "allow-list", "sandbox"):
        assert word in m.fatal.reason
    assert [c for c in out if isinstance(c, cmd.NotifyFatal)]


def test_ready_resets_the_refusal_count() -> None:
    """Refusals count in a row: READY in between starts the count again."""
    m = ConnectionMachine(Policy(), rng=random.Random(0))
    m.handle(ev.Started(0.0))
    _refuse_once(m, 0.0)
    assert m.identify_refusals == 1
    m.handle(ev.TimerFired(ev.Timer.BACKOFF, m.attempt, 10.0))
    m.handle(ev.IdentifyPermitted(10.0))
    m.handle(ev.SocketOpened(m.attempt, 10.0))
    m.handle(ev.HelloReceived(m.attempt, 10.0, 1000))
    from qqconn.testing.events import ready_received

    m.handle(ready_received(m.attempt, 10.1))
    assert m.state is State.ALIVE and m.identify_refusals == 0


def test_plain_close_after_identify_keeps_the_quick_drop_rule() -> None:
    """A close (no op 9) right after Identify is a quick drop: three of them end in FATAL,
    retryable, as before rule 18."""
    m = ConnectionMachine(Policy(), rng=random.Random(0))
    m.handle(ev.Started(0.0))
    for k in range(3):
        t = 20.0 * k
        if m.state is State.BACKOFF:
            m.handle(ev.TimerFired(ev.Timer.BACKOFF, m.attempt, t))
        m.handle(ev.IdentifyPermitted(t))
        m.handle(ev.SocketOpened(m.attempt, t))
        m.handle(ev.HelloReceived(m.attempt, t, 1000))
        m.handle(ev.SocketClosed(m.attempt, t + 0.2, 1000))
    assert m.state is State.FATAL and m.fatal is not None and m.fatal.retryable
    assert m.quick_drops == 3


# -- the limiter ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limiter_one_per_window_per_bucket_in_order() -> None:
    """max_concurrency 1: shards get permits one window apart, in the order they asked."""
    clock = Clock()
    lim = LocalIdentifyLimiter(window_s=5.0, clock=clock)
    assert lim.answer(0) == Granted()
    waits = [lim.answer(i) for i in (1, 2, 3)]
    assert all(isinstance(w, Deferred) for w in waits)
    assert [round(w.wait_s or 0, 2) for w in waits if isinstance(w, Deferred)] == [5.1, 10.2, 15.3]
    clock.now += 5.1
    assert lim.answer(2) != Granted()  # not its turn: shard 1 is ahead
    assert lim.answer(1) == Granted()


def test_limiter_two_buckets_with_max_concurrency_two() -> None:
    """max_concurrency 2: buckets shard % 2 each let one Identify through per window."""
    clock = Clock()
    lim = LocalIdentifyLimiter(window_s=5.0, clock=clock)
    lim.observe(SessionStartLimit(1000, 1000, 86_400_000, 2))
    assert lim.answer(0) == Granted() and lim.answer(1) == Granted()
    assert isinstance(lim.answer(2), Deferred) and isinstance(lim.answer(3), Deferred)


def test_limiter_remaining_zero_waits_reset_after() -> None:
    """remaining 0 defers every Identify for reset_after, then lets them through."""
    clock = Clock()
    lim = LocalIdentifyLimiter(window_s=5.0, clock=clock)
    lim.observe(SessionStartLimit(1000, 0, 30_000, 1))
    answer = lim.answer(0)
    assert isinstance(answer, Deferred) and answer.wait_s == pytest.approx(30.0)
    assert "remaining is 0" in answer.reason
    clock.now += 30.0
    assert lim.answer(0) == Granted()


def test_gateway_bot_parse_keeps_url_shards_and_limit() -> None:
    """/gateway/bot's url, shards and session_start_limit are all read; bad fields are None."""
    body = (
        b'{"url":"wss://x/ws","shards":4,"session_start_limit":'
        b'{"total":1000,"remaining":998,"reset_after":14400000,"max_concurrency":2}}'
    )
    got = parse_gateway_bot(200, body)
    assert got.url == "wss://x/ws" and got.shards == 4
    assert got.limit == SessionStartLimit(1000, 998, 14_400_000, 2)
    bad = parse_gateway_bot(200, b'{"url":"wss://x","shards":"4","session_start_limit":{}}')
    assert bad.shards is None and bad.limit is None


# -- against the fake gateway -----------------------------------------------------------------

WINDOW_S = 0.4  # the client's identify_window_s
GATEWAY_WINDOW_S = WINDOW_S - GATEWAY_SLACK_S  # the fake's


def _gateway(max_concurrency: int = 1) -> FakeGateway:
    gw = FakeGateway(heartbeat_interval_ms=HB_MS, seed=1, max_concurrency=max_concurrency)
    gw.faults.enforce_session_limit = True
    gw.identify_window_s = GATEWAY_WINDOW_S
    return gw


def _bot(gw: FakeGateway, shards: int | str, **kw: Any) -> BotShards:
    return BotShards(
        app_id=gw.app_id,
        client_secret="s3cret",
        intents=INTENTS,
        shards=shards,  # type: ignore[arg-type]
        policy=_policy(),
        api_base=gw.api_base,
        token_url=gw.token_url,
        **kw,
    )


def _policy(**kw: Any) -> Policy:
    from dataclasses import replace

    return replace(FAST, identify_window_s=WINDOW_S, **kw)


@contextlib.asynccontextmanager
async def _running(bot: BotShards) -> Any:
    task = asyncio.create_task(bot.run())
    try:
        yield task
    finally:
        async with asyncio.timeout(10):
            await bot.stop()
            with contextlib.suppress(FatalError):
                await task


async def _until(predicate: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("mc", [1, 2])
async def test_four_shards_identify_within_the_limit(mc: int) -> None:
    """4 shards (recommended by /gateway/bot): at most max_concurrency Identifies per window,
    shards of a bucket in shard order, none refused by the fake, all ALIVE."""
    async with _gateway(mc) as gw:
        gw.recommended_shards = 4
        bot = _bot(gw, "auto")
        async with _running(bot):
            await _until(lambda: bot.all_alive, 15.0)
            assert bot.count == 4 and set(bot.managers) == {0, 1, 2, 3}
            snap = bot.snapshot()
            assert snap["state"] == "alive" and set(snap["shards"]) == {"0", "1", "2", "3"}
        log = list(gw.identify_log)
        assert gw.refused_starts == []
        assert sorted(s for _, s in log) == [0, 1, 2, 3]
        for bucket in range(mc):
            times = [t for t, s in log if s % mc == bucket]
            assert [s for _, s in log if s % mc == bucket] == sorted(
                s for _, s in log if s % mc == bucket
            )
            assert all(b - a >= GATEWAY_WINDOW_S for a, b in itertools.pairwise(times)), log
        # never more than mc in any window (as the fake counts them)
        for t0, _ in log:
            assert sum(1 for t, _ in log if t0 <= t < t0 + GATEWAY_WINDOW_S) <= mc, log
        # and the limit is used: mc Identifies (one per bucket) in the first window
        first = log[0][0]
        assert sorted(s for t, s in log if t < first + WINDOW_S) == list(range(mc))


async def test_remaining_zero_waits_reset_after() -> None:
    """remaining 0 at /gateway/bot: no Identify until reset_after has passed; the shard is
    AWAITING_PERMIT meanwhile, and the fake refuses nothing."""
    async with _gateway() as gw:
        gw.session_start_remaining = 0
        gw.session_start_reset_after_ms = 1200
        loop = asyncio.get_running_loop()
        began = loop.time()
        bot = _bot(gw, 1)
        async with _running(bot):
            await bot.started()
            await _until(lambda: bot.managers[0].state is State.AWAITING_PERMIT, 5.0)
            assert bot.managers[0].snapshot()["identify_wait"] is not None
            await _until(lambda: bot.all_alive, 10.0)
        assert loop.time() - began >= 1.1
        assert gw.refused_starts == [] and len(gw.identify_log) == 1


async def test_resume_takes_no_permit_against_the_fake() -> None:
    """A manager resuming a known session never asks the limiter and sends no Identify."""
    async with _gateway() as gw:
        first = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=INTENTS,
            policy=_policy(),
            api_base=gw.api_base,
            token_url=gw.token_url,
        )
        task = asyncio.create_task(first.run())
        await _until(lambda: first.state is State.ALIVE, 10.0)
        sid = first.machine.session_id
        assert sid is not None
        await first.stop()
        await task
        lim = LocalIdentifyLimiter(window_s=WINDOW_S)
        again = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=INTENTS,
            policy=_policy(),
            api_base=gw.api_base,
            token_url=gw.token_url,
            resume_from=(sid, first.machine.last_seq),
            permits=lim,
        )
        task = asyncio.create_task(again.run())
        await _until(lambda: again.state is State.ALIVE, 10.0)
        await again.stop()
        await task
        assert lim.granted == 0 and len(gw.identify_log) == 1


async def test_identify_refused_five_times_against_the_fake() -> None:
    """Intents not granted (op 9 then 4903, again and again): FATAL, not retryable, after
    max_identify_refusals Identifies; the reason names the likely causes."""
    async with _gateway() as gw:
        gw.faults.allowed_intents = 1
        mgr = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=INTENTS,
            policy=_policy(max_reconnect_attempts=50),
            api_base=gw.api_base,
            token_url=gw.token_url,
        )
        async with asyncio.timeout(20):
            with pytest.raises(FatalError) as info:
                await mgr.run()
        assert not info.value.retryable and "intents" in info.value.reason
        assert mgr.machine.identify_refusals == 5


async def test_shard_fatal_stop_all_stops_every_shard() -> None:
    """on_shard_fatal="stop_all": one shard's FATAL stops the others and run() raises it;
    on_fatal(shard_id, error) is called once for it."""
    async with _gateway(2) as gw:
        seen: list[int] = []
        bot = _bot(gw, 2, on_fatal=lambda i, e: seen.append(i))
        async with _running(bot) as task:
            await _until(lambda: bot.all_alive, 10.0)
            await gw.close(4915)  # "bot banned" on one socket: that shard is FATAL
            async with asyncio.timeout(15):
                with pytest.raises(FatalError):
                    await task
        assert seen and all(m.machine.is_terminal for m in bot.managers.values())


async def test_limiter_a_grant_never_sent_is_handed_back() -> None:
    """A grant whose attempt ended before its Identify left started no session: the shard asking
    again gets a permit at once, and the window still runs from the last Identify sent."""
    clock = Clock()
    lim = LocalIdentifyLimiter(window_s=5.0, clock=clock)
    assert lim.answer(0) == Granted()
    clock.now += 0.2  # shard 0's socket closed before Hello; it asks again after its backoff
    assert lim.answer(0) == Granted()
    await lim.identify_sent(0)
    clock.now += 1.0
    lim.unused(0)  # after the send: nothing to hand back
    held = lim.answer(1)
    assert isinstance(held, Deferred) and held.wait_s == pytest.approx(5.1 - 1.0)
    clock.now += 5.0
    assert lim.answer(1) == Granted()
    lim.unused(1)  # shard 1's attempt failed before Identify
    assert lim.answer(2) == Granted()  # the bucket counts only what was sent
    assert isinstance(lim.answer(3), Deferred)  # shard 2's grant holds the bucket meanwhile
    lim.withdraw(2)  # a stopped shard's unsent grant is handed back too
    assert lim.answer(3) == Granted()
