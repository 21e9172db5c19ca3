"""Where the memory of a running connection goes: qqconn against the bare client, per connection.

``python bench/mem_conns.py [--n 500] [--side qqconn|bare|both] [--top 25] [--hb-ms 1000]
[--no-trace]`` starts the fake
gateway in its own process (as item 5 does), runs ``n`` connections of one side in this process
until all are ALIVE (READY for the bare client) and a few heartbeats have gone by, and prints,
per connection: resident KiB, bytes traced by :mod:`tracemalloc` grouped by ``file:line`` of
the allocation, and objects tracked by the garbage collector by type. The two sides run one
after the other, each in a fresh process; the difference between them is qqconn's own cost.
Tracing makes the run slow and adds its own memory, so the resident figure here is a guide
only: item 5 (``bench/run.py --only 5``) is the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Control, GatewayProcess, emit, raise_nofile, rss_kb, until

HB_MS = 1000  # as item 5 (--hb-ms 41250: no heartbeat is due while a loaded machine ramps)


def _types() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


async def _ramp(side: str, a: argparse.Namespace) -> tuple[list[Any], Any]:
    """Start ``a.n`` connections of ``side``; return them and a predicate "all up"."""
    ctl = await Control.connect(a.control)
    if side == "qqconn":
        from scen_qqconn import manager

        from qqconn import State

        mgrs = [manager(a, on_state_change=lambda c: None) for _ in range(a.n)]  # as item 5
        tasks = [asyncio.create_task(m.run()) for m in mgrs]
        up = lambda: all(m.state is State.ALIVE for m in mgrs)  # noqa: E731
        return [ctl, mgrs, tasks], up
    from scen_bare import BareClient, token_of

    token = await token_of(ctl)
    clients = [BareClient(a.ws_url, token, lambda d: None) for _ in range(a.n)]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    return [ctl, clients, tasks], lambda: all(c.ready.is_set() for c in clients)


async def measure(side: str, a: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    # A warm-up connection first (imports, first-use caches), outside the measurement.
    one = argparse.Namespace(**{**vars(a), "n": 1})
    warm, warm_up = await _ramp(side, one)
    await until(warm_up, 30, what="warm-up")
    gc.collect()
    types0, rss0 = _types(), rss_kb()
    if a.trace:
        tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot() if a.trace else None
    keep, up = await _ramp(side, a)
    await until(up, 300, step=0.1, what="all up")
    await asyncio.sleep(3 * min(a.hb_ms, HB_MS) / 1000)  # a few heartbeats, timers rearmed
    gc.collect()
    snap1 = tracemalloc.take_snapshot() if a.trace else None
    rss1 = rss_kb()
    tracemalloc.stop()
    types1 = _types()
    n = a.n
    stats = snap1.compare_to(snap0, "lineno") if snap1 is not None and snap0 is not None else []
    lines = [
        {"where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "bytes": s.size_diff / n}
        for s in stats[: a.top]
    ]
    counts = {t: (types1[t] - types0.get(t, 0)) / n for t in types1}
    gc_types = sorted(((t, c) for t, c in counts.items() if c >= 0.5), key=lambda x: -x[1])
    for ctl, conns, tasks in (keep, warm):
        if side == "qqconn":
            from scen_qqconn import stop_all

            await stop_all(conns, tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctl.close()
    return {
        "side": side,
        "n": n,
        "rss_kib_each": (rss1 - rss0) / n,
        "traced_kib_each": sum(s.size_diff for s in stats) / n / 1024,
        "top_lines": lines,
        "gc_objects_each": dict(gc_types[: a.top]),
    }


def _client(side: str, gw: GatewayProcess, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--side", side, "--n", str(a.n), "--top", str(a.top)]
    cmd += ["--hb-ms", str(a.hb_ms), *([] if a.trace else ["--no-trace"])]
    done = subprocess.run([*cmd, *gw.args()], capture_output=True, text=True, timeout=900)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    return {"side": side, "error": done.stderr[-2000:]}


def _print(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['side']}: failed\n{r['error']}")
        return
    print(
        f"== {r['side']}: n={r['n']}  RSS {r['rss_kib_each']:.1f} KiB/conn"
        f"  traced {r['traced_kib_each']:.1f} KiB/conn"
    )
    for line in r["top_lines"]:
        print(f"  {line['bytes']:8.0f} B  {line['where']}")
    print("  gc objects per connection:")
    for t, c in r["gc_objects_each"].items():
        print(f"  {c:8.1f}  {t}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["qqconn", "bare", "both"], default="both")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--hb-ms", type=int, default=HB_MS)
    ap.add_argument(
        "--no-trace", dest="trace", action="store_false", help="resident memory and objects only"
    )
    ap.add_argument("--control", type=int)
    ap.add_argument("--api-base")
    ap.add_argument("--token-url")
    ap.add_argument("--ws-url")
    ap.add_argument("--app-id")
    a = ap.parse_args()
    if a.control is not None:  # a client process: one side, one RESULT line
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        emit(asyncio.run(measure(a.side, a)))
        return
    for side in ["qqconn", "bare"] if a.side == "both" else [a.side]:
        gw = GatewayProcess.start(sys.executable, hb_ms=a.hb_ms, tick=0.5)
        try:
            _print(_client(side, gw, a))
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
