"""qqconn.ops: the probes, /status.json, /metrics and the page, served by a real uvicorn on
loopback for a real ConnectionManager on the fake gateway. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qqconn import ConfigError, ConnectionManager, FatalError, Policy, State
from qqconn.metrics import Metrics
from qqconn.ops import OpsServer, serve_ops
from qqconn.testing import FakeGateway

SECRET = "s3cret-never-shown"

#: Backoff long enough (1 s) that the probes see the connection away from ALIVE, even on a
#: busy machine.
POLICY = Policy(
    quick_disconnect_threshold_s=0.5,
    max_quick_disconnects=3,
    max_reconnect_attempts=5,
    backoff_s=(1.0,),
    backoff_jitter=0.0,
    connect_timeout_s=3.0,
    close_timeout_s=0.5,
)


@dataclass
class Ops:
    gw: FakeGateway
    manager: ConnectionManager
    server: OpsServer
    http: httpx.AsyncClient
    task: asyncio.Task[None]

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(self.server.url + path.lstrip("/"))

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait (bounded) until predicate() holds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def until_status(self, path: str, status: int, timeout: float = 10.0) -> httpx.Response:
        """GET ``path`` until it answers ``status`` (bounded); return that answer."""
        async with asyncio.timeout(timeout):
            while True:
                response = await self.get(path)
                if response.status_code == status:
                    return response
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(
    *, hooked: bool = True, metrics: bool = True, hello_delay_s: float = 0.0, **options: Any
) -> AsyncIterator[Ops]:
    """The fake gateway, a manager and an ops server watching it (its callback given if
    ``hooked``), and an HTTP client."""
    async with FakeGateway(heartbeat_interval_ms=200, client_secret=SECRET) as gw:
        gw.faults.hello_delay_s = hello_delay_s
        server = OpsServer(metrics=Metrics() if metrics else None, refresh_s=0.2, **options)
        manager = ConnectionManager(
            app_id=gw.app_id,
            client_secret=SECRET,
            intents=1,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=POLICY,
            on_state_change=server.on_state_change if hooked else None,
        )
        server.watch(manager)
        async with server, httpx.AsyncClient(timeout=5.0) as http:
            task = asyncio.create_task(manager.run())
            try:
                yield Ops(gw, manager, server, http, task)
            finally:
                await manager.stop()
                with contextlib.suppress(FatalError):
                    async with asyncio.timeout(5):
                        await task


async def test_readyz_flips_to_503_on_a_drop_and_back_to_200_after_the_resume() -> None:
    """/readyz is 200 only while ALIVE: 503 naming the shard and its state after a drop."""
    async with running() as ops:
        await ops.until_status("/readyz", 200)
        await ops.gw.drop()
        down = await ops.until_status("/readyz", 503, timeout=2.0)
        body = down.json()
        assert body["ready"] is False
        assert body["not_ready"] == [
            {"app_id": ops.gw.app_id, "shard": "0/1", "state": ops.manager.state.value}
        ]
        assert body["not_ready"][0]["state"] != "alive"
        assert "0/1" in body["verdict"]
        up = await ops.until_status("/readyz", 200)
        assert up.json() == {"ready": True, "verdict": "ready: 1 connection alive", "not_ready": []}
        assert ops.gw.resumes == 1


async def test_readyz_is_503_before_alive_and_after_stop() -> None:
    """Before the first READY (Hello held back) and once stopped, /readyz says not ready (503)."""
    async with running(hello_delay_s=0.8) as ops:
        await ops.until(lambda: ops.gw.connections)
        early = await ops.get("/readyz")
        assert early.status_code == 503
        assert early.json()["not_ready"][0]["state"] == "connecting"
        await ops.until_status("/readyz", 200)
        await ops.manager.stop()
        stopped = await ops.get("/readyz")
        assert stopped.status_code == 503
        assert stopped.json()["not_ready"][0]["state"] == "stopped"


async def test_readyz_watching_nothing_is_503() -> None:
    """An ops server that watches no connection is not ready: there is nothing to vouch for."""
    async with OpsServer() as server, httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(server.url + "readyz")
        assert response.status_code == 503
        assert response.json()["verdict"] == "not ready: no connection is watched"


async def test_livez_is_200_while_the_loop_runs_and_503_after_it_was_blocked() -> None:
    """/livez reports the loop probe: 200 normally, 503 once the loop was blocked past the bound."""
    # A bound of 1.5 s: a loaded CI machine lags its loop by a few hundred ms on its own (a
    # 0.3 s bound once read 503 before the test blocked anything).
    async with OpsServer(max_loop_lag_s=1.5) as server, httpx.AsyncClient(timeout=10.0) as http:
        ok = await http.get(server.url + "livez")
        assert ok.status_code == 200
        assert ok.json()["live"] is True
        await asyncio.sleep(0.3)  # the probe has ticked
        time.sleep(2.5)  # the loop is blocked: the probe wakes ~2.5 s late
        await asyncio.sleep(0.4)  # one late wake-up recorded
        blocked = await http.get(server.url + "livez")
        assert blocked.status_code == 503
        body = blocked.json()
        assert body["live"] is False
        assert body["max_recent_lag_s"] > 1.5


async def test_status_json_reports_state_counters_and_transitions_with_reasons() -> None:
    """/status.json names the state, the counters and each transition with its reason."""
    async with running() as ops:
        await ops.until(lambda: ops.manager.state is State.ALIVE)
        await ops.gw.dispatch("C2C_MESSAGE_CREATE", {"content": "hi"})
        await asyncio.sleep(POLICY.quick_disconnect_threshold_s + 0.2)  # not a quick drop
        await ops.gw.drop()
        await ops.until(lambda: ops.gw.resumes == 1 and ops.manager.state is State.ALIVE)
        await ops.until_status("/readyz", 200)
        doc = (await ops.get("/status.json")).json()
        assert doc["healthy"] is True
        (conn,) = doc["connections"]
        assert conn["state"] == "alive"
        assert conn["shard"] == "0/1"
        assert conn["endings"] == {"drop": 1}
        assert conn["connections_opened"] == 2
        assert conn["dispatches_delivered"] >= 2
        assert conn["counters"]["attempt"] == 2
        assert conn["transitions_reported"] is True
        path = [(t["previous"], t["state"], t["trigger"]) for t in reversed(doc["transitions"])]
        assert path == [
            ("connecting", "awaiting_permit", "start"),  # no session: Identify needs a permit
            ("awaiting_permit", "connecting", "identify_permitted"),
            ("connecting", "identified", "hello"),
            ("identified", "alive", "ready"),
            ("alive", "backoff", "connection_ended"),
            ("backoff", "connecting", "backoff_elapsed"),  # a Resume takes no permit
            ("connecting", "identified", "hello"),
            ("identified", "alive", "resumed"),
        ]
        drop = doc["transitions"][3]
        assert drop["reason"] == "connection lost without a close frame"
        assert drop["kind"] == "drop"


async def test_without_the_callback_probes_and_counters_still_tell_the_truth() -> None:
    """A manager not given ops.on_state_change: /readyz and the state still follow it."""
    async with running(hooked=False) as ops:
        await ops.until_status("/readyz", 200)
        await ops.gw.drop()
        await ops.until_status("/readyz", 503, timeout=2.0)
        await ops.until_status("/readyz", 200)
        doc = (await ops.get("/status.json")).json()
        assert doc["transitions"] == []
        assert doc["connections"][0]["transitions_reported"] is False
        assert doc["connections"][0]["state"] == "alive"


async def test_metrics_endpoint_serves_parseable_families_that_follow_the_connection() -> None:
    """/metrics parses as Prometheus text and its state gauge follows a drop and recovery."""
    async with running() as ops:
        await ops.until_status("/readyz", 200)
        response = await ops.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        alive = [
            s for s in families["qqconn_connection_state"].samples if s.labels["state"] == "alive"
        ]
        assert [s.value for s in alive] == [1.0]
        await ops.gw.drop()
        await ops.until_status("/readyz", 200)
        text = (await ops.get("/metrics")).text
        assert 'qqconn_connection_endings_total{app_id="1000",kind="drop",shard="0/1"} 1.0' in text
        assert 'qqconn_connections_opened_total{app_id="1000",shard="0/1"} 2.0' in text


async def test_metrics_without_a_metrics_object_is_404_with_the_fix() -> None:
    """An ops server built without Metrics answers /metrics 404 saying what to pass."""
    async with running(metrics=False) as ops:
        response = await ops.get("/metrics")
        assert response.status_code == 404
        assert "Metrics()" in response.text


async def test_no_secret_token_or_full_session_id_on_any_endpoint() -> None:
    """The client secret, the access token and the full session id appear on no endpoint."""
    async with running() as ops:
        await ops.until_status("/readyz", 200)
        await ops.gw.dispatch("C2C_MESSAGE_CREATE", {"content": "hi"})
        await ops.until(lambda: ops.manager.dispatches_delivered >= 2)
        session = ops.gw.current_session_id
        assert session
        token = ops.gw.valid_token()
        for path in ("/", "/status.json", "/metrics", "/livez", "/readyz", "/statechart.svg"):
            response = await ops.get(path)
            assert response.status_code == 200, path
            for secret in (SECRET, token, session):
                assert secret not in response.text, (path, secret[:4])
        doc = (await ops.get("/status.json")).json()
        assert doc["connections"][0]["session"] == session[:8] + "…"


async def test_the_page_is_self_contained_and_carries_the_statechart() -> None:
    """/ is one HTML document with the statechart inlined and no external script, style or font."""
    async with running() as ops:
        response = await ops.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        page = response.text
        assert "<svg" in page
        for state in State:
            assert f"<title>{state.name}</title>" in page
        for external in ("src=", "href=", "@import", "url(http"):
            assert external not in page.replace('href="#', "")


async def test_unknown_paths_and_methods_are_refused_plainly() -> None:
    """An unknown path is 404, a POST is 405 with Allow, HEAD has headers and no body."""
    async with running() as ops:
        assert (await ops.get("/nope")).status_code == 404
        post = await ops.http.post(ops.server.url + "readyz")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"
        head = await ops.http.head(ops.server.url + "livez")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0


async def test_a_busy_port_is_a_config_error_naming_the_address() -> None:
    """Starting on a port already in use raises ConfigError("http", ...) and leaves nothing open."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"http: cannot listen on 127.0.0.1:{port}"):
            await serve_ops("127.0.0.1", port, [])


