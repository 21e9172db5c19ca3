"""Errors that say what to do: a failed or hung attempt names its stage and URL, and a long run
of failed attempts logs its progress at a bounded rate.

The machine tests run on a fake clock (events stamped by hand); the driver tests run a real
ConnectionManager against the fake gateway (or a closed port) on loopback. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from structlog.testing import capture_logs

from qqconn import ConnectionManager, FatalError, Policy, State
from qqconn import events as ev
from qqconn.endings import ConnectFailure, DeadlinePassed, EndingKind, classify
from qqconn.machine import ConnectionMachine
from qqconn.testing import FakeGateway

TOKEN_URL = "https://bots.example/app/getAppAccessToken"
GATEWAY_URL = "https://api.example/gateway/bot"
WS_URL = "wss://api.example/websocket"
DEADLINE = ev.Timer.ATTEMPT_DEADLINE


def deadline_reason(*progress: tuple[str, str]) -> str:
    """The reason of the deadline ending of an attempt that reported ``progress`` stages."""
    machine = ConnectionMachine(Policy(connect_timeout_s=20.0))
    machine.handle(ev.Started(0.0))
    machine.handle(ev.IdentifyPermitted(0.0))  # no session: attempt 1 waits for a permit
    for i, (stage, url) in enumerate(progress):
        machine.handle(ev.ConnectProgressed(1, 0.1 * i, stage, url))
    machine.handle(ev.TimerFired(DEADLINE, 1, 20.0))
    assert machine.last_ending is not None and machine.last_ending.kind is EndingKind.DEADLINE
    return machine.last_ending.reason


def test_a_hung_token_request_and_a_hung_handshake_are_told_apart() -> None:
    """The attempt deadline names the stage it caught and that stage's URL."""
    token = deadline_reason(("token", TOKEN_URL))
    gateway = deadline_reason(("token", TOKEN_URL), ("gateway", GATEWAY_URL))
    handshake = deadline_reason(
        ("token", TOKEN_URL), ("gateway", GATEWAY_URL), ("handshake", WS_URL)
    )
    assert token == f"no READY/RESUMED within 20 s: the token request to {TOKEN_URL} got no answer"
    assert gateway.endswith(f"the gateway URL request to {GATEWAY_URL} got no answer")
    assert handshake.endswith(f"the WebSocket handshake with {WS_URL} did not complete")
    assert len({token, gateway, handshake}) == 3


def test_a_deadline_after_the_socket_opened_names_the_step_it_waited_for() -> None:
    """No Hello, and no READY after Identify, are worded apart (the machine's own steps)."""
    machine = ConnectionMachine(Policy(connect_timeout_s=20.0))
    machine.handle(ev.Started(0.0))
    machine.handle(ev.IdentifyPermitted(0.0))  # no session: attempt 1 waits for a permit
    machine.handle(ev.ConnectProgressed(1, 0.0, "handshake", WS_URL))
    machine.handle(ev.SocketOpened(1, 0.5))
    machine.handle(ev.TimerFired(DEADLINE, 1, 20.0))
    assert machine.last_ending is not None
    assert machine.last_ending.reason.endswith("the socket opened but no Hello came")
    assert classify(DeadlinePassed(20.0, False, "identify")).reason.endswith(
        "Identify was sent, no READY came"
    )
    assert classify(DeadlinePassed(20.0, True)).reason == "no READY/RESUMED within 20 s"


def test_a_connect_failure_names_its_stage_and_url() -> None:
    """The ending of a failed stage carries the URL the driver reported."""
    ending = classify(ConnectFailure("token", "ConnectError: refused", url=TOKEN_URL))
    assert ending.reason == f"token failed ({TOKEN_URL}): ConnectError: refused"
    machine = ConnectionMachine()
    machine.handle(ev.Started(0.0))
    machine.handle(ev.IdentifyPermitted(0.0))
    machine.handle(ev.ConnectFailed(1, 0.1, "gateway", "HTTP 502", url=GATEWAY_URL))
    assert machine.last_ending is not None
    assert machine.last_ending.reason == f"gateway failed ({GATEWAY_URL}): HTTP 502"


