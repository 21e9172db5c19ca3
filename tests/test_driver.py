"""The fault matrix: the real driver against the fake gateway over loopback sockets.

Each test pins one rule or scenario of docs/behaviour.md with a scaled-down policy (quick threshold
1 s, backoff tens of ms) and small Hello intervals. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn.driver.attempt import Attempt
from qqconn.events import Timer
from qqconn.protocol import Dispatch, OpCode
from qqconn.testing import MISSING, FakeGateway

FAST = Policy(
    quick_disconnect_threshold_s=1.0,
    max_quick_disconnects=3,
    max_reconnect_attempts=5,
    backoff_s=(0.05, 0.1, 0.2),
    backoff_jitter=0.0,
    rate_limit_wait_s=0.4,
    connect_timeout_s=3.0,
    rotation_delay_s=(0.0, 0.02),
    invalid_session_delay_s=(0.05, 0.1),
    close_timeout_s=0.5,
    default_heartbeat_interval_s=0.3,
)
INTENTS = 1 << 30 | 1 << 25
HB_MS = 300  # fake gateway Hello interval: heartbeats every 0.3 s, ACK deadline 0.15 s


@dataclass
class Host:
    """What an adapter would see: dispatches, state changes, fatal notifies."""

    dispatches: list[Dispatch] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    fatals: list[FatalError] = field(default_factory=list)

    def on_dispatch(self, d: Dispatch) -> None:
        self.dispatches.append(d)

    def on_state_change(self, change: Any) -> None:
        self.states.append(change.state)

    def on_fatal(self, error: FatalError) -> None:
        self.fatals.append(error)

    def seqs(self) -> list[int | None]:
        return [d.seq for d in self.dispatches if d.type != "READY"]


@dataclass
class Run:
    gw: FakeGateway
    mgr: ConnectionManager
    host: Host
    task: asyncio.Task[None]

    async def until(self, predicate: Any, timeout: float = 10.0, what: str = "") -> None:
        """Wait (bounded) until predicate() is true."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def until_state(self, state: State, timeout: float = 10.0) -> None:
        await self.until(lambda: self.mgr.state is state, timeout)

    async def outcome(self, timeout: float = 15.0) -> BaseException | None:
        """Wait for run() to end; return the exception it raised, if any."""
        async with asyncio.timeout(timeout):
            try:
                await self.task
            except FatalError as exc:
                return exc
        return None


def manager_for(gw: FakeGateway, **options: Any) -> ConnectionManager:
    """A manager pointed at the fake gateway ``gw``: its app id, the secret "s3cret", INTENTS and
    the FAST policy unless ``options`` say otherwise (``manager_cls=`` picks a subclass)."""
    cls: type[ConnectionManager] = options.pop("manager_cls", ConnectionManager)
    settings = {"app_id": gw.app_id, "client_secret": "s3cret", "intents": INTENTS, "policy": FAST}
    return cls(api_base=gw.api_base, token_url=gw.token_url, **{**settings, **options})


@contextlib.asynccontextmanager
async def running(
    *,
    policy: Policy = FAST,
    hb_ms: int = HB_MS,
    configure: Any = None,
    **kwargs: Any,
) -> AsyncIterator[Run]:
    async with FakeGateway(heartbeat_interval_ms=hb_ms, seed=1) as gw:
        if configure is not None:
            configure(gw)
        host = Host()
        options: dict[str, Any] = {
            "on_dispatch": host.on_dispatch,
            "on_state_change": host.on_state_change,
            "on_fatal": host.on_fatal,
            "rng": random.Random(7),
            **kwargs,
        }
        mgr = manager_for(gw, policy=policy, **options)
        task = asyncio.create_task(mgr.run())
        run = Run(gw, mgr, host, task)
        try:
            yield run
        finally:
            async with asyncio.timeout(5):
                await mgr.stop()
                with contextlib.suppress(FatalError):
                    await task


