"""The fake gateway's message APIs (qqconn.testing): routes, records, programmable answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import qqconn
from qqconn.testing import ApiAnswer, FakeGateway

ROUTES = {
    "group": "/v2/groups/GROUPOPENID0001/messages",
    "c2c": "/v2/users/USEROPENID0001/messages",
    "channel": "/channels/1234567/messages",
    "dm": "/dms/998877665544332211/messages",
}
TARGETS = {
    "group": "GROUPOPENID0001",
    "c2c": "USEROPENID0001",
    "channel": "1234567",
    "dm": "998877665544332211",
}
REPLY = {"content": "pong", "msg_type": 0, "msg_id": "ROBOT1.0_abc", "msg_seq": 1}


async def token_of(gw: FakeGateway, client: httpx.AsyncClient) -> str:
    r = await client.post(gw.token_url, json={"appId": gw.app_id, "clientSecret": gw.client_secret})
    token = r.json()["access_token"]
    assert isinstance(token, str)
    return token


async def post(
    gw: FakeGateway,
    route: str,
    *,
    token: str | None,
    body: Any = REPLY,
    client: httpx.AsyncClient,
) -> httpx.Response:
    headers = {"X-Union-Appid": gw.app_id}
    if token is not None:
        headers["Authorization"] = f"QQBot {token}"
    return await client.post(f"{gw.api_base}{ROUTES[route]}", json=body, headers=headers)


async def test_group_reply_is_recorded_with_the_token_masked(fake_gateway: FakeGateway) -> None:
    """A group reply gets 200 {id, timestamp}; the record has method, path, body, masked token."""
    gw = fake_gateway
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        r = await post(gw, "group", token=token, client=client)
    assert r.status_code == 200
    answer = r.json()
    assert set(answer) == {"id", "timestamp"} and answer["id"].startswith("ROBOT1.0_")
    assert "+08:00" in answer["timestamp"]
    assert r.headers["x-tps-trace-id"]
    (call,) = gw.replies("group")
    assert (call.method, call.path, call.route, call.target) == (
        "POST",
        ROUTES["group"],
        "group",
        TARGETS["group"],
    )
    assert call.body == REPLY and call.content == "pong"
    assert call.authorized and call.status == 200 and call.answer == answer
    assert call.headers["authorization"] == "QQBot ***"
    assert call.headers["x-union-appid"] == gw.app_id
    everything = repr(gw.api_calls) + repr(gw.http_requests)
    assert token not in everything and gw.client_secret not in everything


@pytest.mark.parametrize("route", ["c2c", "channel", "dm"])
async def test_each_message_route_answers_its_realistic_body(
    fake_gateway: FakeGateway, route: str
) -> None:
    """C2C answers {id, timestamp}; channel and DM answer a message object naming the target."""
    gw = fake_gateway
    async with httpx.AsyncClient(timeout=2.0) as client:
        r = await post(gw, route, token=await token_of(gw, client), client=client)
    assert r.status_code == 200
    answer = r.json()
    assert answer["id"].startswith("ROBOT1.0_")
    if route == "c2c":
        assert set(answer) == {"id", "timestamp"}
    else:
        assert answer["content"] == "pong"
        assert answer["author"]["bot"] is True and answer["author"]["id"] == gw.bot_user_id
        assert answer["message_reference"] == {"message_id": "ROBOT1.0_abc"}
        key = "channel_id" if route == "channel" else "guild_id"
        assert answer[key] == TARGETS[route]
    assert [c.route for c in gw.replies()] == [route]


@pytest.mark.parametrize("auth", ["none", "unknown", "revoked", "bot-scheme"])
async def test_message_routes_want_a_token_the_fake_issued(
    fake_gateway: FakeGateway, auth: str
) -> None:
    """Without ``QQBot <issued, valid token>`` a reply gets 401 code 11244 and is not a reply."""
    gw = fake_gateway
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        if auth == "none":
            r = await post(gw, "group", token=None, client=client)
        elif auth == "unknown":
            r = await post(gw, "group", token="not-a-token-the-fake-issued", client=client)
        elif auth == "revoked":
            gw.revoke_tokens()
            r = await post(gw, "group", token=token, client=client)
        else:
            r = await client.post(
                f"{gw.api_base}{ROUTES['group']}",
                json=REPLY,
                headers={"Authorization": f"Bot {gw.app_id}.{token}"},
            )
    assert r.status_code == 401
    assert r.json()["code"] == 11244
    assert gw.replies() == []
    (call,) = gw.api_calls
    assert not call.authorized and call.status == 401
    assert token not in repr(call)


async def test_programmed_answers_per_route_global_and_counted(fake_gateway: FakeGateway) -> None:
    """A route's answer wins over the global one; ``times`` answers run out; then success again."""
    gw = fake_gateway
    gw.answer_messages(ApiAnswer.server_error(503))  # every route, until changed
    gw.answer_messages(ApiAnswer.qq_error(40034006, "duplicate msg_seq"), route="c2c", times=1)
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        statuses = [
            (await post(gw, route, token=token, client=client)).status_code
            for route in ("c2c", "c2c", "group")
        ]
        c2c_error = gw.api_calls[0].answer
        gw.clear_answers()
        after = await post(gw, "group", token=token, client=client)
    assert statuses == [400, 503, 503]
    assert c2c_error["code"] == 40034006 and c2c_error["err_code"] == 40034006
    assert c2c_error["message"] == "duplicate msg_seq" and c2c_error["trace_id"]
    assert after.status_code == 200 and "id" in after.json()


