"""Client side of the benchmarks, the peer: the official QQ SDK ``qq-botpy`` (runs in bench/.venv-botpy).

botpy is used as its users use it: a ``botpy.Client`` subclass with ``on_<event>`` handlers,
started with ``await client.start(appid, secret)``. Its installed files are never touched; the
harness only points it at the fake gateway, at run time:

* ``botpy.http.Route.SCHEME`` / ``DOMAIN`` / ``SANDBOX_DOMAIN``: the API host (``/users/@me``,
  ``/gateway/bot``) becomes the fake's ``http://127.0.0.1:<port>``;
* the token URL is a string literal inside ``botpy.robot.Token.update_access_token``, so the
  ``aiohttp`` name that module uses is replaced by a shim whose ``ClientSession().post`` swaps
  that one URL for the fake's token endpoint (everything else goes to aiohttp unchanged).

The WebSocket URL then comes from the fake's ``/gateway/bot`` as it would in production.
Logging: botpy's logger at WARNING, no log file (``ext_handlers=False``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import aiohttp
import botpy
import botpy.http
import botpy.robot

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Control,
    GcPauses,
    analyse_recovery,
    client_parser,
    cpu_s,
    emit,
    raise_nofile,
    rss_kb,
    window_figures,
)
from realistic import seq_of_content

REAL_TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"


def point_at_fake(api_base: str, token_url: str) -> None:
    scheme, _, netloc = api_base.partition("://")
    botpy.http.Route.SCHEME = scheme
    botpy.http.Route.DOMAIN = netloc
    botpy.http.Route.SANDBOX_DOMAIN = netloc

    def client_session(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(*args, **kwargs)
        real_post = session.post

        def post(url: str, **kw: Any) -> Any:
            return real_post(token_url if url == REAL_TOKEN_URL else url, **kw)

        session.post = post  # type: ignore[method-assign]
        return session

    botpy.robot.aiohttp = types.SimpleNamespace(  # type: ignore[attr-defined]
        ClientSession=client_session, ClientTimeout=aiohttp.ClientTimeout
    )


class Bot(botpy.Client):
    """Records (time, seq) of every message event it is handed."""

    def __init__(self, record: bool = False, **kw: Any) -> None:
        super().__init__(
            intents=botpy.Intents(public_messages=True, public_guild_messages=True),
            log_level=logging.WARNING,
            ext_handlers=False,
            **kw,
        )
        self.record = record
        self.seen: list[tuple[float, int | None]] = []
        self.count = 0
        self.goal = -1
        self.done = asyncio.Event()
        self.t_first = 0.0
        self.t_last = 0.0

    def _got(self, content: str | None) -> None:
        self.count += 1
        if self.count == 1:
            self.t_first = time.monotonic()
        if self.count == self.goal:
            self.t_last = time.monotonic()
            self.done.set()
        if self.record:
            self.seen.append((time.monotonic(), seq_of_content(content or "")))

    async def on_group_at_message_create(self, message: Any) -> None:
        self._got(message.content)

    async def on_c2c_message_create(self, message: Any) -> None:
        self._got(message.content)

    async def on_at_message_create(self, message: Any) -> None:
        self._got(message.content)


def start(bot: Bot, a: argparse.Namespace) -> asyncio.Task[Any]:
    return asyncio.create_task(bot.start(appid=a.app_id, secret="s3cret"))


async def wait_identified(ctl: Control, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        s = await ctl.call("sessions")
        if len(s["attached"]) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(s['attached'])} of {count} botpy sessions attached")
        await asyncio.sleep(0.2)


# -- 1. throughput (context only) -----------------------------------------------------------


async def throughput(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    bot = Bot()
    task = start(bot, a)
    await wait_identified(ctl, 1, 20)
    await asyncio.sleep(0.2)
    bot.count, bot.goal = 0, a.warmup
    bot.done.clear()
    await ctl.call("burst", n=a.warmup)
    await asyncio.wait_for(bot.done.wait(), 120)
    gc.collect()
    bot.count, bot.goal = 0, a.n
    bot.done.clear()
    c0 = cpu_s()
    fake = await ctl.call("burst", n=a.n)
    await asyncio.wait_for(bot.done.wait(), 300)
    c1 = cpu_s()
    task.cancel()
    return {
        "side": "botpy",
        "events": a.n,
        "delivered": bot.count,
        "events_per_s": (a.n - 1) / (bot.t_last - bot.t_first),
        "client_cpu_us_per_event": (c1 - c0) / a.n * 1e6,
        "fake_cpu_us_per_event": fake["cpu_s"] / a.n * 1e6,
    }


# -- 2. does it notice a dead connection? ---------------------------------------------------


async def detect(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    fault = {"zombie": {"ack": False}, "halfopen": {"silent": True}}[a.fault]
    bot = Bot()
    task = start(bot, a)
    await wait_identified(ctl, 1, 20)
    await asyncio.sleep(1.0)  # its first heartbeat goes out at READY
    t_fault = (await ctl.call("faults", **fault))["at"]
    deadline = t_fault + a.window
    noticed_at = None
    while time.monotonic() < deadline:
        conns = await ctl.call("connections")
        if conns[0]["closed_at"] is not None or len(conns) > 1:
            noticed_at = min(
                t
                for t in (conns[0]["closed_at"], conns[1]["opened_at"] if len(conns) > 1 else None)
                if t is not None
            )
            break
        await asyncio.sleep(0.1)
    conns = await ctl.call("connections", frames=True)
    beats_after = sum(1 for t in conns[0]["beats_in"] if t > t_fault)
    task.cancel()
    return {
        "side": "botpy",
        "fault": a.fault,
        "window_s": a.window,
        "noticed": noticed_at is not None,
        "noticed_after_s": None if noticed_at is None else noticed_at - t_fault,
        "sockets": len(conns),
        "heartbeats_sent_after_fault": beats_after,
        "heartbeat_interval_announced_s": a.hb_ms / 1000,
    }


# -- 3. op 7 while events flow ------------------------------------------------------------


async def recover(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    bot = Bot(record=True)
    task = start(bot, a)
    await wait_identified(ctl, 1, 20)
    sid = (await ctl.call("sessions"))["attached"][0]
    await asyncio.sleep(a.mature)  # same timeline as qqconn's run
    await ctl.call("pump_start", rate=a.rate, session_id=sid)
    await asyncio.sleep(a.before)
    t_trigger = (await ctl.call("reconnect", close_after_s=0.2))["at"]
    await asyncio.sleep(a.after)
    await ctl.call("pump_stop")
    await asyncio.sleep(1.0)
    accepted = await ctl.call("accepted", session_id=sid)
    conns = await ctl.call("connections", frames=True)
    result = analyse_recovery(bot.seen, accepted, conns, t_trigger)
    result["side"] = "botpy"
    result["trigger"] = "op7"
    task.cancel()
    return result


# -- 4. the seed's loop -------------------------------------------------------------------


async def seedloop(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    await ctl.call("faults", close_new_sockets=[0.1, 10**6, 1000])
    bot = Bot()
    t0 = time.monotonic()
    task = start(bot, a)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), a.window)
    gave_up = task.done()
    task.cancel()
    conns = await ctl.call("connections")
    return {
        "side": "botpy",
        "window_s": time.monotonic() - t0,
        "sockets": len(conns),
        "gave_up": gave_up,
        "identifies": sum(c["identify"] for c in conns),
        "resumes": sum(c["resume"] for c in conns),
    }


# -- 5. many connections in one process ---------------------------------------------------


async def many(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    raise_nofile()
    bots: list[Bot] = []
    tasks: list[asyncio.Task[Any]] = []

    def add() -> None:
        b = Bot()
        bots.append(b)
        tasks.append(start(b, a))

    add()
    await wait_identified(ctl, 1, 30)
    await asyncio.sleep(0.5)
    gc.collect()
    rss0 = rss_kb()
    t_ramp = time.monotonic()
    for i in range(a.n):
        add()
        delay = t_ramp + (i + 1) / a.ramp_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 20 == 19:
            await asyncio.sleep(0)
    await wait_identified(ctl, a.n + 1, 300)
    ramp_s = time.monotonic() - t_ramp
    await asyncio.sleep(1.0)
    pauses = GcPauses()
    t0, c0, f0 = time.monotonic(), cpu_s(), await ctl.call("stats")
    await asyncio.sleep(a.window)
    t1, c1, f1 = time.monotonic(), cpu_s(), await ctl.call("stats")
    gc.collect()
    rss1 = rss_kb()
    # botpy beats every 30 s whatever Hello says: lateness against its own 30 s cadence,
    # over the whole run (a 30 s window holds one beat per connection at most).
    gaps = await ctl.call("heartbeat_gaps", since=0.0, until=t1, interval_s=30.0)
    stats = await ctl.call("stats")
    result = {
        **window_figures(
            side="botpy",
            n=a.n,
            ramp_s=ramp_s,
            t0=t0,
            t1=t1,
            rss=(rss0, rss1),
            cpu=(c0, c1),
            fake=(f0, f1),
            gaps=gaps,
            pauses=pauses,
        ),
        "heartbeat_cadence_s": 30.0,
        "sockets_total": stats["connections"],
        "false_detections": stats["connections"] - (a.n + 1),
    }
    for t in tasks:
        t.cancel()
    return result


async def amain() -> None:
    ap = client_parser(
        ["throughput", "detect", "recover", "seedloop", "many"],
        n=50_000,
        warmup=2_000,
        window_s=60.0,
    )
    ap.add_argument("--fault", choices=["zombie", "halfopen"], default="zombie")
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--before", type=float, default=1.0)
    ap.add_argument("--mature", type=float, default=5.5)
    ap.add_argument("--after", type=float, default=8.0)
    a = ap.parse_args()
    point_at_fake(a.api_base, a.token_url)
    ctl = await Control.connect(a.control)
    fn = {
        "throughput": throughput,
        "detect": detect,
        "recover": recover,
        "seedloop": seedloop,
        "many": many,
    }
    result = await fn[a.scenario](a, ctl)
    emit(result)
    sys.stdout.flush()
    # botpy has no way to close its sockets (Client.close() closes HTTP only): leave hard.
    import os

    os._exit(0)


if __name__ == "__main__":
    asyncio.run(amain())
