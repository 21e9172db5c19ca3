"""How close to the identify limit do 16 shards come up? (issue 11, ``make bench`` item 9)

A :class:`~qqconn.BotShards` with ``shards="auto"`` against the fake gateway, which
recommends 16 shards, reports ``max_concurrency`` 1 or 4 and refuses (loudly, 4008) any
Identify that breaks the limit. The window is scaled down (``identify_window_s`` of the policy
and of the fake, :data:`WINDOW_S`) so the run is short; the ratio does not depend on it.

Measured: the time from ``run()`` to every shard ALIVE. The limit's own minimum is the
windows it must wait: with ``n`` shards and ``max_concurrency`` ``c``, the last bucket's
last shard Identifies ``ceil(n / c) - 1`` windows after the first. Reported: the ratio of
the two (target ≤ 1.1), and beside it, measured in the same run, the time one shard alone
takes to come up (what every ratio above 1 is made of, besides the send margin
``SEND_MARGIN`` of each window). Any refused Identify makes the run a failure.

Run ``python bench/shards.py`` (``--reps N``, ``--window S``, ``--json FILE``);
:func:`measure` and :func:`markdown` are for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from qqconn import BotShards, Policy  # noqa: E402
from qqconn.driver.permits import SEND_MARGIN  # noqa: E402
from qqconn.testing import FakeGateway  # noqa: E402

SHARDS = 16
WINDOW_S = 0.5
TARGET = 1.1
INTENTS = 1 << 30 | 1 << 25


def _policy(window_s: float) -> Policy:
    return replace(
        Policy(),
        identify_window_s=window_s,
        backoff_s=(0.05, 0.1, 0.2),
        backoff_jitter=0.0,
        connect_timeout_s=5.0,
        close_timeout_s=0.5,
    )


async def one_run(shards: int, max_concurrency: int, window_s: float) -> dict[str, Any]:
    """Bring ``shards`` shards up once; the seconds it took and what the fake saw."""
    async with FakeGateway(heartbeat_interval_ms=30_000, max_concurrency=max_concurrency) as gw:
        gw.faults.enforce_session_limit = True
        gw.identify_window_s = window_s
        gw.recommended_shards = shards
        bot = BotShards(
            app_id=gw.app_id,
            client_secret=gw.client_secret,
            intents=INTENTS,
            shards="auto",
            policy=_policy(window_s),
            api_base=gw.api_base,
            token_url=gw.token_url,
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        task = asyncio.create_task(bot.run())
        try:
            async with asyncio.timeout(60 + shards * window_s * 2):
                while not bot.all_alive or len(bot.managers) < shards:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.002)
            took = loop.time() - began
        finally:
            await bot.stop()
            with contextlib.suppress(Exception):
                await task
        times = [t for t, _ in gw.identify_log]
        return {
            "seconds": took,
            "identifies": len(times),
            "refused": len(gw.refused_starts),
            "spread_s": (max(times) - min(times)) if times else None,
        }


async def measure_async(reps: int, window_s: float) -> dict[str, Any]:
    single = [(await one_run(1, 1, window_s))["seconds"] for _ in range(reps)]
    out: dict[str, Any] = {
        "shards": SHARDS,
        "window_s": window_s,
        "send_margin": SEND_MARGIN,
        "one_shard_alive_s": statistics.median(single),
        "cases": {},
    }
    for mc in (1, 4):
        runs = [await one_run(SHARDS, mc, window_s) for _ in range(reps)]
        windows = math.ceil(SHARDS / mc) - 1
        minimum = windows * window_s
        seconds = [r["seconds"] for r in runs]
        median = statistics.median(seconds)
        out["cases"][str(mc)] = {
            "max_concurrency": mc,
            "windows_waited": windows,
            "minimum_s": minimum,
            "seconds": seconds,
            "median_s": median,
            "ratio": median / minimum,
            "refused": sum(r["refused"] for r in runs),
            "identifies": [r["identifies"] for r in runs],
            "met": median / minimum <= TARGET and all(r["refused"] == 0 for r in runs),
        }
    return out


def measure(reps: int = 3, window_s: float = WINDOW_S) -> dict[str, Any]:
    """:func:`measure_async` on a fresh event loop (qqconn's info logs silenced)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    started = time.monotonic()
    result = asyncio.run(measure_async(reps, window_s))
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f'{r["shards"]} shards brought to ALIVE by one `BotShards` (`shards="auto"`) against '
        f"the fake gateway enforcing `session_start_limit`, window scaled to "
        f"{r['window_s']:g} s; median of {len(next(iter(r['cases'].values()))['seconds'])} "
        f"runs. One shard alone comes up in {r['one_shard_alive_s'] * 1000:.0f} ms "
        f"(token, `/gateway/bot`, handshake, READY); each window carries a "
        f"{r['send_margin']:.0%} send margin.\n",
        "| max_concurrency | windows the limit makes it wait | minimum | measured | ratio | "
        "target | refused Identifies | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in r["cases"].values():
        lines.append(
            f"| {case['max_concurrency']} | {case['windows_waited']} | "
            f"{case['minimum_s']:.2f} s | {case['median_s']:.2f} s | {case['ratio']:.3f}× | "
            f"≤ {TARGET}× | {case['refused']} | {'yes' if case['met'] else '**missed**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--window", type=float, default=WINDOW_S)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    result = measure(a.reps, a.window)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
