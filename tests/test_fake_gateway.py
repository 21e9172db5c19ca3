"""The fake QQ gateway (qqconn.testing), driven by plain websockets + httpx clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from qqconn.testing import DEFAULT_APP_ID, DEFAULT_CLIENT_SECRET, MISSING, FakeGateway, Faults

Frame = dict[str, Any]

INTENTS = (1 << 30) | (1 << 25)  # PUBLIC_GUILD_MESSAGES | GROUP_AND_C2C_EVENT
WAIT_S = 3.0


# -- helpers ---------------------------------------------------------------------------------


async def fetch_token(gw: FakeGateway) -> str:
    async with httpx.AsyncClient(timeout=2.0) as client:
        r = await client.post(
            gw.token_url, json={"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET}
        )
    token = r.json()["access_token"]
    assert isinstance(token, str)
    return token


def ws_port(gw: FakeGateway) -> int:
    return int(gw.ws_url.rsplit(":", 1)[1].split("/", 1)[0])


def open_ws(gw: FakeGateway, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "open_timeout": 2.0,
        "close_timeout": 0.5,
        "ping_interval": None,
        "compression": None,
    }
    options.update(kwargs)
    return connect(gw.ws_url, **options)


async def recv(ws: ClientConnection, timeout: float = WAIT_S) -> Frame:
    async with asyncio.timeout(timeout):
        msg = json.loads(await ws.recv())
    assert isinstance(msg, dict)
    return msg


async def send(ws: ClientConnection, frame: Frame) -> None:
    await ws.send(json.dumps(frame))


async def identify(
    ws: ClientConnection, token: str, *, shard: list[int] | None = None, intents: int = INTENTS
) -> Frame:
    """Read Hello, send Identify, return READY."""
    hello = await recv(ws)
    assert hello["op"] == 10
    d: dict[str, Any] = {"token": f"QQBot {token}", "intents": intents}
    if shard is not None:
        d["shard"] = shard
    await send(ws, {"op": 2, "d": d})
    ready = await recv(ws)
    assert ready["t"] == "READY", ready
    return ready


async def closed_with(ws: ClientConnection, timeout: float = WAIT_S) -> tuple[int, str]:
    """Read until the socket closes; return the close code/reason the client received."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return 1006, ""
            return exc.rcvd.code, exc.rcvd.reason


async def no_frame(ws: ClientConnection, within_s: float) -> None:
    """Assert nothing arrives for ``within_s`` (and the socket stays open)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(within_s):
            await ws.recv()


@pytest.fixture
async def ready_ws(
    fake_gateway: FakeGateway,
) -> AsyncIterator[tuple[FakeGateway, ClientConnection, Frame, str]]:
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        ready = await identify(ws, token)
        yield fake_gateway, ws, ready, token


# -- REST side -------------------------------------------------------------------------------


async def test_token_endpoint_returns_expires_in_as_a_string(fake_gateway: FakeGateway) -> None:
    """A correct appId/secret gets a token and expires_in as a string of remaining seconds."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        r = await client.post(
            fake_gateway.token_url,
            json={"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET},
        )
        again = await client.post(
            fake_gateway.token_url,
            json={"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET},
        )
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["expires_in"], str)
    assert 7100 < int(body["expires_in"]) <= 7200
    assert fake_gateway.is_valid_token(body["access_token"])
    assert again.json()["access_token"] == body["access_token"]  # asking again does not rotate
    assert [h.status for h in fake_gateway.http_requests] == [200, 200]