def test_a_long_retry_run_logs_progress_at_a_bounded_rate() -> None:
    """qqconn.retrying: at the first wait, then at most one per progress_log_interval_s, each
    naming attempt k of n, the next delay and the last reason."""
    policy = Policy(
        max_reconnect_attempts=40,
        backoff_s=(10.0,),
        backoff_jitter=0.0,
        progress_log_interval_s=60.0,
    )
    machine = ConnectionMachine(policy)
    now = 0.0
    with capture_logs() as logs:
        machine.handle(ev.Started(now))
        machine.handle(ev.IdentifyPermitted(now))
        for _ in range(35):  # 35 failures, one every 10 s: 350 s of retrying
            n = machine.attempt
            machine.handle(ev.ConnectFailed(n, now, "token", "ConnectError", url=TOKEN_URL))
            assert machine.next_delay_s == 10.0
            now += 10.0
            machine.handle(ev.TimerFired(ev.Timer.BACKOFF, n, now))
            assert machine.state is State.AWAITING_PERMIT  # no session: Identify again
            machine.handle(ev.IdentifyPermitted(now))
    assert machine.state is State.CONNECTING
    lines = [e for e in logs if e["event"] == "qqconn.retrying"]
    assert lines[0]["failed_attempts"] == 1
    assert lines[0]["max_reconnect_attempts"] == 40
    assert lines[0]["next_try_in_s"] == 10.0
    assert lines[0]["last_reason"] == f"token failed ({TOKEN_URL}): ConnectError"
    assert [e["failed_attempts"] for e in lines] == [1, 7, 13, 19, 25, 31]
    assert all(e["log_level"] == "info" for e in lines)


def test_no_progress_line_for_the_wait_after_a_live_connection() -> None:
    """A connection that reached READY and dropped is no failed attempt: no qqconn.retrying."""
    machine = ConnectionMachine(Policy(backoff_jitter=0.0))
    with capture_logs() as logs:
        machine.handle(ev.Started(0.0))
        machine.handle(ev.IdentifyPermitted(0.0))
        machine.handle(ev.SocketOpened(1, 0.1))
        machine.handle(ev.HelloReceived(1, 0.2, 41_250))
        from qqconn.testing.events import ready_received

        machine.handle(ready_received(1, 0.3, "sid", 1))
        machine.handle(ev.SocketClosed(1, 100.0, None))
    assert machine.state is State.BACKOFF
    assert not [e for e in logs if e["event"] == "qqconn.retrying"]


# -- against a real manager ---------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def first_ending(manager: ConnectionManager, timeout: float = 10.0) -> str:
    """Run ``manager`` until its machine records an ending; return that ending's reason."""
    task = asyncio.create_task(manager.run())
    try:
        async with asyncio.timeout(timeout):
            while manager.machine.last_ending is None:
                await asyncio.sleep(0.02)
        return manager.machine.last_ending.reason
    finally:
        await manager.stop()
        with contextlib.suppress(FatalError):
            async with asyncio.timeout(5):
                await task


def manager_for(gw: FakeGateway, **kwargs: Any) -> ConnectionManager:
    options: dict[str, Any] = {
        "app_id": gw.app_id,
        "client_secret": "s3cret",
        "intents": 1,
        "api_base": gw.api_base,
        "token_url": gw.token_url,
        "policy": Policy(connect_timeout_s=0.5, backoff_s=(5.0,), close_timeout_s=0.3),
    }
    options.update(kwargs)
    return ConnectionManager(**options)


async def test_an_unreachable_token_url_is_named() -> None:
    """A closed token port: the ending and the qqconn.connect_failed line name the URL."""
    url = f"http://127.0.0.1:{closed_port()}/app/getAppAccessToken"
    async with FakeGateway() as gw:
        with capture_logs() as logs:
            reason = await first_ending(manager_for(gw, token_url=url))
    assert reason.startswith(f"token failed ({url}): ")
    failed = [e for e in logs if e["event"] == "qqconn.connect_failed"]
    assert failed and failed[0]["stage"] == "token" and failed[0]["url"] == url


async def test_a_hung_token_endpoint_is_named_by_the_deadline() -> None:
    """A token endpoint that never answers: the deadline's reason names the token URL."""
    async with FakeGateway() as gw:
        gw.faults.token_endpoint = "hang"
        reason = await first_ending(manager_for(gw))
        assert reason == (
            f"no READY/RESUMED within 0.5 s: the token request to {gw.token_url} got no answer"
        )


async def test_a_silent_gateway_socket_is_named_by_the_deadline() -> None:
    """A socket that opens and hears nothing: the deadline says no Hello came."""
    async with FakeGateway() as gw:
        gw.faults.silent = True
        reason = await first_ending(manager_for(gw))
        assert reason.endswith("the socket opened but no Hello came"), reason
