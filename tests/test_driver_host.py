"""The host lane (qqconn/driver/host.py): callbacks run in order, off the reader; a slow or
raising callback changes nothing; the fatal notify runs to its end even if it calls stop()."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from qqconn import ConnectionManager, FatalError, State
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import HB_MS, manager_for, running


async def test_raising_callbacks_are_logged_and_change_nothing() -> None:
    """A callback that raises: logged, the connection and heartbeats go on."""

    def boom(_: Any) -> None:
        raise ValueError("host bug")

    with capture_logs() as logs:
        async with running(on_dispatch=boom) as r:
            await r.until_state(State.ALIVE)
            for _ in range(3):
                await r.gw.dispatch("C2C_MESSAGE_CREATE", {})
            await r.until(lambda: r.mgr.machine.acks >= 3, timeout=5)
            assert len(r.gw.connections) == 1
    failed = [e for e in logs if e["event"] == "qqconn.callback_failed"]
    assert len(failed) >= 4  # READY and three dispatches


async def test_slow_callback_never_delays_heartbeats() -> None:
    """A slow host callback never delays heartbeats or frame reading."""

    async def slow(_: Dispatch) -> None:
        await asyncio.sleep(2.0)

    async with running(on_dispatch=slow) as r:
        await r.until_state(State.ALIVE)
        await r.gw.dispatch("C2C_MESSAGE_CREATE", {})
        acks = r.mgr.machine.acks
        await asyncio.sleep(1.5)
        assert r.mgr.machine.acks >= acks + 3
        assert len(r.gw.connections) == 1


async def test_stop_from_fatal_callback_does_not_cut_it_short() -> None:
    """A host that calls stop() from the fatal notify completes its callback; notify is once."""
    done: list[str] = []
    holder: dict[str, ConnectionManager] = {}

    async def on_fatal(error: FatalError) -> None:
        await holder["mgr"].stop()
        await asyncio.sleep(0.05)
        done.append(error.reason)

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        gw.faults.identify_close = 4914
        mgr = manager_for(gw, on_fatal=on_fatal)
        holder["mgr"] = mgr
        with pytest.raises(FatalError):
            async with asyncio.timeout(10):
                await mgr.run()
        async with asyncio.timeout(5):
            while not done:
                await asyncio.sleep(0.01)
        assert len(done) == 1 and mgr.state is State.FATAL
