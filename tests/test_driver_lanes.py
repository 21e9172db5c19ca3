"""The dispatch lane's two ways of running ``on_dispatch`` (docs/behaviour.md rule 22): inline
(loop callbacks, for a plain function) and on a task (for a coroutine function). Each guarantee
is proved for both: in order, exactly once, never inside the reader, a slow host never delays
reading or heartbeats, the checkpoint is the last event the callback finished, stop() lets the
host finish. Also: heartbeats are sent without a task per send."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from qqconn import State
from qqconn.checkpoint import Resumable
from qqconn.driver.attempt import _carry_on
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, HB_MS, manager_for

PATHS = ["inline", "task"]


def make_callback(path: str, body: Callable[[Dispatch], None]) -> Callable[[Dispatch], Any]:
    """``body`` as a plain function (the inline path) or a coroutine function (the task path)."""
    if path == "inline":
        return body

    async def on_dispatch(d: Dispatch) -> None:
        body(d)

    return on_dispatch


class Seen:
    """What the host's callback saw of where it ran."""

    def __init__(self) -> None:
        self.seqs: list[int | None] = []
        self.tasks: list[str | None] = []
        self.reader_on_stack = 0

    def __call__(self, d: Dispatch) -> None:
        task = asyncio.current_task()
        self.tasks.append(None if task is None else task.get_name())
        frame = sys._getframe(1)  # cheaper than inspect.stack(), which a loaded CI felt
        while frame is not None:
            if frame.f_code.co_name == "_read":
                self.reader_on_stack += 1
                break
            frame = frame.f_back
        if d.type != "READY":
            self.seqs.append(d.seq)


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("path", PATHS)
async def test_each_dispatch_once_in_order_and_never_inside_the_reader(path: str) -> None:
    """Bursts and single events: every s once, in order; the callback never runs in the
    reader's frame or on an attempt's task (inline: on no task at all; else the lane's)."""
    seen = Seen()
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, on_dispatch=make_callback(path, seen))
        task = asyncio.create_task(mgr.run())
        try:
            await until(lambda: mgr.state is State.ALIVE)
            sent = 0
            for burst in (1, 200, 1, 1, 300, 1):
                for _ in range(burst):
                    gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": sent})
                    sent += 1
                await asyncio.sleep(0.01)
            await until(lambda: len(seen.seqs) >= sent)
            await asyncio.sleep(0.05)  # nothing more arrives (no duplicate)
        finally:
            await mgr.stop()
            await task
    first = seen.seqs[0]
    assert first is not None
    assert seen.seqs == list(range(first, first + sent))
    assert mgr.dispatches_delivered == sent + 1  # READY too
    assert seen.reader_on_stack == 0
    assert not [t for t in seen.tasks if t is not None and t.startswith("qqconn-attempt")]
    if path == "inline":
        assert set(seen.tasks) == {None}
    else:
        assert set(seen.tasks) == {"qqconn-host"}


async def test_a_plain_function_that_returns_an_awaitable_moves_to_the_task_in_order() -> None:
    """A plain function returning a coroutine for one event: that one is awaited, and the
    events after it wait for it: still in order, once each."""
    got: list[int | None] = []
    release = asyncio.Event()

    async def later(d: Dispatch) -> None:
        await release.wait()
        got.append(d.seq)

    def on_dispatch(d: Dispatch) -> Awaitable[None] | None:
        if d.type == "READY":
            return None
        if len(got) == 3:  # the fourth event: hand back an awaitable
            return later(d)
        got.append(d.seq)
        return None

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, on_dispatch=on_dispatch)
        task = asyncio.create_task(mgr.run())
        try:
            await until(lambda: mgr.state is State.ALIVE)
            for i in range(8):
                gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": i})
            await until(lambda: mgr.machine.last_seq == 9)
            await asyncio.sleep(0.05)
            assert len(got) == 3  # the rest wait behind the awaitable
            release.set()
            await until(lambda: len(got) == 8)
        finally:
            release.set()
            await mgr.stop()
            await task
    assert got == list(range(2, 10))
    assert mgr.dispatches_delivered == 9


@pytest.mark.parametrize("path", PATHS)
async def test_a_slow_host_never_delays_reading_or_heartbeats(path: str) -> None:
    """400 events whose callback blocks the loop 4 ms each (1.6 s of host work, the lane's
    backlog): the reader has read all of them while the host is still at the first half, and
    heartbeats keep going (no gap near the 1.6 s the backlog takes). A lane that ran its whole
    backlog in one go would stop both for 1.6 s."""
    n = 400
    interval = HB_MS / 1000
    read_at_half: list[int | None] = []
    holder: dict[str, Any] = {}

    def body(d: Dispatch) -> None:
        if d.type == "READY":
            return
        time.sleep(0.004)
        holder.setdefault("first", time.monotonic())
        holder["count"] = holder.get("count", 0) + 1
        if holder["count"] == n // 2:
            read_at_half.append(holder["mgr"].machine.last_seq)
        holder["last"] = time.monotonic()

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = holder["mgr"] = manager_for(gw, on_dispatch=make_callback(path, body))
        task = asyncio.create_task(mgr.run())
        try:
            await until(lambda: mgr.state is State.ALIVE)
            await until(lambda: mgr.machine.acks >= 2)
            for i in range(n):
                gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": i})
            await until(lambda: holder.get("count") == n, timeout=30)
            beats = [t for t, _ in gw.heartbeats if holder["first"] <= t <= holder["last"]]
            alive = mgr.state is State.ALIVE
            sockets = len(gw.connections)
        finally:
            await mgr.stop()
            await task
    assert read_at_half == [n + 1]  # every frame read while the host was halfway
    assert alive and sockets == 1
    assert len(beats) >= 3
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 3 * interval, gaps  # generous: a one-go backlog stalls 1.6 s