def identify_frames(gw: FakeGateway) -> list[dict[str, Any]]:
    return [json.loads(f.payload_text) for f in gw.frames if f.direction == "in" and f.op == 2]


# -- cold start, seq, heartbeats -------------------------------------------------------------


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
        assert r.host.states[:2] == [State.IDENTIFIED, State.ALIVE]
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


async def test_heartbeats_follow_the_hello_interval() -> None:
    """Heartbeats go at the Hello interval (ms), first with d = null-or-seq, each acknowledged."""
    async with running(hb_ms=200) as r:
        await r.until(lambda: len(r.gw.heartbeats) >= 6, timeout=5)
        times = [t for t, _ in r.gw.heartbeats[:6]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.15 <= g <= 0.6 for g in gaps), gaps
        assert len(r.gw.connections) == 1


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


# -- the seed's loop and the quick-drop counter ---------------------------------------------


@pytest.mark.parametrize("code", [1000, 4009, None], ids=["close-1000", "close-4009", "no-frame"])
async def test_seeds_loop_ends_in_fatal_after_third_quick_drop(code: int | None) -> None:
    """The seed's loop: every socket closes soon after opening (close frame or drop): FATAL
    (retryable) after the 3rd, one notify, no 4th socket."""

    def configure(gw: FakeGateway) -> None:
        gw.faults.close_new_sockets(0.2, 50, code=code)

    async with running(configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        await asyncio.sleep(0.3)
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


# -- attempts --------------------------------------------------------------------------------


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


async def test_token_endpoint_hanging_counts_as_failed_attempt() -> None:
    """A token request that hangs ends at connect_timeout_s and consumes an attempt."""
    policy = replace(FAST, connect_timeout_s=0.3, max_reconnect_attempts=2)

    def configure(gw: FakeGateway) -> None:
        gw.faults.token_endpoint = "hang"

    async with running(policy=policy, configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        assert "attempts" in error.reason


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
        requests = len(r.gw.http_requests)
        await asyncio.sleep(0.5)
        assert len(r.gw.connections) == 1 and len(r.gw.http_requests) == requests
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


# -- resume, identify, op 7, op 9 ---------------------------------------------------------


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


# -- liveness --------------------------------------------------------------------------------


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
        r.gw.faults.ack = True
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        await r.until_state(State.ALIVE)


async def test_half_open_server_is_detected_and_resumed() -> None:
    """Half-open (server silent, socket open): detected, closed within close_timeout, resumed."""
    policy = replace(FAST, backoff_s=(0.5,))
    async with running(policy=policy) as r:
        await r.until_state(State.ALIVE)
        r.gw.faults.silent = True
        await r.until(lambda: r.gw.connections[0].closed_at is not None, timeout=5)
        r.gw.faults.silent = False
        await r.until(lambda: r.gw.resumes == 1, timeout=5)
        await r.until_state(State.ALIVE)


async def test_heartbeat_timer_unique_after_crash_and_ten_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heartbeat that crashed once: after ten reconnects exactly one heartbeat timer exists
    and heartbeats keep their cadence."""
    import qqconn.protocol as proto

    real = proto.heartbeat_payload
    crashes = []

    def crash_once(seq: int | None) -> str:
        if not crashes:
            crashes.append(seq)
            raise RuntimeError("injected heartbeat crash")
        return real(seq)

    monkeypatch.setattr(proto, "heartbeat_payload", crash_once)
    async with running() as r:
        await r.until(lambda: crashes and r.gw.resumes >= 1 and r.mgr.state is State.ALIVE, 10)
        for i in range(10):
            await r.gw.send_reconnect(close_after_s=0.2)
            await r.until(lambda i=i: r.gw.resumes >= i + 2 and r.mgr.state is State.ALIVE, 10)
        timers = r.mgr._feeder.timers.pending()  # one entry per name, by construction
        assert list(timers).count(Timer.HEARTBEAT) == 1
        assert set(timers.values()) == {r.mgr.machine.attempt}
        last = r.gw.connections[-1]
        await asyncio.sleep(1.0)
        beats = [t for t, _ in r.gw.heartbeats if t >= last.opened_at]
        assert 2 <= len(beats) <= math.ceil(1.3 / (HB_MS / 1000)) + 1, beats


async def test_failing_heartbeat_sends_end_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three heartbeat sends failing in a row end the connection, which resumes."""
    from websockets.asyncio.connection import Connection

    real_send = Connection.send
    failing = {"on": False}

    async def send(self: Connection, message: Any, text: bool | None = None) -> None:
        if failing["on"] and isinstance(message, str) and message.startswith('{"op":1,'):
            raise OSError("injected send failure")
        await real_send(self, message, text=text)

    monkeypatch.setattr(Connection, "send", send)
    policy = replace(FAST, heartbeat_ack_timeout_ratio=1.0, stale_after_intervals=100.0)
    with capture_logs() as logs:
        async with running(policy=policy) as r:
            await r.until_state(State.ALIVE)
            failing["on"] = True
            await r.until(lambda: len(r.gw.connections) >= 2, timeout=5)
            failing["on"] = False
            await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
    failures = [e for e in logs if e["event"] == "qqconn.heartbeat_send_failed"]
    assert [e["failures"] for e in failures][:2] == [1, 2]
    ended = [e for e in logs if e["event"] == "qqconn.connection_ended"]
    assert "heartbeat sends failed" in ended[0]["reason"]


async def test_every_fifth_ack_logs_one_info_line() -> None:
    """Every 5th acknowledged heartbeat logs one INFO line (count, last seq, ACK latency)."""
    with capture_logs() as logs:
        async with running(hb_ms=150) as r:
            await r.until(lambda: r.mgr.machine.acks >= 10, timeout=8)
    lines = [e for e in logs if e["event"] == "qqconn.heartbeat"]
    assert [e["acked"] for e in lines][:2] == [5, 10]
    assert all(e["log_level"] == "info" and "latency_ms" in e and "last_seq" in e for e in lines)


# -- bad input -------------------------------------------------------------------------------


async def test_malformed_frames_are_logged_and_ignored() -> None:
    """Bad input (non-JSON, binary, missing op, unknown op, wrong types): logged shortened,
    ignored, the connection lives on."""
    with capture_logs() as logs:
        async with running() as r:
            await r.until_state(State.ALIVE)
            for raw in (
                "not json" * 100,
                b"\x00\x01binary",
                "[1,2]",
                '{"d":1}',
                '{"op":"7"}',
                '{"op":99}',
                '{"op":0,"t":"READY","d":{}}',
                '{"op":0,"s":"x","t":"X","d":1}',
            ):
                await r.gw.send_raw(raw)
            await r.gw.dispatch("C2C_MESSAGE_CREATE", {"ok": True})
            await r.until(lambda: any(d.type == "C2C_MESSAGE_CREATE" for d in r.host.dispatches))
            assert len(r.gw.connections) == 1 and r.mgr.state is State.ALIVE
    bad = [e for e in logs if e["event"] == "qqconn.bad_frame"]
    assert len(bad) == 7
    assert all(len(e["error"]) < 400 for e in bad)  # shortened
    assert any(e["event"] == "qqconn.dispatch_without_seq" for e in logs)  # delivered, not lost


async def test_oversized_frame_ends_connection_and_resumes() -> None:
    """An inbound frame above max_frame_bytes ends the connection (1009) and the session resumes."""
    policy = replace(FAST, max_frame_bytes=64 * 1024)
    async with running(policy=policy) as r:
        await r.until_state(State.ALIVE)
        await r.gw.send_raw(json.dumps({"op": 0, "s": 99, "t": "BIG", "d": "x" * 100_000}))
        await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)


# -- the host --------------------------------------------------------------------------------


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


# -- stop() from every state -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["token", "handshake", "identified", "alive", "backoff"])
async def test_stop_from_each_state_is_prompt_quiet_final(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() during token fetch, handshake, IDENTIFIED, ALIVE, BACKOFF sleep: prompt, quiet, final."""
    policy = replace(FAST, backoff_s=(30.0,), connect_timeout_s=30.0)
    if where == "identified":  # never send Identify: parks the machine in IDENTIFIED
        monkeypatch.setattr(Attempt, "send_identify", lambda self: None)

    def configure(gw: FakeGateway) -> None:
        if where == "token":
            gw.faults.token_endpoint = "hang"
        if where == "handshake":
            gw.faults.hello_delay_s = 30.0

    async with running(policy=policy, configure=configure) as r:
        if where == "token":
            await r.until(lambda: any("AccessToken" in h.path for h in r.gw.http_requests))
        elif where == "handshake":
            await r.gw.wait_for_connections(1)
        elif where == "identified":
            await r.until_state(State.IDENTIFIED)
        elif where == "alive":
            await r.until_state(State.ALIVE)
        else:
            await r.until_state(State.ALIVE)
            await r.gw.drop()
            await r.until_state(State.BACKOFF)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await r.mgr.stop()
        elapsed = loop.time() - started
        assert elapsed < FAST.close_timeout_s * 2 + 1, elapsed
        assert r.task.done() and r.task.exception() is None
        assert r.mgr.state is State.STOPPED
        sockets = len(r.gw.connections)
        await asyncio.sleep(0.3)
        assert len(r.gw.connections) == sockets and r.host.fatals == []
        assert r.mgr._feeder.timers.pending() == {}
        leftovers = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("qqconn-")]
        assert leftovers == []


async def test_stop_before_run_returns_at_once() -> None:
    """stop() before run(): run() returns at once and opens nothing."""
    async with FakeGateway() as gw:
        mgr = manager_for(gw, policy=Policy())
        await mgr.stop()
        async with asyncio.timeout(2):
            await mgr.run()
        assert mgr.state is State.STOPPED and gw.http_requests == []


# -- secrets ---------------------------------------------------------------------------------


async def test_secrets_never_reach_logs_reprs_or_state_file(tmp_path: Path) -> None:
    """Secrets (client secret, access token) never appear in logs, reprs or the state file."""
    state_file = tmp_path / "s.json"
    structlog.reset_defaults()
    with capture_logs() as logs:
        async with running(state_file=state_file) as r:
            await r.until_state(State.ALIVE)
            token = r.gw.valid_token()
            r.gw.faults.ack = False
            await r.until(lambda: r.gw.resumes >= 1, timeout=5)
            r.gw.faults.ack = True
            text = repr(r.mgr) + repr(r.mgr.snapshot()) + state_file.read_text()
    everything = text + repr(logs)
    assert "s3cret" not in everything
    assert token not in everything


async def test_op7_closes_the_old_socket_ourselves_at_once() -> None:
    """op 7: the manager closes the old socket itself (4000, not waiting for the server's 4009)."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await asyncio.sleep(FAST.quick_disconnect_threshold_s + 0.1)  # a grown-up connection
        await r.gw.send_reconnect(close_after_s=2.0)
        await r.until(lambda: r.gw.connections[0].closed_at is not None, timeout=1.0)
        first = r.gw.connections[0]
        assert first.closed_by == "client" and first.close_code == 4000
        await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
        assert r.mgr.machine.quick_drops == 0 and r.mgr.machine.failed_attempts == 0


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


async def test_a_raising_logging_setup_never_breaks_the_connection() -> None:
    """A host whose logging processor raises: log lines are lost, the connection is not."""

    def explode(logger: Any, name: str, event: Any) -> Any:
        raise BrokenPipeError("stderr went away")

    structlog.configure(processors=[explode])
    try:
        async with running() as r:
            await r.until_state(State.ALIVE)
            await r.gw.close(4009)
            await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
            await r.until(lambda: r.mgr.machine.acks >= 5, timeout=5)  # the 5th ACK logs INFO
            assert not r.task.done()
    finally:
        structlog.reset_defaults()