@pytest.mark.parametrize(
    ("payload", "as_json"),
    [
        ({"appId": DEFAULT_APP_ID, "clientSecret": "wrong"}, True),
        ({"appId": "9999", "clientSecret": DEFAULT_CLIENT_SECRET}, True),
        ({"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET}, False),
    ],
)
async def test_token_endpoint_errors_are_http_200_bodies(
    fake_gateway: FakeGateway, payload: dict[str, str], as_json: bool
) -> None:
    """Wrong appId, wrong secret or a non-JSON body get HTTP 200 {"code":100007} without a token."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        if as_json:
            r = await client.post(fake_gateway.token_url, json=payload)
        else:
            r = await client.post(fake_gateway.token_url, data=payload)
    assert r.status_code == 200
    assert r.json() == {"code": 100007, "message": "appid invalid"}


async def test_token_rotates_inside_the_refresh_window() -> None:
    """Within the last 60 s of a token the endpoint issues a new one; the old one stays valid."""
    async with FakeGateway(token_ttl_s=60.3) as gw:
        first = await fetch_token(gw)
        await asyncio.sleep(0.4)
        second = await fetch_token(gw)
        assert second != first
        assert gw.is_valid_token(first) and gw.is_valid_token(second)


async def test_rotate_token_revokes_the_old_one(fake_gateway: FakeGateway) -> None:
    """rotate_token() makes a new current token and (by default) revokes the previous ones."""
    old = await fetch_token(fake_gateway)
    new = fake_gateway.rotate_token()
    assert new != old and not fake_gateway.is_valid_token(old)
    assert await fetch_token(fake_gateway) == new
    kept = fake_gateway.rotate_token(revoke_old=False)
    assert fake_gateway.is_valid_token(new) and fake_gateway.is_valid_token(kept)


async def test_gateway_endpoints_require_the_qqbot_token(fake_gateway: FakeGateway) -> None:
    """/gateway and /gateway/bot answer 401 without a valid "QQBot <token>", else url + limits."""
    token = await fetch_token(fake_gateway)
    async with httpx.AsyncClient(base_url=fake_gateway.api_base, timeout=2.0) as client:
        assert (await client.get("/gateway/bot")).status_code == 401
        bad = await client.get("/gateway/bot", headers={"Authorization": "QQBot nope"})
        assert bad.status_code == 401
        assert bad.json()["code"] == 11244
        bare = await client.get("/gateway/bot", headers={"Authorization": token})
        assert bare.status_code == 401
        auth = {"Authorization": f"QQBot {token}"}
        bot = (await client.get("/gateway/bot", headers=auth)).json()
        plain = (await client.get("/gateway", headers=auth)).json()
        assert (await client.get("/nope", headers=auth)).status_code == 404
    assert bot == {
        "url": fake_gateway.ws_url,
        "shards": 1,
        "session_start_limit": {
            "total": 1000,
            "remaining": 1000,
            "reset_after": 86400000,
            "max_concurrency": 1,
        },
    }
    assert plain == {"url": fake_gateway.ws_url}
    assert fake_gateway.ws_url.startswith("ws://127.0.0.1:")


async def test_session_start_remaining_counts_identifies(fake_gateway: FakeGateway) -> None:
    """Each successful Identify decrements session_start_limit.remaining."""
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        await identify(ws, token)
    async with httpx.AsyncClient(timeout=2.0) as client:
        r = await client.get(
            f"{fake_gateway.api_base}/gateway/bot", headers={"Authorization": f"QQBot {token}"}
        )
    assert r.json()["session_start_limit"]["remaining"] == 999


@pytest.mark.parametrize("mode", ["http500", "error_body", "hang"])
async def test_token_endpoint_faults(fake_gateway: FakeGateway, mode: str) -> None:
    """token_endpoint faults: HTTP 500, an HTTP 200 error body, or no answer at all."""
    fake_gateway.faults.token_endpoint = mode  # type: ignore[assignment]
    async with httpx.AsyncClient(timeout=0.3) as client:
        body = {"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET}
        if mode == "hang":
            with pytest.raises(httpx.ReadTimeout):
                await client.post(fake_gateway.token_url, json=body)
            assert fake_gateway.http_requests[-1].status is None
            return
        r = await client.post(fake_gateway.token_url, json=body)
    if mode == "http500":
        assert r.status_code == 500
    else:
        assert r.status_code == 200
        assert "access_token" not in r.json() and r.json()["code"] == 100017


@pytest.mark.parametrize("mode", ["http500", "hang"])
async def test_gateway_endpoint_faults(fake_gateway: FakeGateway, mode: str) -> None:
    """gateway_endpoint faults: HTTP 500, or no answer until the client gives up."""
    token = await fetch_token(fake_gateway)
    fake_gateway.faults.gateway_endpoint = mode  # type: ignore[assignment]
    auth = {"Authorization": f"QQBot {token}"}
    async with httpx.AsyncClient(base_url=fake_gateway.api_base, timeout=0.3) as client:
        if mode == "hang":
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/gateway/bot", headers=auth)
        else:
            assert (await client.get("/gateway", headers=auth)).status_code == 500


async def test_http_keep_alive_serves_many_requests_on_one_connection(
    fake_gateway: FakeGateway,
) -> None:
    """httpx's pooled connection is reused across requests (keep-alive works)."""
    token = await fetch_token(fake_gateway)
    async with httpx.AsyncClient(base_url=fake_gateway.api_base, timeout=2.0) as client:
        for _ in range(5):
            r = await client.get("/gateway", headers={"Authorization": f"QQBot {token}"})
            assert r.status_code == 200
    assert len(fake_gateway.http_requests) == 6


async def test_malformed_http_gets_400(fake_gateway: FakeGateway) -> None:
    """A request h11 cannot parse is answered 400 and the connection closed."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(fake_gateway.api_base.rsplit(":", 1)[1])
    )
    writer.write(b"NOT HTTP\r\n\r\n")
    async with asyncio.timeout(WAIT_S):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")


# -- handshake, heartbeat, dispatch ----------------------------------------------------------


async def test_hello_identify_ready(fake_gateway: FakeGateway) -> None:
    """Hello comes first; Identify (extra keys, no properties) gets READY s=1 echoing the shard."""
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        hello = await recv(ws)
        assert hello == {"op": 10, "d": {"heartbeat_interval": 500}}
        await send(
            ws,
            {
                "op": 2,
                "Session": None,
                "d": {"token": f"QQBot {token}", "intents": INTENTS, "shard": [2, 4]},
            },
        )
        ready = await recv(ws)
    assert ready["op"] == 0 and ready["s"] == 1 and ready["t"] == "READY"
    d = ready["d"]
    assert d["version"] == 1 and d["shard"] == [2, 4]
    assert d["session_id"] == fake_gateway.current_session_id
    assert d["user"]["bot"] is True and isinstance(d["user"]["id"], str) and d["user"]["username"]
    rec = fake_gateway.connections[0]
    assert (
        rec.hello_interval == 500 and rec.identify_count == 1 and rec.session_id == d["session_id"]
    )
    assert [f.op for f in rec.frames] == [10, 2, 0]
    assert [f.direction for f in rec.frames] == ["out", "in", "out"]


async def test_identify_without_shard_gets_default_shard(fake_gateway: FakeGateway) -> None:
    """An Identify without shard/properties is accepted; READY reports shard [0, 1]."""
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        ready = await identify(ws, token)
    assert ready["d"]["shard"] == [0, 1]


async def test_identify_with_a_bad_token_closes_4004(fake_gateway: FakeGateway) -> None:
    """An Identify whose token is not "QQBot <valid token>" is closed with 4004."""
    token = await fetch_token(fake_gateway)
    for bad in ["QQBot nope", token, f"Bot 1000.{token}"]:
        async with open_ws(fake_gateway) as ws:
            await recv(ws)
            await send(ws, {"op": 2, "d": {"token": bad, "intents": INTENTS}})
            assert (await closed_with(ws))[0] == 4004


async def test_legacy_tokens_are_accepted_when_enabled(fake_gateway: FakeGateway) -> None:
    """faults.legacy_tokens accepts "Bot <appid>.<token>" and a bare token in Identify."""
    fake_gateway.faults.legacy_tokens = True
    token = await fetch_token(fake_gateway)
    for form in [f"Bot 1000.{token}", token]:
        async with open_ws(fake_gateway) as ws:
            await recv(ws)
            await send(ws, {"op": 2, "d": {"token": form, "intents": INTENTS}})
            assert (await recv(ws))["t"] == "READY"


async def test_second_identify_on_a_socket_closes_4005(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """Identifying twice on one socket is closed 4005 (already authenticated)."""
    _, ws, _, token = ready_ws
    await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
    assert (await closed_with(ws))[0] == 4005


async def test_heartbeat_is_acked_with_null_and_int(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """Heartbeats with d null and d int are both answered {"op":11} and recorded."""
    gw, ws, _, _ = ready_ws
    await send(ws, {"op": 1, "d": None})
    assert await recv(ws) == {"op": 11}
    await send(ws, {"op": 1, "d": 1})
    assert await recv(ws) == {"op": 11}
    assert [d for _, d in gw.heartbeats] == [None, 1]


async def test_heartbeat_before_identify_is_acked(fake_gateway: FakeGateway) -> None:
    """A heartbeat before Identify (botgo does this) is still acknowledged."""
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await send(ws, {"op": 1, "d": 0})
        assert await recv(ws) == {"op": 11}


async def test_dispatch_has_increasing_s_and_typed_id(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """dispatch() numbers events 2, 3, ... after READY; id is "<t>:<random>"; accepted() lists s."""
    gw, ws, _, _ = ready_ws
    seqs = [await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"content": f"m{i}"}) for i in range(3)]
    assert seqs == [2, 3, 4]
    frames = [await recv(ws) for _ in range(3)]
    assert [f["s"] for f in frames] == [2, 3, 4]
    assert [f["d"]["content"] for f in frames] == ["m0", "m1", "m2"]
    ids = [f["id"] for f in frames]
    assert all(i.startswith("GROUP_AT_MESSAGE_CREATE:") and len(i) > 30 for i in ids)
    assert len(set(ids)) == 3
    assert gw.accepted() == [2, 3, 4] and gw.session_seq() == 4


async def test_dispatch_nowait_burst_keeps_order(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """A burst of dispatch_nowait() calls is delivered complete and in order."""
    gw, ws, _, _ = ready_ws
    seqs = [gw.dispatch_nowait("C2C_MESSAGE_CREATE", {"i": i}) for i in range(200)]
    got = [(await recv(ws))["s"] for _ in range(200)]
    assert got == seqs == list(range(2, 202))


async def test_dispatch_without_a_session_raises(fake_gateway: FakeGateway) -> None:
    """dispatch() before any Identify raises LookupError rather than dropping the event."""
    with pytest.raises(LookupError):
        await fake_gateway.dispatch("GROUP_AT_MESSAGE_CREATE", {})
    with pytest.raises(LookupError):
        fake_gateway.dispatch_nowait("X", {}, session_id="nope")


async def test_invalid_json_closes_4002(fake_gateway: FakeGateway) -> None:
    """A frame that is not JSON is closed 4002 and recorded with op None."""
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await ws.send("{not json")
        assert (await closed_with(ws))[0] == 4002
    frame = fake_gateway.connections[0].received()[0]
    assert frame.op is None and frame.payload_text == "{not json"


async def test_unknown_opcode_closes_4001(fake_gateway: FakeGateway) -> None:
    """A client frame with an op the gateway does not take is closed 4001."""
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await send(ws, {"op": 3, "d": {}})
        assert (await closed_with(ws))[0] == 4001


# -- Resume ----------------------------------------------------------------------------------


async def test_resume_replays_exactly_the_missed_events_then_resumed(
    fake_gateway: FakeGateway,
) -> None:
    """Resume(seq) replays buffered events with s > seq, then RESUMED {"s": latest, "d": ""}."""
    gw = fake_gateway
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        ready = await identify(ws, token)
        session_id = ready["d"]["session_id"]
        await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"n": 2})
        await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"n": 3})
        assert [(await recv(ws))["s"] for _ in range(2)] == [2, 3]
        await ws.close(4000)  # a client that means to resume never closes 1000/1001
    await gw.wait_for(lambda: not gw.live_connections, 2.0)
    assert gw.connections[0].closed_by == "client"
    # Detached: buffered only.
    missed = [await gw.dispatch("C2C_MESSAGE_CREATE", {"n": n}) for n in (4, 5, 6)]
    assert missed == [4, 5, 6]
    async with open_ws(gw) as ws:
        await recv(ws)  # Hello
        await send(
            ws, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": session_id, "seq": 3}}
        )
        replayed = [await recv(ws) for _ in range(3)]
        resumed = await recv(ws)
        assert [f["s"] for f in replayed] == [4, 5, 6]
        assert [f["d"]["n"] for f in replayed] == [4, 5, 6]
        assert resumed == {"op": 0, "s": 6, "t": "RESUMED", "d": ""}
        # Attached again: live dispatches flow on the new socket.
        assert await gw.dispatch("C2C_MESSAGE_CREATE", {"n": 7}) == 7
        assert (await recv(ws))["s"] == 7
    assert gw.resumes == 1 and gw.identifies == 1
    assert gw.connections[1].session_id == session_id


async def test_resume_with_nothing_missed_sends_only_resumed(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """Resume with the latest seq replays nothing and sends RESUMED straight away."""
    gw, ws, ready, token = ready_ws
    await ws.close(4000)  # a client that means to resume never closes 1000/1001
    async with open_ws(gw) as ws2:
        await recv(ws2)
        sid = ready["d"]["session_id"]
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        assert await recv(ws2) == {"op": 0, "s": 1, "t": "RESUMED", "d": ""}


async def test_resume_of_an_unknown_session_closes_4006(fake_gateway: FakeGateway) -> None:
    """A Resume naming an unknown (or expired) session is closed 4006 by default."""
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await send(ws, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": "x", "seq": 0}})
        assert (await closed_with(ws))[0] == 4006


async def test_expired_session_cannot_be_resumed(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """expire_session() forgets the session, so its Resume gets 4006."""
    gw, _, ready, token = ready_ws
    gw.expire_session()
    assert gw.current_session_id is None
    async with open_ws(gw) as ws2:
        await recv(ws2)
        sid = ready["d"]["session_id"]
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        assert (await closed_with(ws2))[0] == 4006


async def test_resume_with_seq_ahead_closes_4007(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """A Resume whose seq is beyond the session's latest s is closed 4007."""
    gw, _, ready, token = ready_ws
    async with open_ws(gw) as ws2:
        await recv(ws2)
        sid = ready["d"]["session_id"]
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 9}})
        assert (await closed_with(ws2))[0] == 4007


