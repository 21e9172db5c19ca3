"""The holes a mutation audit found (issue 14, item 7): single small edits to the code that no
deterministic test noticed. Each test here pins one behaviour, and fails on the broken version
named in its comment (checked by applying that edit by hand)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from qqconn import State
from qqconn import commands as cmd
from qqconn.checkpoint import Resumable
from qqconn.protocol import Dispatch
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, manager_for
from tests.test_machine import Run

# -- machine: the 5.00 s boundary and endings after RESUMED ---------------------------------------

#: Socket-opening times t for which (t + 5.0) - t is really below 5.0 in binary floating point
#: (found by search; the existing boundary test uses t = 1.0, for which it is exact).
ROUNDING_BASES = (253.838, 8190.619, 524286.741)


@pytest.mark.parametrize("opened", ROUNDING_BASES)
def test_five_seconds_is_not_quick_even_when_the_clock_subtraction_rounds_below(
    opened: float,
) -> None:
    """Rule 1: a socket opened at t and ended at t + 5.00 is a long connection even where
    (t + 5.0) - t == 4.99999…; 4.99 s on the same clock is still quick.
    Broken version: QUICK_GRACE_S = 0."""
    assert (opened + 5.0) - opened < 5.0  # the premise: this base really rounds below
    r = Run()
    r.alive(opened)
    r.close(opened + 5.0, 1006)
    assert r.m.quick_drops == 0
    r2 = Run()
    r2.alive(opened)
    r2.close(opened + 4.99, 1006)
    assert r2.m.quick_drops == 1


def test_an_ending_after_resumed_is_not_a_failed_resume() -> None:
    """Rule 7: a Resume that got RESUMED succeeded; the socket dropping later does not count
    as a failed resume, so three such cycles keep the session (the fourth attempt Resumes).
    Broken version: count a resume failure whenever a Resume was sent."""
    r = Run(restored=Resumable("old-sess", 41))
    r.start(0.0)
    t = 0.0
    for _ in range(3):
        got = r.connect(t)
        assert cmd.SendResume(r.n, "old-sess", 41) in got
        r.resumed(t + 0.1)
        assert r.m.state is State.ALIVE
        r.close(t + 10.0, 1006)  # long-lived: not a quick drop either
        assert r.m.resume_failures == 0
        t += 10.0
        r.retry(t + 1.0)
        t += 1.0
    assert r.m.session_id == "old-sess"
    assert cmd.SendResume(r.n, "old-sess", 41) in r.connect(t)


# -- driver: the state file ----------------------------------------------------------------------


def _doc(gw: FakeGateway, **patch: Any) -> dict[str, Any]:
    doc = {
        "app_id": gw.app_id,
        "shard": [0, 1],
        "session_id": "sess-of-an-earlier-process",
        "last_seq": 9,
        "state": "alive",
        "updated_at_unix": time.time(),
    }
    doc.update(patch)
    return doc


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"shard": [1, 2]}, "written for another app id or shard"),
        ({"shard": [0, 2]}, "written for another app id or shard"),
        ({"state": "fatal"}, "the earlier process ended in FATAL"),
    ],
    ids=["other-shard", "other-shard-count", "ended-fatal"],
)
async def test_a_state_file_of_another_shard_or_ended_fatal_is_never_resumed(
    tmp_path: Path, patch: dict[str, Any], reason: str
) -> None:
    """A recent state file of the same app but another shard, or one whose process ended
    FATAL, is ignored with its reason logged, and the manager Identifies (never Resumes).
    Broken version: the driver passes the file's own shard, or skips the FATAL check."""
    state_file = tmp_path / "state.json"
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        state_file.write_text(json.dumps(_doc(gw, **patch)))
        with capture_logs() as logs:
            mgr = manager_for(gw, state_file=state_file)
        ignored = [e for e in logs if e["event"] == "qqconn.state_file_ignored"]
        assert [e["reason"] for e in ignored] == [reason]
        assert mgr.machine.session_id is None
        task = asyncio.create_task(mgr.run())
        try:
            async with asyncio.timeout(10):
                while gw.identifies + gw.resumes == 0:
                    await asyncio.sleep(0.01)
            assert (gw.identifies, gw.resumes) == (1, 0)
        finally:
            await mgr.stop()
            await task


