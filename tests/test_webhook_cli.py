"""``qqconn serve`` as a real subprocess: the fake platform posts to it over loopback HTTP(S).

Every wait is bounded; a subprocess that outlives its test is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from qqconn.testing.platform import FakePlatform

APP_ID = "102030405"
SECRET = "S3rv3Th3W3bh00kS3cr3t0nly"


@dataclass
class Serve:
    """A running ``qqconn serve`` and everything it printed so far."""

    proc: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def listening_port(self, timeout: float = 20.0) -> int:
        """The port from the ``qqconn.webhook.listening`` log line (bounded wait)."""
        async with asyncio.timeout(timeout):
            while True:
                for entry in self.logs():
                    if entry.get("event") == "qqconn.webhook.listening":
                        return int(str(entry["listen"]).rsplit(":", 1)[1])
                if self.proc.returncode is not None:
                    raise AssertionError(f"qqconn serve exited {self.proc.returncode}:\n{self.err}")
                await asyncio.sleep(0.02)

    async def exit_status(self, timeout: float = 20.0) -> int:
        async with asyncio.timeout(timeout):
            status = await self.proc.wait()
            await asyncio.gather(*self.readers)
        return status


async def _pump(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        sink.append(line.decode("utf-8", "replace"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def qqconn_serve(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Serve]:
    """Start ``python -m qqconn.webhook.cli`` (``qqconn serve``); kill it on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qqconn.webhook.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(QQ_CLIENT_SECRET=SECRET) if env is None else env,
    )
    s = Serve(proc)
    s.readers = [
        asyncio.create_task(_pump(proc.stdout, s.stdout)),
        asyncio.create_task(_pump(proc.stderr, s.stderr)),
    ]
    try:
        yield s
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for reader in s.readers:
            reader.cancel()


async def test_serve_prints_each_event_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Events posted (with retries) come out once each as run's JSON lines; SIGTERM exits 0."""
    state = tmp_path / "state.json"
    args = ["--listen", "127.0.0.1:0", "--path", "/qq", "--app-id", APP_ID, "--log-format", "json"]
    async with qqconn_serve(*args, "--state-file", str(state)) as s:
        port = await s.listening_port()
        url = f"http://127.0.0.1:{port}/qq"
        async with FakePlatform(url, app_id=APP_ID, client_secret=SECRET, lose_acks=2) as qq:
            assert (await qq.validate()).signature_valid
            deliveries = [await qq.deliver(d={"n": i}) for i in range(20)]
            assert (await qq.send_forged()).status == 401
        assert all(d.acked for d in deliveries)
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qqconn",
            "status",
            "--state-file",
            str(state),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            env=_env(),
        )
        out, _ = await asyncio.wait_for(probe.communicate(), 20)
        assert probe.returncode == 0 and json.loads(out)["transport"] == "webhook"
        async with asyncio.timeout(10):
            while len(s.stdout) < 20:
                await asyncio.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        assert await s.exit_status() == 0
    lines = [json.loads(line) for line in s.stdout]
    assert [line["id"] for line in lines] == [d.event_id for d in deliveries]
    assert all(set(line) == {"s", "t", "id", "d"} for line in lines)
    assert [line["d"]["n"] for line in lines] == list(range(20))
    events = [entry.get("event") for entry in s.logs()]
    assert "qqconn.webhook.refused" in events and "qqconn.cli.exit" in events
    assert SECRET not in s.err
    assert json.loads(state.read_text())["state"] == "stopped"


