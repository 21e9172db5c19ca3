"""Per-socket faults of the fake gateway: one socket, or the next N sockets, misbehave alone."""

from __future__ import annotations

import asyncio

import pytest

import qqconn
from qqconn.testing import PER_SOCKET, FakeGateway, Faults
from tests.test_fake_gateway import (
    closed_with,
    fetch_token,
    identify,
    no_frame,
    open_ws,
    recv,
    send,
)


async def test_next_socket_is_a_zombie_and_the_one_after_is_not(fake_gateway: FakeGateway) -> None:
    """for_next_sockets(1, ack=False): the first socket gets no ACK, the second does."""
    gw = fake_gateway
    gw.faults.for_next_sockets(1, ack=False)
    token = await fetch_token(gw)
    async with open_ws(gw) as first:
        await identify(first, token)
        await send(first, {"op": 1, "d": 1})
        await no_frame(first, 0.3)
    async with open_ws(gw) as second:
        await identify(second, token)
        await send(second, {"op": 1, "d": 1})
        assert await recv(second) == {"op": 11}
    assert gw.faults.ack is True  # the global switch never moved


async def test_for_socket_mutes_one_open_socket_only(fake_gateway: FakeGateway) -> None:
    """for_socket(index, silent=True) on an open socket: it hears nothing, its sibling does."""
    gw = fake_gateway
    token = await fetch_token(gw)
    async with open_ws(gw) as a, open_ws(gw) as b:
        await identify(a, token)
        await recv(b)  # Hello
        await gw.wait_for(lambda: len(gw.connections) == 2)
        gw.faults.for_socket(0, silent=True)
        await send(a, {"op": 1, "d": 1})
        await send(b, {"op": 1, "d": None})
        assert await recv(b) == {"op": 11}
        await no_frame(a, 0.3)
        assert gw.connections[0].received(1) and not gw.connections[0].sent(11)


async def test_for_socket_applies_to_a_socket_not_yet_open(fake_gateway: FakeGateway) -> None:
    """for_socket(1, identify_close=4914): the second socket's Identify is refused, not the others."""
    gw = fake_gateway
    gw.faults.for_socket(1, identify_close=4914)
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        await identify(ws, token)
    async with open_ws(gw) as ws:
        await recv(ws)
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": 1}})
        assert await closed_with(ws) == (4914, "bot offline, sandbox only")
    async with open_ws(gw) as ws:
        await identify(ws, token)
    assert [c.close_code for c in gw.connections][1] == 4914


async def test_next_sockets_take_their_values_in_turn(fake_gateway: FakeGateway) -> None:
    """Two queued for_next_sockets calls cover sockets 0-1 and 2; socket 3 hears the default."""
    gw = fake_gateway
    gw.faults.for_next_sockets(2, hello_interval=1234)
    gw.faults.for_next_sockets(1, hello_interval=4321)
    got = []
    for _ in range(4):
        async with open_ws(gw) as ws:
            got.append((await recv(ws))["d"]["heartbeat_interval"])
    assert got == [1234, 1234, 4321, gw.heartbeat_interval_ms]


async def test_per_socket_heartbeat_timeout_closes_only_its_socket(
    fake_gateway: FakeGateway,
) -> None:
    """for_socket(0, heartbeat_timeout_s=0.2): socket 0 gets 4009, socket 1 stays open."""
    gw = fake_gateway
    gw.faults.for_socket(0, heartbeat_timeout_s=0.2)
    async with open_ws(gw) as a:
        await recv(a)
        async with open_ws(gw) as b:
            await recv(b)
            assert await closed_with(a) == (4009, "Session timed out")
            await no_frame(b, 0.3)
            assert gw.connections[1].is_open


def test_per_socket_switches_are_checked_at_once() -> None:
    """A switch that is not per-socket, a bad mode, a bad index or count raise ValueError."""
    f = Faults()
    with pytest.raises(ValueError, match="cannot be set per socket"):
        f.for_socket(0, token_endpoint="hang")
    with pytest.raises(ValueError, match="resume"):
        f.for_next_sockets(1, resume="sometimes")
    with pytest.raises(ValueError, match="index"):
        f.for_socket(-1, ack=False)
    with pytest.raises(ValueError, match="count"):
        f.for_next_sockets(0, ack=False)
    with pytest.raises(ValueError, match="at least one"):
        f.for_socket(0)
    assert "token_endpoint" not in PER_SOCKET and "ack" in PER_SOCKET


def test_values_resolve_per_socket_and_reset_clears_them() -> None:
    """value(): for_socket beats a queued for_next_sockets value, which beats the attribute."""
    f = Faults()
    f.for_socket(0, ack=False)
    f.for_next_sockets(1, ack=True, silent=True)
    f.socket_opened(0)
    f.socket_opened(1)
    assert (f.value("ack", 0), f.value("silent", 0)) == (False, True)
    assert (f.value("ack", 1), f.value("silent", 1)) == (True, False)
    f.silent = True
    assert f.value("silent", 1) is True  # no per-socket value: the attribute
    f.reset()
    assert (f.value("ack", 0), f.value("silent", 0)) == (True, False)


async def test_a_manager_recovers_from_one_zombie_socket(fake_gateway: FakeGateway) -> None:
    """One zombie socket (no ACKs): the manager drops it, resumes on the next, loses nothing."""
    gw = fake_gateway
    gw.faults.for_next_sockets(1, ack=False)
    seen: list[qqconn.Dispatch] = []
    manager = qqconn.ConnectionManager(
        app_id=gw.app_id,
        client_secret=gw.client_secret,
        intents=1,
        api_base=gw.api_base,
        token_url=gw.token_url,
        policy=gw.fast_policy,
        on_dispatch=seen.append,
    )
    task = asyncio.create_task(manager.run())
    try:
        await gw.wait_for(lambda: gw.current_session_id is not None)
        await gw.dispatch("AT_MESSAGE_CREATE")
        await gw.wait_for(lambda: gw.resumes == 1 and manager.state is qqconn.State.ALIVE, 10.0)
        await gw.dispatch("AT_MESSAGE_CREATE")
        await gw.wait_for(lambda: len(seen) == 3)
        assert [d.seq for d in seen] == [1, 2, 3]
        assert gw.identifies == 1 and gw.connections[0].sent(11) == []
        await gw.wait_for(lambda: gw.connections[1].sent(11), what="an ACK on the second socket")
    finally:
        await manager.stop()
        async with asyncio.timeout(5):
            await task