async def test_the_state_file_says_backoff_right_after_a_drop_into_a_long_backoff(
    tmp_path: Path,
) -> None:
    """The state file is rewritten on every state change: the moment a dropped connection
    enters a 30 s BACKOFF, the file says "backoff" (not the "alive" of before).
    Broken version: write the file only on some transitions (or only on the periodic tick)."""
    state_file = tmp_path / "state.json"
    policy = replace(FAST, backoff_s=(30.0,), quick_disconnect_threshold_s=0.1)
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        mgr = manager_for(gw, state_file=state_file, policy=policy)
        changes: list[State] = []
        task = asyncio.create_task(mgr.run())
        try:
            async with asyncio.timeout(10):
                while mgr.state is not State.ALIVE:
                    await asyncio.sleep(0.01)
            assert json.loads(state_file.read_text())["state"] == "alive"
            dropped_at = time.monotonic()
            assert await gw.drop() == 1
            async with asyncio.timeout(5):
                while mgr.state is State.ALIVE:
                    changes.append(mgr.state)
                    await asyncio.sleep(0.005)
            # The cause: the drop ended the socket and the machine chose the long BACKOFF.
            assert mgr.state is State.BACKOFF
            assert gw.connections[-1].closed_by == "drop"
            assert json.loads(state_file.read_text())["state"] == "backoff"
            assert time.monotonic() - dropped_at < 5.0  # long before the 30 s retry
            assert len(gw.connections) == 1  # still waiting: no new socket
        finally:
            await mgr.stop()
            await task


# -- driver: the checkpoint is what the host finished; stop lets the host finish ----------------


async def test_the_checkpoint_is_the_last_event_whose_callback_finished(tmp_path: Path) -> None:
    """With the host's callback blocked on s=3 while 2..4 arrive, the checkpoint (machine and
    state file) says 2: never the last received (4), never the one still running (3); it
    moves to 4 once the callback returns.
    Broken version: checkpoint from the last received s, or marked before the callback."""
    state_file = tmp_path / "state.json"
    release = asyncio.Event()
    entered = asyncio.Event()
    got: list[int | None] = []

    async def on_dispatch(d: Dispatch) -> None:
        if d.seq == 3:
            entered.set()
            await release.wait()
        got.append(d.seq)

    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        mgr = manager_for(gw, state_file=state_file, on_dispatch=on_dispatch)
        task = asyncio.create_task(mgr.run())
        try:
            async with asyncio.timeout(10):
                while mgr.state is not State.ALIVE:
                    await asyncio.sleep(0.01)
                sid = gw.current_session_id
                for i in range(3):
                    await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
                await entered.wait()
                while mgr.machine.last_seq != 4:  # the cause: s=4 was received
                    await asyncio.sleep(0.005)
            assert mgr.machine.checkpoint == Resumable(sid, 2)
            async with asyncio.timeout(5):  # the file is written at most once a second
                while json.loads(state_file.read_text()).get("last_seq") != 2:
                    await asyncio.sleep(0.02)
            doc = json.loads(state_file.read_text())
            assert (doc["session_id"], doc["last_seq"], doc["received_seq"]) == (sid, 2, 4)
            assert got == [1, 2]
            release.set()
            async with asyncio.timeout(5):
                while json.loads(state_file.read_text()).get("last_seq") != 4:
                    await asyncio.sleep(0.02)
            assert got == [1, 2, 3, 4]
            assert mgr.machine.checkpoint == Resumable(sid, 4)
        finally:
            release.set()
            await mgr.stop()
            await task


async def test_stop_lets_the_host_finish_the_dispatches_it_was_given() -> None:
    """Five dispatches queued behind a slow handler when stop() is called are all delivered
    before run() returns, within the drain bound (close_timeout_s); nothing is reported
    undelivered. Broken version: stop() cancels the host task without draining."""
    policy = replace(FAST, close_timeout_s=3.0)
    started = asyncio.Event()
    got: list[int | None] = []

    async def slow(d: Dispatch) -> None:
        if d.seq is not None and d.seq >= 2:
            started.set()
            await asyncio.sleep(0.1)
        got.append(d.seq)

    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        mgr = manager_for(gw, policy=policy, on_dispatch=slow, rng=random.Random(1))
        task = asyncio.create_task(mgr.run())
        async with asyncio.timeout(10):
            while mgr.state is not State.ALIVE:
                await asyncio.sleep(0.01)
            for i in range(6):
                await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
            await started.wait()
            while mgr.machine.last_seq != 7:  # all six received, five still queued
                await asyncio.sleep(0.005)
        assert len(got) <= 2
        with capture_logs() as logs:
            stopping = time.monotonic()
            await mgr.stop()
            await task
            took = time.monotonic() - stopping
        assert got == [1, 2, 3, 4, 5, 6, 7]
        assert took < policy.close_timeout_s * 2 + 1.0
        assert not [e for e in logs if e["event"] == "qqconn.undelivered_on_exit"]


