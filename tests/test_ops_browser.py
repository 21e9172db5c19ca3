"""The status page in a real headless Chromium, driven over the DevTools protocol.

A real ConnectionManager runs against the fake gateway; the ops server serves the page; the
browser loads it and the test reads what the page shows: which statechart node is highlighted
(by the node's <title>, and by its computed fill), the verdict, the transitions table. The
fake drops the connection; the highlight must leave ALIVE and come back. Screenshots go to
``$TMPDIR/qqconn-ops-page-*.png``.

Chromium is Debian's ``/usr/bin/chromium`` (or ``$QQCONN_CHROMIUM``). Without it the test is
skipped with the reason, except under CI (``CI=true``), where a missing browser fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from qqconn import ConnectionManager, Policy, State
from qqconn.metrics import Metrics
from qqconn.ops import OpsServer
from qqconn.testing import FakeGateway

CHROMIUM = os.environ.get("QQCONN_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1440,1400",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
SHOTS = Path(tempfile.gettempdir())

#: A backoff of 2 s holds BACKOFF long enough for a page that polls every 0.2 s to show it.
POLICY = Policy(
    quick_disconnect_threshold_s=0.5,
    backoff_s=(2.0,),
    backoff_jitter=0.0,
    connect_timeout_s=3.0,
    close_timeout_s=0.5,
)


def _need_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = f"the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class DevTools:
    """A minimal DevTools-protocol client: one browser socket, flattened page sessions."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and wait (at most 15 s) for its answer."""
        n = next(self._ids)
        request: dict[str, Any] = {"id": n, "method": method, "params": params or {}}
        if session is not None:
            request["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._waiting[n] = future
        await self._ws.send(json.dumps(request))
        async with asyncio.timeout(15):
            answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._ws.close()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[DevTools]:
    """Start a headless Chromium with a fresh profile; yield a DevTools client; kill it after."""
    profile = tempfile.mkdtemp(prefix="qqconn-chromium-")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    drain: asyncio.Task[None] | None = None
    devtools: DevTools | None = None
    try:
        assert proc.stderr is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError(f"chromium exited ({await proc.wait()}) before DevTools")
                found = re.search(rb"DevTools listening on (ws://\S+)", line)
                url = found.group(1).decode() if found else None

        async def keep_draining() -> None:
            assert proc.stderr is not None
            while await proc.stderr.read(65536):
                pass

        drain = asyncio.create_task(keep_draining())
        ws = await websockets.connect(url, max_size=64 * 1024 * 1024, open_timeout=10)
        devtools = DevTools(ws)
        yield devtools
    finally:
        if devtools is not None:
            with contextlib.suppress(Exception):
                await devtools.close()
        if proc.returncode is None:
            proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await proc.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        shutil.rmtree(profile, ignore_errors=True)


#: What the page shows: the highlighted nodes (by <title>), their computed fill, the verdict,
#: and the transitions table's rows.
READ_PAGE = """(() => {
  const current = [...document.querySelectorAll("#chart svg g.qq-current")];
  const shape = current.length ? current[0].querySelector(":scope > path, :scope > polygon, :scope > ellipse, :scope > rect") : null;
  const plain = [...document.querySelectorAll("#chart svg g")].find(
      (g) => !g.classList.contains("qq-current") && g.querySelector(":scope > title")
             && g.querySelector(":scope > title").textContent.trim() === "STOPPED");
  const plainShape = plain ? plain.querySelector(":scope > path, :scope > polygon, :scope > ellipse, :scope > rect") : null;
  return JSON.stringify({
    highlighted: current.map((g) => g.querySelector(":scope > title").textContent.trim()),
    fill: shape ? getComputedStyle(shape).fill : null,
    plainFill: plainShape ? getComputedStyle(plainShape).fill : null,
    tags: [...document.querySelectorAll("#chart g.qq-tag text")].map((t) => t.textContent),
    verdict: document.body.dataset.verdict,
    verdictText: document.getElementById("verdict-text").textContent,
    transitions: [...document.querySelectorAll("#transitions tr")].map((tr) => tr.textContent),
    pageText: document.body.innerText,
    injected: document.getElementById("qqconn-injected") !== null,
  });
})()"""


class Page:
    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    async def read(self) -> dict[str, Any]:
        result = await self.devtools.call(
            "Runtime.evaluate",
            {"expression": READ_PAGE, "returnByValue": True},
            session=self.session,
        )
        if "value" not in result["result"]:  # still loading: the page's elements are not there
            return {"highlighted": None, "error": result.get("exceptionDetails", {}).get("text")}
        value: dict[str, Any] = json.loads(result["result"]["value"])
        return value

    async def until(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """Read the page every 50 ms until predicate(page) holds (bounded); return that read."""
        async with asyncio.timeout(timeout):
            while True:
                seen = await self.read()
                if predicate(seen):
                    return seen
                await asyncio.sleep(0.05)

    async def screenshot(self, name: str) -> Path:
        shot = await self.devtools.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=self.session,
        )
        path = SHOTS / f"qqconn-ops-page-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


async def open_page(devtools: DevTools, url: str) -> Page:
    target = await devtools.call("Target.createTarget", {"url": "about:blank"})
    attached = await devtools.call(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
    )
    page = Page(devtools, attached["sessionId"])
    await devtools.call("Page.enable", session=page.session)
    await devtools.call("Page.navigate", {"url": url}, session=page.session)
    return page


async def test_the_page_highlights_the_live_state_through_a_drop_and_recovery() -> None:
    """Chromium shows ALIVE highlighted, then a non-ALIVE state after a drop, then ALIVE again."""
    _need_chromium()
    async with FakeGateway(heartbeat_interval_ms=300) as gw:
        ops = OpsServer(metrics=Metrics(), refresh_s=0.2, title="qqconn · bot 1000")
        manager = ConnectionManager(
            app_id=gw.app_id,
            client_secret="s3cret",
            intents=1,
            api_base=gw.api_base,
            token_url=gw.token_url,
            policy=POLICY,
            on_state_change=ops.on_state_change,
        )
        ops.watch(manager)
        async with ops, chromium() as devtools:
            task = asyncio.create_task(manager.run())
            try:
                await gw.wait_for(lambda: manager.state is State.ALIVE, timeout=10)
                page = await open_page(devtools, ops.url)
                alive = await page.until(lambda p: p["highlighted"] == ["ALIVE"])
                assert alive["verdict"] == "ready"
                assert alive["tags"] == ["shard 0/1"]
                assert alive["fill"] != alive["plainFill"], "ALIVE is not filled differently"
                await page.screenshot("alive")

                await asyncio.sleep(POLICY.quick_disconnect_threshold_s + 0.2)
                for n in range(3):
                    await gw.dispatch("C2C_MESSAGE_CREATE", {"n": n})
                await gw.drop()
                away = await page.until(lambda p: p["highlighted"] not in ([], ["ALIVE"]))
                assert away["highlighted"] == ["BACKOFF"]
                assert away["verdict"] == "not-ready"
                assert "0/1 backoff" in away["verdictText"]
                assert away["fill"] != alive["fill"]
                await page.screenshot("backoff")

                back = await page.until(lambda p: p["highlighted"] == ["ALIVE"], timeout=15)
                assert back["verdict"] == "ready"
                assert any(
                    "connection lost without a close frame" in row for row in back["transitions"]
                )
                assert any("RESUMED" in row for row in back["transitions"])
                assert gw.resumes == 1
                assert "s3cret" not in back["pageText"]

                # A close reason is chosen by the peer: the page shows it as text, never markup.
                markup = '<img src="x" id="qqconn-injected">'
                await gw.close(4009, markup)
                shown = await page.until(
                    lambda p: (
                        any(markup in row for row in p["transitions"]) and p["verdict"] == "ready"
                    ),
                    timeout=15,
                )
                assert shown["injected"] is False
                shot = await page.screenshot("recovered")
                assert shot.stat().st_size > 10_000
            finally:
                await manager.stop()
                async with asyncio.timeout(5):
                    await task
