"""Helpers shared by every benchmark process (stdlib only: botpy's venv imports this too)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb() -> int:
    """Resident set size of this process (VmRSS), in KiB, read from /proc."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_jiffies() -> tuple[int, int]:
    """System-wide (busy, total) jiffies from /proc/stat: how busy the whole machine is."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class GcPauses:
    """Collector pauses (``gc.callbacks``): count per generation and the longest, in a window."""

    def __init__(self) -> None:
        import gc

        self._gc = gc
        self._start = self._start_cpu = 0.0
        #: (at, generation, wall seconds, CPU seconds of this thread)
        self.pauses: list[tuple[float, int, float, float]] = []
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if phase == "start":
            self._start, self._start_cpu = now, cpu
        else:
            self.pauses.append(
                (time.monotonic(), info["generation"], now - self._start, cpu - self._start_cpu)
            )

    def summary(self, since: float, until: float) -> dict[str, Any]:
        """The pause figures are wall time (what the loop lost); ``gc_max_pause_cpu_ms`` is the
        CPU time of that same longest pause: the collector's own work. Far apart, the process
        was descheduled mid-collection (a busy machine), not collecting."""
        ps = [p for p in self.pauses if since <= p[0] <= until]
        gen2 = [p[2] for p in ps if p[1] == 2]
        longest = max(ps, key=lambda p: p[2], default=None)
        return {
            "gc_collections": len(ps),
            "gc_gen2_collections": len(gen2),
            "gc_max_pause_ms": 1000 * (longest[2] if longest else 0.0),
            "gc_max_pause_cpu_ms": 1000 * (longest[3] if longest else 0.0),
            "gc_max_pause_generation": longest[1] if longest else None,
            "gc_gen2_max_pause_ms": 1000 * max(gen2, default=0.0),
            "gc_total_pause_ms": 1000 * sum(p[2] for p in ps),
        }


class LoopCounts:
    """What the event loop was asked to make in a window: tasks, scheduled callbacks (handles:
    ``call_soon`` and ``call_at``/``call_later``, including each task step, each future's
    wake-up and each timer) and futures.

    Counted by wrapping the running loop's ``call_soon``, ``create_future`` and task factory
    (the C task and future implementations call them through the loop object too), so it
    counts the same for every client. ``per(n)`` divides by the events of the window.
    """

    def __init__(self) -> None:
        self.tasks = self.handles = self.futures = 0
        self._on = False
        loop = asyncio.get_running_loop()
        call_soon, call_at, create_future = loop.call_soon, loop.call_at, loop.create_future
        previous = loop.get_task_factory()

        def counted_call_soon(*args: Any, **kw: Any) -> Any:
            self.handles += self._on
            return call_soon(*args, **kw)

        def counted_call_at(*args: Any, **kw: Any) -> Any:
            self.handles += self._on
            return call_at(*args, **kw)

        def counted_create_future() -> Any:
            self.futures += self._on
            return create_future()

        def factory(lp: Any, coro: Any, **kw: Any) -> Any:
            self.tasks += self._on
            if previous is not None:
                return previous(lp, coro, **kw)
            return asyncio.Task(coro, loop=lp, **kw)

        loop.call_soon = counted_call_soon  # type: ignore[method-assign]
        loop.call_at = counted_call_at  # type: ignore[method-assign]
        loop.create_future = counted_create_future  # type: ignore[method-assign]
        loop.set_task_factory(factory)

    def start(self) -> None:
        self.tasks = self.handles = self.futures = 0
        self._on = True

    def stop(self) -> dict[str, int]:
        self._on = False
        return {"tasks": self.tasks, "handles": self.handles, "futures": self.futures}

    @staticmethod
    def per(counts: dict[str, int], n: int, unit: str = "event") -> dict[str, float]:
        return {f"{k}_per_{unit}": round(v / max(n, 1), 4) for k, v in counts.items()}


def emit(result: dict[str, Any]) -> None:
    """The one result line a scenario prints (the harness reads the last line starting RESULT)."""
    print("RESULT " + json.dumps(result), flush=True)


class Control:
    """Client of bench/gateway_proc.py's control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int) -> Control:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 26)
        return cls(reader, writer)

    async def _read(self) -> None:
        while line := await self._reader.readline():
            reply = json.loads(line)
            fut = self._waiting.pop(reply["id"], None)
            if fut is None or fut.done():
                continue
            if reply["ok"]:
                fut.set_result(reply["result"])
            else:
                fut.set_exception(RuntimeError(reply["error"]))

    async def call(self, cmd: str, **args: Any) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self._writer.write(json.dumps({"id": rid, "cmd": cmd, **args}).encode() + b"\n")
        await self._writer.drain()
        return await fut

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()