async def test_stop_reports_what_the_host_could_not_finish_within_the_bound() -> None:
    """When the drain bound (close_timeout_s) is shorter than the queue needs, stop() returns
    on time and logs how many dispatches were left undelivered; those are exactly the ones
    the host never got."""
    policy = replace(FAST, close_timeout_s=0.3)
    started = asyncio.Event()
    entered: list[int | None] = []
    got: list[int | None] = []

    async def slow(d: Dispatch) -> None:
        entered.append(d.seq)
        if d.seq is not None and d.seq >= 2:
            started.set()
            await asyncio.sleep(0.25)
        got.append(d.seq)

    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        mgr = manager_for(gw, policy=policy, on_dispatch=slow, rng=random.Random(1))
        task = asyncio.create_task(mgr.run())
        async with asyncio.timeout(10):
            while mgr.state is not State.ALIVE:
                await asyncio.sleep(0.01)
            for i in range(6):
                await gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
            await started.wait()
            while mgr.machine.last_seq != 7:
                await asyncio.sleep(0.005)
        with capture_logs() as logs:
            stopping = time.monotonic()
            await mgr.stop()
            await task
            took = time.monotonic() - stopping
        undelivered = [e for e in logs if e["event"] == "qqconn.undelivered_on_exit"]
        assert len(undelivered) == 1
        # "pending" is what was queued and never started: every dispatch the handler was not
        # even given. At most one was inside the handler when the drain gave up (cancelled,
        # so entered but not finished); on a loaded machine the bound can also end between two.
        assert undelivered[0]["pending"] == 7 - len(entered)
        assert got == entered[: len(got)]
        assert len(entered) - len(got) <= 1
        assert len(entered) < 7  # the bound really was too short for the queue
        assert took < policy.close_timeout_s * 3 + 1.0


# -- driver: a timer started under a name replaces the previous one ------------------------------


async def test_op1_while_a_heartbeat_is_unacked_moves_the_ack_deadline() -> None:
    """A heartbeat request (op 1) while a heartbeat is unacknowledged sends one at once and
    restarts the ACK deadline: an ACK that arrives after the old deadline but before the new
    one leaves the connection ALIVE (the old timer was replaced, not left running).
    Broken version: Timers.start without cancelling the running timer of that name."""
    async with FakeGateway(heartbeat_interval_ms=2000) as gw:
        gw.faults.ack = False  # the test acknowledges by hand
        mgr = manager_for(gw)
        deadline_s = 2.0 * mgr.policy.heartbeat_ack_timeout_ratio  # 0.9 s
        task = asyncio.create_task(mgr.run())
        try:
            async with asyncio.timeout(10):
                while mgr.state is not State.ALIVE or not gw.heartbeats:
                    await asyncio.sleep(0.005)
            t0 = gw.heartbeats[0][0]
            await asyncio.sleep(max(0.0, t0 + 0.4 - time.monotonic()))
            assert mgr.machine.awaiting_ack
            assert await gw.send_raw('{"op":1,"d":null}') == 1
            async with asyncio.timeout(2):
                while len(gw.heartbeats) < 2:  # the cause: op 1 answered with a heartbeat
                    await asyncio.sleep(0.005)
            t1 = gw.heartbeats[1][0]
            assert t1 < t0 + deadline_s, "op 1 was not answered before the old deadline"
            # Between the old deadline (t0 + 0.9) and the new one (t1 + 0.9).
            await asyncio.sleep(max(0.0, (t0 + t1) / 2 + deadline_s - time.monotonic()))
            assert time.monotonic() > t0 + deadline_s
            assert await gw.send_raw('{"op":11}') == 1
            async with asyncio.timeout(2):
                while mgr.machine.acks < 1:  # the cause: the ACK was taken
                    await asyncio.sleep(0.005)
            assert time.monotonic() < t1 + deadline_s + 0.3
            assert mgr.state is State.ALIVE and not mgr.machine.awaiting_ack
            assert [c.closed_at for c in gw.connections] == [None]
        finally:
            await mgr.stop()
            await task
