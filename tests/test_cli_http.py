"""``qqconn run --http``: the ops endpoints of a real ``qqconn run`` subprocess, against an
in-process fake gateway on loopback, and the option's usage errors (exit 2, before connecting).

Every wait is bounded; a subprocess that outlives its test is killed.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from qqconn.testing import FakeGateway
from tests.test_cli import HB_MS, SECRET, Proc, _restore_logging, qqconn_run, usage

__all__ = ["_restore_logging"]  # the autouse fixture, imported so it applies here too


def ops_url(p: Proc) -> str | None:
    """The URL ``qqconn run`` logged for its ops endpoints (``qqconn.cli.http``), if yet."""
    for line in p.stderr:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "qqconn.cli.http":
            return str(doc["url"])
    return None


async def test_run_http_serves_probes_metrics_and_the_page(tmp_path: Path) -> None:
    """/readyz is 503 before READY and 200 after; /livez 200; /metrics has qqconn_ families
    fed by the run's connection; no endpoint and no log line shows a secret."""
    async with FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS, seed=5) as gw:
        gw.faults.hello_delay_s = 2.0  # hold the first attempt in CONNECTING for a while
        async with (
            qqconn_run(gw, tmp_path, "--http", "127.0.0.1:0", "--log-format", "json") as p,
            httpx.AsyncClient(timeout=5.0) as http,
        ):
            await p.until(lambda: ops_url(p) is not None)
            base = str(ops_url(p))
            early = await http.get(base + "readyz")
            assert early.status_code == 503
            assert early.json()["ready"] is False
            assert (await http.get(base + "livez")).status_code == 200
            await p.until(lambda: (p.state() or {}).get("state") == "alive")
            ready = await http.get(base + "readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] is True
            await gw.dispatch("C2C_MESSAGE_CREATE", {"content": "hello"})
            await p.until(lambda: '"C2C_MESSAGE_CREATE"' in p.out)
            metrics = (await http.get(base + "metrics")).text
            labels = f'app_id="{gw.app_id}",shard="0/1"'
            assert f'qqconn_connection_state{{{labels},state="alive"}} 1.0' in metrics
            assert f"qqconn_connections_opened_total{{{labels}}} 1.0" in metrics
            assert "qqconn_dispatches_delivered_total" in metrics
            assert "qqconn_event_loop_lag_seconds" in metrics
            page = await http.get(base)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            status = (await http.get(base + "status.json")).text
            session = gw.current_session_id
            assert session
            for text in (metrics, page.text, status, ready.text, p.err, p.out):
                assert SECRET not in text
                assert gw.valid_token() not in text
            for text in (metrics, page.text, status, ready.text):  # stdout's READY has it
                assert session not in text


async def test_run_http_on_a_busy_port_exits_2_before_connecting(tmp_path: Path) -> None:
    """A port already in use: one stderr line naming --http, exit 2, no request to the gateway."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        async with (
            FakeGateway(client_secret=SECRET, heartbeat_interval_ms=HB_MS) as gw,
            qqconn_run(gw, tmp_path, "--http", f"127.0.0.1:{port}") as p,
        ):
            assert await p.exit_status() == 2
            lines = [line for line in p.err.splitlines() if line.strip()]
            assert len(lines) == 1, p.err
            assert lines[0].startswith("qqconn run: --http:") and str(port) in lines[0]
            assert not gw.http_requests and not gw.connections


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1:99999", "::1:9100", "127.0.0.1:"])
def test_run_http_refuses_a_bad_address(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed --http value is a usage error naming --http (exit 2), nothing started."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    status, out, err = usage(["run", "--app-id", "1", "--http", value], capsys)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and "--http" in err
