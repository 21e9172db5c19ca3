"""Where a connection's memory goes: RSS per object for the parts a ConnectionManager holds.

``python bench/mem_parts.py [--n 50]`` creates ``n`` of each part in a fresh loop and prints
one RESULT line: KiB of resident memory, objects tracked by the cyclic garbage collector (what
a full collection has to walk) and ms per object, for

* ``httpx.AsyncClient()`` as the driver creates it (default TLS verification: a new
  ``ssl.SSLContext`` loaded with certifi's CA bundle for every client),
* ``httpx.AsyncClient(verify=<one shared context>)``,
* ``ConnectionMachine()`` (one ``transitions.Machine`` per model),
* ``ConnectionManager()`` not started (machine, logger, queue, events).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ssl
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_s, emit, rss_kb


async def measure(n: int) -> dict[str, Any]:
    import httpx
    import structlog

    from qqconn import ConnectionManager
    from qqconn.machine import ConnectionMachine

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    shared = ssl.create_default_context()
    parts: dict[str, Any] = {
        "httpx.AsyncClient() (default verify)": lambda: httpx.AsyncClient(timeout=20),
        "httpx.AsyncClient(verify=shared context)": lambda: httpx.AsyncClient(
            timeout=20, verify=shared
        ),
        "ConnectionMachine()": ConnectionMachine,
        "ConnectionManager() (not started)": lambda: ConnectionManager(
            app_id="1", client_secret="x", intents=1
        ),
    }
    out: dict[str, Any] = {}
    keep: list[Any] = []
    for name, make in parts.items():
        make()  # first-use costs (imports, caches) outside the measurement
        gc.collect()
        o0 = len(gc.get_objects())
        r0, c0, t0 = rss_kb(), cpu_s(), time.perf_counter()
        keep.extend(make() for _ in range(n))
        elapsed = time.perf_counter() - t0
        gc.collect()
        out[name] = {
            "gc_objects_each": (len(gc.get_objects()) - o0) / n,
            "kib_each": (rss_kb() - r0) / n,
            "ms_each": 1000 * elapsed / n,
            "cpu_ms_each": 1000 * (cpu_s() - c0) / n,
        }
    return {"n": n, "parts": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    a = ap.parse_args()
    emit(asyncio.run(measure(a.n)))


if __name__ == "__main__":
    main()
