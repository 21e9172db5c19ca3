"""The fault matrix: the real driver against the fake gateway over loopback sockets.

Each test pins one rule or scenario of docs/behaviour.md with a scaled-down policy (quick threshold
1 s, backoff tens of ms) and small Hello intervals. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from qqconn import FatalError, State
from qqconn.endings import EndingKind
from qqconn.protocol import OpCode
from qqconn.testing import MISSING, FakeGateway
from qqconn.testing.proxy import FaultProxy

# tests/soak.py and tests/test_soak.py import manager_for from here.
from tests.driver_support import FAST, HB_MS, INTENTS, Run, identify_frames, manager_for, running

# -- cold start, seq, heartbeats ------------------------------------------------------------------


async def test_cold_start_identifies_and_becomes_alive(tmp_path: Path) -> None:
    """Cold start: Identify carries `QQBot <token>`, intents and shard; READY makes the state ALIVE."""
    state_file = tmp_path / "state.json"
    async with running(state_file=state_file) as r:
        await r.until_state(State.ALIVE)
        (identify,) = identify_frames(r.gw)
        assert identify["d"]["token"] == f"QQBot {r.gw.valid_token()}"
        assert identify["d"]["intents"] == INTENTS
        assert identify["d"]["shard"] == [0, 1]
        await r.until(lambda: r.host.dispatches)
        assert r.host.dispatches[0].type == "READY"
        assert r.host.states[:4] == [
            State.AWAITING_PERMIT,
            State.CONNECTING,
            State.IDENTIFIED,
            State.ALIVE,
        ]
        doc = json.loads(state_file.read_text())
        assert doc["state"] == "alive"
        assert doc["session_id"] == r.gw.current_session_id
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600


async def test_seq_tracking_and_heartbeat_carries_last_seq() -> None:
    """Seq tracking: dispatches with s = 5, 10, 7 leave last seq 10; the next heartbeat carries 10."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        for s in (5, 10, 7):
            frame = {"op": 0, "s": s, "t": "GROUP_AT_MESSAGE_CREATE", "id": f"X:{s}", "d": {}}
            await r.gw.send_raw(json.dumps(frame))
        await r.until(lambda: r.mgr.machine.last_seq == 10)
        seen = len(r.gw.heartbeats)
        await r.until(lambda: len(r.gw.heartbeats) > seen, timeout=3)
        assert r.gw.heartbeats[-1][1] == 10
        assert r.host.seqs() == [5, 10]  # 7 is below what the host already had: dropped, logged


@pytest.mark.parametrize("interval", [0, -1, MISSING, "NaN", None, 10**12])
async def test_absurd_hello_interval_uses_default_without_churn(interval: object) -> None:
    """Hello interval 0, -1, missing, NaN, null, huge: the default is used and logged, no churn."""
    with capture_logs() as logs:

        def configure(gw: FakeGateway) -> None:
            gw.faults.hello_interval = interval

        async with running(configure=configure) as r:
            await r.until(lambda: len(r.gw.heartbeats) >= 3, timeout=5)
            assert r.mgr.machine.heartbeat_interval_s == FAST.default_heartbeat_interval_s
            assert len(r.gw.connections) == 1
    assert any(e["event"] == "qqconn.hello_interval_replaced" for e in logs)


# -- the seed's loop and the quick-drop counter ---------------------------------------------------