@pytest.mark.parametrize("path", PATHS)
async def test_the_checkpoint_is_the_last_event_the_callback_finished(
    path: str, tmp_path: Path
) -> None:
    """Inside the callback for s = k the checkpoint is k - 1 (never k, never the last one
    received); after the last, it is the last; the state file says the same."""
    state_file = tmp_path / "state.json"
    holder: dict[str, Any] = {}
    inside: list[tuple[int | None, Resumable | None]] = []

    def body(d: Dispatch) -> None:
        if d.type != "READY":
            inside.append((d.seq, holder["mgr"].machine.checkpoint))

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = holder["mgr"] = manager_for(
            gw, state_file=state_file, on_dispatch=make_callback(path, body)
        )
        task = asyncio.create_task(mgr.run())
        try:
            await until(lambda: mgr.state is State.ALIVE)
            sid = gw.current_session_id
            for i in range(50):
                gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": i})
            await until(lambda: len(inside) == 50)
            await until(lambda: mgr.machine.checkpoint == Resumable(sid, 51))
        finally:
            await mgr.stop()
            await task
    assert sid is not None
    assert inside == [(k, Resumable(sid, k - 1)) for k in range(2, 52)]
    assert json.loads(state_file.read_text())["last_seq"] == 51


@pytest.mark.parametrize("path", PATHS)
async def test_stop_lets_the_host_finish_what_it_was_given(path: str) -> None:
    """300 events behind a slow callback (2 ms each) when stop() is called: all delivered
    before run() returns, none reported undelivered, and no callback after run() returned."""
    policy = replace(FAST, close_timeout_s=5.0)
    got: list[int | None] = []

    def body(d: Dispatch) -> None:
        if d.type != "READY":
            time.sleep(0.002)
            got.append(d.seq)

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, policy=policy, on_dispatch=make_callback(path, body))
        task = asyncio.create_task(mgr.run())
        await until(lambda: mgr.state is State.ALIVE)
        for i in range(300):
            gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": i})
        await until(lambda: mgr.machine.last_seq == 301 and len(got) >= 1)
        assert len(got) < 300
        with capture_logs() as logs:
            await mgr.stop()
            await task
        after = len(got)
        await asyncio.sleep(0.05)
    assert got == list(range(2, 302))
    assert after == len(got)
    assert not [e for e in logs if e["event"] == "qqconn.undelivered_on_exit"]


@pytest.mark.parametrize("path", PATHS)
async def test_stop_reports_what_the_host_could_not_finish(path: str) -> None:
    """With a drain bound (0.3 s) shorter than the backlog (200 × 10 ms), stop() returns and
    logs how many were left: exactly those the callback never got, and none comes later."""
    policy = replace(FAST, close_timeout_s=0.3)
    got: list[int | None] = []

    def body(d: Dispatch) -> None:
        if d.type != "READY":
            time.sleep(0.01)
            got.append(d.seq)

    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, policy=policy, on_dispatch=make_callback(path, body))
        task = asyncio.create_task(mgr.run())
        await until(lambda: mgr.state is State.ALIVE)
        for i in range(200):
            gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"n": i})
        await until(lambda: mgr.machine.last_seq == 201 and len(got) >= 1)
        with capture_logs() as logs:
            await mgr.stop()
            await task
        after = len(got)
        await asyncio.sleep(0.1)
    undelivered = [e for e in logs if e["event"] == "qqconn.undelivered_on_exit"]
    assert len(undelivered) == 1
    assert undelivered[0]["pending"] + len(got) == 200
    assert got == list(range(2, 2 + len(got)))
    assert after == len(got)


async def test_heartbeats_are_sent_without_a_task_per_send() -> None:
    """Five heartbeats and their ACKs on an open socket: no task was created to send one."""
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append(getattr(coro, "__qualname__", type(coro).__name__))
        return asyncio.Task(coro, loop=loop, **kw)

    loop = asyncio.get_running_loop()
    loop.set_task_factory(factory)
    try:
        async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
            mgr = manager_for(gw)
            task = asyncio.create_task(mgr.run())
            try:
                await until(lambda: mgr.state is State.ALIVE)
                acks = mgr.machine.acks
                made.clear()
                await until(lambda: mgr.machine.acks >= acks + 5)
                beats = len(gw.heartbeats)
            finally:
                await mgr.stop()
                await task
    finally:
        loop.set_task_factory(None)
    assert beats >= 5
    assert not [m for m in made if m in ("Attempt._send", "_carry_on")], made


async def test_a_send_that_must_wait_is_carried_on_by_a_task() -> None:
    """The rest of a coroutine started outside a task runs in the task: its waits complete
    with their results, and cancelling the task cancels the coroutine."""
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    steps: list[str] = []

    async def send() -> None:
        steps.append("start")
        steps.append(f"got {await first}")
        try:
            await second
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    coro = send()
    waiting_on = coro.send(None)  # started here, outside any task, as the heartbeat does
    assert waiting_on is first and steps == ["start"]
    task = loop.create_task(_carry_on(coro, waiting_on))
    await asyncio.sleep(0)
    first.set_result("one")
    await asyncio.sleep(0.01)
    assert steps == ["start", "got one"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["start", "got one", "cancelled"]
