"""Security: TLS verification is always on, and secrets stay out of everything observable."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
import trustme
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection, serve

from qqconn import ConnectionManager, FatalError, Secret, State
from qqconn.testing import FakeGateway
from tests.driver_support import FAST, manager_for, running


class _TlsGateway(FakeGateway):
    """The fake gateway, but /gateway/bot hands out a wss:// URL of an untrusted TLS server."""

    tls_url = ""

    @property
    def ws_url(self) -> str:
        return self.tls_url


async def test_wss_with_an_untrusted_certificate_is_refused() -> None:
    """TLS certificates are verified for wss://: a self-signed server never gets a session."""
    ca = trustme.CA()  # a CA nobody trusts
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    reached: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        reached.append("socket")
        await ws.send('{"op":10,"d":{"heartbeat_interval":30000}}')
        await ws.wait_closed()

    policy = replace(FAST, max_reconnect_attempts=2)
    async with serve(handler, "127.0.0.1", 0, ssl=server_ctx) as server:
        port = server.sockets[0].getsockname()[1]
        async with _TlsGateway() as gw:
            gw.tls_url = f"wss://127.0.0.1:{port}/websocket"
            mgr = manager_for(gw, policy=policy)
            with capture_logs() as logs, pytest.raises(FatalError) as info:
                async with asyncio.timeout(15):
                    await mgr.run()
    assert info.value.retryable and reached == []
    failures = [e for e in logs if e["event"] == "qqconn.connect_failed"]
    assert len(failures) == 2
    assert all(
        e["stage"] == "handshake" and "CERTIFICATE_VERIFY_FAILED" in e["error"] for e in failures
    )


def test_secret_wrapper_never_shows_itself() -> None:
    """Secret hides its value from repr, str and f-strings; only reveal() gives it."""
    s = Secret("s3cret")
    assert "s3cret" not in f"{s} {s!r} {[s]}"
    assert s.reveal() == "s3cret"


def test_manager_repr_and_snapshot_hold_no_secret() -> None:
    """The manager's repr and snapshot never hold the client secret."""
    mgr = ConnectionManager(app_id="1", client_secret="hunter2-secret", intents=1)
    assert "hunter2" not in repr(mgr) + repr(mgr.snapshot()) + repr(vars(mgr))


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