@pytest.mark.parametrize("code", [1000, 4009, None], ids=["close-1000", "close-4009", "no-frame"])
async def test_seeds_loop_ends_in_fatal_after_third_quick_drop(code: int | None) -> None:
    """The seed's loop: every socket closes soon after opening (close frame or drop): FATAL
    (retryable) after the 3rd, one notify, no 4th socket."""

    def configure(gw: FakeGateway) -> None:
        gw.faults.close_new_sockets(0.2, 50, code=code)

    async with running(configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        # Nothing can open a 4th socket: run() has returned, no timer of the machine is left
        # (a BACKOFF would be one) and no attempt of the driver is alive.
        assert r.task.done() and r.mgr._feeder.timers.pending() == {}
        assert r.mgr._feeder.attempts == {} and r.mgr.machine.is_terminal
        assert len(r.gw.connections) == 3
        assert len(r.host.fatals) == 1
        assert r.mgr.state is State.FATAL


async def test_quick_quick_long_quick_quick_then_quick_is_fatal() -> None:
    """The exact sequence: q, q, long, q, q survives; the next q is the 3rd in a row: FATAL."""
    async with running() as r:
        r.gw.faults.close_new_sockets(0.15, 2, code=1000)
        await r.gw.wait_for_connections(3, timeout=10)
        await r.until_state(State.ALIVE)
        await asyncio.sleep(FAST.quick_disconnect_threshold_s + 0.2)
        r.gw.faults.close_new_sockets(0.15, 2, code=1000)
        await r.gw.close(1000)  # the long one ends: counter back to 0
        await r.gw.wait_for_connections(6, timeout=10)
        await r.until_state(State.ALIVE)
        assert r.mgr.machine.quick_drops == 2 and r.host.fatals == []
        await r.gw.close(1000)  # 6th socket, alive for < 1 s: 3rd quick drop
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        assert len(r.gw.connections) == 6 and len(r.host.fatals) == 1


# -- attempts -------------------------------------------------------------------------------------


async def test_token_endpoint_down_is_fatal_after_budget_with_backoff() -> None:
    """Token endpoint down: FATAL (retryable) after max_reconnect_attempts, delays following
    backoff_s."""
    policy = replace(FAST, backoff_s=(0.1, 0.2, 0.4))

    def configure(gw: FakeGateway) -> None:
        gw.faults.token_endpoint = "http500"

    async with running(policy=policy, configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        token_requests = [h.at for h in r.gw.http_requests if "AccessToken" in h.path]
        assert len(token_requests) == policy.max_reconnect_attempts
        gaps = [b - a for a, b in itertools.pairwise(token_requests)]
        expected = [0.1, 0.2, 0.4, 0.4]
        for gap, want in zip(gaps, expected, strict=True):
            assert want - 0.01 <= gap <= want + 0.5, (gaps, expected)
        assert len(r.gw.connections) == 0 and len(r.host.fatals) == 1


async def test_4004_twice_is_fatal_not_retryable() -> None:
    """4004 loop: a fresh token is fetched and tried once; a second 4004 is FATAL, not retryable."""

    def configure(gw: FakeGateway) -> None:
        gw.faults.identify_close = 4004

    async with running(configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and not error.retryable
        assert error.close_code == 4004
        assert len(r.gw.connections) == 2
        token_requests = [h for h in r.gw.http_requests if "AccessToken" in h.path]
        assert len(token_requests) == 2  # the second attempt forced a fresh token


@pytest.mark.parametrize("code", [4914, 4915, 4001, 4013, 4924])
async def test_fatal_close_codes_stop_everything(code: int) -> None:
    """4914 & co: FATAL at once, not retryable, no other request afterwards."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.close(code)
        error = await r.outcome()
        assert isinstance(error, FatalError) and not error.retryable and error.close_code == code
        # Nothing can make another request: run() has returned with no timer or attempt left.
        assert r.task.done() and r.mgr._feeder.timers.pending() == {}
        assert r.mgr._feeder.attempts == {} and r.mgr.machine.is_terminal
        assert len(r.gw.connections) == 1
        closed_at = r.gw.connections[0].closed_at
        assert closed_at is not None
        assert all(h.at < closed_at for h in r.gw.http_requests)  # none after the close
        assert len(r.host.fatals) == 1


async def test_4008_waits_then_resumes() -> None:
    """4008: keep the session, wait rate_limit_wait_s, then Resume."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        session = r.gw.current_session_id
        await r.gw.close(4008)
        closed_at = r.gw.connections[0].closed_at
        await r.gw.wait_for_connections(2, timeout=5)
        assert closed_at is not None
        assert r.gw.connections[1].opened_at - closed_at >= FAST.rate_limit_wait_s - 0.05
        await r.until_state(State.ALIVE)
        assert r.gw.resumes == 1 and r.gw.current_session_id == session


# -- resume, identify, op 7, op 9 -----------------------------------------------------------------


async def test_op7_then_4009_with_events_flowing_loses_nothing() -> None:
    """op 7 then 4009 while events keep flowing: Resume, no event lost or duplicated."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        stop = asyncio.Event()

        async def pump() -> None:
            for i in range(400):
                if stop.is_set():
                    return
                await r.gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"n": i})
                await asyncio.sleep(0.002)

        pumper = asyncio.create_task(pump())
        await asyncio.sleep(0.2)
        for _ in range(3):
            await r.gw.send_reconnect(close_after_s=0.2)
            await asyncio.sleep(0.15)
        await pumper
        accepted = r.gw.accepted()
        await r.until(lambda: r.host.seqs() == [s for s in accepted if s > 1], timeout=10)
        assert r.gw.identifies == 1 and r.gw.resumes >= 3
        assert r.mgr.machine.quick_drops == 0 and r.host.fatals == []


async def test_op9_false_forgets_session_and_identifies() -> None:
    """op 9 d:false: forget the session, Identify with backoff."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.send_invalid_session(resumable=False)
        await r.until(lambda: r.gw.identifies == 2, timeout=5)
        await r.until_state(State.ALIVE)
        assert r.gw.resumes == 0


async def test_op9_true_resumes_after_a_delay() -> None:
    """op 9 d:true: Resume after invalid_session_delay_s."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.send_invalid_session(resumable=True)
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        first, second = r.gw.connections[0], r.gw.connections[1]
        assert first.closed_at is not None
        assert second.opened_at - first.closed_at >= FAST.invalid_session_delay_s[0] - 0.02


@pytest.mark.parametrize("code", [4006, 4007, 4900, 4903])
async def test_identify_only_codes_forget_session(code: int) -> None:
    """4006, 4007, 49xx: forget the session, Identify."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.close(code)
        await r.until(lambda: r.gw.identifies == 2, timeout=5)
        assert r.gw.resumes == 0


@pytest.mark.parametrize("code", [1000, 1001, 4009, None])
async def test_transient_closes_resume(code: int | None) -> None:
    """1000/1001/4009/no close frame: Resume the same session."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.dispatch("C2C_MESSAGE_CREATE", {})
        if code is None:
            await r.gw.drop()
        else:
            await r.gw.close(code)
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        await r.until_state(State.ALIVE)
        assert r.gw.identifies == 1


async def test_three_failed_resumes_fall_back_to_identify() -> None:
    """Resume fails 3 times in a row (accepted then closed): forget the session, Identify."""
    policy = replace(FAST, max_quick_disconnects=10, max_resume_failures=3)
    async with running(policy=policy) as r:
        await r.until_state(State.ALIVE)
        r.gw.faults.resume = "accept_then_close"
        await r.gw.close(1000)
        await r.until(lambda: r.gw.identifies == 2, timeout=10)
        assert r.gw.resumes == 3
        r.gw.faults.resume = "ok"
        await r.until_state(State.ALIVE)


# -- liveness -------------------------------------------------------------------------------------


async def test_zombie_is_detected_and_resumed() -> None:
    """Zombie (ACKs stop, socket open): closed (not 1000/1001) and resumed within two intervals
    of the last ACK."""
    async with running() as r:
        await r.until(lambda: r.mgr.machine.acks >= 2, timeout=5)
        r.gw.faults.ack = False
        last_ack = max(
            f.at for f in r.gw.frames if f.direction == "out" and f.op == OpCode.HEARTBEAT_ACK
        )
        await r.until(lambda: r.gw.connections[0].closed_at is not None, timeout=5)
        first = r.gw.connections[0]
        assert first.closed_at is not None
        assert first.closed_at - last_ack <= 2 * HB_MS / 1000 + 0.2
        assert first.close_code not in (1000, 1001)
        # The cause: qqconn itself closed it (4000, resumable) because no ACK came.
        assert (first.closed_by, first.close_code) == ("client", 4000)
        ending = r.mgr.machine.last_ending
        assert ending is not None and ending.kind is EndingKind.ZOMBIE
        r.gw.faults.ack = True
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        await r.until_state(State.ALIVE)
        assert r.gw.identifies == 1 and r.host.fatals == []


async def test_half_open_server_is_detected_and_resumed() -> None:
    """Half-open (server silent, socket open): detected, closed within close_timeout, resumed."""
    policy = replace(FAST, backoff_s=(0.5,))
    async with running(policy=policy) as r:
        await r.until_state(State.ALIVE)
        r.gw.faults.silent = True
        await r.until(lambda: r.gw.connections[0].closed_at is not None, timeout=5)
        # The cause: qqconn's own watchdog closed it (4000, resumable), not the server.
        first = r.gw.connections[0]
        assert (first.closed_by, first.close_code) == ("client", 4000)
        ending = r.mgr.machine.last_ending
        assert ending is not None and ending.kind in (EndingKind.ZOMBIE, EndingKind.STALE)
        r.gw.faults.silent = False
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        await r.until_state(State.ALIVE)
        assert r.gw.identifies == 1 and r.host.fatals == []


async def test_every_fifth_ack_logs_one_info_line() -> None:
    """Every 5th acknowledged heartbeat logs one INFO line (count, last seq, ACK latency)."""
    with capture_logs() as logs:
        async with running(hb_ms=150) as r:
            await r.until(lambda: r.mgr.machine.acks >= 10, timeout=8)
    lines = [e for e in logs if e["event"] == "qqconn.heartbeat"]
    assert [e["acked"] for e in lines][:2] == [5, 10]
    assert all(e["log_level"] == "info" and "latency_ms" in e and "last_seq" in e for e in lines)


# -- op 7 on a young connection, refused credentials ----------------------------------------------


async def test_op7_on_a_young_connection_waits_instead_of_looping() -> None:
    """op 7 right after RESUMED, over and over: not counted, but each reconnect waits a backoff
    step instead of looping at full speed."""
    policy = replace(FAST, backoff_s=(0.3,))
    async with running(policy=policy) as r:
        await r.until_state(State.ALIVE)
        for _ in range(3):
            await r.gw.send_reconnect(close_after_s=2.0)
            await r.until(lambda: r.mgr.state is not State.ALIVE, timeout=2)
            await r.until_state(State.ALIVE)
        opened = [c.opened_at for c in r.gw.connections]
        gaps = [b - a for a, b in itertools.pairwise(opened)]
        assert all(g >= 0.25 for g in gaps), gaps
        assert r.host.fatals == [] and r.mgr.machine.quick_drops == 0


async def test_refused_credentials_end_in_fatal_not_retryable_after_one_retry() -> None:
    """The token endpoint refusing the credentials (code 100007) is an authentication failure:
    one retry with a fresh request, then FATAL, not retryable (no 100 attempts)."""
    async with FakeGateway(heartbeat_interval_ms=HB_MS) as gw:
        mgr = manager_for(gw, client_secret="wrong-secret")
        with pytest.raises(FatalError) as info:
            async with asyncio.timeout(10):
                await mgr.run()
        assert not info.value.retryable and "100007" in info.value.reason
        assert len([h for h in gw.http_requests if "AccessToken" in h.path]) == 2


async def test_401_from_gateway_bot_refetches_the_token_at_once() -> None:
    """A token revoked behind qqconn's back: /gateway/bot answers 401, and the very next attempt
    fetches a fresh token (docs/behaviour.md rule 20) instead of reusing the cached one."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        before = len(r.gw.http_requests)
        assert [h.path for h in r.gw.http_requests].count("/gateway/bot") == 1
        r.gw.revoke_tokens()
        await r.gw.drop()
        await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
        after = [(h.path.rsplit("/", 1)[-1], h.status) for h in r.gw.http_requests[before:]]
        assert after == [
            ("bot", 401),
            ("getAppAccessToken", 200),
            ("bot", 200),
        ], after
        refused, fetched = r.gw.http_requests[before], r.gw.http_requests[before + 1]
        # One backoff step (FAST: 0.05 s at most 0.2 s), not the token's remaining lifetime.
        assert fetched.at - refused.at < 2.0
        assert r.mgr.machine.auth_failures == 0 and r.host.fatals == []


# -- network faults below the protocol, through the loopback fault proxy (issue 14) -----------


@contextlib.asynccontextmanager
async def proxied(
    *, hb_ms: int = HB_MS, policy: Any = FAST
) -> AsyncIterator[tuple[Run, FaultProxy]]:
    """The driver against the fake with a FaultProxy on the WebSocket path (REST stays direct)."""
    async with (
        running(policy=policy, hb_ms=hb_ms) as r,
        FaultProxy("127.0.0.1", r.gw.ws_port) as proxy,
    ):
        r.gw.advertised_ws_url = proxy.url("ws", "/websocket")
        # The first attempt began before the proxy was advertised: start over through it.
        await r.until_state(State.ALIVE)
        await r.gw.send_reconnect()
        await r.until(lambda: len(proxy.live()) == 1 and r.mgr.state is State.ALIVE)
        yield r, proxy


def _lost_and_duplicated(r: Run) -> tuple[set[int], int]:
    seqs = [s for s in r.host.seqs() if s is not None]
    accepted = set(r.gw.accepted())
    return accepted - set(seqs) - {1}, len(seqs) - len(set(seqs))


async def _pump(r: Run, n: int, pause_s: float = 0.02) -> None:
    for i in range(n):
        await r.gw.dispatch("C2C_MESSAGE_CREATE", {"n": i})
        await asyncio.sleep(pause_s)


async def test_proxy_stall_is_caught_as_a_zombie_then_resumed() -> None:
    """A stalled TCP path (bytes accepted, none forwarded) ends as a zombie (rule 5), then the
    Resume on a fresh path replays what the stall swallowed: 0 lost, 0 duplicated."""
    async with proxied() as (r, proxy):
        await _pump(r, 3)
        stalled = proxy.live()[0]
        stalled.set(stall=True)
        await _pump(r, 5)
        await r.until(lambda: len(proxy.connections) >= 3 and r.mgr.state is State.ALIVE, 10)
        await _pump(r, 3)
        await r.until(lambda: not _lost_and_duplicated(r)[0], timeout=5)
        assert stalled.stalled_bytes > 0  # the stall swallowed the path's bytes
        assert r.mgr.machine.last_ending is not None
        assert r.mgr.machine.last_ending.kind in (EndingKind.ZOMBIE, EndingKind.STALE)
        assert _lost_and_duplicated(r) == (set(), 0)
        assert r.gw.identifies == 1 and r.host.fatals == []


async def test_proxy_reset_mid_frame_is_a_drop_then_resumed() -> None:
    """A reset in the middle of a frame (RST, no close frame) is a drop: Resume, 0 lost, 0 dup."""
    async with proxied() as (r, proxy):
        await _pump(r, 3)
        cut = proxy.live()[0]
        cut.set(reset_after_bytes=7)  # 7 bytes of the next frame, then RST
        await r.gw.dispatch("C2C_MESSAGE_CREATE", {"text": "y" * 400})
        await r.until(lambda: cut.ended == "reset", timeout=5)
        await r.until(lambda: len(proxy.live()) == 1 and r.mgr.state is State.ALIVE, timeout=5)
        await _pump(r, 3)
        await r.until(lambda: not _lost_and_duplicated(r)[0], timeout=5)
        assert cut.down_bytes > 0  # the client had part of the stream before the cut
        ending = r.mgr.machine.last_ending
        assert ending is not None and ending.kind is EndingKind.DROPPED, ending
        assert _lost_and_duplicated(r) == (set(), 0)
        assert r.gw.identifies == 1 and r.host.fatals == []


async def test_proxy_latency_below_the_ack_deadline_is_no_zombie() -> None:
    """0.1 s each way (RTT 0.2 s) under a 0.5 s ACK deadline: no false zombie, one socket,
    the ACK latency shows the delay, events arrive once."""
    async with proxied(hb_ms=1000) as (r, proxy):
        proxy.set(latency_s=0.1)
        opened = len(proxy.connections)
        acks = r.mgr.machine.acks
        await _pump(r, 5, pause_s=0.2)
        await r.until(lambda: r.mgr.machine.acks >= acks + 3, timeout=10)
        assert len(proxy.connections) == opened and r.mgr.state is State.ALIVE
        latency = r.mgr.machine.last_ack_latency_s
        assert latency is not None and 0.19 <= latency < 0.5, latency
        await r.until(lambda: not _lost_and_duplicated(r)[0], timeout=5)
        assert _lost_and_duplicated(r) == (set(), 0)


async def test_proxy_trickle_keeps_a_connection_alive() -> None:
    """A trickle of 4 kB/s each way: heartbeats still acknowledged in time, the connection stays
    up (stated outcome: alive), events arrive once, in order."""
    async with proxied(hb_ms=1000) as (r, proxy):
        proxy.set(rate_bytes_s=4000)
        opened = len(proxy.connections)
        acks = r.mgr.machine.acks
        await _pump(r, 5, pause_s=0.1)
        await r.until(lambda: r.mgr.machine.acks >= acks + 2, timeout=10)
        await r.until(lambda: not _lost_and_duplicated(r)[0], timeout=10)
        assert len(proxy.connections) == opened and r.mgr.state is State.ALIVE
        seqs = r.host.seqs()
        assert seqs == sorted(seqs) and _lost_and_duplicated(r) == (set(), 0)


async def test_proxy_half_close_is_a_drop_then_resumed() -> None:
    """The server → client direction ends (EOF) while the other stays open: a drop, then
    Resume; 0 lost, 0 duplicated."""
    async with proxied() as (r, proxy):
        await _pump(r, 3)
        half = proxy.live()[0]
        half.set(half_close=True)
        await r.gw.dispatch("C2C_MESSAGE_CREATE", {"n": "after"})
        await r.until(lambda: half.ended is not None, timeout=5)
        await r.until(lambda: len(proxy.connections) >= 3 and r.mgr.state is State.ALIVE, 10)
        await _pump(r, 2)
        await r.until(lambda: not _lost_and_duplicated(r)[0], timeout=5)
        assert _lost_and_duplicated(r) == (set(), 0)
        assert r.gw.identifies == 1 and r.host.fatals == []
