"""The manager's lifecycle on the real fake gateway (issue 12): the control lane, a complete
on_fatal before run() raises, start()/async with/wait_until_alive, running again, and READY
kept across a Resume and a restart."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import pytest

import qqconn
from qqconn import FatalError, LocalProtocolError, State, StateChange
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import HB_MS, manager_for


async def test_disconnected_reaches_host_within_100ms_while_a_handler_sleeps() -> None:
    """A drop reaches on_state_change within 100 ms while on_dispatch sleeps 3 s; the change
    names the ending and the last dispatch handed out before it."""
    seen: list[tuple[float, StateChange]] = []
    started = asyncio.Event()

    async def slow(d: Dispatch) -> None:
        if d.type != "READY":
            started.set()
            await asyncio.sleep(3.0)

    def on_change(change: StateChange) -> None:
        seen.append((time.monotonic(), change))

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, on_dispatch=slow, on_state_change=on_change)
        async with mgr:
            await mgr.wait_until_alive(timeout=5)
            seq = await gw.dispatch("GROUP_AT_MESSAGE_CREATE")
            async with asyncio.timeout(5):
                await started.wait()
            dropped_at = time.monotonic()
            await gw.drop()
            async with asyncio.timeout(2):
                while not any(c.previous is State.ALIVE for _, c in seen):
                    await asyncio.sleep(0.005)
    at, change = next((t, c) for t, c in seen if c.previous is State.ALIVE)
    assert at - dropped_at < 0.1
    assert change.ending is not None and change.reason == change.ending.reason
    assert change.ending.kind.value == "dropped" and change.close_code is None
    assert change.after_seq == seq and change.after_dispatches == 2  # READY, then ours
    # it lived less than quick_disconnect_threshold_s (1 s) after READY: a quick drop, not a
    # failed attempt (docs/behaviour.md rules 2-4); state QUICK_DROPPED says the same
    assert change.quick_drop is True and change.failed_attempt is False


async def test_readme_pattern_on_fatal_completes_before_run_raises() -> None:
    """``try: await manager.run() except FatalError: raise SystemExit`` sees an async on_fatal
    that awaits something finish before the except clause runs."""
    done: list[str] = []

    async def on_fatal(error: FatalError) -> None:
        await asyncio.sleep(0.3)
        done.append(error.reason)

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        gw.faults.identify_close = 4914
        manager = manager_for(gw, on_fatal=on_fatal)
        with pytest.raises(SystemExit):
            try:
                async with asyncio.timeout(10):
                    await manager.run()
            except FatalError as exc:
                assert done == [exc.reason]
                raise SystemExit(f"giving up: {exc}") from exc


async def test_async_with_runs_in_background_and_stops_on_exit() -> None:
    """``async with manager`` runs it; wait_until_alive returns once ALIVE; exit stops it."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        manager = manager_for(gw)
        async with manager:
            await manager.wait_until_alive(timeout=5)
            assert manager.state is State.ALIVE
            await manager.wait_until_alive(timeout=0)  # already alive: at once
        assert manager.state is State.STOPPED
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("qqconn")] == []


async def test_wait_until_alive_raises_timeout_and_fatal() -> None:
    """wait_until_alive: TimeoutError when the bound passes, FatalError when the manager gives up,
    LocalProtocolError once it stopped."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        gw.faults.identify_close = 4914
        manager = manager_for(gw)
        task = manager.start()
        with pytest.raises(TimeoutError):
            await manager.wait_until_alive(timeout=0.0)
        with pytest.raises(FatalError) as info:
            await manager.wait_until_alive(timeout=10)
        assert info.value.close_code == 4914
        with pytest.raises(FatalError):
            await asyncio.wait_for(task, 10)
        with pytest.raises(LocalProtocolError):  # gave up for good: no second run
            await manager.run()
    stopped = manager_for(gw)
    await stopped.stop()
    with pytest.raises(LocalProtocolError):
        await stopped.wait_until_alive(timeout=1)


async def test_start_task_exception_is_never_unretrieved() -> None:
    """A fire-and-forget start() that ends in FATAL leaves asyncio nothing to complain about."""
    complaints: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: complaints.append(ctx))
    try:
        async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
            gw.faults.identify_close = 4914
            manager = manager_for(gw)
            manager.start()
            async with asyncio.timeout(10):
                while manager.state is not State.FATAL:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            del manager
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert complaints == []


async def test_stopped_manager_runs_again_resuming_its_session() -> None:
    """run() after stop(): a new run Resumes the session, and READY stays known."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        manager = manager_for(gw)
        async with manager:
            await manager.wait_until_alive(timeout=5)
            await gw.dispatch("C2C_MESSAGE_CREATE")
            await asyncio.sleep(0.1)
        assert manager.state is State.STOPPED and manager.ready is not None
        user = manager.ready["user"]
        async with manager:
            await manager.wait_until_alive(timeout=5)
        ops = [json.loads(f.payload_text)["op"] for f in gw.frames if f.direction == "in"]
        assert 2 in ops and 6 in ops  # Identify on the first run, Resume on the second
        assert manager.ready is not None and manager.ready["user"] == user


async def test_retryable_fatal_manager_runs_again_with_fresh_budgets() -> None:
    """After a retryable FATAL, run() starts over with zeroed counters and reaches ALIVE."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        gw.faults.close_new_sockets(0.05, 3)
        manager = manager_for(gw)
        with pytest.raises(FatalError) as info:
            async with asyncio.timeout(10):
                await manager.run()
        assert info.value.retryable
        async with manager:
            await manager.wait_until_alive(timeout=5)
            assert manager.machine.quick_drops == 0 and manager.machine.failed_attempts == 0


async def test_ready_survives_a_restart_that_resumes(tmp_path: Path) -> None:
    """A process that Resumes from the state file still knows READY (the bot's user)."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        first = manager_for(gw, state_file=state_file)
        async with first:
            await first.wait_until_alive(timeout=5)
        assert first.ready is not None
        saved = json.loads(state_file.read_text())
        assert saved["ready"]["user"] == first.ready["user"]
        assert "s3cret" not in state_file.read_text()
        second = manager_for(gw, state_file=state_file)
        assert second.ready == first.ready  # known before it even connects
        async with second:
            await second.wait_until_alive(timeout=5)
        assert second.ready is not None and second.ready["user"] == first.ready["user"]
    assert isinstance(qqconn.ConnectionManager, type)
