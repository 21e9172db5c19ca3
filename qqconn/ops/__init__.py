"""Operator endpoints for qqconn: metrics, health probes and a live status page.

``OpsServer`` serves, on the managers' own event loop (uvicorn, as a task):

* ``/metrics`` — the :class:`qqconn.metrics.Metrics` registry (Prometheus text format);
* ``/livez`` — 200 while the event loop runs a lag probe on time, 503 otherwise;
* ``/readyz`` — 200 when every watched connection is ALIVE, 503 naming those that are not;
* ``/status.json`` — states, counters and recent transitions (no secret; session ids cut);
* ``/`` — the live page: the statechart with each shard's state highlighted, updating itself.

Needs ``uvicorn`` (``pip install 'qqconn[ops]'``; ``qqconn[metrics]`` for ``/metrics``).
The library never starts this on its own: the host (or ``qqconn run --http``) does.

    metrics = Metrics()
    ops = OpsServer(metrics=metrics, host="0.0.0.0", port=9100)
    manager = ConnectionManager(..., metrics=metrics, on_state_change=ops.on_state_change)
    ops.watch(manager)  # the manager feeds ``metrics`` itself: the server adds nothing
    async with ops:
        await manager.run()
"""

from __future__ import annotations

from qqconn.ops.server import LoopProbe, OpsServer, parse_address, serve_ops
from qqconn.ops.status import Board, Transition, Watch

__all__ = [
    "Board",
    "LoopProbe",
    "OpsServer",
    "Transition",
    "Watch",
    "parse_address",
    "serve_ops",
]
