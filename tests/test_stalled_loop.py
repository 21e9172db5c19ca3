"""Rule 21: a stalled loop is not a dead peer (the fake gateway runs on a loop of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from structlog.testing import capture_logs

from qqconn import ConnectionManager, State
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, HB_MS, INTENTS

STALL_S = 0.6  # longer than the ACK deadline (0.15 s) and than a heartbeat interval (0.3 s)


@contextlib.contextmanager
def gateway_thread() -> Iterator[FakeGateway]:
    """The fake gateway on its own loop in a thread, so a stall of the client's loop does not
    stop it acknowledging heartbeats."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gw = FakeGateway(heartbeat_interval_ms=HB_MS, seed=1)
    try:
        asyncio.run_coroutine_threadsafe(gw.__aenter__(), loop).result(10)
        yield gw
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(gw.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.asynccontextmanager
async def managed(gw: FakeGateway) -> AsyncIterator[ConnectionManager]:
    mgr = ConnectionManager(
        app_id=gw.app_id,
        client_secret="s3cret",
        intents=INTENTS,
        policy=FAST,
        api_base=gw.api_base,
        token_url=gw.token_url,
        rng=random.Random(7),
    )
    task = asyncio.create_task(mgr.run())
    try:
        yield mgr
    finally:
        async with asyncio.timeout(5):
            await mgr.stop()
            with contextlib.suppress(Exception):
                await task


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def stall_while_a_heartbeat_is_out(mgr: ConnectionManager) -> None:
    """Block the loop (time.sleep in a callback) right after a heartbeat went out."""
    await until(lambda: mgr.machine.awaiting_ack, timeout=5)
    time.sleep(STALL_S)


async def test_an_ack_late_only_because_our_loop_stalled_is_no_zombie() -> None:
    """The client's loop is blocked longer than the ACK deadline while the gateway keeps
    acknowledging: the late timers are recognised as a stall, the ACK is read, no connection
    ends and heartbeats go on."""
    with gateway_thread() as gw, capture_logs() as logs:
        async with managed(gw) as mgr:
            await until(lambda: mgr.state is State.ALIVE and mgr.machine.acks >= 2)
            for _ in range(3):  # bounded: three stalls, each after a heartbeat went out
                await stall_while_a_heartbeat_is_out(mgr)
                acks = mgr.machine.acks
                await until(lambda acks=acks: mgr.machine.acks > acks, timeout=5)
            await asyncio.sleep(3 * HB_MS / 1000)
            assert mgr.state is State.ALIVE
            assert len(gw.connections) == 1
    assert any(e["event"] == "qqconn.loop_stalled" for e in logs)
    assert not [e for e in logs if e["event"] == "qqconn.connection_ended"]


async def test_a_dead_peer_is_still_found_after_a_stall() -> None:
    """The gateway stops acknowledging and the client's loop stalls: the stall is excused once,
    and the zombie is still detected within two intervals of the last ACK plus the stall."""
    with gateway_thread() as gw, capture_logs() as logs:
        async with managed(gw) as mgr:
            await until(lambda: mgr.state is State.ALIVE and mgr.machine.acks >= 2)
            gw.faults.ack = False
            last_ack = time.monotonic()  # no ACK is sent from here on
            await stall_while_a_heartbeat_is_out(mgr)
            await until(lambda: gw.connections[0].closed_at is not None, timeout=5)
            ended = time.monotonic()
            assert ended - last_ack <= 2 * HB_MS / 1000 + STALL_S + 0.3
    zombies = [e for e in logs if e["event"] == "qqconn.connection_ended"]
    assert zombies and zombies[0]["kind"] == "zombie"
