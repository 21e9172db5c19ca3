"""The fake QQ gateway in a process of its own, driven over a JSON-lines control socket.

Run: ``python bench/gateway_proc.py [--hb-ms 1000] [--tick 0.01]``. It starts
:class:`qqconn.testing.FakeGateway` on 127.0.0.1, prints one JSON line with its addresses
(``api_base``, ``token_url``, ``ws_url``, ``control`` port, ``pid``), then serves the control
socket until ``quit`` or until its stdin closes (so it never outlives the harness).

Control protocol: one JSON object per line, ``{"id": n, "cmd": "...", ...args}``; the answer is
``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error": "..."}``. Requests
run concurrently (each in its own task). See :class:`Controller` for the commands.

Harness additions to the fake (bench-only, the installed fake is untouched):

* ``GET /users/@me`` answers the bot user: botpy calls it at login and the fake has no route.
* ``burst``: writes pre-built frames through the socket's websockets protocol in batches of 256
  with flow control (one ``transport.write`` per batch), so the fake outruns any client and the
  measured rate is the client's. Burst frames go into the session's replay buffer like any
  dispatch but are not added to ``gw.frames`` (200,000 records would only cost memory).
* ``--tick`` patches the module constant ``_TICK_S`` of the fake's per-socket watchdog (10 ms by
  default). The many-connections run uses a coarser tick; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


import realistic

import qqconn.testing.gateway as fake_gateway_module
from qqconn.protocol import OpCode
from qqconn.testing import FakeGateway
from qqconn.testing._http import HttpReply, HttpRequest


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_stats() -> dict[str, float]:
    """CPU seconds (user + sys) and resident memory of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss_kb = 0
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "rss_kb": rss_kb, "t": time.monotonic()}


class BenchGateway(FakeGateway):
    """The fake plus the one REST route botpy needs."""

    def _answer_http(self, request: HttpRequest) -> HttpReply | None:
        if request.path == "/users/@me" and request.method == "GET":
            if not self._auth_ok_http(request.headers.get("authorization", "")):
                body = {"message": "token not exist or expire", "code": 11244}
                return HttpReply(401, json.dumps(body).encode())
            me = {"id": self.bot_user_id, "username": self.bot_username, "avatar": "", "bot": True}
            return HttpReply(200, json.dumps(me).encode())
        return super()._answer_http(request)