@pytest.mark.parametrize(
    ("mode", "code"), [("4006", 4006), ("4902", 4902), ("accept_then_close", 1000), ("op9", None)]
)
async def test_resume_refusal_modes(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str], mode: str, code: int | None
) -> None:
    """faults.resume refuses a valid Resume: close 4006/4902, close 1000 at once, or op 9 false."""
    gw, _, ready, token = ready_ws
    gw.faults.resume = mode  # type: ignore[assignment]
    await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {})
    async with open_ws(gw) as ws2:
        await recv(ws2)
        sid = ready["d"]["session_id"]
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        if code is not None:
            got, reason = await closed_with(ws2)
            assert got == code
            if code == 4902:
                assert reason == "reset by resume"
            # Nothing but the close: no replay, no RESUMED.
            assert [f.op for f in gw.connections[-1].sent()] == [10]
        else:
            assert await recv(ws2) == {"op": 9, "d": False}
            # The socket stays open: the client may Identify on it.
            await send(ws2, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
            assert (await recv(ws2))["t"] == "READY"


# -- fault actions ---------------------------------------------------------------------------


async def test_send_reconnect_then_4009_when_client_stays(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """send_reconnect(): op 7, then close 4009 "Session timed out" if the client did not close."""
    gw, ws, _, _ = ready_ws
    started = time.monotonic()
    assert await gw.send_reconnect(close_after_s=0.2) == 1
    assert await recv(ws) == {"op": 7}
    assert await closed_with(ws) == (4009, "Session timed out")
    assert time.monotonic() - started >= 0.2
    rec = gw.connections[0]
    assert rec.closed_by == "server" and rec.close_code == 4009


async def test_send_reconnect_lets_a_prompt_client_close_first(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """If the client closes within close_after_s after op 7, no 4009 is sent."""
    gw, ws, _, _ = ready_ws

    async def client() -> None:
        assert await recv(ws) == {"op": 7}
        await ws.close(4900, "reconnecting")

    task = asyncio.create_task(client())
    await gw.send_reconnect(close_after_s=1.0)
    await task
    rec = gw.connections[0]
    assert rec.closed_by == "client" and rec.close_code == 4900


@pytest.mark.parametrize("code", [4009, 4004, 4006, 4008, 4914, 4900, 1000])
async def test_close_with_a_code(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str], code: int
) -> None:
    """close(code, reason) ends the socket with a close frame carrying that code and reason."""
    gw, ws, _, _ = ready_ws
    assert await gw.close(code, "because") == 1
    assert await closed_with(ws) == (code, "because")
    rec = gw.connections[0]
    assert (rec.closed_by, rec.close_code, rec.close_reason) == ("server", code, "because")
    assert rec.closed_at is not None and rec.closed_at >= rec.opened_at


async def test_drop_sends_no_close_frame(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """drop() aborts the TCP connection: the client sees 1006, the record says "drop"."""
    gw, ws, _, _ = ready_ws
    await gw.drop()
    assert await closed_with(ws) == (1006, "")
    rec = gw.connections[0]
    assert (rec.closed_by, rec.close_code) == ("drop", 1006)


async def test_ack_false_is_a_zombie_that_still_dispatches(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """faults.ack=False: heartbeats go unanswered while dispatches keep flowing."""
    gw, ws, _, _ = ready_ws
    gw.faults.ack = False
    await send(ws, {"op": 1, "d": 1})
    await gw.wait_for(lambda: len(gw.heartbeats) == 1, 2.0)
    await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {})
    assert (await recv(ws))["op"] == 0  # the dispatch, not an ACK
    await no_frame(ws, 0.15)
    gw.faults.ack = True
    await send(ws, {"op": 1, "d": 2})
    assert await recv(ws) == {"op": 11}


async def test_silent_is_a_half_open_server(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """faults.silent: no ACK, no dispatch, no pong; events stay buffered; Resume gets them later."""
    gw, ws, ready, token = ready_ws
    gw.faults.silent = True
    await send(ws, {"op": 1, "d": 1})
    seq = await gw.dispatch("GROUP_AT_MESSAGE_CREATE", {"x": 1})
    pong = await ws.ping()
    await no_frame(ws, 0.2)
    with pytest.raises(TimeoutError):  # no WebSocket pong either
        async with asyncio.timeout(0.05):
            await asyncio.shield(pong)
    assert gw.connections[0].is_open and len(gw.heartbeats) == 1  # heard, not answered
    assert gw.accepted() == [seq]
    # The client gives up on the silent socket and resumes elsewhere once the server recovers.
    await gw.drop()
    gw.faults.silent = False
    async with open_ws(gw) as ws2:
        await recv(ws2)
        sid = ready["d"]["session_id"]
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        assert (await recv(ws2))["d"] == {"x": 1}
        assert (await recv(ws2))["t"] == "RESUMED"


async def test_silent_gateway_ignores_the_client_close_handshake(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """While silent, a client close gets no reply: the client times out and aborts (1006)."""
    gw, ws, _, _ = ready_ws
    gw.faults.silent = True
    started = time.monotonic()
    await ws.close()  # client close_timeout is 0.5 s
    assert time.monotonic() - started >= 0.4
    assert ws.close_code == 1006
    await gw.wait_for(lambda: not gw.connections[0].is_open, 2.0)
    assert gw.connections[0].closed_by == "client"


async def test_close_new_sockets_with_a_code_counts_down(fake_gateway: FakeGateway) -> None:
    """close_new_sockets(after_s, 2, code) closes the next two sockets with code, not the third."""
    gw = fake_gateway
    gw.faults.close_new_sockets(0.1, 2, code=4900)
    for _ in range(2):
        async with open_ws(gw) as ws:
            started = time.monotonic()
            await recv(ws)  # Hello still comes first
            assert (await closed_with(ws))[0] == 4900
            assert time.monotonic() - started >= 0.08
    assert gw.faults.close_new_sockets_left == 0
    async with open_ws(gw) as ws:
        await recv(ws)
        await no_frame(ws, 0.2)


async def test_close_new_sockets_is_spent_only_when_its_last_socket_is_gone(
    fake_gateway: FakeGateway,
) -> None:
    """A burst is spent when no close of it can still reach a client: none left to schedule
    and none scheduled whose socket is still open. reset() lifts the fault, yet a close it
    already scheduled still lands, and the burst is not spent until it has."""
    gw = fake_gateway
    gw.faults.close_new_sockets(0.3, 1, code=4900)
    assert not gw.faults.close_new_sockets_spent
    async with open_ws(gw) as ws:
        await recv(ws)  # Hello: the close is scheduled, not yet sent
        assert gw.faults.close_new_sockets_left == 0
        assert gw.faults.close_new_sockets_pending == 1
        assert not gw.faults.close_new_sockets_spent
        gw.faults.reset()
        assert gw.faults.close_new_sockets_pending == 1
        assert not gw.faults.close_new_sockets_spent
        assert (await closed_with(ws))[0] == 4900
    await gw.wait_for(lambda: gw.faults.close_new_sockets_spent, 2.0)
    assert gw.faults.close_new_sockets_pending == 0


async def test_close_new_sockets_on_a_socket_the_client_closed_first_is_spent(
    fake_gateway: FakeGateway,
) -> None:
    """A scheduled close whose socket the client closed first is spent with the socket."""
    gw = fake_gateway
    gw.faults.close_new_sockets(30.0, 1, code=4900)
    async with open_ws(gw) as ws:
        await recv(ws)
        assert gw.faults.close_new_sockets_pending == 1
        await ws.close()
    await gw.wait_for(lambda: gw.faults.close_new_sockets_spent, 2.0)
    assert gw.connections[0].closed_by == "client"


async def test_close_new_sockets_without_a_code_drops(fake_gateway: FakeGateway) -> None:
    """close_new_sockets(after_s, 1) with code None drops the socket without a close frame."""
    gw = fake_gateway
    gw.faults.close_new_sockets(0.0, 1)
    async with open_ws(gw) as ws:
        assert (await closed_with(ws))[0] == 1006
    await gw.wait_for(lambda: gw.connections[0].closed_by is not None, 2.0)
    assert gw.connections[0].closed_by == "drop"


@pytest.mark.parametrize(("resumable", "close_code"), [(False, 4903), (True, None), (False, 4924)])
async def test_send_invalid_session(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
    resumable: bool,
    close_code: int | None,
) -> None:
    """send_invalid_session(): op 9 with d=resumable, then the close code (None: stays open)."""
    gw, ws, _, _ = ready_ws
    await gw.send_invalid_session(resumable, close_code=close_code)
    assert await recv(ws) == {"op": 9, "d": resumable}
    if close_code is None:
        await no_frame(ws, 0.15)
    else:
        expected = {4903: "create session error", 4924: "session ip forbidden"}[close_code]
        assert await closed_with(ws) == (close_code, expected)


async def test_send_raw_sends_malformed_and_binary_frames(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """send_raw() delivers text and binary messages as given and records them."""
    gw, ws, _, _ = ready_ws
    await gw.send_raw('{"op": 0, "s": "x"')
    await gw.send_raw(b"\x00\xffbinary")
    await gw.send_raw('{"op":42}')
    async with asyncio.timeout(WAIT_S):
        assert await ws.recv() == '{"op": 0, "s": "x"'
        assert await ws.recv() == b"\x00\xffbinary"
        assert await ws.recv() == '{"op":42}'
    sent = gw.connections[0].sent()[-3:]
    assert [(f.op, f.binary) for f in sent] == [(None, False), (None, True), (42, False)]


@pytest.mark.parametrize("value", [0, -1, MISSING, "NaN", 1e12, None])
async def test_hello_interval_override(fake_gateway: FakeGateway, value: Any) -> None:
    """faults.hello_interval sends any value in Hello, or omits the key with MISSING."""
    fake_gateway.faults.hello_interval = value
    async with open_ws(fake_gateway) as ws:
        hello = await recv(ws)
    assert hello["op"] == 10
    if value is MISSING:
        assert hello["d"] == {}
    else:
        assert hello["d"] == {"heartbeat_interval": value}
    assert fake_gateway.connections[0].hello_interval is value or (
        fake_gateway.connections[0].hello_interval == value
    )


@pytest.mark.parametrize("code", [4914, 4004, 4013])
async def test_identify_close(fake_gateway: FakeGateway, code: int) -> None:
    """faults.identify_close closes every Identify, even a valid one, with that code."""
    fake_gateway.faults.identify_close = code
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
        assert (await closed_with(ws))[0] == code
    assert fake_gateway.current_session_id is None


async def test_disallowed_intents_get_op9_then_4903(fake_gateway: FakeGateway) -> None:
    """Intents outside faults.allowed_intents: op 9 false, then close 4903 "create session error"."""
    fake_gateway.faults.allowed_intents = 1 << 30
    token = await fetch_token(fake_gateway)
    async with open_ws(fake_gateway) as ws:
        await recv(ws)
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
        assert await recv(ws) == {"op": 9, "d": False}
        assert await closed_with(ws) == (4903, "create session error")
    async with open_ws(fake_gateway) as ws:
        assert (await identify(ws, token, intents=1 << 30))["s"] == 1


async def test_heartbeat_timeout_closes_4009(fake_gateway: FakeGateway) -> None:
    """faults.heartbeat_timeout_s closes a socket with no heartbeat 4009; a beating one lives."""
    gw = fake_gateway
    gw.faults.heartbeat_timeout_s = 0.3
    token = await fetch_token(gw)
    async with open_ws(gw) as quiet, open_ws(gw) as beating:
        await identify(quiet, token)
        await recv(beating)
        started = time.monotonic()
        for _ in range(6):
            await send(beating, {"op": 1, "d": None})
            assert await recv(beating) == {"op": 11}
            await asyncio.sleep(0.1)
        assert await closed_with(quiet) == (4009, "Session timed out")
        assert time.monotonic() - started < 1.0
        assert gw.connections[1].is_open


async def test_reconnect_every_rotates_identified_sockets(fake_gateway: FakeGateway) -> None:
    """faults.reconnect_every_s: op 7 then 4009 on each identified socket, again after Resume."""
    gw = fake_gateway
    gw.faults.reconnect_every_s = 0.2
    gw.faults.reconnect_close_after_s = 0.1
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        ready = await identify(ws, token)
        assert await recv(ws) == {"op": 7}
        assert (await closed_with(ws))[0] == 4009
    async with open_ws(gw) as ws:
        await recv(ws)
        sid = ready["d"]["session_id"]
        await send(ws, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        assert (await recv(ws))["t"] == "RESUMED"
        assert await recv(ws) == {"op": 7}
        assert (await closed_with(ws))[0] == 4009
    async with open_ws(gw) as ws:  # not identified: not rotated
        await recv(ws)
        await no_frame(ws, 0.3)


async def test_early_frames_are_dropped_when_configured(fake_gateway: FakeGateway) -> None:
    """With hello_delay_s and drop_early_frames, an Identify sent before Hello gets a drop."""
    gw = fake_gateway
    gw.faults.hello_delay_s = 0.3
    gw.faults.drop_early_frames = True
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
        assert (await closed_with(ws))[0] == 1006
    gw.faults.drop_early_frames = False
    async with open_ws(gw) as ws:  # default: early Identify accepted (botgo)
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
        assert (await recv(ws))["t"] == "READY"
        assert (await recv(ws))["op"] == 10


async def test_session_limit_enforcement_closes_4008(fake_gateway: FakeGateway) -> None:
    """faults.enforce_session_limit: a second Identify within 5 s (max_concurrency 1) gets 4008."""
    gw = fake_gateway
    gw.faults.enforce_session_limit = True
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        await identify(ws, token)
    async with open_ws(gw) as ws:
        await recv(ws)
        await send(ws, {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS}})
        assert (await closed_with(ws))[0] == 4008


async def test_faults_reject_unknown_modes() -> None:
    """A typo in a fault mode raises ValueError at assignment; reset() restores defaults."""
    faults = Faults()
    with pytest.raises(ValueError, match="resume"):
        faults.resume = "4007"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        Faults(token_endpoint="slow")  # type: ignore[arg-type]
    faults.ack = False
    faults.close_new_sockets(1.0, 3, 4009)
    faults.reset()
    assert faults == Faults()


async def test_fault_actions_target_one_connection_by_index(fake_gateway: FakeGateway) -> None:
    """index= picks one socket; other open sockets are untouched; a closed index raises."""
    gw = fake_gateway
    async with open_ws(gw) as a, open_ws(gw) as b:
        await recv(a)
        await recv(b)
        assert await gw.close(4009, index=1) == 1
        assert (await closed_with(b))[0] == 4009
        await no_frame(a, 0.1)
        with pytest.raises(LookupError):
            await gw.drop(index=1)
    await gw.wait_for(lambda: not gw.live_connections, 2.0)
    assert await gw.close(1000) == 0


# -- recording, waiting, shutdown ------------------------------------------------------------


async def test_wait_for_is_bounded(fake_gateway: FakeGateway) -> None:
    """wait_for() raises TimeoutError naming the condition; wait_for_connections returns the nth."""
    with pytest.raises(TimeoutError, match="never"):
        await fake_gateway.wait_for(lambda: False, 0.05, what="never")
    async with open_ws(fake_gateway):
        rec = await fake_gateway.wait_for_connections(1, 1.0)
        assert rec.index == 0 and rec.is_open


async def test_frames_are_recorded_in_order_with_timestamps(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """gw.frames holds every frame in and out, with increasing monotonic timestamps."""
    gw, ws, _, _ = ready_ws
    await send(ws, {"op": 1, "d": 1})
    await recv(ws)
    ops = [(f.direction, f.op) for f in gw.frames]
    assert ops == [("out", 10), ("in", 2), ("out", 0), ("in", 1), ("out", 11)]
    stamps = [f.at for f in gw.frames]
    assert stamps == sorted(stamps)
    assert gw.frames[1].json()["op"] == 2


async def test_non_gateway_path_is_refused(fake_gateway: FakeGateway) -> None:
    """Only /websocket upgrades; another path gets HTTP 404."""
    with pytest.raises(Exception, match="404"):
        async with connect(fake_gateway.ws_url.replace("/websocket", "/other"), open_timeout=2):
            pass


async def test_shutdown_is_prompt_with_hanging_clients() -> None:
    """aclose() returns within 2 s despite a hanging token request and a mute WS client."""
    before = set(asyncio.all_tasks())
    gw = await FakeGateway(heartbeat_interval_ms=500).start()
    gw.faults.token_endpoint = "hang"
    client = httpx.AsyncClient(timeout=30.0)
    request = asyncio.create_task(
        client.post(
            gw.token_url, json={"appId": DEFAULT_APP_ID, "clientSecret": DEFAULT_CLIENT_SECRET}
        )
    )
    # A raw TCP client that upgrades and then never reads or answers a close frame.
    _, writer = await asyncio.open_connection("127.0.0.1", ws_port(gw))
    writer.write(
        b"GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    # And one that opens TCP and never even sends the upgrade request.
    _, idle = await asyncio.open_connection("127.0.0.1", ws_port(gw))
    await gw.wait_for_connections(1, 2.0)
    await gw.wait_for(lambda: len(gw.http_requests) == 1, 2.0)
    started = time.monotonic()
    await gw.aclose()
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    with pytest.raises(httpx.HTTPError):
        await request
    await client.aclose()
    writer.close()
    idle.close()
    assert gw.connections[0].closed_at is not None
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    leftover.discard(asyncio.current_task())
    assert not leftover, leftover
    await gw.aclose()  # idempotent


async def test_ports_are_loopback_ephemeral(fake_gateway: FakeGateway) -> None:
    """Both servers listen on 127.0.0.1 with distinct ephemeral ports."""
    http_port = int(fake_gateway.api_base.rsplit(":", 1)[1])
    assert http_port != ws_port(fake_gateway) and http_port > 0
    assert fake_gateway.token_url == f"{fake_gateway.api_base}/app/getAppAccessToken"
    assert fake_gateway.api_base.startswith("http://127.0.0.1:")


# -- stricter than kind: what the real gateway does (issue 14) -------------------------------


async def test_client_close_1000_drops_the_session_by_default(
    ready_ws: tuple[FakeGateway, ClientConnection, Frame, str],
) -> None:
    """A client's own close 1000 ends its session: a Resume of it is refused with 4006."""
    gw, ws, ready, token = ready_ws
    sid = ready["d"]["session_id"]
    await ws.close(1000)
    await gw.wait_for(lambda: not gw.live_connections, 2.0)
    assert sid not in gw.session_ids
    async with open_ws(gw) as ws2:
        await recv(ws2)
        await send(ws2, {"op": 6, "d": {"token": f"QQBot {token}", "session_id": sid, "seq": 1}})
        assert (await closed_with(ws2))[0] == 4006


@pytest.mark.parametrize(("code", "keep"), [(1001, False), (4000, True), (1000, True)])
async def test_which_client_closes_keep_the_session(
    fake_gateway: FakeGateway, code: int, keep: bool
) -> None:
    """1001 drops the session too, 4000 keeps it; drop_session_on_client_close=False keeps it
    after 1000 as well (a kinder gateway, for tests that state the assumption)."""
    gw = fake_gateway
    if code == 1000:
        gw.faults.drop_session_on_client_close = False
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        ready = await identify(ws, token)
        await ws.close(code)
    await gw.wait_for(lambda: not gw.live_connections, 2.0)
    assert (ready["d"]["session_id"] in gw.session_ids) is keep


async def test_a_socket_that_stops_heartbeating_is_closed_4009_after_one_and_a_half_intervals(
    fake_gateway: FakeGateway,
) -> None:
    """By default the gateway closes 4009 a socket with no heartbeat for 1.5 Hello intervals
    (counted from Hello), and not before one interval has passed."""
    gw = fake_gateway
    interval_s = gw.heartbeat_interval_ms / 1000
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        await identify(ws, token)
        hello_at = gw.connections[0].frames[0].at
        code, reason = await closed_with(ws, timeout=interval_s * 3 + 2)
        closed_at = time.monotonic()
    assert (code, reason) == (4009, "Session timed out")
    assert interval_s * 1.0 <= closed_at - hello_at <= interval_s * 1.5 + 1.0


async def test_heartbeats_keep_a_socket_past_the_server_timeout(fake_gateway: FakeGateway) -> None:
    """A socket that heartbeats every interval outlives several server timeouts."""
    gw = fake_gateway
    interval_s = gw.heartbeat_interval_ms / 1000
    token = await fetch_token(gw)
    async with open_ws(gw) as ws:
        await identify(ws, token)
        for _ in range(4):
            await asyncio.sleep(interval_s)
            await send(ws, {"op": 1, "d": 1})
            assert (await recv(ws))["op"] == 11
        assert gw.connections[0].is_open
        await ws.close(4000)


async def test_a_socket_opened_while_silent_gets_hello_once_the_fault_is_lifted(
    fake_gateway: FakeGateway,
) -> None:
    """A socket opened during a global silence hears nothing, then its Hello once it is lifted."""
    gw = fake_gateway
    gw.faults.silent = True
    async with open_ws(gw) as ws:
        await no_frame(ws, 0.2)
        gw.faults.silent = False
        hello = await recv(ws)
        assert hello["op"] == 10
        await ws.close(4000)


async def test_hello_after_silence_can_be_turned_off(fake_gateway: FakeGateway) -> None:
    """hello_after_silence=False: the socket opened during the silence never gets its Hello."""
    gw = fake_gateway
    gw.faults.hello_after_silence = False
    gw.faults.silent = True
    async with open_ws(gw) as ws:
        await no_frame(ws, 0.1)
        gw.faults.silent = False
        await no_frame(ws, 0.3)
        await ws.close(4000)
