"""Client side of the benchmarks, the bare baseline: plain ``websockets`` and ``json``, nothing else.

What a bare connection does (the least any gateway client must do):

* connect with the same options qqconn uses (``compression=None``, ``ping_interval=None``,
  ``max_size`` 4 MiB, default ``max_queue``), URL and token handed over by the harness (no HTTP);
* on Hello: send Identify, start one heartbeat task (``sleep(interval)`` then send
  ``{"op":1,"d":last_s}``, forever);
* per message: ``json.loads``; op 0: skip an ``s`` not above the last one, remember ``s``, call
  the callback with the decoded dict (inline, same callback body as qqconn's host);
  op 11: count the ACK. Nothing else: no zombie check, no reconnect, no typed frames. (In the
  many-connection runs the harness tries a socket that ended before READY again, up to five
  times, one second apart, and reports how many it retried: ``connects_retried``.)

The ``detect`` and ``seedloop`` scenarios use websockets' own safety nets instead (its default
keepalive pings, and its ``async for ws in connect()`` reconnect loop), as references.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Control,
    Fakes,
    GcPauses,
    LoopCounts,
    client_parser,
    cpu_s,
    emit,
    fakes_cpu,
    heartbeat_window,
    paced_phase,
    raise_nofile,
    ramp,
    rss_kb,
    timed_burst,
    until,
    window_figures,
)

INTENTS = 1 << 30 | 1 << 25


class Sink:
    """Same body as scen_qqconn.Sink: count, stamp the first and the goal-th event."""

    def __init__(self) -> None:
        self.count = 0
        self.goal = -1
        self.t_first = 0.0
        self.t_last = 0.0
        self.done = asyncio.Event()

    def reset(self, goal: int) -> None:
        self.count = 0
        self.goal = goal
        self.done.clear()

    def __call__(self, d: dict[str, Any]) -> None:
        self.count += 1
        if self.count == 1:
            self.t_first = time.monotonic()
        if self.count == self.goal:
            self.t_last = time.monotonic()
            self.done.set()


class BareClient:
    def __init__(
        self,
        url: str,
        token: str,
        on_dispatch: Callable[[dict[str, Any]], None] | None = None,
        retries: int = 0,
    ) -> None:
        self.url = url
        self.identify = json.dumps(
            {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS, "shard": [0, 1]}},
            separators=(",", ":"),
        )
        self.on_dispatch = on_dispatch
        #: Sockets to try again after one that ended before READY (the ramp's harness does
        #: this, not the client: at 10,000 a few handshakes time out, and one missing READY
        #: would hold the run). Counted in ``retried``; nothing is retried after READY.
        self.retries = retries
        self.retried = 0
        self.last_seq: int | None = None
        self.acks = 0
        self.ready = asyncio.Event()
        self.closed_at: float | None = None
        self.session_id: str | None = None
        #: Called once: at READY, or when the socket closes before it.
        self.on_settled: Callable[[], None] | None = None

    async def run(self) -> None:
        try:
            for left in range(self.retries, -1, -1):
                await self._socket()
                if self.ready.is_set() or not left:
                    break
                self.retried += 1
                await asyncio.sleep(1.0)
        finally:
            self.closed_at = time.monotonic()
            if not self.ready.is_set() and self.on_settled is not None:
                self.on_settled()

    async def _socket(self) -> None:
        hb: asyncio.Task[None] | None = None
        try:
            async with websockets.connect(
                self.url, compression=None, ping_interval=None, max_size=4 * 1024 * 1024
            ) as ws:
                while True:
                    msg = json.loads(await ws.recv())
                    op = msg["op"]
                    if op == 0:
                        s = msg.get("s")
                        if s is not None:
                            last = self.last_seq
                            if last is not None and s <= last:
                                continue
                            self.last_seq = s
                        if msg.get("t") == "READY":
                            self.session_id = msg["d"].get("session_id")
                            self.ready.set()
                            if self.on_settled is not None:
                                self.on_settled()
                        if self.on_dispatch is not None:
                            self.on_dispatch(msg)
                    elif op == 11:
                        self.acks += 1
                    elif op == 10:
                        await ws.send(self.identify)
                        interval = msg["d"]["heartbeat_interval"] / 1000
                        hb = asyncio.create_task(self._beat(ws, interval))
        except (ConnectionClosed, InvalidHandshake, InvalidMessage, OSError):
            pass  # a handshake refused or cut counts as a closed connection, as a close does
        finally:
            if hb is not None:
                hb.cancel()

    async def _beat(self, ws: Any, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send(json.dumps({"op": 1, "d": self.last_seq}, separators=(",", ":")))


async def token_of(ctl: Control) -> str:
    return (await ctl.call("info"))["token"]


# -- 1. dispatch throughput ---------------------------------------------------------------


async def throughput(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    counts = LoopCounts()
    sink = Sink()
    client = BareClient(a.ws_url, await token_of(ctl), sink)
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.ready.wait(), 20)
    sink.reset(a.warmup)
    await ctl.call("burst", n=a.warmup)
    await asyncio.wait_for(sink.done.wait(), 60)
    gc.collect()
    sink.reset(a.n)
    cpu0 = cpu_s()
    counts.start()
    fake = await ctl.call("burst", n=a.n)
    await asyncio.wait_for(sink.done.wait(), 300)
    loop_objects = counts.stop()
    cpu1 = cpu_s()
    elapsed = sink.t_last - sink.t_first
    result = {
        "side": "bare",
        "events": a.n,
        "delivered": sink.count,
        "events_per_s": (a.n - 1) / elapsed,
        "client_cpu_us_per_event": (cpu1 - cpu0) / a.n * 1e6,
        **LoopCounts.per(loop_objects, a.n),
        "fake_cpu_us_per_event": fake["cpu_s"] / a.n * 1e6,
        "fake_write_s": fake["t_end"] - fake["t_start"],
        "last_seq": client.last_seq,
        "expected_last_seq": fake["last_seq"],
    }
    result.update(await paced_phase(a, ctl, sink, counts))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return result


# -- 1b. heartbeats of an idle connection -------------------------------------------------


async def beats(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    counts = LoopCounts()
    client = BareClient(a.ws_url, await token_of(ctl))
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.ready.wait(), 20)
    await until(lambda: client.acks >= 3, 30, what="3 ACKs")
    result = {"side": "bare", **await heartbeat_window(a.window, lambda: client.acks, counts)}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return result


# -- 2. websockets' keepalive as the detector (reference) ----------------------------------


async def detect(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    """Default websockets keepalive (ping every 20 s, 20 s timeout), no ACK tracking."""
    token = await token_of(ctl)
    ident = json.dumps(
        {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS, "shard": [0, 1]}}
    )
    fault = {"zombie": {"ack": False}, "halfopen": {"silent": True}}[a.fault]
    noticed: list[float] = []

    async def client() -> None:
        async with websockets.connect(a.ws_url, compression=None) as ws:
            hb: asyncio.Task[None] | None = None
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["op"] == 10:
                        await ws.send(ident)
                        interval = msg["d"]["heartbeat_interval"] / 1000

                        async def beat(interval: float = interval) -> None:
                            while True:
                                await asyncio.sleep(interval)
                                await ws.send('{"op":1,"d":null}')

                        hb = asyncio.create_task(beat())
                noticed.append(time.monotonic())  # the iterator ended: the socket closed
            except ConnectionClosed:
                noticed.append(time.monotonic())
            finally:
                if hb is not None:
                    hb.cancel()

    task = asyncio.create_task(client())
    await asyncio.sleep(3 * a.hb_ms / 1000 + 0.5)
    t_fault = (await ctl.call("faults", **fault))["at"]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), a.window)
    task.cancel()
    conns = await ctl.call("connections")
    return {
        "side": "bare-keepalive",
        "fault": a.fault,
        "window_s": a.window,
        "noticed": bool(noticed),
        "noticed_after_s": (noticed[0] - t_fault) if noticed else None,
        "sockets": len(conns),
    }


# -- 4. websockets' reconnect loop against the seed's loop (reference) ---------------------


async def seedloop(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    await ctl.call("faults", close_new_sockets=[0.1, 10**6, 1000])
    token = await token_of(ctl)
    ident = json.dumps(
        {"op": 2, "d": {"token": f"QQBot {token}", "intents": INTENTS, "shard": [0, 1]}}
    )

    async def loop() -> None:
        async for ws in websockets.connect(a.ws_url, compression=None):
            try:
                async for raw in ws:
                    if json.loads(raw)["op"] == 10:
                        await ws.send(ident)
            except ConnectionClosed:
                continue

    t0 = time.monotonic()
    task = asyncio.create_task(loop())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), a.window)
    stopped = task.done()
    task.cancel()
    conns = await ctl.call("connections")
    return {
        "side": "bare-reconnect",
        "window_s": time.monotonic() - t0,
        "sockets": len(conns),
        "gave_up": stopped,
    }


# -- 5. many connections in one process ---------------------------------------------------


def _ramp_census(clients: list[BareClient]) -> str:
    ready = sum(1 for c in clients if c.ready.is_set())
    gave_up = sum(1 for c in clients if c.closed_at is not None and not c.ready.is_set())
    return (
        f"{ready} READY, {gave_up} ended before READY with their retries spent, "
        f"{len(clients) - ready - gave_up} still connecting, "
        f"{sum(c.retried for c in clients)} sockets retried"
    )


async def many(a: argparse.Namespace, ctl: Control) -> dict[str, Any]:
    """Item 5 (one fake), and item 10 with its options (several fakes, ``--settle``,
    ``--burst`` on connection 0 beside the idle others); ``--freeze-window`` is qqconn's."""
    raise_nofile()
    interval = a.hb_ms / 1000
    fakes = await Fakes.connect(a, ctl)
    tokens = [await token_of(c) for c in fakes.controls]
    clients: list[BareClient] = []
    tasks: list[asyncio.Task[None]] = []
    sink = Sink()
    settled = [0]  # connections that got READY or closed (the ramp's bound counts the others)

    def count_settled() -> None:
        settled[0] += 1

    def add() -> None:
        fake, _ = fakes.of(len(clients))
        token = tokens[len(clients) % len(tokens)]
        c = BareClient(fake["ws_url"], token, sink if not clients else lambda d: None, retries=5)
        c.on_settled = count_settled
        clients.append(c)
        tasks.append(asyncio.create_task(c.run()))

    add()
    await asyncio.wait_for(clients[0].ready.wait(), 30)
    gc.collect()
    rss0 = rss_kb()
    t_ramp, fr0 = time.monotonic(), await fakes.stats()
    await ramp(a.n, a.ramp_per_s, add, lambda: len(clients) - settled[0], a.max_pending)
    try:
        await until(
            lambda: settled[0] == len(clients), 300 + a.n / 50, step=0.1, what="all settled"
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {_ramp_census(clients)}") from None
    if not all(c.ready.is_set() for c in clients):
        raise RuntimeError(f"not every connection reached READY: {_ramp_census(clients)}")
    ramp_s = time.monotonic() - t_ramp
    fr1 = await fakes.stats()
    await asyncio.sleep(2 * interval if a.settle is None else a.settle)
    pauses = GcPauses()
    t0, c0, f0 = time.monotonic(), cpu_s(), await fakes.stats()
    await asyncio.sleep(a.window)
    t1, c1, f1 = time.monotonic(), cpu_s(), await fakes.stats()
    gc.collect()
    rss1 = rss_kb()
    gaps = await fakes.gaps(since=t0, until=t1, interval_s=interval)
    extra: dict[str, Any] = {}
    if a.burst > 0:
        try:
            extra["burst"] = await _burst(a, ctl, clients[0], sink)
        except (RuntimeError, TimeoutError) as exc:  # reported, and the run's figures kept
            extra["burst"] = {"events": a.burst, "error": f"{type(exc).__name__}: {exc}"}
    result = {
        **window_figures(
            side="bare",
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
        "false_detections": sum(1 for c in clients if c.closed_at is not None),
        "false_detections_ramp": sum(1 for c in clients if c.closed_at and c.closed_at < t0),
        "false_detections_in_window": sum(
            1 for c in clients if c.closed_at and t0 <= c.closed_at <= t1
        ),
        "connects_retried": sum(c.retried for c in clients),
        "sockets_total": (await fakes.stats())["connections"],
        "fakes": len(fakes.controls),
        "fake_cpu_window": fakes_cpu(f0, f1),
        "fake_cpu_ramp": fakes_cpu(fr0, fr1),
        "fewest_beats": gaps["fewest_beats"],
        **extra,
    }
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await fakes.close()
    return result


async def _burst(
    a: argparse.Namespace, ctl: Control, client: BareClient, sink: Sink
) -> dict[str, Any]:
    """Item 1's burst on connection 0 (on the first fake) while the others stay connected."""
    return await timed_burst(ctl, sink, client.session_id, a.warmup, a.burst)


async def amain() -> None:
    ap = client_parser(
        ["throughput", "beats", "detect", "seedloop", "many"],
        n=200_000,
        warmup=5_000,
        window_s=30.0,
    )
    ap.add_argument("--fault", choices=["zombie", "halfopen"], default="zombie")
    a = ap.parse_args()
    ctl = await Control.connect(a.control)
    fn = {
        "throughput": throughput,
        "beats": beats,
        "detect": detect,
        "seedloop": seedloop,
        "many": many,
    }
    result = await fn[a.scenario](a, ctl)
    await ctl.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(amain())
