"""The standalone fake gateway (python -m qqconn.testing.serve), run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

import qqconn
from qqconn.testing import fast_policy
from qqconn.testing.serve import OUTPUT_KEYS, main

START_S = 15.0  # generous: the machine is shared


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str]]]:
    """Start the runner; yield it and its parsed key=value lines; kill it if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qqconn.testing.serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        values: dict[str, str] = {}
        async with asyncio.timeout(START_S):
            for _ in OUTPUT_KEYS:
                line = (await proc.stdout.readline()).decode()
                key, sep, value = line.rstrip("\n").partition("=")
                assert sep == "=", f"not a key=value line: {line!r}"
                values[key] = value
        yield proc, values
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_runner_prints_parseable_urls_and_serves_a_manager() -> None:
    """The printed URLs and credentials work: token, /gateway/bot, a manager gets an event."""
    async with serving("--heartbeat-interval-ms", "500", "--dispatch-every", "0.2") as (
        proc,
        v,
    ):
        assert list(v) == list(OUTPUT_KEYS)
        assert v["api_base"].startswith("http://127.0.0.1:")
        assert v["token_url"] == v["api_base"] + "/app/getAppAccessToken"
        assert v["gateway_url"].startswith("ws://127.0.0.1:") and v["gateway_url"].endswith(
            "/websocket"
        )
        async with httpx.AsyncClient(timeout=3.0) as client:
            r = await client.post(
                v["token_url"], json={"appId": v["app_id"], "clientSecret": v["client_secret"]}
            )
            token = r.json()["access_token"]
            bot = await client.get(
                v["api_base"] + "/gateway/bot", headers={"Authorization": f"QQBot {token}"}
            )
        assert bot.json()["url"] == v["gateway_url"]
        seen: list[qqconn.Dispatch] = []
        manager = qqconn.ConnectionManager(
            app_id=v["app_id"],
            client_secret=v["client_secret"],
            intents=1,
            api_base=v["api_base"],
            token_url=v["token_url"],
            policy=fast_policy(),
            on_dispatch=seen.append,
        )
        task = asyncio.create_task(manager.run())
        try:
            async with asyncio.timeout(10):
                while not any(d.type == "GROUP_AT_MESSAGE_CREATE" for d in seen):
                    await asyncio.sleep(0.02)
        finally:
            await manager.stop()
            async with asyncio.timeout(5):
                await task
        message = next(d for d in seen if d.type == "GROUP_AT_MESSAGE_CREATE")
        assert isinstance(message.data, dict) and message.data["id"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "qqconn run" in err and "Traceback" not in err


async def test_runner_exits_zero_on_sigint() -> None:
    """SIGINT (Ctrl-C) stops the runner with exit 0 and no traceback."""
    async with serving() as (proc, _):
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        assert proc.stderr is not None
        assert b"Traceback" not in await proc.stderr.read()


async def test_runner_reports_a_busy_port_with_exit_1() -> None:
    """A port already in use: a one-line error and exit 1, not a traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qqconn.testing.serve",
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(START_S):
            out, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"cannot listen" in err and b"Traceback" not in err and out == b""


@pytest.mark.parametrize(
    "argv",
    [["--host", "0.0.0.0"], ["--host", "example.com"], ["--port", "70000"], ["--nope"]],
)
def test_runner_refuses_bad_arguments_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A host that is not loopback, a port out of range or an unknown flag: exit 2, a message."""
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err