def test_bad_addresses_are_refused_before_anything_starts() -> None:
    """A port out of range or an empty host is a ConfigError at construction."""
    with pytest.raises(ConfigError, match="port"):
        OpsServer(port=70000)
    with pytest.raises(ConfigError, match="host"):
        OpsServer(host="")


async def test_serve_ops_starts_and_stops_within_bounds() -> None:
    """serve_ops returns a listening server; stop() closes the port within a few seconds."""
    async with FakeGateway(heartbeat_interval_ms=200) as gw:
        manager = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=1,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=POLICY,
        )
        server = await serve_ops("127.0.0.1", 0, [manager], Metrics())
        port = server.port
        async with httpx.AsyncClient(timeout=5.0) as http:
            answer = await http.get(server.url + "status.json")
            assert json.loads(answer.text)["connections"][0]["state"] == "connecting"
        async with asyncio.timeout(6):
            await server.stop()
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(1.0)
            probe.connect(("127.0.0.1", port))


async def test_two_shards_are_reported_apart_and_readyz_names_only_the_one_down() -> None:
    """With shards 0/2 and 1/2, a drop of 1/2 makes /readyz name 1/2 alone; metrics keep both."""
    async with (
        FakeGateway(heartbeat_interval_ms=200) as gw0,
        FakeGateway(heartbeat_interval_ms=200) as gw1,
    ):
        server = OpsServer(metrics=Metrics())
        managers = [
            ConnectionManager(
                app_id=gw.app_id,
                client_secret="s3cret",
                intents=1,
                shard=(n, 2),
                api_base=gw.api_base,
                token_url=gw.token_url,
                policy=POLICY,
                on_state_change=server.on_state_change,
            )
            for n, gw in enumerate((gw0, gw1))
        ]
        for manager in managers:
            server.watch(manager)
        async with server, httpx.AsyncClient(timeout=5.0) as http:
            tasks = [asyncio.create_task(m.run()) for m in managers]
            try:
                ops = Ops(gw1, managers[1], server, http, tasks[1])
                await ops.until_status("/readyz", 200)
                await gw1.drop()
                down = (await ops.until_status("/readyz", 503, timeout=2.0)).json()
                assert [(x["shard"], x["state"] != "alive") for x in down["not_ready"]] == [
                    ("1/2", True)
                ]
                doc = (await ops.get("/status.json")).json()
                assert [c["shard"] for c in doc["connections"]] == ["0/2", "1/2"]
                assert doc["connections"][0]["state"] == "alive"
                await ops.until_status("/readyz", 200)
                text = (await ops.get("/metrics")).text
                for shard, drops in (("0/2", "0.0"), ("1/2", "1.0")):
                    line = (
                        f'qqconn_connection_endings_total{{app_id="1000",kind="drop",'
                        f'shard="{shard}"}} {drops}'
                    )
                    assert line in text
            finally:
                for manager in managers:
                    await manager.stop()
                async with asyncio.timeout(5):
                    await asyncio.gather(*tasks)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9100", ("::1", 9100)),
        (":9100", ("0.0.0.0", 9100)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_address_reads_host_and_port(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, [IPv6]:PORT and :PORT are read as documented."""
    from qqconn.ops import parse_address

    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9100", "host:", "host:port", "::1:9100", "h:70000", ""])
def test_parse_address_refuses_what_it_cannot_read_naming_the_option(text: str) -> None:
    """A malformed address is a ConfigError naming the option, with the forms it accepts."""
    from qqconn.ops import parse_address

    with pytest.raises(ConfigError, match=r"^--http: "):
        parse_address(text)


async def test_an_unreadable_state_change_is_logged_and_never_raised() -> None:
    """ops.on_state_change given something that is not a StateChange logs and returns."""
    from structlog.testing import capture_logs

    server = OpsServer()
    with capture_logs() as logs:
        server.on_state_change(object())
    assert [e["event"] for e in logs] == ["qqconn.ops.change_unreadable"]