async def test_rate_limited_answer_carries_retry_after(fake_gateway: FakeGateway) -> None:
    """ApiAnswer.rate_limited: HTTP 429, ``Retry-After`` in seconds, an error body; then 200."""
    gw = fake_gateway
    gw.answer_messages(ApiAnswer.rate_limited(3), route="group", times=1)
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        limited = await post(gw, "group", token=token, client=client)
        retried = await post(gw, "group", token=token, client=client)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.json()["code"] == 22009
    assert retried.status_code == 200
    assert [c.status for c in gw.replies("group")] == [429, 200]


async def test_programmed_success_body_and_status_200_error(fake_gateway: FakeGateway) -> None:
    """ok(body) answers that body; qq_error(status=200) is an error body with HTTP 200."""
    gw = fake_gateway
    gw.answer_messages(ApiAnswer.ok({"id": "fixed", "timestamp": "t"}), route="dm", times=1)
    gw.answer_messages(ApiAnswer.qq_error(304023, "waiting for audit", status=200), route="dm")
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        first = await post(gw, "dm", token=token, client=client)
        second = await post(gw, "dm", token=token, client=client)
    assert first.json() == {"id": "fixed", "timestamp": "t"}
    assert second.status_code == 200 and second.json()["code"] == 304023


async def test_malformed_requests_get_clear_answers(fake_gateway: FakeGateway) -> None:
    """A body that is not a JSON object gets 400; GET on a message route gets 405."""
    gw = fake_gateway
    async with httpx.AsyncClient(timeout=2.0) as client:
        token = await token_of(gw, client)
        auth = {"Authorization": f"QQBot {token}"}
        not_json = await client.post(
            f"{gw.api_base}{ROUTES['channel']}", content=b"\xff{nope", headers=auth
        )
        a_list = await post(gw, "channel", token=token, body=[1, 2], client=client)
        get = await client.get(f"{gw.api_base}{ROUTES['channel']}", headers=auth)
    assert not_json.status_code == 400 and a_list.status_code == 400
    assert get.status_code == 405
    assert [c.body for c in gw.api_calls] == [None, [1, 2]]
    assert [r.status for r in gw.http_requests[-3:]] == [400, 400, 405]


def test_bad_programming_is_refused_at_once() -> None:
    """A typo'd route, a zero count, a non-5xx server error or fractional Retry-After raise."""
    gw = FakeGateway()
    with pytest.raises(ValueError, match="route"):
        gw.answer_messages(ApiAnswer.ok(), route="groups")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        gw.answer_messages(ApiAnswer.ok(), times=0)
    with pytest.raises(ValueError, match="5xx"):
        ApiAnswer.server_error(404)
    with pytest.raises(ValueError, match="whole seconds"):
        ApiAnswer.rate_limited(1.5)  # type: ignore[arg-type]


async def test_an_adapter_replies_through_the_manager_token(fake_gateway: FakeGateway) -> None:
    """End to end: a default dispatch has d.id; the host replies with access_token(); recorded."""
    gw = fake_gateway
    seen: list[qqconn.Dispatch] = []
    manager = qqconn.ConnectionManager(
        app_id=gw.app_id,
        client_secret=gw.client_secret,
        intents=qqconn.Intents.GROUP_AND_C2C_EVENT,
        api_base=gw.api_base,
        token_url=gw.token_url,
        policy=gw.fast_policy,
        on_dispatch=seen.append,
    )
    task = asyncio.create_task(manager.run())
    try:
        await gw.wait_for(lambda: manager.state is qqconn.State.ALIVE)
        await gw.dispatch("GROUP_AT_MESSAGE_CREATE")
        await gw.wait_for(lambda: len(seen) == 2)
        d = seen[1].data
        assert isinstance(d, dict)
        token = await manager.access_token()
        async with httpx.AsyncClient(timeout=2.0) as client:
            r = await client.post(
                f"{gw.api_base}/v2/groups/{d['group_openid']}/messages",
                json={"content": "pong", "msg_type": 0, "msg_id": d["id"]},
                headers={"Authorization": f"QQBot {token}", "X-Union-Appid": gw.app_id},
            )
        assert r.status_code == 200
        (reply,) = await gw.wait_for_replies(1, route="group")
        assert reply.target == d["group_openid"] and reply.body["msg_id"] == d["id"]
        assert token not in repr(reply)
    finally:
        await manager.stop()
        async with asyncio.timeout(5):
            await task