async def test_serve_speaks_https_with_certfile_and_keyfile(tmp_path: Path) -> None:
    """--certfile/--keyfile reach uvicorn: the platform validates over HTTPS, trusting a test CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    args = ["--listen", "127.0.0.1:0", "--app-id", APP_ID, "--log-format", "json"]
    tls = ["--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")]
    async with qqconn_serve(*args, *tls) as s:
        port = await s.listening_port()
        url = f"https://127.0.0.1:{port}/"
        async with FakePlatform(url, app_id=APP_ID, client_secret=SECRET, verify=client_ctx) as qq:
            assert (await qq.validate()).signature_valid
            assert (await qq.deliver()).acked
        s.proc.send_signal(signal.SIGINT)
        assert await s.exit_status() == 0
    assert len(s.stdout) == 1


async def test_a_taken_port_exits_75() -> None:
    """Another process holds the port: exit 75 (retryable) with a log line saying why."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        args = ["--listen", f"127.0.0.1:{port}", "--app-id", APP_ID, "--log-format", "json"]
        async with qqconn_serve(*args) as s:
            assert await s.exit_status() == 75
    finally:
        holder.close()
    assert any(e.get("event") == "qqconn.webhook.fatal" for e in s.logs())


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ([], {"QQ_CLIENT_SECRET": SECRET}, "--listen"),
        (["--listen", "nowhere"], {"QQ_CLIENT_SECRET": SECRET}, "HOST:PORT"),
        (["--listen", "::1:80"], {"QQ_CLIENT_SECRET": SECRET}, "brackets"),
        (["--listen", "127.0.0.1:8080"], {}, "no client secret"),
        (["--listen", "127.0.0.1:8080", "--secret", SECRET], {}, "never taken on the command line"),
        (
            ["--listen", "127.0.0.1:8080", "--certfile", "x.pem"],
            {"QQ_CLIENT_SECRET": SECRET},
            "go together",
        ),
        (
            ["--listen", "127.0.0.1:8080", "--path", "qq"],
            {"QQ_CLIENT_SECRET": SECRET},
            "start with '/'",
        ),
    ],
)
async def test_configuration_errors_exit_2_with_one_line(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    """A usage or configuration mistake: exit 2, one line on stderr, no traceback, no secret."""
    async with qqconn_serve("--app-id", APP_ID, *args, env=_env(**env)) as s:
        assert await s.exit_status() == 2
    assert len(s.stderr) == 1 and needle in s.err, s.err
    assert SECRET not in s.err and "Traceback" not in s.err


async def test_a_config_file_with_an_unknown_key_exits_2(tmp_path: Path) -> None:
    """The [webhook] table's keys are checked; [policy] (for qqconn run) may sit beside it."""
    config = tmp_path / "qqconn.toml"
    config.write_text(
        '[policy]\nmax_reconnect_attempts = 3\n[webhook]\ndedupe_window_s = 60\ncolour = "red"\n'
    )
    async with qqconn_serve(
        "--listen", "127.0.0.1:0", "--app-id", APP_ID, "--config", str(config)
    ) as s:
        assert await s.exit_status() == 2
    assert "webhook.colour" in s.err and len(s.stderr) == 1


async def test_serve_http_answers_the_probes_while_listening(tmp_path: Path) -> None:
    """`serve --http`: /readyz 200 and /livez 200 while the receiver listens, /metrics 404
    (documented: the WebSocket metrics do not apply), no secret in any answer."""
    import httpx

    args = ["--listen", "127.0.0.1:0", "--app-id", APP_ID, "--log-format", "json"]
    async with qqconn_serve(*args, "--http", "127.0.0.1:0") as s:
        await s.listening_port()
        url = next(e["url"] for e in s.logs() if e.get("event") == "qqconn.cli.http")
        async with httpx.AsyncClient(timeout=5.0) as http:
            ready = await http.get(url + "readyz")
            live = await http.get(url + "livez")
            metrics = await http.get(url + "metrics")
            status = await http.get(url + "status.json")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        assert live.status_code == 200
        assert metrics.status_code == 404
        assert status.json()["connections"][0]["shard"] == "webhook"
        for text in (ready.text, live.text, status.text, s.err):
            assert SECRET not in text
        s.proc.send_signal(signal.SIGTERM)
        assert await s.exit_status() == 0


async def test_serve_http_on_a_busy_port_exits_2() -> None:
    """A busy --http port: exit 2 with one line naming --http, before listening for QQ."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        args = ["--listen", "127.0.0.1:0", "--app-id", APP_ID, "--http", f"127.0.0.1:{port}"]
        async with qqconn_serve(*args) as s:
            assert await s.exit_status() == 2
    lines = [line for line in s.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qqconn serve: --http:"), s.err
