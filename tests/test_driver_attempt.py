"""One attempt's I/O (qqconn/driver/attempt.py) against the fake gateway: the token and
handshake stages, the reader (bad and oversized frames), heartbeat sends and their timers, and
the close the machine asks for."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from qqconn import FatalError, State
from qqconn.events import Timer
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, HB_MS, running


async def test_token_endpoint_hanging_counts_as_failed_attempt() -> None:
    """A token request that hangs ends at connect_timeout_s and consumes an attempt."""
    policy = replace(FAST, connect_timeout_s=0.3, max_reconnect_attempts=2)

    def configure(gw: FakeGateway) -> None:
        gw.faults.token_endpoint = "hang"

    async with running(policy=policy, configure=configure) as r:
        error = await r.outcome()
        assert isinstance(error, FatalError) and error.retryable
        assert "attempts" in error.reason


async def test_heartbeats_follow_the_hello_interval() -> None:
    """Heartbeats go at the Hello interval (ms), first with d = null-or-seq, each acknowledged."""
    async with running(hb_ms=200) as r:
        await r.until(lambda: len(r.gw.heartbeats) >= 6, timeout=5)
        times = [t for t, _ in r.gw.heartbeats[:6]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.15 <= g <= 0.6 for g in gaps), gaps
        assert len(r.gw.connections) == 1


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
        timers = r.mgr._feeder.timers.pending()
        # The heartbeat timer is the current socket's; no timer of an older attempt is left.
        assert timers.get(Timer.HEARTBEAT) == r.mgr.machine.attempt
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

    def configure(gw: FakeGateway) -> None:
        # Assumed: the server does not close first. The real one closes 4009 after about 1.5
        # intervals without a heartbeat, before three failed sends (three intervals) add up.
        gw.faults.heartbeat_timeout_intervals = None

    with capture_logs() as logs:
        async with running(policy=policy, configure=configure) as r:
            await r.until_state(State.ALIVE)
            failing["on"] = True
            await r.until(lambda: len(r.gw.connections) >= 2, timeout=5)
            failing["on"] = False
            await r.until(lambda: r.gw.resumes == 1 and r.mgr.state is State.ALIVE, timeout=5)
    failures = [e for e in logs if e["event"] == "qqconn.heartbeat_send_failed"]
    assert [e["failures"] for e in failures][:2] == [1, 2]
    ended = [e for e in logs if e["event"] == "qqconn.connection_ended"]
    assert "heartbeat sends failed" in ended[0]["reason"]


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


async def test_a_replayed_seq_is_dropped_counted_and_logged() -> None:
    """A dispatch whose s the host already had never reaches it: counted in dispatches_dropped
    and logged (qqconn.dispatch_replayed); the ones after it are delivered."""
    with capture_logs() as logs:
        async with running() as r:
            await r.until_state(State.ALIVE)
            await r.gw.dispatch("C2C_MESSAGE_CREATE", {"n": 1})
            await r.until(lambda: len(r.host.dispatches) == 2, timeout=5)
            seq = r.host.dispatches[-1].seq
            assert seq is not None
            replay = {"op": 0, "s": seq, "t": "C2C_MESSAGE_CREATE", "id": "again", "d": {"n": 1}}
            await r.gw.send_raw(json.dumps(replay))
            await r.gw.dispatch("C2C_MESSAGE_CREATE", {"n": 2})
            await r.until(lambda: len(r.host.dispatches) == 3, timeout=5)
            assert r.mgr.dispatches_dropped == 1 and r.mgr.dispatches_delivered == 3
    assert [d.seq for d in r.host.dispatches][1:] == [seq, seq + 1]
    dropped = [e for e in logs if e["event"] == "qqconn.dispatch_replayed"]
    assert [e["seq"] for e in dropped] == [seq]