class Controller:
    def __init__(self, gw: BenchGateway) -> None:
        self.gw = gw
        self.pump_task: asyncio.Task[None] | None = None
        self.pump_sent = 0
        self.op7_at: list[float] = []
        self.stop = asyncio.Event()

    # -- commands ------------------------------------------------------------------------

    async def cmd_info(self) -> dict[str, Any]:
        gw = self.gw
        return {
            "api_base": gw.api_base,
            "token_url": gw.token_url,
            "ws_url": gw.ws_url,
            "app_id": gw.app_id,
            "token": gw.valid_token(),
            "heartbeat_interval_ms": gw.heartbeat_interval_ms,
            "pid": os.getpid(),
        }

    async def cmd_stats(self) -> dict[str, Any]:
        s = proc_stats()
        s["connections"] = len(self.gw.connections)
        s["live"] = len(self.gw.live_connections)
        return s

    async def cmd_faults(self, **values: Any) -> dict[str, Any]:
        f = self.gw.faults
        for name, value in values.items():
            if name == "close_new_sockets":
                after_s, count, code = value
                f.close_new_sockets(after_s, count, code)
            else:
                setattr(f, name, value)
        return {"at": time.monotonic()}

    async def cmd_sessions(self) -> dict[str, Any]:
        gw = self.gw
        attached = [s.session_id for s in gw._sessions.values() if s.sock is not None]
        return {"current": gw.current_session_id, "attached": attached, "count": len(gw._sessions)}

    async def cmd_burst(
        self, n: int, session_id: str | None = None, batch: int = 256
    ) -> dict[str, Any]:
        """Write ``n`` realistic dispatches to the session's socket as fast as it takes them."""
        gw = self.gw
        session = gw._session(session_id)
        sock = session.sock
        if sock is None or not sock.is_open:
            raise RuntimeError("burst: session not attached to an open socket")
        first = session.seq + 1
        texts = realistic.frame_texts(first, n)
        session.seq = first + n - 1
        session.buffer.extend(zip(range(first, first + n), texts, strict=True))
        ws = sock.ws
        proto = ws.protocol
        before = proc_stats()
        for i in range(0, n, batch):
            for text in texts[i : i + batch]:
                proto.send_text(text.encode())
            ws.send_data()
            await ws.drain()
        after = proc_stats()
        return {
            "first_seq": first,
            "last_seq": first + n - 1,
            "t_start": before["t"],
            "t_end": after["t"],
            "cpu_s": after["cpu_s"] - before["cpu_s"],
            "bytes": sum(len(t.encode()) for t in texts[:1000]) * n // min(n, 1000),
        }

    async def cmd_pump_start(self, rate: float, session_id: str | None = None) -> dict[str, Any]:
        """Dispatch realistic events at ``rate`` per second through the fake's own path
        (buffered while the session is detached, replayed on Resume)."""
        if self.pump_task is not None:
            raise RuntimeError("pump already running")
        gw = self.gw
        sid = session_id or gw.current_session_id
        self.pump_sent = 0

        async def pump() -> None:
            t0 = time.monotonic()
            while True:
                due = int(rate * (time.monotonic() - t0)) - self.pump_sent
                for _ in range(due):
                    t, d = realistic.event_data(gw.session_seq(sid) + 1)
                    gw.dispatch_nowait(t, d, session_id=sid)
                    self.pump_sent += 1
                await asyncio.sleep(0.001)

        self.pump_task = asyncio.create_task(pump())
        return {"at": time.monotonic(), "session_id": sid}

    async def cmd_pump_stop(self) -> dict[str, Any]:
        if self.pump_task is not None:
            self.pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump_task
            self.pump_task = None
        return {"at": time.monotonic(), "sent": self.pump_sent}

    async def cmd_reconnect(self, close_after_s: float = 0.2) -> dict[str, Any]:
        """op 7 to every open socket, then close 4009 those the client did not close in time."""
        at = time.monotonic()
        self.op7_at.append(at)
        task = asyncio.create_task(self.gw.send_reconnect(close_after_s=close_after_s))
        await asyncio.sleep(0)
        return {"at": at, "background": not task.done()}

    async def cmd_close(self, code: int | None) -> dict[str, Any]:
        at = time.monotonic()
        if code is None:
            n = await self.gw.drop()
        else:
            n = await self.gw.close(code)
        return {"at": at, "sockets": n}

    async def cmd_accepted(self, session_id: str | None = None) -> list[int]:
        return self.gw.accepted(session_id)

    async def cmd_connections(self, frames: bool = False) -> list[dict[str, Any]]:
        out = []
        for c in self.gw.connections:
            row: dict[str, Any] = {
                "index": c.index,
                "opened_at": c.opened_at,
                "closed_at": c.closed_at,
                "close_code": c.close_code,
                "closed_by": c.closed_by,
                "identify": c.identify_count,
                "resume": c.resume_count,
                "session_id": c.session_id,
            }
            if frames:
                row["acks_out"] = [
                    f.at for f in c.frames if f.direction == "out" and f.op == OpCode.HEARTBEAT_ACK
                ]
                row["beats_in"] = [
                    f.at for f in c.frames if f.direction == "in" and f.op == OpCode.HEARTBEAT
                ]
                row["last_out"] = max(
                    (f.at for f in c.frames if f.direction == "out"), default=None
                )
                row["op7_out"] = [
                    f.at for f in c.frames if f.direction == "out" and f.op == OpCode.RECONNECT
                ]
                row["dispatch_seqs_out"] = [
                    json.loads(f.payload_text).get("s")
                    for f in c.frames
                    if f.direction == "out" and f.op == OpCode.DISPATCH
                ]
            out.append(row)
        return out

    async def cmd_heartbeat_gaps(
        self, since: float, until: float, interval_s: float, raw: bool = False
    ) -> dict[str, Any]:
        """Heartbeat lateness per connection: each gap between two consecutive heartbeats that
        arrived in [since, until], minus ``interval_s``. Percentiles over all gaps; ``raw``
        adds every gap (``late``), so that several fakes' answers can be merged."""
        late: list[float] = []
        beats = 0
        per_conn_min = []
        for c in self.gw.connections:
            times = [
                f.at
                for f in c.frames
                if f.direction == "in" and f.op == OpCode.HEARTBEAT and since <= f.at <= until
            ]
            beats += len(times)
            per_conn_min.append(len(times))
            late.extend(b - a - interval_s for a, b in itertools.pairwise(times))
        late.sort()

        def pct(p: float) -> float | None:
            if not late:
                return None
            return late[min(len(late) - 1, int(p / 100 * len(late)))]

        return {
            **({"late": late} if raw else {}),
            "gaps": len(late),
            "beats": beats,
            "p50_s": pct(50),
            "p99_s": pct(99),
            "max_s": late[-1] if late else None,
            "min_s": late[0] if late else None,
            "connections_with_beats": sum(1 for n in per_conn_min if n > 0),
            "fewest_beats": min(per_conn_min) if per_conn_min else 0,
        }

    async def cmd_quit(self) -> dict[str, Any]:
        self.stop.set()
        return {}

    # -- serving -------------------------------------------------------------------------

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def answer(req: dict[str, Any]) -> None:
            rid = req.pop("id", None)
            name = req.pop("cmd", "")
            try:
                handler = getattr(self, f"cmd_{name}")
                result = await handler(**req)
                reply = {"id": rid, "ok": True, "result": result}
            except Exception as exc:  # reported to the caller
                reply = {"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            async with lock:
                writer.write(json.dumps(reply).encode() + b"\n")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        try:
            while line := await reader.readline():
                task = asyncio.create_task(answer(json.loads(line)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            writer.close()


async def _watch_stdin(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    stop.set()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hb-ms", type=int, default=41250)
    ap.add_argument(
        "--tick", type=float, default=None, help="watchdog tick (default: the fake's 10 ms)"
    )
    args = ap.parse_args()
    _raise_nofile()
    if args.tick is not None:
        fake_gateway_module._TICK_S = args.tick  # type: ignore[misc]
    gw = BenchGateway(heartbeat_interval_ms=args.hb_ms, session_start_total=10**9, seed=1)
    async with gw:
        ctl = Controller(gw)
        server = await asyncio.start_server(ctl.serve_client, "127.0.0.1", 0, limit=1 << 24)
        port = server.sockets[0].getsockname()[1]
        info = await ctl.cmd_info()
        info["control"] = port
        print(json.dumps(info), flush=True)
        stdin_task = asyncio.create_task(_watch_stdin(ctl.stop))
        await ctl.stop.wait()
        server.close()
        stdin_task.cancel()
        if ctl.pump_task is not None:
            ctl.pump_task.cancel()
    os._exit(0)  # the stdin reader thread would keep the interpreter alive


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