async def until(predicate: Any, timeout: float, step: float = 0.01, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(step)


@dataclass
class GatewayProcess:
    """A running bench/gateway_proc.py (the fake in its own process)."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]

    @classmethod
    def start(cls, python: str, hb_ms: int = 41250, tick: float | None = None) -> GatewayProcess:
        cmd = [python, str(BENCH / "gateway_proc.py"), "--hb-ms", str(hb_ms)]
        if tick is not None:
            cmd += ["--tick", str(tick)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise RuntimeError("gateway process died at start")
        return cls(proc, json.loads(line))

    def args(self) -> list[str]:
        i = self.info
        return [
            "--control",
            str(i["control"]),
            "--api-base",
            i["api_base"],
            "--token-url",
            i["token_url"],
            "--ws-url",
            i["ws_url"],
            "--app-id",
            i["app_id"],
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def run_client(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one scenario process; return its RESULT line (or an error record)."""
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        tail = (
            (exc.stderr or b"")[-2000:]
            if isinstance(exc.stderr, bytes)
            else (exc.stderr or "")[-2000:]
        )
        return {"error": f"timed out after {timeout} s", "stderr": tail}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result.setdefault("wall_s", round(time.monotonic() - started, 2))
            return result
    return {"error": f"exit {done.returncode}, no RESULT line", "stderr": done.stderr[-3000:]}


def summary(values: list[float | int | None]) -> dict[str, Any]:
    """Median with min–max over runs (None values are skipped and counted)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "missing": len(values)}
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "missing": len(values) - len(xs),
    }


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def analyse_recovery(
    seen: list[tuple[float, int | None]],
    accepted: list[int],
    conns: list[dict[str, Any]],
    t_trigger: float,
) -> dict[str, Any]:
    """Shared by every side: lost / duplicated events and the gap, from the fake's records."""
    delivered = [s for _, s in seen if s is not None]
    old = [c for c in conns if c["opened_at"] < t_trigger]
    new = [c for c in conns if c["opened_at"] >= t_trigger]
    first_new = new[0] if new else None
    new_seqs = set(first_new["dispatch_seqs_out"]) if first_new else set()
    flow = [t for t, s in seen if s is not None and t > t_trigger and s in new_seqs]
    old_conn = old[-1] if old else None
    return {
        "accepted": len(accepted),
        "delivered": len(delivered),
        "lost": len(set(accepted) - set(delivered)),
        "duplicated": len(delivered) - len(set(delivered)),
        "out_of_order": sum(1 for x, y in itertools.pairwise(delivered) if y <= x),
        "recovery_s": (min(flow) - t_trigger) if flow else None,
        "old_closed_s": None
        if not old_conn or old_conn["closed_at"] is None
        else old_conn["closed_at"] - t_trigger,
        "old_close_code": old_conn["close_code"] if old_conn else None,
        "old_closed_by": old_conn["closed_by"] if old_conn else None,
        "new_socket_s": None if not first_new else first_new["opened_at"] - t_trigger,
        "sockets_after_trigger": len(new),
        "resumed": bool(first_new and first_new["resume"] > 0),
    }


def window_figures(
    *,
    side: str,
    n: int,
    ramp_s: float,
    t0: float,
    t1: float,
    rss: tuple[int, int],
    cpu: tuple[float, float],
    fake: tuple[dict[str, Any], dict[str, Any]],
    gaps: dict[str, Any],
    pauses: GcPauses,
) -> dict[str, Any]:
    """The many-connections figures, computed the same way for every side (item 5)."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else 1000 * seconds

    f0, f1 = fake
    return {
        "side": side,
        "connections": n,
        "ramp_s": ramp_s,
        "window_s": t1 - t0,
        "rss_baseline_kb": rss[0],
        "rss_end_kb": rss[1],
        "rss_per_conn_kb": (rss[1] - rss[0]) / n,
        **pauses.summary(t0, t1),
        "cpu_pct_of_core": 100 * (cpu[1] - cpu[0]) / (t1 - t0),
        "fake_cpu_pct_of_core": 100 * (f1["cpu_s"] - f0["cpu_s"]) / (f1["t"] - f0["t"]),
        "lateness_p50_ms": ms(gaps["p50_s"]),
        "lateness_p99_ms": ms(gaps["p99_s"]),
        "lateness_max_ms": ms(gaps["max_s"]),
        "heartbeat_gaps": gaps["gaps"],
    }


# -- several fakes (item 10) ----------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The ``p``-th percentile of an already sorted list (nearest rank, as the fake computes it)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def merge_gaps(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``heartbeat_gaps`` answer from several fakes' answers, each asked with ``raw=True``
    (their ``late`` lists): percentiles over all the gaps together, counts summed, the fewest
    beats of any connection over all fakes."""
    late = sorted(x for part in parts for x in part.get("late", []))
    return {
        "gaps": len(late),
        "beats": sum(p.get("beats", 0) for p in parts),
        "p50_s": percentile(late, 50),
        "p99_s": percentile(late, 99),
        "max_s": late[-1] if late else None,
        "min_s": late[0] if late else None,
        "connections_with_beats": sum(p.get("connections_with_beats", 0) for p in parts),
        "fewest_beats": min((p.get("fewest_beats", 0) for p in parts), default=0),
        "fakes": len(parts),
    }


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``stats`` answer from several fakes': CPU seconds, memory and sockets summed, the
    time of the earliest answer, and each fake's own answer kept (``per_fake``)."""
    return {
        "cpu_s": sum(p["cpu_s"] for p in parts),
        "rss_kb": sum(p.get("rss_kb", 0) for p in parts),
        "t": min(p["t"] for p in parts),
        "connections": sum(p.get("connections", 0) for p in parts),
        "live": sum(p.get("live", 0) for p in parts),
        "per_fake": [dict(p) for p in parts],
    }


def fakes_cpu(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fakes' CPU between two :func:`merge_stats` answers, % of one core: all of them
    together and the busiest one (a fake near 100 % would be the bottleneck)."""
    pcts = [
        100 * (b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9)
        for a, b in zip(before["per_fake"], after["per_fake"], strict=True)
    ]
    return {"total_pct_of_core": sum(pcts), "busiest_pct_of_core": max(pcts, default=0.0)}


async def timed_burst(
    ctl: Control, sink: Any, session_id: Any, warmup: int, n: int
) -> dict[str, Any]:
    """Item 1's burst on one session while the process's other connections stay connected:
    a warm-up burst, a collection, then ``n`` frames timed at the ``sink`` (any object with
    ``reset(goal)``, ``done``, ``count``, ``t_first`` and ``t_last``)."""
    import gc

    sink.reset(warmup)
    await ctl.call("burst", n=warmup, session_id=session_id)
    await asyncio.wait_for(sink.done.wait(), 60)
    gc.collect()
    sink.reset(n)
    cpu0 = cpu_s()
    await ctl.call("burst", n=n, session_id=session_id)
    await asyncio.wait_for(sink.done.wait(), 300)
    cpu1 = cpu_s()
    return {
        "events": n,
        "delivered": sink.count,
        "events_per_s": (n - 1) / (sink.t_last - sink.t_first),
        "client_cpu_us_per_event": (cpu1 - cpu0) / n * 1e6,
    }


async def ramp(n: int, per_s: float, add: Any, pending: Any, max_pending: int) -> None:
    """Start ``n`` connections (``add()``) at ``per_s`` a second; with ``max_pending``, also
    never more than that many in their first attempt (``pending()``: started, neither up nor
    ended yet), so a client that cannot keep up with the rate is measured at its own pace
    instead of piling up handshakes that time out."""
    t_ramp = time.monotonic()
    for i in range(n):
        if max_pending and pending() >= max_pending:
            await until(lambda: pending() < max_pending, 600, step=0.005, what="a pending start")
        add()
        delay = t_ramp + (i + 1) / per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 20 == 19:
            await asyncio.sleep(0)


class Fakes:
    """The client's view of one or more fakes (``--more-fakes``): connection ``i`` goes to fake
    ``i % len``; ``stats``, ``gaps`` and ``call_all`` ask every fake and merge."""

    def __init__(self, endpoints: list[dict[str, Any]], controls: list[Control]) -> None:
        self.endpoints = endpoints
        self.controls = controls

    @classmethod
    async def connect(cls, a: argparse.Namespace, first: Control) -> Fakes:
        endpoints = [
            {
                "control": a.control,
                "api_base": a.api_base,
                "token_url": a.token_url,
                "ws_url": a.ws_url,
                "app_id": a.app_id,
            },
            *json.loads(a.more_fakes),
        ]
        controls = [first] + [await Control.connect(e["control"]) for e in endpoints[1:]]
        return cls(endpoints, controls)

    def of(self, i: int) -> tuple[dict[str, Any], Control]:
        k = i % len(self.endpoints)
        return self.endpoints[k], self.controls[k]

    async def call_all(self, cmd: str, **args: Any) -> list[Any]:
        return list(await asyncio.gather(*(c.call(cmd, **args) for c in self.controls)))

    async def stats(self) -> dict[str, Any]:
        return merge_stats(await self.call_all("stats"))

    async def gaps(self, since: float, until: float, interval_s: float) -> dict[str, Any]:
        parts = await self.call_all(
            "heartbeat_gaps", since=since, until=until, interval_s=interval_s, raw=True
        )
        return merge_gaps(parts)

    async def close(self) -> None:
        for c in self.controls[1:]:
            await c.close()


def many_parser_options(ap: argparse.ArgumentParser) -> None:
    """The options item 10 (bench/scale.py) adds to item 5's ``many`` scenario; their defaults
    are item 5's behaviour."""
    ap.add_argument(
        "--more-fakes", default="[]", help="JSON list of further fakes' endpoints (round-robin)"
    )
    ap.add_argument(
        "--settle", type=float, default=None, help="s after all ALIVE (default 2 intervals)"
    )
    ap.add_argument(
        "--burst", type=int, default=0, help="then a burst of this many frames on connection 0"
    )
    ap.add_argument(
        "--max-pending",
        type=int,
        default=0,
        help="ramp: start the next connection only while fewer than this many are not yet "
        "ALIVE/READY (0: no bound, item 5)",
    )
    ap.add_argument(
        "--freeze-window",
        type=float,
        default=0.0,
        help="qqconn: then gc.freeze() and a second window this long",
    )


def client_parser(
    scenarios: list[str], *, n: int, warmup: int, window_s: float
) -> argparse.ArgumentParser:
    """The command line every bench client takes from ``bench/run.py`` (one contract, three
    clients); each client adds the options of its own scenarios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=scenarios)
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--api-base", required=True)
    ap.add_argument("--token-url", required=True)
    ap.add_argument("--ws-url", required=True)
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--hb-ms", type=int, default=41250)
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--window", type=float, default=window_s)
    ap.add_argument("--ramp-per-s", type=float, default=100.0)
    ap.add_argument(
        "--paced",
        type=int,
        default=0,
        help="throughput: then this many events paced at --paced-rate (a host keeping up)",
    )
    ap.add_argument("--paced-rate", type=float, default=2000.0)
    many_parser_options(ap)
    return ap


async def heartbeat_window(window_s: float, acks: Any, counts: LoopCounts) -> dict[str, Any]:
    """The ``beats`` scenario's window: an idle live connection for ``window_s``; CPU and loop
    objects per heartbeat (``acks()``: the client's ACK count), the same way for every client."""
    a0, c0 = acks(), cpu_s()
    counts.start()
    await asyncio.sleep(window_s)
    objects = counts.stop()
    beats, cpu = acks() - a0, cpu_s() - c0
    return {
        "heartbeats": beats,
        "cpu_us_per_heartbeat": cpu / max(beats, 1) * 1e6,
        **LoopCounts.per(objects, beats, "heartbeat"),
    }


async def paced_phase(
    a: argparse.Namespace, ctl: Control, sink: Any, counts: LoopCounts
) -> dict[str, Any]:
    """The throughput scenario's second phase: ``a.paced`` events at ``a.paced_rate`` per
    second (the fake's pump: about one frame per loop turn, so the host keeps up). CPU and loop
    objects per event, the same way for every client."""
    if a.paced <= 0:
        return {}
    sink.reset(a.paced)
    cpu0 = cpu_s()
    counts.start()
    await ctl.call("pump_start", rate=a.paced_rate)
    await asyncio.wait_for(sink.done.wait(), 60 + 2 * a.paced / a.paced_rate)
    loop_objects = counts.stop()
    cpu1 = cpu_s()
    await ctl.call("pump_stop")
    return {
        "paced_events": a.paced,
        "paced_rate": a.paced_rate,
        "paced_cpu_us_per_event": (cpu1 - cpu0) / a.paced * 1e6,
        **{f"paced_{k}": v for k, v in LoopCounts.per(loop_objects, a.paced).items()},
    }
